#include "actors/signal/link_exports.hpp"

#include <algorithm>

#include "actors/common/log.hpp"

namespace p2proxy {

namespace {

constexpr const char* subject = "signal_link";

std::string join(const google::protobuf::RepeatedPtrField<std::string>& ids) {
  std::string out;
  for (auto& id : ids)
    out += (out.empty() ? "" : ", ") + id;
  return out;
}

} // namespace

void registrations_pending(admin::SignalLinkStatus& status,
                           const std::vector<std::string>& names) {
  // A refusal stands until the server answers otherwise: until then the
  // name belongs to its owners, also for this node's own clients.
  std::vector<admin::ExportRegistration> refused;
  for (auto& r : status.registrations())
    if (r.state() == "refused")
      refused.push_back(r);
  status.clear_registrations();
  for (auto& name : names) {
    auto r = status.add_registrations();
    auto old = std::find_if(refused.begin(), refused.end(),
                            [&](auto& x) { return x.name() == name; });
    if (old != refused.end()) {
      *r = *old;
      continue;
    }
    r->set_name(name);
    r->set_state("pending");
  }
}

void apply_register_result(admin::SignalLinkStatus& status,
                           const signal::RegisterResult& result) {
  for (auto& answer : result.names()) {
    auto regs = status.mutable_registrations();
    auto r = std::find_if(regs->begin(), regs->end(),
                          [&](auto& x) { return x.name() == answer.name(); });
    if (r == regs->end())
      continue; // answers a Register that listed names we no longer export
    auto was = r->state();
    auto before = r->owners();
    r->clear_owners();
    if (answer.code() == signal::ERROR_UNSPECIFIED) {
      r->set_state("registered");
      r->clear_error();
      r->clear_text();
      if (was != "registered")
        log::info(subject, "export '{}' is registered", answer.name());
      continue;
    }
    r->set_state("refused");
    r->set_error(signal::ErrorCode_Name(answer.code()));
    r->set_text(answer.text());
    for (auto& o : answer.owners())
      r->add_owners(o);
    if (was != "refused" || join(before) != join(r->owners()))
      log::warn(subject, "the server refuses export '{}': {}, it belongs to {}",
                answer.name(), r->error(), join(r->owners()));
  }
}

bool serves_itself(const admin::SignalLinkStatus& status,
                   const std::string& name) {
  for (auto& r : status.registrations())
    if (r.name() == name)
      return r.state() != "refused";
  return false;
}

std::vector<std::string> lookup_answer(std::vector<std::string> ids,
                                       const std::string& self_id,
                                       const admin::SignalLinkStatus& status,
                                       const std::string& name) {
  ids.erase(std::remove(ids.begin(), ids.end(), self_id), ids.end());
  if (serves_itself(status, name))
    ids.insert(ids.begin(), self_id);
  return ids;
}

} // namespace p2proxy
