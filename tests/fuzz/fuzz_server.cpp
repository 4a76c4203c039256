// Fuzz target: the HTTP transport's request path on arbitrary bytes, exactly as a connection runs
// it (server::detail::RequestParser with small limits, bytes arriving in pieces, pipelined
// requests parsed one after another, EOF at the end), then the response framing of whatever was
// parsed. Refusing input with an error status is expected; a crash, a sanitizer report, a hang
// or a broken invariant (checked with abort) is a bug.
//
// The first input byte picks the piece size the "socket" delivers and the limits; the rest is
// the byte stream from the client.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/http_message.h"

namespace {

using maas::server::HttpRequest;
using maas::server::detail::BodyFraming;
using maas::server::detail::RequestParser;
using State = RequestParser::State;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_server: invariant broken: %s\n", what);
    std::abort();
  }
}

bool has_bare_line_break(std::string_view s) {
  return s.find('\r') != std::string_view::npos || s.find('\n') != std::string_view::npos;
}

void check_request(const HttpRequest& req, size_t max_body) {
  check(!req.method.empty(), "empty method");
  check(req.target.compare(0, req.path.size(), req.path) == 0, "path is not a prefix of target");
  check(req.path.find('?') == std::string::npos, "path keeps the query");
  check(req.body.size() <= max_body, "body over the limit");
  check(req.version == 10 || req.version == 11, "odd version");
  check(!req.request_id.empty() && req.request_id.size() <= 128, "request id size");
  for (unsigned char c : req.request_id) check(c >= 0x20 && c <= 0x7e, "request id bytes");
  for (const auto& [name, value] : req.headers) {
    check(!name.empty(), "empty header name");
    for (char c : name) check(!(c >= 'A' && c <= 'Z'), "header name not lower-cased");
    check(!has_bare_line_break(name) && !has_bare_line_break(value), "line break in a header");
  }
  // Echoing request data into a response must never break its framing.
  std::string head = maas::server::detail::format_response_head(
      200, req.header("content-type") ? *req.header("content-type") : "text/plain",
      BodyFraming::ContentLength, req.body.size(), req.request_id, req.version, req.keep_alive,
      req.headers);
  check(head.size() >= 4 && head.compare(head.size() - 4, 4, "\r\n\r\n") == 0, "head end");
  check(head.find("\r\n\r\n") == head.size() - 4, "blank line inside the head");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 256 * 1024) return 0;
  const uint8_t options = data[0];
  static constexpr size_t kSteps[] = {1, 3, 16, 4096};
  const size_t step = kSteps[options & 3];
  const size_t max_header = (options & 4) ? 64 : 4096;
  const size_t max_body = (options & 8) ? 16 : 64 * 1024;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);

  RequestParser parser(max_header, max_body);
  std::string pending;
  size_t offered = 0;
  int requests = 0;
  for (int rounds = 0;; ++rounds) {
    check(rounds < 4 * static_cast<int>(size) + 16, "no progress");
    if (offered < stream.size()) {
      const size_t n = std::min(step, stream.size() - offered);
      pending.append(stream.substr(offered, n));
      offered += n;
    }
    const size_t used = parser.put(pending);
    check(used <= pending.size(), "consumed more than offered");
    pending.erase(0, used);
    const State state = parser.state();
    if (state == State::Error) {
      const int status = parser.error_status();
      check(status == 400 || status == 413 || status == 417 || status == 431, "error status");
      check(!parser.error_message().empty(), "error without a message");
      std::string response = maas::server::detail::format_error_response(
          status, parser.error_message(), "invalid_request_error", "id", false);
      check(response.rfind("HTTP/1.1 ", 0) == 0, "error response");
      return 0;
    }
    if (state == State::HeaderDone) {
      (void)parser.expects_continue();
      (void)parser.keep_alive();
      check(parser.version() == 10 || parser.version() == 11, "version after header");
      if (pending.empty() && offered == stream.size()) break;
      continue;
    }
    if (state == State::Done) {
      check_request(parser.take_request(), max_body);
      ++requests;
      parser.reset();
      continue;
    }
    if (used == 0 && offered == stream.size()) break;  // wants bytes that never come
  }
  parser.put_eof();
  check(parser.state() != State::Done, "EOF completed a request");
  if (parser.state() == State::Error) check(parser.error_status() == 400, "EOF status");
  return 0;
}
