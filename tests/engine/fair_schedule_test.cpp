// Fair scheduling in the engine on stories260K, driven step by step: a flooding tenant does not
// lock another out, weights split the computed tokens, priority classes are strict, an idle
// tenant banks no credit; every output still equals its solo run. Shares are measured here from
// the tokens the handles deliver, not from the engine's own accounting.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/engine_test_util.h"

namespace maas::test {
namespace {

using engine::Engine;
using engine::EngineConfig;
using engine::Request;
using engine::RequestHandle;

// A request of a tenant: one of a few short prompts, sampled with its own seed, a fixed length.
Request tenant_request(const std::string& tenant, int i, int64_t max_tokens, double weight = 1,
                       int32_t priority = 0) {
  static const char* starts[] = {"Once upon a time", "Lily and Tom went to the park", "The big dog",
                                 "One day", "Sam had a red ball"};
  const StoriesModel& m = stories();
  Request r;
  r.prompt = m.tok->encode(starts[static_cast<size_t>(i) % std::size(starts)], true, false);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = 0.8f;
  r.seed = 7000 + static_cast<uint64_t>(i) * 31 + std::hash<std::string>{}(tenant) % 1000;
  r.tenant = tenant;
  r.tenant_weight = weight;
  r.priority = priority;
  r.cache_salt = tenant;
  return r;
}

// The requests of a test, their handles and what they delivered.
struct Tracked {
  Request req;
  std::shared_ptr<RequestHandle> handle;
  Result got;
  int64_t first_token_step = -1;  // the step after which its first token had arrived
};

class Driver {
 public:
  explicit Driver(Engine& e) : e_(e) {}
  size_t submit(Request r) {
    Tracked t;
    t.req = std::move(r);
    t.handle = e_.submit(t.req);
    all_.push_back(std::move(t));
    return all_.size() - 1;
  }
  // One engine step; returns the tokens each tenant received in it.
  std::map<std::string, int64_t> step() {
    const engine::EngineStats before = e_.stats();
    e_.step();
    ++steps_;
    const engine::EngineStats after = e_.stats();
    prompt_tokens_ = static_cast<int64_t>((after.computed_tokens - after.decode_tokens) -
                                          (before.computed_tokens - before.decode_tokens));
    std::map<std::string, int64_t> tokens;
    for (Tracked& t : all_) {
      const size_t before = t.got.tokens.size();
      drain(*t.handle, t.got);
      tokens[t.req.tenant] += static_cast<int64_t>(t.got.tokens.size() - before);
      if (t.first_token_step < 0 && !t.got.tokens.empty()) t.first_token_step = steps_;
    }
    return tokens;
  }
  void run_to_end() {
    while (std::any_of(all_.begin(), all_.end(),
                       [](const Tracked& t) { return !t.handle->finished(); })) {
      step();
      ASSERT_LT(steps_, 100000) << "no progress";
    }
  }
  int64_t steps() const { return steps_; }
  // Prompt chunks' tokens (recomputation included) computed in the last step: all but the
  // decodes (one token of a sequence with one position left).
  int64_t prompt_tokens() const { return prompt_tokens_; }
  std::vector<Tracked>& all() { return all_; }
  int in_flight(const std::string& tenant) const {
    int n = 0;
    for (const Tracked& t : all_) n += t.req.tenant == tenant && !t.handle->finished() ? 1 : 0;
    return n;
  }
  int finished(const std::string& tenant) const {
    int n = 0;
    for (const Tracked& t : all_) n += t.req.tenant == tenant && t.handle->finished() ? 1 : 0;
    return n;
  }

 private:
  Engine& e_;
  std::vector<Tracked> all_;
  int64_t steps_ = 0;
  int64_t prompt_tokens_ = 0;
};

// Every request's tokens equal those of the same request run alone (a prefix of them if it was
// cancelled). A seed's tokens do not depend on max_tokens, so solo runs are shared by all tests.
void expect_solo_equal(const std::vector<Tracked>& all) {
  const StoriesModel& m = stories();
  EngineConfig c;
  c.max_running = 1;
  c.threads = 1;
  Engine solo(*m.model, *m.tok, c);
  static std::map<std::pair<std::vector<int32_t>, uint64_t>, std::vector<int32_t>> memo;
  for (size_t i = 0; i < all.size(); ++i) {
    const Tracked& t = all[i];
    ASSERT_TRUE(t.handle->finished()) << "request " << i;
    auto key = std::make_pair(t.req.prompt, *t.req.seed);
    auto it = memo.find(key);
    if (it == memo.end() || it->second.size() < t.got.tokens.size()) {
      Request r = t.req;
      r.tenant.clear();
      r.priority = 0;
      it = memo.insert_or_assign(key, run_alone(solo, r).tokens).first;
    }
    ASSERT_LE(t.got.tokens.size(), it->second.size());
    EXPECT_TRUE(std::equal(t.got.tokens.begin(), t.got.tokens.end(), it->second.begin()))
        << "request " << i << " of " << t.req.tenant;
    if (t.got.finish == engine::FinishReason::Cancelled) continue;
    EXPECT_EQ(static_cast<int64_t>(t.got.tokens.size()), t.req.max_tokens) << "request " << i;
  }
}

EngineConfig small_config(bool fair) {
  EngineConfig c;
  c.max_running = 8;
  c.token_budget = 128;
  c.threads = 1;
  c.fair_share = fair;
  return c;
}

class FloodTest : public ::testing::TestWithParam<bool> {};

// Tenant a floods 64 requests; b's 2 requests then run within two steps (a's newest sequences
// make room), while without fair share they wait until all but a's last 8 are done.
TEST_P(FloodTest, AFloodingTenantDoesNotLockOutAnother) {
  const bool fair = GetParam();
  const StoriesModel& m = stories();
  Engine e(*m.model, *m.tok, small_config(fair));
  Driver d(e);
  for (int i = 0; i < 64; ++i) d.submit(tenant_request("a", i, 24));
  for (int i = 0; i < 3; ++i) d.step();
  ASSERT_EQ(e.stats().running, 8);
  const int64_t b_from = d.steps();
  const size_t b0 = d.submit(tenant_request("b", 0, 24));
  const size_t b1 = d.submit(tenant_request("b", 1, 24));
  int a_finished_when_b_ran = -1;
  while (d.all()[b0].first_token_step < 0 || d.all()[b1].first_token_step < 0) {
    d.step();
    a_finished_when_b_ran = d.finished("a");
    ASSERT_LT(d.steps(), 10000);
  }
  const int64_t waited =
      std::max(d.all()[b0].first_token_step, d.all()[b1].first_token_step) - b_from;
  if (fair) {
    EXPECT_LE(waited, 2);
    EXPECT_EQ(a_finished_when_b_ran, 0);
    EXPECT_EQ(e.stats().fair_preemptions, 2u);  // 8 : 0 becomes 6 : 2, no more
    EXPECT_EQ(e.stats().active_tenants, 2);
  } else {
    EXPECT_GE(a_finished_when_b_ran, 56);
    EXPECT_GT(waited, 50);
    EXPECT_EQ(e.stats().fair_preemptions, 0u);
  }
  d.run_to_end();
  EXPECT_EQ(e.stats().kv_blocks_used, 0);
  EXPECT_EQ(e.stats().priority_preemptions, 0u);
  expect_solo_equal(d.all());
}

INSTANTIATE_TEST_SUITE_P(FairAndFifo, FloodTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "fair" : "fifo"; });

// Two saturating tenants with weights 3 : 1 receive tokens 3 : 1 over a window, though they
// submitted alternately (FIFO would give 1 : 1).
// "Once upon a time" and n times " there was a cat": a prompt of about 4n tokens.
std::string cat_story(int n) {
  std::string text = "Once upon a time";
  for (int i = 0; i < n; ++i) text += " there was a cat";
  return text;
}

TEST(FairSchedule, WeightsSplitTheTokens) {
  const StoriesModel& m = stories();
  for (bool fair : {true, false}) {
    Engine e(*m.model, *m.tok, small_config(fair));
    Driver d(e);
    for (int i = 0; i < 40; ++i) {
      d.submit(tenant_request("a", i, 30, 3));
      d.submit(tenant_request("b", i, 30, 1));
    }
    for (int i = 0; i < 20; ++i) d.step();  // the shares settle
    std::map<std::string, int64_t> window;
    for (int i = 0; i < 120; ++i) {
      for (const auto& [t, n] : d.step()) window[t] += n;
    }
    ASSERT_GT(d.in_flight("a"), 8);  // both still saturate at the end of the window
    ASSERT_GT(d.in_flight("b"), 8);
    const double ratio = static_cast<double>(window["a"]) / static_cast<double>(window["b"]);
    if (fair) {
      EXPECT_NEAR(ratio, 3.0, 0.3) << window["a"] << " : " << window["b"];
    } else {
      EXPECT_NEAR(ratio, 1.0, 0.2) << window["a"] << " : " << window["b"];
    }
    for (auto& t : d.all()) t.handle->cancel();
    d.run_to_end();
    expect_solo_equal(d.all());
  }
}

class PriorityTest : public ::testing::TestWithParam<bool> {};

// Interactive (0) before batch (-1): a batch request of an idle tenant waits while interactive
// ones do, and an interactive request takes a batch sequence's place when the slots are full.
TEST_P(PriorityTest, PriorityClassesAreStrict) {
  const bool fair = GetParam();
  const StoriesModel& m = stories();
  EngineConfig c = small_config(fair);
  c.max_running = 2;
  {
    Engine e(*m.model, *m.tok, c);
    Driver d(e);
    // A batch request submitted first, another of a third tenant while interactive ones wait:
    // neither FIFO nor fair share lets them in before the interactive ones.
    const size_t batch = d.submit(tenant_request("b", 0, 12, 1, -1));
    std::vector<size_t> interactive;
    for (int i = 0; i < 5; ++i) interactive.push_back(d.submit(tenant_request("a", i, 12)));
    d.step();
    d.step();
    const size_t batch2 = d.submit(tenant_request("c", 0, 12, 1, -1));
    d.run_to_end();
    int64_t last_interactive_start = 0;
    for (size_t i : interactive) {
      last_interactive_start = std::max(last_interactive_start, d.all()[i].first_token_step);
    }
    // They start only once no interactive one waits (possibly in the step the last one starts).
    EXPECT_GE(d.all()[batch].first_token_step, last_interactive_start);
    EXPECT_GE(d.all()[batch2].first_token_step, last_interactive_start);
    EXPECT_GT(last_interactive_start, 20);
    EXPECT_EQ(e.stats().fair_preemptions + e.stats().priority_preemptions, 0u);
    expect_solo_equal(d.all());
  }
  for (const std::string interactive_tenant : {"a", "b"}) {
    Engine e(*m.model, *m.tok, c);
    Driver d(e);
    d.submit(tenant_request("b", 0, 30, 1, -1));
    d.submit(tenant_request("b", 1, 30, 1, -1));
    for (int i = 0; i < 4; ++i) d.step();
    const size_t urgent = d.submit(tenant_request(interactive_tenant, 2, 10));
    d.step();
    EXPECT_EQ(d.all()[urgent].first_token_step, d.steps()) << interactive_tenant;
    EXPECT_EQ(e.stats().priority_preemptions, 1u);
    EXPECT_EQ(e.stats().running, 2);
    d.run_to_end();
    EXPECT_EQ(e.stats().fair_preemptions, 0u);
    expect_solo_equal(d.all());
  }
}

INSTANTIATE_TEST_SUITE_P(FairAndFifo, PriorityTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "fair" : "fifo"; });

// a and b share; b goes idle while a runs on alone for long; when b comes back with a flood it
// gets about half, not everything until its idle time is made up.
TEST(FairSchedule, AReturningTenantBanksNoCredit) {
  const StoriesModel& m = stories();
  EngineConfig c = small_config(true);
  c.max_running = 4;
  Engine e(*m.model, *m.tok, c);
  Driver d(e);
  int a_next = 0;
  auto keep_a_busy = [&] {
    while (d.in_flight("a") < 8) d.submit(tenant_request("a", a_next++, 16));
  };
  for (int i = 0; i < 6; ++i) d.submit(tenant_request("b", i, 16));
  for (int i = 0; i < 40; ++i) {
    keep_a_busy();
    d.step();
  }
  // b's requests end; a runs alone for a long time (what b could have banked: ~600 tokens).
  while (d.in_flight("b") > 0) {
    keep_a_busy();
    d.step();
  }
  for (int i = 0; i < 150; ++i) {
    keep_a_busy();
    d.step();
  }
  for (int i = 0; i < 30; ++i) d.submit(tenant_request("b", 100 + i, 16));
  std::map<std::string, int64_t> window;
  for (int i = 0; i < 80; ++i) {
    keep_a_busy();
    for (const auto& [t, n] : d.step()) window[t] += n;
  }
  ASSERT_GT(d.in_flight("b"), 0);
  const double a_share =
      static_cast<double>(window["a"]) / static_cast<double>(window["a"] + window["b"]);
  EXPECT_NEAR(a_share, 0.5, 0.1) << window["a"] << " : " << window["b"];
  for (auto& t : d.all()) t.handle->cancel();
  d.run_to_end();
  EXPECT_EQ(e.stats().kv_blocks_used, 0);
  expect_solo_equal(d.all());
}

// When prompts of several tenants wait for the step's token budget, the tenant served least so
// far (tokens per weight) goes first, though its prompt came later in the queue.
TEST(FairSchedule, PromptBudgetGoesToTheLeastServedTenant) {
  const StoriesModel& m = stories();
  EngineConfig c = small_config(true);
  c.token_budget = 48;
  c.prefix_cache = false;  // a's second prompt would be mostly cached
  Engine e(*m.model, *m.tok, c);
  Driver d(e);
  const std::string long_text = cat_story(40);
  // a's first request has a long prompt: a is charged far more than b for it.
  Request a0 = tenant_request("a", 0, 60);
  a0.prompt = m.tok->encode(long_text, true, false);
  ASSERT_GT(a0.prompt.size(), 150u);
  d.submit(a0);
  d.submit(tenant_request("b", 0, 60));
  for (int i = 0; i < 10; ++i) d.step();
  // Both now decode one sequence each; each sends a prompt of the same length, a's first.
  Request a1 = tenant_request("a", 1, 4);
  a1.prompt = m.tok->encode(long_text + " and a dog", true, false);
  Request b1 = a1;
  b1.tenant = b1.cache_salt = "b";
  const size_t ia = d.submit(a1), ib = d.submit(b1);
  while (d.all()[ia].first_token_step < 0 || d.all()[ib].first_token_step < 0) d.step();
  EXPECT_LT(d.all()[ib].first_token_step, d.all()[ia].first_token_step);
  d.run_to_end();
  expect_solo_equal(d.all());
}

// A prompt being prefilled in chunks leaves the step's budget to a waiting request served
// before it (another tenant with less service, or a higher priority): that one's first token
// comes in the next step, not after the long prompt is done, and its step is not filled up.
TEST(FairSchedule, WaitingRequestsServedFirstTakeTheBudgetFromRunningPrompts) {
  const StoriesModel& m = stories();
  const std::string long_text = cat_story(40);
  struct Case {
    bool fair;
    int32_t long_priority;
    bool short_waits;
  };
  for (const Case& k : {Case{true, 0, false}, Case{false, 0, true}, Case{false, -1, false}}) {
    EngineConfig c = small_config(k.fair);
    c.token_budget = 32;
    c.prefix_cache = false;
    Engine e(*m.model, *m.tok, c);
    Driver d(e);
    Request big = tenant_request("a", 0, 4, 1, k.long_priority);
    big.prompt = m.tok->encode(long_text, true, false);
    ASSERT_GT(big.prompt.size(), 150u);
    const size_t ibig = d.submit(big);
    d.step();
    const size_t ismall = d.submit(tenant_request("b", 1, 4));
    const int64_t submitted = d.steps();
    const uint64_t computed_before = e.stats().computed_tokens;
    d.step();
    // When the short prompt goes first, it has the step to itself (a's prompt waits a step).
    const uint64_t computed = e.stats().computed_tokens - computed_before;
    EXPECT_EQ(computed, k.short_waits ? 32u : d.all()[ismall].req.prompt.size());
    d.run_to_end();
    const int64_t waited = d.all()[ismall].first_token_step - submitted;
    if (k.short_waits) {
      EXPECT_GT(waited, 3) << "fair " << k.fair;
    } else {
      EXPECT_EQ(waited, 1) << "fair " << k.fair << " priority " << k.long_priority;
      EXPECT_LT(d.all()[ismall].first_token_step, d.all()[ibig].first_token_step);
    }
    EXPECT_EQ(e.stats().preemptions, 0u);
    expect_solo_equal(d.all());
  }
}

// While b (behind) decodes, the steps a's prompts lead (a is ahead, and within its share of the
// slots) take at most a's half of the budget (equal weights), and no more than the fair prompt
// chunk, so that a request of b never waits long for a step to end; FIFO fills them.
TEST(FairSchedule, StepsLedByATenantAheadAreShort) {
  const StoriesModel& m = stories();
  const std::string long_text = cat_story(20);
  struct Case {
    bool fair;
    int32_t chunk;
    int64_t most;  // prompt tokens in a step, at most and at least once
  };
  for (const Case& k : {Case{true, 0, 32}, Case{true, 12, 12}, Case{false, 12, 64}}) {
    EngineConfig c = small_config(k.fair);
    c.token_budget = 64;
    c.prefix_cache = false;
    c.fair_prompt_chunk = k.chunk;
    c.fair_step_ms = 0;  // short steps of the chunk exactly
    Engine e(*m.model, *m.tok, c);
    Driver d(e);
    d.submit(tenant_request("b", 0, 120));  // decodes all along
    for (int i = 0; i < 3; ++i) d.step();
    for (int i = 0; i < 3; ++i) {  // 3 of a's share of 4 slots: no flood
      Request r = tenant_request("a", i, 2);
      r.prompt = m.tok->encode(long_text + " number " + std::to_string(i), true, false);
      ASSERT_GT(r.prompt.size(), 70u);
      d.submit(r);
    }
    d.step();  // a starts level with b (at the clock): its first step may be full
    int64_t most = 0;
    for (int i = 0; i < 30; ++i) {
      d.step();
      most = std::max(most, d.prompt_tokens());
    }
    if (k.fair) {
      EXPECT_EQ(most, k.most) << "chunk " << k.chunk;
    } else {
      EXPECT_GE(most, 62);  // the budget but for the decodes
    }
    d.run_to_end();
    expect_solo_equal(d.all());
  }
}

// Alone, a tenant the engine holds (no more sequences than slots) fills the prompt budget; while
// it has more, each step computes at most the fair prompt chunk of its prompts, so that a request
// of another tenant arriving meanwhile would wait for a short step only. With a time target, a
// short step takes what fits in it at the measured time per token: all of the budget for a huge
// target, the chunk for a tiny one, whatever this machine's speed. FIFO fills the budget.
TEST(FairSchedule, ALoneTenantTakesShortStepsOnlyWhileItFloods) {
  const StoriesModel& m = stories();
  const std::string long_text = cat_story(12);
  struct Case {
    bool fair;
    double step_ms;
    bool short_steps;
  };
  for (const Case& k : {Case{true, 0, true}, Case{true, 1e-6, true}, Case{true, 1e9, false},
                        Case{false, 0, false}}) {
    SCOPED_TRACE(testing::Message() << "fair " << k.fair << ", step " << k.step_ms << " ms");
    EngineConfig c = small_config(k.fair);  // 8 slots, 128 tokens a step
    c.fair_prompt_chunk = 16;
    c.fair_step_ms = k.step_ms;
    c.prefix_cache = false;
    Engine e(*m.model, *m.tok, c);
    Driver d(e);
    auto long_request = [&](int i) {
      Request r = tenant_request("a", i, 6);
      r.prompt = m.tok->encode(long_text + " number " + std::to_string(i), true, false);
      return r;
    };
    for (int i = 0; i < 4; ++i) d.submit(long_request(i));
    ASSERT_GT(d.all()[0].req.prompt.size() * 4, 128u);
    d.step();
    EXPECT_EQ(d.prompt_tokens(), 128);
    for (int i = 4; i < 16; ++i) d.submit(long_request(i));
    int64_t most = 0, flooded = 0;
    while (d.in_flight("a") > 8) {  // more sequences than slots as the step starts
      d.step();
      most = std::max(most, d.prompt_tokens());
      ++flooded;
    }
    EXPECT_GT(flooded, 5);
    if (k.short_steps) {
      EXPECT_EQ(most, 16);
    } else {
      EXPECT_GE(most, 120);
    }
    d.run_to_end();
    EXPECT_EQ(e.stats().preemptions, 0u);
    expect_solo_equal(d.all());
  }
}

// a floods the engine (short steps); b's two requests arrive. The next step computes both of b's
// prompts whole and none of a's, so both first tokens come after one step; then, while b decodes,
// a (flooding, and ahead or just behind b after b's burst) is held to short steps again: no long
// catch-up step delays b's next tokens or its next request.
TEST(FairSchedule, ANewcomersPromptsGetAStepOfTheirOwnBetweenShortOnes) {
  const StoriesModel& m = stories();
  std::string a_text = "Once upon a time";
  for (int i = 0; i < 12; ++i) a_text += " there was a cat";
  std::string b_text = "Lily and Tom went to the park";
  for (int i = 0; i < 4; ++i) b_text += " and they played with a ball";
  EngineConfig c = small_config(true);  // 8 slots, 128 tokens a step
  c.fair_prompt_chunk = 16;
  c.fair_step_ms = 0;  // short steps of the chunk exactly
  c.prefix_cache = false;
  Engine e(*m.model, *m.tok, c);
  Driver d(e);
  for (int i = 0; i < 24; ++i) {
    Request r = tenant_request("a", i, 30);
    r.prompt = m.tok->encode(a_text + " number " + std::to_string(i), true, false);
    d.submit(r);
  }
  for (int i = 0; i < 8; ++i) {
    d.step();
    EXPECT_LE(d.prompt_tokens(), 16);
  }
  std::vector<size_t> b;
  for (int i = 0; i < 2; ++i) {
    Request r = tenant_request("b", i, 20);
    r.prompt = m.tok->encode(b_text + " number " + std::to_string(i), true, false);
    b.push_back(d.submit(r));
  }
  const int64_t b_prompts =
      static_cast<int64_t>(d.all()[b[0]].req.prompt.size() + d.all()[b[1]].req.prompt.size());
  ASSERT_GT(b_prompts, 64);
  d.step();
  EXPECT_EQ(d.all()[b[0]].first_token_step, d.steps());
  EXPECT_EQ(d.all()[b[1]].first_token_step, d.steps());
  EXPECT_EQ(d.prompt_tokens(), b_prompts);
  int64_t most = 0;
  while (d.in_flight("b") > 0) {
    d.step();
    most = std::max(most, d.prompt_tokens());
  }
  EXPECT_EQ(most, 16);
  EXPECT_EQ(e.stats().fair_preemptions, 2u);  // b's slots
  d.run_to_end();
  expect_solo_equal(d.all());
}

// Random tenants, weights, priorities, prompt lengths, arrivals and cancellations in a pool too
// small for all: nothing is lost (the engine goes idle only when every request has finished),
// no block leaks, and every output equals its solo run.
TEST(FairSchedule, StressManyTenantsLosesNothing) {
  const StoriesModel& m = stories();
  const std::string long_text = cat_story(12);
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::mt19937 rng(seed);
    EngineConfig c = small_config(true);
    c.max_running = 1 + static_cast<int32_t>(rng() % 6);
    c.token_budget = 8 + static_cast<int32_t>(rng() % 64);
    c.block_size = 8;
    c.kv_memory = model::KvCache::bytes_per_block(m.model->hparams(), 8, c.kv_type) * 72;
    Engine e(*m.model, *m.tok, c);
    Driver d(e);
    const char* tenants[] = {"a", "b", "c", ""};
    for (int step = 0; step < 400; ++step) {
      if (d.all().size() < 60 && rng() % 3 == 0) {
        const int i = static_cast<int>(d.all().size());
        Request r =
            tenant_request(tenants[rng() % 4], 500 + i, 1 + static_cast<int64_t>(rng() % 24),
                           1 + rng() % 4, rng() % 3 == 0 ? -1 : 0);
        if (rng() % 3 == 0) r.prompt = m.tok->encode(long_text, true, false);
        d.submit(r);
      }
      for (auto& t : d.all()) {
        if (rng() % 400 == 0) t.handle->cancel();
      }
      d.step();
    }
    int steps_idle = 0;
    while (std::any_of(d.all().begin(), d.all().end(),
                       [](const Tracked& t) { return !t.handle->finished(); })) {
      ASSERT_TRUE(e.step()) << "the engine is idle with requests unfinished (seed " << seed << ")";
      d.step();
      ASSERT_LT(++steps_idle, 20000);
    }
    EXPECT_EQ(e.stats().kv_blocks_used, 0);
    expect_solo_equal(d.all());
  }
}

// The engine's count of decode tokens, which the tests above subtract from the computed tokens:
// one per generated token but the last (never computed), none for prompt chunks.
TEST(FairSchedule, DecodeTokensAreOnePerGeneratedTokenButTheLast) {
  const StoriesModel& m = stories();
  EngineConfig c = small_config(true);
  c.token_budget = 10;
  c.prefix_cache = false;
  Engine e(*m.model, *m.tok, c);
  Request r = tenant_request("a", 0, 7);
  r.prompt =
      m.tok->encode("Lily and Tom went to the park and they played with a ball", true, false);
  ASSERT_GT(r.prompt.size(), 10u);
  ASSERT_NE(r.prompt.size() % 10, 1u);  // no prompt chunk of one token
  run_alone(e, r);
  EXPECT_EQ(e.stats().computed_tokens, r.prompt.size() + 6);
  EXPECT_EQ(e.stats().decode_tokens, 6u);
}

TEST(FairSchedule, RefusesBadWeights) {
  const StoriesModel& m = stories();
  Engine e(*m.model, *m.tok, small_config(true));
  for (double w : {0.0, -1.0, std::nan(""), static_cast<double>(INFINITY)}) {
    EXPECT_THROW(e.submit(tenant_request("a", 0, 4, w)), engine::InvalidRequest) << w;
  }
}

}  // namespace
}  // namespace maas::test
