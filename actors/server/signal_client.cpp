#include "actors/server/signal_client.hpp"

#include <cassert>

#include <caf/all.hpp>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "actors/actors.hpp"
#include "actors/common/log.hpp"
#include "actors/identity/identity.hpp"
#include "actors/server/relay_credentials.hpp"
#include "actors/signal/envelope_checks.hpp"
#include "actors/signal/tls_channel.hpp"
#include "proto/admin.pb.h"

#ifndef P2PROXY_VERSION
#define P2PROXY_VERSION "0.0.0"
#endif

namespace p2proxy {

const std::array<login_failure_label, 7> login_failure_labels{{
  {signal::BAD_TOKEN, "bad_token"},
  {signal::ID_MISMATCH, "id_mismatch"},
  {signal::BAD_SIGNATURE, "bad_signature"},
  {signal::LOGIN_TIMEOUT, "login_timeout"},
  {signal::NOT_LOGGED_IN, "not_logged_in"},
  {signal::BAD_FRAME, "bad_frame"},
  {signal::RATE_LIMITED, "rate_limited"},
}};

namespace {

constexpr std::string_view subject = "signal_client";
constexpr size_t max_names = 256;
constexpr size_t max_name_length = 255;

using state = signal_client_state::state;

bool allowed(state from, state to) {
  switch (from) {
    case state::waiting_conn:
      return to == state::awaiting_login || to == state::closed;
    case state::awaiting_login:
      return to == state::authorizing || to == state::closed;
    case state::authorizing:
      return to == state::online || to == state::closed;
    case state::online:
      return to == state::closed;
    case state::closed:
      return false;
  }
  return false;
}

std::string seconds_text(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0)
    return fmt::format("{} s", d.count() / 1000);
  return fmt::format("{} ms", d.count());
}

uint32_t whole_seconds(std::chrono::milliseconds d) {
  return static_cast<uint32_t>(std::max<int64_t>(1, (d.count() + 999) / 1000));
}

void send_envelope(signal_client_actor* self, const signal::Envelope& env) {
  auto& st = self->state;
  if (!st.conn)
    return;
  ++st.metrics->frames_out;
  self->send(st.conn, frame_atom::value, env.SerializeAsString());
}

void send_error(signal_client_actor* self, signal::ErrorCode code,
                const std::string& text, uint64_t request_id = 0) {
  signal::Envelope env;
  auto err = env.mutable_error();
  err->set_code(code);
  err->set_text(text);
  err->set_request_id(request_id);
  send_envelope(self, env);
}

// Once per connection: the SIGNAL SERVER's rate limit counts the failures.
void report_attempt(signal_client_actor* self, bool logged_in,
                    const std::string& why_not) {
  auto& st = self->state;
  if (st.attempt_reported)
    return;
  st.attempt_reported = true;
  if (st.server)
    self->send(st.server, attempt_atom::value, logged_in, why_not);
}

void arm_timer(signal_client_actor* self, caf::timespan after) {
  auto& st = self->state;
  self->delayed_send(self, after, timeout_atom::value, ++st.timer_gen);
}

// The one way out: sends Error{code, text} unless code is unspecified,
// closes the connection, leaves the DIRECTORY and ends the actor.
void close_client(signal_client_actor* self, signal::ErrorCode code,
                  const std::string& text, bool server_initiated) {
  auto& st = self->state;
  if (st.current == state::closed)
    return;
  report_attempt(self, false,
                 text.empty() ? "connection ended before the login" : text);
  if (code != signal::ERROR_UNSPECIFIED)
    send_error(self, code, text);
  if (st.conn)
    self->send(st.conn, close_atom::value);
  if (st.logged_in)
    self->send(st.directory, logout_atom::value, st.node_id, caf::actor{self});
  if (server_initiated)
    ++st.metrics->dropped_connections;
  st.transition_to(state::closed);
  self->quit();
}

void reject_login(signal_client_actor* self, signal::ErrorCode code,
                  const std::string& text) {
  auto& st = self->state;
  st.metrics->count_login_failure(code);
  // The SIGNAL SERVER logs failures per address, once a minute.
  log::debug(subject, "login from {} failed: {}", st.peer, text);
  close_client(self, code, text, true);
}

// Minted TURN credentials are pushed again when half their lifetime has
// passed, so a node always holds ones that outlive the sessions it opens.
void arm_credential_refresh(signal_client_actor* self) {
  auto& relay = self->state.opts.relay;
  if (relay.turn_secret.empty() || relay.turn.empty())
    return;
  auto half = std::max<caf::timespan>(std::chrono::seconds(1),
                                      caf::timespan{relay.turn_ttl} / 2);
  self->delayed_send(self, half, tick_atom::value, uint64_t{0});
}

void on_login_accepted(signal_client_actor* self) {
  auto& st = self->state;
  st.logged_in = true;
  st.transition_to(state::online);
  report_attempt(self, true, "");
  ++st.metrics->logins;
  log::info(subject, "node {} logged in from {}", st.node_id, st.peer);
  signal::Envelope env;
  auto ok = env.mutable_login_ok();
  ok->set_node_id(st.node_id);
  ok->set_observed_address(st.peer);
  ok->set_heartbeat_seconds(whole_seconds(st.opts.heartbeat));
  if (!st.opts.relay.empty())
    *ok->mutable_ice_servers() = make_ice_servers(
      st.opts.relay, st.node_id, std::chrono::system_clock::now());
  send_envelope(self, env);
  st.last_frame = self->clock().now();
  arm_timer(self, st.opts.dead_after);
  arm_credential_refresh(self);
}

// netcheck's login: the node learns its relays and nothing else happens.
void answer_probe_login(signal_client_actor* self) {
  auto& st = self->state;
  report_attempt(self, true, "");
  log::info(subject, "node {} checked its network from {}", st.node_id,
            st.peer);
  signal::Envelope env;
  auto ok = env.mutable_login_ok();
  ok->set_node_id(st.node_id);
  ok->set_observed_address(st.peer);
  ok->set_heartbeat_seconds(whole_seconds(st.opts.heartbeat));
  if (!st.opts.relay.empty())
    *ok->mutable_ice_servers() = make_ice_servers(
      st.opts.relay, st.node_id, std::chrono::system_clock::now());
  send_envelope(self, env);
  close_client(self, signal::ERROR_UNSPECIFIED, "", false);
}

void handle_login(signal_client_actor* self, const signal::Envelope& env) {
  auto& st = self->state;
  if (env.msg_case() != signal::Envelope::kLogin) {
    st.metrics->count_login_failure(signal::NOT_LOGGED_IN);
    log::debug(subject, "connection from {} sent {} before logging in", st.peer,
               message_name(env));
    close_client(self, signal::NOT_LOGGED_IN, "log in first", true);
    return;
  }
  auto& login = env.login();
  if (!st.opts.token.empty() && !same_secret(login.token(), st.opts.token)) {
    reject_login(self, signal::BAD_TOKEN, "wrong network token");
    return;
  }
  if (login.node_id() != node_id_from_spki(login.public_key())) {
    reject_login(self, signal::ID_MISMATCH,
                 "node id does not match its public key");
    return;
  }
  if (!verify_signature(
        login.public_key(),
        bound_login_challenge(st.binding, st.nonce, login.node_id()),
        login.signature())) {
    reject_login(self, signal::BAD_SIGNATURE,
                 "signature over the login challenge does not verify");
    return;
  }
  st.node_id = login.node_id();
  st.transition_to(state::authorizing);
  ++st.timer_gen; // the login deadline no longer applies
  if (login.probe_only()) {
    answer_probe_login(self);
    return;
  }
  // await: frames behind the Login wait until the DIRECTORY has us, so a
  // Register or Signal never reaches it before the login does.
  self
    ->request(st.directory, caf::infinite, login_atom::value, st.node_id,
              caf::actor{self}, st.peer)
    .await(
      [=](bool accepted) {
        if (accepted) {
          on_login_accepted(self);
        } else {
          close_client(self, signal::SHUTTING_DOWN, "server is shutting down",
                       true);
        }
      },
      [=](caf::error&) {
        close_client(self, signal::SHUTTING_DOWN, "server is shutting down",
                     true);
      });
}

void handle_register(signal_client_actor* self, const signal::Register& reg) {
  auto& st = self->state;
  if (static_cast<size_t>(reg.names_size()) > max_names) {
    send_error(self, signal::BAD_REQUEST,
               fmt::format("Register has {} names; at most {} are allowed",
                           reg.names_size(), max_names));
    return;
  }
  std::vector<std::string> names;
  for (auto& name : reg.names()) {
    if (name.empty() || name.size() > max_name_length) {
      send_error(self, signal::BAD_REQUEST,
                 fmt::format("export names must have 1 to {} characters",
                             max_name_length));
      return;
    }
    names.push_back(name);
  }
  self->send(st.directory, exports_atom::value, st.node_id, std::move(names));
}

void handle_lookup(signal_client_actor* self, const signal::Lookup& lookup) {
  auto& st = self->state;
  auto request_id = lookup.request_id();
  auto name = lookup.name();
  self->request(st.directory, caf::infinite, lookup_atom::value, name)
    .then(
      [=](std::vector<std::string>& ids) {
        signal::Envelope env;
        auto res = env.mutable_lookup_result();
        res->set_request_id(request_id);
        res->set_name(name);
        for (auto& id : ids)
          res->add_node_ids(std::move(id));
        send_envelope(self, env);
      },
      [=](caf::error&) {
        send_error(self, signal::SHUTTING_DOWN, "server is shutting down",
                   request_id);
      });
}

void handle_signal(signal_client_actor* self, const signal::Signal& sig) {
  auto& st = self->state;
  if (sig.to().empty()) {
    send_error(self, signal::BAD_REQUEST, "Signal without a recipient");
    return;
  }
  signal::Envelope env;
  auto out = env.mutable_signal();
  *out = sig;
  // The sender's claim is never trusted: `from` is who logged in here.
  out->set_from(st.node_id);
  auto to = sig.to();
  auto session_id = sig.session_id();
  self
    ->request(st.directory, caf::infinite, route_atom::value, to,
              env.SerializeAsString())
    .then(
      [=](bool online) {
        if (online)
          return;
        signal::Envelope reply;
        auto err = reply.mutable_error();
        err->set_code(signal::PEER_OFFLINE);
        err->set_text(fmt::format("node {} is offline", to));
        err->set_peer(to);
        err->set_session_id(session_id);
        send_envelope(self, reply);
      },
      [=](caf::error&) {
        send_error(self, signal::SHUTTING_DOWN, "server is shutting down");
      });
}

void handle_online(signal_client_actor* self, const signal::Envelope& env) {
  auto& st = self->state;
  switch (env.msg_case()) {
    case signal::Envelope::kRegister:
      handle_register(self, env.register_());
      break;
    case signal::Envelope::kLookup:
      handle_lookup(self, env.lookup());
      break;
    case signal::Envelope::kSignal:
      handle_signal(self, env.signal());
      break;
    case signal::Envelope::kPing: {
      signal::Envelope reply;
      reply.mutable_pong()->set_seq(env.ping().seq());
      send_envelope(self, reply);
      break;
    }
    case signal::Envelope::kPong:
      break; // only freshness matters, and last_frame already moved
    case signal::Envelope::kError:
      log::debug(subject, "node {} reports error {}: {}", st.node_id,
                 signal::ErrorCode_Name(env.error().code()),
                 env.error().text());
      break;
    case signal::Envelope::kLogin:
      send_error(self, signal::BAD_REQUEST, "already logged in");
      break;
    default:
      send_error(self, signal::BAD_REQUEST,
                 fmt::format("unexpected {} from a node", message_name(env)));
      break;
  }
}

void handle_frame(signal_client_actor* self, std::string& payload) {
  auto& st = self->state;
  ++st.metrics->frames_in;
  st.last_frame = self->clock().now();
  signal::Envelope env;
  if (!env.ParseFromString(payload)) {
    if (!st.logged_in)
      st.metrics->count_login_failure(signal::BAD_FRAME);
    if (st.logged_in)
      log::warn(subject,
                "node {} at {} sent a frame that is not an Envelope;"
                " closing it",
                st.node_id, st.peer);
    close_client(self, signal::BAD_FRAME, "frame is not a valid Envelope",
                 true);
    return;
  }
  switch (st.current) {
    case state::awaiting_login:
      handle_login(self, env);
      break;
    case state::online:
      handle_online(self, env);
      break;
    default:
      // waiting_conn: frames follow conn_up; authorizing: held by await;
      // closed: the actor is gone. None can happen.
      break;
  }
}

void handle_timeout(signal_client_actor* self) {
  auto& st = self->state;
  switch (st.current) {
    case state::waiting_conn:
    case state::awaiting_login: {
      auto text = fmt::format("no login within {}",
                              seconds_text(st.opts.login_timeout));
      reject_login(self, signal::LOGIN_TIMEOUT, text);
      break;
    }
    case state::online: {
      auto idle = self->clock().now() - st.last_frame;
      if (idle < st.opts.dead_after) {
        arm_timer(self, st.opts.dead_after - idle);
        break;
      }
      auto text
        = fmt::format("no frame for {}", seconds_text(st.opts.dead_after));
      log::warn(subject, "node {} at {} timed out: {}", st.node_id, st.peer,
                text);
      close_client(self, signal::HEARTBEAT_TIMEOUT, text, true);
      break;
    }
    default:
      break;
  }
}

} // namespace

void signal_client_state::transition_to(state next) {
  if (!allowed(current, next)) {
    log::error(subject, "signal client cannot go from {} to {}",
               to_string(current), to_string(next));
    assert(!"invalid signal_client transition");
    return;
  }
  log::debug(subject, "client of {} goes from {} to {}",
             peer.empty() ? "(no connection)" : peer, to_string(current),
             to_string(next));
  current = next;
}

const char* signal_client_state::to_string(state s) {
  switch (s) {
    case state::waiting_conn:
      return "waiting_conn";
    case state::awaiting_login:
      return "awaiting_login";
    case state::authorizing:
      return "authorizing";
    case state::online:
      return "online";
    case state::closed:
      return "closed";
  }
  return "?";
}

caf::behavior signal_client(signal_client_actor* self, caf::actor directory,
                            server_options opts,
                            std::shared_ptr<server_metrics> metrics,
                            caf::actor server) {
  auto& st = self->state;
  st.directory = std::move(directory);
  st.server = std::move(server);
  st.opts = std::move(opts);
  st.metrics = std::move(metrics);
  // The login deadline runs from the accept, not from the Hello.
  arm_timer(self, st.opts.login_timeout);
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.conn || dm.source != st.conn.address())
      return;
    st.conn = nullptr;
    log::debug(subject, "connection from {} ended without a word", st.peer);
    close_client(self, signal::ERROR_UNSPECIFIED, "", false);
  });
  return {
    [=](conn_up_atom, uint64_t, caf::actor& conn, std::string& peer,
        const std::string&, std::string& binding, const std::string&) {
      auto& st = self->state;
      if (st.current != state::waiting_conn) {
        self->send(conn, close_atom::value); // not ours: a client has one
        return;
      }
      st.conn = std::move(conn);
      st.peer = std::move(peer);
      st.binding = std::move(binding);
      self->monitor(st.conn);
      st.nonce.resize(32);
      if (gnutls_rnd(GNUTLS_RND_NONCE, st.nonce.data(), st.nonce.size()) != 0) {
        log::error(subject, "nonce generation failed; closing {}", st.peer);
        close_client(self, signal::ERROR_UNSPECIFIED, "", true);
        return;
      }
      log::debug(subject, "connection from {} opened", st.peer);
      st.transition_to(state::awaiting_login);
      signal::Envelope env;
      auto hello = env.mutable_hello();
      hello->set_nonce(st.nonce);
      hello->set_server_version("p2proxy " P2PROXY_VERSION);
      hello->set_heartbeat_seconds(whole_seconds(st.opts.heartbeat));
      send_envelope(self, env);
    },
    [=](frame_atom, std::string& payload) {
      auto& st = self->state;
      if (st.current == state::closed
          || caf::actor_cast<caf::actor>(self->current_sender()) != st.conn)
        return;
      handle_frame(self, payload);
    },
    [=](conn_fail_atom, uint64_t, const std::string& reason) {
      // The TLS handshake failed or the socket closed during it: an
      // unfinished attempt, like a login timeout.
      auto& st = self->state;
      if (st.current != state::waiting_conn)
        return;
      st.metrics->count_login_failure(signal::BAD_FRAME);
      log::debug(subject, "connection failed before TLS was up: {}", reason);
      close_client(self, signal::ERROR_UNSPECIFIED, reason, true);
    },
    [=](evict_atom, const std::string& reason) {
      // Only a login still to prove itself makes room: one whose signature
      // verified (authorizing) is as good as logged in.
      auto& st = self->state;
      if (st.current != state::waiting_conn
          && st.current != state::awaiting_login)
        return;
      reject_login(self, signal::RATE_LIMITED, reason);
    },
    [=](conn_down_atom, const std::string& reason) {
      auto& st = self->state;
      if (caf::actor_cast<caf::actor>(self->current_sender()) != st.conn)
        return;
      st.conn = nullptr; // it has ended itself
      if (st.logged_in)
        log::info(subject, "node {} at {} disconnected: {}", st.node_id,
                  st.peer, reason);
      else
        log::debug(subject, "connection from {} ended before login: {}",
                   st.peer, reason);
      close_client(self, signal::ERROR_UNSPECIFIED, "", false);
    },
    [=](timeout_atom, uint64_t gen) {
      if (gen == self->state.timer_gen)
        handle_timeout(self);
    },
    [=](tick_atom, uint64_t) {
      auto& st = self->state;
      if (st.current != state::online)
        return;
      signal::Envelope env;
      *env.mutable_ice_servers() = make_ice_servers(
        st.opts.relay, st.node_id, std::chrono::system_clock::now());
      send_envelope(self, env);
      log::debug(subject, "node {} gets fresh TURN credentials", st.node_id);
      arm_credential_refresh(self);
    },
    [=](replaced_atom, const std::string& by) {
      auto& st = self->state;
      log::info(subject, "node {} at {} was replaced by a newer login from {}",
                st.node_id, st.peer, by);
      st.logged_in = false; // the DIRECTORY already points at the new one
      close_client(self, signal::REPLACED,
                   fmt::format("replaced by a newer login from {}", by), true);
    },
    [=](deliver_atom, std::string& envelope) {
      auto& st = self->state;
      if (st.current != state::online || !st.conn)
        return;
      ++st.metrics->frames_out;
      self->send(st.conn, frame_atom::value, std::move(envelope));
    },
    [=](stop_atom, const std::string& reason) {
      close_client(self, signal::SHUTTING_DOWN,
                   fmt::format("server is shutting down: {}", reason), false);
    },
    [=](status_atom) {
      auto& st = self->state;
      admin::ActorStatus status;
      status.set_name("signal_client");
      status.set_state(signal_client_state::to_string(st.current));
      (*status.mutable_fields())["peer"] = st.peer;
      (*status.mutable_fields())["node_id"] = st.node_id;
      return status.SerializeAsString();
    },
  };
}

} // namespace p2proxy
