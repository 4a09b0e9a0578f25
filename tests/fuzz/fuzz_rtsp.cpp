// RTSP (actors/channel/protocol/rtsp_sniffer.*, rtsp_rewriter.*): the sniffer
// on the client's first request, then the rewriter on both directions of the
// connection — client → server pieces (dir 0) through from_client, server →
// client pieces (dir 1) through from_server, in the order the input gives —
// as the exporting node runs it. Cutting the same bytes differently must not
// change what comes out.
//
// flags: bit 0 = the listener has a default resource ("cam1"); bit 1 = keep
// the resource in paths (strip_resource off); bit 2 = the client authority is
// configured rather than learned from the first URL.
#include <algorithm>
#include <cstdint>
#include <string>

#include "actors/channel/protocol/rtsp_rewriter.hpp"
#include "actors/channel/protocol/rtsp_sniffer.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/sniff_checks.hpp"

using namespace p2proxy;

namespace {

struct stream_output {
  std::string to_server, to_client;
  bool failed = false;
  size_t to_client_before_failure = 0;
};

/// Both directions through `rw`, in the input's order, up to the first
/// failure (where the channel closes).
stream_output run_stream(rtsp_rewriter& rw, const fuzz::input& in) {
  stream_output out;
  for (auto& p : in.pieces) {
    out.to_client_before_failure = out.to_client.size();
    auto s = p.dir ? rw.from_server(p.data, out.to_client)
                   : rw.from_client(p.data, out.to_server, out.to_client);
    if (s == rtsp_rewriter::status::failed) {
      out.failed = true;
      for (char c : rw.failure_reason())
        FUZZ_CHECK(c >= 0x20 && c < 0x7f);
      // A failed direction stays failed (the channel closes on the first
      // failure, so the other direction's state does not matter).
      std::string x, y;
      FUZZ_CHECK(
        (p.dir ? rw.from_server(p.data, x) : rw.from_client(p.data, x, y))
        == rtsp_rewriter::status::failed);
      FUZZ_CHECK(x.empty() && y.empty());
      break;
    }
  }
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = fuzz::split_input(data, size);
  std::string def = (in.flags & 1) ? "cam1" : "";

  rtsp_sniffer sniffer{def};
  size_t used = 0;
  std::string sent;
  auto r = fuzz::sniff_all([&](std::string_view d) { return sniffer.feed(d); },
                           in, used, sent);
  (void)sniffer.timeout_reply();
  if (r.state == sniff_state::done) {
    FUZZ_CHECK(fuzz::forwards_all(r.forward, sent));
    FUZZ_CHECK(sniff::valid_resource_name(r.resource));
    for (auto why : fuzz::all_open_failures)
      FUZZ_CHECK(!sniffer.failure_reply(why, "fuzz").empty());
  }

  rtsp_url_map map;
  map.server_authority = "192.168.1.10:554";
  map.resource = r.state == sniff_state::done ? r.resource : "cam1";
  map.strip_resource = (in.flags & 2) == 0;
  if (in.flags & 4)
    map.client_authority = "127.0.0.1:8554";
  else if (r.state == sniff_state::done)
    map.client_authority = sniffer.client_authority();
  rtsp_rewriter rw{map};
  auto a = run_stream(rw, in);
  // The same bytes cut differently give the same bytes out.
  std::vector<std::string> storage;
  rtsp_rewriter again{map};
  auto b = run_stream(again, fuzz::merged(in, storage));
  FUZZ_CHECK(a.failed == b.failed);
  FUZZ_CHECK(a.to_server == b.to_server);
  if (!a.failed) {
    FUZZ_CHECK(a.to_client == b.to_client);
  } else {
    // The error reply carries the request's CSeq when it has been read
    // (sniff::find_header on a head too large to parse): best effort, so
    // it depends on the cuts; what came before it does not.
    auto n = std::min(a.to_client_before_failure, b.to_client_before_failure);
    FUZZ_CHECK(a.to_client.compare(0, n, b.to_client, 0, n) == 0);
  }
  // The URL mapping on its own, both ways.
  for (auto& p : in.pieces) {
    std::string out;
    rw.url_to_server(p.data, out);
    rw.url_to_client(p.data, out);
    sniff::rtsp_url_parts parts;
    (void)sniff::split_rtsp_url(p.data, parts);
  }
  return 0;
}
