// STREAM PUMP (tests, benchmarks, and the admin port's debug pump): opens a
// stream on a PEER SESSION to a test resource, sends `bytes` of pseudo-random
// data as fast as the session's credit allows, and hashes what comes back. With
// "echo" the SHA-256 of what was sent must equal the SHA-256 of what came back;
// with "source" the SHA-256 of the pattern the source must have sent.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include <caf/all.hpp>
#include <gnutls/crypto.h>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/preamble.hpp"
#include "actors/debug/test_resources.hpp"
#include "proto/tunnel.pb.h"

namespace p2proxy {

struct pump_result {
  bool done = false;
  std::string error;
  std::string open_result; // StreamOpenResult text or code
  uint64_t sent = 0;
  uint64_t received = 0;
  uint64_t expected = 0;   // what must come back: echo = sent, source = asked
  std::string sent_sha256; // of what must come back (nothing for discard)
  std::string received_sha256;
  std::chrono::steady_clock::time_point started, finished;
};

struct pump_state {
  static inline const char* name = "stream_pump";
  session_streams_actor session; // (the PEER SESSION, typed)
  int64_t id = -1;
  uint64_t to_send = 0;
  uint64_t credit = 0;
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  bool fin_sent = false;
  bool result_read = false;
  bool source = false;    // "source": expect the pattern, send nothing
  bool discard = false;   // "discard": expect nothing back
  preamble_reader result; // the StreamOpenResult as it arrives
  gnutls_hash_hd_t tx = nullptr;
  gnutls_hash_hd_t rx = nullptr;
  std::shared_ptr<pump_result> res;

  ~pump_state() {
    unsigned char out[32];
    if (tx)
      gnutls_hash_deinit(tx, out);
    if (rx)
      gnutls_hash_deinit(rx, out);
  }
};

inline std::string hex(const unsigned char* d, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += digits[d[i] >> 4];
    s += digits[d[i] & 15];
  }
  return s;
}

inline void pump_finish(caf::stateful_actor<pump_state>* self,
                        std::string error) {
  auto& st = self->state;
  if (st.res->done)
    return;
  unsigned char out[32];
  gnutls_hash_deinit(st.tx, out);
  st.tx = nullptr;
  st.res->sent_sha256 = hex(out, 32);
  gnutls_hash_deinit(st.rx, out);
  st.rx = nullptr;
  st.res->received_sha256 = hex(out, 32);
  st.res->error = std::move(error);
  st.res->finished = std::chrono::steady_clock::now();
  st.res->done = true;
  self->quit();
}

inline void pump_send(caf::stateful_actor<pump_state>* self) {
  auto& st = self->state;
  constexpr uint64_t chunk = 64 * 1024;
  while (!st.fin_sent && st.credit > 0 && st.result_read) {
    auto n = std::min({st.credit, st.to_send, chunk});
    std::string data(n, '\0');
    // xorshift64, eight bytes at a time: cheap next to the transfer.
    auto* out = data.data();
    for (uint64_t i = 0; i < n; i += 8) {
      st.rng ^= st.rng << 13;
      st.rng ^= st.rng >> 7;
      st.rng ^= st.rng << 17;
      std::memcpy(out + i, &st.rng, std::min<uint64_t>(8, n - i));
    }
    if (!st.discard) {
      gnutls_hash(st.tx, data.data(), data.size());
      st.res->expected += n;
    }
    st.to_send -= n;
    st.credit -= n;
    st.res->sent += n;
    st.fin_sent = st.to_send == 0;
    self->send(st.session, stream_write_atom::value, st.id, std::move(data),
               st.fin_sent);
  }
}

inline caf::behavior stream_pump(caf::stateful_actor<pump_state>* self,
                                 const caf::actor& session,
                                 const std::string& resource, uint64_t bytes,
                                 const std::shared_ptr<pump_result>& res) {
  auto& st = self->state;
  st.session = caf::actor_cast<session_streams_actor>(session);
  st.to_send = bytes;
  st.res = res;
  res->started = std::chrono::steady_clock::now();
  gnutls_hash_init(&st.tx, GNUTLS_DIG_SHA256);
  gnutls_hash_init(&st.rx, GNUTLS_DIG_SHA256);
  self
    ->request(st.session, caf::infinite, stream_open_atom::value,
              caf::actor{self})
    .then(
      [=](int64_t id) {
        auto& st = self->state;
        st.id = id;
        tunnel::StreamOpen open;
        open.set_resource(resource);
        open.set_protocol("test");
        open.set_source_bytes(resource == "source" ? st.to_send : 0);
        st.discard = resource == "discard";
        if (resource == "source") {
          st.source = true;
          st.res->expected = st.to_send;
          st.to_send = 0;
        }
        self->send(self->state.session, stream_write_atom::value, id,
                   encode_frame(open.SerializeAsString()), false);
        st.credit -= std::min<uint64_t>(st.credit, 4 + open.ByteSizeLong());
      },
      [=](caf::error& err) { pump_finish(self, error_text(err)); });
  return {
    [=](stream_credit_atom, int64_t, uint64_t n) {
      self->state.credit += n;
      pump_send(self);
    },
    [=](stream_data_atom, int64_t id, std::string& bytes, bool fin) {
      auto& st = self->state;
      self->send(st.session, stream_consumed_atom::value, id,
                 static_cast<uint64_t>(bytes.size()));
      if (!st.result_read) {
        switch (st.result.feed(bytes)) {
          case preamble_reader::status::need_more:
            return;
          case preamble_reader::status::oversize:
            pump_finish(self, "the StreamOpenResult exceeds its limit");
            return;
          case preamble_reader::status::complete:
            break;
        }
        tunnel::StreamOpenResult r;
        r.ParseFromString(st.result.payload());
        st.res->open_result = tunnel::StreamOpenResult::Code_Name(r.code());
        if (r.code() != tunnel::StreamOpenResult::OK) {
          pump_finish(self, "refused: " + r.text());
          return;
        }
        bytes = std::move(st.result.rest());
        st.result_read = true;
        if (st.to_send == 0 && !st.fin_sent) {
          st.fin_sent = true;
          self->send(st.session, stream_write_atom::value, st.id, std::string{},
                     true);
        }
        pump_send(self);
      }
      gnutls_hash(st.rx, bytes.data(), bytes.size());
      if (st.source) {
        // What the source must have sent at these offsets.
        std::string want(bytes.size(), '\0');
        for (size_t i = 0; i < want.size(); ++i)
          want[i] = source_pattern(st.res->received + i);
        gnutls_hash(st.tx, want.data(), want.size());
      }
      st.res->received += bytes.size();
      if (fin)
        pump_finish(self, "");
    },
    [=](stream_reset_atom, int64_t, uint64_t code) {
      pump_finish(self,
                  "stream reset by the peer, code " + std::to_string(code));
    },
    [=](stream_closed_atom, int64_t) {
      if (!self->state.res->done)
        pump_finish(self, "stream closed before its FIN arrived");
    },
    [=](session_down_atom, const caf::error& why) {
      pump_finish(self, "session down: " + error_text(why));
    },
  };
}

} // namespace p2proxy
