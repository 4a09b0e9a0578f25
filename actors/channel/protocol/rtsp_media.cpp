#include "actors/channel/protocol/rtsp_media.hpp"

#include <vector>

#include "actors/channel/protocol/sniffer.hpp"

namespace p2proxy {

rtsp_media_hook::~rtsp_media_hook() = default;
rtsp_media_io::~rtsp_media_io() = default;

namespace {

bool success(int status) {
  return status >= 200 && status < 300;
}

/// The first alternative of a response's Transport (the server's choice).
rtsp_transport_spec chosen(std::string_view transport) {
  auto specs = parse_rtsp_transport(transport);
  return specs.empty() ? rtsp_transport_spec{} : specs.front();
}

} // namespace

// -- the listening node -------------------------------------------------------

void rtsp_listener_media::on_request(std::string_view method) {
  io_.client_alive(timeout_s_);
  if (sniff::iequals(method, "TEARDOWN"))
    close_all();
}

bool rtsp_listener_media::in_use(uint8_t channel) const {
  if (pairs_.count(channel) > 0)
    return true;
  for (auto& [cseq, p] : pending_)
    if (p.first == channel)
      return true;
  return false;
}

void rtsp_listener_media::close_all() {
  for (auto& [ch, p] : pairs_)
    io_.close_pair(ch);
  for (auto& [cseq, p] : pending_)
    io_.close_pair(p.first);
  pairs_.clear();
  pending_.clear();
}

rtsp_media_hook::setup_verdict
rtsp_listener_media::on_setup(std::string_view cseq, std::string_view transport,
                              bool, setup_result& r) {
  auto specs = parse_rtsp_transport(transport);
  if (specs.empty() || specs.front().tcp || specs.front().multicast)
    return setup_verdict::keep; // interleaved TCP end to end, as before
  bool tcp_too = false;
  for (auto& s : specs)
    tcp_too |= s.tcp;
  auto& s = specs.front();
  if (!valid_client_ports(s)) {
    if (tcp_too)
      return setup_verdict::keep;
    ++bad_setups_;
    r.code = 400;
    r.phrase = "Bad Request";
    r.reason = "the Transport's client_port must be two consecutive ports "
               "(RTP, RTCP)";
    return setup_verdict::refuse;
  }
  uint8_t channel = 0;
  bool found = false;
  if (pairs() < max_media_pairs_per_channel && !cseq.empty()
      && pending_.count(std::string{cseq}) == 0) {
    for (size_t i = 0; i < max_media_pairs_per_channel && !found; ++i) {
      channel = static_cast<uint8_t>(first_media_channel + 2 * i);
      found = !in_use(channel);
    }
  }
  uint16_t port = found ? io_.open_pair(channel) : 0;
  if (port == 0) {
    if (tcp_too)
      return setup_verdict::keep;
    r.code = 453;
    r.phrase = "Not Enough Bandwidth";
    r.reason = "no UDP port pair free on the proxy for this stream: use "
               "TCP transport";
    return setup_verdict::refuse;
  }
  pair_info p;
  p.client_rtp = static_cast<uint16_t>(s.client_port[0]);
  p.local_rtp = port;
  pending_[std::string{cseq}] = {channel, p};
  used_.insert(channel);
  r.transport = interleaved_transport(channel, {}, s.mode);
  r.mark = true;
  return setup_verdict::replace;
}

bool rtsp_listener_media::on_response(std::string_view cseq, int status,
                                      std::string_view transport,
                                      std::string_view session,
                                      std::string& out) {
  auto i = pending_.find(std::string{cseq});
  if (i == pending_.end())
    return false;
  auto [channel, p] = i->second;
  pending_.erase(i);
  if (!success(status) || transport.empty()) {
    io_.close_pair(channel);
    return false;
  }
  timeout_s_ = rtsp_session_timeout(session, default_rtsp_session_timeout);
  io_.client_alive(timeout_s_);
  pairs_[channel] = p;
  io_.set_remote_port(channel, p.client_rtp);
  auto s = chosen(transport);
  out = udp_transport(p.client_rtp, p.local_rtp, s.ssrc, s.mode);
  return true;
}

bool rtsp_listener_media::takes_channel(uint8_t channel) const {
  // (Frames on the stream for a datagram channel: an exporting node that
  // did not take the mark. They still reach the client, over UDP.)
  return used_.count(static_cast<uint8_t>(channel & ~1u)) > 0;
}

void rtsp_listener_media::on_frame(uint8_t channel, std::string_view payload) {
  io_.send_udp(channel, payload); // (dropped, counted, once its pair is gone)
}

// -- the exporting node -------------------------------------------------------

void rtsp_export_media::on_request(std::string_view method) {
  if (!sniff::iequals(method, "TEARDOWN"))
    return;
  for (auto& [ch, udp] : channels_)
    forget(ch, udp);
  for (auto& [cseq, p] : pending_)
    forget(p.channel, p.udp);
  channels_.clear();
  pending_.clear();
}

void rtsp_export_media::forget(uint8_t channel, bool udp) {
  if (udp)
    io_.close_pair(channel);
  else
    io_.set_interleaved(channel, false);
}

rtsp_media_hook::setup_verdict
rtsp_export_media::on_setup(std::string_view cseq, std::string_view transport,
                            bool marked, setup_result& r) {
  if (!marked)
    return setup_verdict::keep;
  auto specs = parse_rtsp_transport(transport);
  if (specs.size() != 1 || !specs.front().has_interleaved
      || specs.front().malformed || specs.front().interleaved[0] % 2 != 0
      || specs.front().interleaved[1] != specs.front().interleaved[0] + 1)
    return setup_verdict::keep; // (not what a listening node sends)
  auto channel = static_cast<uint8_t>(specs.front().interleaved[0]);
  std::string key{cseq};
  if (key.empty() || pending_.count(key) > 0 || channels_.count(channel) > 0
      || channels_.size() + pending_.size() >= max_media_pairs_per_channel)
    return setup_verdict::keep; // plain interleaved
  uint16_t port = udp_ ? io_.open_pair(channel) : 0;
  if (port == 0) { // interleaved towards the camera, datagrams to the peer
    io_.set_interleaved(channel, true);
    used_.insert(channel);
    pending_[key] = {channel, false};
    return setup_verdict::keep;
  }
  pending_[key] = {channel, true};
  r.transport = udp_transport(port, 0, {}, specs.front().mode);
  return setup_verdict::replace;
}

bool rtsp_export_media::on_response(std::string_view cseq, int status,
                                    std::string_view transport,
                                    std::string_view, std::string& out) {
  auto i = pending_.find(std::string{cseq});
  if (i == pending_.end())
    return false;
  auto p = i->second;
  pending_.erase(i);
  if (!success(status)) {
    forget(p.channel, p.udp);
    return false;
  }
  channels_[p.channel] = p.udp;
  if (!p.udp)
    return false; // the camera's interleaved answer goes back as it is
  auto s = chosen(transport);
  if (s.has_server_port && !s.malformed && s.server_port[0] > 0
      && s.server_port[0] < 65535)
    io_.set_remote_port(p.channel, static_cast<uint16_t>(s.server_port[0]));
  out = interleaved_transport(p.channel, s.ssrc, s.mode);
  return true;
}

bool rtsp_export_media::takes_channel(uint8_t channel) const {
  return used_.count(static_cast<uint8_t>(channel & ~1u)) > 0;
}

void rtsp_export_media::on_frame(uint8_t channel, std::string_view payload) {
  auto even = static_cast<uint8_t>(channel & ~1u);
  auto i = channels_.find(even);
  bool live = i != channels_.end() && !i->second;
  for (auto& [cseq, p] : pending_) // (a PLAY may race the SETUP's answer)
    live |= p.channel == even && !p.udp;
  if (live) // (after a TEARDOWN: the camera's last frames, dropped)
    io_.send_flow(channel, payload);
}

} // namespace p2proxy
