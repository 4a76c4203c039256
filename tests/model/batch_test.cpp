// The batched, paged forward pass: batch invariance (bit-identical to running each sequence
// alone, whatever the batch composition, chunking and block placement), KV storage types against
// the float64 reference, and the checks on malformed batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "model/kv_cache.h"
#include "model/model.h"
#include "model/random_model.h"
#include "support/test_util.h"
#include "tensor/thread_pool.h"

namespace maas::test {
namespace {

using model::KvType;

RandomModelSpec batch_spec() {
  RandomModelSpec s;  // head size 32 so that Q8_0 KV rows fit its blocks; GQA 2:1
  s.embd = 64;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 32;
  s.ff = 96;
  s.vocab = 97;
  s.ctx = 128;
  s.rope_freqs = true;
  s.seed = 11;
  return s;
}

struct Loaded {
  RandomModel rm;
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<model::Model> model;
};

Loaded load(const RandomModelSpec& spec, const std::string& name,
            gguf::TensorType matrix_type = gguf::TensorType::F32) {
  Loaded l{make_random_model(spec), {}, {}};
  gguf::Writer w;
  l.rm.write(w, matrix_type);
  const std::string path = scratch_dir() + "/" + name + ".gguf";
  w.write(path);
  l.file = std::make_unique<gguf::File>(gguf::File::open(path));
  l.model = model::Model::load(*l.file);
  return l;
}

// Every position's logits of one sequence run alone through a Session, one token per step.
std::vector<std::vector<float>> solo_logits(const model::Model& m, const std::vector<int32_t>& toks,
                                            KvType type, tensor::ThreadPool* pool) {
  model::Session s(m, static_cast<int64_t>(toks.size()), pool, type);
  std::vector<std::vector<float>> out;
  for (int32_t t : toks) {
    auto l = s.eval({&t, 1});
    out.emplace_back(l.begin(), l.end());
  }
  return out;
}

class BatchInvarianceTest : public ::testing::TestWithParam<std::tuple<KvType, int>> {};

TEST_P(BatchInvarianceTest, EveryTokenEqualsItsSoloRunBitForBit) {
  const auto [type, threads] = GetParam();
  Loaded l = load(batch_spec(), "batch");
  const int64_t V = l.rm.spec.vocab;
  tensor::ThreadPool pool(threads);
  std::mt19937 rng(42 + threads);

  const int n_seqs = 6;
  std::vector<std::vector<int32_t>> seqs(n_seqs);
  std::vector<std::vector<std::vector<float>>> solo(n_seqs);
  for (int s = 0; s < n_seqs; ++s) {
    seqs[s].resize(5 + rng() % 40);
    for (auto& t : seqs[s]) t = static_cast<int32_t>(rng() % V);
    solo[s] = solo_logits(*l.model, seqs[s], type, &pool);
  }

  // One shared cache; each sequence gets blocks scattered over the pool in random order.
  const int32_t bs = 8;
  model::KvCache cache(l.model->hparams(), 64, bs, type);
  std::vector<int32_t> ids(64);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<std::vector<int32_t>> tables(n_seqs);
  size_t next_id = 0;
  for (int s = 0; s < n_seqs; ++s) {
    for (size_t b = 0; b < (seqs[s].size() + bs - 1) / bs; ++b) tables[s].push_back(ids[next_id++]);
  }
  ASSERT_LE(next_id, ids.size());

  model::BatchRunner runner(*l.model, cache, &pool);
  std::vector<size_t> done(n_seqs, 0);
  int steps = 0;
  while (true) {
    // Sequences join at random steps, take random chunk sizes, appear in random order.
    std::vector<int> members;
    for (int s = 0; s < n_seqs; ++s) {
      if (done[s] < seqs[s].size() && (rng() % 3 != 0 || steps > 50)) members.push_back(s);
    }
    bool all_done = true;
    for (int s = 0; s < n_seqs; ++s) all_done = all_done && done[s] == seqs[s].size();
    if (all_done) break;
    if (members.empty()) {
      ++steps;
      continue;
    }
    std::shuffle(members.begin(), members.end(), rng);
    std::vector<model::SeqChunk> batch;
    for (int s : members) {
      const size_t n = std::min<size_t>(1 + rng() % 9, seqs[s].size() - done[s]);
      model::SeqChunk c;
      c.tokens = std::span<const int32_t>(seqs[s].data() + done[s], n);
      c.pos0 = static_cast<int64_t>(done[s]);
      c.block_table = tables[s];
      c.n_logits = static_cast<int64_t>(rng() % (n + 1));  // any number of trailing rows
      batch.push_back(c);
    }
    auto logits = runner.run(batch);
    size_t row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const int s = members[i];
      const size_t n = batch[i].tokens.size();
      for (size_t t = n - static_cast<size_t>(batch[i].n_logits); t < n; ++t, ++row) {
        const auto& want = solo[s][done[s] + t];
        ASSERT_EQ(0, std::memcmp(logits.data() + row * V, want.data(), V * sizeof(float)))
            << "sequence " << s << " position " << done[s] + t << " step " << steps;
      }
      done[s] += n;
    }
    ASSERT_EQ(row * V, logits.size());
    ++steps;
  }
}

INSTANTIATE_TEST_SUITE_P(KvTypesAndThreads, BatchInvarianceTest,
                         ::testing::Combine(::testing::Values(KvType::F32, KvType::F16,
                                                              KvType::Q8_0),
                                            ::testing::Values(1, 2)),
                         [](const auto& info) {
                           return std::string(model::kv_type_name(std::get<0>(info.param))) + "_t" +
                                  std::to_string(std::get<1>(info.param));
                         });

// Prompt tokens may get other arithmetic than generated ones (tensor::TokenKind: with F16
// matrices on a CPU with AMX-BF16, prompts run on the tile unit). A token's logits must depend
// only on its sequence and its kind: sequences whose first P tokens are a prompt, run in random
// chunks (some straddling the end of the prompt, as when a preempted sequence is recomputed)
// mixed with other sequences, equal a solo run that computes the prompt as kPrompt and the rest
// as kGenerated, one token at a time.
TEST(TokenKindTest, EveryTokenEqualsItsSoloRunOfTheSameKind) {
  Loaded l = load(batch_spec(), "kinds", gguf::TensorType::F16);
  const int64_t V = l.rm.spec.vocab;
  tensor::ThreadPool pool(2);
  std::mt19937 rng(77);
  const int n_seqs = 5;
  std::vector<std::vector<int32_t>> seqs(n_seqs);
  std::vector<size_t> n_prompt(n_seqs);
  std::vector<std::vector<std::vector<float>>> solo(n_seqs);
  for (int s = 0; s < n_seqs; ++s) {
    seqs[s].resize(8 + rng() % 40);
    for (auto& t : seqs[s]) t = static_cast<int32_t>(rng() % V);
    n_prompt[s] = 1 + rng() % (seqs[s].size() - 1);
    model::Session solo_run(*l.model, static_cast<int64_t>(seqs[s].size()), &pool, KvType::F32);
    for (size_t i = 0; i < seqs[s].size(); ++i) {
      auto lg = solo_run.eval(
          {&seqs[s][i], 1}, nullptr,
          i < n_prompt[s] ? tensor::TokenKind::kPrompt : tensor::TokenKind::kGenerated);
      solo[s].emplace_back(lg.begin(), lg.end());
    }
  }
  if (l.model->prompt_arithmetic_differs()) {
    // The kinds really differ here: the first sequence's prompt as generated tokens.
    model::Session other(*l.model, static_cast<int64_t>(seqs[0].size()), &pool, KvType::F32);
    bool any_differs = false;
    for (size_t i = 0; i < n_prompt[0]; ++i) {
      auto lg = other.eval({&seqs[0][i], 1});
      any_differs = any_differs || std::memcmp(lg.data(), solo[0][i].data(), V * 4) != 0;
    }
    EXPECT_TRUE(any_differs);
  }

  const int32_t bs = 8;
  model::KvCache cache(l.model->hparams(), 64, bs, KvType::F32);
  std::vector<std::vector<int32_t>> tables(n_seqs);
  int32_t next_id = 0;
  for (int s = 0; s < n_seqs; ++s) {
    for (size_t b = 0; b < (seqs[s].size() + bs - 1) / bs; ++b) tables[s].push_back(next_id++);
  }
  ASSERT_LE(next_id, 64);
  model::BatchRunner runner(*l.model, cache, &pool);
  std::vector<size_t> done(n_seqs, 0);
  for (int steps = 0;; ++steps) {
    std::vector<int> members;
    for (int s = 0; s < n_seqs; ++s) {
      if (done[s] < seqs[s].size() && rng() % 4 != 0) members.push_back(s);
    }
    bool all_done = true;
    for (int s = 0; s < n_seqs; ++s) all_done = all_done && done[s] == seqs[s].size();
    if (all_done) break;
    std::shuffle(members.begin(), members.end(), rng);
    std::vector<model::SeqChunk> batch;
    for (int s : members) {
      // Prompts in chunks of up to 12, generated tokens mostly one at a time.
      const size_t room = seqs[s].size() - done[s];
      const size_t n =
          std::min<size_t>(done[s] < n_prompt[s] ? 1 + rng() % 12 : 1 + rng() % 2, room);
      model::SeqChunk c;
      c.tokens = std::span<const int32_t>(seqs[s].data() + done[s], n);
      c.pos0 = static_cast<int64_t>(done[s]);
      c.block_table = tables[s];
      c.n_logits = static_cast<int64_t>(n);
      c.n_prompt =
          static_cast<int64_t>(std::min(n, n_prompt[s] > done[s] ? n_prompt[s] - done[s] : 0));
      batch.push_back(c);
    }
    if (batch.empty()) continue;
    auto logits = runner.run(batch);
    size_t row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const int s = members[i];
      for (size_t t = 0; t < batch[i].tokens.size(); ++t, ++row) {
        ASSERT_EQ(0, std::memcmp(logits.data() + row * V, solo[s][done[s] + t].data(), V * 4))
            << "sequence " << s << " position " << done[s] + t << " (prompt of " << n_prompt[s]
            << ") step " << steps;
      }
      done[s] += batch[i].tokens.size();
    }
  }
}

TEST(KvTypeTest, StoredTypesStayCloseToTheFloat64Reference) {
  Loaded l = load(batch_spec(), "kvtypes");
  std::mt19937 rng(5);
  std::vector<int32_t> toks(40);
  for (auto& t : toks) t = static_cast<int32_t>(rng() % l.rm.spec.vocab);
  const auto ref = reference_forward(l.rm, toks);
  // Measured: F32 ~1e-6, F16 ~5e-4, Q8_0 ~5e-3 of the largest logit.
  const std::pair<KvType, double> cases[] = {
      {KvType::F32, 1e-4}, {KvType::F16, 3e-3}, {KvType::Q8_0, 3e-2}};
  double err[3] = {};
  for (int i = 0; i < 3; ++i) {
    model::Session s(*l.model, 64, nullptr, cases[i].first);
    std::vector<float> all;
    s.eval(toks, &all);
    for (size_t p = 0; p < toks.size(); ++p) {
      std::span<const float> row(all.data() + p * l.rm.spec.vocab, l.rm.spec.vocab);
      err[i] = std::max(err[i], max_rel_error(row, ref[p]));
    }
    EXPECT_LT(err[i], cases[i].second) << model::kv_type_name(cases[i].first);
  }
  // The cheaper types are measurably lossy: proof that they really store reduced precision.
  EXPECT_GT(err[1], err[0]);
  EXPECT_GT(err[2], err[1]);
}

TEST(KvCacheTest, RowsRoundTripAndBlocksCopy) {
  model::HParams hp;
  hp.n_layer = 2;
  hp.n_head_kv = 2;
  hp.head_dim = 32;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (KvType type : {KvType::F32, KvType::F16, KvType::Q8_0}) {
    model::KvCache c(hp, 3, 4, type);
    EXPECT_EQ(model::KvCache::bytes_per_block(hp, 4, type), 2u * 4u * 2u *
                                                                (type == KvType::F32   ? 256u
                                                                 : type == KvType::F16 ? 128u
                                                                                       : 68u));
    std::vector<float> k(64), v(64), got(4 * 32);
    std::vector<std::vector<float>> ks, vs;
    for (int slot = 0; slot < 3; ++slot) {
      for (auto& x : k) x = nd(rng);
      for (auto& x : v) x = nd(rng);
      c.write(1, 2, slot, k.data(), v.data());
      ks.push_back(k);
      vs.push_back(v);
    }
    const double tol = type == KvType::F32 ? 0 : type == KvType::F16 ? 2e-3 : 3e-2;
    c.copy_block(0, 2, 3);
    for (int32_t block : {2, 0}) {
      for (int64_t head = 0; head < 2; ++head) {
        c.read_k(1, block, head, 0, 3, got.data());
        for (int slot = 0; slot < 3; ++slot) {
          for (int d = 0; d < 32; ++d) {
            EXPECT_NEAR(got[slot * 32 + d], ks[slot][head * 32 + d], tol * 4);
          }
        }
        c.read_v(1, block, head, 0, 3, got.data());
        for (int slot = 0; slot < 3; ++slot) {
          for (int d = 0; d < 32; ++d) {
            EXPECT_NEAR(got[slot * 32 + d], vs[slot][head * 32 + d], tol * 4);
          }
        }
      }
    }
  }
  hp.head_dim = 8;
  EXPECT_THROW(model::KvCache(hp, 3, 4, KvType::Q8_0), model::Error);
  EXPECT_THROW(model::KvCache(hp, 0, 4, KvType::F16), model::Error);
  EXPECT_THROW(model::kv_type_from_name("q4"), model::Error);
  EXPECT_EQ(model::kv_type_from_name("q8_0"), KvType::Q8_0);
}

TEST(BatchRunnerTest, RefusesMalformedBatches) {
  Loaded l = load(batch_spec(), "malformed");
  model::KvCache cache(l.model->hparams(), 4, 8, KvType::F16);
  model::BatchRunner runner(*l.model, cache, nullptr);
  const std::vector<int32_t> toks = {1, 2, 3};
  const std::vector<int32_t> table = {0};
  const std::vector<int32_t> bad_table = {7};
  const std::vector<int32_t> bad_tok = {1, 97};
  auto run = [&](model::SeqChunk c) { runner.run({&c, 1}); };
  EXPECT_THROW(run({{}, 0, table, 0}), model::Error);        // no tokens
  EXPECT_THROW(run({toks, 6, table, 1}), model::Error);      // positions past the table
  EXPECT_THROW(run({toks, 0, bad_table, 1}), model::Error);  // block outside the cache
  EXPECT_THROW(run({bad_tok, 0, table, 1}), model::Error);   // token out of range
  EXPECT_THROW(run({toks, 0, table, 4}), model::Error);      // more logits than tokens
  EXPECT_NO_THROW(run({toks, 0, table, 3}));
}

}  // namespace
}  // namespace maas::test
