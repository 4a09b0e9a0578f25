// The CHANNEL's two state tables (the diagrams are in channel.hpp).
#include "actors/channel/channel.hpp"

namespace p2proxy {

const char* to_string(tunnel_state s) {
  switch (s) {
    case tunnel_state::not_connected:
      return "not-connected";
    case tunnel_state::connecting_peer:
      return "connecting-peer";
    case tunnel_state::peer_ready:
      return "peer-ready";
    case tunnel_state::remote_connecting:
      return "remote-connecting";
    case tunnel_state::connected:
      return "connected";
    case tunnel_state::half_closed:
      return "half-closed";
    case tunnel_state::closed:
      return "closed";
  }
  return "?";
}

bool tunnel_transition_allowed(tunnel_state from, tunnel_state to) {
  using t = tunnel_state;
  if (to == t::closed)
    return from != t::closed;
  switch (from) {
    case t::not_connected:
      return to == t::connecting_peer || to == t::connected;
    case t::connecting_peer:
      return to == t::peer_ready;
    case t::peer_ready:
      return to == t::remote_connecting;
    case t::remote_connecting:
      return to == t::connected;
    case t::connected:
      return to == t::half_closed;
    case t::half_closed:
    case t::closed:
      return false;
  }
  return false;
}

const char* to_string(local_state s) {
  switch (s) {
    case local_state::connecting:
      return "connecting";
    case local_state::sniffing:
      return "sniffing";
    case local_state::open:
      return "open";
    case local_state::eof:
      return "eof";
    case local_state::fin:
      return "fin";
    case local_state::closing:
      return "closing";
    case local_state::closed:
      return "closed";
  }
  return "?";
}

bool local_transition_allowed(local_state from, local_state to) {
  using l = local_state;
  if (to == l::closed)
    return from != l::closed;
  switch (from) {
    case l::connecting:
    case l::sniffing:
      return to == l::open;
    case l::open:
      return to == l::eof || to == l::fin || to == l::closing;
    case l::eof:
      // (eof then our FIN: both directions are done, the channel closes)
      return to == l::closing;
    case l::fin: // (fin then the local FIN: closed)
    case l::closing:
    case l::closed:
      return false;
  }
  return false;
}

} // namespace p2proxy
