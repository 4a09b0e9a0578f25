#include "actors/signal/login_frames.hpp"

#include "actors/signal/tls_channel.hpp"

#ifndef P2PROXY_VERSION
#define P2PROXY_VERSION "0.0.0"
#endif

namespace p2proxy {

signal::Envelope make_login(const identity& id, const std::string& binding,
                            const signal::Hello& hello,
                            const std::string& token, bool probe_only) {
  signal::Envelope out;
  auto login = out.mutable_login();
  login->set_node_id(id.node_id());
  login->set_public_key(id.public_key());
  login->set_signature(
    id.sign(bound_login_challenge(binding, hello.nonce(), id.node_id())));
  login->set_token(token);
  login->set_client_version(P2PROXY_VERSION);
  login->set_probe_only(probe_only);
  return out;
}

} // namespace p2proxy
