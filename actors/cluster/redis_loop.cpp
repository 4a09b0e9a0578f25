#include "actors/cluster/redis_loop.hpp"

#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace p2proxy {

using command_done = std::function<void(const redis_reply&)>;

struct redis_loop::impl {
  // One hiredis connection and what it asked the loop to watch.
  struct watch {
    redisAsyncContext* ac = nullptr;
    bool reading = false;
    bool writing = false;
  };
  enum class link { idle, connecting, up };

  callbacks cb;
  std::mutex mtx;
  std::deque<std::function<void()>> tasks; // guarded by mtx
  bool stop = false;                       // guarded by mtx
  int wake_fd = -1;
  std::thread thread;

  // Loop thread only, from here on.
  watch cmd;
  watch sub;
  link state = link::idle;
  bool selected = false; // SELECT (or PING) answered
  size_t subscribed = 0; // channels whose SUBSCRIBE was confirmed
  std::vector<std::string> channels;

  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock{mtx};
      tasks.push_back(std::move(task));
    }
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof(one));
  }

  void run();
  void start(const std::string& host, uint16_t port, int db);
  void teardown(const std::string& why, bool report);
  void maybe_up();
  void send(std::vector<std::string> argv, command_done done);
  bool open(watch& w, const std::string& host, uint16_t port);
};

namespace {

redis_reply convert(const redisReply* r) {
  redis_reply out;
  if (r == nullptr) {
    out.kind = redis_reply::error;
    out.str = "the Redis link went down before the answer";
    return out;
  }
  switch (r->type) {
    case REDIS_REPLY_ERROR:
      out.kind = redis_reply::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.kind = redis_reply::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STRING:
      out.kind = redis_reply::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.kind = redis_reply::integer;
      out.number = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.kind = redis_reply::array;
      for (size_t i = 0; i < r->elements; ++i) {
        auto e = r->element[i];
        switch (e->type) {
          case REDIS_REPLY_STRING:
          case REDIS_REPLY_STATUS:
            out.items.emplace_back(e->str, e->len);
            out.present.push_back(true);
            break;
          case REDIS_REPLY_INTEGER:
            out.items.push_back(std::to_string(e->integer));
            out.present.push_back(true);
            break;
          case REDIS_REPLY_NIL:
            out.items.emplace_back();
            out.present.push_back(false);
            break;
          default:
            out.items.emplace_back("?");
            out.present.push_back(true);
            break;
        }
      }
      break;
    default:
      out.kind = redis_reply::nil;
      break;
  }
  return out;
}

redis_loop::impl* owner_of(const redisAsyncContext* ac) {
  return static_cast<redis_loop::impl*>(ac->data);
}

redis_loop::impl::watch* watch_of(void* privdata) {
  return static_cast<redis_loop::impl::watch*>(privdata);
}

void add_read(void* p) {
  watch_of(p)->reading = true;
}
void del_read(void* p) {
  watch_of(p)->reading = false;
}
void add_write(void* p) {
  watch_of(p)->writing = true;
}
void del_write(void* p) {
  watch_of(p)->writing = false;
}
void cleanup(void* p) {
  auto w = watch_of(p);
  w->reading = false;
  w->writing = false;
}

// The context is freed by hiredis after these two return: forget it first.
void forget(redis_loop::impl* self, const redisAsyncContext* ac) {
  if (self->cmd.ac == ac)
    self->cmd = {};
  if (self->sub.ac == ac)
    self->sub = {};
}

void on_connect(const redisAsyncContext* ac, int status) {
  if (status == REDIS_OK)
    return;
  auto self = owner_of(ac);
  std::string why = ac->errstr != nullptr ? ac->errstr : "connect failed";
  forget(self, ac);
  self->teardown("cannot connect to Redis: " + why, true);
}

void on_disconnect(const redisAsyncContext* ac, int status) {
  auto self = owner_of(ac);
  if (self->cmd.ac != ac && self->sub.ac != ac)
    return; // one the loop dropped itself
  std::string why = status == REDIS_OK || ac->errstr == nullptr
                      ? std::string{"Redis closed the connection"}
                      : std::string{"Redis link lost: "} + ac->errstr;
  forget(self, ac);
  self->teardown(why, true);
}

void on_command(redisAsyncContext*, void* r, void* privdata) {
  std::unique_ptr<command_done> done{static_cast<command_done*>(privdata)};
  (*done)(convert(static_cast<redisReply*>(r)));
}

void on_select(redisAsyncContext* ac, void* r, void*) {
  auto self = owner_of(ac);
  auto reply = static_cast<redisReply*>(r);
  if (reply == nullptr || self->cmd.ac != ac)
    return;
  if (reply->type == REDIS_REPLY_ERROR) {
    self->teardown(std::string{"Redis refused SELECT: "}
                     + std::string(reply->str, reply->len),
                   true);
    return;
  }
  self->selected = true;
  self->maybe_up();
}

// Every reply of the subscribed connection: the confirmation, then messages.
void on_subscribed(redisAsyncContext* ac, void* r, void*) {
  auto self = owner_of(ac);
  auto reply = static_cast<redisReply*>(r);
  if (reply == nullptr || self->sub.ac != ac)
    return;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
      || reply->element[0]->type != REDIS_REPLY_STRING)
    return;
  std::string kind(reply->element[0]->str, reply->element[0]->len);
  if (kind == "subscribe") {
    ++self->subscribed;
    self->maybe_up();
  } else if (kind == "message" && reply->element[1]->type == REDIS_REPLY_STRING
             && reply->element[2]->type == REDIS_REPLY_STRING) {
    if (self->cb.message)
      self->cb.message(
        std::string(reply->element[1]->str, reply->element[1]->len),
        std::string(reply->element[2]->str, reply->element[2]->len));
  }
}

} // namespace

bool redis_loop::impl::open(watch& w, const std::string& host, uint16_t port) {
  auto ac = redisAsyncConnect(host.c_str(), port);
  if (ac == nullptr)
    return false;
  if (ac->err != 0) {
    redisAsyncFree(ac);
    return false;
  }
  w = watch{ac, false, false};
  ac->data = this;
  ac->ev.data = &w;
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  ac->ev.cleanup = cleanup;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  return true;
}

void redis_loop::impl::start(const std::string& host, uint16_t port, int db) {
  teardown("reconnecting", false);
  state = link::connecting;
  selected = false;
  subscribed = 0;
  if (!open(cmd, host, port) || !open(sub, host, port)) {
    teardown("cannot connect to Redis at " + host + ":" + std::to_string(port)
               + ": " + std::strerror(errno),
             true);
    return;
  }
  // PING when there is nothing to select: one answer says the link works.
  if (db != 0)
    redisAsyncCommand(cmd.ac, on_select, nullptr, "SELECT %d", db);
  else
    redisAsyncCommand(cmd.ac, on_select, nullptr, "PING");
  std::vector<const char*> args{"SUBSCRIBE"};
  std::vector<size_t> lens{9};
  for (auto& c : channels) {
    args.push_back(c.data());
    lens.push_back(c.size());
  }
  redisAsyncCommandArgv(sub.ac, on_subscribed, nullptr,
                        static_cast<int>(args.size()), args.data(),
                        lens.data());
}

void redis_loop::impl::maybe_up() {
  if (state != link::connecting || !selected || subscribed < channels.size())
    return;
  state = link::up;
  if (cb.link)
    cb.link(true, {});
}

void redis_loop::impl::teardown(const std::string& why, bool report) {
  auto was = state;
  state = link::idle;
  // Forgotten first: the disconnect callbacks that freeing runs see
  // contexts that are no longer the loop's and stay quiet.
  auto a = std::exchange(cmd, watch{}).ac;
  auto b = std::exchange(sub, watch{}).ac;
  if (a != nullptr)
    redisAsyncFree(a); // pending commands get their error reply here
  if (b != nullptr)
    redisAsyncFree(b);
  if (report && was != link::idle && cb.link)
    cb.link(false, why);
}

void redis_loop::impl::send(std::vector<std::string> argv, command_done done) {
  if (state != link::up || cmd.ac == nullptr) {
    redis_reply err;
    err.kind = redis_reply::error;
    err.str = "the Redis link is down";
    done(err);
    return;
  }
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  auto box = new command_done{std::move(done)};
  if (redisAsyncCommandArgv(cmd.ac, on_command, box,
                            static_cast<int>(args.size()), args.data(),
                            lens.data())
      != REDIS_OK) {
    std::unique_ptr<command_done> owned{box};
    redis_reply err;
    err.kind = redis_reply::error;
    err.str = "the Redis link is closing";
    (*owned)(err);
  }
}

void redis_loop::impl::run() {
  for (;;) {
    std::deque<std::function<void()>> todo;
    bool stopping = false;
    {
      std::lock_guard<std::mutex> lock{mtx};
      todo.swap(tasks);
      stopping = stop;
    }
    for (auto& task : todo)
      task();
    if (stopping) {
      teardown("the server is stopping", false);
      return;
    }
    pollfd fds[3];
    redisAsyncContext* polled[3] = {nullptr, nullptr, nullptr};
    nfds_t n = 0;
    fds[n++] = pollfd{wake_fd, POLLIN, 0};
    for (auto w : {&cmd, &sub}) {
      if (w->ac == nullptr || (!w->reading && !w->writing))
        continue;
      short events = 0;
      if (w->reading)
        events |= POLLIN;
      if (w->writing)
        events |= POLLOUT;
      polled[n] = w->ac;
      fds[n++] = pollfd{w->ac->c.fd, events, 0};
    }
    if (::poll(fds, n, 1000) < 0 && errno != EINTR)
      continue;
    if ((fds[0].revents & POLLIN) != 0) {
      uint64_t count = 0;
      [[maybe_unused]] auto r = ::read(wake_fd, &count, sizeof(count));
    }
    for (nfds_t i = 1; i < n; ++i) {
      // A callback of an earlier entry may have dropped this context.
      auto alive = [&] { return cmd.ac == polled[i] || sub.ac == polled[i]; };
      if (!alive())
        continue;
      if ((fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0)
        redisAsyncHandleRead(polled[i]);
      if (alive() && (fds[i].revents & (POLLOUT | POLLERR)) != 0)
        redisAsyncHandleWrite(polled[i]);
    }
  }
}

redis_loop::redis_loop(callbacks cb) : impl_(std::make_shared<impl>()) {
  impl_->cb = std::move(cb);
  impl_->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  auto p = impl_.get();
  impl_->thread = std::thread{[p] { p->run(); }};
}

redis_loop::~redis_loop() {
  {
    std::lock_guard<std::mutex> lock{impl_->mtx};
    impl_->stop = true;
  }
  impl_->post([] {});
  impl_->thread.join();
  ::close(impl_->wake_fd);
}

void redis_loop::connect(const std::string& host, uint16_t port, int db,
                         const std::vector<std::string>& channels) {
  auto p = impl_.get();
  impl_->post([p, host, port, db, channels] {
    p->channels = channels;
    p->start(host, port, db);
  });
}

void redis_loop::disconnect(const std::string& why) {
  auto p = impl_.get();
  impl_->post([p, why] { p->teardown(why, true); });
}

void redis_loop::command(std::vector<std::string> argv,
                         std::function<void(const redis_reply&)> done) {
  auto p = impl_.get();
  impl_->post([p, argv = std::move(argv), done = std::move(done)]() mutable {
    p->send(std::move(argv), std::move(done));
  });
}

} // namespace p2proxy
