// maas synth and maas quantize: shapes, vocabularies, type mixes and the values they keep.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>

#include "convert/convert.h"
#include "support/test_util.h"
#include "tensor/quant.h"

namespace maas::test {
namespace {

using gguf::TensorType;

std::vector<float> values_of(const gguf::TensorInfo& t) {
  std::vector<float> v(t.n_elements);
  const uint64_t rows = t.n_elements / t.dims[0];
  for (uint64_t r = 0; r < rows; ++r) {
    tensor::dequantize_row(t.type, t.data + r * (t.n_bytes / rows), v.data() + r * t.dims[0],
                           static_cast<int64_t>(t.dims[0]));
  }
  return v;
}

double relative_rms_error(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    ref += want[i] * want[i];
  }
  return std::sqrt(err / ref);
}

convert::SynthSpec small_spec() {
  convert::SynthSpec s;
  s.embd = 256;
  s.layers = 8;
  s.heads = 4;
  s.kv_heads = 2;
  s.ff = 512;
  s.ctx = 128;
  s.vocab_from = shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf";
  return s;
}

TEST(SynthTest, ShapesAndVocabularyFollowTheSpec) {
  const std::string out = scratch_dir() + "/synth.gguf";
  convert::SynthSpec s = small_spec();
  s.arch = "qwen3";
  s.head_dim = 128;  // != 256 / 4
  s.tied = true;
  convert::synth_model(s, out, {TensorType::Q8_0});
  auto f = gguf::File::open(out);
  auto vocab = gguf::File::open(s.vocab_from);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"),
            vocab.get_string_array("tokenizer.ggml.tokens"));
  EXPECT_EQ(f.get_string("general.architecture"), "qwen3");
  EXPECT_EQ(f.get_uint("qwen3.attention.key_length"), 128u);
  EXPECT_EQ(f.tensor("output.weight"), nullptr);
  const auto* q = f.tensor("blk.7.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dims, (std::vector<uint64_t>{256, 512}));
  EXPECT_EQ(q->type, TensorType::Q8_0);
  EXPECT_EQ(f.tensor("blk.7.attn_k_norm.weight")->dims, (std::vector<uint64_t>{128}));
  EXPECT_EQ(f.tensor("token_embd.weight")->dims, (std::vector<uint64_t>{256, 32000}));
  // The weights have the variance of a 1/sqrt(fan_in) initialisation.
  auto v = values_of(*f.tensor("blk.0.ffn_down.weight"));
  double ss = 0;
  for (float x : v) ss += static_cast<double>(x) * x;
  EXPECT_NEAR(std::sqrt(ss / static_cast<double>(v.size())), 1.0 / std::sqrt(512.0), 0.002);
}

TEST(SynthTest, RefusesBadShapes) {
  convert::SynthSpec s = small_spec();
  s.kv_heads = 3;
  EXPECT_THROW(convert::synth_model(s, scratch_dir() + "/x.gguf", {}), convert::Error);
  s = small_spec();
  s.arch = "gpt-j";
  EXPECT_THROW(convert::synth_model(s, scratch_dir() + "/x.gguf", {}), convert::Error);
  s = small_spec();
  s.vocab_from = scratch_dir() + "/missing.gguf";
  EXPECT_ANY_THROW(convert::synth_model(s, scratch_dir() + "/x.gguf", {}));
}

TEST(QuantizeTest, Q4KMMixFollowsLlamaCppRules) {
  const std::string dir = scratch_dir();
  convert::synth_model(small_spec(), dir + "/f32.gguf", {TensorType::F32});
  convert::quantize_model(dir + "/f32.gguf", dir + "/q4km.gguf", {"q4_k_m", {}});
  auto in = gguf::File::open(dir + "/f32.gguf");
  auto f = gguf::File::open(dir + "/q4km.gguf");
  EXPECT_EQ(f.tensor("output.weight")->type, TensorType::Q6_K);
  EXPECT_EQ(f.tensor("token_embd.weight")->type, TensorType::Q4_K);
  EXPECT_EQ(f.tensor("blk.3.attn_q.weight")->type, TensorType::Q4_K);
  EXPECT_EQ(f.tensor("blk.3.ffn_norm.weight")->type, TensorType::F32);
  // 8 layers: more bits for layer 0 (first eighth), 7 (last eighth) and 3, 6 (every third).
  for (int l = 0; l < 8; ++l) {
    const bool more = l == 0 || l == 7 || l == 3 || l == 6;
    const auto want = more ? TensorType::Q6_K : TensorType::Q4_K;
    EXPECT_EQ(f.tensor(fmt::format("blk.{}.attn_v.weight", l))->type, want) << l;
    EXPECT_EQ(f.tensor(fmt::format("blk.{}.ffn_down.weight", l))->type, want) << l;
  }
  // Metadata is carried over, and the values survive within Q4_K's error.
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"),
            in.get_string_array("tokenizer.ggml.tokens"));
  EXPECT_LT(relative_rms_error(values_of(*f.tensor("blk.2.ffn_up.weight")),
                               values_of(*in.tensor("blk.2.ffn_up.weight"))),
            0.08);
}

TEST(QuantizeTest, PlainTypesOverridesAndRequantization) {
  const std::string dir = scratch_dir();
  convert::synth_model(small_spec(), dir + "/f16.gguf", {TensorType::F16});
  convert::quantize_model(
      dir + "/f16.gguf", dir + "/q8.gguf",
      {"Q8_0", {{"ffn_gate", TensorType::Q4_0}, {"blk.1.ffn_gate", TensorType::BF16}}});
  auto in = gguf::File::open(dir + "/f16.gguf");
  auto f = gguf::File::open(dir + "/q8.gguf");
  EXPECT_EQ(f.tensor("output.weight")->type, TensorType::Q8_0);  // 8 bits already: not raised
  EXPECT_EQ(f.tensor("blk.0.ffn_gate.weight")->type, TensorType::Q4_0);
  EXPECT_EQ(f.tensor("blk.1.ffn_gate.weight")->type, TensorType::BF16);  // the later override wins
  EXPECT_LT(relative_rms_error(values_of(*f.tensor("blk.5.attn_k.weight")),
                               values_of(*in.tensor("blk.5.attn_k.weight"))),
            0.01);
  EXPECT_THROW(convert::quantize_model(dir + "/f16.gguf", dir + "/x.gguf", {"q7_z", {}}),
               convert::Error);
}

TEST(QuantizeTest, RowsThatDoNotFitFallBack) {
  // ffn_down rows of 288 elements: not whole 256-blocks (Q4_K) but whole 32-blocks (Q8_0); rows of
  // 40 fit neither, so F16.
  const std::string dir = scratch_dir();
  convert::SynthSpec s = small_spec();
  s.ff = 288;
  s.layers = 1;
  convert::synth_model(s, dir + "/f32.gguf", {TensorType::F32});
  convert::quantize_model(dir + "/f32.gguf", dir + "/q4k.gguf", {"q4_k", {}});
  auto f = gguf::File::open(dir + "/q4k.gguf");
  EXPECT_EQ(f.tensor("blk.0.ffn_down.weight")->type, TensorType::Q8_0);
  EXPECT_EQ(f.tensor("blk.0.ffn_up.weight")->type, TensorType::Q4_K);
  EXPECT_EQ(convert::stored_type(TensorType::Q4_0, 40), TensorType::F16);
  EXPECT_EQ(convert::stored_type(TensorType::Q6_K, 96), TensorType::Q8_0);
  EXPECT_EQ(convert::stored_type(TensorType::Q6_K, 512), TensorType::Q6_K);
}

}  // namespace
}  // namespace maas::test
