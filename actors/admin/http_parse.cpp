#include "actors/admin/http_parse.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "actors/common/json.hpp"
#include "actors/common/text.hpp"

namespace p2proxy::http {

const std::string* request::header(std::string_view lower_name) const {
  for (auto& [k, v] : headers)
    if (k == lower_name)
      return &v;
  return nullptr;
}

const std::string* request::param(std::string_view name) const {
  for (auto& [k, v] : params)
    if (k == name)
      return &v;
  return nullptr;
}

std::string error_json(std::string_view text) {
  return "{\"error\":" + json_quote(text) + "}";
}

bool equal_in_constant_time(std::string_view a, std::string_view b) {
  // Every byte of `b` is compared with some byte of `a`, and nothing
  // branches on the bytes, so the time tells only b's length.
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  if (a.empty())
    return b.empty();
  for (size_t i = 0; i < b.size(); ++i)
    diff |= static_cast<unsigned char>(a[i % a.size()])
            ^ static_cast<unsigned char>(b[i]);
  return diff == 0;
}

namespace detail {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

bool is_token(std::string_view s) {
  if (s.empty())
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return std::isalnum(u)
           || std::string_view{"!#$%&'*+-.^_`|~"}.find(c)
                != std::string_view::npos;
  });
}

std::string lower(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

head_state refuse(parsed_head& head, int status, std::string text) {
  head.error_status = status;
  head.error_text = std::move(text);
  return head_state::refused;
}

void parse_query(std::string_view q, fields& out) {
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (part.empty())
      continue;
    auto eq = part.find('=');
    auto key = part.substr(0, eq);
    auto value
      = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
    out.emplace_back(percent_decode(key, true), percent_decode(value, true));
  }
}

head_state parse_request_line(std::string_view line, parsed_head& head) {
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos
      || line.find(' ', sp2 + 1) != std::string_view::npos)
    return refuse(head, 400, "bad request line");
  auto method = line.substr(0, sp1);
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  auto version = line.substr(sp2 + 1);
  if (!is_token(method) || target.empty() || target.front() != '/')
    return refuse(head, 400, "bad request line");
  if (version == "HTTP/1.0")
    head.keep_alive = false;
  else if (version != "HTTP/1.1")
    return refuse(head, 400, "only HTTP/1.0 and HTTP/1.1 are served");
  head.req.method = std::string{method};
  auto q = target.find('?');
  head.req.path = percent_decode(target.substr(0, q), false);
  if (q != std::string_view::npos)
    parse_query(target.substr(q + 1), head.req.params);
  return head_state::complete;
}

head_state parse_field(std::string_view line, parsed_head& head) {
  if (line.front() == ' ' || line.front() == '\t')
    return refuse(head, 400, "folded header lines are not accepted");
  auto colon = line.find(':');
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
    return refuse(head, 400, "bad header line");
  auto name = lower(line.substr(0, colon));
  auto value = trim_ows(line.substr(colon + 1));
  if (name == "content-length") {
    if (value.empty() || value.size() > 18
        || !std::all_of(value.begin(), value.end(),
                        [](char c) { return c >= '0' && c <= '9'; }))
      return refuse(head, 400, "bad Content-Length");
    auto n = std::stoull(std::string{value});
    if (head.req.header("content-length") != nullptr
        && n != head.content_length)
      return refuse(head, 400, "conflicting Content-Length headers");
    head.content_length = n;
  } else if (name == "transfer-encoding") {
    return refuse(head, 411, "send a Content-Length, not a Transfer-Encoding");
  } else if (name == "connection") {
    auto v = lower(value);
    if (v.find("close") != std::string::npos)
      head.keep_alive = false;
    else if (v.find("keep-alive") != std::string::npos)
      head.keep_alive = true;
  }
  head.req.headers.emplace_back(std::move(name), std::string{value});
  return head_state::complete;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

} // namespace

std::string percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    auto c = text[i];
    if (c == '%' && i + 2 < text.size()) {
      auto hi = hex_value(text[i + 1]);
      auto lo = hex_value(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += plus_is_space && c == '+' ? ' ' : c;
  }
  return out;
}

head_state parse_head(std::string_view in, const front_limits& limits,
                      parsed_head& head) {
  head = parsed_head{};
  size_t pos = 0;
  size_t lines = 0;
  for (;;) {
    auto nl = in.find('\n', pos);
    if (nl == std::string_view::npos) {
      // No complete line yet: refuse once the partial one alone is over.
      if (lines == 0 && in.size() > limits.max_request_line)
        return refuse(head, 414, "request line too long");
      if (in.size() > limits.max_head_bytes)
        return refuse(head, 431, "request header fields too large");
      return head_state::incomplete;
    }
    auto line = in.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    pos = nl + 1;
    if (lines == 0 && line.size() > limits.max_request_line)
      return refuse(head, 414, "request line too long");
    if (pos > limits.max_head_bytes)
      return refuse(head, 431, "request header fields too large");
    if (line.empty()) {
      if (lines == 0) // tolerate blank lines before a request
        continue;
      head.head_bytes = pos;
      if (head.content_length > limits.max_body)
        return refuse(head, 413, "payload too large");
      return head_state::complete;
    }
    auto st
      = lines == 0 ? parse_request_line(line, head) : parse_field(line, head);
    if (st == head_state::refused)
      return st;
    if (++lines > limits.max_header_fields + 1)
      return refuse(head, 431, "too many request header fields");
  }
}

std::string serialize(const response& res, bool head_only, bool keep_alive) {
  std::string out
    = fmt::format("HTTP/1.1 {} {}\r\n", res.status, reason_phrase(res.status));
  if (!res.content_type.empty())
    out += fmt::format("Content-Type: {}\r\n", res.content_type);
  out += fmt::format("Content-Length: {}\r\n", res.body.size());
  for (auto& [k, v] : res.headers)
    out += fmt::format("{}: {}\r\n", k, v);
  out += keep_alive ? "Connection: keep-alive\r\n\r\n"
                    : "Connection: close\r\n\r\n";
  if (!head_only)
    out += res.body;
  return out;
}

} // namespace detail

} // namespace p2proxy::http
