// Test helper: a small transformer with random weights of a given architecture, kept as plain
// float arrays (for the float64 reference) and written to GGUF (for maas's model layer).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace maas::test {

struct RandomModelSpec {
  std::string arch = "llama";  // llama | qwen2 | qwen3
  int64_t vocab = 61, embd = 32, layers = 2, heads = 4, kv_heads = 2, head_dim = 8, ff = 48;
  int64_t ctx = 64;
  double rms_eps = 1e-5, rope_base = 10000.0;
  bool tied = false;
  bool rope_freqs = false;        // a Llama 3 style rope_freqs.weight tensor
  double linear_rope_factor = 0;  // > 0: llama.rope.scaling.type = linear
  uint64_t seed = 1;
};

struct RandomModel {
  RandomModelSpec spec;
  // name -> (dims in GGUF order, values row-major)
  std::map<std::string, std::pair<std::vector<uint64_t>, std::vector<float>>> tensors;

  const std::vector<float>& w(const std::string& name) const { return tensors.at(name).second; }
  bool has(const std::string& name) const { return tensors.count(name) > 0; }

  // Writes metadata and every tensor to a GGUF writer: matrices as matrix_type, the rest as F32.
  void write(gguf::Writer& out, gguf::TensorType matrix_type = gguf::TensorType::F32) const;
  // Replaces every matrix's values by what they become when stored as `type`, so that the
  // float64 reference computes with exactly the weights a quantized file holds.
  void round_trip_matrices(gguf::TensorType type);
};

RandomModel make_random_model(const RandomModelSpec& spec);

// Float64 forward pass over the whole sequence from scratch (causal attention), written
// directly from the architectures' definitions. Returns logits for every position.
std::vector<std::vector<double>> reference_forward(const RandomModel& m,
                                                   const std::vector<int32_t>& tokens);

// Largest absolute difference relative to the largest reference value (logits of one position).
inline double max_rel_error(std::span<const float> got, const std::vector<double>& want) {
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(want[i]));
    max_diff = std::max(max_diff, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  return max_diff / max_ref;
}

}  // namespace maas::test
