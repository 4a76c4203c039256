// An HttpServer on 127.0.0.1 (free port) with a small test handler:
//   /echo   200, the request body back, request facts in x-echo-* headers
//   /hold   a response the test drives: start_stream (or nothing with ?plain) and the writer is
//           kept in held(); on_close is recorded with its time
//   /drop   the handler drops the writer without answering
//   /throw  the handler throws
//   other   404 with an error_body
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "http_test_client.h"
#include "server/http_server.h"

namespace maas::test::http {

using server::HttpConfig;
using server::HttpRequest;
using server::HttpServer;
using server::ResponseWriter;

struct Held {
  std::shared_ptr<ResponseWriter> writer;
  HttpRequest request;
  std::atomic<bool> close_fired{false};
  std::atomic<int> close_calls{0};
  std::atomic<int64_t> closed_at_ns{0};  // steady_clock time of on_close
  Clock::time_point closed_at() const {
    return Clock::time_point(std::chrono::nanoseconds(closed_at_ns.load()));
  }
};

inline HttpConfig test_config() {
  HttpConfig cfg;
  cfg.port = 0;
  cfg.io_threads = 2;
  cfg.max_header_bytes = 16 * 1024;
  cfg.max_body_bytes = 1024 * 1024;
  return cfg;
}

class TestServer {
 public:
  explicit TestServer(HttpConfig cfg = test_config())
      : server(std::move(cfg), [this](HttpRequest&& req, std::shared_ptr<ResponseWriter> w) {
          handle(std::move(req), std::move(w));
        }) {
    server.start();
  }
  // Stops the server before the members its handler uses go away.
  ~TestServer() { server.shutdown(std::chrono::milliseconds(0)); }

  uint16_t port() const { return server.port(); }

  // The index-th held response, waiting for it to arrive.
  std::shared_ptr<Held> held(size_t index, std::chrono::milliseconds timeout = 5000ms) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, timeout, [&] { return held_.size() > index; })) return nullptr;
    return held_[index];
  }
  size_t held_count() {
    std::lock_guard lock(mutex_);
    return held_.size();
  }
  std::vector<std::shared_ptr<Held>> all_held() {
    std::lock_guard lock(mutex_);
    return held_;
  }
  void release_held() {
    std::lock_guard lock(mutex_);
    held_.clear();
  }

  HttpServer server;

 private:
  void handle(HttpRequest&& req, std::shared_ptr<ResponseWriter> w) {
    if (req.path == "/echo") {
      const std::string* x_test = req.header("x-test");
      w->send(200, "application/octet-stream", req.body,
              {{"x-echo-method", req.method},
               {"x-echo-target", req.target},
               {"x-echo-path", req.path},
               {"x-echo-remote", req.remote},
               {"x-echo-version", std::to_string(req.version)},
               {"x-echo-header-count", std::to_string(req.headers.size())},
               {"x-echo-x-test", x_test ? *x_test : "(none)"}});
    } else if (req.path == "/hold") {
      auto h = std::make_shared<Held>();
      h->writer = w;
      std::weak_ptr<Held> weak = h;
      w->on_close([weak] {
        if (auto held = weak.lock()) {
          held->closed_at_ns = Clock::now().time_since_epoch().count();
          held->close_calls.fetch_add(1);
          held->close_fired = true;
        }
      });
      if (req.target.find("plain") == std::string::npos) {
        w->start_stream(200, "text/event-stream", {{"cache-control", "no-cache"}});
      }
      h->request = std::move(req);
      {
        std::lock_guard lock(mutex_);
        held_.push_back(std::move(h));
      }
      changed_.notify_all();
    } else if (req.path == "/drop") {
      // the writer goes out of scope unanswered
    } else if (req.path == "/throw") {
      throw std::runtime_error("handler failure for the test");
    } else {
      w->send(404, "application/json",
              server::error_body("no route " + req.path, "invalid_request_error"));
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::shared_ptr<Held>> held_;
};

}  // namespace maas::test::http
