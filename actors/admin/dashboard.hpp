// DASHBOARD: the admin port's page for a person. The page (index.html), its
// script and style sheet live in actors/admin/dashboard/ and are compiled
// into the binary (embed.cmake), so a node serves them with no files beside
// it and no CDN. The script polls GET /v1/status and draws the node (or the
// signaling server's online nodes); the assets themselves hold no data and
// are served without the bearer token, the status still needs it.
//
// Every asset answer carries security_headers(): a Content-Security-Policy
// that allows only this origin's script, style and fetches (no inline
// script, no framing), X-Content-Type-Options: nosniff, no referrer, no
// caching.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "actors/admin/http_front.hpp"

namespace p2proxy::dashboard {

struct asset {
  std::string_view path;         // "/", "/dashboard.js", "/dashboard.css", ...
  std::string_view content_type; // with charset
  std::string_view body;
};

/// The asset served at `path`, or nullptr.
const asset* find(std::string_view path);

/// Every asset's path (for http::front::serve_without_token).
std::vector<std::string> paths();

/// The headers of every asset answer.
http::fields security_headers();

} // namespace p2proxy::dashboard
