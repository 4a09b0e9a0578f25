// RTSP (RFC 2326 / RFC 7826): the sniffer that finds the resource in the
// first request, and the replies the proxy makes itself. The rewriter that
// keeps URLs consistent on a long-lived connection is rtsp_rewriter.hpp.
//
// Resource: the first path segment of the first request's URL
// (rtsp://127.0.0.1:8554/cam1/stream → "cam1"). A URL without a path
// segment (`OPTIONS *`, rtsp://host:port/) uses the listener's default
// resource, else the client gets 404.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "actors/channel/protocol/sniffer.hpp"

namespace p2proxy {

/// A complete RTSP response made by the proxy itself:
/// "<version> <code> <phrase>", CSeq (when known), a text/plain body
/// "p2proxy: <text>\n" (when `text` is not empty).
std::string rtsp_reply(std::string_view version, int code,
                       std::string_view phrase, std::string_view cseq,
                       std::string_view text);

/// Finds the resource in the first request.
class rtsp_sniffer {
public:
  /// `default_resource` (may be empty): for URLs without a path segment.
  explicit rtsp_sniffer(std::string default_resource = {});

  /// Feeds the next bytes from the client. After `done` or `failed` the
  /// sniffer takes no more input.
  sniff_result feed(std::string_view data);

  /// The reply when the client did not complete its first request within
  /// sniff_timeout: 408 Request Timeout.
  std::string timeout_reply() const;

  /// The reply when opening the channel failed (after `done`):
  /// unknown_resource → 404, denied → 403, bad_request → 400,
  /// everything else → 503; all with the request's CSeq and `text`.
  std::string failure_reply(open_failure why, std::string_view text) const;

  /// After `done`: the first request's CSeq (empty if it had none).
  const std::string& cseq() const {
    return cseq_;
  }

  /// After `done`: the authority of the first request's URL as the client
  /// wrote it ("127.0.0.1:8554"); empty for `OPTIONS *` or a path-only URL.
  const std::string& client_authority() const {
    return client_authority_;
  }

  /// After `done`: whether the resource came from the URL (false: from the
  /// default).
  bool resource_in_url() const {
    return resource_in_url_;
  }

private:
  sniff_result fail(sniff_error err, int code, std::string_view phrase,
                    std::string reason);

  std::string default_resource_;
  std::string buf_;
  sniff::head_scanner scanner_;
  std::string version_ = "RTSP/1.0";
  std::string cseq_;
  std::string client_authority_;
  bool resource_in_url_ = false;
  bool finished_ = false;
};

namespace sniff {

/// Characters that end an RTSP URL's path segment.
constexpr std::string_view rtsp_segment_end = "/?#";

/// An absolute rtsp/rtsps/rtspu URL in its parts (views into the URL).
struct rtsp_url_parts {
  std::string_view scheme;
  std::string_view userinfo; // including the '@', or empty
  std::string_view hostport;
  std::string_view rest; // path, query, fragment: "", "/..." or "?..."
};

/// False when `url` is not an absolute RTSP URL.
bool split_rtsp_url(std::string_view url, rtsp_url_parts& p);

} // namespace sniff

} // namespace p2proxy
