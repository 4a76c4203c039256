// The serving engine on the real stories260K model: batch invariance under concurrency, prefix
// caching, preemption and cancellation without leaks, stop strings, logprobs, n > 1.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "convert/convert.h"
#include "engine/engine_test_util.h"
#include "support/test_util.h"

namespace maas::test {
namespace {

using engine::Engine;
using engine::EngineConfig;
using engine::FinishReason;
using engine::Request;

class ConcurrencyTest : public ::testing::TestWithParam<bool> {};

// Acceptance 1: 32 concurrent requests, arriving at different steps, under budgets that chunk
// their prompts differently, each give exactly the tokens they give alone.
TEST_P(ConcurrencyTest, ThirtyTwoRequestsEqualTheirSoloRuns) {
  const bool seeded = GetParam();
  const StoriesModel& m = stories();
  const auto ps = prompts();
  std::vector<Result> solo;
  {
    EngineConfig c;
    c.max_running = 1;
    c.token_budget = 512;
    Engine e(*m.model, *m.tok, c);
    for (size_t i = 0; i < ps.size(); ++i) {
      solo.push_back(run_alone(e, make_request(m, ps[i], static_cast<int>(i), seeded)));
      ASSERT_FALSE(solo.back().tokens.empty());
    }
  }
  for (int32_t budget : {7, 64, 300}) {
    EngineConfig c;
    c.max_running = 32;
    c.token_budget = budget;
    c.threads = 2;
    Engine e(*m.model, *m.tok, c);
    std::mt19937 rng(static_cast<uint32_t>(budget));
    std::vector<std::shared_ptr<engine::RequestHandle>> handles(ps.size());
    std::vector<Result> got(ps.size());
    size_t submitted = 0;
    while (true) {
      // Arrivals: zero to three new requests per step.
      for (int k = static_cast<int>(rng() % 4); k > 0 && submitted < ps.size(); --k, ++submitted) {
        handles[submitted] =
            e.submit(make_request(m, ps[submitted], static_cast<int>(submitted), seeded));
      }
      const bool busy = e.step();
      for (size_t i = 0; i < submitted; ++i) drain(*handles[i], got[i]);
      if (!busy && submitted == ps.size()) break;
    }
    for (size_t i = 0; i < ps.size(); ++i) {
      EXPECT_EQ(got[i].tokens, solo[i].tokens) << "request " << i << " budget " << budget;
      EXPECT_EQ(got[i].text, solo[i].text) << "request " << i;
      EXPECT_EQ(got[i].finish, solo[i].finish) << "request " << i;
    }
    EXPECT_EQ(e.stats().kv_blocks_used, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(GreedyAndSeeded, ConcurrencyTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "seeded" : "greedy"; });

// The engine's greedy path against the plain Session loop (an independent driver of the model):
// the stories260K reference text of the README starts the same way.
TEST(EngineTest, GreedyMatchesTheSessionLoop) {
  const StoriesModel& m = stories();
  Request r;
  r.prompt = m.tok->encode("Once upon a time", true, false);
  r.sampling.temperature = 0;
  r.max_tokens = 60;
  EngineConfig c;
  c.kv_type = model::KvType::F32;
  Engine e(*m.model, *m.tok, c);
  const Result got = run_alone(e, r);

  model::Session s(*m.model, 0, nullptr);
  std::vector<int32_t> want;
  auto logits = s.eval(r.prompt);
  for (int i = 0; i < 60; ++i) {
    const int32_t t = engine::argmax(logits);
    want.push_back(t);
    if (m.tok->is_eog(t)) break;
    logits = s.eval({&t, 1});
  }
  EXPECT_EQ(got.tokens, want);
  EXPECT_EQ(got.text.substr(0, 40),
            std::string(", there was a little girl named Lily. She").substr(0, 40));
}

// Acceptance 2: a request sharing a 90% prefix with an earlier one prefills only the rest.
TEST(EngineTest, SharedPrefixIsNotRecomputed) {
  const StoriesModel& m = stories();
  EngineConfig c;
  Engine e(*m.model, *m.tok, c);
  std::string base = "Once upon a time";
  for (int i = 0; i < 40; ++i) base += " there was a cat";
  Request a;
  a.prompt = m.tok->encode(base + " and a dog who liked to run", true, false);
  a.max_tokens = 5;
  a.sampling.temperature = 0;
  Request b = a;
  b.prompt = m.tok->encode(base + " and a bird that could sing", true, false);
  size_t common = 0;
  while (common < a.prompt.size() && a.prompt[common] == b.prompt[common]) ++common;
  ASSERT_GE(static_cast<double>(common), 0.9 * static_cast<double>(b.prompt.size()));

  const Result ra = run_alone(e, a);
  EXPECT_EQ(ra.usage.cached_tokens, 0);
  const uint64_t computed_before = e.stats().computed_tokens;
  const Result rb = run_alone(e, b);
  const int64_t bs = c.block_size;
  const auto cached = static_cast<int64_t>(common) / bs * bs;
  EXPECT_EQ(rb.usage.cached_tokens, cached);
  EXPECT_EQ(rb.usage.prompt_tokens, static_cast<int64_t>(b.prompt.size()));
  // Prompt positions computed: only the uncached rest; then one per generated token but the last.
  EXPECT_EQ(e.stats().computed_tokens - computed_before,
            static_cast<uint64_t>(static_cast<int64_t>(b.prompt.size()) - cached +
                                  rb.usage.completion_tokens - 1));
  // Reused blocks give the same tokens as a cold run.
  EngineConfig cold = c;
  cold.prefix_cache = false;
  Engine e2(*m.model, *m.tok, cold);
  EXPECT_EQ(run_alone(e2, b).tokens, rb.tokens);
  // Another cache salt (tenant) does not see the entries.
  Request salted = b;
  salted.cache_salt = "tenant-b";
  EXPECT_EQ(run_alone(e, salted).usage.cached_tokens, 0);
}

// Acceptance 2: random arrivals, cancellations and preemptions in a pool too small for all; no
// block leaks and every finished output equals its solo run.
TEST(EngineTest, StressWithPreemptionAndCancellationLeaksNothing) {
  const StoriesModel& m = stories();
  const auto ps = prompts();
  std::vector<Result> solo;
  {
    Engine e(*m.model, *m.tok, EngineConfig{});
    for (size_t i = 0; i < ps.size(); ++i) {
      solo.push_back(run_alone(e, make_request(m, ps[i], static_cast<int>(i), i % 2 == 1)));
    }
  }
  EngineConfig c;
  c.max_running = 16;
  c.token_budget = 48;
  c.block_size = 8;
  // 64 blocks of 8 positions: one 512-token context, far less than 16 sequences need.
  c.kv_memory = model::KvCache::bytes_per_block(m.model->hparams(), 8, c.kv_type) * 64;
  Engine e(*m.model, *m.tok, c);
  std::mt19937 rng(99);
  std::vector<std::shared_ptr<engine::RequestHandle>> handles;
  std::vector<Result> got(ps.size());
  std::vector<bool> cancel_at(ps.size());
  for (size_t i = 0; i < ps.size(); ++i) cancel_at[i] = rng() % 5 == 0;
  size_t submitted = 0;
  int step = 0;
  while (true) {
    if (submitted < ps.size() && rng() % 2 == 0) {
      handles.push_back(
          e.submit(make_request(m, ps[submitted], static_cast<int>(submitted), submitted % 2)));
      ++submitted;
    }
    for (size_t i = 0; i < handles.size(); ++i) {
      if (cancel_at[i] && rng() % 10 == 0) handles[i]->cancel();
    }
    const bool busy = e.step();
    ++step;
    for (size_t i = 0; i < handles.size(); ++i) drain(*handles[i], got[i]);
    if (!busy && submitted == ps.size()) break;
    ASSERT_LT(step, 100000) << "no progress";
  }
  const auto st = e.stats();
  EXPECT_GT(st.preemptions, 0u) << "the pool was meant to be too small";
  EXPECT_EQ(st.kv_blocks_used, 0);
  EXPECT_EQ(st.kv_blocks_free, st.kv_blocks_total);
  int finished = 0, cancelled = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    ASSERT_TRUE(handles[i]->finished());
    if (got[i].finish == FinishReason::Cancelled) {
      ++cancelled;
      EXPECT_TRUE(cancel_at[i]);
      // What it produced before the cancellation is a prefix of its solo run.
      ASSERT_LE(got[i].tokens.size(), solo[i].tokens.size());
      EXPECT_TRUE(std::equal(got[i].tokens.begin(), got[i].tokens.end(), solo[i].tokens.begin()));
      continue;
    }
    ++finished;
    EXPECT_EQ(got[i].tokens, solo[i].tokens) << "request " << i;
    EXPECT_EQ(got[i].finish, solo[i].finish);
  }
  EXPECT_GT(finished, 0);
  EXPECT_GT(cancelled, 0);
}

TEST(EngineTest, CancellationFreesBlocksWithinOneStep) {
  const StoriesModel& m = stories();
  Engine e(*m.model, *m.tok, EngineConfig{});
  Request r = make_request(m, "Once upon a time", 0, false);
  r.max_tokens = 200;
  auto h = e.submit(r);
  for (int i = 0; i < 5; ++i) e.step();
  EXPECT_GT(e.stats().kv_blocks_used, 0);
  h->cancel();
  e.step();
  EXPECT_TRUE(h->finished());
  EXPECT_EQ(e.stats().kv_blocks_used, 0);
  EXPECT_EQ(e.stats().running, 0);
  Result res;
  drain(*h, res);
  EXPECT_EQ(res.finish, FinishReason::Cancelled);
}

// Callers cancel from other threads, and a notify callback runs on the engine thread while the
// step finishes cancelled requests: a request cancelled in between is finished too, not dropped.
TEST(EngineTest, CancellationDuringTheCancellationPassIsNotLost) {
  const StoriesModel& m = stories();
  Engine e(*m.model, *m.tok, EngineConfig{});
  auto first = e.submit(make_request(m, "One day", 0, false));
  auto second = e.submit(make_request(m, "One day", 1, false));
  second->set_notify([&] { first->cancel(); });  // runs when second's cancellation is delivered
  second->cancel();
  for (int i = 0; i < 3 && !first->finished(); ++i) e.step();
  ASSERT_TRUE(first->finished());
  Result res;
  drain(*first, res);
  EXPECT_EQ(res.finish, FinishReason::Cancelled);
  EXPECT_FALSE(e.step());
}

// Acceptance 3: a stop string that spans a token boundary ends the text just before it.
TEST(EngineTest, StopStringsSplitAcrossTokens) {
  const StoriesModel& m = stories();
  Engine e(*m.model, *m.tok, EngineConfig{});
  Request r = make_request(m, "Once upon a time", 0, false);
  r.max_tokens = 80;
  const Result full = run_alone(e, r);
  // Find a token boundary inside the text and a stop string straddling it.
  std::string text;
  std::vector<size_t> ends;
  for (int32_t t : full.tokens) {
    text += m.tok->token_to_piece(t);
    ends.push_back(text.size());
  }
  size_t k = ends.size() / 2;
  while (k < ends.size() && ends[k] - ends[k - 1] < 2) ++k;  // a token of 2+ bytes
  ASSERT_LT(k, ends.size());
  const size_t cut = ends[k - 1];
  const std::string stop = text.substr(cut - 2, 4);  // 2 bytes before, 2 after the boundary
  const size_t first = full.text.find(stop);
  ASSERT_NE(first, std::string::npos);
  r.stop = {"never appears", stop};
  const Result got = run_alone(e, r);
  EXPECT_EQ(got.text, full.text.substr(0, first));
  EXPECT_EQ(got.finish, FinishReason::Stop);
  EXPECT_EQ(got.text.find(stop), std::string::npos);
  // Stop token ids end the sequence too, without their text.
  Request r2 = make_request(m, "Once upon a time", 0, false);
  r2.max_tokens = 80;
  r2.stop_token_ids = {full.tokens[5]};
  const Result got2 = run_alone(e, r2);
  const auto at = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[5]);
  EXPECT_EQ(got2.tokens, std::vector<int32_t>(full.tokens.begin(), at + 1));
  EXPECT_EQ(got2.finish, FinishReason::Stop);
}

// Acceptance 3: logprobs agree with a direct forward pass (Session, log-softmax in the test).
TEST(EngineTest, LogprobsAgreeWithADirectForwardPass) {
  const StoriesModel& m = stories();
  EngineConfig c;
  c.kv_type = model::KvType::F32;
  Engine e(*m.model, *m.tok, c);
  Request r = make_request(m, "The big dog", 0, true);
  r.max_tokens = 12;
  r.logprobs = 5;
  r.prompt_logprobs = true;
  const Result got = run_alone(e, r);
  ASSERT_EQ(got.outputs.size(), got.tokens.size());

  model::Session s(*m.model, 0, nullptr);
  std::vector<int32_t> all = r.prompt;
  all.insert(all.end(), got.tokens.begin(), got.tokens.end());
  std::vector<float> logits;
  s.eval(all, &logits);
  const size_t V = static_cast<size_t>(m.model->hparams().n_vocab);
  auto log_softmax = [&](size_t pos) {
    std::vector<double> lp(V);
    double mx = -INFINITY, z = 0;
    for (size_t i = 0; i < V; ++i) mx = std::max<double>(mx, logits[pos * V + i]);
    for (size_t i = 0; i < V; ++i) z += std::exp(logits[pos * V + i] - mx);
    for (size_t i = 0; i < V; ++i) lp[i] = logits[pos * V + i] - mx - std::log(z);
    return lp;
  };
  for (size_t j = 0; j < got.tokens.size(); ++j) {
    const auto lp = log_softmax(r.prompt.size() - 1 + j);
    const auto& o = got.outputs[j];
    EXPECT_NEAR(o.logprob, lp[static_cast<size_t>(o.token)], 1e-4);
    ASSERT_EQ(o.top.size(), 5u);
    std::vector<size_t> order(V);
    for (size_t i = 0; i < V; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lp[a] > lp[b]; });
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_EQ(static_cast<size_t>(o.top[i].token), order[i]);
      EXPECT_NEAR(o.top[i].logprob, lp[order[i]], 1e-4);
    }
  }
  // Prompt logprobs: token i's probability given tokens < i.
  ASSERT_EQ(got.prompt_logprobs.size(), r.prompt.size() - 1);
  for (size_t i = 1; i < r.prompt.size(); ++i) {
    const auto lp = log_softmax(i - 1);
    EXPECT_EQ(got.prompt_logprobs[i - 1].token, r.prompt[i]);
    EXPECT_NEAR(got.prompt_logprobs[i - 1].logprob, lp[static_cast<size_t>(r.prompt[i])], 1e-4);
  }
}

// Acceptance 3: n > 1 with a seed: choice i is the single request with seed + i; the prompt is
// computed once.
TEST(EngineTest, SeveralChoicesShareThePromptAndFollowTheirSeeds) {
  const StoriesModel& m = stories();
  Engine e(*m.model, *m.tok, EngineConfig{});
  Request r = make_request(m, "Sam had a red ball and a blue kite", 0, true);
  r.max_tokens = 30;
  r.n = 4;
  const uint64_t before = e.stats().computed_tokens;
  auto h = e.submit(r);
  std::map<int32_t, Result> by_choice;
  while (e.step()) {
  }
  std::vector<engine::Output> outs;
  while (h->try_next(outs)) {
  }
  for (const auto& o : outs) {
    Result& res = by_choice[o.index];
    for (const auto& t : o.tokens) res.tokens.push_back(t.token);
    res.text += o.text;
    if (o.finish != FinishReason::None) res.finish = o.finish;
  }
  ASSERT_EQ(by_choice.size(), 4u);
  int64_t total = 0;
  for (auto& [i, res] : by_choice) total += static_cast<int64_t>(res.tokens.size());
  // The prompt once, then each choice's tokens but its last.
  EXPECT_EQ(e.stats().computed_tokens - before,
            static_cast<uint64_t>(static_cast<int64_t>(r.prompt.size()) + total - 4));
  EXPECT_EQ(h->usage().completion_tokens, total);
  std::set<std::vector<int32_t>> distinct;
  for (int32_t i = 0; i < 4; ++i) {
    Request one = r;
    one.n = 1;
    one.seed = *r.seed + static_cast<uint64_t>(i);
    const Result alone = run_alone(e, one);
    EXPECT_EQ(by_choice[i].tokens, alone.tokens) << "choice " << i;
    EXPECT_EQ(by_choice[i].text, alone.text) << "choice " << i;
    distinct.insert(alone.tokens);
  }
  EXPECT_GT(distinct.size(), 1u);
  EXPECT_EQ(e.stats().kv_blocks_used, 0);
}

TEST(EngineTest, RefusesRequestsThatCannotRun) {
  const StoriesModel& m = stories();
  EngineConfig c;
  c.max_context = 128;
  c.block_size = 16;
  c.kv_memory = model::KvCache::bytes_per_block(m.model->hparams(), 16, c.kv_type) * 10;
  Engine e(*m.model, *m.tok, c);
  Request ok = make_request(m, "Once upon a time", 0, false);
  ok.max_tokens = 10;
  EXPECT_NO_THROW(e.submit(ok));
  Request r = ok;
  r.prompt.assign(128, 5);
  EXPECT_THROW(e.submit(r), engine::InvalidRequest);  // prompt fills the context
  r = ok;
  r.max_tokens = 125;
  EXPECT_THROW(e.submit(r), engine::InvalidRequest);  // prompt + max_tokens > context
  r = ok;
  r.n = 8;
  r.max_tokens = 100;
  EXPECT_THROW(e.submit(r), engine::InvalidRequest);  // could never fit the pool
  r = ok;
  r.prompt.clear();
  EXPECT_THROW(e.submit(r), engine::InvalidRequest);
  r = ok;
  r.prompt = {999};
  EXPECT_THROW(e.submit(r), engine::InvalidRequest);
  r = ok;
  r.sampling.top_p = 0;
  EXPECT_THROW(e.submit(r), engine::InvalidRequest);
  r = ok;
  r.logprobs = 21;
  EXPECT_THROW(e.submit(r), engine::InvalidRequest);
  // A pool smaller than one context is a configuration error.
  c.kv_memory = model::KvCache::bytes_per_block(m.model->hparams(), 16, c.kv_type) * 7;
  EXPECT_THROW(Engine(*m.model, *m.tok, c), model::Error);
  c = EngineConfig{};
  c.fair_prompt_chunk = -1;
  EXPECT_THROW(Engine(*m.model, *m.tok, c), model::Error);
  c.fair_prompt_chunk = 0;  // no limit
  EXPECT_NO_THROW(Engine(*m.model, *m.tok, c));
  for (double ms : {-1.0, std::nan(""), static_cast<double>(INFINITY)}) {
    c.fair_step_ms = ms;
    EXPECT_THROW(Engine(*m.model, *m.tok, c), model::Error) << ms;
  }
}

TEST(EngineTest, BackgroundThreadServesConcurrentCallers) {
  const StoriesModel& m = stories();
  Engine e(*m.model, *m.tok, EngineConfig{});
  const Result want = [&] {
    Engine solo(*m.model, *m.tok, EngineConfig{});
    return run_alone(solo, make_request(m, "One day", 3, true));
  }();
  e.start();
  std::vector<std::thread> callers;
  std::vector<Result> got(8);
  for (int i = 0; i < 8; ++i) {
    callers.emplace_back([&, i] {
      auto h = e.submit(make_request(m, "One day", 3, true));
      std::vector<engine::Output> outs;
      while (h->next(outs)) {
      }
      for (const auto& o : outs) {
        for (const auto& t : o.tokens) got[static_cast<size_t>(i)].tokens.push_back(t.token);
      }
    });
  }
  for (auto& t : callers) t.join();
  e.stop();
  for (const auto& g : got) EXPECT_EQ(g.tokens, want.tokens);
}

}  // namespace
}  // namespace maas::test

namespace maas::test {
namespace {

// Embeddings: the mean of the final normalized hidden states, L2-normalised, computed here from
// a direct BatchRunner pass; the same whether the request ran alone or among generations.
TEST(EngineTest, EmbeddingsArePooledFinalHiddenStates) {
  const StoriesModel& m = stories();
  engine::EngineConfig c;
  c.kv_type = model::KvType::F32;
  engine::Engine e(*m.model, *m.tok, c);
  engine::Request r;
  r.prompt = m.tok->encode("The cat sat on the mat", true, false);
  r.embedding = true;
  auto embed = [&](engine::Engine& eng, bool with_others) {
    std::vector<std::shared_ptr<engine::RequestHandle>> others;
    if (with_others) {
      for (int i = 0; i < 3; ++i) others.push_back(eng.submit(make_request(m, "One day", i, true)));
    }
    auto h = eng.submit(r);
    while (eng.step()) {
    }
    std::vector<engine::Output> outs;
    h->try_next(outs);
    EXPECT_EQ(outs.back().finish, engine::FinishReason::Stop);
    EXPECT_EQ(h->usage().prompt_tokens, static_cast<int64_t>(r.prompt.size()));
    EXPECT_EQ(h->usage().completion_tokens, 0);
    return outs.back().embedding;
  };
  const auto got = embed(e, false);

  model::KvCache cache(m.model->hparams(), 64, 16, model::KvType::F32);
  model::BatchRunner runner(*m.model, cache, nullptr);
  std::vector<int32_t> table = {0, 1, 2, 3};
  model::SeqChunk chunk{r.prompt, 0, table, 0};
  std::vector<float> hidden;
  runner.run({&chunk, 1}, &hidden);
  const size_t E = static_cast<size_t>(m.model->hparams().n_embd);
  std::vector<double> mean(E, 0.0);
  for (size_t t = 0; t < r.prompt.size(); ++t) {
    for (size_t d = 0; d < E; ++d)
      mean[d] += hidden[t * E + d] / static_cast<double>(r.prompt.size());
  }
  double norm = 0;
  for (double v : mean) norm += v * v;
  norm = std::sqrt(norm);
  ASSERT_EQ(got.size(), E);
  double dot = 0;
  for (size_t d = 0; d < E; ++d) {
    EXPECT_NEAR(got[d], mean[d] / norm, 1e-5);
    dot += got[d] * got[d];
  }
  EXPECT_NEAR(dot, 1.0, 1e-5);
  engine::Engine e2(*m.model, *m.tok, c);
  EXPECT_EQ(embed(e2, true), got);
}

TEST(EngineTest, FullWaitQueueRefusesNewRequests) {
  const StoriesModel& m = stories();
  engine::EngineConfig c;
  c.max_waiting = 2;
  engine::Engine e(*m.model, *m.tok, c);
  e.submit(make_request(m, "One day", 0, false));
  e.submit(make_request(m, "One day", 1, false));
  EXPECT_THROW(e.submit(make_request(m, "One day", 2, false)), engine::QueueFull);
  e.step();  // both admitted: the queue has room again
  EXPECT_NO_THROW(e.submit(make_request(m, "One day", 3, false)));
}

}  // namespace
}  // namespace maas::test

namespace maas::test {
namespace {

TEST(EngineTest, DestroyingTheEngineEndsRequestsInFlight) {
  const StoriesModel& m = stories();
  std::shared_ptr<engine::RequestHandle> running, queued;
  {
    engine::EngineConfig c;
    c.max_running = 1;
    engine::Engine e(*m.model, *m.tok, c);
    running = e.submit(make_request(m, "One day", 0, false));
    e.step();
    queued = e.submit(make_request(m, "One day", 1, false));
  }
  for (auto* h : {&running, &queued}) {
    std::vector<engine::Output> outs;
    while ((*h)->next(outs)) {
    }
    ASSERT_FALSE(outs.empty());
    EXPECT_EQ(outs.back().finish, engine::FinishReason::Cancelled);
  }
}

}  // namespace
}  // namespace maas::test
