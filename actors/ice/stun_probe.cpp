#include "actors/ice/stun_probe.hpp"

#include <cerrno>
#include <cstring>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <stun/stunagent.h>
#include <stun/usages/bind.h>
#include <stun/usages/turn.h>

namespace p2proxy {

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t)
    .count();
}

std::string address_text(const sockaddr* sa) {
  char ip[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET6) {
    auto s6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
    return fmt::format("[{}]:{}", ip, ntohs(s6->sin6_port));
  }
  auto s4 = reinterpret_cast<const sockaddr_in*>(sa);
  ::inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
  return fmt::format("{}:{}", ip, ntohs(s4->sin_port));
}

bool resolve(const endpoint& ep, int family, int socktype,
             sockaddr_storage& out, socklen_t& len, std::string& why) {
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = socktype;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  auto port = std::to_string(ep.port);
  if (auto rc = ::getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &res);
      rc != 0) {
    why = fmt::format("cannot resolve {}: {}", ep.host, ::gai_strerror(rc));
    return false;
  }
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return true;
}

int remaining_ms(clock_type::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - clock_type::now())
                .count();
  return left > 0 ? static_cast<int>(left) : 0;
}

} // namespace

stun_binding_report stun_bindings(const std::vector<endpoint>& servers,
                                  int family,
                                  std::chrono::milliseconds timeout) {
  stun_binding_report report;
  struct pending {
    sockaddr_storage to{};
    socklen_t to_len = 0;
    uint8_t buf[STUN_MAX_MESSAGE_SIZE_IPV6]{};
    size_t len = 0;
    StunMessage msg{};
    clock_type::time_point sent;
    bool live = false;
  };
  std::vector<pending> reqs(servers.size());
  for (auto& s : servers)
    report.answers.push_back(stun_binding_answer{s, false, {}, 0, {}});
  int fd = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    for (auto& a : report.answers)
      a.error = fmt::format("no UDP socket: {}", std::strerror(errno));
    return report;
  }
  StunAgent agent;
  stun_agent_init(&agent, STUN_ALL_KNOWN_ATTRIBUTES, STUN_COMPATIBILITY_RFC5389,
                  STUN_AGENT_USAGE_USE_FINGERPRINT);
  auto start = clock_type::now();
  auto deadline = start + timeout;
  for (size_t i = 0; i < servers.size(); ++i) {
    auto& r = reqs[i];
    std::string why;
    if (!resolve(servers[i], family, SOCK_DGRAM, r.to, r.to_len, why)) {
      report.answers[i].error = why;
      continue;
    }
    r.len = stun_usage_bind_create(&agent, &r.msg, r.buf, sizeof(r.buf));
    r.live = r.len > 0;
  }
  // Retransmissions at 0, 250, 750, 1750 ms ... (doubling), until timeout.
  auto next_send = start;
  auto gap = std::chrono::milliseconds(250);
  for (;;) {
    auto now = clock_type::now();
    bool any_live = false;
    for (auto& r : reqs)
      any_live = any_live || r.live;
    if (!any_live || now >= deadline)
      break;
    if (now >= next_send) {
      for (auto& r : reqs)
        if (r.live) {
          if (r.sent == clock_type::time_point{})
            r.sent = now;
          ::sendto(fd, r.buf, r.len, MSG_DONTWAIT,
                   reinterpret_cast<sockaddr*>(&r.to), r.to_len);
        }
      if (report.local.empty()) {
        sockaddr_storage local{};
        socklen_t llen = sizeof(local);
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen);
        report.local = address_text(reinterpret_cast<sockaddr*>(&local));
      }
      next_send = now + gap;
      gap *= 2;
    }
    auto wait = std::min(remaining_ms(deadline), remaining_ms(next_send));
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, std::max(wait, 1)) <= 0)
      continue;
    uint8_t in[1500];
    sockaddr_storage from{};
    socklen_t from_len = sizeof(from);
    auto n = ::recvfrom(fd, in, sizeof(in), MSG_DONTWAIT,
                        reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n <= 0)
      continue;
    StunMessage msg;
    if (stun_agent_validate(&agent, &msg, in, static_cast<size_t>(n), nullptr,
                            nullptr)
        != STUN_VALIDATION_SUCCESS)
      continue;
    StunTransactionId got;
    stun_message_id(&msg, got);
    for (size_t i = 0; i < reqs.size(); ++i) {
      auto& r = reqs[i];
      StunTransactionId want;
      stun_message_id(&r.msg, want);
      if (!r.live || std::memcmp(got, want, sizeof(got)) != 0)
        continue;
      r.live = false;
      auto& a = report.answers[i];
      sockaddr_storage mapped{};
      socklen_t mapped_len = sizeof(mapped);
      sockaddr_storage alt{};
      socklen_t alt_len = sizeof(alt);
      if (stun_usage_bind_process(&msg, reinterpret_cast<sockaddr*>(&mapped),
                                  &mapped_len,
                                  reinterpret_cast<sockaddr*>(&alt), &alt_len)
          == STUN_USAGE_BIND_RETURN_SUCCESS) {
        a.answered = true;
        a.mapped = address_text(reinterpret_cast<sockaddr*>(&mapped));
        a.rtt_ms = ms_since(r.sent);
      } else {
        a.error = "the server answered with an error";
      }
    }
  }
  for (size_t i = 0; i < reqs.size(); ++i)
    if (reqs[i].live) {
      StunTransactionId id;
      stun_message_id(&reqs[i].msg, id);
      stun_agent_forget_transaction(&agent, id);
      report.answers[i].error = fmt::format("no answer within {} ms",
                                            static_cast<long>(timeout.count()));
    }
  ::close(fd);
  return report;
}

namespace {

// One request/answer exchange on a connected socket (UDP: retransmitted;
// TCP: STUN messages back to back on the stream).
bool exchange(int fd, bool tcp, StunAgent& agent, const uint8_t* req,
              size_t req_len, StunMessage& answer, uint8_t* in, size_t in_size,
              clock_type::time_point deadline, std::string& why) {
  auto gap = std::chrono::milliseconds(250);
  auto next_send = clock_type::now();
  size_t have = 0;
  for (;;) {
    auto now = clock_type::now();
    if (now >= deadline) {
      why = "no answer in time";
      return false;
    }
    if (now >= next_send) {
      if (::send(fd, req, req_len, MSG_NOSIGNAL) < 0 && tcp) {
        why = fmt::format("send failed: {}", std::strerror(errno));
        return false;
      }
      next_send = tcp ? deadline : now + gap;
      gap *= 2;
    }
    pollfd p{fd, POLLIN, 0};
    auto wait = std::min(remaining_ms(deadline), remaining_ms(next_send));
    if (::poll(&p, 1, std::max(wait, 1)) <= 0)
      continue;
    auto n = ::recv(fd, in + have, in_size - have, MSG_DONTWAIT);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        continue;
      why = n == 0 ? "the server closed the connection"
                   : fmt::format("receive failed: {}", std::strerror(errno));
      return false;
    }
    size_t len = static_cast<size_t>(n);
    if (tcp) {
      have += len;
      if (have < 20)
        continue;
      size_t want = 20 + ((size_t{in[2]} << 8) | in[3]);
      if (want > in_size) {
        why = "the server sent an oversized message";
        return false;
      }
      if (have < want)
        continue;
      len = want;
      have = 0;
    }
    auto v = stun_agent_validate(&agent, &answer, in, len, nullptr, nullptr);
    if (v == STUN_VALIDATION_SUCCESS)
      return true;
    if (v == STUN_VALIDATION_UNAUTHORIZED
        || v == STUN_VALIDATION_UNAUTHORIZED_BAD_REQUEST) {
      why = "the answer's integrity check failed";
      return false;
    }
  }
}

std::string error_text(int code) {
  switch (code) {
    case 401:
      return "401 Unauthorized: the relay refused the credentials (wrong "
             "shared secret, or they expired; check both hosts' clocks)";
    case 403:
      return "403 Forbidden";
    case 437:
      return "437 Allocation Mismatch";
    case 438:
      return "438 Stale Nonce";
    case 486:
      return "486 Allocation Quota Reached";
    case 508:
      return "508 Insufficient Capacity";
    default:
      return fmt::format("error {}", code);
  }
}

} // namespace

turn_check turn_allocate(const endpoint& server, bool tcp,
                         const std::string& user, const std::string& password,
                         std::chrono::milliseconds timeout) {
  turn_check out;
  out.server = server;
  out.tcp = tcp;
  sockaddr_storage to{};
  socklen_t to_len = 0;
  auto type = tcp ? SOCK_STREAM : SOCK_DGRAM;
  if (!resolve(server, AF_UNSPEC, type, to, to_len, out.error))
    return out;
  int fd = ::socket(to.ss_family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    out.error = std::strerror(errno);
    return out;
  }
  auto start = clock_type::now();
  auto deadline = start + timeout;
  if (tcp) {
    // A blocking connect bounded by the socket's send timeout.
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), to_len) != 0) {
    out.error = fmt::format("cannot connect: {}", std::strerror(errno));
    ::close(fd);
    return out;
  }
  StunAgent agent;
  stun_agent_init(
    &agent, STUN_ALL_KNOWN_ATTRIBUTES, STUN_COMPATIBILITY_RFC5389,
    static_cast<StunAgentUsageFlags>(STUN_AGENT_USAGE_LONG_TERM_CREDENTIALS
                                     | STUN_AGENT_USAGE_USE_FINGERPRINT));
  auto u = reinterpret_cast<uint8_t*>(const_cast<char*>(user.data()));
  auto pw = reinterpret_cast<uint8_t*>(const_cast<char*>(password.data()));
  uint8_t req_buf[STUN_MAX_MESSAGE_SIZE_IPV6];
  uint8_t in[4096];
  StunMessage req;
  StunMessage answer;
  StunMessage previous;
  uint8_t previous_buf[4096];
  bool have_previous = false;
  // The first Allocate carries no credentials and learns the realm and
  // nonce from the 401; the second proves the credentials (a stale nonce
  // gets one more try).
  for (int round = 0; round < 3; ++round) {
    auto len = stun_usage_turn_create(&agent, &req, req_buf, sizeof(req_buf),
                                      have_previous ? &previous : nullptr,
                                      STUN_USAGE_TURN_REQUEST_PORT_NORMAL, -1,
                                      -1, u, user.size(), pw, password.size(),
                                      STUN_USAGE_TURN_COMPATIBILITY_RFC5766);
    auto sent = clock_type::now();
    std::string why;
    if (len == 0
        || !exchange(fd, tcp, agent, req_buf, len, answer, in, sizeof(in),
                     deadline, why)) {
      if (!out.reachable)
        out.error = why.empty() ? "cannot build the request" : why;
      else if (out.error.empty())
        out.error = why;
      break;
    }
    if (!out.reachable) {
      out.reachable = true;
      out.rtt_ms
        = std::chrono::duration<double, std::milli>(clock_type::now() - sent)
            .count();
    }
    sockaddr_storage relay{}, mapped{}, alt{};
    socklen_t relay_len = sizeof(relay), mapped_len = sizeof(mapped),
              alt_len = sizeof(alt);
    uint32_t bandwidth = 0, lifetime = 0;
    auto rc = stun_usage_turn_process(
      &answer, &relay, &relay_len, &mapped, &mapped_len, &alt, &alt_len,
      &bandwidth, &lifetime, STUN_USAGE_TURN_COMPATIBILITY_RFC5766);
    if (rc == STUN_USAGE_TURN_RETURN_RELAY_SUCCESS
        || rc == STUN_USAGE_TURN_RETURN_MAPPED_SUCCESS) {
      out.allocated = true;
      out.error_code = 0;
      out.error.clear();
      out.relayed = address_text(reinterpret_cast<sockaddr*>(&relay));
      // Release it at once: lifetime 0.
      auto rlen = stun_usage_turn_create_refresh(
        &agent, &req, req_buf, sizeof(req_buf), &answer, 0, u, user.size(), pw,
        password.size(), STUN_USAGE_TURN_COMPATIBILITY_RFC5766);
      if (rlen > 0)
        ::send(fd, req_buf, rlen, MSG_NOSIGNAL | MSG_DONTWAIT);
      break;
    }
    int code = 0;
    stun_message_find_error(&answer, &code);
    out.error_code = code;
    out.error = error_text(code);
    bool retry = (code == 401 && round == 0) || code == 438;
    if (!retry)
      break;
    // Keep the answer (realm, nonce) for the next request.
    auto alen = stun_message_length(&answer);
    std::memcpy(previous_buf, in, std::min<size_t>(alen, sizeof(previous_buf)));
    previous = answer;
    previous.buffer = previous_buf;
    have_previous = true;
  }
  ::close(fd);
  return out;
}

} // namespace p2proxy
