#include "actors/channel/protocol/rtsp_rewriter.hpp"

#include <algorithm>
#include <optional>
#include <utility>

namespace p2proxy {

namespace {

using sniff::iequals;
using sniff::istarts_with;

bool icontains(std::string_view s, std::string_view needle) {
  if (needle.size() > s.size())
    return false;
  for (size_t i = 0; i + needle.size() <= s.size(); ++i)
    if (iequals(s.substr(i, needle.size()), needle))
      return true;
  return false;
}

/// Position of a "url=" parameter at or after `from` in an RTP-Info value.
size_t find_url_param(std::string_view v, size_t from) {
  for (auto i = from; i + 4 <= v.size(); ++i) {
    if (!iequals(v.substr(i, 4), "url="))
      continue;
    if (i == 0 || v[i - 1] == ',' || v[i - 1] == ';' || v[i - 1] == ' '
        || v[i - 1] == '\t')
      return i;
  }
  return std::string_view::npos;
}

/// Appends an absolute RTSP `url` up to its path with `authority` in place
/// of its own, and leaves the path in `rest`; a path-only URL is all `rest`.
/// False, with `url` appended unchanged, for anything else.
bool rebase_url(std::string_view url, std::string_view authority,
                std::string& out, std::string_view& rest) {
  sniff::rtsp_url_parts p;
  if (sniff::split_rtsp_url(url, p)) {
    out += p.scheme;
    out += "://";
    out += p.userinfo;
    out += authority;
    rest = p.rest;
    return true;
  }
  if (!url.empty() && url[0] == '/') {
    rest = url;
    return true;
  }
  out += url;
  return false;
}

/// The code of a status line ("RTSP/1.0 200 OK"), 0 if none.
int status_code(std::string_view status_line) {
  uint64_t code = 0;
  auto sp = status_line.find(' ');
  if (sp != std::string_view::npos)
    sniff::parse_decimal(status_line.substr(sp + 1, 3), code);
  return static_cast<int>(code);
}

} // namespace

rtsp_rewriter::rtsp_rewriter(rtsp_url_map map) : map_(std::move(map)) {
  if (map_.resource.empty())
    map_.strip_resource = false;
}

void rtsp_rewriter::url_to_server(std::string_view url, std::string& out) {
  if (!map_.rewrite_urls) {
    out += url;
    return;
  }
  sniff::rtsp_url_parts p;
  if (map_.client_authority.empty() && sniff::split_rtsp_url(url, p))
    map_.client_authority = std::string{p.hostport};
  std::string_view rest;
  if (!rebase_url(url, map_.server_authority, out, rest))
    return;
  if (map_.strip_resource) {
    auto n = map_.resource.size();
    if (rest.size() > n && rest[0] == '/'
        && rest.compare(1, n, map_.resource) == 0
        && (rest.size() == n + 1
            || sniff::rtsp_segment_end.find(rest[n + 1])
                 != std::string_view::npos))
      rest.remove_prefix(n + 1);
  }
  if (rest.empty() || rest[0] != '/')
    out += '/';
  out += rest;
}

void rtsp_rewriter::url_to_client(std::string_view url,
                                  std::string& out) const {
  if (!map_.rewrite_urls) {
    out += url;
    return;
  }
  std::string_view rest;
  if (map_.client_authority.empty() && (url.empty() || url[0] != '/')) {
    out += url; // (an absolute URL before the client's authority is known)
    return;
  }
  if (!rebase_url(url, map_.client_authority, out, rest))
    return;
  if (map_.strip_resource) {
    out += '/';
    out += map_.resource;
  }
  out += rest;
}

rtsp_rewriter::status rtsp_rewriter::from_client(std::string_view in,
                                                 std::string& to_server,
                                                 std::string& to_client) {
  return run(up_, in, to_server, &to_client);
}

rtsp_rewriter::status rtsp_rewriter::from_server(std::string_view in,
                                                 std::string& to_client) {
  return run(down_, in, to_client, nullptr);
}

void rtsp_rewriter::fail_stream(direction& d, const std::string& reason,
                                std::string* reply, int code,
                                std::string_view phrase) {
  d.ph = phase::failed;
  failure_reason_ = (d.from_client ? "client: " : "server: ") + reason;
  if (reply != nullptr)
    *reply += rtsp_reply("RTSP/1.0", code, phrase,
                         sniff::find_header(d.buf, "CSeq"), reason);
}

rtsp_rewriter::status rtsp_rewriter::run(direction& d, std::string_view in,
                                         std::string& out, std::string* reply) {
  while (!in.empty()) {
    switch (d.ph) {
      case phase::failed:
        return status::failed;
      case phase::boundary: {
        auto c = in.front();
        if (c == '\r' || c == '\n') {
          out += c;
          in.remove_prefix(1);
          break;
        }
        d.buf.clear();
        if (c == '$') {
          d.ph = phase::interleaved_header;
        } else {
          d.ph = phase::head;
          d.scanner.reset();
        }
        break;
      }
      case phase::interleaved_header: {
        auto n = std::min(4 - d.buf.size(), in.size());
        d.buf.append(in.data(), n);
        in.remove_prefix(n);
        if (d.buf.size() == 4) {
          d.remaining
            = (static_cast<uint64_t>(static_cast<unsigned char>(d.buf[2])) << 8)
              | static_cast<unsigned char>(d.buf[3]);
          d.channel = static_cast<uint8_t>(d.buf[1]);
          if (!d.from_client && media_ != nullptr
              && media_->takes_channel(d.channel)) {
            d.buf.clear();
            d.ph
              = d.remaining > 0 ? phase::interleaved_capture : phase::boundary;
            break;
          }
          out += d.buf;
          d.ph = d.remaining > 0 ? phase::interleaved_payload : phase::boundary;
        }
        break;
      }
      case phase::interleaved_capture: {
        auto n
          = static_cast<size_t>(std::min<uint64_t>(d.remaining, in.size()));
        d.buf.append(in.data(), n);
        in.remove_prefix(n);
        d.remaining -= n;
        if (d.remaining == 0) {
          media_->on_frame(d.channel, d.buf);
          d.buf.clear();
          d.ph = phase::boundary;
        }
        break;
      }
      case phase::interleaved_payload:
      case phase::body_stream:
      case phase::body_drop: {
        auto n
          = static_cast<size_t>(std::min<uint64_t>(d.remaining, in.size()));
        if (d.ph != phase::body_drop)
          out.append(in.data(), n);
        in.remove_prefix(n);
        d.remaining -= n;
        if (d.remaining == 0)
          d.ph = phase::boundary;
        break;
      }
      case phase::head: {
        auto old = d.buf.size();
        auto n = std::min(in.size(), max_request_head - old);
        d.buf.append(in.data(), n);
        switch (d.scanner.scan(d.buf)) {
          case sniff::head_scanner::status::need_more:
            in.remove_prefix(n);
            break;
          case sniff::head_scanner::status::line_too_long:
            fail_stream(d, "start line longer than 8 KiB", reply, 414,
                        "Request-URI Too Large");
            return status::failed;
          case sniff::head_scanner::status::head_too_large:
            fail_stream(d, "message head larger than 16 KiB", reply, 431,
                        "Request Header Fields Too Large");
            return status::failed;
          case sniff::head_scanner::status::complete: {
            auto size = d.scanner.head_size();
            in.remove_prefix(size - old);
            d.buf.resize(size);
            if (!on_head(d, d.buf, out, reply))
              return status::failed;
            break;
          }
        }
        break;
      }
      case phase::body_buffer: {
        auto n
          = static_cast<size_t>(std::min<uint64_t>(d.remaining, in.size()));
        d.buf.append(in.data(), n);
        in.remove_prefix(n);
        d.remaining -= n;
        if (d.remaining == 0) {
          scratch_.clear();
          rewrite_sdp(d, d.buf, scratch_);
          out += d.held_head;
          out += "Content-Length: ";
          out += std::to_string(scratch_.size());
          out += "\r\n\r\n";
          out += scratch_;
          d.ph = phase::boundary;
        }
        break;
      }
    }
  }
  return d.ph == phase::failed ? status::failed : status::ok;
}

bool rtsp_rewriter::on_head(direction& d, std::string_view head,
                            std::string& out, std::string* reply) {
  sniff::line_reader lines{head};
  std::string_view start;
  lines.next(start);
  auto& h = scratch_;
  h.clear();
  auto response = istarts_with(start, "RTSP/");
  std::string_view method, url, version;
  if (response) {
    auto sp = start.find(' ');
    if (sp == std::string_view::npos || start.size() < sp + 4) {
      fail_stream(
        d, "malformed status line \"" + sniff::printable(start, 60) + "\"",
        reply, 400, "Bad Request");
      return false;
    }
    h += start;
  } else {
    if (!sniff::split_start_line(start, method, url, version)
        || !sniff::is_token(method) || !istarts_with(version, "RTSP/")) {
      fail_stream(
        d, "malformed request line \"" + sniff::printable(start, 60) + "\"",
        reply, 400, "Bad Request");
      return false;
    }
    h += method;
    h += ' ';
    if (d.from_client)
      url_to_server(url, h);
    else
      url_to_client(url, h);
    h += ' ';
    h += version;
  }
  h += "\r\n";
  auto setup = d.from_client && !response && method == "SETUP";
  auto media_response = !d.from_client && response && media_ != nullptr;
  if (d.from_client && !response && media_ != nullptr)
    media_->on_request(method);
  auto has_length = false;
  auto sdp = false;
  auto marked = false;
  uint64_t length = 0;
  std::string_view cseq, session;
  std::optional<std::string_view> transport;
  size_t transport_at = 0;
  std::string_view line;
  while (lines.next(line) && !line.empty()) {
    if (line[0] == ' ' || line[0] == '\t') { // obsolete folding: keep as is
      h += line;
      h += "\r\n";
      continue;
    }
    std::string_view name, value;
    if (!sniff::split_header(line, name, value)) {
      fail_stream(
        d, "malformed header line \"" + sniff::printable(line, 60) + "\"",
        reply, 400, "Bad Request");
      return false;
    }
    if (iequals(name, "Content-Length")) {
      uint64_t n = 0;
      if (!sniff::parse_decimal(value, n) || (has_length && n != length)) {
        fail_stream(d, "bad Content-Length", reply, 400, "Bad Request");
        return false;
      }
      has_length = true;
      length = n;
      continue; // written after the other headers
    }
    if (iequals(name, "Content-Type")) {
      sdp = istarts_with(value, "application/sdp");
    } else if (iequals(name, "CSeq")) {
      cseq = value;
    } else if (iequals(name, "Content-Base")
               || iequals(name, "Content-Location")
               || iequals(name, "Location")) {
      h += name;
      h += ": ";
      rewrite_url_header(d, value, h);
      h += "\r\n";
      continue;
    } else if (iequals(name, "RTP-Info")) {
      h += name;
      h += ": ";
      rewrite_rtp_info(d, value, h);
      h += "\r\n";
      continue;
    } else if (d.from_client && iequals(name, media_header)) {
      marked = true; // only a listening node adds it: see emit_transport
      continue;
    } else if ((setup || media_response) && iequals(name, "Transport")) {
      transport = value; // rewritten in place once CSeq is known
      transport_at = h.size();
      continue;
    } else if (iequals(name, "Session")) {
      session = value;
    }
    h += line;
    h += "\r\n";
  }
  if (transport) {
    std::string refusal, t;
    if (setup)
      refusal = setup_transport(cseq, *transport, marked, t);
    else
      response_transport(start, cseq, *transport, session, t);
    h.insert(transport_at, t);
    if (!refusal.empty()) {
      *reply += refusal;
      d.remaining = length;
      d.ph = length > 0 ? phase::body_drop : phase::boundary;
      return true;
    }
  }
  if (media_response && !transport) { // (a failed SETUP has none)
    std::string ignored;
    media_->on_response(cseq, status_code(start), {}, session, ignored);
  }
  if (length > 0 && sdp && length <= max_rtsp_sdp_body) {
    std::swap(d.held_head, h);
    d.buf.clear();
    d.remaining = length;
    d.ph = phase::body_buffer;
    return true;
  }
  out += h;
  if (has_length) {
    out += "Content-Length: ";
    out += std::to_string(length);
    out += "\r\n";
  }
  out += "\r\n";
  d.remaining = length;
  d.ph = length > 0 ? phase::body_stream : phase::boundary;
  return true;
}

std::string rtsp_rewriter::setup_transport(std::string_view cseq,
                                           std::string_view value, bool marked,
                                           std::string& h) {
  rtsp_media_hook::setup_result r;
  auto verdict = media_ != nullptr ? media_->on_setup(cseq, value, marked, r)
                                   : rtsp_media_hook::setup_verdict::keep;
  if (verdict == rtsp_media_hook::setup_verdict::refuse) {
    ++setups_refused_;
    return rtsp_reply("RTSP/1.0", r.code, r.phrase, cseq, r.reason);
  }
  if (verdict == rtsp_media_hook::setup_verdict::replace) {
    h += "Transport: ";
    h += r.transport;
    h += "\r\n";
    if (r.mark) {
      h += media_header;
      h += ": ";
      h += media_header_value;
      h += "\r\n";
    }
    return {};
  }
  // Keep only the interleaved (TCP) alternatives.
  auto tcp = std::string{};
  auto any_udp = false;
  auto rest = value;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    auto spec = trim_ows(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{}
                                           : rest.substr(comma + 1);
    if (spec.empty())
      continue;
    auto id = spec.substr(0, spec.find(';'));
    if (icontains(id, "/TCP") || icontains(spec, "interleaved")) {
      if (!tcp.empty())
        tcp += ',';
      tcp += spec;
    } else {
      any_udp = true;
    }
  }
  if (any_udp && tcp.empty()) {
    ++udp_setups_refused_;
    return rtsp_reply("RTSP/1.0", 461, "Unsupported Transport", cseq,
                      "only interleaved RTP over the RTSP connection is "
                      "relayed: use TCP transport (ffplay: -rtsp_transport "
                      "tcp)");
  }
  h += "Transport: ";
  h += any_udp ? std::string_view{tcp} : value;
  h += "\r\n";
  return {};
}

void rtsp_rewriter::response_transport(std::string_view status_line,
                                       std::string_view cseq,
                                       std::string_view value,
                                       std::string_view session,
                                       std::string& h) {
  std::string replaced;
  h += "Transport: ";
  if (media_->on_response(cseq, status_code(status_line), value, session,
                          replaced))
    h += replaced;
  else
    h += value;
  h += "\r\n";
}

void rtsp_rewriter::rewrite_url_header(direction& d, std::string_view value,
                                       std::string& out) {
  if (d.from_client)
    url_to_server(value, out);
  else
    url_to_client(value, out);
}

void rtsp_rewriter::rewrite_rtp_info(direction& d, std::string_view value,
                                     std::string& out) {
  size_t i = 0;
  while (i < value.size()) {
    auto p = find_url_param(value, i);
    if (p == std::string_view::npos) {
      out += value.substr(i);
      return;
    }
    out += value.substr(i, p + 4 - i);
    auto j = p + 4;
    if (j < value.size() && value[j] == '"') {
      auto end = value.find('"', j + 1);
      if (end == std::string_view::npos) { // unterminated: leave as is
        out += value.substr(j);
        return;
      }
      out += '"';
      rewrite_url_header(d, value.substr(j + 1, end - j - 1), out);
      out += '"';
      i = end + 1;
    } else {
      auto end = value.find_first_of(";,", j);
      if (end == std::string_view::npos)
        end = value.size();
      rewrite_url_header(d, value.substr(j, end - j), out);
      i = end;
    }
  }
}

void rtsp_rewriter::rewrite_sdp(direction& d, std::string_view body,
                                std::string& out) {
  size_t pos = 0;
  while (pos < body.size()) {
    auto nl = body.find('\n', pos);
    auto end = nl == std::string_view::npos ? body.size() : nl + 1;
    auto line = body.substr(pos, end - pos);
    auto content = line;
    while (!content.empty()
           && (content.back() == '\n' || content.back() == '\r'))
      content.remove_suffix(1);
    if (istarts_with(content, "a=control:")) {
      out += content.substr(0, 10);
      rewrite_url_header(d, content.substr(10), out);
      out += line.substr(content.size());
    } else {
      out += line;
    }
    pos = end;
  }
}

} // namespace p2proxy
