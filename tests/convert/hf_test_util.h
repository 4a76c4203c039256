// Builders for tiny Hugging Face model directories (config.json, safetensors written by hand,
// tokenizer.json, tokenizer_config.json) and the strings of the tokenizer cross-checks.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace maas::test::hf {

using nlohmann::json;

// One tensor as a safetensors file stores it.
struct StTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", ...
  std::vector<uint64_t> shape;
  std::string bytes;
};

// A complete safetensors file: 8-byte length, JSON header (padded with spaces to a multiple of 8),
// data in list order.
std::string safetensors_bytes(const std::vector<StTensor>& tensors, const json& metadata = nullptr);
// Just the 8-byte length + header text, for hand-made broken files.
std::string safetensors_prefix(const std::string& header_json);

// Exact encodings of values representable in the target type (the tests only use such values).
uint16_t f16_bits(float x);
uint16_t bf16_bits(float x);
StTensor make_tensor(const std::string& name, const std::string& dtype, std::vector<uint64_t> shape,
                     const std::vector<float>& values);

// GPT-2's byte -> printable character map, as UTF-8.
std::string byte_level_char(uint8_t b);

enum class Arch { kLlama, kQwen2, kQwen3 };

struct TinyOptions {
  Arch arch = Arch::kLlama;
  bool spm_tokenizer = false;     // llama only: a Llama 2 style tokenizer instead of byte-level
  bool tied = false;              // tie_word_embeddings: no lm_head.weight in the checkpoint
  bool tied_but_stored = false;   // tied, but lm_head.weight is present anyway
  const char* rope_scaling = "";  // "", "linear" or "llama3"
  bool inv_freq = false;          // add a rotary_emb.inv_freq buffer (to be ignored)
  int shards = 1;                 // > 1: model-0000i-of-0000n.safetensors + index
};

// What was written, for the checks.
struct TinyModel {
  json config;
  uint64_t n_embd = 0, n_ff = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_vocab = 0;
  std::vector<std::string> names;                       // checkpoint tensor names in write order
  std::map<std::string, std::vector<uint64_t>> shapes;  // HF shapes
  std::map<std::string, std::vector<float>> values;     // exact values (after dtype rounding)
  std::map<std::string, std::string> dtypes;
  json tokenizer, tokenizer_config;
};

TinyModel write_tiny_model(const std::string& dir, const TinyOptions& opt, uint32_t seed = 1);

// A few hundred varied strings: languages, emoji, code, numbers, whitespace runs, contractions.
std::vector<std::string> cross_check_strings();

}  // namespace maas::test::hf
