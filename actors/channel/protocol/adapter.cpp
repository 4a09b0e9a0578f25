#include "actors/channel/protocol/adapter.hpp"

#include <optional>
#include <utility>

#include "actors/channel/protocol/http_sniffer.hpp"
#include "actors/channel/protocol/rtsp_media.hpp"
#include "actors/channel/protocol/rtsp_rewriter.hpp"
#include "actors/channel/protocol/rtsp_sniffer.hpp"
#include "actors/channel/protocol/socks5_sniffer.hpp"

namespace p2proxy {

// -- the identity ("tcp")
// -------------------------------------------------------

protocol_adapter::~protocol_adapter() = default;

bool protocol_adapter::sniffs() const {
  return false;
}

sniff_result protocol_adapter::sniff(std::string_view) {
  sniff_result r;
  r.state = sniff_state::failed;
  r.error = sniff_error::unsupported;
  r.reason = "this protocol names no resource";
  return r;
}

std::string protocol_adapter::timeout_reply() const {
  return {};
}

std::string protocol_adapter::success_reply() const {
  return {};
}

std::string protocol_adapter::failure_reply(open_failure,
                                            std::string_view) const {
  return {};
}

protocol_adapter::verdict protocol_adapter::to_stream(std::string_view in,
                                                      std::string& out) {
  out.append(in);
  return verdict::ok;
}

protocol_adapter::verdict protocol_adapter::to_local(std::string_view in,
                                                     std::string& to_local,
                                                     std::string&) {
  to_local.append(in);
  return verdict::ok;
}

bool protocol_adapter::rewrites_to_local() const {
  return false;
}

std::string protocol_adapter::stop_reply() const {
  return {};
}

std::string protocol_adapter::stop_reason() const {
  return {};
}

std::string protocol_adapter::take_local_reply() {
  return {};
}

bool protocol_adapter::local_at_boundary() const {
  return true;
}

namespace {

class tcp_adapter : public protocol_adapter {
public:
  const char* name() const override {
    return "TCP";
  }
};

// -- client side
// ----------------------------------------------------------------

/// A client protocol whose first request names the resource: the sniff,
/// and the replies only the sniffer can make (it knows the request).
template <class Sniffer>
class sniffing_adapter : public protocol_adapter {
public:
  template <class... Ts>
  explicit sniffing_adapter(const char* name, Ts&&... xs)
    : name_(name), sniffer_(std::forward<Ts>(xs)...) {}
  const char* name() const override {
    return name_;
  }
  bool sniffs() const override {
    return true;
  }
  sniff_result sniff(std::string_view data) override {
    return sniffer_.feed(data);
  }
  std::string timeout_reply() const override {
    return sniffer_.timeout_reply();
  }
  std::string failure_reply(open_failure why,
                            std::string_view text) const override {
    return sniffer_.failure_reply(why, text);
  }

private:
  const char* name_;
  Sniffer sniffer_;
};

class socks5_adapter : public sniffing_adapter<socks5_sniffer> {
public:
  socks5_adapter() : sniffing_adapter("SOCKS5") {}
  std::string success_reply() const override {
    return socks5_reply(socks5_reply_code::succeeded);
  }
};

/// Every request of the connection goes through an http_request_rewriter
/// routed like the first: one for another resource stops the connection.
class http_client_adapter : public sniffing_adapter<http_sniffer> {
public:
  explicit http_client_adapter(std::string default_resource)
    : sniffing_adapter("HTTP", default_resource),
      default_resource_(std::move(default_resource)) {}
  sniff_result sniff(std::string_view data) override {
    auto r = sniffing_adapter::sniff(data);
    if (r.state == sniff_state::done) {
      http_rewrite_config rc;
      rc.resource = r.resource;
      rc.default_resource = default_resource_;
      rewriter_.emplace(std::move(rc));
    }
    return r;
  }
  verdict to_stream(std::string_view in, std::string& out) override {
    if (!rewriter_)
      return protocol_adapter::to_stream(in, out);
    if (stopped_)
      return verdict::stop;
    if (rewriter_->feed(in, out) == http_request_rewriter::status::stop) {
      stopped_ = true;
      return verdict::stop;
    }
    return verdict::ok;
  }
  std::string stop_reply() const override {
    return rewriter_ ? rewriter_->stop_reply() : std::string{};
  }
  std::string stop_reason() const override {
    return rewriter_ ? rewriter_->stop_reason() : std::string{};
  }

private:
  std::string default_resource_;
  std::optional<http_request_rewriter> rewriter_;
  bool stopped_ = false;
};

/// The listening node passes RTSP through (the exporting node rewrites the
/// URLs), except the Transport of SETUPs whose media go as datagrams.
class rtsp_client_adapter : public sniffing_adapter<rtsp_sniffer> {
public:
  rtsp_client_adapter(const std::string& default_resource, rtsp_media_io* io)
    : sniffing_adapter("RTSP", default_resource), io_(io) {}
  sniff_result sniff(std::string_view data) override {
    auto r = sniffing_adapter::sniff(data);
    if (r.state == sniff_state::done && io_ != nullptr) {
      rtsp_url_map map;
      map.rewrite_urls = false;
      rewriter_.emplace(std::move(map));
      media_.emplace(*io_);
      rewriter_->set_media(&*media_);
    }
    return r;
  }
  verdict to_stream(std::string_view in, std::string& out) override {
    if (!rewriter_)
      return protocol_adapter::to_stream(in, out);
    if (rewriter_->from_client(in, out, reply_) == rtsp_rewriter::status::ok)
      return verdict::ok;
    stop_reply_ = std::move(reply_);
    reply_.clear();
    return verdict::stop;
  }
  verdict to_local(std::string_view in, std::string& to_local,
                   std::string& to_stream) override {
    if (!rewriter_)
      return protocol_adapter::to_local(in, to_local, to_stream);
    return rewriter_->from_server(in, to_local) == rtsp_rewriter::status::ok
             ? verdict::ok
             : verdict::stop;
  }
  bool rewrites_to_local() const override {
    return io_ != nullptr;
  }
  std::string take_local_reply() override {
    return std::exchange(reply_, std::string{});
  }
  std::string stop_reply() const override {
    return stop_reply_;
  }
  std::string stop_reason() const override {
    return rewriter_ ? rewriter_->failure_reason() : std::string{};
  }

private:
  rtsp_media_io* io_;
  std::optional<rtsp_rewriter> rewriter_;
  std::optional<rtsp_listener_media> media_;
  std::string reply_, stop_reply_;
};

// -- export side
// ----------------------------------------------------------------

class rtsp_export_adapter : public protocol_adapter {
public:
  rtsp_export_adapter(rtsp_url_map map, rtsp_media_io* io, bool udp)
    : rewriter_(std::move(map)) {
    if (io != nullptr) {
      media_.emplace(*io, udp);
      rewriter_.set_media(&*media_);
    }
  }
  const char* name() const override {
    return "RTSP";
  }
  verdict to_stream(std::string_view in, std::string& out) override {
    return rewriter_.from_server(in, out) == rtsp_rewriter::status::failed
             ? verdict::stop
             : verdict::ok;
  }
  verdict to_local(std::string_view in, std::string& to_local,
                   std::string& to_stream) override {
    return rewriter_.from_client(in, to_local, to_stream)
               == rtsp_rewriter::status::failed
             ? verdict::stop
             : verdict::ok;
  }
  bool rewrites_to_local() const override {
    return true;
  }
  std::string stop_reason() const override {
    return rewriter_.failure_reason();
  }
  bool local_at_boundary() const override {
    return rewriter_.client_at_boundary();
  }

private:
  rtsp_rewriter rewriter_;
  std::optional<rtsp_export_media> media_;
};

class http_export_adapter : public protocol_adapter {
public:
  explicit http_export_adapter(http_rewrite_config rc)
    : rewriter_(std::move(rc)) {}
  const char* name() const override {
    return "HTTP";
  }
  verdict to_local(std::string_view in, std::string& to_local,
                   std::string& to_stream) override {
    if (rewriter_.feed(in, to_local) == http_request_rewriter::status::ok)
      return verdict::ok;
    to_stream += rewriter_.stop_reply();
    return verdict::stop;
  }
  bool rewrites_to_local() const override {
    return true;
  }
  std::string stop_reason() const override {
    return rewriter_.stop_reason();
  }

private:
  http_request_rewriter rewriter_;
};

} // namespace

std::unique_ptr<protocol_adapter>
make_client_adapter(const std::string& protocol,
                    const std::string& default_resource, rtsp_media_io* media) {
  if (protocol == "socks5")
    return std::make_unique<socks5_adapter>();
  if (protocol == "http")
    return std::make_unique<http_client_adapter>(default_resource);
  if (protocol == "rtsp")
    return std::make_unique<rtsp_client_adapter>(default_resource, media);
  return std::make_unique<tcp_adapter>();
}

std::unique_ptr<protocol_adapter>
make_export_adapter(const std::string& protocol, const std::string& resource,
                    const std::string& target, rtsp_media_io* media,
                    bool rtsp_udp) {
  if (protocol == "rtsp") {
    rtsp_url_map map;
    // client_authority: learned from the client's first request.
    map.server_authority = target;
    map.resource = resource;
    map.strip_resource = true;
    return std::make_unique<rtsp_export_adapter>(std::move(map), media,
                                                 rtsp_udp);
  }
  if (protocol == "http") {
    // The client CHANNEL routed and stripped /r/<name>; here only Host,
    // which only this node can know, becomes the target's.
    http_rewrite_config rc;
    rc.target_authority = target;
    return std::make_unique<http_export_adapter>(std::move(rc));
  }
  return std::make_unique<tcp_adapter>();
}

} // namespace p2proxy
