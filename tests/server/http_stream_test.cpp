// Streaming responses, disconnect detection, graceful shutdown and many concurrent streams.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <future>
#include <thread>
#include <unordered_map>

#include "http_test_client.h"
#include "http_test_server.h"

namespace maas::test::http {
namespace {

const std::string kHold = "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n";

TEST(HttpStream, ChunksArriveInOrderAndPromptly) {
  TestServer ts;
  Client c(ts.port());
  c.send(kHold);
  auto h = ts.held(0);
  ASSERT_TRUE(h);
  auto head = c.read_head();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_TRUE(head->chunked);
  EXPECT_EQ(head->header("content-type"), "text/event-stream");
  EXPECT_EQ(head->header("cache-control"), "no-cache");
  EXPECT_FALSE(head->header("x-request-id").empty());
  for (int i = 0; i < 30; ++i) {
    // Small SSE events, each readable before the next is written: no Nagle or buffering stall.
    std::string event = "data: {\"i\":" + std::to_string(i) + "}\n\n";
    const auto sent = Clock::now();
    h->writer->write(event);
    auto chunk = c.read_chunk(1000ms);
    ASSERT_TRUE(chunk) << i;
    EXPECT_EQ(*chunk, event);
    EXPECT_LT(Clock::now() - sent, 30ms) << "event " << i << " was held back";
  }
  // Several writes in a row may coalesce on the wire but keep their order and bytes.
  std::string expected;
  for (int i = 0; i < 100; ++i) {
    std::string piece = std::to_string(i) + ",";
    expected += piece;
    h->writer->write(piece);
  }
  h->writer->end_stream();
  std::string got;
  for (;;) {
    auto chunk = c.read_chunk(2000ms);
    ASSERT_TRUE(chunk);
    if (chunk->empty()) break;
    got += *chunk;
  }
  EXPECT_EQ(got, expected);
  EXPECT_FALSE(h->close_fired.load());
  // The connection is reusable after the stream.
  c.send("GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(eventually([&] { return ts.server.in_flight() == 0; }, 1000ms));
}

TEST(HttpStream, Http10StreamIsRawAndEndsWithTheConnection) {
  TestServer ts;
  Client c(ts.port());
  c.send("GET /hold HTTP/1.0\r\n\r\n");
  auto h = ts.held(0);
  ASSERT_TRUE(h);
  h->writer->write("abc");
  h->writer->write("def");
  h->writer->end_stream();
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->chunked);
  EXPECT_EQ(r->body, "abcdef");
  EXPECT_EQ(r->header("connection"), "close");
}

TEST(HttpStream, ClientDisconnectFiresOnClosePromptly) {
  TestServer ts;
  for (bool with_reset : {false, true}) {
    ts.release_held();
    Client c(ts.port());
    c.send(kHold);
    auto h = ts.held(0);
    ASSERT_TRUE(h);
    ASSERT_TRUE(c.read_head());
    h->writer->write("data: first\n\n");
    ASSERT_EQ(c.read_chunk(), "data: first\n\n");
    EXPECT_FALSE(h->writer->closed());
    // Nothing is being written when the client leaves: only the read side can notice.
    const auto left = Clock::now();
    if (with_reset) {
      c.reset();
    } else {
      c.close();
    }
    ASSERT_TRUE(eventually([&] { return h->close_fired.load(); }, 1000ms));
    EXPECT_LT(h->closed_at() - left, 100ms);
    EXPECT_TRUE(h->writer->closed());
    // Writes after the close are ignored; on_close does not fire again.
    h->writer->write("data: late\n\n");
    h->writer->end_stream();
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(h->close_calls.load(), 1);
    EXPECT_TRUE(eventually([&] { return ts.server.in_flight() == 0; }, 1000ms));
    // A callback set after the close runs at once.
    bool late_called = false;
    h->writer->on_close([&] { late_called = true; });
    EXPECT_TRUE(late_called);
  }
}

TEST(HttpStream, DisconnectBeforeAnyResponseFiresOnClose) {
  TestServer ts;
  Client c(ts.port());
  c.send("GET /hold?plain HTTP/1.1\r\nHost: t\r\n\r\n");  // nothing sent back yet
  auto h = ts.held(0);
  ASSERT_TRUE(h);
  c.close();
  ASSERT_TRUE(eventually([&] { return h->close_fired.load(); }, 1000ms));
  // A response after that goes nowhere and does not crash.
  h->writer->send(200, "text/plain", "late");
}

TEST(HttpStream, FinishedResponseNeverFiresOnClose) {
  TestServer ts;
  Client c(ts.port());
  c.send(kHold);
  auto h = ts.held(0);
  ASSERT_TRUE(h);
  h->writer->write("x");
  h->writer->end_stream();
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "x");
  c.close();
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(h->close_fired.load());
  EXPECT_FALSE(h->writer->closed());
}

TEST(HttpStream, ClientThatDoesNotReadIsDroppedAtThePendingLimit) {
  HttpConfig cfg = test_config();
  cfg.max_pending_write_bytes = 256 * 1024;
  TestServer ts(cfg);
  Client c(ts.port(), /*rcvbuf=*/4096);
  c.send(kHold);
  auto h = ts.held(0);
  ASSERT_TRUE(h);
  const std::string piece(64 * 1024, 'p');
  size_t written = 0;
  // Kernel buffers absorb a few MiB first; then the queue passes the limit.
  while (!h->writer->closed() && written < (256u << 20)) {
    h->writer->write(piece);
    written += piece.size();
    if (written % (4u << 20) == 0) std::this_thread::sleep_for(2ms);
  }
  ASSERT_TRUE(eventually([&] { return h->close_fired.load(); }, 2000ms))
      << "wrote " << written << " bytes";
  EXPECT_LT(written, 64u << 20);
}

TEST(HttpStream, ShutdownLetsInFlightStreamFinishAndRefusesNewConnections) {
  TestServer ts;
  Client c(ts.port());
  c.send(kHold);
  auto h = ts.held(0);
  ASSERT_TRUE(h);
  ASSERT_TRUE(c.read_head());
  Client idle(ts.port());  // an idle keep-alive connection: closed at once
  idle.send("GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT_TRUE(idle.read_response());

  const auto start = Clock::now();
  auto stopped = std::async(std::launch::async, [&] { ts.server.shutdown(3000ms); });
  EXPECT_TRUE(idle.wait_closed(1000ms));
  // New connections are refused while the stream is still going.
  ASSERT_TRUE(eventually(
      [&] {
        int fd = try_connect(ts.port());
        if (fd >= 0) ::close(fd);
        return fd == -ECONNREFUSED;
      },
      1000ms));
  for (int i = 0; i < 5; ++i) {
    h->writer->write("event " + std::to_string(i));
    EXPECT_EQ(c.read_chunk(), "event " + std::to_string(i));
  }
  EXPECT_EQ(stopped.wait_for(0ms), std::future_status::timeout);  // still waiting for the stream
  h->writer->end_stream();
  EXPECT_EQ(c.read_chunk(), "");
  EXPECT_TRUE(c.wait_closed(1000ms));
  stopped.get();
  EXPECT_LT(Clock::now() - start, 2000ms);  // returned when the stream ended, not at the deadline
  EXPECT_FALSE(h->close_fired.load());
  EXPECT_EQ(ts.server.open_connections(), 0u);
}

TEST(HttpStream, ShutdownCutsStreamsPastTheDeadline) {
  TestServer ts;
  Client c(ts.port());
  c.send(kHold);
  auto h = ts.held(0);
  ASSERT_TRUE(h);
  ASSERT_TRUE(c.read_head());
  h->writer->write("partial");
  ASSERT_EQ(c.read_chunk(), "partial");
  const auto start = Clock::now();
  ts.server.shutdown(300ms);
  const auto took = Clock::now() - start;
  EXPECT_GE(took, 280ms);
  EXPECT_LT(took, 1500ms);
  EXPECT_TRUE(h->close_fired.load());
  EXPECT_TRUE(h->writer->closed());
  // The client sees the stream end without its last chunk.
  EXPECT_EQ(c.read_chunk(1000ms), std::nullopt);
  // After shutdown the writer is inert.
  h->writer->write("after");
  h->writer->end_stream();
  EXPECT_EQ(ts.server.in_flight(), 0u);
}

TEST(HttpStream, ShutdownEndsTheSignalWait) {
  TestServer ts;
  auto waited =
      std::async(std::launch::async, [&] { return ts.server.wait_for_shutdown_signal(); });
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(waited.wait_for(0ms), std::future_status::timeout);
  ts.server.shutdown(0ms);
  ASSERT_EQ(waited.wait_for(2000ms), std::future_status::ready);
  EXPECT_EQ(waited.get(), 0);
}

TEST(HttpStream, SigtermEndsTheWait) {
  // Until the wait installs its handler, SIGTERM must not end the test process.
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGTERM, &ignore, &old);
  TestServer ts;
  auto waited =
      std::async(std::launch::async, [&] { return ts.server.wait_for_shutdown_signal(); });
  while (waited.wait_for(10ms) != std::future_status::ready) kill(getpid(), SIGTERM);
  EXPECT_EQ(waited.get(), SIGTERM);
  sigaction(SIGTERM, &old, nullptr);
}

// 1000 streaming connections at once, driven by a poll loop; the "engine" (this thread) writes
// only once all of them are in flight, so they are provably open together.
TEST(HttpStream, ThousandConcurrentStreams) {
  raise_fd_limit();
  constexpr int kStreams = 1000;
  constexpr int kEvents = 5;
  TestServer ts;
  const uint16_t port = ts.port();

  struct Conn {
    int fd = -1;
    std::string request;
    size_t sent = 0;
    std::string received;
    bool done = false;
  };
  std::vector<Conn> conns(kStreams);
  std::atomic<int> connect_failures{0};
  std::atomic<bool> client_done{false};
  std::thread client([&] {
    for (int i = 0; i < kStreams; ++i) {
      Conn& c = conns[i];
      c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      sockaddr_in addr = loopback(port);
      if (c.fd < 0 || (::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 &&
                       errno != EINPROGRESS)) {
        connect_failures++;
        c.done = true;
        continue;
      }
      c.request =
          "GET /hold?n=" + std::to_string(i) + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    }
    const auto until = Clock::now() + 15s;
    std::vector<pollfd> fds;
    std::vector<int> index;
    while (Clock::now() < until) {
      fds.clear();
      index.clear();
      for (int i = 0; i < kStreams; ++i) {
        if (conns[i].done) continue;
        short events = POLLIN;
        if (conns[i].sent < conns[i].request.size()) events |= POLLOUT;
        fds.push_back({conns[i].fd, events, 0});
        index.push_back(i);
      }
      if (fds.empty()) break;
      if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
      for (size_t k = 0; k < fds.size(); ++k) {
        Conn& c = conns[index[k]];
        if (fds[k].revents & POLLOUT) {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) {
            connect_failures++;
            c.done = true;
            continue;
          }
          ssize_t n =
              ::send(c.fd, c.request.data() + c.sent, c.request.size() - c.sent, MSG_NOSIGNAL);
          if (n > 0) c.sent += static_cast<size_t>(n);
        }
        if (fds[k].revents & (POLLIN | POLLHUP | POLLERR)) {
          char buf[4096];
          ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
          if (n > 0) {
            c.received.append(buf, static_cast<size_t>(n));
          } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c.done = true;
          }
        }
      }
    }
    client_done = true;
  });

  // The engine: waits for every stream to be in flight, then ticks.
  bool all_in_flight = eventually([&] { return ts.held_count() == kStreams; }, 15s);
  EXPECT_TRUE(all_in_flight) << ts.held_count() << " streams arrived";
  EXPECT_EQ(ts.server.in_flight(), static_cast<size_t>(ts.held_count()));
  EXPECT_GE(ts.server.open_connections(), static_cast<size_t>(ts.held_count()));
  auto held = ts.all_held();
  for (int e = 0; e < kEvents; ++e) {
    for (auto& h : held) {
      h->writer->write("data: " + h->request.target.substr(h->request.target.find('=') + 1) +
                       " event " + std::to_string(e) + "\n\n");
    }
    std::this_thread::sleep_for(10ms);
  }
  for (auto& h : held) h->writer->end_stream();
  client.join();
  EXPECT_EQ(connect_failures.load(), 0);

  int complete = 0;
  for (int i = 0; i < kStreams; ++i) {
    Conn& c = conns[i];
    if (c.fd >= 0) ::close(c.fd);
    // Independent de-chunking of the whole response.
    size_t head_end = c.received.find("\r\n\r\n");
    if (head_end == std::string::npos || c.received.rfind("HTTP/1.1 200 ", 0) != 0) continue;
    std::string body;
    size_t pos = head_end + 4;
    bool ok = false;
    while (pos < c.received.size()) {
      size_t eol = c.received.find("\r\n", pos);
      if (eol == std::string::npos) break;
      size_t size = std::stoul(c.received.substr(pos, eol - pos), nullptr, 16);
      if (size == 0) {
        ok = c.received.compare(eol, 4, "\r\n\r\n") == 0 && eol + 4 == c.received.size();
        break;
      }
      body += c.received.substr(eol + 2, size);
      pos = eol + 2 + size + 2;
    }
    std::string expected;
    for (int e = 0; e < kEvents; ++e) {
      expected += "data: " + std::to_string(i) + " event " + std::to_string(e) + "\n\n";
    }
    if (ok && body == expected) ++complete;
  }
  EXPECT_EQ(complete, kStreams);
  EXPECT_TRUE(eventually([&] { return ts.server.open_connections() == 0; }, 3000ms))
      << ts.server.open_connections();
  EXPECT_EQ(ts.server.in_flight(), 0u);
}

}  // namespace
}  // namespace maas::test::http
