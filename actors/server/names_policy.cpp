#include "actors/server/names_policy.hpp"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "actors/identity/identity.hpp"

namespace p2proxy {

namespace {

constexpr size_t max_name_length = 255; // as a Register allows

[[noreturn]] void fail(const std::string& path, const toml::source_region& at,
                       const std::string& what) {
  throw std::runtime_error(fmt::format("{}:{}: {}", path, at.begin.line, what));
}

} // namespace

const std::vector<std::string>*
names_policy::find(const std::string& name) const {
  auto i = allowed.find(name);
  return i == allowed.end() ? nullptr : &i->second;
}

names_policy names_policy::load(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    fail(path, e.source(), std::string{e.description()});
  }
  names_policy out;
  for (auto& [key, value] : root) {
    if (key.str() != "names")
      fail(path, key.source(),
           fmt::format("unknown key '{}'; the policy has one table, [names]",
                       key.str()));
    auto table = value.as_table();
    if (table == nullptr)
      fail(path, value.source(), "'names' must be a table: [names]");
    for (auto& [name, ids] : *table) {
      auto where = name.source().begin.line != 0 ? name.source() : ids.source();
      std::string n{name.str()};
      if (n.empty() || n.size() > max_name_length)
        fail(path, where,
             fmt::format("a name has 1 to {} characters", max_name_length));
      auto list = ids.as_array();
      if (list == nullptr)
        fail(path, where,
             fmt::format("'{}' must be a list of node ids: {} = [\"ID\", ...]",
                         n, n));
      std::vector<std::string> allowed_ids;
      for (auto& id : *list) {
        auto text = id.value<std::string>();
        if (!text || !looks_like_node_id(*text))
          fail(path, id.source().begin.line != 0 ? id.source() : where,
               fmt::format("'{}' lists something that is not a node id (52 "
                           "characters a-z 2-7, as `p2proxy id` prints)",
                           n));
        allowed_ids.push_back(*text);
      }
      if (allowed_ids.empty())
        fail(path, where,
             fmt::format("'{}' lists no node; remove it to let the first "
                         "node that registers it own it",
                         n));
      std::sort(allowed_ids.begin(), allowed_ids.end());
      allowed_ids.erase(std::unique(allowed_ids.begin(), allowed_ids.end()),
                        allowed_ids.end());
      out.allowed.emplace(std::move(n), std::move(allowed_ids));
    }
  }
  return out;
}

} // namespace p2proxy
