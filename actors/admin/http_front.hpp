// HTTP FRONT: the admin port's own small HTTP/1.1 server. One thread runs an
// epoll loop over every connection, so a client that sends its request
// slowly costs a socket and a few KiB, never a thread, and cannot delay any
// other client. The front reads and bounds each request head itself (bytes,
// field count, a deadline from the first byte to the last), discards small
// bodies, checks the bearer token, and hands each parsed request to a
// handler that answers later, from any thread, through a reply function.
//
// Bounds (front_limits): a connection that is over them gets its error
// answer (400, 408 is never sent: a late head is just closed; 411, 413, 414,
// 431) and is closed after its answer has been written. When all connection
// slots are taken, the connection that has waited longest for its head is
// closed to make room, so slow clients cannot lock out a fast one.
//
// Threads: bind() and start() on the owner's thread; the handler runs on the
// front's thread and must not block; a reply may come from any thread, also
// after stop() (it is then dropped). stop() joins the thread; the destructor
// calls it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

#include "actors/common/endpoint.hpp"

namespace p2proxy::http {

using fields = std::vector<std::pair<std::string, std::string>>;

struct request {
  std::string method;
  std::string path; // percent-decoded, without the query
  fields params;    // the query, decoded ('+' is a space)
  fields headers;   // names lower-cased, values trimmed

  /// The value of the first header `lower_name`, or nullptr.
  const std::string* header(std::string_view lower_name) const;
  /// The first query parameter `name`, or nullptr.
  const std::string* param(std::string_view name) const;
};

struct response {
  int status = 200;
  std::string content_type;
  std::string body;
  fields headers; // extra headers, e.g. Allow
};

/// `{"error":"TEXT"}`, the body of every error answer.
std::string error_json(std::string_view text);

/// Answers a request; callable from any thread, once.
using reply_fn = std::function<void(response)>;
/// Takes a parsed, authorized request on the front's thread; must not block.
using handler_fn = std::function<void(request&&, reply_fn)>;

struct front_limits {
  size_t max_connections = 512;
  size_t max_request_line = 8 * 1024; // 414 past it
  size_t max_head_bytes = 16 * 1024;  // request line + fields; 431 past it
  size_t max_header_fields = 100;     // 431 past it
  size_t max_body = 64 * 1024;        // 413 past it
  size_t max_requests_per_connection = 100;
  /// From a connection's first byte (or the end of its last answer) to the
  /// end of the next request's body.
  std::chrono::milliseconds request_timeout{10000};
  /// For an answer to be taken by the client.
  std::chrono::milliseconds write_timeout{10000};
  /// After an error answer: input is read and dropped for this long, so the
  /// client sees the answer rather than a reset.
  std::chrono::milliseconds linger{2000};
};

class front {
public:
  /// `bearer_token` empty: no authorization. Otherwise every request needs
  /// `Authorization: Bearer TOKEN` and gets 401 without it.
  front(front_limits limits, std::string bearer_token, handler_fn handler);
  ~front();

  front(const front&) = delete;
  front& operator=(const front&) = delete;

  /// Binds and listens on `listen` (port 0: any); returns the bound port.
  /// A non-loopback address without a bearer token is refused (bad_config).
  caf::expected<uint16_t> bind(const endpoint& listen);

  /// Paths answered without the bearer token (the dashboard's page, script
  /// and style sheet: they carry no data, and a browser cannot send the
  /// token before its script has run). Call before start().
  void serve_without_token(std::vector<std::string> paths);

  /// Starts the thread; call once after a successful bind().
  void start();

  /// Closes the port and every connection and joins the thread. Idempotent.
  void stop();

  struct loop; // the thread's state (http_front.cpp)

private:
  std::unique_ptr<loop> loop_;
  std::thread thread_;
};

/// True when `a` and `b` are equal; the time taken depends only on the
/// length of `b` (the presented token), never on where they differ.
bool equal_in_constant_time(std::string_view a, std::string_view b);

} // namespace p2proxy::http
