#include "actors/channel/protocol/rtsp_transport.hpp"

#include "actors/channel/protocol/sniffer.hpp"
#include "actors/common/text.hpp"

namespace p2proxy {

namespace {

using sniff::iequals;
using sniff::istarts_with;

/// "A" or "A-B" into `out`; B defaults to A + 1 when `pair_default`.
bool parse_range(std::string_view v, uint32_t out[2], bool pair_default) {
  auto dash = v.find('-');
  uint64_t a = 0, b = 0;
  if (!sniff::parse_decimal(v.substr(0, dash), a) || a > 65535)
    return false;
  if (dash == std::string_view::npos) {
    b = pair_default ? a + 1 : a;
  } else if (!sniff::parse_decimal(v.substr(dash + 1), b) || b > 65535
             || b < a) {
    return false;
  }
  out[0] = static_cast<uint32_t>(a);
  out[1] = static_cast<uint32_t>(b);
  return true;
}

void append_params(std::string& out, std::string_view ssrc,
                   std::string_view mode) {
  if (!ssrc.empty()) {
    out += ";ssrc=";
    out += ssrc;
  }
  if (!mode.empty()) {
    out += ";mode=";
    out += mode;
  }
}

} // namespace

std::vector<rtsp_transport_spec> parse_rtsp_transport(std::string_view value) {
  std::vector<rtsp_transport_spec> specs;
  while (!value.empty() && specs.size() < 16) {
    auto comma = value.find(',');
    auto text = trim_ows(value.substr(0, comma));
    value = comma == std::string_view::npos ? std::string_view{}
                                            : value.substr(comma + 1);
    if (text.empty())
      continue;
    rtsp_transport_spec s;
    s.text = text;
    auto rest = text;
    bool first = true;
    while (!rest.empty() || first) {
      auto semi = rest.find(';');
      auto part = trim_ows(rest.substr(0, semi));
      rest = semi == std::string_view::npos ? std::string_view{}
                                            : rest.substr(semi + 1);
      if (first) {
        first = false;
        s.tcp = iequals(part, "RTP/AVP/TCP") || iequals(part, "RTP/AVPF/TCP");
        continue;
      }
      auto eq = part.find('=');
      auto name = trim_ows(part.substr(0, eq));
      auto val = eq == std::string_view::npos ? std::string_view{}
                                              : trim_ows(part.substr(eq + 1));
      if (iequals(name, "multicast")) {
        s.multicast = true;
      } else if (iequals(name, "client_port")) {
        s.has_client_port = true;
        s.malformed |= !parse_range(val, s.client_port, true);
      } else if (iequals(name, "server_port")) {
        s.has_server_port = true;
        s.malformed |= !parse_range(val, s.server_port, true);
      } else if (iequals(name, "interleaved")) {
        s.has_interleaved = true;
        s.tcp = true;
        s.malformed
          |= !parse_range(val, s.interleaved, true) || s.interleaved[1] > 255;
      } else if (iequals(name, "ssrc")) {
        s.ssrc = val;
      } else if (iequals(name, "mode")) {
        s.mode = val;
      }
    }
    specs.push_back(s);
  }
  return specs;
}

bool valid_client_ports(const rtsp_transport_spec& s) {
  return s.has_client_port && !s.malformed && s.client_port[0] > 0
         && s.client_port[1] == s.client_port[0] + 1
         && s.client_port[1] <= 65535;
}

std::string interleaved_transport(uint32_t first, std::string_view ssrc,
                                  std::string_view mode) {
  std::string out = "RTP/AVP/TCP;unicast;interleaved=";
  out += std::to_string(first);
  out += '-';
  out += std::to_string(first + 1);
  append_params(out, ssrc, mode);
  return out;
}

std::string udp_transport(uint32_t client_rtp, uint32_t server_rtp,
                          std::string_view ssrc, std::string_view mode) {
  std::string out = "RTP/AVP;unicast;client_port=";
  out += std::to_string(client_rtp);
  out += '-';
  out += std::to_string(client_rtp + 1);
  if (server_rtp > 0) {
    out += ";server_port=";
    out += std::to_string(server_rtp);
    out += '-';
    out += std::to_string(server_rtp + 1);
  }
  append_params(out, ssrc, mode);
  return out;
}

uint32_t rtsp_session_timeout(std::string_view session, uint32_t fallback) {
  auto semi = session.find(';');
  while (semi != std::string_view::npos) {
    session.remove_prefix(semi + 1);
    semi = session.find(';');
    auto part = trim_ows(session.substr(0, semi));
    if (istarts_with(part, "timeout=")) {
      uint64_t n = 0;
      if (sniff::parse_decimal(trim_ows(part.substr(8)), n) && n >= 1
          && n <= 3600)
        return static_cast<uint32_t>(n);
    }
  }
  return fallback;
}

bool plausible_rtp(std::string_view p, bool rtcp) {
  if (p.size() < (rtcp ? 8u : 12u))
    return false;
  auto b0 = static_cast<unsigned char>(p[0]);
  if ((b0 >> 6) != 2)
    return false;
  if (rtcp)
    return true;
  return p.size() >= 12u + 4u * (b0 & 0x0f);
}

} // namespace p2proxy
