// Prometheus text exposition format (version 0.0.4), written by the node's
// and the signaling server's /metrics:
//
//   # HELP p2proxy_signal_reconnects_total Reconnects to the signaling server
//   # TYPE p2proxy_signal_reconnects_total counter
//   p2proxy_signal_reconnects_total 3
//
// The format wants every sample of a family in one group under a single
// HELP/TYPE header, so the writer collects samples by family and renders
// them together, whatever order the caller adds them in.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace p2proxy {

/// A sample's value. Integers stay exact (a byte counter beyond 2^53 must not
/// round); floating-point values render NaN and infinities as Prometheus
/// spells them.
class metric_value {
public:
  template <class T, class = std::enable_if_t<std::is_arithmetic_v<T>>>
  metric_value(T x) {
    if constexpr (std::is_floating_point_v<T>) {
      kind_ = kind::real;
      real_ = static_cast<double>(x);
    } else if constexpr (std::is_signed_v<T>) {
      kind_ = kind::signed_int;
      signed_ = static_cast<int64_t>(x);
    } else {
      kind_ = kind::unsigned_int;
      unsigned_ = static_cast<uint64_t>(x);
    }
  }

  std::string to_string() const;

private:
  enum class kind : uint8_t { unsigned_int, signed_int, real };
  kind kind_ = kind::unsigned_int;
  uint64_t unsigned_ = 0;
  int64_t signed_ = 0;
  double real_ = 0;
};

/// Label name/value pairs, rendered in the order given.
using metric_labels = std::vector<std::pair<std::string, std::string>>;

class prometheus_writer {
public:
  /// Adds one sample to the counter family `name`. The first call for a
  /// family fixes its help text; later calls only add samples.
  void counter(std::string_view name, std::string_view help, metric_value value,
               const metric_labels& labels = {});

  /// Adds one sample to the gauge family `name`.
  void gauge(std::string_view name, std::string_view help, metric_value value,
             const metric_labels& labels = {});

  /// The exposition text, families in the order they were first added.
  std::string str() const;

  bool empty() const {
    return families_.empty();
  }

private:
  struct family {
    std::string name;
    std::string help;
    const char* type;
    std::vector<std::string> samples;
  };

  void add(const char* type, std::string_view name, std::string_view help,
           metric_value value, const metric_labels& labels);

  std::vector<family> families_;
  std::unordered_map<std::string, size_t> index_;
};

/// A label value as the format wants it: backslash, double quote and
/// newline escaped.
std::string escape_label_value(std::string_view text);

/// A HELP text as the format wants it: backslash and newline escaped.
std::string escape_help(std::string_view text);

} // namespace p2proxy
