// Per-key request and token rates over a sliding minute. Tokens are reserved at admission from
// the most a request can use (prompt + max_tokens for every choice) and corrected to what it
// used when it ends, so a burst of large requests cannot overshoot the rate. Internal to the
// server layer; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace maas::server {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  struct Refusal {
    std::string limit;  // "rpm" or "tpm"
    std::string message;
    int retry_after = 1;  // seconds until the window has room
  };

  // Admits one request of up to `tokens` under the key's limits (none: always admitted) and
  // returns nothing, with *grant set for settle(); or the limit it would break.
  std::optional<Refusal> admit(const std::string& key_id, std::optional<int64_t> rpm,
                               std::optional<int64_t> tpm, int64_t tokens, Clock::time_point now,
                               uint64_t* grant);
  // The request that got `grant` used `tokens` in the end.
  void settle(const std::string& key_id, uint64_t grant, int64_t tokens);

 private:
  struct Entry {
    Clock::time_point at;
    int64_t tokens;
    uint64_t grant;
  };
  std::mutex mu_;
  std::unordered_map<std::string, std::deque<Entry>> windows_;
  uint64_t next_grant_ = 1;
};

}  // namespace maas::server
