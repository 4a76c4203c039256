// The engine with prompt and generated tokens of different arithmetic (tensor::TokenKind): the
// F16 stories260K, whose prompts run on the AMX tile unit where the CPU has it. Every output must
// still equal its solo run, bit for bit (the logprobs show the smallest difference in the KV),
// through chunked prompts, preemption (a recomputed sequence's generated tokens stay generated)
// and the prefix cache (a later prompt that repeats generated tokens must not reuse their KV).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine_test_util.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace maas::test {
namespace {

using engine::Engine;
using engine::EngineConfig;
using engine::Request;

// Test request i with the sampled token's logprob, which shows the smallest difference in the KV.
Request request(const StoriesModel& m, const std::string& prompt, int i) {
  Request r = make_request(m, prompt, i, i % 2 == 1);
  r.logprobs = 1;
  return r;
}

void expect_same(const Result& got, const Result& want, const std::string& what) {
  ASSERT_EQ(got.tokens, want.tokens) << what;
  ASSERT_EQ(got.outputs.size(), want.outputs.size()) << what;
  for (size_t i = 0; i < got.outputs.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(&got.outputs[i].logprob, &want.outputs[i].logprob, sizeof(float)))
        << what << " token " << i << ": logprob " << got.outputs[i].logprob << " vs "
        << want.outputs[i].logprob;
  }
}

TEST(TokenKindEngineTest, ChunkedAndPreemptedRequestsEqualTheirSoloRuns) {
  const StoriesModel& m = stories_f16();
  if (!m.model->prompt_arithmetic_differs()) {
    std::printf("note: prompt and generated tokens share one arithmetic on this CPU\n");
  }
  auto ps = prompts();
  ps.resize(10);
  std::vector<Result> solo;
  {
    EngineConfig c;
    c.max_running = 1;
    Engine e(*m.model, *m.tok, c);
    for (size_t i = 0; i < ps.size(); ++i) {
      solo.push_back(run_alone(e, request(m, ps[i], static_cast<int>(i))));
      ASSERT_FALSE(solo.back().tokens.empty());
    }
  }
  EngineConfig c;
  c.max_running = 10;
  c.token_budget = 9;  // prompts in chunks, mixed with decodes
  c.block_size = 8;
  c.threads = 2;
  c.max_context = 256;  // 32 blocks of 8 positions; the pool holds 40, far less than 10 need
  c.kv_memory = model::KvCache::bytes_per_block(m.model->hparams(), 8, c.kv_type) * 40;
  Engine e(*m.model, *m.tok, c);
  std::vector<std::shared_ptr<engine::RequestHandle>> handles;
  std::vector<Result> got(ps.size());
  for (int step = 0;; ++step) {
    if (handles.size() < ps.size()) {
      handles.push_back(e.submit(request(m, ps[handles.size()], static_cast<int>(handles.size()))));
    }
    const bool busy = e.step();
    for (size_t i = 0; i < handles.size(); ++i) drain(*handles[i], got[i]);
    if (!busy && handles.size() == ps.size()) break;
    ASSERT_LT(step, 100000);
  }
  EXPECT_GT(e.stats().preemptions, 0u) << "the pool was meant to be too small";
  for (size_t i = 0; i < ps.size(); ++i)
    expect_same(got[i], solo[i], "request " + std::to_string(i));
}

// The engine against the plain Session loop: the prompt as prompt tokens, then one generated
// token at a time, each token's logprob from the engine's own sampler on the Session's logits
// (bit for bit: a token computed as the wrong kind shifts the logits, if not the argmax).
TEST(TokenKindEngineTest, GreedyMatchesTheSessionLoopWithKinds) {
  const StoriesModel& m = stories_f16();
  Request r = request(m, "Once upon a time", 0);
  Engine e(*m.model, *m.tok, EngineConfig{});
  const Result got = run_alone(e, r);
  model::Session s(*m.model, 0, nullptr, model::KvType::F16);
  engine::Sampler sampler(r.sampling, 0, r.prompt);
  Result want;
  auto logits = s.eval(r.prompt, nullptr, tensor::TokenKind::kPrompt);
  for (int i = 0; i < r.max_tokens; ++i) {
    const engine::SampleResult sr = sampler.sample(logits, 0);
    want.tokens.push_back(sr.token);
    want.outputs.push_back({sr.token, sr.logprob, {}});
    if (m.tok->is_eog(sr.token)) break;
    logits = s.eval({&sr.token, 1});
  }
  expect_same(got, want, "greedy");
}

// A second turn repeats the first turn's answer in its prompt. Its blocks of generated tokens
// are in the cache, computed as generated tokens; the second turn computes them as prompt
// tokens, as it does on a fresh engine, and reuses only the first turn's prompt blocks.
TEST(TokenKindEngineTest, ASecondTurnDoesNotReuseTheKvOfGeneratedTokens) {
  const StoriesModel& m = stories_f16();
  EngineConfig c;
  c.block_size = 8;
  Engine warm(*m.model, *m.tok, c);
  Request first = request(m, "Once upon a time there was a dog named Max", 0);
  first.max_tokens = 40;
  const Result answer = run_alone(warm, first);
  ASSERT_GE(answer.tokens.size(), 24u);
  Request second = request(m, "", 2);
  second.prompt = first.prompt;
  second.prompt.insert(second.prompt.end(), answer.tokens.begin(), answer.tokens.end());
  const std::vector<int32_t> more = m.tok->encode(" The end. One day", false, false);
  second.prompt.insert(second.prompt.end(), more.begin(), more.end());
  const uint64_t hits_before = warm.stats().prefix_hits;
  const Result again = run_alone(warm, second);
  const uint64_t hits = warm.stats().prefix_hits - hits_before;
  Engine fresh(*m.model, *m.tok, c);
  expect_same(again, run_alone(fresh, second), "second turn");
  const auto prompt_blocks = static_cast<uint64_t>(first.prompt.size() / 8);
  EXPECT_GE(hits, prompt_blocks) << "the first turn's prompt blocks are reused";
  if (m.model->prompt_arithmetic_differs()) {
    EXPECT_LE(hits, prompt_blocks + 1) << "blocks of generated tokens were reused";
  }
}

}  // namespace
}  // namespace maas::test
