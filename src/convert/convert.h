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
  // length is not a multiple of the type's block size falls back to F16 (or F32 if F32 was asked).
  gguf::TensorType type = gguf::TensorType::F32;
};

// llama2.c legacy checkpoint (7 x int32 header, then f32 tensors) + llama2.c tokenizer.bin.
void llama2c_to_gguf(const std::string& checkpoint_path, const std::string& tokenizer_path,
                     const std::string& out_path, const Options& opts);

// A Hugging Face model directory: config.json, model.safetensors or sharded
// model-*.safetensors with model.safetensors.index.json, tokenizer.json, tokenizer_config.json.
// Architectures: LlamaForCausalLM / MistralForCausalLM ("llama"), Qwen2ForCausalLM ("qwen2"),
// Qwen3ForCausalLM ("qwen3").
void hf_to_gguf(const std::string& model_dir, const std::string& out_path, const Options& opts);

// Adds a weight tensor given as row-major f32 with GGUF dims (dims[0] = row length), converting
// it to opts.type when it is a matrix (2-D) and its rows fit the type's blocks.
void add_weight(gguf::Writer& w, const std::string& name, std::vector<uint64_t> dims,
                std::span<const float> data, const Options& opts);

}  // namespace maas::convert
