// The SIGNAL LINK's state names and transition table (signal_link.hpp),
// apart from the actor so that the table reads on its own.
#include "actors/signal/signal_link.hpp"

namespace p2proxy {

const char* to_string(link_state s) {
  switch (s) {
    case link_state::idle:
      return "idle";
    case link_state::connecting:
      return "connecting";
    case link_state::logging_in:
      return "logging-in";
    case link_state::online:
      return "online";
    case link_state::backoff:
      return "backoff";
    case link_state::stopped:
      return "stopped";
  }
  return "?";
}

bool link_transition_allowed(link_state from, link_state to) {
  using s = link_state;
  if (to == s::stopped)
    return from != s::stopped;
  switch (from) {
    case s::idle:
      return to == s::connecting;
    case s::connecting:
      return to == s::logging_in || to == s::backoff;
    case s::logging_in:
      return to == s::online || to == s::backoff;
    case s::online:
      return to == s::backoff;
    case s::backoff:
      return to == s::connecting;
    case s::stopped:
      return false;
  }
  return false;
}

} // namespace p2proxy
