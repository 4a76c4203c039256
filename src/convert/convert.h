// Converters from other checkpoint formats into GGUF, writing the metadata keys and tensor names
// that llama.cpp-compatible readers (and maas's own model layer) expect.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace maas::convert {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Options {
  // Type of the 2-D weight matrices. Norms, biases and 1-D tensors stay F32. A matrix whose row
  // length is not a multiple of the type's block size falls back (see stored_type).
  gguf::TensorType type = gguf::TensorType::F32;
};

// llama2.c legacy checkpoint (7 x int32 header, then f32 tensors) + llama2.c tokenizer.bin.
void llama2c_to_gguf(const std::string& checkpoint_path, const std::string& tokenizer_path,
                     const std::string& out_path, const Options& opts);

// Writes the tokenizer.ggml.* metadata of a llama2.c tokenizer.bin ("llama" model). vocab_size < 0
// reads every token in the file. Returns the number of tokens.
uint64_t llama2c_tokenizer_to_gguf(const std::string& tokenizer_path, gguf::Writer& w,
                                   int64_t vocab_size = -1);

// A Hugging Face model directory: config.json, model.safetensors or sharded
// model-*.safetensors with model.safetensors.index.json, tokenizer.json, tokenizer_config.json.
// Architectures: LlamaForCausalLM / MistralForCausalLM ("llama"), Qwen2ForCausalLM ("qwen2"),
// Qwen3ForCausalLM ("qwen3").
void hf_to_gguf(const std::string& model_dir, const std::string& out_path, const Options& opts);

// A model of a real shape with random weights, for benchmarks: speed does not depend on the
// weights' values. The vocabulary (tokenizer.* metadata) comes from any GGUF file or a llama2.c
// tokenizer.bin.
struct SynthSpec {
  std::string arch = "llama";  // llama | qwen2 | qwen3
  int64_t embd = 2048, layers = 16, heads = 32, kv_heads = 8, ff = 8192, ctx = 4096;
  int64_t head_dim = 0;  // 0: embd / heads
  bool tied = false;
  std::string vocab_from;
  uint64_t seed = 1;
};
void synth_model(const SynthSpec& spec, const std::string& out_path, const Options& opts);

// Re-encodes the weights of a GGUF model. `type` is a weight type ("q8_0", "q4_k", "f16", ...)
// or a llama.cpp-style mix ("q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q3_k_m"). overrides:
// (tensor-name substring, type) pairs, applied in order, the last match winning.
struct QuantizeOptions {
  std::string type;
  std::vector<std::pair<std::string, gguf::TensorType>> overrides;
};
void quantize_model(const std::string& in_path, const std::string& out_path,
                    const QuantizeOptions& opts);

// The type a matrix with rows of `row` elements is stored in when `want` is asked: want itself if
// its blocks divide the row, else Q8_0 for a 256-block type whose rows fit 32-blocks, else F16.
gguf::TensorType stored_type(gguf::TensorType want, uint64_t row);

// Adds a weight tensor given as row-major f32 with GGUF dims (dims[0] = row length), converting
// it to opts.type when it is a matrix (2-D) and its rows fit the type's blocks.
void add_weight(gguf::Writer& w, const std::string& name, std::vector<uint64_t> dims,
                std::span<const float> data, const Options& opts);

}  // namespace maas::convert
