#include "actors/signal/envelope_checks.hpp"

#include "actors/identity/identity.hpp"

namespace p2proxy {

bool same_secret(std::string_view a, std::string_view b) {
  auto x = sha256(a);
  auto y = sha256(b);
  unsigned char diff = x.size() != y.size();
  for (size_t i = 0; i < x.size() && i < y.size(); ++i)
    diff |= static_cast<unsigned char>(x[i] ^ y[i]);
  return diff == 0;
}

std::string message_name(const signal::Envelope& env) {
  if (env.msg_case() == signal::Envelope::MSG_NOT_SET)
    return "an empty Envelope";
  auto field = signal::Envelope::descriptor()->FindFieldByNumber(
    static_cast<int>(env.msg_case()));
  return field != nullptr ? field->name() : "an unknown message";
}

} // namespace p2proxy
