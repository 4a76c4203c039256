// `maas serve` as a child process for tests: a stories260K model, a free port, raw requests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "server/http_test_client.h"

namespace maas::test {

extern const std::string kStories;  // ../shared/models/stories260K

// stories260K converted to GGUF once per test process.
std::string stories_model();
uint16_t free_port();

// How to start a ServeProcess beyond its arguments.
struct ServeSetup {
  bool serve_stories = true;                             // pass -m stories=<stories260K>
  std::vector<std::pair<std::string, std::string>> env;  // extra environment variables
};

// A `maas serve` child process on a free port, its stderr in a file. Serves stories260K as
// "stories" (unless setup says not to) and, unless extra_args has --data-dir, its own fresh
// data directory.
class ServeProcess {
 public:
  explicit ServeProcess(std::vector<std::string> extra_args, const ServeSetup& setup = {});
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string log() const;

  // One request on a fresh connection; status 0 if the connection failed.
  http::Response request(const std::string& raw,
                         std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // Sends sig (0: none) and returns the exit status (-1 if it did not exit within the timeout).
  int stop(int sig, std::chrono::seconds timeout = std::chrono::seconds(20));

 private:
  uint16_t port_;
  pid_t pid_ = -1;
  std::string log_;
};

// A raw HTTP/1.1 POST with a JSON body.
std::string post_json(const std::string& path, const std::string& body);

}  // namespace maas::test
