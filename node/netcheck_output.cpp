// netcheck's two renderings of one netcheck_result (docs/netcheck.md).
#include <iterator>

#include <fmt/format.h>

#include "actors/common/json.hpp"
#include "node/netcheck.hpp"

namespace p2proxy {

namespace {

std::string q(const std::string& s) {
  return json_quote(s);
}

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i)
    out += (i > 0 ? ", " : "") + q(items[i]);
  return out + "]";
}

bool relay_works(const netcheck_result& r) {
  for (auto& t : r.relay)
    if (t.allocated)
      return true;
  return false;
}

// Why the node trusted the server, and what to do when that is first use.
std::string trust_explained(const std::string& how) {
  if (how == "first use")
    return "trusted on first use and stored beside the node key; set [signal] "
           "server_id to pin it";
  if (how == "stored")
    return "the id stored on an earlier first use; set [signal] server_id to "
           "pin it";
  if (how == "pinned")
    return "pinned by [signal] server_id";
  if (how == "certificate")
    return "its certificate verified for the server's name";
  return how;
}

} // namespace

std::string netcheck_json(const netcheck_result& r) {
  std::string out = "{\n";
  auto add = [&](const std::string& key, const std::string& value) {
    fmt::format_to(std::back_inserter(out), "  {}: {},\n", q(key), value);
  };
  add("signal",
      fmt::format("{{\"server\": {}, \"ok\": {}, \"error\": {}, "
                  "\"observedAddress\": {}, \"serverId\": {}, "
                  "\"serverTrust\": {}}}",
                  q(r.signal_server), r.signal_error.empty() ? "true" : "false",
                  q(r.signal_error), q(r.observed), q(r.server_id),
                  q(r.server_trust)));
  add("udp", q(r.udp));
  add("mapping", q(r.mapping));
  add("mappingNote", q(r.mapping_note));
  add("publicAddress",
      q(r.public_addresses.empty() ? "" : r.public_addresses.front()));
  add("publicAddresses", quoted_list(r.public_addresses));
  add("localAddress", q(r.local_address));
  add("behindNat", r.behind_nat ? "true" : "false");
  std::string stun = "[";
  for (size_t i = 0; i < r.stun.size(); ++i) {
    auto& a = r.stun[i];
    fmt::format_to(std::back_inserter(stun),
                   "{}{{\"server\": {}, \"answered\": {}, \"mapped\": {}, "
                   "\"rttMs\": {:.1f}, \"error\": {}}}",
                   i > 0 ? ", " : "", q(a.server.to_string()),
                   a.answered ? "true" : "false", q(a.mapped), a.rtt_ms,
                   q(a.error));
  }
  add("stun", stun + "]");
  add("ipv6", fmt::format("{{\"status\": {}, \"addresses\": {}}}", q(r.ipv6),
                          quoted_list(r.ipv6_addresses)));
  std::string servers = "[";
  for (size_t i = 0; i < r.relay.size(); ++i) {
    auto& t = r.relay[i];
    fmt::format_to(
      std::back_inserter(servers),
      "{}{{\"server\": {}, \"transport\": {}, \"reachable\": {}, "
      "\"allocated\": {}, \"relayedAddress\": {}, \"rttMs\": "
      "{:.1f}, \"errorCode\": {}, \"error\": {}}}",
      i > 0 ? ", " : "", q(t.server.to_string()), t.tcp ? "\"tcp\"" : "\"udp\"",
      t.reachable ? "true" : "false", t.allocated ? "true" : "false",
      q(t.relayed), t.rtt_ms, t.error_code, q(t.error));
  }
  add("relay", fmt::format("{{\"available\": {}, \"source\": {}, "
                           "\"credentialsExpire\": {}, \"servers\": {}]}}",
                           relay_works(r) ? "true" : "false", q(r.relay_source),
                           q(r.relay_expires), servers));
  std::string paths = "[";
  for (size_t i = 0; i < r.paths.size(); ++i)
    fmt::format_to(std::back_inserter(paths),
                   "{}{{\"peer\": {}, \"path\": {}}}", i > 0 ? ", " : "",
                   q(r.paths[i].peer), q(r.paths[i].path));
  out += fmt::format("  \"paths\": {}]\n}}\n", paths);
  return out;
}

std::string netcheck_text(const netcheck_result& r) {
  std::string out;
  auto line = [&](const std::string& label, const std::string& text) {
    fmt::format_to(std::back_inserter(out), "{:<28}{}\n", label, text);
  };
  line(
    "signal server",
    r.signal_error.empty()
      ? fmt::format("{}: logged in (seen as {})", r.signal_server, r.observed)
      : fmt::format("{}: {}", r.signal_server, r.signal_error));
  if (!r.server_id.empty())
    line("server id",
         fmt::format("{} ({})", r.server_id, trust_explained(r.server_trust)));
  line("UDP", r.udp == "works"     ? "works"
              : r.udp == "blocked" ? "blocked (no STUN answer)"
                                   : "unknown (no STUN server to ask)");
  for (auto& a : r.stun)
    line("  STUN " + a.server.to_string(),
         a.answered ? fmt::format("saw {} ({:.1f} ms)", a.mapped, a.rtt_ms)
                    : a.error);
  if (!r.public_addresses.empty())
    line("public address",
         fmt::format("{}{}", fmt::join(r.public_addresses, ", "),
                     r.behind_nat
                       ? fmt::format(" (behind NAT; local {})", r.local_address)
                       : " (no NAT: the local address)"));
  line("mapping", r.mapping_note.empty()
                    ? r.mapping
                    : fmt::format("{} ({})", r.mapping, r.mapping_note));
  line("IPv6",
       r.ipv6_addresses.empty()
         ? std::string{"no global IPv6 address"}
         : fmt::format("{} ({})", fmt::join(r.ipv6_addresses, ", "), r.ipv6));
  if (r.relay.empty())
    line("relay", "none configured here or handed out by the server");
  for (auto& t : r.relay) {
    auto what
      = t.allocated
          ? fmt::format("works, relay {} ({:.1f} ms)", t.relayed, t.rtt_ms)
        : t.reachable
          ? fmt::format("answers ({:.1f} ms) but: {}", t.rtt_ms, t.error)
          : fmt::format("unreachable: {}", t.error);
    line(
      fmt::format("relay {}/{}", t.server.to_string(), t.tcp ? "TCP" : "UDP"),
      what);
  }
  if (!r.relay_expires.empty())
    line("", fmt::format("(credentials from the server, valid until {})",
                         r.relay_expires));
  out += "expected path with a peer behind...\n";
  for (auto& p : r.paths)
    fmt::format_to(std::back_inserter(out), "  {:<36}{}\n", p.peer + ":",
                   p.path);
  return out;
}

} // namespace p2proxy
