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

// The tab icon: browsers ask for /favicon.ico whatever the page says, and an
// answer of 401 there only fills logs. A small SVG (same origin, allowed by
// the page's img-src) answers them.
constexpr std::string_view favicon_svg
  = R"(<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">)"
    R"(<circle cx="4" cy="8" r="3" fill="#2b7a4b"/>)"
    R"(<circle cx="12" cy="8" r="3" fill="#2b7a4b"/>)"
    R"(<rect x="6" y="7" width="4" height="2" fill="#2b7a4b"/></svg>)";

const std::array<asset, 4>& assets() {
  static const std::array<asset, 4> all{{
    {"/", "text/html; charset=utf-8", embedded::index_html},
    {"/dashboard.js", "text/javascript; charset=utf-8", embedded::dashboard_js},
    {"/dashboard.css", "text/css; charset=utf-8", embedded::dashboard_css},
    {"/favicon.ico", "image/svg+xml", favicon_svg},
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
