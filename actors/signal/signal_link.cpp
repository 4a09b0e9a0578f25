#include "actors/signal/signal_link.hpp"

#include <algorithm>
#include <cassert>
#include <random>

#include <caf/all.hpp>
#include <gnutls/crypto.h>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"
#include "actors/signal/link_exports.hpp"
#include "actors/signal/login_frames.hpp"
#include "actors/signal/tls_channel.hpp"

namespace p2proxy {

namespace {

constexpr size_t max_history = 32;
constexpr const char* subject = "signal_link";

using clock_type = std::chrono::system_clock;

} // namespace

namespace {

void record(signal_link_actor* self, const char* event, std::string detail) {
  auto& st = self->state;
  admin::LinkEvent ev;
  ev.set_time(rfc3339(clock_type::now()));
  ev.set_event(event);
  ev.set_detail(std::move(detail));
  st.history.push_back(std::move(ev));
  while (st.history.size() > max_history)
    st.history.pop_front();
}

void transition_to(signal_link_actor* self, link_state to) {
  auto& st = self->state;
  if (!link_transition_allowed(st.state, to)) {
    // An invariant, not input: the handlers below only ask for legal moves.
    log::error(subject, "refuses transition {} -> {}", to_string(st.state),
               to_string(to));
    assert(false && "illegal signal_link transition");
    return;
  }
  log::debug(subject, "moves {} -> {}", to_string(st.state), to_string(to));
  st.state = to;
  st.status.set_state(to_string(to));
}

void send_envelope(signal_link_actor* self, const signal::Envelope& env) {
  auto& st = self->state;
  if (!st.conn)
    return;
  self->send(st.conn, frame_atom::value, env.SerializeAsString());
  st.status.set_frames_out(st.status.frames_out() + 1);
}

void send_register(signal_link_actor* self) {
  signal::Envelope env;
  auto reg = env.mutable_register_();
  for (auto& name : self->state.cfg.exports)
    reg->add_names(name);
  registrations_pending(self->state.status, self->state.cfg.exports);
  send_envelope(self, env);
}

void fail_pending(signal_link_actor* self, const std::string& why) {
  auto& st = self->state;
  for (auto& [id, l] : st.lookups)
    l.rp.deliver(make_error(ec::link_down, why));
  st.lookups.clear();
  for (auto& [nonce, p] : st.probes)
    p.rp.deliver(make_error(ec::link_down, why));
  st.probes.clear();
}

void drop_connection(signal_link_actor* self) {
  auto& st = self->state;
  if (st.conn) {
    self->demonitor(st.conn);
    self->send(st.conn, close_atom::value);
    st.conn = nullptr;
  }
}

/// With several servers: the next attempt goes to the next one in turn.
void next_server(signal_link_actor* self) {
  auto& st = self->state;
  if (st.cfg.servers.size() < 2)
    return;
  st.server_index = (st.server_index + 1) % st.cfg.servers.size();
  st.cfg.server = st.cfg.servers[st.server_index];
}

void begin_connect(signal_link_actor* self) {
  auto& st = self->state;
  st.status.set_server(st.cfg.server.to_string());
  ++st.gen;
  transition_to(self, link_state::connecting);
  st.status.set_next_attempt("");
  log::info(subject, "connects to {}", st.cfg.server.to_string());
  self->send(st.connector, connect_atom::value, st.gen, st.cfg.server.host,
             st.cfg.server.port, caf::actor{self});
  self->delayed_send(self, st.cfg.login_timeout, timeout_atom::value, st.gen);
}

/// The current attempt or connection is over: clean up and schedule the next
/// attempt. `delay_override` replaces the backoff delay (after REPLACED).
void go_backoff(signal_link_actor* self, const std::string& why,
                std::chrono::milliseconds delay_override = {}) {
  auto& st = self->state;
  bool was_online = st.state == link_state::online;
  drop_connection(self);
  fail_pending(self, why);
  ++st.gen; // invalidates every timer of the attempt that just ended
  st.status.set_last_error(why);
  st.status.set_connected_since("");
  record(self, was_online ? "disconnected" : "attempt-failed", why);
  auto delay = st.retry.next();
  if (delay_override.count() > 0)
    delay = delay_override;
  transition_to(self, link_state::backoff);
  st.status.set_next_attempt(rfc3339(clock_type::now() + delay));
  auto lost = st.cfg.server.to_string();
  next_server(self);
  auto next = st.cfg.server.to_string();
  auto to = next == lost ? std::string{} : " to " + next;
  if (was_online)
    log::warn(subject, "lost {}: {}; reconnects{} in {} ms", lost, why, to,
              delay.count());
  else
    log::warn(subject, "failed to reach {}: {}; retries{} in {} ms", lost, why,
              to, delay.count());
  self->delayed_send(self, delay, retry_atom::value, st.gen);
}

void on_login_ok(signal_link_actor* self, const signal::LoginOk& ok) {
  auto& st = self->state;
  transition_to(self, link_state::online);
  if (st.status.logins_count() > 0)
    st.status.set_reconnects(st.status.reconnects() + 1);
  st.status.set_logins_count(st.status.logins_count() + 1);
  st.retry.reset();
  st.status.set_connected_since(rfc3339(clock_type::now()));
  st.status.set_observed_address(ok.observed_address());
  record(self, "logged-in", ok.observed_address());
  log::info(subject, "logged in to {} as {} (seen as {})",
            st.cfg.server.to_string(), st.id->node_id(), ok.observed_address());
  if (ok.has_ice_servers() && st.cfg.on_ice_servers)
    st.cfg.on_ice_servers(ok.ice_servers());
  if (st.cfg.probe_only)
    return;
  send_register(self);
  if (st.sink) // the PEER MANAGER re-validates its cached look-ups
    self->send(st.sink, online_atom::value);
  self->delayed_send(self, st.cfg.heartbeat, tick_atom::value, st.gen);
}

/// The code of a server's Error that answers a request.
ec request_error_code(signal::ErrorCode code) {
  switch (code) {
    case signal::NOT_LOGGED_IN:
      return ec::not_online;
    case signal::PEER_OFFLINE:
      return ec::peer_offline;
    case signal::SHUTTING_DOWN:
    case signal::REPLACED:
    case signal::LOGIN_TIMEOUT:
    case signal::HEARTBEAT_TIMEOUT:
      return ec::link_down;
    case signal::BAD_FRAME:
    case signal::FRAME_TOO_LARGE:
    case signal::BAD_REQUEST:
      return ec::protocol_error;
    default:
      return ec::unspecified;
  }
}

void on_error_frame(signal_link_actor* self, const signal::Error& err) {
  auto& st = self->state;
  using code = signal::ErrorCode;
  switch (err.code()) {
    case signal::PEER_OFFLINE: {
      // The Signal could not be routed; a probe waiting on it fails now.
      for (auto i = st.probes.begin(); i != st.probes.end();) {
        if (i->second.peer == err.peer()) {
          i->second.rp.deliver(make_error(
            ec::peer_offline, "node " + err.peer() + " is not online"));
          i = st.probes.erase(i);
        } else {
          ++i;
        }
      }
      if (st.sink)
        self->send(st.sink, peer_off_atom::value, err.peer(), err.session_id(),
                   err.text());
      return;
    }
    default:
      break;
  }
  if (err.request_id() != 0) {
    auto i = st.lookups.find(err.request_id());
    if (i != st.lookups.end()) {
      i->second.rp.deliver(
        make_error(request_error_code(err.code()), err.text()));
      st.lookups.erase(i);
    }
    return;
  }
  auto text = fmt::format("server says {}: {}",
                          signal::ErrorCode_Name(err.code()), err.text());
  if (st.state == link_state::logging_in) {
    st.status.set_login_failures(st.status.login_failures() + 1);
    log::error(subject, "login refused by {}: {}", st.cfg.server.to_string(),
               err.text());
  }
  if (err.code() == code::REPLACED) {
    // Another process with this node's key logged in. Coming straight back
    // would evict it in turn, forever: wait the longest backoff instead.
    log::error(subject, "was replaced by another login with this node's key;"
                        " is the key used by two nodes?");
    go_backoff(self, text, st.cfg.backoff_max);
    return;
  }
  go_backoff(self, text);
}

void on_signal(signal_link_actor* self, signal::Signal& sig) {
  auto& st = self->state;
  st.status.set_signals_in(st.status.signals_in() + 1);
  if (sig.has_probe()) {
    if (!sig.probe().reply()) {
      signal::Envelope env;
      auto out = env.mutable_signal();
      out->set_to(sig.from());
      out->set_session_id(sig.session_id());
      out->mutable_probe()->set_nonce(sig.probe().nonce());
      out->mutable_probe()->set_reply(true);
      send_envelope(self, env);
      st.status.set_signals_out(st.status.signals_out() + 1);
      return;
    }
    auto i = st.probes.find(sig.probe().nonce());
    if (i != st.probes.end() && i->second.peer == sig.from()) {
      auto rtt = std::chrono::duration_cast<std::chrono::microseconds>(
        self->clock().now() - i->second.sent);
      i->second.rp.deliver(static_cast<uint64_t>(rtt.count()));
      st.probes.erase(i);
    }
    return;
  }
  if (st.sink)
    self->send(st.sink, signal_atom::value, sig.SerializeAsString());
  else
    log::debug(subject, "drops a signal from {}: no session owner", sig.from());
}

void on_frame(signal_link_actor* self, const std::string& payload) {
  auto& st = self->state;
  st.last_rx = self->clock().now();
  st.status.set_frames_in(st.status.frames_in() + 1);
  signal::Envelope env;
  if (!env.ParseFromString(payload)) {
    go_backoff(self, "the server sent an undecodable frame");
    return;
  }
  switch (env.msg_case()) {
    case signal::Envelope::kHello: {
      if (st.state != link_state::logging_in) {
        go_backoff(self, "the server sent Hello twice");
        return;
      }
      send_envelope(self, make_login(*st.id, st.binding, env.hello(),
                                     st.cfg.token, st.cfg.probe_only));
      return;
    }
    case signal::Envelope::kLoginOk:
      if (st.state != link_state::logging_in) {
        go_backoff(self, "the server sent LoginOk out of turn");
        return;
      }
      on_login_ok(self, env.login_ok());
      return;
    case signal::Envelope::kError:
      on_error_frame(self, env.error());
      return;
    default:
      break;
  }
  if (st.state != link_state::online) {
    go_backoff(self, "the server sent a message before the login finished");
    return;
  }
  switch (env.msg_case()) {
    case signal::Envelope::kLookupResult: {
      auto& res = env.lookup_result();
      auto i = st.lookups.find(res.request_id());
      if (i == st.lookups.end())
        return; // answered after its timeout
      std::vector<std::string> ids(res.node_ids().begin(),
                                   res.node_ids().end());
      i->second.rp.deliver(lookup_answer(std::move(ids), st.id->node_id(),
                                         st.status, i->second.name));
      st.lookups.erase(i);
      return;
    }
    case signal::Envelope::kSignal:
      on_signal(self, *env.mutable_signal());
      return;
    case signal::Envelope::kRegisterResult:
      apply_register_result(st.status, env.register_result());
      return;
    case signal::Envelope::kIceServers:
      if (st.cfg.on_ice_servers)
        st.cfg.on_ice_servers(env.ice_servers());
      return;
    case signal::Envelope::kPing: {
      signal::Envelope out;
      out.mutable_pong()->set_seq(env.ping().seq());
      send_envelope(self, out);
      return;
    }
    case signal::Envelope::kPong:
      return; // last_rx already moved
    default:
      log::warn(subject, "ignores an unexpected message (field {}) from {}",
                static_cast<int>(env.msg_case()), st.cfg.server.to_string());
  }
}

admin::ActorStatus actor_status(signal_link_actor* self) {
  auto& st = self->state;
  admin::ActorStatus as;
  as.set_name(signal_link_state::name);
  as.set_state(to_string(st.state));
  auto& f = *as.mutable_fields();
  f["server"] = st.cfg.server.to_string();
  f["pending_lookups"] = std::to_string(st.lookups.size());
  f["reconnects"] = std::to_string(st.status.reconnects());
  if (!st.status.last_error().empty())
    f["last_error"] = st.status.last_error();
  return as;
}

} // namespace

caf::behavior signal_link(signal_link_actor* self, signal_link_config cfg,
                          std::shared_ptr<const identity> id,
                          caf::actor connector, caf::actor sink) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.id = std::move(id);
  st.connector = std::move(connector);
  st.sink = std::move(sink);
  st.retry = backoff{st.cfg.backoff_first, st.cfg.backoff_max, st.cfg.seed};
  if (!st.cfg.servers.empty()) {
    // Shuffled per node, so that a fleet spreads over the servers.
    std::mt19937_64 rng{st.cfg.seed};
    std::shuffle(st.cfg.servers.begin(), st.cfg.servers.end(), rng);
    st.cfg.server = st.cfg.servers.front();
  }
  st.status.set_server(st.cfg.server.to_string());
  st.status.set_state(to_string(st.state));
  registrations_pending(st.status, st.cfg.exports);
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.conn.address()) {
      st.conn = nullptr; // already gone: nothing to close
      go_backoff(self, "the connection ended unexpectedly");
    }
  });
  begin_connect(self);
  return {
    // --- the connection -----------------------------------------------------
    [=](conn_up_atom, uint64_t tag, const caf::actor& conn,
        const std::string& peer, const std::string& key_id,
        const std::string& binding, const std::string& ca_problem) {
      auto& st = self->state;
      if (tag != st.gen || st.state != link_state::connecting) {
        // A connection for an attempt we gave up on: close it.
        self->send(conn, close_atom::value);
        return;
      }
      auto verdict = judge_server(st.cfg.trust, st.cfg.server.to_string(),
                                  key_id, ca_problem);
      if (!verdict.trusted) {
        // Nothing was sent on it: the server never sees this node's Login.
        self->send(conn, close_atom::value);
        log::error(subject, "refuses the server: {}", verdict.refusal);
        st.status.set_login_failures(st.status.login_failures() + 1);
        go_backoff(self, verdict.refusal);
        return;
      }
      if (verdict.first_use)
        log::warn(subject,
                  "trusts signaling server {} with server id {} on first use "
                  "(stored in {}); set [signal] server_id to pin it",
                  st.cfg.server.to_string(), key_id, st.cfg.trust.store_path);
      log::debug(subject, "server {} has id {} ({})", peer, key_id,
                 verdict.how);
      st.status.set_server_id(key_id);
      st.status.set_server_trust(verdict.how);
      st.binding = binding;
      st.conn = conn;
      self->monitor(conn);
      st.last_rx = self->clock().now();
      transition_to(self, link_state::logging_in);
      record(self, "connected", peer);
      log::debug(subject, "connected to {}", peer);
    },
    [=](conn_fail_atom, uint64_t tag, const std::string& reason) {
      auto& st = self->state;
      if (tag != st.gen || st.state != link_state::connecting)
        return;
      go_backoff(self, reason);
    },
    [=](frame_atom, const std::string& payload) {
      auto& st = self->state;
      if (self->current_sender() != st.conn.address())
        return; // from a connection we already dropped
      on_frame(self, payload);
    },
    [=](net_change_atom, const std::vector<std::string>& added,
        const std::vector<std::string>& removed) {
      // The connection ends itself if its own address went away; the link
      // then reconnects from an address that exists.
      auto& st = self->state;
      if (st.conn)
        self->send(st.conn, net_change_atom::value, added, removed);
    },
    [=](conn_down_atom, const std::string& reason) {
      auto& st = self->state;
      if (self->current_sender() != st.conn.address())
        return;
      self->demonitor(st.conn);
      st.conn = nullptr;
      go_backoff(self, reason);
    },
    // --- timers
    // ---------------------------------------------------------------
    [=](timeout_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen != st.gen
          || (st.state != link_state::connecting
              && st.state != link_state::logging_in))
        return; // stale
      go_backoff(self, fmt::format("no login within {} ms",
                                   st.cfg.login_timeout.count()));
    },
    [=](retry_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen != st.gen || st.state != link_state::backoff)
        return;
      begin_connect(self);
    },
    [=](tick_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen != st.gen || st.state != link_state::online)
        return;
      auto silent = self->clock().now() - st.last_rx;
      if (silent >= st.cfg.dead_after) {
        go_backoff(
          self, fmt::format(
                  "heartbeat lost: nothing from the server for "
                  "{} ms",
                  std::chrono::duration_cast<std::chrono::milliseconds>(silent)
                    .count()));
        return;
      }
      signal::Envelope env;
      env.mutable_ping()->set_seq(++st.ping_seq);
      send_envelope(self, env);
      self->delayed_send(self, st.cfg.heartbeat, tick_atom::value, gen);
    },
    [=](lookup_timeout_atom, uint64_t request_id) {
      auto& st = self->state;
      auto i = st.lookups.find(request_id);
      if (i == st.lookups.end())
        return;
      i->second.rp.deliver(
        make_error(ec::timeout,
                   fmt::format("no answer to the look-up of '{}' within {} ms",
                               i->second.name, st.cfg.lookup_timeout.count())));
      st.lookups.erase(i);
    },
    [=](probe_timeout_atom, uint64_t nonce) {
      auto& st = self->state;
      auto i = st.probes.find(nonce);
      if (i == st.probes.end())
        return;
      i->second.rp.deliver(
        make_error(ec::timeout,
                   fmt::format("node {} did not answer the probe within {} ms",
                               i->second.peer, st.cfg.lookup_timeout.count())));
      st.probes.erase(i);
    },
    // --- requests
    // -------------------------------------------------------------
    [=](lookup_atom, const std::string& name) {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      if (st.state != link_state::online && serves_itself(st.status, name)) {
        // Its own export needs no server.
        rp.deliver(std::vector<std::string>{st.id->node_id()});
        return rp;
      }
      if (st.state != link_state::online) {
        rp.deliver(make_error(
          ec::not_online,
          fmt::format("not logged in to the signaling server {} ({}{}{})",
                      st.cfg.server.to_string(), to_string(st.state),
                      st.status.last_error().empty() ? "" : ": ",
                      st.status.last_error())));
        return rp;
      }
      auto request_id = st.next_request++;
      st.lookups.emplace(request_id,
                         signal_link_state::pending_lookup{rp, name});
      signal::Envelope env;
      env.mutable_lookup()->set_request_id(request_id);
      env.mutable_lookup()->set_name(name);
      send_envelope(self, env);
      self->delayed_send(self, st.cfg.lookup_timeout,
                         lookup_timeout_atom::value, request_id);
      return rp;
    },
    [=](probe_atom, const std::string& node_id) {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      if (st.state != link_state::online) {
        rp.deliver(
          make_error(ec::not_online, "not logged in to the signaling server"));
        return rp;
      }
      uint64_t nonce = 0;
      gnutls_rnd(GNUTLS_RND_NONCE, &nonce, sizeof(nonce));
      st.probes.emplace(nonce, signal_link_state::pending_probe{
                                 rp, node_id, self->clock().now()});
      signal::Envelope env;
      auto sig = env.mutable_signal();
      sig->set_to(node_id);
      sig->mutable_probe()->set_nonce(nonce);
      send_envelope(self, env);
      st.status.set_signals_out(st.status.signals_out() + 1);
      self->delayed_send(self, st.cfg.lookup_timeout, probe_timeout_atom::value,
                         nonce);
      return rp;
    },
    [=](signal_atom, const std::string& serialized) -> caf::result<void> {
      auto& st = self->state;
      if (st.state != link_state::online)
        return make_error(ec::not_online,
                          "not logged in to the signaling server");
      signal::Envelope env;
      if (!env.mutable_signal()->ParseFromString(serialized))
        return make_error(ec::protocol_error, "malformed Signal");
      env.mutable_signal()->clear_from(); // the server fills it in
      send_envelope(self, env);
      st.status.set_signals_out(st.status.signals_out() + 1);
      return caf::unit;
    },
    [=](register_atom, std::vector<std::string> names) {
      auto& st = self->state;
      st.cfg.exports = std::move(names);
      if (st.state == link_state::online)
        send_register(self);
    },
    [=](sink_atom, caf::actor sink) { self->state.sink = std::move(sink); },
    // --- status and shutdown
    // ----------------------------------------------------
    [=](status_atom) { return actor_status(self).SerializeAsString(); },
    [=](get_atom) {
      auto& st = self->state;
      auto copy = st.status;
      copy.clear_history();
      for (auto& ev : st.history)
        *copy.add_history() = ev;
      return copy.SerializeAsString();
    },
    [=](stop_atom, const std::string& reason) {
      auto& st = self->state;
      if (st.state == link_state::stopped)
        return;
      log::info(subject, "stops: {}", reason);
      drop_connection(self);
      fail_pending(self, "the node is shutting down");
      ++st.gen;
      transition_to(self, link_state::stopped);
      self->quit();
    },
  };
}

} // namespace p2proxy
