// Per-sequence token sampling with the OpenAI API's parameters (plus the common extensions
// top_k, min_p, typical_p and repetition_penalty) and logprobs.
//
// One Sampler per generated sequence; the engine calls sample() once per step with that step's
// raw logits. The steps, in this fixed order:
//
//   1. logit_bias: bias[id] is added to the logit (several entries for one id add up).
//   2. penalties, on the biased logits:
//      a. repetition_penalty r (Hugging Face / llama.cpp) for every token that occurs in the prompt
//         or among the generated tokens: a positive logit is divided by r, a negative one
//         multiplied by r (so r > 1 always discourages).
//      b. presence and frequency (OpenAI), for generated tokens only, with c the number of times
//         the token was generated so far: logit -= frequency * c + presence * (c > 0).
//   3. temperature 0: the token is the argmax of these processed logits (lowest id on ties); no
//      random number is drawn and steps 4-9 are skipped.
//   4. temperature T: scaled logits s = (logit - max_logit) / T and weights w = exp(s), in double.
//      From here on candidates are ordered by processed logit, highest first, lower id first on
//      ties; "p" is a candidate's weight divided by the total weight of the candidates left.
//   5. top_k: keep the k first candidates (exactly k, ties broken by id).
//   6. top_p: keep the shortest prefix whose cumulative p reaches top_p (at least one token).
//   7. min_p: keep the candidates with p >= min_p * p_max, evaluated as s >= ln(min_p).
//   8. typical_p (Meister et al., "locally typical sampling"): with H = -sum p log p over the
//      candidates, order them by |-log p - H| ascending (lower id first on ties) and keep the
//      shortest prefix whose cumulative p reaches typical_p; the survivors return to logit order.
//   9. draw: one uniform u in [0, 1) from 53 bits of the Sampler's mt19937_64; the token is the
//      first candidate (in logit order) whose cumulative weight exceeds u * total weight.
//
// Filters that are off (top_k <= 0, top_p = 1, min_p = 0, typical_p = 1) change nothing.
// Non-finite logits: NaN counts as -inf and +inf as the largest float, everywhere (also in
// logprobs). If every processed logit is -inf the token is 0 (still after one draw).
//
// Logprobs (vLLM's default): log-softmax of the RAW logits of the step, before bias, penalties and
// temperature, computed in double. SampleResult::logprob is the sampled token's; `top` lists the
// n highest, best first, lower id first on ties. If every raw logit is -inf all logprobs are -inf.
//
// Determinism: a Sampler's tokens depend only on its seed, params, prompt and the sequence of
// logits it was given (one mt19937_64 per Sampler; exactly one draw per non-greedy sample), never
// on other Samplers or threads. The vectorized exp does the same operations as the scalar one, so
// CPU features do not change tokens either (short of the C library's log, used by min_p and
// typical_p, differing in its last bit). Sums are taken in a fixed but unspecified order: results
// agree with another implementation of these steps up to rounding, not bit for bit.
//
// Cost: a few passes over the vocabulary (copy, exp, histogram), no full sort: tokens are bucketed
// by scaled logit and only the bucket where a filter or the draw stops gets sorted (typical_p
// sorts its candidates by score lazily). Scratch buffers are per thread, so a Sampler holds no
// vocabulary-sized memory; one Sampler must not be used by two threads at once.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace maas::engine {

struct SamplingParams {                               // defaults are the OpenAI API's
  float temperature = 1.0f;                           // 0: greedy
  int32_t top_k = 0;                                  // <= 0: off
  float top_p = 1.0f;                                 // 1: off
  float min_p = 0.0f;                                 // 0: off
  float typical_p = 1.0f;                             // 1: off
  float repetition_penalty = 1.0f;                    // 1: off; over prompt and generated tokens
  float presence_penalty = 0.0f;                      // over generated tokens
  float frequency_penalty = 0.0f;                     // over generated tokens
  std::vector<std::pair<int32_t, float>> logit_bias;  // token id -> bias added to the logit
};

// "" if the parameters are usable with a vocabulary of n_vocab tokens, else a message naming the
// first bad field. Ranges: temperature finite in [0, 100]; top_k >= -1 (-1 and 0: off); top_p in
// (0, 1]; min_p in [0, 1]; typical_p in (0, 1]; repetition_penalty finite and > 0;
// presence_penalty and frequency_penalty in [-2, 2]; logit_bias ids in [0, n_vocab) and values in
// [-100, 100]. NaN is rejected everywhere.
std::string validate(const SamplingParams& params, int64_t n_vocab);

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct SampleResult {
  int32_t token;
  float logprob;                  // of `token`, under the raw logits
  std::vector<TokenLogprob> top;  // the n_top_logprobs most likely tokens under the raw logits
};

class Sampler {
 public:
  // seed: resolved by the caller (the engine draws one when a request gives none). prompt: the
  // prompt tokens, which count for repetition_penalty. Throws std::invalid_argument if the params
  // fail validate() (logit_bias ids are checked against the logits' size in sample()).
  Sampler(SamplingParams params, uint64_t seed, std::span<const int32_t> prompt);

  // Draws the next token from this step's raw logits (n_vocab floats, not modified) and records it
  // as generated for the penalties. n_top_logprobs in [0, 20]: how many top alternatives to return
  // (fewer if the vocabulary is smaller). Throws std::invalid_argument on empty logits, a
  // logit_bias id outside them, or n_top_logprobs out of range.
  SampleResult sample(std::span<const float> logits, int n_top_logprobs);

  const SamplingParams& params() const { return params_; }

 private:
  int32_t choose(std::vector<float>& x, bool weights_ready, float x_max);

  SamplingParams params_;
  std::mt19937_64 rng_;
  bool penalize_ = false;  // whether any penalty is on (else no token bookkeeping at all)
  // Every token of the prompt or generated so far -> how many times it was generated.
  std::unordered_map<int32_t, int32_t> seen_;
};

// Index of the largest value; the lowest index wins ties; NaN never wins (0 if all are NaN).
int32_t argmax(std::span<const float> values);

}  // namespace maas::engine
