// The forward pass of each architecture against the float64 reference in random_model.cpp.
#include <gtest/gtest.h>

#include <cmath>

#include "model/model.h"
#include "model/random_model.h"
#include "support/test_util.h"
#include "tensor/thread_pool.h"

namespace maas::test {
namespace {

struct Case {
  std::string name;
  RandomModelSpec spec;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  RandomModelSpec llama;  // GQA, separate output, Llama 3 rope_freqs
  llama.rope_freqs = true;
  c.push_back({"llama_gqa_rope_freqs", llama});
  RandomModelSpec tied;  // no GQA, tied output, linear RoPE scaling
  tied.kv_heads = 4;
  tied.tied = true;
  tied.linear_rope_factor = 2.0;
  tied.seed = 2;
  c.push_back({"llama_tied_linear", tied});
  RandomModelSpec q2;
  q2.arch = "qwen2";
  q2.kv_heads = 1;
  q2.rope_base = 1000000.0;
  q2.seed = 3;
  c.push_back({"qwen2_bias", q2});
  RandomModelSpec q3;  // head size 16 with 4 heads != embd 32 / 4
  q3.arch = "qwen3";
  q3.head_dim = 16;
  q3.seed = 4;
  q3.tied = true;
  c.push_back({"qwen3_qk_norm", q3});
  return c;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ForwardTest : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardTest, MatchesFloat64ReferenceAcrossKvCacheSteps) {
  const RandomModel rm = make_random_model(GetParam().spec);
  gguf::Writer w;
  rm.write(w);
  const std::string path = scratch_dir() + "/model.gguf";
  w.write(path);
  auto file = gguf::File::open(path);
  auto model = model::Model::load(file);
  ASSERT_EQ(model->hparams().arch_name, rm.spec.arch);
  EXPECT_EQ(model->tied_output(), rm.spec.tied);

  std::mt19937 rng(7);
  std::vector<int32_t> tokens(23);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % rm.spec.vocab);
  const auto ref = reference_forward(rm, tokens);

  // The prompt in uneven chunks, then single tokens: each step reads what earlier steps cached.
  for (int threads : {1, 2}) {
    tensor::ThreadPool pool(threads);
    model::Session s(*model, 0, &pool);
    const std::vector<size_t> chunks = {7, 5, 1, 1, 6, 1, 2};
    size_t pos = 0;
    for (size_t n : chunks) {
      std::vector<float> all;
      std::span<const int32_t> chunk(tokens.data() + pos, n);
      auto last = s.eval(chunk, &all);
      ASSERT_EQ(all.size(), n * static_cast<size_t>(rm.spec.vocab));
      for (size_t t = 0; t < n; ++t) {
        std::span<const float> row(all.data() + t * static_cast<size_t>(rm.spec.vocab),
                                   static_cast<size_t>(rm.spec.vocab));
        EXPECT_LT(max_rel_error(row, ref[pos + t]), 1e-4) << "position " << pos + t;
      }
      EXPECT_LT(max_rel_error(last, ref[pos + n - 1]), 1e-4);
      pos += n;
    }
    EXPECT_EQ(s.n_past(), static_cast<int64_t>(tokens.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, ForwardTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// Quantized matrices: the reference computes with the dequantized weights, so the only
// difference left is float32 arithmetic and the tolerance stays 1e-4.
class QuantizedForwardTest : public ::testing::TestWithParam<gguf::TensorType> {};

TEST_P(QuantizedForwardTest, MatchesReferenceOnDequantizedWeights) {
  RandomModelSpec spec;
  spec.embd = 256;  // rows of 256 fit every block size, k-quants included
  spec.ff = 512;
  spec.head_dim = 64;
  spec.seed = 9;
  RandomModel rm = make_random_model(spec);
  gguf::Writer w;
  rm.write(w, GetParam());
  rm.round_trip_matrices(GetParam());
  const std::string path = scratch_dir() + "/model.gguf";
  w.write(path);
  auto file = gguf::File::open(path);
  ASSERT_EQ(file.tensor("blk.0.ffn_down.weight")->type, GetParam());
  auto model = model::Model::load(file);
  std::vector<int32_t> tokens = {3, 14, 15, 9, 26, 5, 35, 8, 9, 7};
  const auto ref = reference_forward(rm, tokens);
  // Quantized weight types multiply with activations quantized to int8 per block (as llama.cpp
  // does), which moves logits by about 1-2%; float weight types keep float activations.
  const bool int8_activations =
      GetParam() != gguf::TensorType::F16 && GetParam() != gguf::TensorType::BF16;
  const double tol = int8_activations ? 5e-2 : 1e-4;
  model::Session s(*model, 0, nullptr);
  std::vector<float> all;
  s.eval(std::span<const int32_t>(tokens.data(), 6), &all);
  for (size_t t = 0; t < 6; ++t) {
    EXPECT_LT(max_rel_error({all.data() + t * 61, 61}, ref[t]), tol) << "position " << t;
  }
  for (size_t t = 6; t < tokens.size(); ++t) {
    auto last = s.eval(std::span<const int32_t>(tokens.data() + t, 1));
    EXPECT_LT(max_rel_error(last, ref[t]), tol) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, QuantizedForwardTest,
                         ::testing::Values(gguf::TensorType::F16, gguf::TensorType::BF16,
                                           gguf::TensorType::Q8_0, gguf::TensorType::Q4_0,
                                           gguf::TensorType::Q5_1, gguf::TensorType::Q4_K,
                                           gguf::TensorType::Q6_K, gguf::TensorType::Q2_K),
                         [](const auto& info) { return std::string(gguf::type_name(info.param)); });

TEST(ForwardTest, ReferenceDetectsAWrongModel) {
  // The comparison can fail: perturb one weight and the logits move beyond the tolerance.
  RandomModel rm = make_random_model({});
  gguf::Writer w;
  RandomModel changed = rm;
  changed.tensors["blk.1.ffn_down.weight"].second[5] += 0.5f;
  changed.write(w);
  const std::string path = scratch_dir() + "/model.gguf";
  w.write(path);
  auto file = gguf::File::open(path);
  auto model = model::Model::load(file);
  model::Session s(*model, 0, nullptr);
  std::vector<int32_t> tokens = {1, 2, 3, 4, 5};
  std::vector<float> all;
  s.eval(tokens, &all);
  const auto ref = reference_forward(rm, tokens);
  std::span<const float> last(all.data() + 4 * static_cast<size_t>(rm.spec.vocab),
                              static_cast<size_t>(rm.spec.vocab));
  EXPECT_GT(max_rel_error(last, ref[4]), 1e-3);
}

TEST(ForwardTest, RefusesContextOverflowAndBadTokens) {
  RandomModelSpec spec;
  spec.ctx = 8;
  RandomModel rm = make_random_model(spec);
  gguf::Writer w;
  rm.write(w);
  const std::string path = scratch_dir() + "/model.gguf";
  w.write(path);
  auto file = gguf::File::open(path);
  auto model = model::Model::load(file);
  model::Session s(*model, 0, nullptr);
  std::vector<int32_t> nine(9, 1);
  EXPECT_THROW(s.eval(nine), model::Error);
  std::vector<int32_t> bad = {static_cast<int32_t>(spec.vocab)};
  EXPECT_THROW(s.eval(bad), model::Error);
  std::vector<int32_t> neg = {-1};
  EXPECT_THROW(s.eval(neg), model::Error);
}

}  // namespace
}  // namespace maas::test
