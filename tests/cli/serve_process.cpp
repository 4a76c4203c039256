#include "cli/serve_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "support/test_util.h"

namespace maas::test {

using namespace std::chrono_literals;

const std::string kStories = shared_dir() + "/models/stories260K";

std::string stories_model() {
  static const std::string path = [] {
    const std::string out = scratch_dir() + "/stories.gguf";
    auto r = run_command({maas_binary(), "convert", "llama2c", kStories + "/stories260K.bin",
                          kStories + "/tok512.bin", "-o", out});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  }();
  return path;
}

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = http::loopback(0);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

ServeProcess::ServeProcess(std::vector<std::string> extra_args, const ServeSetup& setup)
    : port_(free_port()) {
  log_ = scratch_dir() + "/serve-" + std::to_string(port_) + ".log";
  std::vector<std::string> args = {maas_binary(), "serve", "--port", std::to_string(port_)};
  if (setup.serve_stories) args.insert(args.end(), {"-m", "stories=" + stories_model()});
  // Each server its own state directory, unless the test gives one.
  if (std::find(extra_args.begin(), extra_args.end(), "--data-dir") == extra_args.end()) {
    args.insert(args.end(), {"--data-dir", scratch_dir() + "/data"});
  }
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  // The child's environment, built before fork (only async-signal-safe calls after it).
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var = *e;
    const bool replaced = std::any_of(setup.env.begin(), setup.env.end(), [&](const auto& kv) {
      return var.rfind(kv.first + "=", 0) == 0;
    });
    if (!replaced) env.push_back(var);
  }
  for (const auto& [name, value] : setup.env) env.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    FILE* f = std::freopen(log_.c_str(), "w", stderr);
    (void)f;
    ::execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  // Ready when /health answers.
  for (int i = 0; i < 200; ++i) {
    if (request("GET /health HTTP/1.1\r\nhost: x\r\n\r\n").status == 200) return;
    std::this_thread::sleep_for(50ms);
  }
  ADD_FAILURE() << "maas serve did not come up: " << read_file(log_);
}

ServeProcess::~ServeProcess() {
  if (pid_ > 0) stop(SIGKILL);
}

std::string ServeProcess::log() const { return read_file(log_); }

http::Response ServeProcess::request(const std::string& raw,
                                     std::chrono::milliseconds timeout) const {
  if (http::try_connect(port_) < 0) return {};
  http::Client c(port_);
  c.send(raw);
  auto r = c.read_response(timeout);
  return r ? *r : http::Response{};
}

int ServeProcess::stop(int sig, std::chrono::seconds timeout) {
  ::kill(pid_, sig);
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(20ms);
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  return -1;
}

std::string post_json(const std::string& path, const std::string& body) {
  return "POST " + path + " HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" +
         "content-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace maas::test
