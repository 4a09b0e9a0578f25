#include "actors/udp/rtsp_media_relay.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include <caf/all.hpp>

#include "actors/common/log.hpp"
#include "actors/udp/udp_reactor.hpp"

namespace p2proxy {

namespace {

constexpr const char* subject = "rtsp-media";
constexpr int media_socket_buffer = 1 << 20; // (capped by net.core.rmem_max)

std::atomic<size_t>& total_pairs() {
  static std::atomic<size_t> n{0};
  return n;
}

/// "1.2.3.4" of "1.2.3.4:5", "::1" of "[::1]:5"; IPv4-mapped IPv6 as IPv4.
std::string host_of(const std::string& text) {
  std::string h;
  if (!text.empty() && text[0] == '[') {
    auto end = text.find(']');
    h = text.substr(1, end == std::string::npos ? std::string::npos : end - 1);
  } else {
    auto colon = text.rfind(':');
    h = colon == std::string::npos || text.find(':') != colon
          ? text
          : text.substr(0, colon);
  }
  if (h.rfind("::ffff:", 0) == 0 && h.find('.') != std::string::npos)
    h = h.substr(7);
  return h;
}

/// The destination `ip`:`port` for a socket of `family`; false if `ip` is
/// not an address of it.
bool make_dest(const std::string& ip, uint16_t port, int family,
               sockaddr_storage& ss, socklen_t& len) {
  ss = {};
  if (family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    len = sizeof(sockaddr_in);
    return inet_pton(AF_INET, ip.c_str(), &in->sin_addr) == 1;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  len = sizeof(sockaddr_in6);
  if (inet_pton(AF_INET6, ip.c_str(), &in6->sin6_addr) == 1)
    return true;
  return inet_pton(AF_INET6, ("::ffff:" + ip).c_str(), &in6->sin6_addr) == 1;
}

int family_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return ss.ss_family;
}

} // namespace

rtsp_media_relay::rtsp_media_relay(caf::io::broker* self, std::string bind_host,
                                   bool client_side)
  : self_(self), bind_host_(std::move(bind_host)), client_side_(client_side) {}

rtsp_media_relay::~rtsp_media_relay() {
  close_all();
}

void rtsp_media_relay::close_all() {
  for (auto& [ch, p] : pairs_)
    close(p);
  pairs_.clear();
  interleaved_.clear();
}

size_t rtsp_media_relay::pairs_total() {
  return total_pairs().load();
}

void rtsp_media_relay::set_remote_host(const std::string& ip) {
  remote_ip_ = host_of(ip);
}

void rtsp_media_relay::attach(const session_streams_actor& session,
                              int64_t stream) {
  flows_ = caf::actor_cast<session_flows_actor>(session);
  stream_ = stream;
  self_->send(flows_, flow_attach_atom::value, stream,
              caf::actor_cast<caf::actor>(self_));
}

uint16_t rtsp_media_relay::open_pair(uint8_t channel) {
  if (pairs_.count(channel) > 0 || remote_ip_.empty()
      || total_pairs().load() >= max_media_pairs_total)
    return 0;
  auto host = bind_host_;
  if (host.empty())
    host = remote_ip_.find(':') != std::string::npos ? "::" : "0.0.0.0";
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string why;
    uint16_t rtp = 0, rtcp = 0;
    int a = udp_bind(host, 0, rtp, why);
    if (a < 0) {
      log::warn(subject, "cannot open a UDP port on {}: {}", host, why);
      return 0;
    }
    if (rtp % 2 != 0 || rtp == 65534) {
      ::close(a);
      continue;
    }
    int b = udp_bind(host, static_cast<uint16_t>(rtp + 1), rtcp, why);
    if (b < 0) {
      ::close(a);
      continue;
    }
    // Room for a burst (a key frame) while the channel's actor is busy.
    for (int fd : {a, b}) {
      int size = media_socket_buffer;
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
    if (!reactor_)
      reactor_ = udp_reactor::shared();
    auto me = caf::actor_cast<caf::actor>(self_);
    pair p;
    p.fd[0] = a;
    p.fd[1] = b;
    p.port = rtp;
    p.tag[0] = next_tag_++;
    p.tag[1] = next_tag_++;
    p.reg[0] = reactor_->add(a, me, p.tag[0]);
    p.reg[1] = reactor_->add(b, me, p.tag[1]);
    by_tag_[p.tag[0]] = channel;
    by_tag_[p.tag[1]] = static_cast<uint8_t>(channel + 1);
    pairs_[channel] = std::move(p);
    ++total_pairs();
    log::debug(subject, "opened UDP {}-{} on {} for channel {}", rtp, rtp + 1,
               host, channel);
    return rtp;
  }
  return 0;
}

void rtsp_media_relay::close(pair& p) {
  for (int k = 0; k < 2; ++k) {
    if (p.reg[k] && reactor_)
      reactor_->remove(p.reg[k]);
    p.reg[k].reset();
    by_tag_.erase(p.tag[k]);
    if (p.fd[k] >= 0) {
      ::close(p.fd[k]);
      p.fd[k] = -1;
    }
  }
  --total_pairs();
}

void rtsp_media_relay::set_remote_port(uint8_t channel, uint16_t rtp) {
  auto i = pairs_.find(channel);
  if (i != pairs_.end())
    i->second.remote_rtp = rtp;
}

void rtsp_media_relay::close_pair(uint8_t channel) {
  auto i = pairs_.find(channel);
  if (i == pairs_.end())
    return;
  close(i->second);
  pairs_.erase(i);
}

void rtsp_media_relay::set_interleaved(uint8_t channel, bool on) {
  if (on)
    interleaved_[channel] = true;
  else
    interleaved_.erase(channel);
}

void rtsp_media_relay::client_alive(uint32_t timeout_s) {
  alive_ = std::chrono::steady_clock::now();
  timeout_s_ = timeout_s;
}

bool rtsp_media_relay::expired(
  std::chrono::steady_clock::time_point now) const {
  return client_side_ && !pairs_.empty()
         && now - alive_ > std::chrono::seconds(timeout_s_);
}

void rtsp_media_relay::send_flow(uint8_t channel, std::string_view packet) {
  if (packet.size() > max_media_packet) {
    ++c_.dropped_oversize;
    return;
  }
  if (!plausible_rtp(packet, channel % 2 == 1)) {
    ++c_.dropped_bad;
    return;
  }
  if (stream_ < 0) {
    ++c_.dropped_unavailable;
    return;
  }
  auto put = [this](std::string&& d) {
    ++c_.to_peer;
    c_.to_peer_bytes += d.size();
    out_.push_back(std::move(d));
  };
  if (packet.size() <= media_fragment_at) {
    std::string d;
    d.reserve(packet.size() + 1);
    d += static_cast<char>(channel);
    d += packet;
    put(std::move(d));
  } else {
    auto seq = frag_seq_++;
    auto half = packet.size() / 2;
    for (int part = 0; part < 2; ++part) {
      std::string d;
      d += static_cast<char>(media_fragment_mark);
      d += static_cast<char>(channel);
      d += static_cast<char>(seq >> 8);
      d += static_cast<char>(seq & 0xff);
      d += static_cast<char>(part);
      d += part == 0 ? packet.substr(0, half) : packet.substr(half);
      put(std::move(d));
    }
  }
  if (out_.size() >= 64)
    flush();
}

void rtsp_media_relay::flush() {
  if (out_.empty() || !flows_)
    return;
  self_->send(flows_, flow_send_atom::value, stream_, std::move(out_));
  out_.clear();
}

void rtsp_media_relay::send_udp(uint8_t channel, std::string_view packet) {
  auto i = pairs_.find(static_cast<uint8_t>(channel & ~1u));
  if (i == pairs_.end()) {
    ++c_.dropped_unknown;
    return;
  }
  auto& p = i->second;
  int k = channel % 2;
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (p.remote_rtp == 0
      || !make_dest(remote_ip_, static_cast<uint16_t>(p.remote_rtp + k),
                    family_of(p.fd[k]), ss, len)) {
    ++c_.dropped_unknown;
    return;
  }
  ::sendto(p.fd[k], packet.data(), packet.size(), MSG_DONTWAIT,
           reinterpret_cast<const sockaddr*>(&ss), len);
}

bool rtsp_media_relay::from_remote(const std::string& raw) const {
  return host_of(udp_address_text(raw)) == remote_ip_;
}

void rtsp_media_relay::on_udp(int64_t tag, std::vector<std::string>& from,
                              std::vector<std::string>& payloads) {
  auto f = by_tag_.find(tag);
  if (f == by_tag_.end())
    return; // closed meanwhile (its registration is gone with it)
  auto channel = f->second;
  auto& pr = pairs_[static_cast<uint8_t>(channel & ~1u)];
  if (auto& reg = pr.reg[channel % 2])
    reg->done();
  for (size_t i = 0; i < payloads.size(); ++i) {
    if (!from_remote(from[i])) {
      ++c_.dropped_foreign;
      continue;
    }
    if (client_side_) {
      alive_ = std::chrono::steady_clock::now();
      if (channel % 2 == 0)
        continue; // the client's RTP (a NAT "punch"): the camera sends
    }
    send_flow(channel, payloads[i]);
  }
  flush();
}

void rtsp_media_relay::on_flow(std::vector<std::string>& datagrams) {
  for (auto& d : datagrams) {
    if (d.size() < 2) {
      ++c_.dropped_bad;
      continue;
    }
    ++c_.from_peer;
    c_.from_peer_bytes += d.size();
    auto channel = static_cast<uint8_t>(d[0]);
    if (channel != media_fragment_mark) {
      from_peer(channel, std::string_view{d.data() + 1, d.size() - 1});
      continue;
    }
    if (d.size() < 6 || static_cast<uint8_t>(d[4]) > 1) {
      ++c_.dropped_bad;
      continue;
    }
    channel = static_cast<uint8_t>(d[1]);
    auto seq = static_cast<uint16_t>((static_cast<uint8_t>(d[2]) << 8)
                                     | static_cast<uint8_t>(d[3]));
    std::string_view half{d.data() + 5, d.size() - 5};
    if (d[4] == 0) {
      if (frags_.count(channel) > 0)
        ++c_.dropped_fragment; // its second half never came
      if (half.size() > media_fragment_at) {
        ++c_.dropped_bad;
        continue;
      }
      frags_[channel] = {seq, std::string{half}};
      continue;
    }
    auto f = frags_.find(channel);
    if (f == frags_.end() || f->second.first != seq) {
      ++c_.dropped_fragment;
      continue;
    }
    auto whole = std::move(f->second.second);
    frags_.erase(f);
    whole += half;
    from_peer(channel, whole);
  }
}

void rtsp_media_relay::from_peer(uint8_t channel, std::string_view packet) {
  if (packet.size() > max_media_packet
      || !plausible_rtp(packet, channel % 2 == 1)) {
    ++c_.dropped_bad;
    return;
  }
  auto even = static_cast<uint8_t>(channel & ~1u);
  if (client_side_) {
    send_udp(channel, packet);
    return;
  }
  if (channel % 2 == 0) { // only RTCP goes to the camera
    ++c_.dropped_unknown;
    return;
  }
  if (pairs_.count(even) > 0) {
    send_udp(channel, packet);
  } else if (interleaved_.count(even) > 0 && write_interleaved) {
    std::string frame;
    frame += '$';
    frame += static_cast<char>(channel);
    frame += static_cast<char>((packet.size() >> 8) & 0xff);
    frame += static_cast<char>(packet.size() & 0xff);
    frame += packet;
    if (!write_interleaved(std::move(frame)))
      ++c_.dropped_busy;
  } else {
    ++c_.dropped_unknown;
  }
}

void rtsp_media_relay::on_drop(uint64_t too_big, uint64_t unavailable) {
  c_.dropped_path += too_big;
  c_.dropped_unavailable += unavailable;
}

} // namespace p2proxy
