// CHANNEL (seed: ProxySocketBegin): one local TCP connection and one stream
// of a PEER SESSION, relayed both ways with back-pressure. A CAF broker.
//
// Two kinds, one relay:
// - client channel: forked by a LISTENER for an accepted client. It finds
//   the node exporting its resource (SIGNAL LINK look-up, or the listener's
//   pinned peer), asks the PEER MANAGER for the session, opens a stream,
//   sends the StreamOpen preamble and waits for StreamOpenResult before it
//   reads a byte from the client (tcp). For "socks5" / "http" / "rtsp" it
//   reads the client first and feeds the protocol's sniffer (10 s timeout)
//   to learn the resource; the sniffed bytes follow the preamble on the
//   stream, later ones are held (at most 16 KiB) until the tunnel is up, and
//   a failed open is answered in the client's protocol (docs/listeners.md).
//   The LISTENER is told why with a code (refused_atom below).
// - export channel: spawned by a PEER SESSION's handler factory on the
//   exporting node for a peer-opened stream naming an export, as the
//   stream's only owner. It starts without a socket: it checks the export's
//   allow list (DENIED), connects the target off the actor threads
//   (TARGET_REFUSED / TARGET_UNREACHABLE), adds the socket once it arrives
//   and answers StreamOpenResult OK. Stream bytes that come meanwhile wait,
//   unconsumed, so a slow target never grows a buffer. For an export with
//   protocol "rtsp" it runs an rtsp_rewriter between the stream and the target
//   (URLs both ways; media of clients that want UDP as datagrams,
//   protocol/rtsp_media.hpp), for "http" it sets each
//   request's Host to the target.
// Whatever is protocol-specific is behind a protocol_adapter
// (protocol/adapter.hpp); "tcp" is its identity. The sources: relay.cpp and
// relay_behavior.cpp (the core: credit, half-close, draining, shared by both
// kinds), client_side.cpp, export_side.cpp, states.cpp (the two tables).
//
// States: local socket × tunnel side (the seed's pairs), each an enum whose
// transitions are checked against a table by one transition_to().
//   local:  sniffing ──resource named──▶ open ──local FIN──▶ eof
//           (sniffing protocols)          │                   │ our FIN
//                                         └──our FIN──▶ fin   ▼
//                                                        └──▶ closed
//                                                 local FIN   ▲
//           open, eof ──a proxy reply (HTTP 421)──▶ closing ──┘ once written
//           any ──reset / error / refusal / the channel's end──▶ closed
//           connecting ──target connected──▶ open      (export side: no
//           connecting ──denied / target failed──▶ closed   socket yet)
//   (half-closable scribes: actors/common/half_close.hpp)
//   tunnel: not_connected ─▶ connecting_peer ─▶ peer_ready ─▶ remote_connecting
//             ─▶ connected ─▶ half_closed (one FIN) ─▶ closed
//           (export side: not_connected ─▶ connected once the target is)
//           any ─▶ closed on reset, refusal, session down, timeout
//
//   local FIN          → stream FIN after the bytes before it; the peer's
//   (client or target)   bytes are still written to the socket
//   stream FIN         → once every byte before it is written, the socket
//                        gets our FIN (shutdown of its write side); it is
//                        still read
//   both FINs          → the channel ends ("both sides closed")
//   local reset/error  → before our stream FIN: RESET_STREAM (the peer can
//                        tell a cut-off transfer); after it: the channel ends
//                        and the session consumes what the peer still sends
//   stream reset,      → the socket is reset (RST, no FIN first); the
//   session down         channel ends
//   local FIN before   → with no byte sent: the open is abandoned (stream
//   the tunnel is up     reset if one was opened; an exporting node still
//                        connecting the target closes that connection when
//                        it completes). With bytes sent: they go on the
//                        stream once it is up, then our FIN. (A tcp client
//                        channel watches its socket from the start for
//                        this: one read at a time until 16 KiB are held.)
// Back-pressure: the socket is read only while the stream has credit (one
// read at a time, trigger(hdl, 1)). A socket that ran out of credit is
// resumed only by a read_more message posted through the I/O multiplexer:
// CAF 0.17 removes a passivated socket from its read loop at the end of the
// poll round, and a trigger() before that is lost (update_reading() in
// relay.cpp). Received stream bytes are reported consumed to the session
// only once the socket has written them (ack_writes), so a slow client
// stalls only its own stream. The core's details are in relay.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/atom.hpp>
#include <caf/io/broker.hpp>
#include <caf/io/connection_handle.hpp>

#include "actors/actors.hpp"
#include "actors/common/endpoint.hpp"

namespace p2proxy {

enum class tunnel_state {
  not_connected,
  connecting_peer,
  peer_ready,
  remote_connecting,
  connected,
  half_closed,
  closed
};

const char* to_string(tunnel_state s);
bool tunnel_transition_allowed(tunnel_state from, tunnel_state to);

/// The local socket (client or target), see the diagram above.
enum class local_state {
  connecting, // export side: the target is being connected, no socket yet
  sniffing,   // client side: reading the first request for the resource
  open,       // read and written
  eof,        // the local side sent its FIN; still written
  fin,        // we sent our FIN (its write side is shut down); still read
  closing,    // a proxy reply is being written; closed once it is out
  closed      // closed by us, reset, or failed: the channel is ending
};

const char* to_string(local_state s);
bool local_transition_allowed(local_state from, local_state to);

struct client_channel_args {
  std::string resource;
  std::string protocol = "tcp";
  std::string peer; // pinned exporting node, or empty
  std::string client_address;
  /// The listener's bind host: RTP/RTCP pairs for RTSP clients that want
  /// UDP are opened there.
  std::string bind_host;
  caf::actor supervisor;   // answers (lookup_atom) and (open_atom)
  listener_actor listener; // told (refused_atom, caf::error) on refusal
};

/// For LISTENERs: fork a client channel for an accepted connection.
channel_actor fork_client_channel(caf::io::broker* listener,
                                  caf::io::connection_handle hdl,
                                  client_channel_args args);

/// One [[export]]: a resource name this node serves, where it lives, and
/// which nodes may use it ("*" for every node of the network).
struct export_entry {
  std::string name;
  endpoint target;
  std::string protocol;
  std::vector<std::string> allow;
  /// protocol "udp": a flow with no datagram either way this long ends.
  std::chrono::milliseconds udp_idle{60000};
  /// protocol "rtsp": how the exporting node takes a UDP client's media
  /// from the camera: "tcp" (interleaved) or "udp" (its own RTP/RTCP pair).
  std::string rtsp_transport = "tcp";
};

/// True if `ex`'s allow list names `peer` (a node id) or "*".
bool export_allows(const export_entry& ex, const std::string& peer);

struct export_channel_args {
  session_streams_actor session;
  int64_t stream_id = -1;
  std::string peer; // the node that opened the stream
  export_entry ex;
  std::chrono::milliseconds connect_timeout{10000}; // to the export's target
  /// Stream bytes that came after the StreamOpen, NOT yet consumed (the
  /// channel reports them once written to the target, or refused).
  std::string first_bytes;
  bool peer_fin = false; // the stream's FIN came with them
  /// Opened by this node's own listener (LOCAL SESSION): the allow list,
  /// which names remote nodes, does not apply.
  bool local = false;
  /// The node supervisor (weak: it is told of the channel and its totals).
  caf::actor_addr node;
};

/// For a PEER SESSION's handler factory: the owner of a peer-opened stream
/// for export `args.ex`. It starts without a socket, answers DENIED unless
/// the allow list names the peer (or "*"), else connects the target off the
/// actor threads and answers OK, TARGET_REFUSED or TARGET_UNREACHABLE.
channel_actor spawn_export_channel(caf::actor_system& sys,
                                   export_channel_args args);

} // namespace p2proxy
