// The PROTOCOL ADAPTERS (actors/channel/protocol/adapter.*) as a CHANNEL
// drives them, both sides and both directions:
//   client side (a LISTENER's protocol): the sniff on the client's first
//     pieces, then client → stream (dir 0, to_stream) and stream → client
//     (dir 1, to_local), with every reply it can be asked for;
//   exporting side (an export's protocol): stream → target (dir 0, to_local,
//     which may answer on the stream) and target → stream (dir 1,
//     to_stream).
// A direction that said `stop` gets nothing more, as in the channel.
//
// flags: bits 0-1 = protocol (tcp, socks5, http, rtsp); bit 2 = exporting
// side; bit 3 = the listener has a default resource ("cam1").
#include <cstdint>
#include <memory>
#include <string>

#include "actors/channel/protocol/adapter.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/sniff_checks.hpp"

using namespace p2proxy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* protocols[] = {"tcp", "socks5", "http", "rtsp"};
  auto in = fuzz::split_input(data, size);
  std::string protocol = protocols[in.flags & 3];
  bool exporting = (in.flags & 4) != 0;
  std::string def = (in.flags & 8) ? "cam1" : "";

  auto a = exporting ? make_export_adapter(protocol, "cam1", "192.168.1.10:554")
                     : make_client_adapter(protocol, def);
  (void)a->name();
  size_t next = 0;
  if (!exporting && a->sniffs()) {
    std::string sent;
    auto r = fuzz::sniff_all([&](std::string_view d) { return a->sniff(d); },
                             in, next, sent);
    (void)a->timeout_reply();
    if (r.state != sniff_state::done)
      return 0;
    for (auto why : fuzz::all_open_failures)
      (void)a->failure_reply(why, "fuzz");
    (void)a->success_reply();
  }
  bool up_open = true, down_open = true;
  std::string to_local, to_stream;
  for (; next < in.pieces.size(); ++next) {
    auto& p = in.pieces[next];
    bool stream_to_local = exporting ? !p.dir : p.dir;
    if (stream_to_local && down_open) {
      if (a->to_local(p.data, to_local, to_stream)
          == protocol_adapter::verdict::stop) {
        down_open = false;
        (void)a->stop_reason();
      }
    } else if (!stream_to_local && up_open) {
      auto before = to_stream.size();
      if (a->to_stream(p.data, to_stream) == protocol_adapter::verdict::stop) {
        up_open = false;
        (void)a->stop_reply();
        (void)a->stop_reason();
      }
      if (protocol == "tcp")
        FUZZ_CHECK(to_stream.compare(before, std::string::npos, p.data) == 0);
    }
  }
  if (!a->rewrites_to_local() && protocol == "tcp")
    FUZZ_CHECK(to_local.size() <= size);
  return 0;
}
