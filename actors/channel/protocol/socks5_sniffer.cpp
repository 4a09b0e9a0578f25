#include "actors/channel/protocol/socks5_sniffer.hpp"

#include <utility>

namespace p2proxy {

namespace {

constexpr uint8_t version5 = 0x05;
constexpr uint8_t no_auth = 0x00;
constexpr uint8_t cmd_connect = 0x01;
constexpr uint8_t atyp_ipv4 = 0x01;
constexpr uint8_t atyp_domain = 0x03;
constexpr uint8_t atyp_ipv6 = 0x04;

uint8_t byte_at(const std::string& s, size_t i) {
  return static_cast<uint8_t>(s[i]);
}

} // namespace

std::string socks5_reply(socks5_reply_code code) {
  std::string r{"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00", 10};
  r[1] = static_cast<char>(code);
  return r;
}

socks5_reply_code socks5_code_for(open_failure why) {
  switch (why) {
    case open_failure::denied:
      return socks5_reply_code::not_allowed;
    case open_failure::unknown_resource:
    case open_failure::peer_unreachable:
    case open_failure::target_unreachable:
      return socks5_reply_code::host_unreachable;
    case open_failure::target_refused:
      return socks5_reply_code::connection_refused;
    default:
      return socks5_reply_code::general_failure;
  }
}

sniff_result socks5_sniffer::fail(sniff_error err, std::string reply,
                                  std::string reason) {
  step_ = step::finished;
  return sniff_failure(err, std::move(reply), std::move(reason));
}

sniff_result socks5_sniffer::feed(std::string_view data) {
  if (step_ == step::finished)
    return fail(sniff_error::bad_request, {},
                "socks5 sniffer fed after it finished");
  buf_.append(data);
  sniff_result r;
  if (step_ == step::greeting) {
    if (buf_.empty())
      return r;
    if (byte_at(buf_, 0) != version5) {
      if (byte_at(buf_, 0) == 0x04) // SOCKS4: "request rejected or failed"
        return fail(sniff_error::unsupported,
                    std::string{"\x00\x5b\x00\x00\x00\x00\x00\x00", 8},
                    "SOCKS4 request: only SOCKS5 is supported");
      return fail(sniff_error::bad_request, {},
                  "not a SOCKS5 greeting (version byte "
                    + std::to_string(byte_at(buf_, 0)) + ")");
    }
    if (buf_.size() < 2)
      return r;
    size_t n = byte_at(buf_, 1);
    if (buf_.size() < 2 + n)
      return r;
    auto offered = false;
    for (size_t i = 0; i < n; ++i)
      offered = offered || byte_at(buf_, 2 + i) == no_auth;
    if (!offered)
      return fail(sniff_error::unsupported, std::string{"\x05\xff", 2},
                  "the client offers no 'no authentication' method");
    buf_.erase(0, 2 + n);
    step_ = step::request;
    r.reply.assign("\x05\x00", 2);
  }
  // step::request: VER CMD RSV ATYP DST.ADDR DST.PORT
  if (buf_.size() < 4)
    return r;
  auto general = socks5_reply(socks5_reply_code::general_failure);
  if (byte_at(buf_, 0) != version5) {
    general.insert(0, r.reply);
    return fail(sniff_error::bad_request, std::move(general),
                "malformed SOCKS5 request (version byte "
                  + std::to_string(byte_at(buf_, 0)) + ")");
  }
  auto atyp = byte_at(buf_, 3);
  size_t size = 0; // of the whole request
  switch (atyp) {
    case atyp_ipv4:
      size = 4 + 4 + 2;
      break;
    case atyp_ipv6:
      size = 4 + 16 + 2;
      break;
    case atyp_domain:
      if (buf_.size() < 5)
        return r;
      size = 4 + 1 + byte_at(buf_, 4) + 2;
      break;
    default: {
      auto reply
        = r.reply + socks5_reply(socks5_reply_code::address_type_not_supported);
      return fail(sniff_error::unsupported, std::move(reply),
                  "unknown SOCKS5 address type "
                    + std::to_string(static_cast<int>(atyp)));
    }
  }
  // Read the whole request before answering, so closing right after the
  // reply never resets a connection with unread bytes.
  if (buf_.size() < size)
    return r;
  port_ = static_cast<uint16_t>((byte_at(buf_, size - 2) << 8)
                                | byte_at(buf_, size - 1));
  auto cmd = byte_at(buf_, 1);
  if (cmd != cmd_connect) {
    auto reply
      = r.reply + socks5_reply(socks5_reply_code::command_not_supported);
    return fail(sniff_error::unsupported, std::move(reply),
                std::string{"SOCKS5 command "} + std::to_string(cmd)
                  + (cmd == 2   ? " (BIND)"
                     : cmd == 3 ? " (UDP ASSOCIATE)"
                                : "")
                  + " is not supported: CONNECT only");
  }
  if (atyp != atyp_domain) {
    auto reply
      = r.reply + socks5_reply(socks5_reply_code::address_type_not_supported);
    return fail(sniff_error::unsupported, std::move(reply),
                std::string{"SOCKS5 request for an IPv"}
                  + (atyp == atyp_ipv4 ? "4" : "6")
                  + " address: ask for a resource name instead");
  }
  std::string name = buf_.substr(5, byte_at(buf_, 4));
  for (auto& c : name)
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
  if (!name.empty() && name.back() == '.')
    name.pop_back();
  constexpr std::string_view suffix = ".localhost";
  if (name.size() > suffix.size()
      && std::string_view{name}.substr(name.size() - suffix.size()) == suffix)
    name.resize(name.size() - suffix.size());
  if (!sniff::valid_resource_name(name)) {
    auto reply = r.reply + socks5_reply(socks5_reply_code::host_unreachable);
    return fail(sniff_error::no_resource, std::move(reply),
                "invalid resource name \"" + sniff::printable(name, 60) + "\"");
  }
  step_ = step::finished;
  r.state = sniff_state::done;
  r.resource = std::move(name);
  r.forward = buf_.substr(size);
  buf_.clear();
  return r;
}

std::string socks5_sniffer::timeout_reply() const {
  if (step_ == step::request)
    return socks5_reply(socks5_reply_code::general_failure);
  return {};
}

std::string socks5_sniffer::failure_reply(open_failure why,
                                          std::string_view) const {
  return socks5_reply(socks5_code_for(why));
}

} // namespace p2proxy
