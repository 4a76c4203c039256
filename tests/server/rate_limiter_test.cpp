// The rate limiter against a brute-force reference: a request is admitted iff, in every scope it
// counts against, fewer than rpm requests and at most tpm - tokens tokens were admitted within
// the last 60 s (reservations corrected by settle).
#include "server/rate_limiter.h"

#include <gtest/gtest.h>

#include <random>

namespace maas::server {
namespace {

using Clock = RateLimiter::Clock;
using std::chrono::milliseconds;

struct Admitted {
  Clock::time_point at;
  std::vector<std::string> scopes;
  int64_t tokens;
  uint64_t grant;
};

TEST(RateLimiter, MatchesBruteForceOverRandomTraffic) {
  std::mt19937 rng(7);
  // Two keys of one tenant plus a key of another; the tenant has its own limits.
  struct Caller {
    RateLimiter::Scope key, tenant;
  };
  const std::vector<Caller> callers = {
      {{"key:a", "", 5, 400}, {"tenant:t", "tenant_", 8, 600}},
      {{"key:b", "", std::nullopt, 300}, {"tenant:t", "tenant_", 8, 600}},
      {{"key:c", "", 3, std::nullopt}, {"tenant:u", "tenant_", std::nullopt, std::nullopt}},
  };
  RateLimiter limiter;
  std::vector<Admitted> admitted;
  const Clock::time_point t0{};
  Clock::time_point now = t0;
  int refusals = 0, admits = 0;
  for (int i = 0; i < 3000; ++i) {
    now += milliseconds(rng() % 2500);
    const Caller& c = callers[rng() % callers.size()];
    const int64_t tokens = 1 + static_cast<int64_t>(rng() % 120);
    // Reference decision.
    bool ok = true;
    for (const auto* s : {&c.key, &c.tenant}) {
      int64_t n = 0, used = 0;
      for (const auto& a : admitted) {
        if (now - a.at >= std::chrono::seconds(60)) continue;
        if (std::find(a.scopes.begin(), a.scopes.end(), s->id) == a.scopes.end()) continue;
        ++n;
        used += a.tokens;
      }
      if (s->rpm && n >= *s->rpm) ok = false;
      if (s->tpm && used + tokens > *s->tpm) ok = false;
    }
    uint64_t grant = 99;
    auto refusal = limiter.admit({c.key, c.tenant}, tokens, now, &grant);
    ASSERT_EQ(!refusal, ok) << "request " << i;
    if (refusal) {
      ++refusals;
      EXPECT_EQ(grant, 0u);
      EXPECT_GE(refusal->retry_after, 1);
      EXPECT_LE(refusal->retry_after, 60);
      const bool tenant_limit = refusal->limit.rfind("tenant_", 0) == 0;
      EXPECT_EQ(tenant_limit, refusal->message.find("tenant") != std::string::npos);
      continue;
    }
    ++admits;
    ASSERT_NE(grant, 0u);
    admitted.push_back({now, {c.key.id, c.tenant.id}, tokens, grant});
    // Half of the requests end early and use less than they reserved.
    if (rng() % 2 == 0) {
      Admitted& a = admitted[rng() % admitted.size()];
      a.tokens = static_cast<int64_t>(rng() % (a.tokens + 1));
      limiter.settle(a.scopes, a.grant, a.tokens);
    }
  }
  // Both outcomes were exercised, so the comparison means something.
  EXPECT_GT(refusals, 300);
  EXPECT_GT(admits, 300);
}

TEST(RateLimiter, RefusalNamesTheScopeAndCountsNowhere) {
  RateLimiter limiter;
  const Clock::time_point now{};
  const RateLimiter::Scope key{"key:k", "", 10, std::nullopt};
  const RateLimiter::Scope tenant{"tenant:t", "tenant_", 1, std::nullopt};
  uint64_t grant = 0;
  EXPECT_FALSE(limiter.admit({key, tenant}, 5, now, &grant));
  auto r = limiter.admit({key, tenant}, 5, now + milliseconds(10), &grant);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->limit, "tenant_rpm");
  EXPECT_EQ(r->retry_after, 60);
  // The refused request did not count against the key: 9 more fit under its own rpm of 10.
  for (int i = 0; i < 9; ++i) EXPECT_FALSE(limiter.admit({key}, 5, now, &grant)) << i;
  r = limiter.admit({key}, 5, now, &grant);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->limit, "rpm");
  // A request alone over a tpm is refused at once, for a whole minute.
  r = limiter.admit({{"key:z", "", std::nullopt, 100}}, 101, now, &grant);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->limit, "tpm");
  EXPECT_NE(r->message.find("tokens-per-minute"), std::string::npos);
}

}  // namespace
}  // namespace maas::server
