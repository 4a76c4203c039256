#include "engine/sampler.h"

#include <fmt/format.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace maas::engine {

namespace {

constexpr int kMaxTopLogprobs = 20;
constexpr float kInf = std::numeric_limits<float>::infinity();

// NaN -> -inf, +inf -> the largest float (so weights stay finite), -0 -> +0 (so equal logits also
// have equal sort keys). Integer operations only, so that loops over it vectorize.
float sanitize(float v) {
  uint32_t bits = std::bit_cast<uint32_t>(v);
  bits = (bits & 0x7FFFFFFFu) > 0x7F800000u ? 0xFF800000u : bits;  // NaN
  bits = bits == 0x7F800000u ? 0x7F7FFFFFu : bits;                 // +inf
  bits = bits == 0x80000000u ? 0u : bits;                          // -0
  return std::bit_cast<float>(bits);
}

// The maximum of sanitized values (no NaN), taken over integers that order like the floats,
// which vectorizes where a float maximum would not.
float max_of_sanitized(const float* x, size_t n) {
  int32_t best = std::numeric_limits<int32_t>::min();
  for (size_t i = 0; i < n; ++i) {
    const auto bits = std::bit_cast<int32_t>(x[i]);
    best = std::max(best, bits < 0 ? bits ^ 0x7FFFFFFF : bits);
  }
  return std::bit_cast<float>(best < 0 ? best ^ 0x7FFFFFFF : best);
}

// Copies the logits sanitized; returns their maximum.
float sanitize_copy(std::span<const float> logits, float* x) {
  for (size_t i = 0; i < logits.size(); ++i) x[i] = sanitize(logits[i]);
  return max_of_sanitized(x, logits.size());
}

// The lowest index of the maximum of sanitized values.
int32_t first_max(const std::vector<float>& x) {
  const float top = max_of_sanitized(x.data(), x.size());
  return static_cast<int32_t>(std::find(x.begin(), x.end(), top) - x.begin());
}

// Candidates are sorted as 64-bit keys: ascending key order is descending logit, then ascending
// id. Comparing plain integers is several times faster than an indirect comparator.
uint64_t candidate_key(float logit, int32_t id) {
  uint32_t bits = std::bit_cast<uint32_t>(logit);
  // Order-preserving map of floats onto unsigned integers.
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(~bits) << 32) | static_cast<uint32_t>(id);
}

int32_t key_id(uint64_t key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

// exp(s) for s <= 0, within 1 ulp of std::exp here, and 0 below -708 (where exp(s) < 3.4e-308,
// nothing next to the best token's weight of 1). exp(s) = 2^k * exp(r) with k = round(s / ln 2)
// and |r| <= ln(2) / 2, where the Taylor series to r^13 is exact to double precision. It is the
// bulk of a sample's cost, hence the vector version below, which performs the same operations
// (no fused multiply-add anywhere) so that every machine draws the same tokens.
constexpr double kExpFloor = -708.0;
constexpr double kRound = 0x1.8p52;  // adding it rounds to an integer, kept in the low bits
constexpr double kLog2e = 0x1.71547652b82fep0;
constexpr double kLn2High = 0x1.62e42fee00000p-1;  // trailing zero bits: k * it is exact
constexpr double kLn2Low = 0x1.a39ef35793c76p-33;
constexpr double kTaylor[14] = {1.0 / 6227020800.0,
                                1.0 / 479001600.0,
                                1.0 / 39916800.0,
                                1.0 / 3628800.0,
                                1.0 / 362880.0,
                                1.0 / 40320.0,
                                1.0 / 5040.0,
                                1.0 / 720.0,
                                1.0 / 120.0,
                                1.0 / 24.0,
                                1.0 / 6.0,
                                0.5,
                                1.0,
                                1.0};  // 1/13! down to 1/0!

double exp_nonpositive(double s) {
  const double clamped = s < kExpFloor ? kExpFloor : s;
  const double shifted = clamped * kLog2e + kRound;
  const double k = shifted - kRound;
  const int64_t k_bits = std::bit_cast<int64_t>(shifted) - std::bit_cast<int64_t>(kRound);
  const double r = (clamped - k * kLn2High) - k * kLn2Low;
  double p = kTaylor[0];
  for (int j = 1; j < 14; ++j) p = p * r + kTaylor[j];
  const double scale = std::bit_cast<double>((k_bits + 1023) << 52);  // 2^k, k in [-1022, 0]
  return s < kExpFloor ? 0.0 : p * scale;
}

constexpr double kBucketsPerNat = 8;  // a power of two: multiplying by it is exact
constexpr double kLastBucket = 255;   // from 31.9 nats on (weights below 1.4e-14)

void exp_weight(const float* x, double* w, uint8_t* bucket, size_t i, double x_max, double scale) {
  const double s = (double{x[i]} - x_max) * scale;
  w[i] = exp_nonpositive(s);
  if (bucket != nullptr) {
    const double d = s * -kBucketsPerNat;
    bucket[i] = static_cast<uint8_t>(d < kLastBucket ? d : kLastBucket);
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MAAS_SAMPLER_AVX2 1
__attribute__((target("avx2"))) void exp_weights_avx2(const float* x, double* w, uint8_t* bucket,
                                                      size_t n, double x_max, double scale) {
  const __m256d max = _mm256_set1_pd(x_max), mul = _mm256_set1_pd(scale);
  const __m256d floor = _mm256_set1_pd(kExpFloor), round = _mm256_set1_pd(kRound);
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d s = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), max), mul);
    const __m256d clamped = _mm256_max_pd(s, floor);
    const __m256d shifted = _mm256_add_pd(_mm256_mul_pd(clamped, _mm256_set1_pd(kLog2e)), round);
    const __m256d k = _mm256_sub_pd(shifted, round);
    const __m256i k_bits =
        _mm256_sub_epi64(_mm256_castpd_si256(shifted), _mm256_castpd_si256(round));
    const __m256d r =
        _mm256_sub_pd(_mm256_sub_pd(clamped, _mm256_mul_pd(k, _mm256_set1_pd(kLn2High))),
                      _mm256_mul_pd(k, _mm256_set1_pd(kLn2Low)));
    __m256d p = _mm256_set1_pd(kTaylor[0]);
    for (int j = 1; j < 14; ++j) p = _mm256_add_pd(_mm256_mul_pd(p, r), _mm256_set1_pd(kTaylor[j]));
    const __m256d two_k = _mm256_castsi256_pd(
        _mm256_slli_epi64(_mm256_add_epi64(k_bits, _mm256_set1_epi64x(1023)), 52));
    const __m256d below = _mm256_cmp_pd(s, floor, _CMP_LT_OQ);
    _mm256_storeu_pd(w + i, _mm256_andnot_pd(below, _mm256_mul_pd(p, two_k)));
    if (bucket != nullptr) {
      const __m256d d = _mm256_min_pd(_mm256_mul_pd(s, _mm256_set1_pd(-kBucketsPerNat)),
                                      _mm256_set1_pd(kLastBucket));
      const __m128i b32 = _mm256_cvttpd_epi32(d);
      const __m128i b8 = _mm_packus_epi16(_mm_packus_epi32(b32, b32), _mm_setzero_si128());
      const auto four = static_cast<uint32_t>(_mm_cvtsi128_si32(b8));
      std::memcpy(bucket + i, &four, 4);
    }
  }
  for (; i < n; ++i) exp_weight(x, w, bucket, i, x_max, scale);
}
#endif

// w[i] = exp(s) with s = (x[i] - x_max) * scale <= 0, and unless `bucket` is null, bucket[i] =
// min(floor(-s * kBucketsPerNat), kLastBucket): see LogitOrder.
void exp_weights(const float* x, double* w, uint8_t* bucket, size_t n, double x_max, double scale) {
#ifdef MAAS_SAMPLER_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return exp_weights_avx2(x, w, bucket, n, x_max, scale);
#endif
  for (size_t i = 0; i < n; ++i) exp_weight(x, w, bucket, i, x_max, scale);
}

// A sum in a fixed order, in four lanes so it does not wait on one addition at a time.
double sum(const double* v, size_t n) {
  double lane[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (size_t j = 0; j < 4; ++j) lane[j] += v[i + j];
  }
  for (; i < n; ++i) lane[0] += v[i];
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

// Given v[0, sorted) in order and no greater than the rest, extends that to at least v[0, m).
// Sorts in growing chunks, since walks over the order usually stop after a few elements.
template <class T>
void sort_prefix(std::vector<T>& v, size_t& sorted, size_t m) {
  if (m <= sorted) return;
  const size_t size = v.size();
  size_t end = std::max(m, sorted + std::max<size_t>(32, sorted));
  // Once the chunk is a good part of what is left, sorting the rest is cheaper than selecting.
  if (end >= size || (end - sorted) * 2 >= size - sorted) end = size;
  const auto first = v.begin() + static_cast<std::ptrdiff_t>(sorted);
  const auto last = v.begin() + static_cast<std::ptrdiff_t>(end);
  if (end < size) std::nth_element(first, last, v.end());
  std::sort(first, last);
  sorted = end;
}

// The candidates of one draw, in logit order, without sorting the vocabulary.
//
// Tokens are bucketed by their scaled distance to the best logit, -s = (x_max - x) / T, in
// buckets 1/8 nat wide (the last bucket takes everything from 31.9 nats on, weights below 1.4e-14).
// Bucket order is logit order, so a prefix of the logit order is "all of the buckets before B and
// the first c tokens of bucket B". top_k, min_p and top_p each keep such a prefix and the draw
// picks a position in one: a walk skips whole buckets by their total weight and sorts only the
// bucket where it stops, lazily and in growing chunks. The results are those of a full sort.
class LogitOrder {
 public:
  static constexpr int kBuckets = static_cast<int>(kLastBucket) + 1;

  // The bucket array, for a caller that fills it along with the weights.
  uint8_t* buckets(size_t n) {
    bucket_.resize(n);
    return bucket_.data();
  }

  // Weights w and buckets (computed here unless `ready`), and the bucket histogram.
  void build(const std::vector<float>& x, std::vector<double>& w, float x_max,
             double inv_temperature, bool ready) {
    x_ = &x;
    w_ = &w;
    x_max_ = x_max;
    inv_temperature_ = inv_temperature;
    const size_t n = x.size();
    if (!ready) exp_weights(x.data(), w.data(), buckets(n), n, x_max, inv_temperature);
    count_.fill(0);
    mass_.fill(0.0);
    for (int b : gathered_) segments_[static_cast<size_t>(b)].gathered = false;
    gathered_.clear();
    for (size_t i = 0; i < n; ++i) {
      ++count_[bucket_[i]];
      mass_[bucket_[i]] += w[i];
    }
    end_bucket_ = kBuckets - 1;
    while (count_[static_cast<size_t>(end_bucket_)] == 0) --end_bucket_;  // bucket 0 holds x_max
    end_count_ = count_[static_cast<size_t>(end_bucket_)];
    end_mass_ = mass_[static_cast<size_t>(end_bucket_)];
  }

  double scaled(size_t id) const { return (double{(*x_)[id]} - x_max_) * inv_temperature_; }

  // Total weight of the candidates.
  double total() const {
    double z = 0;
    for (int b = 0; b <= end_bucket_; ++b) z += kept_mass(b);
    return z;
  }

  // top_k: keeps the k first candidates.
  void keep_first(size_t k) {
    size_t before = 0;
    for (int b = 0; b <= end_bucket_; ++b) {
      const size_t kept = kept_count(b);
      if (before + kept >= k) {
        cut(b, k - before);
        return;
      }
      before += kept;
    }
  }

  // min_p: keeps the candidates whose scaled logit is >= threshold (a prefix: it is monotone).
  void keep_scaled_at_least(double threshold) {
    const double d = threshold * -kBucketsPerNat;
    // Tokens of earlier buckets pass, of later ones fail; this one needs a look.
    const int b = static_cast<int>(d < kLastBucket ? d : kLastBucket);
    if (b > end_bucket_) return;
    Segment& seg = gather(b);
    size_t pass = 0;
    for (uint64_t key : seg.keys) pass += scaled(static_cast<size_t>(key_id(key))) >= threshold;
    cut(b, std::min(pass, kept_count(b)));
  }

  // The position of the first candidate, in logit order, at which the cumulative weight reaches
  // `target` (cum >= target), or exceeds it (cum > target) when `strictly`. Returns false if the
  // candidates run out first.
  bool walk(double target, bool strictly, int& bucket, size_t& index) {
    auto reached = [&](double cum) { return strictly ? target < cum : cum >= target; };
    double cum = 0;
    for (int b = 0; b <= end_bucket_; ++b) {
      const size_t kept = kept_count(b);
      if (kept == 0) continue;
      if (!reached(cum + kept_mass(b))) {
        cum += kept_mass(b);
        continue;
      }
      for (size_t i = 0; i < kept; ++i) {
        cum += weight(key_at(b, i));
        if (reached(cum)) {
          bucket = b;
          index = i;
          return true;
        }
      }
    }
    return false;
  }

  // Keeps the candidates up to and including the one at (bucket, index).
  void keep_through(int bucket, size_t index) { cut(bucket, index + 1); }

  uint64_t key_at(int b, size_t i) {
    ensure_sorted(gather(b), i + 1);
    return segments_[static_cast<size_t>(b)].keys[i];
  }

  // The last candidate that has weight (bucket 0 holds x_max, whose weight is 1).
  int32_t last_weighted() {
    for (int b = end_bucket_; b >= 0; --b) {
      for (size_t i = kept_count(b); i-- > 0;) {
        const uint64_t key = key_at(b, i);
        if (weight(key) > 0) return key_id(key);
      }
    }
    return 0;
  }

  // All candidates, in no particular order.
  void list(std::vector<int32_t>& ids) {
    ids.clear();
    for (size_t i = 0; i < bucket_.size(); ++i) {
      if (bucket_[i] < end_bucket_) ids.push_back(static_cast<int32_t>(i));
    }
    for (size_t i = 0; i < end_count_; ++i) ids.push_back(key_id(key_at(end_bucket_, i)));
  }

 private:
  struct Segment {
    bool gathered = false;
    size_t sorted = 0;  // keys[0, sorted) are in order and no greater than the rest
    std::vector<uint64_t> keys;
  };

  double weight(uint64_t key) const { return (*w_)[static_cast<size_t>(key_id(key))]; }

  size_t kept_count(int b) const {
    return b < end_bucket_ ? count_[static_cast<size_t>(b)] : b == end_bucket_ ? end_count_ : 0;
  }
  double kept_mass(int b) const {
    return b < end_bucket_ ? mass_[static_cast<size_t>(b)] : b == end_bucket_ ? end_mass_ : 0;
  }

  // Narrows the candidates to the prefix ending after the first c of bucket b (if shorter).
  void cut(int b, size_t c) {
    if (b > end_bucket_ || (b == end_bucket_ && c >= end_count_)) return;
    end_bucket_ = b;
    end_count_ = c;
    if (c == count_[static_cast<size_t>(b)]) {
      end_mass_ = mass_[static_cast<size_t>(b)];
    } else {
      end_mass_ = 0;
      for (size_t i = 0; i < c; ++i) end_mass_ += weight(key_at(b, i));
    }
  }

  Segment& gather(int b) {
    Segment& seg = segments_[static_cast<size_t>(b)];
    if (!seg.gathered) {
      seg.keys.clear();
      const auto& x = *x_;
      for (size_t i = 0; i < bucket_.size(); ++i) {
        if (bucket_[i] == b) seg.keys.push_back(candidate_key(x[i], static_cast<int32_t>(i)));
      }
      seg.sorted = 0;
      seg.gathered = true;
      gathered_.push_back(b);
    }
    return seg;
  }

  static void ensure_sorted(Segment& seg, size_t m) { sort_prefix(seg.keys, seg.sorted, m); }

  const std::vector<float>* x_ = nullptr;
  std::vector<double>* w_ = nullptr;
  float x_max_ = 0;
  double inv_temperature_ = 1;
  std::vector<uint8_t> bucket_;  // by token id
  std::array<size_t, kBuckets> count_{};
  std::array<double, kBuckets> mass_{};
  std::array<Segment, kBuckets> segments_;
  std::vector<int> gathered_;  // the buckets whose segment is valid for this draw
  // The candidates: every token of the buckets before end_bucket_, and the first end_count_ of
  // end_bucket_ (their weight: end_mass_).
  int end_bucket_ = 0;
  size_t end_count_ = 0;
  double end_mass_ = 0;
};

// Vocabulary-sized buffers, reused across calls and shared by every Sampler on the thread.
struct Scratch {
  std::vector<float> x;   // processed logits
  std::vector<double> w;  // weights, by token id
  LogitOrder order;
  std::vector<int32_t> ids;
  std::vector<uint64_t> keys;
  std::vector<std::pair<double, int32_t>> typical;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// typical_p over the candidates left in `order`, then the draw among the survivors.
int32_t draw_typical(LogitOrder& order, float typical_p, double u) {
  Scratch& s = scratch();
  const std::vector<double>& w = s.w;
  std::vector<int32_t>& ids = s.ids;
  order.list(ids);
  double z = 0;
  for (int32_t id : ids) z += w[static_cast<size_t>(id)];
  const double log_z = std::log(z);
  // -log p = log z - scaled logit, which stays finite where w underflows to 0.
  double entropy = 0;
  for (int32_t id : ids) {
    const double wi = w[static_cast<size_t>(id)];
    if (wi > 0) entropy += wi / z * (log_z - order.scaled(static_cast<size_t>(id)));
  }
  auto& typical = s.typical;
  typical.clear();
  for (int32_t id : ids) {
    typical.emplace_back(std::fabs(log_z - order.scaled(static_cast<size_t>(id)) - entropy), id);
  }
  const double target = static_cast<double>(typical_p) * z;
  double cum = 0;
  size_t kept = 0, sorted = 0;
  while (kept < typical.size()) {
    sort_prefix(typical, sorted, kept + 1);
    cum += w[static_cast<size_t>(typical[kept++].second)];
    if (cum >= target) break;
  }
  // The survivors back in logit order for the draw.
  std::vector<uint64_t>& keys = s.keys;
  keys.clear();
  double kept_total = 0;
  for (size_t i = 0; i < kept; ++i) {
    const auto id = static_cast<size_t>(typical[i].second);
    keys.push_back(candidate_key(s.x[id], static_cast<int32_t>(id)));
    kept_total += w[id];
  }
  std::sort(keys.begin(), keys.end());
  const double draw = u * kept_total;
  cum = 0;
  for (uint64_t key : keys) {
    cum += w[static_cast<size_t>(key_id(key))];
    if (draw < cum) return key_id(key);
  }
  for (size_t i = keys.size(); i-- > 0;) {
    if (w[static_cast<size_t>(key_id(keys[i]))] > 0) return key_id(keys[i]);
  }
  return key_id(keys[0]);
}

bool in_range(float v, float lo, float hi) { return v >= lo && v <= hi; }  // false for NaN

}  // namespace

std::string validate(const SamplingParams& p, int64_t n_vocab) {
  if (n_vocab <= 0) return fmt::format("the vocabulary size must be positive, got {}", n_vocab);
  if (!in_range(p.temperature, 0.0f, 100.0f))
    return fmt::format("temperature must be in [0, 100], got {}", p.temperature);
  if (p.top_k < -1) return fmt::format("top_k must be >= -1 (-1 or 0: off), got {}", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return fmt::format("top_p must be in (0, 1], got {}", p.top_p);
  if (!in_range(p.min_p, 0.0f, 1.0f))
    return fmt::format("min_p must be in [0, 1], got {}", p.min_p);
  if (!(p.typical_p > 0.0f && p.typical_p <= 1.0f))
    return fmt::format("typical_p must be in (0, 1], got {}", p.typical_p);
  if (!(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f)) {
    return fmt::format("repetition_penalty must be a finite number > 0, got {}",
                       p.repetition_penalty);
  }
  if (!in_range(p.presence_penalty, -2.0f, 2.0f))
    return fmt::format("presence_penalty must be in [-2, 2], got {}", p.presence_penalty);
  if (!in_range(p.frequency_penalty, -2.0f, 2.0f))
    return fmt::format("frequency_penalty must be in [-2, 2], got {}", p.frequency_penalty);
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= n_vocab) {
      return fmt::format("logit_bias: token id {} is outside the vocabulary [0, {})", id, n_vocab);
    }
    if (!in_range(bias, -100.0f, 100.0f))
      return fmt::format("logit_bias: the bias of token {} must be in [-100, 100], got {}", id,
                         bias);
  }
  return "";
}

int32_t argmax(std::span<const float> values) {
  int32_t best = -1;
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isnan(values[i])) continue;
    if (best < 0 || values[i] > values[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best < 0 ? 0 : best;
}

Sampler::Sampler(SamplingParams params, uint64_t seed, std::span<const int32_t> prompt)
    : params_(std::move(params)), rng_(seed) {
  // The vocabulary is not known yet: logit_bias ids are checked against the logits in sample().
  const std::string error = validate(params_, std::numeric_limits<int64_t>::max());
  if (!error.empty()) throw std::invalid_argument(error);
  penalize_ = params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f ||
              params_.frequency_penalty != 0.0f;
  // Prompt tokens only matter to the repetition penalty.
  if (params_.repetition_penalty != 1.0f) {
    for (int32_t t : prompt) seen_.try_emplace(t, 0);
  }
}

SampleResult Sampler::sample(std::span<const float> logits, int n_top_logprobs) {
  const size_t n = logits.size();
  if (n == 0) throw std::invalid_argument("sample: the logits are empty");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw std::invalid_argument(fmt::format("sample: {} logits is too many", n));
  if (n_top_logprobs < 0 || n_top_logprobs > kMaxTopLogprobs) {
    throw std::invalid_argument(fmt::format("sample: top logprobs must be in [0, {}], got {}",
                                            kMaxTopLogprobs, n_top_logprobs));
  }
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id < 0 || static_cast<size_t>(id) >= n) {
      throw std::invalid_argument(
          fmt::format("logit_bias: token id {} is outside the vocabulary [0, {})", id, n));
    }
  }
  Scratch& s = scratch();
  std::vector<float>& x = s.x;
  std::vector<double>& w = s.w;
  x.resize(n);
  w.resize(n);

  // Whether the processed logits can differ from the raw ones.
  const bool modified = !params_.logit_bias.empty() || (penalize_ && !seen_.empty());
  // At T = 1 with unmodified logits the raw pass's terms are the sampling weights.
  const bool weights_ready = !modified && params_.temperature == 1.0f;

  // Raw logits: the log-softmax normalizer and the best alternatives.
  const float raw_max = sanitize_copy(logits, x.data());
  double raw_total = 0;
  if (raw_max != -kInf) {
    exp_weights(x.data(), w.data(), weights_ready ? s.order.buckets(n) : nullptr, n, raw_max, 1.0);
    raw_total = sum(w.data(), n);
  }
  // log softmax = (x - max) - log(sum exp(x - max)); the difference first, which stays exact
  // where max + log(sum) would round away (huge logits). Every logprob is -inf when every logit is.
  const double log_total = std::log(raw_total);
  auto raw_logprob = [&](float raw) {
    return raw == -kInf ? -kInf : static_cast<float>((double{raw} - raw_max) - log_total);
  };
  const int n_top = static_cast<int>(std::min<size_t>(static_cast<size_t>(n_top_logprobs), n));
  std::array<std::pair<float, int32_t>, kMaxTopLogprobs> best{};
  int n_best = 0;
  for (size_t i = 0; i < n && n_top > 0; ++i) {
    const float v = x[i];
    // Strictly greater: among equal logits the earlier (lower) id stays ahead.
    if (n_best == n_top && !(v > best[static_cast<size_t>(n_best - 1)].first)) continue;
    int j = n_best < n_top ? n_best++ : n_best - 1;
    while (j > 0 && v > best[static_cast<size_t>(j - 1)].first) {
      best[static_cast<size_t>(j)] = best[static_cast<size_t>(j - 1)];
      --j;
    }
    best[static_cast<size_t>(j)] = {v, static_cast<int32_t>(i)};
  }

  // Processed logits: bias, then penalties (only the few tokens concerned change).
  for (const auto& [id, bias] : params_.logit_bias) {
    float& v = x[static_cast<size_t>(id)];
    v = sanitize(v + bias);
  }
  if (penalize_) {
    const float rep = params_.repetition_penalty;
    for (const auto& [id, count] : seen_) {
      if (id < 0 || static_cast<size_t>(id) >= n) continue;  // a prompt id outside this vocabulary
      float& v = x[static_cast<size_t>(id)];
      if (rep != 1.0f) v = v > 0.0f ? v / rep : v * rep;
      if (count > 0) {
        v -= params_.frequency_penalty * static_cast<float>(count) + params_.presence_penalty;
      }
      v = sanitize(v);
    }
  }

  int32_t token;
  if (params_.temperature == 0.0f) {
    token = first_max(x);
  } else {
    const float x_max = modified ? max_of_sanitized(x.data(), n) : raw_max;
    token = choose(x, weights_ready, x_max);
  }
  if (penalize_) ++seen_[token];

  SampleResult result{token, raw_logprob(sanitize(logits[static_cast<size_t>(token)])), {}};
  result.top.reserve(static_cast<size_t>(n_best));
  for (int i = 0; i < n_best; ++i) {
    const auto& [v, id] = best[static_cast<size_t>(i)];
    result.top.push_back({id, raw_logprob(v)});
  }
  return result;
}

// Steps 4-9 of the header on the processed logits `x` (w holds the weights already when
// weights_ready).
int32_t Sampler::choose(std::vector<float>& x, bool weights_ready, float x_max) {
  // Exactly one draw per non-greedy sample, whatever happens next.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  if (x_max == -kInf) return 0;  // every token is banned: argmax's answer

  Scratch& s = scratch();
  std::vector<double>& w = s.w;
  LogitOrder& order = s.order;
  order.build(x, w, x_max, 1.0 / static_cast<double>(params_.temperature), weights_ready);

  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < x.size())
    order.keep_first(static_cast<size_t>(params_.top_k));
  // top_p measures against the weight after top_k. min_p keeps a prefix of the logit order, as
  // top_p does, and p / p_max does not depend on which other tokens are left: applying it before
  // top_p (whose walk then may run out of candidates and keep them all) is the same as after.
  const double top_k_total = order.total();
  if (params_.min_p > 0) order.keep_scaled_at_least(std::log(static_cast<double>(params_.min_p)));
  int bucket;
  size_t index;
  if (params_.top_p < 1.0f &&
      order.walk(static_cast<double>(params_.top_p) * top_k_total, false, bucket, index)) {
    order.keep_through(bucket, index);
  }

  if (params_.typical_p < 1.0f) return draw_typical(order, params_.typical_p, u);

  if (order.walk(u * order.total(), true, bucket, index))
    return key_id(order.key_at(bucket, index));
  return order.last_weighted();  // rounding left u * total at the very end
}

}  // namespace maas::engine
