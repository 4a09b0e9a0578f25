#include "actors/peer/name_cache.hpp"

#include <algorithm>

namespace p2proxy {

void name_cache::put(const std::string& name, std::vector<std::string> owners,
                     clock::time_point now) {
  if (owners.empty() || capacity_ == 0) {
    entries_.erase(name);
    return;
  }
  auto i = entries_.find(name);
  if (i == entries_.end() && entries_.size() >= capacity_) {
    expire(now);
    if (entries_.size() >= capacity_) {
      auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                     [](const auto& a, const auto& b) {
                                       return a.second.stored < b.second.stored;
                                     });
      entries_.erase(oldest);
    }
  }
  entries_[name] = entry{std::move(owners), now};
}

std::vector<std::string> name_cache::get(const std::string& name,
                                         clock::time_point now) {
  auto i = entries_.find(name);
  if (i == entries_.end())
    return {};
  if (now - i->second.stored >= ttl_) {
    entries_.erase(i);
    return {};
  }
  return i->second.owners;
}

void name_cache::erase(const std::string& name) {
  entries_.erase(name);
}

std::vector<std::string> name_cache::names(clock::time_point now) {
  expire(now);
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (auto& [name, e] : entries_)
    out.push_back(name);
  return out;
}

void name_cache::expire(clock::time_point now) {
  for (auto i = entries_.begin(); i != entries_.end();)
    if (now - i->second.stored >= ttl_)
      i = entries_.erase(i);
    else
      ++i;
}

} // namespace p2proxy
