#include "actors/channel/protocol/http_sniffer.hpp"

#include <algorithm>
#include <utility>

namespace p2proxy {

namespace {

using sniff::iequals;
using sniff::istarts_with;

constexpr std::string_view localhost_suffix = ".localhost";
constexpr size_t max_chunk_line = 4096;

const char* usage_hint = "use http://HOST:PORT/r/<name>/ or "
                         "http://<name>.localhost:PORT/";

/// A validated request head.
struct request_head {
  std::string_view method;
  std::string_view target; // as sent
  std::string_view version;
  std::string_view path;      // origin-form (or "*")
  std::string_view authority; // of an absolute-form target
  std::string_view host;      // Host header
  bool has_host = false;
  bool has_length = false;
  bool chunked = false;
  bool upgrade = false;
  uint64_t length = 0;
};

/// Whether a comma-separated header value lists `token`.
bool lists_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    auto comma = value.find(',');
    if (iequals(trim_ows(value.substr(0, comma)), token))
      return true;
    if (comma == std::string_view::npos)
      break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

struct head_error {
  int code = 0; // 0: none
  std::string_view phrase;
  std::string reason;
};

head_error parse_head(std::string_view head, request_head& h) {
  auto bad = [](std::string reason) {
    return head_error{400, "Bad Request", std::move(reason)};
  };
  sniff::line_reader lines{head};
  std::string_view line;
  lines.next(line);
  if (!sniff::split_start_line(line, h.method, h.target, h.version)
      || !sniff::is_token(h.method) || !istarts_with(h.version, "HTTP/"))
    return bad("not an HTTP request: \"" + sniff::printable(line, 60) + "\"");
  if (h.version != "HTTP/1.1" && h.version != "HTTP/1.0")
    return {505, "HTTP Version Not Supported",
            "HTTP version \"" + sniff::printable(h.version, 20)
              + "\" is not supported: HTTP/1.x only"};
  if (h.method == "CONNECT")
    return {501, "Not Implemented",
            "CONNECT is not supported here: use a socks5 listener"};
  if (istarts_with(h.target, "http://")) {
    auto rest = h.target.substr(7);
    auto slash = rest.find_first_of("/?");
    h.authority = rest.substr(0, slash);
    h.path = slash == std::string_view::npos ? std::string_view{"/"}
                                             : rest.substr(slash);
    if (h.authority.empty())
      return bad("empty authority in the request target");
  } else if (h.target[0] == '/' || h.target == "*") {
    h.path = h.target;
  } else {
    return bad("bad request target \"" + sniff::printable(h.target, 60) + "\"");
  }
  std::string_view te;
  while (lines.next(line) && !line.empty()) {
    std::string_view name, value;
    if (!sniff::split_header(line, name, value))
      return bad("malformed header line \"" + sniff::printable(line, 60)
                 + "\"");
    if (iequals(name, "Host")) {
      if (h.has_host)
        return bad("more than one Host header");
      h.has_host = true;
      h.host = value;
    } else if (iequals(name, "Content-Length")) {
      uint64_t n = 0;
      if (!sniff::parse_decimal(value, n) || (h.has_length && n != h.length))
        return bad("bad Content-Length");
      h.has_length = true;
      h.length = n;
    } else if (iequals(name, "Transfer-Encoding")) {
      if (!te.empty())
        return bad("more than one Transfer-Encoding header");
      te = value;
    } else if (iequals(name, "Connection")) {
      h.upgrade = h.upgrade || lists_token(value, "upgrade");
    }
  }
  if (!te.empty()) {
    // Only "..., chunked" frames a request; with a Content-Length too it is
    // a smuggling attempt.
    auto last = te.substr(
      te.rfind(',') == std::string_view::npos ? 0 : te.rfind(',') + 1);
    if (!iequals(trim_ows(last), "chunked"))
      return bad("Transfer-Encoding without chunked");
    if (h.has_length)
      return bad("both Transfer-Encoding and Content-Length");
    h.chunked = true;
  }
  if (h.upgrade && sniff::find_header(head, "Upgrade").empty())
    h.upgrade = false;
  return {};
}

std::string_view route_host(const request_head& h) {
  return h.authority.empty() ? h.host : h.authority;
}

bool parse_hex(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 15)
    return false;
  uint64_t v = 0;
  for (char c : s) {
    int d = 0;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return false;
    v = v * 16 + static_cast<uint64_t>(d);
  }
  out = v;
  return true;
}

} // namespace

std::string http_reply(int code, std::string_view phrase, std::string_view text,
                       std::string_view extra_headers) {
  auto body = "p2proxy: " + sniff::printable(text, 300) + "\n";
  std::string r;
  r.reserve(160 + body.size() + extra_headers.size());
  r += "HTTP/1.1 ";
  r += std::to_string(code);
  r += ' ';
  r += phrase;
  r += "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ";
  r += std::to_string(body.size());
  r += "\r\nConnection: close\r\n";
  r += extra_headers;
  r += "\r\n";
  r += body;
  return r;
}

http_route route_http_request(std::string_view path, std::string_view host,
                              std::string_view default_resource) {
  http_route r;
  if (!host.empty() && host[0] != '[') {
    host = host.substr(0, host.rfind(':'));
    std::string h{host};
    for (auto& c : h)
      if (c >= 'A' && c <= 'Z')
        c = static_cast<char>(c - 'A' + 'a');
    if (!h.empty() && h.back() == '.')
      h.pop_back();
    if (h.size() > localhost_suffix.size()
        && std::string_view{h}.substr(h.size() - localhost_suffix.size())
             == localhost_suffix) {
      h.resize(h.size() - localhost_suffix.size());
      r.how = http_route::kind::host;
      r.name = std::move(h);
      return r;
    }
  }
  if (path.size() > 3 && path.substr(0, 3) == "/r/") {
    auto rest = path.substr(3);
    auto end = rest.find_first_of("/?#");
    auto name = rest.substr(0, end);
    if (!name.empty()) {
      r.name = std::string{name};
      if (end == std::string_view::npos || rest[end] != '/') {
        r.how = http_route::kind::redirect;
        r.location = "/r/" + r.name + "/";
        if (end != std::string_view::npos)
          r.location += rest.substr(end);
        return r;
      }
      r.how = http_route::kind::prefix;
      r.strip = 3 + name.size();
      return r;
    }
  }
  if (!default_resource.empty()) {
    r.how = http_route::kind::fallback;
    r.name = std::string{default_resource};
    return r;
  }
  return r;
}

// -- http_sniffer -------------------------------------------------------------

http_sniffer::http_sniffer(std::string default_resource)
  : default_resource_(std::move(default_resource)) {}

sniff_result http_sniffer::fail(sniff_error err, std::string reply,
                                std::string reason) {
  finished_ = true;
  return sniff_failure(err, std::move(reply), std::move(reason));
}

sniff_result http_sniffer::feed(std::string_view data) {
  if (finished_)
    return fail(sniff_error::bad_request, {},
                "http sniffer fed after it finished");
  if (buf_.empty())
    while (!data.empty() && (data.front() == '\r' || data.front() == '\n'))
      data.remove_prefix(1);
  buf_.append(data);
  if (buf_.empty())
    return {};
  auto bad = [&](std::string reason) {
    auto reply = http_reply(400, "Bad Request", reason);
    return fail(sniff_error::bad_request, std::move(reply), std::move(reason));
  };
  if (sniff::garbage_method(buf_))
    return bad("not an HTTP request");
  switch (scanner_.scan(buf_)) {
    case sniff::head_scanner::status::need_more:
      return {};
    case sniff::head_scanner::status::line_too_long: {
      std::string reason = "request line longer than 8 KiB";
      auto reply = http_reply(414, "URI Too Long", reason);
      return fail(sniff_error::line_too_long, std::move(reply),
                  std::move(reason));
    }
    case sniff::head_scanner::status::head_too_large: {
      std::string reason = "request head larger than 16 KiB";
      auto reply = http_reply(431, "Request Header Fields Too Large", reason);
      return fail(sniff_error::head_too_large, std::move(reply),
                  std::move(reason));
    }
    case sniff::head_scanner::status::complete:
      break;
  }
  request_head h;
  auto err
    = parse_head(std::string_view{buf_}.substr(0, scanner_.head_size()), h);
  if (err.code != 0) {
    auto reply = http_reply(err.code, err.phrase, err.reason);
    return fail(err.code == 400 ? sniff_error::bad_request
                                : sniff_error::unsupported,
                std::move(reply), std::move(err.reason));
  }
  auto route = route_http_request(h.path, route_host(h), default_resource_);
  switch (route.how) {
    case http_route::kind::none: {
      std::string reason = "no resource in the request: ";
      reason += usage_hint;
      auto reply = http_reply(404, "Not Found", reason);
      return fail(sniff_error::no_resource, std::move(reply),
                  std::move(reason));
    }
    case http_route::kind::redirect: {
      if (!sniff::valid_resource_name(route.name))
        break;
      auto location = sniff::printable(route.location, 2048);
      auto reply = http_reply(301, "Moved Permanently", "moved to " + location,
                              "Location: " + location + "\r\n");
      return fail(sniff_error::redirect, std::move(reply),
                  "redirected to " + location);
    }
    default:
      break;
  }
  if (!sniff::valid_resource_name(route.name))
    return bad("invalid resource name \"" + sniff::printable(route.name, 60)
               + "\"");
  finished_ = true;
  sniff_result r;
  r.state = sniff_state::done;
  r.resource = std::move(route.name);
  r.forward = std::move(buf_);
  buf_.clear();
  return r;
}

std::string http_sniffer::timeout_reply() const {
  return http_reply(408, "Request Timeout", "no complete request within 10 s");
}

std::string http_sniffer::failure_reply(open_failure why,
                                        std::string_view text) const {
  switch (why) {
    case open_failure::unknown_resource:
      return http_reply(404, "Not Found", text);
    case open_failure::denied:
      return http_reply(403, "Forbidden", text);
    case open_failure::overloaded:
      return http_reply(503, "Service Unavailable", text);
    case open_failure::bad_request:
      return http_reply(400, "Bad Request", text);
    default:
      return http_reply(502, "Bad Gateway", text);
  }
}

// -- http_request_rewriter ----------------------------------------------------

http_request_rewriter::http_request_rewriter(http_rewrite_config cfg)
  : cfg_(std::move(cfg)) {}

void http_request_rewriter::stop(int code, std::string_view phrase,
                                 std::string reason, std::string_view extra) {
  ph_ = phase::stopped;
  stop_reply_ = http_reply(code, phrase, reason, extra);
  stop_reason_ = std::move(reason);
}

http_request_rewriter::status http_request_rewriter::feed(std::string_view in,
                                                          std::string& out) {
  while (!in.empty()) {
    switch (ph_) {
      case phase::stopped:
        return status::stop;
      case phase::opaque:
        out += in;
        return status::ok;
      case phase::head: {
        if (buf_.empty()) {
          // CR/LF between requests are dropped.
          while (!in.empty() && (in.front() == '\r' || in.front() == '\n'))
            in.remove_prefix(1);
          if (in.empty())
            break;
          scanner_.reset();
        }
        auto old = buf_.size();
        auto n = std::min(in.size(), max_request_head - old);
        buf_.append(in.data(), n);
        if (sniff::garbage_method(buf_)) {
          stop(400, "Bad Request", "not an HTTP request");
          return status::stop;
        }
        switch (scanner_.scan(buf_)) {
          case sniff::head_scanner::status::need_more:
            in.remove_prefix(n);
            break;
          case sniff::head_scanner::status::line_too_long:
            stop(414, "URI Too Long", "request line longer than 8 KiB");
            return status::stop;
          case sniff::head_scanner::status::head_too_large:
            stop(431, "Request Header Fields Too Large",
                 "request head larger than 16 KiB");
            return status::stop;
          case sniff::head_scanner::status::complete: {
            auto size = scanner_.head_size();
            in.remove_prefix(size - old);
            buf_.resize(size);
            auto ok = on_head(buf_, out);
            buf_.clear();
            if (!ok)
              return status::stop;
            break;
          }
        }
        break;
      }
      case phase::body:
      case phase::chunk_data: {
        auto n = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size()));
        out.append(in.data(), n);
        in.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ > 0)
          break;
        if (ph_ == phase::chunk_data)
          ph_ = phase::chunk_end;
        else
          ph_ = upgrade_after_body_ ? phase::opaque : phase::head;
        break;
      }
      case phase::chunk_size:
      case phase::chunk_end:
      case phase::trailers: {
        // Pass bytes through while collecting the line they form; at most
        // one byte past the limit, however large the piece (what passes must
        // not depend on how the socket cut the stream).
        auto nl = in.find('\n');
        auto n = nl == std::string_view::npos ? in.size() : nl + 1;
        n = std::min(n, 1
                          + (ph_ == phase::trailers
                               ? max_request_head - trailer_bytes_
                               : max_chunk_line - line_.size()));
        auto line_end = n > 0 && in[n - 1] == '\n';
        out.append(in.data(), n);
        line_.append(in.data(), n);
        in.remove_prefix(n);
        if (ph_ == phase::trailers) {
          trailer_bytes_ += n;
          if (trailer_bytes_ > max_request_head) {
            stop(431, "Request Header Fields Too Large",
                 "chunked trailers larger than 16 KiB");
            return status::stop;
          }
        } else if (line_.size() > max_chunk_line) {
          stop(400, "Bad Request", "chunk size line longer than 4 KiB");
          return status::stop;
        }
        if (line_end && !on_line(out))
          return status::stop;
        break;
      }
    }
  }
  return ph_ == phase::stopped ? status::stop : status::ok;
}

bool http_request_rewriter::on_head(std::string_view head, std::string& out) {
  request_head h;
  auto err = parse_head(head, h);
  if (err.code != 0) {
    stop(err.code, err.phrase, std::move(err.reason));
    return false;
  }
  auto path = h.path;
  if (!cfg_.resource.empty()) {
    auto route
      = route_http_request(h.path, route_host(h), cfg_.default_resource);
    if (route.how == http_route::kind::none
        || route.how == http_route::kind::redirect
        || route.name != cfg_.resource) {
      auto what = route.how == http_route::kind::none
                    ? std::string{"no resource"}
                    : "\"" + sniff::printable(route.name, 60) + "\"";
      stop(421, "Misdirected Request",
           "request for " + what + " on a connection to \"" + cfg_.resource
             + "\": retry on a new connection");
      return false;
    }
    if (route.how == http_route::kind::prefix)
      path.remove_prefix(route.strip);
  }
  out += h.method;
  out += ' ';
  if (path.empty() || (path[0] != '/' && path != "*"))
    out += '/';
  out += path;
  out += ' ';
  out += h.version;
  out += "\r\n";
  sniff::line_reader lines{head};
  std::string_view line;
  lines.next(line);
  while (lines.next(line) && !line.empty()) {
    if (!cfg_.target_authority.empty() && sniff::istarts_with(line, "Host:")) {
      out += "Host: ";
      out += cfg_.target_authority;
    } else {
      out += line;
    }
    out += "\r\n";
  }
  if (!h.has_host) {
    if (!cfg_.target_authority.empty()) {
      out += "Host: ";
      out += cfg_.target_authority;
      out += "\r\n";
    } else if (!h.authority.empty()) {
      out += "Host: ";
      out += h.authority;
      out += "\r\n";
    }
  }
  out += "\r\n";
  ++requests_;
  upgrade_after_body_ = h.upgrade;
  if (h.chunked) {
    ph_ = phase::chunk_size;
    line_.clear();
  } else if (h.length > 0) {
    ph_ = phase::body;
    remaining_ = h.length;
  } else {
    ph_ = h.upgrade ? phase::opaque : phase::head;
  }
  return true;
}

bool http_request_rewriter::on_line(std::string& out) {
  std::string_view line{line_};
  line.remove_suffix(1); // '\n'
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  switch (ph_) {
    case phase::chunk_size: {
      uint64_t size = 0;
      if (!parse_hex(trim_ows(line.substr(0, line.find(';'))), size)) {
        stop(400, "Bad Request", "bad chunk size line");
        return false;
      }
      if (size == 0) {
        ph_ = phase::trailers;
        trailer_bytes_ = 0;
      } else {
        ph_ = phase::chunk_data;
        remaining_ = size;
      }
      break;
    }
    case phase::chunk_end:
      if (!line.empty()) {
        stop(400, "Bad Request", "chunk data longer than its size");
        return false;
      }
      ph_ = phase::chunk_size;
      break;
    case phase::trailers:
      if (line.empty())
        ph_ = upgrade_after_body_ ? phase::opaque : phase::head;
      break;
    default:
      break;
  }
  line_.clear();
  return true;
}

} // namespace p2proxy
