// Picks the next token from logits. This subset of the OpenAI sampling parameters:
// temperature (0 = greedy), top_k, top_p and a seed for reproducible draws.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace maas::engine {

struct SamplingParams {
  float temperature = 0.8f;
  int32_t top_k = 40;   // <= 0: no limit
  float top_p = 0.95f;  // >= 1: no limit
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

// Index of the largest value; the lowest index wins ties.
int32_t argmax(std::span<const float> values);

}  // namespace maas::engine
