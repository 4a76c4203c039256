#include "server/rate_limiter.h"

#include <fmt/format.h>

#include <cmath>

namespace maas::server {

std::optional<RateLimiter::Refusal> RateLimiter::admit(const std::string& key_id,
                                                       std::optional<int64_t> rpm,
                                                       std::optional<int64_t> tpm, int64_t tokens,
                                                       Clock::time_point now, uint64_t* grant) {
  std::lock_guard lock(mu_);
  *grant = 0;
  if (!rpm && !tpm) return std::nullopt;
  auto& w = windows_[key_id];
  const auto minute = std::chrono::seconds(60);
  while (!w.empty() && now - w.front().at >= minute) w.pop_front();
  // Seconds until the entry at index i leaves the window.
  auto wait_for = [&](size_t i) {
    const double s = std::chrono::duration<double>(w[i].at + minute - now).count();
    return std::max(1, static_cast<int>(std::ceil(s)));
  };
  if (rpm && static_cast<int64_t>(w.size()) >= *rpm) {
    return Refusal{"rpm", fmt::format("Rate limit reached: requests per minute (limit {})", *rpm),
                   wait_for(w.size() - static_cast<size_t>(*rpm))};
  }
  if (tpm) {
    if (tokens > *tpm) {
      return Refusal{"tpm",
                     fmt::format("Rate limit: this request may use {} tokens, more than the "
                                 "tokens-per-minute limit of {}; lower max_tokens",
                                 tokens, *tpm),
                     60};
    }
    int64_t used = 0;
    for (const Entry& e : w) used += e.tokens;
    if (used + tokens > *tpm) {
      // Wait until enough of the oldest entries have left.
      int64_t freed = 0;
      size_t i = 0;
      while (i < w.size() && used - freed + tokens > *tpm) freed += w[i++].tokens;
      return Refusal{
          "tpm",
          fmt::format("Rate limit reached: tokens per minute (limit {}, {} in use)", *tpm, used),
          wait_for(i == 0 ? 0 : i - 1)};
    }
  }
  *grant = next_grant_++;
  w.push_back({now, tokens, *grant});
  return std::nullopt;
}

void RateLimiter::settle(const std::string& key_id, uint64_t grant, int64_t tokens) {
  if (grant == 0) return;
  std::lock_guard lock(mu_);
  auto it = windows_.find(key_id);
  if (it == windows_.end()) return;
  for (Entry& e : it->second) {
    if (e.grant == grant) e.tokens = tokens;
  }
}

}  // namespace maas::server
