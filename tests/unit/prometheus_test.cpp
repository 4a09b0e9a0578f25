#include "actors/admin/prometheus.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

using namespace p2proxy;

namespace {

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos;
       pos = text.find(needle, pos + needle.size()))
    ++n;
  return n;
}

} // namespace

TEST(prometheus, writes_counter_and_gauge_families) {
  prometheus_writer w;
  w.counter("p2proxy_signal_reconnects_total",
            "Reconnects to the signaling server", 3);
  w.gauge("p2proxy_sessions", "Open peer sessions", 2.5);
  EXPECT_EQ(w.str(), "# HELP p2proxy_signal_reconnects_total Reconnects to the "
                     "signaling server\n"
                     "# TYPE p2proxy_signal_reconnects_total counter\n"
                     "p2proxy_signal_reconnects_total 3\n"
                     "# HELP p2proxy_sessions Open peer sessions\n"
                     "# TYPE p2proxy_sessions gauge\n"
                     "p2proxy_sessions 2.5\n");
}

TEST(prometheus, renders_labels_in_the_order_given) {
  prometheus_writer w;
  w.gauge("x", "help", 1, {{"state", "online"}, {"server", "a:1"}});
  EXPECT_EQ(w.str(), "# HELP x help\n# TYPE x gauge\n"
                     "x{state=\"online\",server=\"a:1\"} 1\n");
}

TEST(prometheus, escapes_backslash_quote_and_newline_in_label_values) {
  EXPECT_EQ(escape_label_value("a\\b\"c\nd"), R"(a\\b\"c\nd)");
  prometheus_writer w;
  w.counter("e_total", "h", 1, {{"v", "say \"hi\"\\\n"}});
  EXPECT_NE(w.str().find(R"(e_total{v="say \"hi\"\\\n"} 1)"), std::string::npos)
    << w.str();
}

TEST(prometheus, escapes_backslash_and_newline_in_help_but_not_quotes) {
  EXPECT_EQ(escape_help("line one\nback\\slash \"q\""),
            R"(line one\nback\\slash "q")");
}

TEST(prometheus, one_help_and_type_per_family_even_when_interleaved) {
  prometheus_writer w;
  w.gauge("link_state", "State of the link", 1, {{"state", "online"}});
  w.counter("frames_total", "Frames", 10, {{"dir", "in"}});
  w.gauge("link_state", "State of the link", 0, {{"state", "backoff"}});
  w.counter("frames_total", "Frames", 12, {{"dir", "out"}});
  auto text = w.str();
  EXPECT_EQ(count(text, "# HELP link_state "), 1u);
  EXPECT_EQ(count(text, "# TYPE link_state gauge"), 1u);
  EXPECT_EQ(count(text, "# HELP frames_total "), 1u);
  EXPECT_EQ(count(text, "# TYPE frames_total counter"), 1u);
  // All samples of a family form one group right under its header.
  EXPECT_EQ(text, "# HELP link_state State of the link\n"
                  "# TYPE link_state gauge\n"
                  "link_state{state=\"online\"} 1\n"
                  "link_state{state=\"backoff\"} 0\n"
                  "# HELP frames_total Frames\n"
                  "# TYPE frames_total counter\n"
                  "frames_total{dir=\"in\"} 10\n"
                  "frames_total{dir=\"out\"} 12\n");
}

TEST(prometheus, keeps_large_integers_exact_and_spells_special_floats) {
  EXPECT_EQ(metric_value{uint64_t{18446744073709551615u}}.to_string(),
            "18446744073709551615");
  EXPECT_EQ(metric_value{int64_t{-42}}.to_string(), "-42");
  EXPECT_EQ(metric_value{3.0}.to_string(), "3");
  EXPECT_EQ(metric_value{0.25}.to_string(), "0.25");
  EXPECT_EQ(metric_value{std::numeric_limits<double>::infinity()}.to_string(),
            "+Inf");
  EXPECT_EQ(metric_value{-std::numeric_limits<double>::infinity()}.to_string(),
            "-Inf");
  EXPECT_EQ(metric_value{std::nan("")}.to_string(), "NaN");
}

TEST(prometheus, empty_writer_renders_nothing) {
  prometheus_writer w;
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.str(), "");
}
