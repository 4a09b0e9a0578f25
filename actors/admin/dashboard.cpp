#include "actors/admin/dashboard.hpp"

#include <array>

namespace p2proxy::dashboard {

// Defined in the generated dashboard_assets.cpp (dashboard/embed.cmake).
namespace embedded {
extern const std::string_view index_html;
extern const std::string_view dashboard_js;
extern const std::string_view dashboard_css;
} // namespace embedded

namespace {

const std::array<asset, 3>& assets() {
  static const std::array<asset, 3> all{{
    {"/", "text/html; charset=utf-8", embedded::index_html},
    {"/dashboard.js", "text/javascript; charset=utf-8", embedded::dashboard_js},
    {"/dashboard.css", "text/css; charset=utf-8", embedded::dashboard_css},
  }};
  return all;
}

} // namespace

const asset* find(std::string_view path) {
  for (auto& a : assets())
    if (a.path == path)
      return &a;
  return nullptr;
}

std::vector<std::string> paths() {
  std::vector<std::string> out;
  for (auto& a : assets())
    out.emplace_back(a.path);
  return out;
}

http::fields security_headers() {
  return {
    {"Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; "
     "connect-src 'self'; img-src 'self'; base-uri 'none'; "
     "form-action 'none'; frame-ancestors 'none'"},
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"Referrer-Policy", "no-referrer"},
    {"Cache-Control", "no-store"},
  };
}

} // namespace p2proxy::dashboard
