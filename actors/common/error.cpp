#include "actors/common/error.hpp"

#include <caf/atom.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace p2proxy {

caf::error make_error(ec code, std::string text) {
  return caf::error{code, std::move(text)};
}

std::string error_text(const caf::error& err) {
  if (!err)
    return "no error";
  auto& ctx = err.context();
  if (ctx.size() > 0 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  if (err.category() == caf::atom("system"))
    return caf::to_string(static_cast<caf::sec>(err.code()));
  return caf::to_string(err);
}

bool is_error(const caf::error& err, ec code) {
  return err.category() == caf::atom("p2proxy")
         && err.code() == static_cast<uint8_t>(code);
}

const char* to_string(ec code) {
  switch (code) {
    case ec::unspecified:
      return "unspecified";
    case ec::not_online:
      return "not_online";
    case ec::link_down:
      return "link_down";
    case ec::timeout:
      return "timeout";
    case ec::peer_offline:
      return "peer_offline";
    case ec::bad_config:
      return "bad_config";
    case ec::io_failure:
      return "io_failure";
    case ec::unknown_resource:
      return "unknown_resource";
    case ec::denied:
      return "denied";
    case ec::target_refused:
      return "target_refused";
    case ec::target_unreachable:
      return "target_unreachable";
    case ec::ice_failed:
      return "ice_failed";
    case ec::handshake_failed:
      return "handshake_failed";
    case ec::identity_mismatch:
      return "identity_mismatch";
    case ec::session_lost:
      return "session_lost";
    case ec::protocol_error:
      return "protocol_error";
  }
  return "unspecified";
}

std::string failure_class(const caf::error& err) {
  if (err.category() != caf::atom("p2proxy"))
    return "other";
  return to_string(static_cast<ec>(err.code()));
}

} // namespace p2proxy
