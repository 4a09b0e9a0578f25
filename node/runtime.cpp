#include "node/runtime.hpp"

#include <chrono>
#include <csignal>
#include <ctime>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/log.hpp"

namespace p2proxy {

system_config::system_config() {
  load<caf::io::middleman>();
  // CAF's own logger stays quiet; p2proxy logs through actors/common/log.
  set("logger.verbosity", caf::atom("quiet"));
  set("middleman.enable-automatic-connections", false);
  // Workers block on a condition variable when idle instead of polling
  // with short sleeps: the work-stealing default cost a context switch
  // every 50 µs per idle worker, a sixth of a node's CPU under load.
  set("scheduler.policy", caf::atom("sharing"));
}

void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

caf::error wait_for_stop(caf::actor_system& sys,
                         const std::vector<caf::actor>& watched,
                         bool& by_signal) {
  caf::scoped_actor self{sys};
  for (auto& w : watched)
    self->monitor(w);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  timespec tick{0, 200 * 1000 * 1000};
  for (;;) {
    if (sigtimedwait(&set, nullptr, &tick) > 0) {
      by_signal = true;
      return caf::none;
    }
    caf::error result;
    bool ended = false;
    self->receive(
      [&](caf::down_msg& dm) {
        ended = true;
        result = dm.reason;
      },
      caf::after(std::chrono::milliseconds(0)) >> [] {});
    if (ended)
      return result == caf::exit_reason::normal ? caf::error{} : result;
  }
}

void stop_all(caf::actor_system& sys, const std::vector<caf::actor>& actors,
              const std::string& reason) {
  caf::scoped_actor self{sys};
  size_t alive = 0;
  for (auto& a : actors) {
    if (!a)
      continue;
    self->monitor(a);
    self->send(a, stop_atom::value, reason);
    ++alive;
  }
  bool timed_out = false;
  while (alive > 0 && !timed_out)
    self->receive([&](caf::down_msg&) { --alive; },
                  caf::after(std::chrono::seconds(10)) >>
                    [&] { timed_out = true; });
  if (timed_out)
    log::warn("p2proxy", "gave up waiting for {} actor(s) to stop", alive);
}

std::shared_ptr<const identity> node_identity(const std::string& key_file) {
  bool created = false;
  auto id = identity::load_or_create(key_file, &created);
  if (created)
    log::info("node", "created a new node key at {}", key_file);
  return std::make_shared<identity>(std::move(id));
}

} // namespace p2proxy
