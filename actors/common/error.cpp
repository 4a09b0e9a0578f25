#include "actors/common/error.hpp"

#include <caf/atom.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace p2proxy {

caf::error make_error(ec code, std::string text) {
  return caf::error{static_cast<uint8_t>(code), caf::atom("p2proxy"),
                    caf::make_message(std::move(text))};
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

} // namespace p2proxy
