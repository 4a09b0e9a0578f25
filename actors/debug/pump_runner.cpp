#include "actors/debug/pump_runner.hpp"

#include <caf/all.hpp>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/json.hpp"
#include "actors/debug/stream_pump.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

namespace {

std::string row_json(const std::string& serialized_row) {
  admin::SessionStatus row;
  row.ParseFromString(serialized_row);
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(row, &out, opts);
  return out.empty() ? "{}" : out;
}

} // namespace

caf::behavior pump_runner(caf::stateful_actor<pump_runner_state>* self,
                          const caf::actor& manager) {
  return {
    [=](pump_atom, const std::string& peer, const std::string& resource,
        uint64_t bytes, uint32_t streams) {
      auto rp = self->make_response_promise<std::string>();
      self->request(manager, std::chrono::seconds(60), open_atom::value, peer)
        .then(
          [=](caf::actor session) mutable {
            auto results
              = std::make_shared<std::vector<std::shared_ptr<pump_result>>>();
            auto left = std::make_shared<uint32_t>(streams);
            auto started = std::chrono::steady_clock::now();
            auto prom = std::make_shared<decltype(rp)>(rp);
            self->set_down_handler([=](caf::down_msg&) {
              if (--*left > 0)
                return;
              auto secs = std::chrono::duration<double>(
                            std::chrono::steady_clock::now() - started)
                            .count();
              uint64_t sent = 0, received = 0;
              uint32_t ok = 0;
              std::string error;
              for (auto& r : *results) {
                sent += r->sent;
                received += r->received;
                if (r->error.empty() && r->sent_sha256 == r->received_sha256
                    && r->received == r->expected)
                  ++ok;
                else if (error.empty())
                  error = r->error.empty() ? "hash mismatch" : r->error;
              }
              auto& first = *results->front();
              self->request(session, std::chrono::seconds(5), get_atom::value)
                .then(
                  [=](const std::string& row) {
                    prom->deliver(fmt::format(
                      "{{\"sent\":{},\"received\":{},\"sentSha256\":\"{}\","
                      "\"receivedSha256\":\"{}\",\"streams\":{},"
                      "\"streamsOk\":{},\"seconds\":{:.3f},\"error\":{},"
                      "\"session\":{}}}",
                      sent, received, first.sent_sha256, first.received_sha256,
                      streams, ok, secs, json_quote(error), row_json(row)));
                    self->quit();
                  },
                  [=](caf::error&) {
                    prom->deliver(fmt::format(
                      "{{\"sent\":{},\"received\":{},\"sentSha256\":\"{}\","
                      "\"receivedSha256\":\"{}\",\"streams\":{},"
                      "\"streamsOk\":{},\"seconds\":{:.3f},\"error\":{}}}",
                      sent, received, first.sent_sha256, first.received_sha256,
                      streams, ok, secs, json_quote(error)));
                    self->quit();
                  });
            });
            for (uint32_t i = 0; i < streams; ++i) {
              results->push_back(std::make_shared<pump_result>());
              auto p = self->spawn(stream_pump, session, resource, bytes,
                                   results->back());
              self->monitor(p);
            }
          },
          [=](caf::error& err) mutable {
            rp.deliver(err);
            self->quit();
          });
      return rp;
    },
  };
}

} // namespace p2proxy
