// RTSP MEDIA RELAY: the sockets and the flow behind one RTSP channel's media
// as datagrams (the logic is in actors/channel/protocol/rtsp_media.hpp).
// Owned by the CHANNEL (its state), used on its actor only.
//
//   listening node:  client ◀─UDP─▶ pair (bound on the listener's address)
//                    ◀─datagrams on the channel's flow─▶ exporting node
//   exporting node:  camera ◀─interleaved TCP─▶ (the channel's socket), or
//                    camera ◀─UDP─▶ pair (rtsp_transport = "udp")
//
// A datagram is [interleaved channel][RTP or RTCP packet]. Only the remote
// host's packets are taken (the client's address on the listening node, the
// camera's on the exporting node); from the client only RTCP goes on, to the
// camera only RTCP. Oversize (> max_media_packet), implausible RTP/RTCP,
// unknown channels and foreign senders are dropped and counted.
// Limits: max_media_pairs_per_channel per channel, max_media_pairs_total per
// node. Every socket is closed when its pair is (TEARDOWN, a failed SETUP)
// or when the relay is destroyed (the channel's end).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/io/broker.hpp>

#include "actors/actors.hpp"
#include "actors/channel/protocol/rtsp_media.hpp"

namespace p2proxy {

class udp_reactor;
class udp_registration;

/// RTP/RTCP pairs open at once on this node (all channels).
constexpr size_t max_media_pairs_total = 256;

class rtsp_media_relay final : public rtsp_media_io {
public:
  struct counters {
    uint64_t to_peer = 0, to_peer_bytes = 0;     // datagrams sent
    uint64_t from_peer = 0, from_peer_bytes = 0; // datagrams received
    uint64_t dropped_oversize = 0;               // larger than max_media_packet
    uint64_t dropped_bad = 0;                    // not RTP/RTCP, or empty
    uint64_t dropped_unknown = 0;     // a channel with no pair / not ours
    uint64_t dropped_foreign = 0;     // from another host than the remote's
    uint64_t dropped_path = 0;        // the session: too big for the path
    uint64_t dropped_unavailable = 0; // the session: no datagrams now
    uint64_t dropped_busy = 0;        // an interleaved frame that had to wait
    uint64_t dropped_fragment = 0;    // a half whose other half was lost
  };

  /// `self`: the channel (the sockets' owner and the flow's);
  /// `bind_host`: where pairs are bound ("" for any); `client_side`: the
  /// listening node's relay (else the exporting node's).
  rtsp_media_relay(caf::io::broker* self, std::string bind_host,
                   bool client_side);
  ~rtsp_media_relay() override;
  rtsp_media_relay(const rtsp_media_relay&) = delete;
  rtsp_media_relay& operator=(const rtsp_media_relay&) = delete;

  /// Closes every pair (the channel ends).
  void close_all();
  /// The host whose packets are taken and where packets go (IP text).
  void set_remote_host(const std::string& ip);
  /// The stream the datagrams ride on (attaches to its flow).
  void attach(const session_streams_actor& session, int64_t stream);
  /// Exporting node, interleaved camera: writes a frame to the camera
  /// connection; false if it cannot now (counted, dropped).
  std::function<bool(std::string&&)> write_interleaved;

  // -- rtsp_media_io ----------------------------------------------------------
  uint16_t open_pair(uint8_t channel) override;
  void set_remote_port(uint8_t channel, uint16_t rtp) override;
  void close_pair(uint8_t channel) override;
  void send_flow(uint8_t channel, std::string_view packet) override;
  void send_udp(uint8_t channel, std::string_view packet) override;
  void set_interleaved(uint8_t channel, bool on) override;
  void client_alive(uint32_t timeout_s) override;

  // -- the channel's handlers -------------------------------------------------
  /// A batch from the reactor for the socket tagged `tag`.
  void on_udp(int64_t tag, std::vector<std::string>& from,
              std::vector<std::string>& payloads);
  /// Datagrams of the flow from the peer.
  void on_flow(std::vector<std::string>& datagrams);
  void on_drop(uint64_t too_big, uint64_t unavailable);
  /// Sends the datagrams collected since the last flush.
  void flush();
  /// The client has been silent longer than its session's timeout (and
  /// there is media to free).
  bool expired(std::chrono::steady_clock::time_point now) const;
  size_t pairs() const {
    return pairs_.size();
  }
  const counters& stats() const {
    return c_;
  }
  /// Pairs open on this node.
  static size_t pairs_total();

private:
  struct pair {
    std::array<int, 2> fd{-1, -1};
    std::array<int64_t, 2> tag{-1, -1}; // its batches' tags (never reused)
    std::array<std::shared_ptr<udp_registration>, 2> reg;
    uint16_t port = 0;
    uint16_t remote_rtp = 0;
  };
  void close(pair& p);
  void from_peer(uint8_t channel, std::string_view packet);
  bool from_remote(const std::string& raw) const;

  caf::io::broker* self_;
  std::string bind_host_;
  bool client_side_;
  std::string remote_ip_;
  std::shared_ptr<udp_reactor> reactor_;
  session_flows_actor flows_;
  int64_t stream_ = -1;
  std::map<uint8_t, pair> pairs_;     // by even channel
  std::map<int64_t, uint8_t> by_tag_; // socket's tag -> channel
  int64_t next_tag_ = 0;
  std::map<uint8_t, bool> interleaved_;
  std::vector<std::string> out_;
  uint16_t frag_seq_ = 0;
  /// A first half waiting for its second, by channel: {sequence, bytes}.
  std::map<uint8_t, std::pair<uint16_t, std::string>> frags_;
  std::chrono::steady_clock::time_point alive_
    = std::chrono::steady_clock::now();
  uint32_t timeout_s_ = default_rtsp_session_timeout;
  counters c_;
};

} // namespace p2proxy
