// HTTP/1.x: the sniffer that routes the first request to a resource, and
// the request rewriter that frames every later request of a keep-alive
// connection.
//
// Routing (the same rule for every request of a connection):
//   1. a Host (or absolute-form authority) `<name>.localhost[:port]` → name,
//      lowercased; the path is the target's own;
//   2. else a path `/r/<name>/...` → name, and `/r/<name>` is stripped
//      (`/r/<name>` without the slash → 301 to `/r/<name>/`, keeping the
//      query, so relative links resolve under the prefix);
//   3. else the listener's default resource;
//   4. else 404 with a one-line reason.
// Host comes first because a page served under `<name>.localhost` owns its
// whole path space, `/r/...` included.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "actors/channel/protocol/sniffer.hpp"

namespace p2proxy {

/// A complete HTTP/1.1 reply made by the proxy: status line,
/// `Content-Type: text/plain; charset=utf-8`, Content-Length,
/// `Connection: close`, `extra_headers` (each ending in CRLF), and the body
/// "p2proxy: <text>\n". The CHANNEL closes the connection after it.
std::string http_reply(int code, std::string_view phrase, std::string_view text,
                       std::string_view extra_headers = {});

/// How a request names its resource.
struct http_route {
  enum class kind : uint8_t {
    host,     // <name>.localhost
    prefix,   // /r/<name>/...
    fallback, // the listener's default resource
    redirect, // /r/<name> without the trailing slash
    none,     // nothing names a resource and there is no default
  };
  kind how = kind::none;
  std::string name;
  /// redirect: the Location ("/r/<name>/" + query).
  std::string location;
  /// prefix: bytes to remove from the start of the path ("/r/<name>").
  size_t strip = 0;
};

/// Routes one request. `path` is the origin-form target (or "*"), `host` the
/// Host header or the absolute-form authority.
http_route route_http_request(std::string_view path, std::string_view host,
                              std::string_view default_resource);

/// Finds the resource in the first request (its whole head is validated, so
/// the rewriter will not refuse it later).
class http_sniffer {
public:
  explicit http_sniffer(std::string default_resource = {});

  sniff_result feed(std::string_view data);

  /// 408 Request Timeout.
  std::string timeout_reply() const;

  /// After `done`, when opening failed: unknown_resource → 404,
  /// denied → 403, overloaded → 503, bad_request → 400, everything else
  /// (peer unreachable, target refused or unreachable) → 502.
  std::string failure_reply(open_failure why, std::string_view text) const;

private:
  sniff_result fail(sniff_error err, std::string reply, std::string reason);

  std::string default_resource_;
  std::string buf_;
  sniff::head_scanner scanner_;
  bool finished_ = false;
};

struct http_rewrite_config {
  /// The channel's resource. Not empty: every request is routed like the
  /// first (needs `default_resource` too), `/r/<name>` is stripped, and a
  /// request routed elsewhere stops the stream. Empty: no routing.
  std::string resource;
  /// The listener's default resource (as given to the http_sniffer).
  std::string default_resource;
  /// Not empty: every request's Host becomes this ("192.168.1.10:80"), and
  /// is added when missing.
  std::string target_authority;
};

/// Frames the client → server byte stream of one connection request by
/// request (heads at most 16 KiB; bodies by Content-Length or chunked
/// framing, bytes passed through as they come) and rewrites each head:
/// the `/r/<name>` prefix stripped, an absolute-form target made
/// origin-form, Host set to the target. After a request with
/// `Connection: upgrade` and an `Upgrade` header (WebSocket) everything
/// passes through untouched.
///
/// A later request routed to ANOTHER resource (or to none, or needing the
/// redirect) cannot go down this channel: feed() returns `stop` and forwards
/// nothing from that request on. The CHANNEL then
///   1. stops reading the client and half-closes towards the target (FIN),
///      so the target answers the requests it already has and closes;
///   2. once the target's side has ended, writes stop_reply() — 421
///      Misdirected Request with `Connection: close` — and closes.
/// Waiting for the target keeps the earlier responses whole and in order.
/// Clients retry a 421 (and browsers any idempotent request on a closed
/// keep-alive connection) on a new connection, which the LISTENER routes
/// afresh. A malformed later request stops the same way with its 4xx.
class http_request_rewriter {
public:
  enum class status : uint8_t { ok, stop };

  explicit http_request_rewriter(http_rewrite_config cfg);

  /// Client → server bytes; appends what the target should get.
  status feed(std::string_view in, std::string& to_server);

  /// After `stop`: the reply for the client (see above).
  const std::string& stop_reply() const {
    return stop_reply_;
  }

  /// After `stop`: one line for the log.
  const std::string& stop_reason() const {
    return stop_reason_;
  }

  /// Whether the connection was upgraded (opaque from then on).
  bool upgraded() const {
    return ph_ == phase::opaque;
  }

  /// Request heads forwarded so far.
  uint64_t requests() const {
    return requests_;
  }

private:
  enum class phase : uint8_t {
    head,
    body,
    chunk_size,
    chunk_data,
    chunk_end,
    trailers,
    opaque,
    stopped,
  };

  bool on_head(std::string_view head, std::string& out);
  bool on_line(std::string& out); // chunk size, chunk end, trailer lines
  void stop(int code, std::string_view phrase, std::string reason,
            std::string_view extra = {});

  http_rewrite_config cfg_;
  phase ph_ = phase::head;
  sniff::head_scanner scanner_;
  std::string buf_;
  std::string line_; // chunked framing line being read
  uint64_t remaining_ = 0;
  size_t trailer_bytes_ = 0;
  bool upgrade_after_body_ = false;
  uint64_t requests_ = 0;
  std::string stop_reply_;
  std::string stop_reason_;
};

} // namespace p2proxy
