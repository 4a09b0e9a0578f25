#include "actors/server/relay_credentials.hpp"

#include <array>
#include <stdexcept>

#include <fmt/format.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

namespace p2proxy {

namespace {

std::string base64(const unsigned char* data, size_t size) {
  static constexpr char digits[]
    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  for (size_t i = 0; i < size; i += 3) {
    uint32_t n = uint32_t{data[i]} << 16;
    if (i + 1 < size)
      n |= uint32_t{data[i + 1]} << 8;
    if (i + 2 < size)
      n |= data[i + 2];
    out += digits[(n >> 18) & 63];
    out += digits[(n >> 12) & 63];
    out += i + 1 < size ? digits[(n >> 6) & 63] : '=';
    out += i + 2 < size ? digits[n & 63] : '=';
  }
  return out;
}

} // namespace

std::string turn_rest_password(const std::string& secret,
                               const std::string& user) {
  std::array<unsigned char, 20> mac{};
  if (gnutls_hmac_fast(GNUTLS_MAC_SHA1, secret.data(), secret.size(),
                       user.data(), user.size(), mac.data())
      != 0)
    throw std::runtime_error("HMAC-SHA1 is not available");
  return base64(mac.data(), mac.size());
}

std::string ice_server_text(const endpoint& ep) {
  if (ep.host.empty())
    return fmt::format(":{}", ep.port);
  return ep.to_string();
}

signal::IceServers make_ice_servers(const relay_options& opts,
                                    const std::string& node_id,
                                    std::chrono::system_clock::time_point now) {
  signal::IceServers out;
  for (auto& s : opts.stun)
    out.add_stun(ice_server_text(s));
  for (auto& p : opts.stun_probes)
    out.add_stun_probes(ice_server_text(p));
  std::string user;
  std::string password;
  if (!opts.turn_secret.empty() && !opts.turn.empty()) {
    auto expires = std::chrono::duration_cast<std::chrono::seconds>(
                     now.time_since_epoch() + opts.turn_ttl)
                     .count();
    user = fmt::format("{}:{}", expires, node_id);
    password = turn_rest_password(opts.turn_secret, user);
    out.set_expires_unix(static_cast<uint64_t>(expires));
  }
  for (auto& t : opts.turn) {
    auto turn = out.add_turn();
    turn->set_server(ice_server_text(t));
    turn->set_user(user);
    turn->set_password(password);
  }
  return out;
}

} // namespace p2proxy
