// The HTTP/1.1 transport of the OpenAI-compatible server.
//
// Asynchronous (Boost.Beast/Asio, kept out of this header): a few I/O threads hold thousands of
// connections; handlers run on an I/O thread and must not block, they hand work to the engine and
// answer later through a thread-safe ResponseWriter. The transport owns everything below routing:
// keep-alive and pipelining, Expect: 100-continue, header and body size limits, header, body,
// idle and write timeouts, chunked streaming with a bounded send queue, prompt detection of
// clients that go away, a connection cap and graceful shutdown. Routing, JSON and the engine are
// the handler's business: every request that parses reaches it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace maas::server {

namespace detail {
struct ServerCore;
}

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", ... as sent (methods are case-sensitive)
  std::string target;  // path and query as sent, e.g. "/v1/models?x=1"
  std::string path;    // target without the query
  HeaderList headers;  // in arrival order, names lower-cased, values without surrounding blanks
  std::string body;    // bytes as received (de-chunked), not validated in any way
  // The client's x-request-id when it is sane (1..128 printable ASCII characters), otherwise 32
  // random hex digits; every response to this request carries it as x-request-id.
  std::string request_id;
  std::string remote;      // peer address, "127.0.0.1:53422" or "[::1]:53422"
  int version = 11;        // 10 for HTTP/1.0, 11 for HTTP/1.1
  bool keep_alive = true;  // whether the client lets the connection stay open after the response

  // The first header with this (lower-case) name, or nullptr.
  const std::string* header(std::string_view lower_name) const;
};

// The answer to one request, in progress. Thread-safe: every method may be called from any thread
// (the work is posted to the connection's strand, in call order). A request gets exactly one of
// send() or start_stream(), write()*, end_stream(); calls out of that order, or after the client
// went away, are ignored. Dropping the last reference without finishing the response closes the
// connection (a 500 if nothing was sent yet; a stream is cut without its final chunk, so the
// client sees it truncated).
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;

  // A complete response with a Content-Length. x-request-id, date, server and the connection
  // header are added by the transport; extra_headers with CR, LF or NUL bytes are dropped. For
  // HEAD requests the body is not sent; 1xx, 204 and 304 never carry one.
  virtual void send(int status, std::string content_type, std::string body,
                    HeaderList extra_headers = {}) = 0;

  // Streaming (Server-Sent Events for the API): the head now, then body pieces as they come with
  // chunked transfer encoding (for an HTTP/1.0 client: raw bytes, and the connection closes at
  // the end). Each write() is handed to the socket promptly (no Nagle delay). write() never
  // blocks: data is queued, and if more than HttpConfig::max_pending_write_bytes is waiting
  // because the client does not read, the connection is closed and on_close fires.
  virtual void start_stream(int status, std::string content_type,
                            HeaderList extra_headers = {}) = 0;
  virtual void write(std::string data) = 0;  // empty data is ignored
  virtual void end_stream() = 0;

  // fn is called once, on an I/O thread (rarely the thread in shutdown()), if the connection is
  // lost before the response was finished (send() or end_stream() called): the client
  // disconnected or reset, a write failed or timed out, the send queue overflowed, or shutdown
  // cancelled the request. A client that closes its sending side while waiting counts as gone (as
  // nginx does), since that is how HTTP clients abandon requests. Set it before returning from
  // the handler; if the connection is already lost when fn is set, fn runs immediately on the
  // calling thread. fn must not block.
  virtual void on_close(std::function<void()> fn) = 0;

  // True once the connection was lost before the response finished (set just before on_close
  // fires); stays false after a normal finish. Cheap (an atomic load): the engine may poll it.
  virtual bool closed() const = 0;
};

// Called on an I/O thread for every request that parses: must not block. The writer may be kept
// and used from other threads.
using Handler = std::function<void(HttpRequest&& req, std::shared_ptr<ResponseWriter> writer)>;

struct HttpConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  // 0: the system picks a free port (see HttpServer::port())
  int io_threads = 2;
  size_t max_header_bytes = 16 * 1024;      // request line and fields; beyond: 431 and close
  size_t max_body_bytes = 8 * 1024 * 1024;  // declared or received body; beyond: 413 and close
  // A request's header must arrive completely within header_timeout of its first byte (of the
  // connection's accept, for the first request): slow senders get 408 and are closed.
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds body_timeout{30000};  // whole body after the header; beyond: 408
  std::chrono::milliseconds idle_timeout{60000};  // keep-alive wait for the next request; close
  // A response write that makes no progress for this long (the client stopped reading) closes
  // the connection.
  std::chrono::milliseconds write_timeout{30000};
  size_t max_pending_write_bytes = 4 * 1024 * 1024;  // queued response bytes per connection
  // Open connections beyond this are accepted, answered 503 and closed.
  size_t max_connections = 10000;
};

class HttpServer {
 public:
  HttpServer(HttpConfig cfg, Handler handler);
  // Shuts down with a zero deadline if still running.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Raises the soft open-file limit to the hard limit (thousands of connections need it), binds,
  // listens and starts the I/O threads. Throws std::runtime_error with a clear message if the
  // address cannot be bound (port taken, bad host). Once only.
  void start();

  // The bound port (the chosen one when HttpConfig::port was 0); valid after start().
  uint16_t port() const;

  // Blocks until SIGINT or SIGTERM arrives (returns its number) or shutdown() begins (returns
  // 0). The signals are caught only while this waits. For `maas serve`: start(), wait, then
  // shutdown(deadline). With on_reload, SIGHUP calls it on this thread (one call per signal
  // received, the server keeps running) and the wait goes on; without, SIGHUP is not caught.
  int wait_for_shutdown_signal(const std::function<void()>& on_reload = {});

  // Graceful shutdown: stop accepting (new connections are refused), close idle keep-alive
  // connections, let requests in progress finish (their responses say connection: close) for up
  // to `deadline`, then close the rest (their on_close fires) and join the I/O threads. After it
  // returns, ResponseWriter calls are ignored. Must not be called from an I/O thread (a handler
  // or an on_close callback). Idempotent; concurrent calls wait for the first.
  void shutdown(std::chrono::milliseconds deadline);

  size_t open_connections() const;  // sockets currently open (including ones being refused)
  size_t in_flight() const;         // requests handed to the handler and not yet answered

 private:
  std::shared_ptr<detail::ServerCore> core_;  // shared with connections and writers
};

// OpenAI-style error body: {"error":{"message":...,"type":...,"param":null,"code":...}}, code is
// null when empty. The message is JSON-escaped (invalid UTF-8 becomes U+FFFD).
std::string error_body(std::string_view message, std::string_view type, std::string_view code = {});

}  // namespace maas::server
