// Internal to the HTTP transport (includes Asio: only src/server/http_*.cpp include it): the state
// shared by the server, its connections and their response writers, and one connection's state
// machine.
#pragma once

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "server/http_message.h"
#include "server/http_server.h"

namespace maas::server::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Strand = asio::strand<asio::io_context::executor_type>;
using Socket = tcp::socket::rebind_executor<Strand>::other;
using Timer = asio::steady_timer::rebind_executor<Strand>::other;

class Connection;

struct ServerCore : std::enable_shared_from_this<ServerCore> {
  ServerCore(HttpConfig config, Handler request_handler);

  // Posts fn to a strand unless the server has stopped (then fn is dropped): after shutdown no
  // work may enter the stopped io_context, whose queue would otherwise keep connections alive.
  template <typename F>
  void post(const Strand& strand, F&& fn) {
    std::shared_lock lock(post_mutex);
    if (!stopped) asio::post(strand, std::forward<F>(fn));
  }

  void add_connection(const std::shared_ptr<Connection>& connection);
  void remove_connection(Connection* connection);
  void request_finished();
  std::vector<std::shared_ptr<Connection>> connection_snapshot();

  // Accept loop (runs on accept_strand).
  void accept_next();

  const HttpConfig cfg;
  const Handler handler;
  asio::io_context ioc;
  Strand accept_strand;
  tcp::acceptor acceptor;
  Timer accept_retry;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  uint16_t port = 0;

  std::shared_mutex post_mutex;
  bool stopped = false;  // under post_mutex

  std::atomic<bool> shutting_down{false};
  std::atomic<size_t> in_flight{0};
  std::atomic<size_t> open{0};

  std::mutex mutex;  // guards what follows
  std::condition_variable changed;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections;
  bool started = false;
  bool shutdown_begun = false;
  bool shutdown_complete = false;
};

// What a response writer and its connection share about one request's response.
struct WriterState {
  std::atomic<bool> closed{false};
  std::mutex mutex;
  std::function<void()> on_close;  // under mutex
  bool finished = false;           // the response was completed (on_close will never fire)
  bool lost = false;               // the connection closed first (on_close fired or will)

  void set_on_close(std::function<void()> fn);
  void finish();
  void connection_closed();  // fires on_close if the response was not finished
};

// One client connection. Everything but the constructor runs on the connection's strand.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<ServerCore> core, Socket socket);
  ~Connection();

  const Strand& strand() const { return strand_; }
  ServerCore& core() { return *core_; }

  void start(bool over_capacity);
  void begin_shutdown();  // finish what is in progress, then close
  void force_close();     // close now (on_close fires for an unfinished response)

  // The response writer's operations for request number `seq` (stale numbers are ignored).
  void do_send(uint64_t seq, int status, std::string content_type, std::string body,
               HeaderList extra_headers);
  void do_start_stream(uint64_t seq, int status, std::string content_type,
                       HeaderList extra_headers);
  void do_write(uint64_t seq, std::string data);
  void do_end_stream(uint64_t seq);
  // The handler dropped its writer (or threw) without finishing: 500, or cut a started stream.
  void do_abandon(uint64_t seq, std::string reason);

 private:
  enum class Phase {
    WaitRequest,  // no byte of the next request yet (idle keep-alive, or just accepted)
    Header,       // receiving a request header
    Body,         // receiving a request body
    Handling,     // the handler has the request; reads only watch for a disconnect
    Draining,     // closing: our last bytes go out, the client's are read and discarded
    Closed,
  };
  enum class Response { None, Streaming, Finished };
  enum class StreamMode { Chunked, Raw, Discard };

  void start_read();
  void on_read(const boost::system::error_code& ec, size_t n);
  void parse_buffered();
  void dispatch();
  void respond_error(int status, const std::string& message);
  void queue_output(std::string bytes);
  void flush();
  void on_write(const boost::system::error_code& ec);
  void on_response_written();
  void begin_linger();
  void close_socket();
  void arm_read_timer(std::chrono::milliseconds timeout);
  void cancel_read_timer();
  void on_read_timeout();
  size_t unparsed() const { return in_.size() - in_pos_; }

  std::shared_ptr<ServerCore> core_;
  Strand strand_;
  Socket socket_;
  Timer read_timer_;
  Timer write_timer_;
  uint64_t read_timer_gen_ = 0;
  uint64_t write_timer_gen_ = 0;
  RequestParser parser_;
  std::string remote_;
  bool registered_ = true;

  Phase phase_ = Phase::WaitRequest;
  bool first_request_ = true;
  bool reading_ = false;
  bool peer_eof_ = false;
  std::unique_ptr<char[]> read_chunk_;
  std::string in_;  // received bytes; those before in_pos_ are parsed
  size_t in_pos_ = 0;

  uint64_t seq_ = 0;  // number of the current request
  std::shared_ptr<WriterState> writer_state_;
  Response response_ = Response::None;
  StreamMode stream_mode_ = StreamMode::Chunked;
  bool keep_alive_ = true;
  int version_ = 11;
  bool head_request_ = false;
  bool counted_in_flight_ = false;
  std::string request_id_;

  std::string out_pending_;  // queued, not yet handed to the socket
  std::string out_writing_;  // being written
  bool writing_ = false;
};

}  // namespace maas::server::detail
