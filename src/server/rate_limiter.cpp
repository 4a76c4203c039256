#include "server/rate_limiter.h"

#include <fmt/format.h>

#include <cmath>

namespace maas::server {

namespace {
constexpr auto kMinute = std::chrono::seconds(60);
}

std::optional<RateLimiter::Refusal> RateLimiter::check(const Scope& scope, int64_t tokens,
                                                       Clock::time_point now) {
  if (!scope.rpm && !scope.tpm) return std::nullopt;
  auto& w = windows_[scope.id];
  while (!w.empty() && now - w.front().at >= kMinute) w.pop_front();
  // Seconds until the entry at index i leaves the window.
  auto wait_for = [&](size_t i) {
    const double s = std::chrono::duration<double>(w[i].at + kMinute - now).count();
    return std::max(1, static_cast<int>(std::ceil(s)));
  };
  const std::string whose = scope.label.empty() ? "" : "the tenant's ";
  if (scope.rpm && static_cast<int64_t>(w.size()) >= *scope.rpm) {
    return Refusal{
        scope.label + "rpm",
        fmt::format("Rate limit reached: {}requests per minute (limit {})", whose, *scope.rpm),
        wait_for(w.size() - static_cast<size_t>(*scope.rpm))};
  }
  if (scope.tpm) {
    const int64_t tpm = *scope.tpm;
    if (tokens > tpm) {
      return Refusal{scope.label + "tpm",
                     fmt::format("Rate limit: this request may use {} tokens, more than {}"
                                 "tokens-per-minute limit of {}; lower max_tokens",
                                 tokens, scope.label.empty() ? "the " : "the tenant's ", tpm),
                     60};
    }
    int64_t used = 0;
    for (const Entry& e : w) used += e.tokens;
    if (used + tokens > tpm) {
      // Wait until enough of the oldest entries have left.
      int64_t freed = 0;
      size_t i = 0;
      while (i < w.size() && used - freed + tokens > tpm) freed += w[i++].tokens;
      return Refusal{scope.label + "tpm",
                     fmt::format("Rate limit reached: {}tokens per minute (limit {}, {} in use)",
                                 whose, tpm, used),
                     wait_for(i == 0 ? 0 : i - 1)};
    }
  }
  return std::nullopt;
}

std::optional<RateLimiter::Refusal> RateLimiter::admit(const std::vector<Scope>& scopes,
                                                       int64_t tokens, Clock::time_point now,
                                                       uint64_t* grant) {
  std::lock_guard lock(mu_);
  *grant = 0;
  for (const Scope& s : scopes) {
    if (auto refusal = check(s, tokens, now)) return refusal;
  }
  *grant = next_grant_++;
  for (const Scope& s : scopes) {
    if (s.rpm || s.tpm) windows_[s.id].push_back({now, tokens, *grant});
  }
  return std::nullopt;
}

void RateLimiter::settle(const std::vector<std::string>& scope_ids, uint64_t grant,
                         int64_t tokens) {
  if (grant == 0) return;
  std::lock_guard lock(mu_);
  for (const std::string& id : scope_ids) {
    auto it = windows_.find(id);
    if (it == windows_.end()) continue;
    for (Entry& e : it->second) {
      if (e.grant == grant) e.tokens = tokens;
    }
  }
}

}  // namespace maas::server
