#include "node/status_command.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <httplib.h>

#include "actors/common/endpoint.hpp"
#include "node/config.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

namespace {

/// Left-aligned columns; the last column is not padded.
class text_table {
public:
  explicit text_table(std::vector<std::string> header)
    : rows_{std::move(header)} {}

  void add(std::vector<std::string> row) {
    rows_.push_back(std::move(row));
  }

  std::string render(std::string_view indent) const {
    std::vector<size_t> widths;
    for (auto& row : rows_) {
      widths.resize(std::max(widths.size(), row.size()), 0);
      for (size_t i = 0; i < row.size(); ++i)
        widths[i] = std::max(widths[i], row[i].size());
    }
    std::string out;
    for (auto& row : rows_) {
      std::string line{indent};
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size())
          line += std::string(widths[i] - row[i].size() + 2, ' ');
      }
      while (!line.empty() && line.back() == ' ')
        line.pop_back();
      out += line;
      out += '\n';
    }
    return out;
  }

private:
  std::vector<std::vector<std::string>> rows_;
};

std::string or_dash(const std::string& text) {
  return text.empty() ? "-" : text;
}

std::string format_uptime(uint64_t seconds) {
  auto d = seconds / 86400;
  auto h = seconds / 3600 % 24;
  auto m = seconds / 60 % 60;
  auto s = seconds % 60;
  if (d > 0)
    return fmt::format("{}d {:02}h {:02}m {:02}s", d, h, m, s);
  if (h > 0)
    return fmt::format("{}h {:02}m {:02}s", h, m, s);
  if (m > 0)
    return fmt::format("{}m {:02}s", m, s);
  return fmt::format("{}s", s);
}

std::string uptime_line(uint64_t seconds, const std::string& started) {
  if (started.empty())
    return format_uptime(seconds);
  return fmt::format("{} (since {})", format_uptime(seconds), started);
}

std::string join(const google::protobuf::RepeatedPtrField<std::string>& xs,
                 std::string_view sep) {
  std::string out;
  for (auto& x : xs) {
    if (!out.empty())
      out += sep;
    out += x;
  }
  return out;
}

std::string describe_actors(
  const google::protobuf::RepeatedPtrField<admin::ActorStatus>& actors) {
  if (actors.empty())
    return "";
  text_table t{{"NAME", "STATE", "FIELDS"}};
  for (auto& a : actors) {
    // A protobuf map has no order; sorted keys keep the output stable.
    std::vector<std::pair<std::string, std::string>> fields{a.fields().begin(),
                                                            a.fields().end()};
    std::sort(fields.begin(), fields.end());
    std::string text;
    for (auto& [k, v] : fields) {
      if (!text.empty())
        text += ' ';
      text += fmt::format("{}={}", k, v);
    }
    t.add({or_dash(a.name()), or_dash(a.state()), text});
  }
  return "\nactors\n" + t.render("  ");
}

std::string describe_node(const admin::NodeStatus& n) {
  text_table head{{"node", n.node_id()}};
  head.add({"version", or_dash(n.version())});
  head.add({"uptime", uptime_line(n.uptime_seconds(), n.started())});
  std::string out = head.render("");
  if (n.has_signal()) {
    auto& s = n.signal();
    text_table t{{"server", or_dash(s.server())}};
    t.add({"state", or_dash(s.state())});
    t.add({"connected since", or_dash(s.connected_since())});
    t.add({"reconnects", std::to_string(s.reconnects())});
    t.add({"last error", or_dash(s.last_error())});
    t.add(
      {"frames in/out", fmt::format("{} / {}", s.frames_in(), s.frames_out())});
    if (s.login_failures() > 0)
      t.add({"login failures", std::to_string(s.login_failures())});
    if (!s.next_attempt().empty())
      t.add({"next attempt", s.next_attempt()});
    if (!s.observed_address().empty())
      t.add({"seen as", s.observed_address()});
    out += "\nsignal link\n" + t.render("  ");
  }
  out += "\nexports\n";
  if (n.exports().empty()) {
    out += "  none\n";
  } else {
    text_table t{{"NAME", "", "TARGET", "PROTOCOL", "ALLOW", "REGISTRATION"}};
    for (auto& e : n.exports()) {
      // A refused name says why and whose it is (NAME_TAKEN, the owners).
      auto reg = e.registration() != "refused"
                   ? or_dash(e.registration())
                   : fmt::format("refused: {} (owner {})",
                                 or_dash(e.registration_error()),
                                 e.owners().empty() ? std::string{"-"}
                                                    : join(e.owners(), ","));
      t.add({e.name(), "->", or_dash(e.target()), or_dash(e.protocol()),
             e.allow().empty() ? "nobody" : join(e.allow(), ","), reg});
    }
    out += t.render("  ");
  }
  if (n.has_sessions()) {
    auto& sl = n.sessions();
    out += "\nsessions\n";
    if (sl.sessions().empty()) {
      out += "  none\n";
    } else {
      text_table t{
        {"PEER", "STATE", "PATH", "RTT", "SENT", "RECEIVED", "STREAMS"}};
      for (auto& x : sl.sessions()) {
        auto path
          = x.local_candidate_type().empty()
              ? std::string{"-"}
              : fmt::format("{} {} -> {} {}", x.local_candidate_type(),
                            x.local_address(), x.remote_candidate_type(),
                            x.remote_address());
        // The first entry is the initial pair; later ones are changes.
        if (auto n = x.path_history_size(); n > 1)
          path += fmt::format(" ({} change{}, last: {})", n - 1,
                              n > 2 ? "s" : "", x.path_history(n - 1).reason());
        t.add({x.peer(), or_dash(x.state()), path,
               fmt::format("{:.1f} ms", x.rtt_ms()),
               std::to_string(x.bytes_sent()),
               std::to_string(x.bytes_received()),
               std::to_string(x.open_streams())});
      }
      out += t.render("  ");
    }
  }
  out
    += fmt::format("\nchannels ({} open; ended: {} ok, {} failed)\n",
                   n.channels_size(), n.channels_opened(), n.channels_failed());
  if (!n.channels().empty()) {
    text_table t{{"SIDE", "RESOURCE", "CLIENT", "STATE", "IN", "OUT", "AGE"}};
    for (auto& c : n.channels())
      t.add({or_dash(c.side()), or_dash(c.resource()), or_dash(c.client()),
             or_dash(c.state()), std::to_string(c.bytes_in()),
             std::to_string(c.bytes_out()),
             fmt::format("{} s", c.age_ms() / 1000)});
    out += t.render("  ");
  }
  if (n.has_process()) {
    auto& p = n.process();
    out += fmt::format("\nprocess: {} open fds, {} actors, {} MiB resident\n",
                       p.open_fds(), p.running_actors(),
                       p.rss_bytes() / (1024 * 1024));
  }
  out += describe_actors(n.actors());
  return out;
}

std::string describe_server(const admin::ServerStatus& s) {
  text_table head{{"version", or_dash(s.version())}};
  head.add({"uptime", uptime_line(s.uptime_seconds(), s.started())});
  std::string out = "signaling server\n" + head.render("");
  out += fmt::format("\nnodes online ({})\n", s.nodes_size());
  if (s.nodes().empty()) {
    out += "  none\n";
  } else {
    text_table t{{"NODE ID", "ADDRESS", "SINCE", "EXPORTS"}};
    for (auto& n : s.nodes())
      t.add({n.node_id(), or_dash(n.address()), or_dash(n.since()),
             n.exports().empty() ? "-" : join(n.exports(), ",")});
    out += t.render("  ");
  }
  text_table c{{"connections", std::to_string(s.connections())}};
  c.add({"dropped connections", std::to_string(s.dropped_connections())});
  c.add({"logins", std::to_string(s.logins())});
  c.add({"login failures", std::to_string(s.login_failures())});
  c.add(
    {"frames in/out", fmt::format("{} / {}", s.frames_in(), s.frames_out())});
  out += "\ncounters\n" + c.render("  ");
  out += describe_actors(s.actors());
  return out;
}

} // namespace

std::optional<std::string> describe_status(std::string_view json,
                                           std::string& why) {
  google::protobuf::util::JsonParseOptions opts;
  // A newer node may add fields; an older `status` still shows the rest.
  opts.ignore_unknown_fields = true;
  google::protobuf::StringPiece input{json.data(), json.size()};
  admin::NodeStatus node;
  auto st = google::protobuf::util::JsonStringToMessage(input, &node, opts);
  if (!st.ok()) {
    why = st.ToString();
    return std::nullopt;
  }
  if (!node.node_id().empty())
    return describe_node(node);
  admin::ServerStatus server;
  st = google::protobuf::util::JsonStringToMessage(input, &server, opts);
  if (!st.ok()) {
    why = st.ToString();
    return std::nullopt;
  }
  return describe_server(server);
}

int run_status_command(const std::string& admin, bool json,
                       const std::string& token_file) {
  std::string why;
  auto ep = parse_endpoint(admin, why);
  if (!ep) {
    fmt::print(stderr, "p2proxy status: bad admin address '{}': {}\n", admin,
               why);
    return 2;
  }
  std::string token;
  if (!token_file.empty()) {
    try {
      token = read_admin_token_file(token_file);
    } catch (const std::exception& e) {
      fmt::print(stderr, "p2proxy status: {}\n", e.what());
      return 2;
    }
  }
  auto where = ep->to_string();
  httplib::Client cli{ep->host, ep->port};
  cli.set_connection_timeout(3, 0);
  cli.set_read_timeout(3, 0);
  cli.set_write_timeout(3, 0);
  if (!token.empty())
    cli.set_bearer_token_auth(token.c_str());
  auto res = cli.Get("/v1/status");
  if (!res) {
    auto err = res.error();
    std::string reason;
    switch (err) {
      case httplib::Error::Connection:
        reason = "connection refused";
        break;
      case httplib::Error::ConnectionTimeout:
        reason = "timed out";
        break;
      default:
        reason = httplib::to_string(err);
    }
    fmt::print(stderr,
               "p2proxy status: cannot reach the admin port at {} ({}): is "
               "the node running with [admin] listen = \"{}\"?\n",
               where, reason, where);
    return 2;
  }
  if (res->status == 401) {
    fmt::print(stderr,
               "p2proxy status: the admin port at {} {}: give the file "
               "holding its [admin] token_file with --token-file FILE\n",
               where,
               token.empty() ? "needs a bearer token"
                             : "refused the token from " + token_file);
    return 1;
  }
  if (res->status != 200) {
    fmt::print(stderr, "p2proxy status: the admin port at {} answered {}: {}\n",
               where, res->status, res->body);
    return 1;
  }
  if (json) {
    fmt::print("{}", res->body);
    if (res->body.empty() || res->body.back() != '\n')
      fmt::print("\n");
    return 0;
  }
  auto text = describe_status(res->body, why);
  if (!text) {
    fmt::print(stderr,
               "p2proxy status: the admin port at {} sent no status document: "
               "{}\n",
               where, why);
    return 1;
  }
  fmt::print("{}", *text);
  return 0;
}

} // namespace p2proxy
