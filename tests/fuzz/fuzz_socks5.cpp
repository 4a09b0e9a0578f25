// SOCKS5 (actors/channel/protocol/socks5_sniffer.*): greeting, method
// selection and the CONNECT request, in any pieces; then the replies the
// channel may send for the outcome.
#include <cstdint>
#include <string>

#include "actors/channel/protocol/socks5_sniffer.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/sniff_checks.hpp"

using namespace p2proxy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = fuzz::split_input(data, size);
  socks5_sniffer sniffer;
  size_t used = 0;
  std::string sent;
  auto r = fuzz::sniff_all([&](std::string_view d) { return sniffer.feed(d); },
                           in, used, sent);
  (void)sniffer.timeout_reply();
  if (r.state == sniff_state::done) {
    FUZZ_CHECK(sniff::valid_resource_name(r.resource));
    // Optimistic data is the tail of what was sent.
    FUZZ_CHECK(r.forward.size() <= sent.size());
    FUZZ_CHECK(
      sent.compare(sent.size() - r.forward.size(), r.forward.size(), r.forward)
      == 0);
    (void)sniffer.requested_port();
    for (auto why : fuzz::all_open_failures)
      FUZZ_CHECK(sniffer.failure_reply(why, "fuzz").size() == 10);
  }
  return 0;
}
