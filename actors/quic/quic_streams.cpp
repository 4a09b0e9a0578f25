#include "actors/quic/quic_connection_impl.hpp"

namespace p2proxy::quic_detail {

int64_t connection::open_stream() {
  if (!handshake_done_ || closed_)
    return -1;
  int64_t id = -1;
  auto s = std::make_unique<stream>(-1);
  if (ngtcp2_conn_open_bidi_stream(conn_, &id, s.get()) != 0)
    return -1;
  s->id = id;
  streams_.emplace(id, std::move(s));
  return id;
}

size_t connection::write_stream(int64_t id, const uint8_t* data, size_t size,
                                bool fin) {
  auto* s = find(id);
  if (s == nullptr || closed_ || s->closed || s->write_shut || s->local_reset
      || s->fin_queued)
    return 0;
  auto room = cfg_.stream_send_buffer > s->tx.unacked()
                ? cfg_.stream_send_buffer - s->tx.unacked()
                : 0;
  auto take = std::min<size_t>(size, room);
  s->tx.append(data, take);
  if (take < size)
    s->want_writable = true;
  else if (fin)
    s->fin_queued = true;
  schedule(*s);
  return take;
}

void connection::consume(int64_t id, size_t size) {
  if (conn_ == nullptr || closed_ || size == 0)
    return;
  // Both are plain bookkeeping in ngtcp2 and allowed inside callbacks; the
  // MAX_STREAM_DATA / MAX_DATA frames go out with the next write().
  ngtcp2_conn_extend_max_stream_offset(conn_, id, size);
  ngtcp2_conn_extend_max_offset(conn_, size);
}

void connection::reset_stream(int64_t id, uint64_t app_error) {
  auto* s = find(id);
  if (s == nullptr || closed_ || s->closed || s->local_reset)
    return;
  s->local_reset = true;
  s->want_writable = false;
  if (depth_ > 0)
    deferred_resets_.emplace_back(id, app_error);
  else
    ngtcp2_conn_shutdown_stream(conn_, id, app_error);
}

void connection::stop_sending(int64_t id, uint64_t app_error) {
  auto* s = find(id);
  if (s == nullptr || closed_ || s->closed || s->local_reset)
    return;
  if (depth_ > 0)
    deferred_stops_.emplace_back(id, app_error);
  else
    ngtcp2_conn_shutdown_stream_read(conn_, id, app_error);
}

size_t connection::unacked(int64_t id) const {
  auto i = streams_.find(id);
  return i == streams_.end() ? 0 : i->second->tx.unacked();
}

// Our record of stream `id`, created (and announced) for a peer's stream
// the first time any frame of it shows up.
stream* connection::touch(int64_t id) {
  if (auto* s = find(id))
    return s;
  if (ngtcp2_conn_is_local_stream(conn_, id))
    return nullptr;
  // A client may see the server's first stream before HANDSHAKE_DONE (that
  // packet was lost or came later). The server opens streams only after it
  // accepted us, so the handshake is as good as confirmed: say so first.
  if (!handshake_done_ && binding_.verified) {
    handshake_done_ = true;
    handshake_event_ = false;
    events_.on_handshake_done();
  }
  auto s = std::make_unique<stream>(id);
  auto* p = s.get();
  streams_.emplace(id, std::move(s));
  ngtcp2_conn_set_stream_user_data(conn_, id, p);
  events_.on_stream_open(id);
  return p;
}

int connection::on_recv_stream_data(ngtcp2_conn*, uint32_t flags, int64_t id,
                                    uint64_t, const uint8_t* data, size_t len,
                                    void* ud, void*) {
  auto* c = self(ud);
  return c->guarded([&] {
    if (c->touch(id) == nullptr)
      return;
    c->events_.on_stream_data(id, data, len,
                              (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
  });
}

int connection::on_acked_stream_data(ngtcp2_conn*, int64_t id, uint64_t offset,
                                     uint64_t len, void* ud, void*) {
  auto* c = self(ud);
  auto* s = c->find(id);
  if (s == nullptr)
    return 0;
  s->tx.ack(offset, len);
  // Wake the owner once a quarter of the buffer is free, not per ACK.
  auto cap = c->cfg_.stream_send_buffer;
  if (s->want_writable && s->tx.unacked() + cap / 4 <= cap) {
    s->want_writable = false;
    c->writable_.push_back(id);
  }
  return 0;
}

int connection::on_stream_open(ngtcp2_conn*, int64_t id, void* ud) {
  auto* c = self(ud);
  return c->guarded([&] { c->touch(id); });
}

int connection::on_stream_close(ngtcp2_conn* conn, uint32_t flags, int64_t id,
                                uint64_t app_error, void* ud, void*) {
  auto* c = self(ud);
  auto* s = c->find(id);
  if (s == nullptr)
    return 0;
  c->lost_in_closed_streams_ += ngtcp2_conn_get_stream_loss_count(conn, id);
  auto rc = 0;
  // A STOP_SENDING from the peer has no callback in 0.12; its code shows up
  // here, and the owner still needs to hear that the peer gave up.
  if ((flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)
      && !s->reset_reported && !s->local_reset) {
    s->reset_reported = true;
    rc = c->guarded([&] { c->events_.on_stream_reset(id, app_error); });
  }
  s->closed = true;
  c->closed_streams_.push_back(id);
  if (!ngtcp2_conn_is_local_stream(conn, id))
    ngtcp2_conn_extend_max_streams_bidi(conn, 1);
  return rc;
}

int connection::on_stream_reset(ngtcp2_conn*, int64_t id, uint64_t,
                                uint64_t app_error, void* ud, void*) {
  auto* c = self(ud);
  return c->guarded([&] {
    auto* s = c->touch(id);
    if (s == nullptr || s->reset_reported || s->local_reset)
      return;
    s->reset_reported = true;
    c->events_.on_stream_reset(id, app_error);
  });
}

int connection::on_extend_max_stream_data(ngtcp2_conn*, int64_t id, uint64_t,
                                          void* ud, void*) {
  auto* c = self(ud);
  if (auto* s = c->find(id); s != nullptr && s->blocked) {
    s->blocked = false;
    c->schedule(*s);
  }
  return 0;
}

} // namespace p2proxy::quic_detail
