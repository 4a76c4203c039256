// Request and token rates per key and per tenant over a sliding minute. Tokens are reserved at
// admission from the most a request can use (prompt + max_tokens for every choice) and corrected to
// what it used when it ends, so a burst of large requests cannot overshoot the rate. Internal to
// the server layer; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace maas::server {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  // One window a request counts against, e.g. its key's and its tenant's.
  struct Scope {
    std::string id;     // the window's identity ("key:ID", "tenant:ID")
    std::string label;  // for messages and the error's param: "" (key) or "tenant_"
    std::optional<int64_t> rpm, tpm;
  };
  struct Refusal {
    std::string limit;  // label + "rpm" or "tpm"
    std::string message;
    int retry_after = 1;  // seconds until the window has room
  };

  // Admits one request of up to `tokens` if every scope has room (a scope without limits always
  // has) and counts it in each; returns nothing, with *grant set for settle(); or the first limit
  // it would break, counting it nowhere.
  std::optional<Refusal> admit(const std::vector<Scope>& scopes, int64_t tokens,
                               Clock::time_point now, uint64_t* grant);
  // The request that got `grant` used `tokens` in the end.
  void settle(const std::vector<std::string>& scope_ids, uint64_t grant, int64_t tokens);

 private:
  struct Entry {
    Clock::time_point at;
    int64_t tokens;
    uint64_t grant;
  };
  std::optional<Refusal> check(const Scope& scope, int64_t tokens, Clock::time_point now);

  std::mutex mu_;
  std::unordered_map<std::string, std::deque<Entry>> windows_;
  uint64_t next_grant_ = 1;
};

}  // namespace maas::server
