// PROTOCOL ADAPTER: everything a CHANNEL needs to know of the protocol spoken
// on its local socket, behind one interface, so the channel relays bytes and
// never asks which protocol it carries.
//
//                  ┌──────── client side (a LISTENER's protocol) ─────────┐
//   client socket ─┤ sniff()     the first request → resource, or a reply │
//                  │ to_stream() client → stream (HTTP: the /r/ prefix     │
//                  │             stripped; a request for another resource │
//                  │             stops the connection: stop_reply() 421)  │
//                  │ success_reply() / failure_reply() / timeout_reply()  │
//                  │             the open's outcome in the client's own   │
//                  │             protocol (SOCKS5 reply codes, 404/403/   │
//                  │             502/503, RTSP with its CSeq)             │
//                  └──────────────────────────────────────────────────────┘
//                  ┌──────── export side (an export's protocol) ──────────┐
//   target socket ─┤ to_local()  stream → target (RTSP URLs; SETUPs a     │
//                  │             listening node marked get datagram media,│
//                  │             multicast-only ones 461; HTTP Host set   │
//                  │             to the target)                           │
//                  │ to_stream() target → stream (RTSP URLs back)         │
//                  └──────────────────────────────────────────────────────┘
//
// "tcp" (and any protocol without an adapter of its own) is the identity:
// it does not sniff, passes bytes through unchanged and has no replies.
//
// An adapter is plain C++ (no actors, no sockets), owned by one channel and
// called on its actor only. The sniffers and rewriters it wraps are in this
// folder (sniffer.hpp says what a sniff answers).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "actors/channel/protocol/sniffer.hpp"

namespace p2proxy {
class rtsp_media_io;
} // namespace p2proxy

namespace p2proxy {

class protocol_adapter {
public:
  enum class verdict : uint8_t {
    ok,
    /// The connection cannot go on in this direction: stop_reason() says
    /// why (see to_stream and to_local for what the channel then does).
    stop,
  };

  virtual ~protocol_adapter();

  /// For logs: "TCP", "SOCKS5", "HTTP", "RTSP".
  virtual const char* name() const = 0;

  // -- client side: the first request ----------------------------------------

  /// True if the client names its resource in its first bytes: the CHANNEL
  /// feeds them to sniff() (within sniff_timeout) before it opens a tunnel.
  virtual bool sniffs() const;

  /// The client's first bytes, in whatever pieces the socket delivers. After
  /// `done` the adapter is set up for the resource it found (to_stream()).
  virtual sniff_result sniff(std::string_view data);

  /// What the client gets when it named no resource within sniff_timeout.
  virtual std::string timeout_reply() const;

  /// What the client gets once its tunnel is up, before any stream byte.
  virtual std::string success_reply() const;

  /// What a sniffed client gets when opening its tunnel failed.
  virtual std::string failure_reply(open_failure why,
                                    std::string_view text) const;

  // -- relaying
  // ----------------------------------------------------------------

  /// Local socket → stream: appends what the stream gets to `out`. `stop`:
  /// nothing more from the local side may go on the stream; the stream gets
  /// our FIN, and stop_reply() (if any) is for the local side once the other
  /// end has finished (HTTP: 421 after the earlier responses).
  virtual verdict to_stream(std::string_view in, std::string& out);

  /// Stream → local socket: appends what the socket gets to `to_local`, and
  /// what the adapter answers the other end itself to `to_stream` (RTSP 461
  /// for a UDP-only SETUP). `stop`: the connection is broken; `to_stream`
  /// holds the last answer (a 4xx), to go with our FIN.
  virtual verdict to_local(std::string_view in, std::string& to_local,
                           std::string& to_stream);

  /// True if to_local() may change the bytes: the channel then reports
  /// stream bytes consumed per rewritten chunk written, not per byte.
  virtual bool rewrites_to_local() const;

  /// After `stop`: the reply for the local side (may be empty).
  virtual std::string stop_reply() const;

  /// After `stop`: one line for the log.
  virtual std::string stop_reason() const;

  /// What the adapter answered the local side itself during to_stream()
  /// (RTSP: a refused SETUP), taken once; empty if nothing.
  virtual std::string take_local_reply();

  /// True if bytes of the channel's own (an RTCP frame for the target) may
  /// be written to the local socket now without cutting a message.
  virtual bool local_at_boundary() const;
};

/// The client side of a LISTENER's protocol ("tcp", "socks5", "http",
/// "rtsp"); `default_resource` is the listener's resource (HTTP and RTSP
/// use it when a request names none).
/// `media` (rtsp): the channel's sockets and flow for clients that want
/// UDP (rtsp_media.hpp); null: interleaved TCP only, as an exporting node
/// without datagrams would.
std::unique_ptr<protocol_adapter>
make_client_adapter(const std::string& protocol,
                    const std::string& default_resource,
                    rtsp_media_io* media = nullptr);

/// The exporting side of an export's protocol: "rtsp" (URLs both ways, the
/// resource stripped, marked SETUPs' media as datagrams), "http" (Host set to
/// the target: the client CHANNEL already routed and stripped /r/<name>), else
/// the identity.
/// `media` (rtsp): media as datagrams for SETUPs a listening node marked;
/// `rtsp_udp`: toward the camera over UDP (the export's rtsp_transport).
std::unique_ptr<protocol_adapter>
make_export_adapter(const std::string& protocol, const std::string& resource,
                    const std::string& target, rtsp_media_io* media = nullptr,
                    bool rtsp_udp = false);

} // namespace p2proxy
