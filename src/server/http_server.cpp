// The listening side of the HTTP transport: the accept loop, the I/O threads, the connection
// registry, signal waiting and graceful shutdown.
#include "server/http_server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/bind_executor.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <future>
#include <stdexcept>

#include "server/http_connection.h"

namespace maas::server {

namespace detail {

ServerCore::ServerCore(HttpConfig config, Handler request_handler)
    : cfg(std::move(config)),
      handler(std::move(request_handler)),
      ioc(std::max(1, cfg.io_threads)),
      accept_strand(asio::make_strand(ioc)),
      acceptor(accept_strand),
      accept_retry(accept_strand) {}

void ServerCore::add_connection(const std::shared_ptr<Connection>& connection) {
  std::lock_guard lock(mutex);
  connections.emplace(connection.get(), connection);
  open.store(connections.size());
}

void ServerCore::remove_connection(Connection* connection) {
  {
    std::lock_guard lock(mutex);
    if (connections.erase(connection) == 0) return;
    open.store(connections.size());
  }
  changed.notify_all();
}

void ServerCore::request_finished() {
  {
    // Under the mutex so that a waiter cannot miss the notification.
    std::lock_guard lock(mutex);
    in_flight.fetch_sub(1);
  }
  changed.notify_all();
}

std::vector<std::shared_ptr<Connection>> ServerCore::connection_snapshot() {
  std::vector<std::shared_ptr<Connection>> out;
  std::lock_guard lock(mutex);
  out.reserve(connections.size());
  for (auto& [raw, weak] : connections) {
    if (auto c = weak.lock()) out.push_back(std::move(c));
  }
  return out;
}

void ServerCore::accept_next() {
  if (!acceptor.is_open()) return;
  acceptor.async_accept(
      asio::make_strand(ioc),
      asio::bind_executor(accept_strand, [core = shared_from_this()](
                                             const boost::system::error_code& ec, Socket socket) {
        if (ec) {
          if (ec == asio::error::operation_aborted || !core->acceptor.is_open()) return;
          // Typically EMFILE: out of descriptors. Log rarely and retry soon rather than spin.
          static std::atomic<int64_t> last_log{0};
          const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::steady_clock::now().time_since_epoch())
                                  .count();
          if (last_log.exchange(now) != now) {
            std::fprintf(stderr, "maas http: accept failed: %s\n", ec.message().c_str());
          }
          core->accept_retry.expires_after(std::chrono::milliseconds(50));
          core->accept_retry.async_wait([core](const boost::system::error_code& wait_ec) {
            if (!wait_ec) core->accept_next();
          });
          return;
        }
        if (core->shutting_down) {
          boost::system::error_code ignored;
          socket.close(ignored);
          return;
        }
        const bool over_capacity = core->open.load() >= core->cfg.max_connections;
        auto connection = std::make_shared<Connection>(core, std::move(socket));
        core->add_connection(connection);
        asio::post(connection->strand(),
                   [connection, over_capacity] { connection->start(over_capacity); });
        core->accept_next();
      }));
}

}  // namespace detail

namespace {

// Signal number delivered to the waiter through a pipe (the only async-signal-safe way out).
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_shutdown_signal(int signo) {
  const int saved_errno = errno;
  const unsigned char byte = static_cast<unsigned char>(signo);
  [[maybe_unused]] ssize_t written = ::write(g_signal_pipe[1], &byte, 1);
  errno = saved_errno;
}

// Raises the soft open-file limit to the hard limit; returns {before, after}.
std::pair<rlim_t, rlim_t> raise_open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return {0, 0};
  const rlim_t before = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return {before, before};
  }
  return {before, limit.rlim_cur};
}

}  // namespace

HttpServer::HttpServer(HttpConfig cfg, Handler handler)
    : core_(std::make_shared<detail::ServerCore>(std::move(cfg), std::move(handler))) {
  if (!core_->handler) throw std::invalid_argument("HttpServer: a request handler is required");
}

HttpServer::~HttpServer() {
  try {
    shutdown(std::chrono::milliseconds(0));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "maas http: shutdown failed: %s\n", e.what());
  }
}

void HttpServer::start() {
  auto& core = *core_;
  {
    std::lock_guard lock(core.mutex);
    if (core.started || core.shutdown_begun) {
      throw std::logic_error("HttpServer::start called twice or after shutdown");
    }
  }
  const auto [files_before, files_after] = raise_open_file_limit();

  namespace asio = boost::asio;
  using detail::tcp;
  boost::system::error_code ec;
  tcp::resolver resolver(core.ioc);
  auto endpoints = resolver.resolve(core.cfg.host, std::to_string(core.cfg.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    throw std::runtime_error(fmt::format("cannot listen on {}:{}: cannot resolve the host: {}",
                                         core.cfg.host, core.cfg.port,
                                         ec ? ec.message() : "no address"));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  auto fail = [&](const char* step) {
    boost::system::error_code ignored;
    core.acceptor.close(ignored);
    throw std::runtime_error(fmt::format("cannot listen on {}:{} ({} failed): {}", core.cfg.host,
                                         core.cfg.port, step, ec.message()));
  };
  if (core.acceptor.open(endpoint.protocol(), ec)) fail("socket");
  // Lets a restarted server bind while old connections sit in TIME_WAIT; a live listener on the
  // port still makes bind fail.
  if (core.acceptor.set_option(tcp::acceptor::reuse_address(true), ec)) fail("setsockopt");
  if (core.acceptor.bind(endpoint, ec)) fail("bind");
  if (core.acceptor.listen(asio::socket_base::max_listen_connections, ec)) fail("listen");
  core.port = core.acceptor.local_endpoint(ec).port();

  core.work.emplace(core.ioc.get_executor());
  {
    std::lock_guard lock(core.mutex);
    core.started = true;
  }
  const int thread_count = std::max(1, core.cfg.io_threads);
  for (int i = 0; i < thread_count; ++i) {
    core.threads.emplace_back([core = core_] {
      for (;;) {
        try {
          core->ioc.run();
          return;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "maas http: exception on an I/O thread: %s\n", e.what());
        }
      }
    });
  }
  asio::post(core.accept_strand, [core = core_] { core->accept_next(); });

  std::string files = fmt::format("open-file limit {}", files_after);
  if (files_after != files_before) files += fmt::format(" (raised from {})", files_before);
  std::fprintf(stderr, "maas http: listening on %s:%u with %d I/O threads, %s\n",
               core.cfg.host.c_str(), static_cast<unsigned>(core.port), thread_count,
               files.c_str());
}

uint16_t HttpServer::port() const { return core_->port; }

size_t HttpServer::open_connections() const { return core_->open.load(); }

size_t HttpServer::in_flight() const { return core_->in_flight.load(); }

int HttpServer::wait_for_shutdown_signal(const std::function<void()>& on_reload) {
  static std::mutex one_waiter;
  std::lock_guard waiter_lock(one_waiter);
  if (::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::runtime_error(fmt::format("cannot create a pipe for signals: {}", errno));
  }
  struct sigaction action {};
  action.sa_handler = on_shutdown_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  struct sigaction old_int {
  }, old_term{}, old_hup{};
  sigaction(SIGINT, &action, &old_int);
  sigaction(SIGTERM, &action, &old_term);
  if (on_reload) sigaction(SIGHUP, &action, &old_hup);
  int signo = 0;
  while (!core_->shutting_down.load()) {
    pollfd fd{g_signal_pipe[0], POLLIN, 0};
    if (::poll(&fd, 1, 50) > 0) {
      unsigned char byte = 0;
      if (::read(g_signal_pipe[0], &byte, 1) == 1) {
        if (byte == SIGHUP && on_reload) {
          try {
            on_reload();
          } catch (const std::exception& e) {
            std::fprintf(stderr, "maas http: the reload hook failed: %s\n", e.what());
          }
          continue;
        }
        signo = byte;
        break;
      }
    }
  }
  // A second signal during the graceful shutdown gets the default action (ends the process).
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (on_reload) sigaction(SIGHUP, &old_hup, nullptr);
  ::close(g_signal_pipe[0]);
  ::close(g_signal_pipe[1]);
  g_signal_pipe[0] = g_signal_pipe[1] = -1;
  return signo;
}

void HttpServer::shutdown(std::chrono::milliseconds deadline) {
  auto& core = *core_;
  if (core.ioc.get_executor().running_in_this_thread()) {
    throw std::logic_error("HttpServer::shutdown called from an I/O thread");
  }
  {
    std::unique_lock lock(core.mutex);
    if (core.shutdown_begun) {
      core.changed.wait(lock, [&] { return core.shutdown_complete; });
      return;
    }
    core.shutdown_begun = true;
    core.shutting_down = true;
    if (!core.started) {
      core.shutdown_complete = true;
      return;
    }
  }
  namespace asio = boost::asio;
  const auto started_at = std::chrono::steady_clock::now();

  // 1. Stop accepting: once the listening socket is closed, connection attempts are refused.
  std::promise<void> acceptor_closed;
  asio::post(core.accept_strand, [&] {
    boost::system::error_code ignored;
    core.acceptor.close(ignored);
    core.accept_retry.cancel();
    acceptor_closed.set_value();
  });
  acceptor_closed.get_future().wait();

  // 2. Idle connections close now; the others finish their request and then close.
  for (auto& c : core.connection_snapshot()) {
    asio::post(c->strand(), [c] { c->begin_shutdown(); });
  }
  {
    std::unique_lock lock(core.mutex);
    core.changed.wait_until(lock, started_at + deadline, [&] { return core.connections.empty(); });
  }

  // 3. Past the deadline: cut the rest (their on_close fires).
  const size_t cut = core.open.load();
  for (auto& c : core.connection_snapshot()) {
    asio::post(c->strand(), [c] { c->force_close(); });
  }
  {
    std::unique_lock lock(core.mutex);
    core.changed.wait_for(lock, std::chrono::seconds(2), [&] { return core.connections.empty(); });
  }

  // 4. Stop the I/O threads, refuse further posts, and run what is still queued (each finds its
  // connection closed) so that no handler keeps a connection alive.
  core.work.reset();
  core.ioc.stop();
  for (auto& t : core.threads) t.join();
  core.threads.clear();
  {
    std::unique_lock lock(core.post_mutex);
    core.stopped = true;
  }
  core.ioc.restart();
  core.ioc.poll();
  for (auto& c : core.connection_snapshot()) c->force_close();
  core.ioc.poll();

  {
    std::lock_guard lock(core.mutex);
    core.shutdown_complete = true;
  }
  core.changed.notify_all();
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started_at);
  std::fprintf(stderr, "maas http: stopped after %lld ms (%zu connections cut at the deadline)\n",
               static_cast<long long>(took.count()), cut);
}

}  // namespace maas::server
