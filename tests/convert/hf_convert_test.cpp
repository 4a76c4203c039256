// Hugging Face -> GGUF conversion of tiny hand-written model directories: metadata, tensor names,
// shapes, types and values, the llama Q/K row permutation, sharding, --type, tied embeddings and
// Llama 3 RoPE factors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numbers>
#include <random>

#include "convert/convert.h"
#include "convert/hf_test_util.h"
#include "gguf/gguf.h"
#include "support/test_util.h"
#include "tensor/quant.h"

namespace maas::test {
namespace {

using gguf::TensorType;
using hf::Arch;
using hf::TinyModel;
using hf::TinyOptions;

// The GGUF name a checkpoint tensor must get (written from the llama.cpp naming scheme).
std::string gguf_name(const std::string& hf_name) {
  static const std::vector<std::pair<std::string, std::string>> kLayer = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  if (hf_name == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf_name == "model.norm.weight") return "output_norm.weight";
  if (hf_name == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  if (hf_name.rfind(prefix, 0) == 0) {
    const size_t dot = hf_name.find('.', prefix.size());
    const std::string layer = hf_name.substr(prefix.size(), dot - prefix.size());
    const std::string rest = hf_name.substr(dot + 1);
    for (const auto& [h, g] : kLayer) {
      if (rest == h) return "blk." + layer + "." + g;
    }
  }
  return "";  // not converted
}

bool is_q_or_k(const std::string& hf_name) {
  return hf_name.find("q_proj") != std::string::npos || hf_name.find("k_proj") != std::string::npos;
}

// Values of a GGUF tensor as f32, whatever its type.
std::vector<float> tensor_values(const gguf::TensorInfo& t) {
  std::vector<float> out(t.n_elements);
  const uint64_t row = t.dims[0];
  const uint64_t row_bytes = *gguf::bytes_for(t.type, row);
  for (uint64_t r = 0; r < t.rows(); ++r) {
    tensor::dequantize_row(t.type, t.data + r * row_bytes, out.data() + r * row,
                           static_cast<int64_t>(row));
  }
  return out;
}

// HF rows (rotate-half RoPE) -> GGUF llama rows (adjacent pairs): GGUF row h*hd + 2i + j holds
// HF row h*hd + j*hd/2 + i.
uint64_t hf_row_of_gguf_row(uint64_t r, uint64_t head_dim) {
  const uint64_t h = r / head_dim, p = r % head_dim;
  return h * head_dim + (p % 2) * (head_dim / 2) + p / 2;
}

std::string convert(const std::string& dir, TensorType type = TensorType::F32) {
  const std::string out = dir + ".gguf";
  convert::hf_to_gguf(dir, out, {type});
  return out;
}

std::string make(const std::string& name, const TinyOptions& opt, TinyModel* model = nullptr) {
  const std::string dir = scratch_dir() + "/" + name;
  TinyModel m = hf::write_tiny_model(dir, opt);
  if (model) *model = std::move(m);
  return dir;
}

void check_metadata(const gguf::File& f, const TinyModel& m, const std::string& arch,
                    const std::string& name) {
  EXPECT_EQ(f.get_string("general.architecture"), arch);
  EXPECT_EQ(f.get_string("general.name"), name);
  const auto& c = m.config;
  EXPECT_EQ(f.get_uint(arch + ".context_length"), c["max_position_embeddings"].get<uint64_t>());
  EXPECT_EQ(f.get_uint(arch + ".embedding_length"), m.n_embd);
  EXPECT_EQ(f.get_uint(arch + ".block_count"), m.n_layer);
  EXPECT_EQ(f.get_uint(arch + ".feed_forward_length"), m.n_ff);
  EXPECT_EQ(f.get_uint(arch + ".attention.head_count"), m.n_head);
  EXPECT_EQ(f.get_uint(arch + ".attention.head_count_kv"), m.n_head_kv);
  EXPECT_EQ(f.get_uint(arch + ".rope.dimension_count"), m.head_dim);
  EXPECT_EQ(f.get_uint(arch + ".vocab_size"), m.n_vocab);
  EXPECT_FLOAT_EQ(*f.get_float(arch + ".attention.layer_norm_rms_epsilon"),
                  c["rms_norm_eps"].get<float>());
  EXPECT_FLOAT_EQ(*f.get_float(arch + ".rope.freq_base"), c["rope_theta"].get<float>());
  if (m.head_dim != m.n_embd / m.n_head) {
    EXPECT_EQ(f.get_uint(arch + ".attention.key_length"), m.head_dim);
    EXPECT_EQ(f.get_uint(arch + ".attention.value_length"), m.head_dim);
  } else {
    EXPECT_EQ(f.find(arch + ".attention.key_length"), nullptr);
    EXPECT_EQ(f.find(arch + ".attention.value_length"), nullptr);
  }
}

// Every checkpoint tensor is present under its GGUF name with reversed dims and equal values
// (permuted for llama Q/K), and nothing else is.
void check_tensors(const gguf::File& f, const TinyModel& m, bool llama, bool expect_output) {
  size_t expected_count = f.tensor("rope_freqs.weight") != nullptr ? 1 : 0;
  for (const auto& hf_name : m.names) {
    const std::string g = gguf_name(hf_name);
    if (g.empty() || (g == "output.weight" && !expect_output)) continue;
    ++expected_count;
    SCOPED_TRACE(hf_name);
    const gguf::TensorInfo* t = f.tensor(g);
    ASSERT_NE(t, nullptr) << g;
    const auto& shape = m.shapes.at(hf_name);
    EXPECT_EQ(t->dims, std::vector<uint64_t>(shape.rbegin(), shape.rend()));
    ASSERT_EQ(t->type, TensorType::F32);
    const auto& want = m.values.at(hf_name);
    const auto got = tensor_values(*t);
    ASSERT_EQ(got.size(), want.size());
    const uint64_t row = shape.size() == 2 ? shape[1] : 1;
    const bool permuted = llama && is_q_or_k(hf_name);
    size_t bad = 0;
    for (uint64_t r = 0; r < got.size() / row; ++r) {
      const uint64_t src = permuted ? hf_row_of_gguf_row(r, m.head_dim) : r;
      for (uint64_t c = 0; c < row; ++c) bad += got[r * row + c] != want[src * row + c];
    }
    EXPECT_EQ(bad, 0u) << g << (permuted ? " (permuted)" : "");
  }
  EXPECT_EQ(f.tensors().size(), expected_count);
  EXPECT_EQ(f.tensor("output.weight") != nullptr, expect_output);
}

TEST(HfConvertTest, LlamaWithSentencePieceTokenizer) {
  TinyModel m;
  const std::string dir =
      make("tiny-llama", {.arch = Arch::kLlama, .spm_tokenizer = true, .inv_freq = true}, &m);
  auto f = gguf::File::open(convert(dir));
  check_metadata(f, m, "llama", "tiny-llama");
  EXPECT_EQ(f.get_uint("general.file_type"), 0u);
  EXPECT_EQ(f.find("llama.rope.scaling.type"), nullptr);
  check_tensors(f, m, /*llama=*/true, /*expect_output=*/true);
  EXPECT_EQ(f.tensor("rope_freqs.weight"), nullptr);

  // Tokenizer: ids, types and scores (-rank of the first merge producing a token).
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  auto tokens = *f.get_string_array("tokenizer.ggml.tokens");
  auto types = *f.get_int_array("tokenizer.ggml.token_type");
  auto scores = *f.get_float_array("tokenizer.ggml.scores");
  ASSERT_EQ(tokens.size(), 300u);
  ASSERT_EQ(types.size(), 300u);
  ASSERT_EQ(scores.size(), 300u);
  for (const auto& [text, id] : m.tokenizer["model"]["vocab"].items())
    EXPECT_EQ(tokens[id.get<size_t>()], text);
  EXPECT_EQ(types[0], 2);  // <unk>
  EXPECT_EQ(types[1], 3);
  EXPECT_EQ(types[2], 3);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(types[3 + b], 6) << b;
  for (int id = 259; id < 268; ++id) EXPECT_EQ(types[id], 1) << id;
  for (int id = 268; id < 300; ++id) {
    EXPECT_EQ(tokens[id], "[PAD" + std::to_string(id) + "]");
    EXPECT_EQ(types[id], 5);
  }
  const std::string sp = "\xE2\x96\x81";
  auto id_of = [&](const std::string& t) { return m.tokenizer["model"]["vocab"][t].get<size_t>(); };
  // merges: 0 "a b", 1 "▁ a", 2 "▁a b", 3 "b c", 4 "▁ ab" (also makes ▁ab, later), 5 "▁ c"
  EXPECT_EQ(scores[id_of("ab")], -0.0f);
  EXPECT_EQ(scores[id_of(sp + "a")], -1.0f);
  EXPECT_EQ(scores[id_of(sp + "ab")], -2.0f);
  EXPECT_EQ(scores[id_of("bc")], -3.0f);
  EXPECT_EQ(scores[id_of(sp + "c")], -5.0f);
  // Pieces no merge makes rank below every merge result.
  for (const char* single : {"a", "b", "c"}) EXPECT_LT(scores[id_of(single)], -5.0f);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_EQ(f.find("tokenizer.ggml.padding_token_id"), nullptr);
  EXPECT_EQ(f.get_bool("tokenizer.ggml.add_bos_token"), true);
  EXPECT_EQ(f.get_bool("tokenizer.ggml.add_eos_token"), false);
  EXPECT_EQ(f.get_bool("tokenizer.ggml.add_space_prefix"), true);
  EXPECT_EQ(f.get_string("tokenizer.chat_template"),
            m.tokenizer_config["chat_template"].get<std::string>());
  EXPECT_EQ(f.find("tokenizer.ggml.merges"), nullptr);
}

void check_byte_level_tokenizer(const gguf::File& f, const TinyModel& m, const std::string& pre) {
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), pre);
  auto tokens = *f.get_string_array("tokenizer.ggml.tokens");
  auto types = *f.get_int_array("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), m.n_vocab);
  ASSERT_EQ(types.size(), m.n_vocab);
  for (const auto& [text, id] : m.tokenizer["model"]["vocab"].items()) {
    EXPECT_EQ(tokens[id.get<size_t>()], text);
    EXPECT_EQ(types[id.get<size_t>()], 1);
  }
  EXPECT_EQ(tokens[264], "<|begin|>");
  EXPECT_EQ(types[264], 3);
  EXPECT_EQ(tokens[265], "<|end|>");
  EXPECT_EQ(types[265], 3);
  EXPECT_EQ(tokens[266], "<tool>");
  EXPECT_EQ(types[266], 4);
  for (int id : {262, 263, 267, 271}) {
    EXPECT_EQ(tokens[id], "[PAD" + std::to_string(id) + "]");
    EXPECT_EQ(types[id], 5);
  }
  const std::string G = hf::byte_level_char(' ');
  EXPECT_EQ(*f.get_string_array("tokenizer.ggml.merges"),
            (std::vector<std::string>{G + " t", "h e", G + "t he", "i n", G + " a", "in g"}));
  EXPECT_EQ(f.find("tokenizer.ggml.scores"), nullptr);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eos_token_id"), 265u);
}

TEST(HfConvertTest, LlamaWithLlama3TokenizerAndRopeScaling) {
  TinyModel m;
  const std::string dir = make("tiny-llama3", {.arch = Arch::kLlama, .rope_scaling = "llama3"}, &m);
  auto f = gguf::File::open(convert(dir));
  check_metadata(f, m, "llama", "tiny-llama3");
  check_byte_level_tokenizer(f, m, "llama-bpe");
  EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id"), 264u);
  EXPECT_EQ(f.get_bool("tokenizer.ggml.add_bos_token"), true);  // Llama 3 convention
  EXPECT_EQ(f.get_string("tokenizer.chat_template"),
            m.tokenizer_config["chat_template"].get<std::string>());

  // rope_freqs from the published Llama 3.1 formula, in float64.
  const gguf::TensorInfo* rf = f.tensor("rope_freqs.weight");
  ASSERT_NE(rf, nullptr);
  ASSERT_EQ(rf->type, TensorType::F32);
  ASSERT_EQ(rf->dims, std::vector<uint64_t>{m.head_dim / 2});
  const auto got = tensor_values(*rf);
  const double base = 500000, factor = 8, low = 1, high = 4, old_ctx = 8192;
  int n_high = 0, n_low = 0, n_mid = 0;
  for (uint64_t i = 0; i < m.head_dim / 2; ++i) {
    const double inv_freq =
        std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(m.head_dim));
    const double wavelen = 2 * std::numbers::pi / inv_freq;
    double scaled;
    if (wavelen < old_ctx / high) {
      scaled = inv_freq, ++n_high;
    } else if (wavelen > old_ctx / low) {
      scaled = inv_freq / factor, ++n_low;
    } else {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      scaled = (1 - smooth) * inv_freq / factor + smooth * inv_freq, ++n_mid;
    }
    EXPECT_NEAR(got[i], inv_freq / scaled, 1e-6 * inv_freq / scaled) << i;
  }
  EXPECT_GT(n_high, 0);  // the tiny head size still exercises all three bands
  EXPECT_GT(n_low, 0);
  EXPECT_GT(n_mid, 0);
  check_tensors(f, m, true, true);
  EXPECT_EQ(f.tensors().size(), 1 + 2 * 9 + 3u);  // rope_freqs + 9 per layer + embd, norm, output
}

TEST(HfConvertTest, Qwen2KeepsHalvesAndBiases) {
  TinyModel m;
  const std::string dir = make("tiny-qwen2", {.arch = Arch::kQwen2}, &m);
  auto f = gguf::File::open(convert(dir));
  check_metadata(f, m, "qwen2", "tiny-qwen2");
  check_tensors(f, m, /*llama=*/false, true);
  ASSERT_NE(f.tensor("blk.1.attn_k.bias"), nullptr);
  check_byte_level_tokenizer(f, m, "qwen2");
  EXPECT_EQ(f.find("tokenizer.ggml.bos_token_id"), nullptr);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.padding_token_id"), 264u);
  EXPECT_EQ(f.get_bool("tokenizer.ggml.add_bos_token"), false);
  // A list of named templates: the "default" one.
  EXPECT_EQ(f.get_string("tokenizer.chat_template"),
            "{% for m in messages %}{{ m.content }}\n{% endfor %}");
}

TEST(HfConvertTest, Qwen3HeadDimAndQkNorms) {
  TinyModel m;
  const std::string dir = make("tiny-qwen3", {.arch = Arch::kQwen3, .tied = true}, &m);
  auto f = gguf::File::open(convert(dir));
  check_metadata(f, m, "qwen3", "tiny-qwen3");  // includes key_length/value_length = 32
  check_tensors(f, m, false, /*expect_output=*/false);
  const gguf::TensorInfo* qn = f.tensor("blk.0.attn_q_norm.weight");
  ASSERT_NE(qn, nullptr);
  EXPECT_EQ(qn->dims, std::vector<uint64_t>{32});
  EXPECT_EQ(f.tensor("blk.0.attn_q.weight")->dims, (std::vector<uint64_t>{64, 128}));
  check_byte_level_tokenizer(f, m, "qwen2");  // merges given as [a, b] arrays here
}

// The permutation means what it should: GGUF's adjacent-pair RoPE on the converted Q rows gives
// the same numbers as Hugging Face's rotate-half RoPE on the original rows.
TEST(HfConvertTest, PermutedQMatchesRotateHalfRope) {
  TinyModel m;
  const std::string dir = make("tiny-rope", {.arch = Arch::kLlama}, &m);
  auto f = gguf::File::open(convert(dir));
  const uint64_t hd = m.head_dim, E = m.n_embd;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> uni(-1, 1);
  std::vector<double> x(E);
  for (auto& v : x) v = uni(rng);
  for (const char* which : {"q", "k"}) {
    const auto& w_hf =
        m.values.at(std::string("model.layers.1.self_attn.") + which + "_proj.weight");
    const auto w_gg = tensor_values(*f.tensor(std::string("blk.1.attn_") + which + ".weight"));
    const uint64_t rows = w_hf.size() / E;
    auto matvec = [&](const std::vector<float>& w) {
      std::vector<double> y(rows, 0.0);
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t c = 0; c < E; ++c) y[r] += static_cast<double>(w[r * E + c]) * x[c];
      return y;
    };
    const auto q_hf = matvec(w_hf), q_gg = matvec(std::vector<float>(w_gg.begin(), w_gg.end()));
    const double pos = 5, base = 500000;
    for (uint64_t h = 0; h < rows / hd; ++h) {
      for (uint64_t i = 0; i < hd / 2; ++i) {
        const double th =
            pos * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
        const double* a = &q_hf[h * hd];
        const double hf0 = a[i] * std::cos(th) - a[i + hd / 2] * std::sin(th);
        const double hf1 = a[i + hd / 2] * std::cos(th) + a[i] * std::sin(th);
        const double* b = &q_gg[h * hd];
        const double gg0 = b[2 * i] * std::cos(th) - b[2 * i + 1] * std::sin(th);
        const double gg1 = b[2 * i] * std::sin(th) + b[2 * i + 1] * std::cos(th);
        EXPECT_NEAR(gg0, hf0, 1e-9) << which << " head " << h << " pair " << i;
        EXPECT_NEAR(gg1, hf1, 1e-9) << which << " head " << h << " pair " << i;
      }
    }
  }
}

TEST(HfConvertTest, ShardedInputGivesIdenticalFile) {
  for (Arch arch : {Arch::kLlama, Arch::kQwen2, Arch::kQwen3}) {
    const std::string base = scratch_dir();
    const std::string one = base + "/single/model", three = base + "/sharded/model";
    hf::write_tiny_model(one, {.arch = arch});
    hf::write_tiny_model(three, {.arch = arch, .shards = 3});
    ASSERT_TRUE(std::filesystem::exists(three + "/model-00003-of-00003.safetensors"));
    ASSERT_FALSE(std::filesystem::exists(three + "/model.safetensors"));
    EXPECT_EQ(read_file(convert(one)), read_file(convert(three))) << static_cast<int>(arch);
  }
}

TEST(HfConvertTest, TypeAppliesToMatricesOnly) {
  TinyModel m;
  const std::string dir = make("tiny-q", {.arch = Arch::kQwen2}, &m);
  for (TensorType type : {TensorType::Q8_0, TensorType::F16}) {
    SCOPED_TRACE(std::string(gguf::type_name(type)));
    auto f = gguf::File::open(convert(dir, type));
    EXPECT_EQ(f.get_uint("general.file_type"), type == TensorType::Q8_0 ? 7u : 1u);
    for (const auto& hf_name : m.names) {
      const gguf::TensorInfo* t = f.tensor(gguf_name(hf_name));
      ASSERT_NE(t, nullptr) << hf_name;
      const auto& want = m.values.at(hf_name);
      const auto got = tensor_values(*t);
      if (t->dims.size() == 1) {
        EXPECT_EQ(t->type, TensorType::F32) << hf_name;
        EXPECT_EQ(got, want) << hf_name;
        continue;
      }
      // Rows of 80 (ffn_down) do not fit Q8_0's 32-element blocks: F16 instead.
      const TensorType expect =
          type == TensorType::Q8_0 && t->dims[0] % 32 != 0 ? TensorType::F16 : type;
      EXPECT_EQ(t->type, expect) << hf_name;
      for (size_t i = 0; i < want.size(); i += 32) {
        const size_t end = std::min(want.size(), i + 32);
        float amax = 0;
        for (size_t j = i; j < end; ++j) amax = std::max(amax, std::fabs(want[j]));
        for (size_t j = i; j < end; ++j) {
          const float tol = expect == TensorType::Q8_0 ? amax / 127.0f * 0.6f + 1e-7f
                                                       : std::fabs(want[j]) * 0x1p-11f + 1e-7f;
          ASSERT_NEAR(got[j], want[j], tol) << hf_name << " element " << j;
        }
      }
    }
  }
}

TEST(HfConvertTest, TiedEmbeddingsHaveNoOutput) {
  TinyModel m;
  const std::string dir = make("tied", {.arch = Arch::kLlama, .tied = true}, &m);
  auto f = gguf::File::open(convert(dir));
  EXPECT_EQ(f.tensor("output.weight"), nullptr);
  ASSERT_NE(f.tensor("token_embd.weight"), nullptr);
  check_tensors(f, m, true, false);
  // A tied checkpoint that stores lm_head.weight anyway: still no output.weight.
  TinyModel m2;
  const std::string dir2 = make("tied2", {.arch = Arch::kLlama, .tied_but_stored = true}, &m2);
  auto f2 = gguf::File::open(convert(dir2));
  EXPECT_EQ(f2.tensor("output.weight"), nullptr);
  check_tensors(f2, m2, true, false);
}

TEST(HfConvertTest, LinearRopeScaling) {
  TinyModel m;
  const std::string dir = make("linear", {.arch = Arch::kQwen2, .rope_scaling = "linear"}, &m);
  auto f = gguf::File::open(convert(dir));
  EXPECT_EQ(f.get_string("qwen2.rope.scaling.type"), "linear");
  EXPECT_FLOAT_EQ(*f.get_float("qwen2.rope.scaling.factor"), 4.0f);
  EXPECT_EQ(f.tensor("rope_freqs.weight"), nullptr);
}

}  // namespace
}  // namespace maas::test
