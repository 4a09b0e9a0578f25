// RTSP Transport headers (RFC 2326 12.39): parsing one alternative and
// writing the ones the proxy answers or forwards when a client's media goes
// as QUIC datagrams (docs/listeners.md, "RTSP over UDP").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace p2proxy {

/// One alternative of a Transport header, the parts the proxy uses.
struct rtsp_transport_spec {
  std::string_view text; // the whole alternative
  bool tcp = false;      // RTP/AVP/TCP (or an interleaved= parameter)
  bool multicast = false;
  bool has_client_port = false;
  uint32_t client_port[2] = {0, 0};
  bool has_server_port = false;
  uint32_t server_port[2] = {0, 0};
  bool has_interleaved = false;
  uint32_t interleaved[2] = {0, 0};
  std::string_view ssrc; // empty if none
  std::string_view mode; // empty if none
  /// A port or channel parameter was there but not a number (or a range
  /// out of order): the spec is nonsense.
  bool malformed = false;
};

/// The alternatives of a Transport value, in the client's order of
/// preference (empty ones skipped).
std::vector<rtsp_transport_spec> parse_rtsp_transport(std::string_view value);

/// True if `s` names a usable client RTP/RTCP port pair: both in 1..65535,
/// RTCP = RTP + 1 (or only RTP given, then RTCP = RTP + 1 is assumed by the
/// caller: parse_rtsp_transport fills both).
bool valid_client_ports(const rtsp_transport_spec& s);

/// "RTP/AVP/TCP;unicast;interleaved=A-B" (A, B = first, first + 1), with
/// ";ssrc=" and ";mode=" appended when given.
std::string interleaved_transport(uint32_t first, std::string_view ssrc = {},
                                  std::string_view mode = {});

/// "RTP/AVP;unicast;client_port=A-B[;server_port=C-D][;ssrc=..][;mode=..]";
/// server_port left out when `server_rtp` is 0.
std::string udp_transport(uint32_t client_rtp, uint32_t server_rtp,
                          std::string_view ssrc = {},
                          std::string_view mode = {});

/// The "timeout=" of a Session header value, in seconds; `fallback` if none
/// (or out of 1..3600).
uint32_t rtsp_session_timeout(std::string_view session, uint32_t fallback);

/// The header a listening node adds to a client SETUP it turned into an
/// interleaved one whose channels go as datagrams (the exporting node
/// removes it; a client's own is removed by the listening node).
constexpr std::string_view media_header = "P2proxy-Media";
constexpr std::string_view media_header_value = "datagram";

// -- datagrams --------------------------------------------------------------
// A media datagram on a channel's flow: one byte, the interleaved channel
// the packet belongs to, then the RTP or RTCP packet. A packet larger than
// media_fragment_at goes as two halves, so it fits the smallest QUIC path
// (1200 bytes): 0xFF, the channel, a 2-byte sequence number, the part (0 or
// 1), then the half; a packet whose other half is lost is dropped whole.

/// Packets up to this size go in one datagram.
constexpr size_t media_fragment_at = 1100;
/// The first byte of a fragment.
constexpr uint8_t media_fragment_mark = 0xFF;
/// Largest RTP/RTCP packet relayed; larger ones are dropped (counted).
constexpr size_t max_media_packet = 2 * media_fragment_at;

/// True if `p` can be an RTP packet (version 2, a 12-byte header and its
/// CSRCs) or, when `rtcp`, an RTCP packet (version 2, at least 8 bytes).
bool plausible_rtp(std::string_view p, bool rtcp);

} // namespace p2proxy
