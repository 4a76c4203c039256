// One HTTP/1.1 connection: reads and parses requests, hands them to the handler, writes the
// responses its writer produces, and closes on errors, timeouts and shutdown.
#include "server/http_connection.h"

#include <fmt/format.h>

#include <boost/asio/write.hpp>
#include <cstdio>
#include <exception>

namespace maas::server::detail {

namespace {

constexpr size_t kReadChunk = 8 * 1024;
// How long a closing connection keeps reading (and discarding) after our last byte, so that its
// unread request bytes do not make the kernel reset the connection before the client has read
// our response.
constexpr std::chrono::milliseconds kLingerTimeout{2000};

std::string format_endpoint(const tcp::endpoint& ep) {
  if (ep.address().is_v6()) return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

const char* error_type(int status) {
  return status >= 500 ? "server_error" : "invalid_request_error";
}

// The handler's side of a response: posts every call to the connection's strand.
class WriterImpl final : public ResponseWriter {
 public:
  WriterImpl(std::shared_ptr<Connection> connection, std::shared_ptr<WriterState> state,
             uint64_t seq)
      : connection_(std::move(connection)), state_(std::move(state)), seq_(seq) {}

  ~WriterImpl() override {
    if (!finished_.load()) {
      connection_->core().post(connection_->strand(), [c = connection_, seq = seq_] {
        c->do_abandon(seq, "the request handler produced no response");
      });
    }
  }

  void send(int status, std::string content_type, std::string body,
            HeaderList extra_headers) override {
    finished_ = true;
    connection_->core().post(connection_->strand(),
                             [c = connection_, seq = seq_, status, ct = std::move(content_type),
                              b = std::move(body), h = std::move(extra_headers)]() mutable {
                               c->do_send(seq, status, std::move(ct), std::move(b), std::move(h));
                             });
  }

  void start_stream(int status, std::string content_type, HeaderList extra_headers) override {
    connection_->core().post(connection_->strand(),
                             [c = connection_, seq = seq_, status, ct = std::move(content_type),
                              h = std::move(extra_headers)]() mutable {
                               c->do_start_stream(seq, status, std::move(ct), std::move(h));
                             });
  }

  void write(std::string data) override {
    if (data.empty() || state_->closed.load(std::memory_order_relaxed)) return;
    connection_->core().post(connection_->strand(),
                             [c = connection_, seq = seq_, d = std::move(data)]() mutable {
                               c->do_write(seq, std::move(d));
                             });
  }

  void end_stream() override {
    finished_ = true;
    connection_->core().post(connection_->strand(),
                             [c = connection_, seq = seq_] { c->do_end_stream(seq); });
  }

  void on_close(std::function<void()> fn) override { state_->set_on_close(std::move(fn)); }

  bool closed() const override { return state_->closed.load(); }

 private:
  std::shared_ptr<Connection> connection_;
  std::shared_ptr<WriterState> state_;
  uint64_t seq_;
  std::atomic<bool> finished_{false};
};

}  // namespace

void WriterState::set_on_close(std::function<void()> fn) {
  {
    std::lock_guard lock(mutex);
    if (!lost) {
      if (!finished) on_close = std::move(fn);
      return;
    }
  }
  if (fn) fn();
}

void WriterState::finish() {
  std::function<void()> drop;
  std::lock_guard lock(mutex);
  finished = true;
  drop = std::move(on_close);  // released after unlocking: it may own what the handler captured
}

void WriterState::connection_closed() {
  std::function<void()> fn;
  {
    std::lock_guard lock(mutex);
    if (finished || lost) return;
    lost = true;
    closed = true;
    fn = std::move(on_close);
  }
  if (fn) fn();
}

Connection::Connection(std::shared_ptr<ServerCore> core, Socket socket)
    : core_(std::move(core)),
      strand_(socket.get_executor()),
      socket_(std::move(socket)),
      read_timer_(strand_),
      write_timer_(strand_),
      parser_(core_->cfg.max_header_bytes, core_->cfg.max_body_bytes) {}

Connection::~Connection() {
  if (registered_) core_->remove_connection(this);
}

void Connection::start(bool over_capacity) {
  boost::system::error_code ec;
  const auto peer = socket_.remote_endpoint(ec);
  remote_ = ec ? std::string("unknown") : format_endpoint(peer);
  // Server-sent events are many small writes that must leave at once.
  socket_.set_option(tcp::no_delay(true), ec);
  read_chunk_ = std::make_unique<char[]>(kReadChunk);
  if (over_capacity) {
    respond_error(503, fmt::format("the server is at its limit of {} connections; retry later",
                                   core_->cfg.max_connections));
    return;
  }
  if (core_->shutting_down) {
    close_socket();
    return;
  }
  // The first request's header is due within header_timeout of the accept (slowloris guard).
  arm_read_timer(core_->cfg.header_timeout);
  start_read();
}

void Connection::begin_shutdown() {
  keep_alive_ = false;
  if (phase_ == Phase::WaitRequest || (phase_ == Phase::Draining && !writing_)) close_socket();
}

void Connection::force_close() { close_socket(); }

void Connection::start_read() {
  if (reading_ || phase_ == Phase::Closed || peer_eof_) return;
  // While the handler works, reading only watches for a disconnect and buffers pipelined
  // requests; a client that pipelines a lot is throttled (and then only write errors tell us
  // that it left).
  if (phase_ == Phase::Handling && unparsed() >= core_->cfg.max_header_bytes + 64 * 1024) return;
  reading_ = true;
  socket_.async_read_some(asio::buffer(read_chunk_.get(), kReadChunk),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      size_t n) { self->on_read(ec, n); });
}

void Connection::on_read(const boost::system::error_code& ec, size_t n) {
  reading_ = false;
  if (phase_ == Phase::Closed) return;
  if (phase_ == Phase::Draining) {
    if (ec) {
      peer_eof_ = true;
      if (!writing_ && out_pending_.empty()) close_socket();
    } else {
      start_read();  // discard
    }
    return;
  }
  if (ec) {
    const bool eof = ec == asio::error::eof;
    if (phase_ == Phase::Handling) {
      if (eof && response_ == Response::Finished) {
        // The response is complete and going out: finish it, then close.
        peer_eof_ = true;
        keep_alive_ = false;
        return;
      }
      close_socket();  // the client is gone: on_close fires
      return;
    }
    if (eof && (phase_ == Phase::Header || phase_ == Phase::Body)) {
      peer_eof_ = true;
      parser_.put_eof();
      if (parser_.state() == RequestParser::State::Error) {
        respond_error(parser_.error_status(), parser_.error_message());
        return;
      }
    }
    close_socket();
    return;
  }
  in_.append(read_chunk_.get(), n);
  if (phase_ == Phase::Handling) {
    start_read();
    return;
  }
  parse_buffered();
}

void Connection::parse_buffered() {
  using State = RequestParser::State;
  while (phase_ == Phase::WaitRequest || phase_ == Phase::Header || phase_ == Phase::Body) {
    if (unparsed() == 0) break;
    if (phase_ == Phase::WaitRequest) {
      phase_ = Phase::Header;
      if (!first_request_) arm_read_timer(core_->cfg.header_timeout);
    }
    const size_t used = parser_.put(std::string_view(in_).substr(in_pos_));
    in_pos_ += used;
    const State state = parser_.state();
    if (state == State::Error) {
      respond_error(parser_.error_status(), parser_.error_message());
      return;
    }
    if (state == State::Done) {
      dispatch();
      return;
    }
    if (state == State::HeaderDone) {
      phase_ = Phase::Body;
      arm_read_timer(core_->cfg.body_timeout);
      if (parser_.expects_continue() && unparsed() == 0) {
        queue_output("HTTP/1.1 100 Continue\r\n\r\n");
        if (phase_ == Phase::Closed) return;
      }
      continue;
    }
    if (used == 0) break;  // NeedMore with the whole buffer seen
  }
  // Keep the unparsed tail only (a partial header is re-scanned from its start).
  if (in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
    if (in_.capacity() > 64 * 1024) std::string().swap(in_);
  } else if (in_pos_ > 0) {
    in_.erase(0, in_pos_);
    in_pos_ = 0;
  }
  start_read();
}

void Connection::dispatch() {
  cancel_read_timer();
  phase_ = Phase::Handling;
  first_request_ = false;
  HttpRequest req = parser_.take_request();
  req.remote = remote_;
  keep_alive_ = req.keep_alive && !core_->shutting_down;
  version_ = req.version;
  head_request_ = req.method == "HEAD";
  request_id_ = req.request_id;
  response_ = Response::None;
  ++seq_;
  writer_state_ = std::make_shared<WriterState>();
  counted_in_flight_ = true;
  core_->in_flight.fetch_add(1);
  auto writer = std::make_shared<WriterImpl>(shared_from_this(), writer_state_, seq_);
  start_read();  // notice a disconnect while the handler works
  try {
    core_->handler(std::move(req), std::move(writer));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "maas http: request handler threw: %s\n", e.what());
    core_->post(strand_, [self = shared_from_this(), seq = seq_] {
      self->do_abandon(seq, "internal error in the request handler");
    });
  } catch (...) {
    std::fprintf(stderr, "maas http: request handler threw a non-exception\n");
    core_->post(strand_, [self = shared_from_this(), seq = seq_] {
      self->do_abandon(seq, "internal error in the request handler");
    });
  }
}

void Connection::respond_error(int status, const std::string& message) {
  cancel_read_timer();
  phase_ = Phase::Draining;
  response_ = Response::Finished;
  keep_alive_ = false;
  in_.clear();
  in_pos_ = 0;
  queue_output(
      format_error_response(status, message, error_type(status), make_request_id(nullptr), false));
  start_read();  // discard what the client still sends, notice when it leaves
}

void Connection::do_send(uint64_t seq, int status, std::string content_type, std::string body,
                         HeaderList extra_headers) {
  if (seq != seq_ || phase_ != Phase::Handling || response_ != Response::None) return;
  response_ = Response::Finished;
  writer_state_->finish();
  const bool no_body = status < 200 || status == 204 || status == 304;
  std::string out = format_response_head(
      status, content_type, no_body ? BodyFraming::None : BodyFraming::ContentLength, body.size(),
      request_id_, version_, keep_alive_, extra_headers);
  if (!no_body && !head_request_) out += body;
  queue_output(std::move(out));
}

void Connection::do_start_stream(uint64_t seq, int status, std::string content_type,
                                 HeaderList extra_headers) {
  if (seq != seq_ || phase_ != Phase::Handling || response_ != Response::None) return;
  response_ = Response::Streaming;
  BodyFraming framing;
  if (status < 200 || status == 204 || status == 304) {
    framing = BodyFraming::None;
    stream_mode_ = StreamMode::Discard;
  } else if (version_ == 10) {
    // HTTP/1.0 has no chunked coding: the body ends when the connection does.
    framing = BodyFraming::UntilClose;
    keep_alive_ = false;
    stream_mode_ = head_request_ ? StreamMode::Discard : StreamMode::Raw;
  } else {
    framing = BodyFraming::Chunked;
    stream_mode_ = head_request_ ? StreamMode::Discard : StreamMode::Chunked;
  }
  queue_output(format_response_head(status, content_type, framing, 0, request_id_, version_,
                                    keep_alive_, extra_headers));
}

void Connection::do_write(uint64_t seq, std::string data) {
  if (seq != seq_ || phase_ != Phase::Handling || response_ != Response::Streaming) return;
  if (stream_mode_ == StreamMode::Discard || data.empty()) return;
  if (stream_mode_ == StreamMode::Chunked) {
    append_chunk(out_pending_, data);
  } else {
    out_pending_ += data;
  }
  if (out_pending_.size() + out_writing_.size() > core_->cfg.max_pending_write_bytes) {
    // The client does not read: stop generating for it.
    close_socket();
    return;
  }
  flush();
}

void Connection::do_end_stream(uint64_t seq) {
  if (seq != seq_ || phase_ != Phase::Handling || response_ != Response::Streaming) return;
  response_ = Response::Finished;
  writer_state_->finish();
  if (stream_mode_ == StreamMode::Chunked) out_pending_.append(kLastChunk);
  flush();
}

void Connection::do_abandon(uint64_t seq, std::string reason) {
  if (seq != seq_ || phase_ != Phase::Handling) return;
  if (response_ == Response::None) {
    do_send(seq, 500, "application/json", error_body(reason, "server_error"), {});
  } else if (response_ == Response::Streaming) {
    close_socket();  // without the last chunk, so the client sees a truncated stream
  }
}

void Connection::queue_output(std::string bytes) {
  if (out_pending_.empty()) {
    out_pending_ = std::move(bytes);
  } else {
    out_pending_ += bytes;
  }
  flush();
}

void Connection::flush() {
  if (phase_ == Phase::Closed || writing_) return;
  if (out_pending_.empty()) {
    if (response_ == Response::Finished) on_response_written();
    return;
  }
  writing_ = true;
  std::swap(out_writing_, out_pending_);
  out_pending_.clear();
  ++write_timer_gen_;
  write_timer_.expires_after(core_->cfg.write_timeout);
  write_timer_.async_wait(
      [self = shared_from_this(), gen = write_timer_gen_](const boost::system::error_code& ec) {
        if (ec || gen != self->write_timer_gen_ || !self->writing_) return;
        self->close_socket();  // the client stopped reading
      });
  asio::async_write(socket_, asio::buffer(out_writing_),
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                      self->on_write(ec);
                    });
}

void Connection::on_write(const boost::system::error_code& ec) {
  writing_ = false;
  ++write_timer_gen_;
  write_timer_.cancel();
  if (phase_ == Phase::Closed) return;
  if (ec) {
    close_socket();
    return;
  }
  if (out_writing_.capacity() > 64 * 1024) {
    std::string().swap(out_writing_);
  } else {
    out_writing_.clear();
  }
  flush();
}

void Connection::on_response_written() {
  response_ = Response::None;
  if (phase_ == Phase::Draining) {
    begin_linger();
    return;
  }
  writer_state_.reset();
  if (counted_in_flight_) {
    counted_in_flight_ = false;
    core_->request_finished();
  }
  if (!keep_alive_ || peer_eof_ || core_->shutting_down) {
    phase_ = Phase::Draining;
    begin_linger();
    return;
  }
  phase_ = Phase::WaitRequest;
  parser_.reset();
  arm_read_timer(core_->cfg.idle_timeout);
  parse_buffered();  // a pipelined request may be waiting
}

void Connection::begin_linger() {
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_send, ec);
  if (ec || peer_eof_ || core_->shutting_down) {
    close_socket();
    return;
  }
  in_.clear();
  in_pos_ = 0;
  arm_read_timer(kLingerTimeout);
  start_read();
}

void Connection::close_socket() {
  if (phase_ == Phase::Closed) return;
  phase_ = Phase::Closed;
  cancel_read_timer();
  ++write_timer_gen_;
  write_timer_.cancel();
  boost::system::error_code ec;
  socket_.close(ec);
  std::string().swap(in_);
  std::string().swap(out_pending_);
  in_pos_ = 0;
  if (counted_in_flight_) {
    counted_in_flight_ = false;
    core_->request_finished();
  }
  auto state = std::move(writer_state_);
  registered_ = false;
  core_->remove_connection(this);
  if (state) state->connection_closed();
}

void Connection::arm_read_timer(std::chrono::milliseconds timeout) {
  ++read_timer_gen_;
  read_timer_.expires_after(timeout);
  read_timer_.async_wait(
      [self = shared_from_this(), gen = read_timer_gen_](const boost::system::error_code& ec) {
        if (ec || gen != self->read_timer_gen_) return;
        self->on_read_timeout();
      });
}

void Connection::cancel_read_timer() {
  ++read_timer_gen_;
  read_timer_.cancel();
}

void Connection::on_read_timeout() {
  switch (phase_) {
    case Phase::Header:
    case Phase::Body:
      respond_error(408, "the request did not arrive in time");
      break;
    case Phase::WaitRequest:  // idle keep-alive, or a client that never sent anything
    case Phase::Draining:     // the client did not close after our last response
      close_socket();
      break;
    case Phase::Handling:
    case Phase::Closed:
      break;
  }
}

}  // namespace maas::server::detail
