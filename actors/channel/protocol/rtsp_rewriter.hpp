// RTSP: the rewriter that keeps URLs consistent on both sides of a
// long-lived connection (the sniffer that finds the resource is in
// rtsp_sniffer.hpp).
//
// URLs: the client sees only rtsp://LISTEN_AUTHORITY/cam1/..., the server
// only rtsp://TARGET_AUTHORITY/... (with `strip_resource`, the default,
// because a camera's own paths do not start with the resource name).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "actors/channel/protocol/rtsp_media.hpp"
#include "actors/channel/protocol/rtsp_sniffer.hpp"

namespace p2proxy {

/// Largest SDP body the rewriter buffers to rewrite `a=control:` URLs;
/// larger bodies pass through untouched.
constexpr size_t max_rtsp_sdp_body = 64 * 1024;

/// How the rewriter maps URLs between the two sides.
struct rtsp_url_map {
  /// The client side's "host:port" ("127.0.0.1:8554"). Empty: learned from
  /// the first absolute URL in a client request (rtsp_sniffer's
  /// client_authority() gives the same).
  std::string client_authority;
  /// The target's "host:port" ("192.168.1.10:554").
  std::string server_authority;
  /// The channel's resource.
  std::string resource;
  /// Remove "/<resource>" at the start of paths towards the server (and add
  /// it back towards the client). Off: paths are kept, only the authority
  /// changes.
  bool strip_resource = true;
  /// Off: URLs pass unchanged (a listening node's rewriter, which only
  /// rewrites Transport for media as datagrams).
  bool rewrite_urls = true;
};

/// A streaming RTSP framer for both directions of one connection that
/// rewrites every message, not just the first:
///   - interleaved binary data (`$`, channel, 2-byte length, payload) passes
///     through untouched, without buffering the payload;
///   - CR/LF between messages pass through;
///   - message heads (at most 16 KiB) are parsed and rewritten; bodies follow
///     Content-Length (RTSP has no chunked bodies; none means no body).
/// Rewritten, in both directions: the request URL of requests (clients'
/// towards the server, servers' towards the client), and in any message
/// `Content-Base`, `Content-Location`, `Location`, every `url=` of
/// `RTP-Info`, and absolute `a=control:` URLs of an application/sdp body
/// (Content-Length adjusted). Relative URLs are left alone. Every absolute
/// rtsp URL towards the server gets the target's authority, towards the
/// client the client's; the URL's userinfo is kept. `Authorization` is never
/// touched (a digest covers the client's own URL).
///
/// A client SETUP the media hook keeps (or any, without a hook) whose
/// Transport offers no interleaved alternative is answered by the proxy with
/// 461 Unsupported Transport (and its CSeq) and never forwarded; when it
/// offers both, the other alternatives are removed so the server must choose
/// interleaved TCP. (With the hooks, UDP unicast goes as datagrams: only
/// multicast-only SETUPs are left to be answered 461.)
///
/// With a media hook (set_media), every client request, SETUP Transport,
/// server response and interleaved server frame is shown to it first: it may
/// replace a SETUP's Transport (and add the P2proxy-Media mark), refuse it,
/// replace a response's Transport, or take an interleaved channel's frames
/// (rtsp_media.hpp). A client's own P2proxy-Media header never passes.
///
/// Run it where the target's authority is known (the exporting node, or the
/// listening node once the CHANNEL has learned it): both directions of the
/// channel go through the same object.
class rtsp_rewriter {
public:
  enum class status : uint8_t {
    ok,
    /// The stream is broken: write whatever the call appended (for the
    /// client direction: a 400/414/431 reply), log failure_reason(), close
    /// the channel. The rewriter stays failed.
    failed,
  };

  explicit rtsp_rewriter(rtsp_url_map map);

  /// Client → server bytes. Appends what the server should get to
  /// `to_server`, and what the proxy answers itself (461, an error) to
  /// `to_client`.
  status from_client(std::string_view in, std::string& to_server,
                     std::string& to_client);

  /// Server → client bytes; appends what the client should get.
  status from_server(std::string_view in, std::string& to_client);

  const std::string& failure_reason() const {
    return failure_reason_;
  }

  const rtsp_url_map& map() const {
    return map_;
  }

  /// The hook for media as datagrams (not owned; may be null).
  void set_media(rtsp_media_hook* media) {
    media_ = media;
  }

  /// True between client messages: an interleaved frame may be added to
  /// the server's side without cutting a message.
  bool client_at_boundary() const {
    return up_.ph == phase::boundary;
  }

  /// Client SETUPs the media hook refused (nonsense ports, no pair free).
  uint64_t setups_refused() const {
    return setups_refused_;
  }

  /// Client SETUPs answered 461 so far.
  uint64_t udp_setups_refused() const {
    return udp_setups_refused_;
  }

  // -- URL mapping (public for tests) ----------------------------------------

  /// Appends `url` as the server should see it (unchanged if not an
  /// absolute rtsp URL or a path).
  void url_to_server(std::string_view url, std::string& out);

  /// Appends `url` as the client should see it.
  void url_to_client(std::string_view url, std::string& out) const;

private:
  enum class phase : uint8_t {
    boundary,
    interleaved_header,
    interleaved_payload,
    interleaved_capture, // a frame for the media hook
    head,
    body_stream,
    body_buffer,
    body_drop,
    failed,
  };

  struct direction {
    bool from_client;
    phase ph = phase::boundary;
    sniff::head_scanner scanner;
    std::string buf;       // head, interleaved header or buffered body
    std::string held_head; // rewritten head waiting for its buffered body
    uint64_t remaining = 0;
    uint8_t channel = 0; // of the frame being captured
    explicit direction(bool client) : from_client(client) {}
  };

  status run(direction& d, std::string_view in, std::string& out,
             std::string* reply);
  bool on_head(direction& d, std::string_view head, std::string& out,
               std::string* reply);
  /// A client SETUP's Transport onto `h`, or the refusal for the client.
  std::string setup_transport(std::string_view cseq, std::string_view value,
                              bool marked, std::string& h);
  /// A server response's Transport (through the media hook) onto `h`.
  void response_transport(std::string_view status_line, std::string_view cseq,
                          std::string_view value, std::string_view session,
                          std::string& h);
  void rewrite_url_header(direction& d, std::string_view value,
                          std::string& out);
  void rewrite_rtp_info(direction& d, std::string_view value, std::string& out);
  void rewrite_sdp(direction& d, std::string_view body, std::string& out);
  void fail_stream(direction& d, const std::string& reason, std::string* reply,
                   int code, std::string_view phrase);

  rtsp_url_map map_;
  direction up_{true};
  direction down_{false};
  std::string scratch_;
  std::string failure_reason_;
  uint64_t udp_setups_refused_ = 0;
  uint64_t setups_refused_ = 0;
  rtsp_media_hook* media_ = nullptr;
};

} // namespace p2proxy
