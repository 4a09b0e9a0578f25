#include "actors/channel/protocol/rtsp_sniffer.hpp"

#include <algorithm>
#include <utility>

namespace p2proxy {

namespace sniff {

bool split_rtsp_url(std::string_view url, rtsp_url_parts& p) {
  auto sep = url.find("://");
  if (sep == std::string_view::npos)
    return false;
  p.scheme = url.substr(0, sep);
  if (!iequals(p.scheme, "rtsp") && !iequals(p.scheme, "rtsps")
      && !iequals(p.scheme, "rtspu"))
    return false;
  auto after = url.substr(sep + 3);
  auto end = after.find_first_of(rtsp_segment_end);
  auto auth = after.substr(0, end);
  p.rest
    = end == std::string_view::npos ? std::string_view{} : after.substr(end);
  auto at = auth.rfind('@');
  if (at == std::string_view::npos) {
    p.userinfo = {};
    p.hostport = auth;
  } else {
    p.userinfo = auth.substr(0, at + 1);
    p.hostport = auth.substr(at + 1);
  }
  return true;
}

} // namespace sniff

namespace {

using sniff::iequals;
using sniff::istarts_with;

/// "cam1" from "/cam1/stream"; empty when the path has no first segment.
std::string_view first_segment(std::string_view path) {
  if (path.empty() || path[0] != '/')
    return {};
  path.remove_prefix(1);
  return path.substr(0, path.find_first_of(sniff::rtsp_segment_end));
}

} // namespace

std::string rtsp_reply(std::string_view version, int code,
                       std::string_view phrase, std::string_view cseq,
                       std::string_view text) {
  std::string r;
  r.reserve(128 + text.size());
  r += version;
  r += ' ';
  r += std::to_string(code);
  r += ' ';
  r += phrase;
  r += "\r\n";
  uint64_t n = 0;
  if (sniff::parse_decimal(cseq, n)) {
    r += "CSeq: ";
    r += cseq;
    r += "\r\n";
  }
  if (text.empty()) {
    r += "Content-Length: 0\r\n\r\n";
    return r;
  }
  auto body = "p2proxy: " + sniff::printable(text, 300) + "\n";
  r += "Content-Type: text/plain\r\nContent-Length: ";
  r += std::to_string(body.size());
  r += "\r\n\r\n";
  r += body;
  return r;
}

// -- rtsp_sniffer -------------------------------------------------------------

rtsp_sniffer::rtsp_sniffer(std::string default_resource)
  : default_resource_(std::move(default_resource)) {}

sniff_result rtsp_sniffer::fail(sniff_error err, int code,
                                std::string_view phrase, std::string reason) {
  finished_ = true;
  if (cseq_.empty()) {
    auto v = sniff::find_header(buf_, "CSeq");
    uint64_t n = 0;
    if (sniff::parse_decimal(v, n))
      cseq_ = std::string{v};
  }
  auto reply = rtsp_reply(version_, code, phrase, cseq_, reason);
  return sniff_failure(err, std::move(reply), std::move(reason));
}

sniff_result rtsp_sniffer::feed(std::string_view data) {
  if (finished_) {
    sniff_result r;
    r.state = sniff_state::failed;
    r.error = sniff_error::bad_request;
    r.reason = "rtsp sniffer fed after it finished";
    return r;
  }
  if (buf_.empty()) // CR/LF before a request are allowed and dropped
    while (!data.empty() && (data.front() == '\r' || data.front() == '\n'))
      data.remove_prefix(1);
  buf_.append(data);
  if (buf_.empty())
    return {};
  if (sniff::garbage_method(buf_))
    return fail(sniff_error::bad_request, 400, "Bad Request",
                "not an RTSP request");
  switch (scanner_.scan(buf_)) {
    case sniff::head_scanner::status::need_more:
      return {};
    case sniff::head_scanner::status::line_too_long:
      return fail(sniff_error::line_too_long, 414, "Request-URI Too Large",
                  "request line longer than 8 KiB");
    case sniff::head_scanner::status::head_too_large:
      return fail(sniff_error::head_too_large, 431,
                  "Request Header Fields Too Large",
                  "request head larger than 16 KiB");
    case sniff::head_scanner::status::complete:
      break;
  }
  auto head = std::string_view{buf_}.substr(0, scanner_.head_size());
  {
    auto v = sniff::find_header(head, "CSeq");
    uint64_t n = 0;
    if (sniff::parse_decimal(v, n))
      cseq_ = std::string{v};
  }
  sniff::line_reader lines{head};
  std::string_view line;
  lines.next(line);
  std::string_view method, url, version;
  if (!sniff::split_start_line(line, method, url, version)
      || !sniff::is_token(method))
    return fail(sniff_error::bad_request, 400, "Bad Request",
                "not an RTSP request: \"" + sniff::printable(line, 60) + "\"");
  if (istarts_with(version, "HTTP/"))
    return fail(sniff_error::bad_request, 400, "Bad Request",
                "an HTTP request reached the RTSP listener");
  if (!istarts_with(version, "RTSP/"))
    return fail(sniff_error::bad_request, 400, "Bad Request",
                "not an RTSP request: \"" + sniff::printable(line, 60) + "\"");
  if (version == "RTSP/1.0" || version == "RTSP/2.0")
    version_ = std::string{version};
  while (lines.next(line) && !line.empty()) {
    std::string_view name, value;
    if (!sniff::split_header(line, name, value))
      return fail(sniff_error::bad_request, 400, "Bad Request",
                  "malformed header line \"" + sniff::printable(line, 60)
                    + "\"");
  }
  std::string_view segment;
  if (url != "*") {
    sniff::rtsp_url_parts p;
    if (sniff::split_rtsp_url(url, p)) {
      client_authority_ = std::string{p.hostport};
      segment = first_segment(p.rest);
    } else if (url[0] == '/') {
      segment = first_segment(url);
    } else {
      return fail(sniff_error::bad_request, 400, "Bad Request",
                  "bad request URL \"" + sniff::printable(url, 60) + "\"");
    }
  }
  sniff_result r;
  if (segment.empty()) {
    if (default_resource_.empty())
      return fail(sniff_error::no_resource, 404, "Not Found",
                  "no resource in the URL: use rtsp://HOST:PORT/<name>/...");
    r.resource = default_resource_;
  } else if (!sniff::valid_resource_name(segment)) {
    return fail(sniff_error::bad_request, 400, "Bad Request",
                "invalid resource name \"" + sniff::printable(segment, 60)
                  + "\"");
  } else {
    r.resource = std::string{segment};
    resource_in_url_ = true;
  }
  finished_ = true;
  r.state = sniff_state::done;
  r.forward = std::move(buf_);
  buf_.clear();
  return r;
}

std::string rtsp_sniffer::timeout_reply() const {
  // The head is incomplete, but its CSeq may already be there: a client
  // matches the reply by it.
  // (rtsp_reply() leaves out a CSeq that is not a number.)
  std::string_view cseq = cseq_.empty() ? sniff::find_header(buf_, "CSeq")
                                        : std::string_view{cseq_};
  return rtsp_reply(version_, 408, "Request Timeout", cseq,
                    "no complete request within 10 s");
}

std::string rtsp_sniffer::failure_reply(open_failure why,
                                        std::string_view text) const {
  switch (why) {
    case open_failure::unknown_resource:
      return rtsp_reply(version_, 404, "Not Found", cseq_, text);
    case open_failure::denied:
      return rtsp_reply(version_, 403, "Forbidden", cseq_, text);
    case open_failure::bad_request:
      return rtsp_reply(version_, 400, "Bad Request", cseq_, text);
    default:
      return rtsp_reply(version_, 503, "Service Unavailable", cseq_, text);
  }
}

// -- rtsp_rewriter ------------------------------------------------------------

} // namespace p2proxy
