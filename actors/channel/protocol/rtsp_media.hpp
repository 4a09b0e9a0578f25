// RTSP media as datagrams: what the rtsp_rewriter asks about a connection's
// SETUPs, responses and interleaved frames (rtsp_media_hook), the two sides'
// answers (rtsp_listener_media on the listening node, rtsp_export_media on
// the exporting node), and the seam to the sockets and the flow
// (rtsp_media_io: actors/udp/rtsp_media_io.hpp, or a test's fake).
//
// The design (docs/listeners.md, "RTSP over UDP"):
//   - A client SETUP that offers UDP first (client_port=A-B) makes the
//     listening node open a local RTP/RTCP pair (even/odd) and forward the
//     SETUP as interleaved TCP on a channel pair it picks (128, 130, ...),
//     marked "P2proxy-Media: datagram". The response's Transport goes back
//     to the client as client_port=A-B;server_port=<the pair>.
//   - The exporting node sees the mark: those interleaved channels go as
//     datagrams on the channel's own flow (the flow id is the stream id;
//     each datagram starts with its interleaved channel byte). Toward the
//     camera it keeps interleaved TCP, or, for an export with
//     rtsp_transport = "udp", opens its own pair and sends the camera a UDP
//     SETUP, mapping the answer back to the interleaved channels.
//   - RTCP goes both ways; TEARDOWN, a failed SETUP and the channel's end
//     free the pairs; the listening node ends the connection when the
//     client is silent (no request, no RTCP) for the Session timeout.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "actors/channel/protocol/rtsp_transport.hpp"

namespace p2proxy {

/// What the rewriter asks of a connection's media (both directions go
/// through one rewriter, so one hook sees requests and their responses).
class rtsp_media_hook {
public:
  enum class setup_verdict : uint8_t {
    keep,    // forward the Transport as before (UDP alternatives removed)
    replace, // forward `transport` instead (and the mark if `mark`)
    refuse,  // answer the client `code` `phrase` (`reason` in the body)
  };
  struct setup_result {
    std::string transport;
    bool mark = false;
    int code = 0;
    std::string phrase;
    std::string reason;
  };

  virtual ~rtsp_media_hook();
  /// Every client request (keep-alives, TEARDOWN).
  virtual void on_request(std::string_view method) = 0;
  /// A client SETUP; `marked`: it carried the P2proxy-Media mark (removed).
  virtual setup_verdict on_setup(std::string_view cseq,
                                 std::string_view transport, bool marked,
                                 setup_result& r)
    = 0;
  /// A server response: true to replace its Transport with `out`.
  virtual bool on_response(std::string_view cseq, int status,
                           std::string_view transport, std::string_view session,
                           std::string& out)
    = 0;
  /// True if the server's interleaved frames on `channel` are taken
  /// (on_frame) instead of passed to the client.
  virtual bool takes_channel(uint8_t channel) const = 0;
  virtual void on_frame(uint8_t channel, std::string_view payload) = 0;
};

/// The sockets and the flow behind the media logic. Channels are
/// interleaved channel numbers; a pair is named by its even (RTP) channel.
class rtsp_media_io {
public:
  virtual ~rtsp_media_io();
  /// A local RTP/RTCP socket pair (even/odd ports) for `channel`; its RTP
  /// port, or 0 when none is free (limits, bind failure).
  virtual uint16_t open_pair(uint8_t channel) = 0;
  /// The pair's remote RTP port (RTCP is the next); 0: unknown, nothing is
  /// sent there.
  virtual void set_remote_port(uint8_t channel, uint16_t rtp) = 0;
  virtual void close_pair(uint8_t channel) = 0;
  /// A packet of `channel` to the peer as a datagram.
  virtual void send_flow(uint8_t channel, std::string_view packet) = 0;
  /// A packet of `channel` out of the pair's socket (to the client).
  virtual void send_udp(uint8_t channel, std::string_view packet) = 0;
  /// Datagrams from the peer for `channel`'s pair go into the TCP
  /// connection as interleaved frames (exporting node, interleaved camera).
  virtual void set_interleaved(uint8_t channel, bool on) = 0;
  /// The client did something (a request); `timeout_s`: the session's.
  virtual void client_alive(uint32_t timeout_s) = 0;
};

/// Pairs per connection (each a track: RTP and RTCP).
constexpr size_t max_media_pairs_per_channel = 4;
/// The first interleaved channel a listening node picks for datagrams.
constexpr uint8_t first_media_channel = 128;
/// RTSP's default session timeout (RFC 2326: 60 s).
constexpr uint32_t default_rtsp_session_timeout = 60;

/// The listening node's side (rewriter URLs unchanged, media hook this).
class rtsp_listener_media : public rtsp_media_hook {
public:
  explicit rtsp_listener_media(rtsp_media_io& io) : io_(io) {}
  void on_request(std::string_view method) override;
  setup_verdict on_setup(std::string_view cseq, std::string_view transport,
                         bool marked, setup_result& r) override;
  bool on_response(std::string_view cseq, int status,
                   std::string_view transport, std::string_view session,
                   std::string& out) override;
  bool takes_channel(uint8_t channel) const override;
  void on_frame(uint8_t channel, std::string_view payload) override;

  size_t pairs() const {
    return pairs_.size() + pending_.size();
  }
  uint64_t bad_setups() const {
    return bad_setups_;
  }

private:
  struct pair_info {
    uint16_t client_rtp = 0;
    uint16_t local_rtp = 0;
  };
  bool in_use(uint8_t channel) const;
  void close_all();

  rtsp_media_io& io_;
  /// Every channel pair ever given out: their frames never reach the
  /// client on the connection (after a TEARDOWN some are still on the way).
  std::set<uint8_t> used_;
  std::map<uint8_t, pair_info> pairs_;
  std::map<std::string, std::pair<uint8_t, pair_info>> pending_; // by CSeq
  uint32_t timeout_s_ = default_rtsp_session_timeout;
  uint64_t bad_setups_ = 0;
};

/// The exporting node's side (behind the rewriter's URL mapping).
class rtsp_export_media : public rtsp_media_hook {
public:
  /// `udp`: the export's rtsp_transport is "udp".
  rtsp_export_media(rtsp_media_io& io, bool udp) : io_(io), udp_(udp) {}
  void on_request(std::string_view method) override;
  setup_verdict on_setup(std::string_view cseq, std::string_view transport,
                         bool marked, setup_result& r) override;
  bool on_response(std::string_view cseq, int status,
                   std::string_view transport, std::string_view session,
                   std::string& out) override;
  bool takes_channel(uint8_t channel) const override;
  void on_frame(uint8_t channel, std::string_view payload) override;

private:
  struct pending_setup {
    uint8_t channel = 0;
    bool udp = false;
  };
  void forget(uint8_t channel, bool udp);

  rtsp_media_io& io_;
  bool udp_;
  std::set<uint8_t> used_; // interleaved channels ever taken (see above)
  std::map<uint8_t, bool> channels_; // even channel -> over UDP
  std::map<std::string, pending_setup> pending_;
};

} // namespace p2proxy
