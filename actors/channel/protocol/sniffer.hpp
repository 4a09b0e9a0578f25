// What every sniffer answers, and the small parsing helpers the RTSP and
// HTTP sniffers and rewriters share.
//
// A sniffer is plain C++ (no actors, no sockets). A client CHANNEL feeds it
// (through its protocol_adapter, adapter.hpp) the
// first bytes a client sends, in whatever pieces the socket delivers, and it
// answers one of:
//
//   need_more  keep reading (but write `reply` first if it is not empty:
//              the SOCKS5 method selection is sent mid-sniff);
//   done       `resource` names the export; `forward` holds every byte read
//              so far, to go to the target (through the protocol's rewriter,
//              see below); write `reply` first if not empty;
//   failed     write `reply` (in the client's protocol; may be empty: then
//              just close), log `reason`, count `error`, close.
//
// Sniffers never rewrite. Rewriting needs the target's address, which only
// the exporting node knows, so it lives in separate stateful rewriters
// (rtsp_rewriter, http_request_rewriter) that see the client's byte stream
// from its first byte, `forward` included, and every later message of a
// long-lived connection. The CHANNEL runs them where it knows what they need.
//
// Limits: a request head is at most 16 KiB, its first line at most 8 KiB.
// The 10 s timeout is the CHANNEL's timer; the sniffer only provides what to
// send when it fires (timeout_reply()).
//
// After `done`, keep the sniffer until the StreamOpenResult arrives: its
// failure_reply() answers an open that failed in the client's protocol (with
// the RTSP CSeq, the HTTP version, the SOCKS5 reply code).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

#include "actors/common/text.hpp"

namespace p2proxy {

/// Largest request head (request line + headers + blank line).
constexpr size_t max_request_head = 16 * 1024;

/// Largest request line (without its CRLF).
constexpr size_t max_request_line = 8 * 1024;

/// Longest resource name a sniffer accepts.
constexpr size_t max_resource_name = 128;

/// How long a client may take to send what the sniffer needs.
constexpr std::chrono::seconds sniff_timeout{10};

enum class sniff_state : uint8_t { need_more, done, failed };

/// Why a client was refused before its tunnel was opened: the LISTENER's
/// "refused by reason" counters (refused_sniff_<name>,
/// refused_client_overflow). A CAF error code (category "sniff"): the CHANNEL
/// tells its LISTENER with caf::error{sniff_error}.
enum class sniff_error : uint8_t {
  none,
  bad_request,    // garbage, malformed syntax
  line_too_long,  // request line > max_request_line
  head_too_large, // request head > max_request_head
  no_resource,    // nothing names a resource and the listener has no default
  unsupported,    // well-formed but not supported (SOCKS5 auth/command/
                  // address type, HTTP CONNECT or HTTP/2, ...)
  redirect,       // not an error: HTTP `/r/name` answered by a 301
  timeout,        // set by the CHANNEL when its timer fires
  eof,            // the client finished before naming a resource
  overflow,       // the client sent more than the CHANNEL holds (16 KiB)
                  // after its first request, before its tunnel was up
};

const char* to_string(sniff_error x);

struct sniff_result {
  sniff_state state = sniff_state::need_more;
  sniff_error error = sniff_error::none;
  /// done: the export's name.
  std::string resource;
  /// done: every byte the client sent so far, in order.
  std::string forward;
  /// Bytes for the client, to write before anything else.
  std::string reply;
  /// failed: one line for the log and status (printable ASCII).
  std::string reason;
};

/// A `failed` result: `reply` for the client, `reason` for the log.
sniff_result sniff_failure(sniff_error err, std::string reply,
                           std::string reason);

/// Why opening a channel failed after a successful sniff: what the CHANNEL
/// learned from StreamOpenResult or from the PEER MANAGER.
enum class open_failure : uint8_t {
  unknown_resource,   // no such export (or no node exports it)
  denied,             // the export's ACL refuses this node
  peer_unreachable,   // the exporting node is offline or no session could
                      // be set up
  target_refused,     // the export's target refused the TCP connection
  target_unreachable, // the export's target did not answer
  overloaded,         // the exporting node sheds load
  bad_request,        // the exporting node rejected the StreamOpen
  internal,           // anything else
};

const char* to_string(open_failure x);

/// Maps a tunnel::StreamOpenResult::Code (as int, to keep protobuf out of
/// this header) to an open_failure; OK and unknown codes map to `internal`.
open_failure open_failure_from_code(int stream_open_result_code);

// -- shared parsing helpers ---------------------------------------------------

namespace sniff {

/// Finds the end of a message head (start line, header lines, blank line) in
/// a buffer that only grows between calls, without rescanning. Lines may end
/// in CRLF or a bare LF.
class head_scanner {
public:
  enum class status : uint8_t {
    need_more,
    complete,
    line_too_long,
    head_too_large,
  };

  explicit head_scanner(size_t max_line = max_request_line,
                        size_t max_head = max_request_head)
    : max_line_(max_line), max_head_(max_head) {}

  /// `buf` must start at the head's first byte and extend the previous one.
  status scan(std::string_view buf);

  /// After `complete`: bytes of the head including the blank line.
  size_t head_size() const {
    return head_size_;
  }

  void reset() {
    scanned_ = line_start_ = head_size_ = 0;
    first_line_done_ = false;
  }

private:
  size_t max_line_;
  size_t max_head_;
  size_t scanned_ = 0;
  size_t line_start_ = 0;
  size_t head_size_ = 0;
  bool first_line_done_ = false;
};

/// Yields the lines of a head without their terminators.
class line_reader {
public:
  explicit line_reader(std::string_view text) : rest_(text) {}
  bool next(std::string_view& line);

private:
  std::string_view rest_;
};

bool iequals(std::string_view a, std::string_view b);
bool istarts_with(std::string_view s, std::string_view prefix);

/// "Name: value" → name (a token) and value (trimmed). False on anything
/// else, including obsolete line folding.
bool split_header(std::string_view line, std::string_view& name,
                  std::string_view& value);

/// "A B C" with single spaces, all three non-empty.
bool split_start_line(std::string_view line, std::string_view& a,
                      std::string_view& b, std::string_view& c);

/// A method or header name: RFC 7230 tchar+.
bool is_token(std::string_view s);

/// True once the start of `buf` cannot be a request line: a byte that is
/// not a token character before the first space, or a method longer than 32
/// bytes. Lets a sniffer reject binary garbage at once instead of waiting
/// for a line end.
bool garbage_method(std::string_view buf);

/// Decimal, at most 15 digits.
bool parse_decimal(std::string_view s, uint64_t& out);

/// Letters, digits, '.', '-', '_', '~'; 1..max_resource_name characters.
bool valid_resource_name(std::string_view s);

/// `s` cut to `max` characters with non-printable bytes as '?', for logs
/// and replies.
std::string printable(std::string_view s, size_t max = 80);

/// The value of the first header `name` in a (possibly incomplete) head, or
/// empty. Used to find a CSeq even in a head too large to parse.
std::string_view find_header(std::string_view head, std::string_view name);

} // namespace sniff

} // namespace p2proxy

CAF_ERROR_CODE_ENUM(p2proxy::sniff_error, "sniff")
