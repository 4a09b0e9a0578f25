// Every signaling message the server and the node parse: the byte stream of a
// signaling connection is cut into length-prefixed frames (frame_decoder, as
// the FRAME CONNECTION does), each frame is decoded into a signal::Envelope,
// and the checks the SIGNAL CLIENT (server side, actors/server/
// signal_client.cpp) and the SIGNAL LINK (node side, actors/signal/
// signal_link.cpp) apply before any actor state changes are run on it:
//   - server: the message's name for the log (via the descriptor), the
//     Login's token comparison (SHA-256 of both), node id = hash of the public
//     key, the signature over bound_login_challenge(binding, nonce,
//     node_id) with a fixed stand-in for the TLS channel binding — in that
//     order, cheap checks first, as the server does; Register's name count
//     and lengths; Lookup's fields; a Signal re-addressed (`from` replaced)
//     and serialised for routing;
//   - node: Hello's nonce into a login challenge, LoginOk's fields,
//     LookupResult's ids, an Error's code name, a Signal's probe and its
//     serialisation for the session owner, which parses it back.
// The token comparison and message naming are the server's own
// (actors/signal/envelope_checks.*); the rest of the handlers live inside the
// actors and is mirrored here (see docs/fuzzing.md for what is not
// covered: the actors' state machines, and ICE candidates, which libnice
// parses).
//
// flags: bit 0 = the login's nonce is all zeroes (else "p2proxy-fuzz-nonce"
// repeated), so a seed signed over a fixed nonce reaches the signature check.
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "actors/common/frame_codec.hpp"
#include "actors/identity/identity.hpp"
#include "actors/signal/envelope_checks.hpp"
#include "actors/signal/tls_channel.hpp"
#include "proto/signal.pb.h"
#include "tests/fuzz/fuzz_input.hpp"

using namespace p2proxy;

namespace {

// actors/server/signal_client.cpp
constexpr size_t max_names = 256;
constexpr size_t max_name_length = 255;
const std::string server_token = "fuzz-network-token";
/// What the TLS session's channel binding would be (32 bytes).
const std::string fuzz_binding(32, '\x5a');

std::string fixed_nonce(bool zero) {
  if (zero)
    return std::string(32, '\0');
  std::string n;
  while (n.size() < 32)
    n += "p2proxy-fuzz-nonce";
  n.resize(32);
  return n;
}

void server_side(const signal::Envelope& env, const std::string& nonce) {
  (void)message_name(env);
  switch (env.msg_case()) {
    case signal::Envelope::kLogin: {
      auto& login = env.login();
      if (!same_secret(login.token(), server_token))
        break; // BAD_TOKEN: the seeds carry the right one
      if (login.node_id() != node_id_from_spki(login.public_key()))
        break; // ID_MISMATCH
      FUZZ_CHECK(looks_like_node_id(login.node_id()));
      // The login binds the TLS session: a fixed binding stands in for it.
      (void)verify_signature(
        login.public_key(),
        bound_login_challenge(fuzz_binding, nonce, login.node_id()),
        login.signature());
      break;
    }
    case signal::Envelope::kRegister: {
      auto& reg = env.register_();
      if (static_cast<size_t>(reg.names_size()) > max_names)
        break;
      std::vector<std::string> names;
      for (auto& name : reg.names()) {
        if (name.empty() || name.size() > max_name_length)
          break;
        names.push_back(name);
      }
      break;
    }
    case signal::Envelope::kLookup: {
      signal::Envelope out;
      auto res = out.mutable_lookup_result();
      res->set_request_id(env.lookup().request_id());
      res->set_name(env.lookup().name());
      (void)out.SerializeAsString();
      break;
    }
    case signal::Envelope::kSignal: {
      auto& sig = env.signal();
      if (sig.to().empty())
        break;
      signal::Envelope out;
      *out.mutable_signal() = sig;
      out.mutable_signal()->set_from("fuzzsender");
      auto routed = out.SerializeAsString();
      signal::Envelope back;
      FUZZ_CHECK(back.ParseFromString(routed));
      FUZZ_CHECK(back.signal().from() == "fuzzsender");
      break;
    }
    case signal::Envelope::kError:
      (void)fmt::format("node reports error {}: {}",
                        signal::ErrorCode_Name(env.error().code()),
                        env.error().text());
      break;
    default:
      break;
  }
}

void node_side(signal::Envelope& env) {
  switch (env.msg_case()) {
    case signal::Envelope::kHello:
      (void)bound_login_challenge(fuzz_binding, env.hello().nonce(),
                                  "fuzznode");
      break;
    case signal::Envelope::kLoginOk:
      (void)env.login_ok().observed_address();
      break;
    case signal::Envelope::kError: {
      auto& err = env.error();
      (void)fmt::format("server says {}: {}",
                        signal::ErrorCode_Name(err.code()), err.text());
      break;
    }
    case signal::Envelope::kLookupResult: {
      auto& res = env.lookup_result();
      std::vector<std::string> ids(res.node_ids().begin(),
                                   res.node_ids().end());
      break;
    }
    case signal::Envelope::kSignal: {
      auto& sig = *env.mutable_signal();
      if (sig.has_probe()) {
        signal::Envelope out;
        out.mutable_signal()->set_to(sig.from());
        out.mutable_signal()->mutable_probe()->set_nonce(sig.probe().nonce());
        (void)out.SerializeAsString();
        break;
      }
      // To the PEER MANAGER, which parses it back.
      auto serialized = sig.SerializeAsString();
      signal::Signal back;
      FUZZ_CHECK(back.ParseFromString(serialized));
      FUZZ_CHECK(back.session_id() == sig.session_id());
      break;
    }
    default:
      break;
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = fuzz::split_input(data, size);
  static const std::string nonces[2] = {fixed_nonce(false), fixed_nonce(true)};
  auto& nonce = nonces[in.flags & 1];

  frame_decoder dec;
  std::vector<std::string> frames;
  for (auto& p : in.pieces) {
    if (dec.feed(p.data.data(), p.data.size(), frames)
        == frame_decoder::status::too_large)
      break; // FRAME_TOO_LARGE: the connection closes
  }
  for (auto& payload : frames) {
    signal::Envelope env;
    if (!env.ParseFromString(payload))
      break; // BAD_FRAME: the connection closes
    server_side(env, nonce);
    node_side(env);
  }
  return 0;
}
