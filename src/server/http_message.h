// Internal to the HTTP transport: request parsing and response framing, without any I/O, so the
// server and the fuzz target run exactly the same code. Boost stays in http_message.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "server/http_server.h"

namespace maas::server::detail {

// Incremental parser of one request at a time, configured with the server's limits. Feed bytes
// with put() until state() leaves NeedMore; bytes it does not consume (the next pipelined
// request) stay with the caller. reset() prepares it for the next request.
class RequestParser {
 public:
  enum class State {
    NeedMore,    // give it more bytes (or put_eof())
    HeaderDone,  // the header is complete, the body is not: reported once, then NeedMore again
    Done,        // a whole request: take_request()
    Error,       // error_status() / error_message(); the connection must close
  };

  RequestParser(size_t max_header_bytes, size_t max_body_bytes);
  ~RequestParser();
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Parses a prefix of `bytes`; returns how many were consumed. Call only in NeedMore or
  // HeaderDone; a call with no bytes is a no-op.
  size_t put(std::string_view bytes);
  // The peer sent EOF: an unfinished request becomes an Error (400); nothing received: no-op.
  void put_eof();

  State state() const { return state_; }
  bool got_some() const;  // any byte of this request consumed
  // After HeaderDone: the client sent "Expect: 100-continue" (HTTP/1.1) and awaits a 100.
  bool expects_continue() const;
  // After HeaderDone or Done: false when the client asked to close (or HTTP/1.0 without
  // keep-alive).
  bool keep_alive() const;
  int version() const;  // after HeaderDone: 10 or 11

  int error_status() const { return error_status_; }  // 400, 413, 417 or 431
  const std::string& error_message() const { return error_message_; }

  // After Done: the request (method, target, path, headers, body, version, keep_alive and
  // request_id filled; remote is the caller's). The parser must be reset() afterwards.
  HttpRequest take_request();
  void reset();

 private:
  struct Impl;
  void fail(int status, std::string message);
  void check_header();
  std::unique_ptr<Impl> impl_;
  size_t max_header_bytes_;
  size_t max_body_bytes_;
  State state_ = State::NeedMore;
  bool header_reported_ = false;
  int error_status_ = 0;
  std::string error_message_;
};

// The client's x-request-id if sane (1..128 bytes of printable ASCII), else 32 random hex digits.
std::string make_request_id(const std::string* client_value);

const char* reason_phrase(int status);  // "OK", "Not Found", ...; "Unknown" for others

enum class BodyFraming { ContentLength, Chunked, UntilClose, None };

// Status line and header block (ending with the blank line). Adds date, server, x-request-id,
// content-length (ContentLength: body_size) or transfer-encoding: chunked, and connection: close
// when !keep_alive (or keep-alive for an HTTP/1.0 client that stays). Extra headers that contain
// CR, LF or NUL, or whose name is not an HTTP token, are dropped; content-length,
// transfer-encoding and connection in extra_headers are ignored (the transport owns framing).
std::string format_response_head(int status, std::string_view content_type, BodyFraming framing,
                                 size_t body_size, std::string_view request_id, int version,
                                 bool keep_alive, const HeaderList& extra_headers);

// One chunk of a chunked body: hex size, CRLF, data, CRLF; `out` is appended to.
void append_chunk(std::string& out, std::string_view data);
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// A complete error response produced by the transport itself (error_body JSON).
std::string format_error_response(int status, std::string_view message, std::string_view type,
                                  std::string_view request_id, bool keep_alive);

}  // namespace maas::server::detail
