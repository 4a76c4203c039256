// A minimal blocking HTTP/1.1 client for the transport tests, written independently of the server
// code: raw sockets, its own response parser and de-chunker, timeouts everywhere so that a server
// bug fails a test instead of hanging it.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace maas::test::http {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

inline std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Polls pred every millisecond until it holds or timeout passes.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout) {
  auto until = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() > until) return false;
    usleep(1000);
  }
  return true;
}

inline void raise_fd_limit() {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
}

inline sockaddr_in loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// Blocking connect; returns the fd or -errno.
inline int try_connect(uint16_t port, int rcvbuf = 0) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    return -err;
  }
  return fd;
}

struct Response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;                                          // de-chunked
  bool chunked = false;
  bool has(std::string_view name) const {
    for (auto& h : headers)
      if (h.first == name) return true;
    return false;
  }
  std::string header(std::string_view name) const {
    for (auto& h : headers)
      if (h.first == name) return h.second;
    return {};
  }
};

class Client {
 public:
  enum class Read { Data, Eof, Timeout, Reset };

  explicit Client(uint16_t port, int rcvbuf = 0) {
    fd_ = try_connect(port, rcvbuf);
    if (fd_ < 0) throw std::runtime_error(std::string("connect: ") + std::strerror(-fd_));
  }
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  int fd() const { return fd_; }
  std::string& buffer() { return buf_; }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Close with RST instead of FIN.
  void reset() {
    linger lg{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close();
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Waits up to `timeout` for bytes and appends them to the buffer.
  Read read_more(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (r == 0) return Read::Timeout;
    char tmp[16384];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, MSG_DONTWAIT);
    if (n == 0) return Read::Eof;
    if (n < 0) return (errno == EAGAIN || errno == EINTR) ? Read::Timeout : Read::Reset;
    buf_.append(tmp, static_cast<size_t>(n));
    return Read::Data;
  }

  // Reads until the server closes (EOF or reset): true if that happens within timeout.
  bool wait_closed(std::chrono::milliseconds timeout) {
    auto until = Clock::now() + timeout;
    while (Clock::now() < until) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      Read r = read_more(std::max(left, 1ms));
      if (r == Read::Eof || r == Read::Reset) return true;
    }
    return false;
  }

  // The response head (status and headers) from the buffer, reading as needed.
  std::optional<Response> read_head(std::chrono::milliseconds timeout = 5000ms) {
    auto until = Clock::now() + timeout;
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!more(until)) return std::nullopt;
    }
    Response r;
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) return std::nullopt;
    r.status = std::stoi(status_line.substr(9, 3));
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos) e = head.size();
      std::string line = head.substr(pos, e - pos);
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        r.headers.emplace_back(lower(line.substr(0, colon)), value);
      }
      pos = e + 2;
    }
    r.chunked = lower(r.header("transfer-encoding")) == "chunked";
    return r;
  }

  // The next chunk's data of a chunked body ("" for the last chunk), or nullopt on timeout/EOF.
  std::optional<std::string> read_chunk(std::chrono::milliseconds timeout = 5000ms) {
    auto until = Clock::now() + timeout;
    size_t e;
    while ((e = buf_.find("\r\n")) == std::string::npos) {
      if (!more(until)) return std::nullopt;
    }
    size_t size = std::stoul(buf_.substr(0, e), nullptr, 16);
    while (buf_.size() < e + 2 + size + 2) {
      if (!more(until)) return std::nullopt;
    }
    std::string data = buf_.substr(e + 2, size);
    if (buf_.compare(e + 2 + size, 2, "\r\n") != 0) return std::nullopt;
    buf_.erase(0, e + 2 + size + 2);
    return data;
  }

  // A whole response. `head_request`: no body follows whatever the headers say.
  std::optional<Response> read_response(std::chrono::milliseconds timeout = 5000ms,
                                        bool head_request = false) {
    auto until = Clock::now() + timeout;
    auto r = read_head(timeout);
    if (!r) return std::nullopt;
    if (head_request || r->status < 200 || r->status == 204 || r->status == 304) return r;
    if (r->chunked) {
      for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
        auto chunk = read_chunk(std::max(left, 1ms));
        if (!chunk) return std::nullopt;
        if (chunk->empty()) break;
        r->body += *chunk;
      }
    } else if (r->has("content-length")) {
      size_t n = std::stoul(r->header("content-length"));
      while (buf_.size() < n) {
        if (!more(until)) return std::nullopt;
      }
      r->body = buf_.substr(0, n);
      buf_.erase(0, n);
    } else {
      while (more(until)) {
      }
      r->body = std::move(buf_);
      buf_.clear();
    }
    return r;
  }

 private:
  bool more(Clock::time_point until) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (left <= 0ms) return false;
    return read_more(left) == Read::Data;
  }

  int fd_ = -1;
  std::string buf_;
};

}  // namespace maas::test::http
