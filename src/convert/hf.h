// Pieces of the Hugging Face -> GGUF converter (hf_to_gguf in convert.h), exposed for tests and
// for vocab-only conversions.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace maas::convert {

// Reads and parses a JSON file, throwing convert::Error naming the file on any failure.
nlohmann::json read_json_file(const std::string& path);

// Writes the tokenizer.ggml.* metadata for the tokenizer.json and tokenizer_config.json in `dir`
// (the latter optional; a chat_template.jinja beside them is used when tokenizer_config.json has
// no chat_template). The token list is padded with "[PAD<id>]" entries to at least n_vocab_min
// tokens (the model's embedding rows). Returns the number of tokens written.
//   - byte-level BPE (Llama 3, Qwen2/3, GPT-2): model "gpt2", tokens, token_type, merges, and
//     "pre" from the pre-tokenizer regex ("llama-bpe", "qwen2", "gpt2").
//   - SentencePiece-style BPE with byte fallback (Llama 2, Mistral, TinyLlama): model "llama",
//     tokens, scores, token_type, add_space_prefix.
uint64_t hf_tokenizer_to_gguf(const std::string& dir, gguf::Writer& w, uint64_t n_vocab_min = 0);

// Llama 3 RoPE scaling ("rope_type": "llama3"): the factor each of the head_dim/2 frequencies is
// divided by, as llama.cpp stores them in "rope_freqs.weight".
std::vector<float> llama3_rope_factors(double rope_theta, uint64_t head_dim, double factor,
                                       double low_freq_factor, double high_freq_factor,
                                       double original_context);

// Reorders the rows of a Q or K projection (or bias; row_len 1) from Hugging Face's rotate-half
// RoPE layout to the adjacent-pair layout of GGUF "llama": within each head of head_dim rows,
// output row 2*i + j is input row j*head_dim/2 + i.
std::vector<float> permute_rope_rows(std::span<const float> data, uint64_t n_heads,
                                     uint64_t head_dim, uint64_t row_len);

// llama.cpp's general.file_type (llama_ftype) for a weight type, or -1 if it has none.
int32_t file_type_for(gguf::TensorType t);

}  // namespace maas::convert
