// Random-weight models of real shapes (`maas synth`), for benchmarks.
#include <fmt/format.h>

#include <cmath>
#include <random>

#include "convert/convert.h"
#include "convert/hf.h"

namespace maas::convert {

namespace {

// Copies the tokenizer of a GGUF file (every tokenizer.* key) or reads a llama2.c tokenizer.bin.
uint64_t copy_vocab(const std::string& path, gguf::Writer& w) {
  if (path.ends_with(".gguf")) {
    auto f = gguf::File::open(path);
    for (const auto& [key, value] : f.metadata()) {
      if (key.starts_with("tokenizer.")) w.set(key, value);
    }
    auto tokens = f.get_string_array("tokenizer.ggml.tokens");
    if (!tokens || tokens->empty())
      throw Error(fmt::format("{}: has no tokenizer.ggml.tokens", path));
    return tokens->size();
  }
  return llama2c_tokenizer_to_gguf(path, w);
}

}  // namespace

void synth_model(const SynthSpec& s, const std::string& out_path, const Options& opts) {
  if (s.arch != "llama" && s.arch != "qwen2" && s.arch != "qwen3") {
    throw Error(fmt::format("synth: unknown architecture '{}' (llama, qwen2, qwen3)", s.arch));
  }
  constexpr int64_t kMax = 1 << 20;
  for (int64_t v : {s.embd, s.layers, s.heads, s.kv_heads, s.ff, s.ctx}) {
    if (v <= 0 || v > kMax) throw Error("synth: every size must be in [1, 2^20]");
  }
  const int64_t head_dim = s.head_dim > 0 ? s.head_dim : s.embd / s.heads;
  if (s.heads % s.kv_heads != 0 || head_dim % 2 != 0 ||
      (s.head_dim == 0 && s.embd % s.heads != 0)) {
    throw Error(fmt::format("synth: {} heads, {} kv heads and head size {} do not fit", s.heads,
                            s.kv_heads, head_dim));
  }
  if (s.vocab_from.empty()) throw Error("synth: --vocab-from is required");
  gguf::Writer w;
  const std::string a = s.arch + ".";
  w.set_string("general.architecture", s.arch);
  w.set_string("general.name", fmt::format("synthetic {} {}x{}", s.arch, s.layers, s.embd));
  const uint64_t n_vocab = copy_vocab(s.vocab_from, w);
  w.set_u32(a + "context_length", static_cast<uint32_t>(s.ctx));
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(s.embd));
  w.set_u32(a + "block_count", static_cast<uint32_t>(s.layers));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(s.ff));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(s.heads));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.kv_heads));
  w.set_u32(a + "rope.dimension_count", static_cast<uint32_t>(head_dim));
  w.set_f32(a + "rope.freq_base", s.arch == "llama" ? 10000.0f : 1000000.0f);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  if (head_dim * s.heads != s.embd) {
    w.set_u32(a + "attention.key_length", static_cast<uint32_t>(head_dim));
    w.set_u32(a + "attention.value_length", static_cast<uint32_t>(head_dim));
  }
  const int32_t ftype = file_type_for(opts.type);
  if (ftype >= 0) w.set_u32("general.file_type", static_cast<uint32_t>(ftype));

  // Uniform weights with the variance of the usual 1/sqrt(fan_in) initialisation keep the
  // activations finite through any depth; their values do not matter for speed.
  std::mt19937_64 rng(s.seed);
  std::vector<float> buf;
  auto fill = [&](size_t n, float scale, float offset) {
    buf.resize(n);
    const float a_max = scale * std::sqrt(3.0f);
    std::uniform_real_distribution<float> u(-a_max, a_max);
    for (auto& x : buf) x = offset + (scale > 0 ? u(rng) : 0.0f);
    return std::span<const float>(buf);
  };
  using U = uint64_t;
  const U E = static_cast<U>(s.embd), F = static_cast<U>(s.ff), D = static_cast<U>(head_dim),
          Q = static_cast<U>(s.heads) * D, KV = static_cast<U>(s.kv_heads) * D;
  auto matrix = [&](const std::string& name, U cols, U rows) {
    add_weight(w, name, {cols, rows},
               fill(cols * rows, 1.0f / std::sqrt(static_cast<float>(cols)), 0.0f), opts);
  };
  auto vec = [&](const std::string& name, U n, float scale = 0.0f) {
    add_weight(w, name, {n}, fill(n, scale, scale > 0 ? 0.0f : 1.0f), opts);
  };
  matrix("token_embd.weight", E, n_vocab);
  vec("output_norm.weight", E);
  if (!s.tied) matrix("output.weight", E, n_vocab);
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    vec(p + "attn_norm.weight", E);
    matrix(p + "attn_q.weight", E, Q);
    matrix(p + "attn_k.weight", E, KV);
    matrix(p + "attn_v.weight", E, KV);
    matrix(p + "attn_output.weight", Q, E);
    if (s.arch == "qwen2") {
      vec(p + "attn_q.bias", Q, 0.02f);
      vec(p + "attn_k.bias", KV, 0.02f);
      vec(p + "attn_v.bias", KV, 0.02f);
    }
    if (s.arch == "qwen3") {
      vec(p + "attn_q_norm.weight", D);
      vec(p + "attn_k_norm.weight", D);
    }
    vec(p + "ffn_norm.weight", E);
    matrix(p + "ffn_gate.weight", E, F);
    matrix(p + "ffn_up.weight", E, F);
    matrix(p + "ffn_down.weight", F, E);
  }
  w.write(out_path);
}

}  // namespace maas::convert
