// HTTP/1.x (actors/channel/protocol/http_sniffer.*): the sniffer that routes
// a client's first request, the request rewriter that frames and rewrites
// every later request of the connection (client side: routing and the
// /r/<name> prefix; exporting side: Host set to the target), and route
// _http_request itself.
//
// flags: bit 0 = the listener has a default resource ("web"); bit 1 = the
// exporting-side rewriter also routes (resource set); bit 2 = feed the
// rewriters only after the sniff (else from the first byte, as the channel
// does). Cutting the same bytes differently must not change what the
// rewriters forward.
#include <cstdint>
#include <string>

#include "actors/channel/protocol/http_sniffer.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/sniff_checks.hpp"

using namespace p2proxy;

namespace {

struct rewrite_output {
  std::string out;
  bool stopped = false;
  std::string stop_reply;
};

rewrite_output rewrite(const http_rewrite_config& cfg, const fuzz::input& in,
                       size_t from) {
  http_request_rewriter rw{cfg};
  rewrite_output r;
  for (size_t i = from; i < in.pieces.size(); ++i) {
    auto& p = in.pieces[i];
    if (p.dir)
      continue;
    if (rw.feed(p.data, r.out) == http_request_rewriter::status::stop) {
      FUZZ_CHECK(!rw.stop_reply().empty());
      for (char c : rw.stop_reason())
        FUZZ_CHECK(c >= 0x20 && c < 0x7f);
      // Stopped stays stopped, and forwards nothing more.
      auto before = r.out.size();
      FUZZ_CHECK(rw.feed(p.data, r.out) == http_request_rewriter::status::stop);
      FUZZ_CHECK(r.out.size() == before);
      r.stopped = true;
      r.stop_reply = rw.stop_reply();
      return r;
    }
  }
  (void)rw.upgraded();
  (void)rw.requests();
  return r;
}

/// Runs the rewriter on the pieces from `from` on, and again on the same
/// bytes in one piece: the output must not depend on the cuts.
void run_rewriter(const http_rewrite_config& cfg, const fuzz::input& in,
                  size_t from) {
  auto a = rewrite(cfg, in, from);
  fuzz::input rest;
  for (size_t i = from; i < in.pieces.size(); ++i)
    if (!in.pieces[i].dir)
      rest.pieces.push_back(in.pieces[i]);
  std::vector<std::string> storage;
  auto b = rewrite(cfg, fuzz::merged(rest, storage), 0);
  FUZZ_CHECK(a.stopped == b.stopped);
  FUZZ_CHECK(a.out == b.out);
  FUZZ_CHECK(a.stop_reply == b.stop_reply);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = fuzz::split_input(data, size);
  std::string def = (in.flags & 1) ? "web" : "";

  http_sniffer sniffer{def};
  size_t used = 0;
  std::string sent;
  auto r = fuzz::sniff_all([&](std::string_view d) { return sniffer.feed(d); },
                           in, used, sent);
  (void)sniffer.timeout_reply();
  std::string resource;
  if (r.state == sniff_state::done) {
    FUZZ_CHECK(fuzz::forwards_all(r.forward, sent));
    FUZZ_CHECK(sniff::valid_resource_name(r.resource));
    resource = r.resource;
    for (auto why : fuzz::all_open_failures)
      FUZZ_CHECK(!sniffer.failure_reply(why, "fuzz").empty());
  }
  size_t from = (in.flags & 4) ? used : 0;

  // The listening side: every request routed like the first.
  if (!resource.empty()) {
    http_rewrite_config cfg;
    cfg.resource = resource;
    cfg.default_resource = def;
    run_rewriter(cfg, in, from);
  }
  // The exporting side: Host becomes the target's.
  http_rewrite_config cfg;
  cfg.target_authority = "192.168.1.10:8080";
  if (in.flags & 2) {
    cfg.resource = resource.empty() ? "web" : resource;
    cfg.default_resource = def;
  }
  run_rewriter(cfg, in, from);

  // The router on its own: the first piece as a path, the second as a host.
  if (in.pieces.size() >= 2) {
    auto route = route_http_request(in.pieces[0].data, in.pieces[1].data, def);
    if (route.how == http_route::kind::prefix)
      FUZZ_CHECK(route.strip <= in.pieces[0].data.size());
  }
  return 0;
}
