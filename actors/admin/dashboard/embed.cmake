# Turns the dashboard's files (index.html, dashboard.js, dashboard.css) into
# one C++ source at build time, so the binary serves them itself (no files to
# install, no CDN). Included by the top-level CMakeLists.txt after the
# p2proxy_admin library; actors/admin/dashboard.cpp declares what it defines.
set(_dash_dir ${CMAKE_SOURCE_DIR}/actors/admin/dashboard)
set(_dash_inputs ${_dash_dir}/index.html ${_dash_dir}/dashboard.js
                 ${_dash_dir}/dashboard.css)
set(_dash_out ${CMAKE_BINARY_DIR}/generated/dashboard_assets.cpp)
add_custom_command(
  OUTPUT ${_dash_out}
  COMMAND ${CMAKE_COMMAND} -DOUT=${_dash_out} -P ${_dash_dir}/embed_assets.cmake
          ${_dash_inputs}
  DEPENDS ${_dash_inputs} ${_dash_dir}/embed_assets.cmake
  COMMENT "Embedding the admin dashboard"
  VERBATIM)
target_sources(p2proxy_admin PRIVATE ${_dash_out})
