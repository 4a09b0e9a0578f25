// REDIS LOOP: the cluster's connection to Redis, on a thread of its own
// (docs/design.md, "The cluster on Redis"). Not an actor: the CLUSTER actor
// owns one and is the only one to use it.
//
// It keeps two hiredis asynchronous connections to one Redis: one for
// commands, one subscribed to this server instance's channel (a subscribed
// connection can send nothing else). Both are driven by one poll() loop on
// the loop's thread; a command from another thread is queued and the loop
// is woken through an eventfd, so hiredis is only ever touched by that
// thread.
//
// The callbacks given to it run on the loop's thread. They must not touch
// actor state or block: they only anon_send a message to the CLUSTER actor.
//
//   idle ──connect──▶ connecting ──both up, SUBSCRIBE confirmed──▶ up
//    ▲                    │                                         │
//    └──── link(false) ◀──┴─── error, close, disconnect() ◀─────────┘
//
// The loop never reconnects by itself: it reports the link as down once
// (link(false, why)) and waits for the next connect(), so the backoff lives
// in the actor, with the other timers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace p2proxy {

/// One Redis reply, flattened: hiredis' types stay in actors/cluster.
struct redis_reply {
  enum kind_t { error, nil, status, string, integer, array };
  kind_t kind = nil;
  std::string str; // error text, status, or string
  int64_t number = 0;
  /// Array elements that are strings, status or integers (as text); a nil
  /// element is an empty string, a nested array is "?".
  std::vector<std::string> items;
  /// An array element that was nil (false) or not (true), by position.
  std::vector<bool> present;
};

class redis_loop {
public:
  struct callbacks {
    /// The link came up (true) or went down (false, with why).
    std::function<void(bool up, const std::string& why)> link;
    /// A message published on one of the subscribed channels.
    std::function<void(std::string channel, std::string payload)> message;
  };

  explicit redis_loop(callbacks cb);
  /// Joins the loop's thread; pending commands get no answer.
  ~redis_loop();
  redis_loop(const redis_loop&) = delete;
  redis_loop& operator=(const redis_loop&) = delete;

  /// Drops any current link, then connects both connections to host:port,
  /// SELECTs `db` and SUBSCRIBEs to `channels`; link(true) follows once all
  /// of it worked, link(false, why) if any of it failed.
  void connect(const std::string& host, uint16_t port, int db,
               const std::vector<std::string>& channels);

  /// Drops the link (link(false, why) follows if it was not down yet).
  void disconnect(const std::string& why);

  /// Sends one command on the command connection; `done` runs on the
  /// loop's thread with the reply, or with an error reply when the link is
  /// down or drops before the answer.
  void command(std::vector<std::string> argv,
               std::function<void(const redis_reply&)> done);

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

} // namespace p2proxy
