// The sampler against references written here in double precision: hand-computed candidate sets,
// the OpenAI and Hugging Face penalty formulas, a straightforward (full-sort) implementation of the
// documented pipeline, and the inverse CDF of its distribution driven by the same mt19937_64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "engine/sampler.h"

namespace maas::engine {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f};

SamplingParams temp(float t) {
  SamplingParams p;
  p.temperature = t;
  return p;
}

// ---- Reference implementation ----

// Processed logits: bias, then repetition penalty over prompt + generated, then OpenAI penalties.
std::vector<double> ref_process(const std::vector<float>& raw, const SamplingParams& p,
                                const std::vector<int32_t>& prompt,
                                const std::vector<int32_t>& generated) {
  std::vector<double> x(raw.begin(), raw.end());
  for (const auto& [id, b] : p.logit_bias) x[static_cast<size_t>(id)] += b;
  std::set<int32_t> context(prompt.begin(), prompt.end());
  context.insert(generated.begin(), generated.end());
  for (int32_t id : context) {
    double& v = x[static_cast<size_t>(id)];
    v = v > 0 ? v / p.repetition_penalty : v * p.repetition_penalty;
  }
  std::map<int32_t, int> count;
  for (int32_t id : generated) ++count[id];
  for (const auto& [id, c] : count) {
    x[static_cast<size_t>(id)] -= c * double{p.frequency_penalty} + double{p.presence_penalty};
  }
  return x;
}

struct Candidate {
  int32_t id;
  double weight;
};

// The surviving candidates in draw order (logit descending, id ascending) with their weights.
std::vector<Candidate> ref_candidates(const std::vector<double>& x, const SamplingParams& p) {
  const size_t n = x.size();
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return x[static_cast<size_t>(a)] != x[static_cast<size_t>(b)]
               ? x[static_cast<size_t>(a)] > x[static_cast<size_t>(b)]
               : a < b;
  };
  std::sort(ids.begin(), ids.end(), by_logit);
  const double top = x[static_cast<size_t>(ids[0])];
  std::vector<Candidate> c;
  for (int32_t id : ids)
    c.push_back({id, std::exp((x[static_cast<size_t>(id)] - top) / p.temperature)});
  auto mass = [](const std::vector<Candidate>& v) {
    double z = 0;
    for (const auto& e : v) z += e.weight;
    return z;
  };
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < c.size())
    c.resize(static_cast<size_t>(p.top_k));
  if (p.top_p < 1) {
    const double z = mass(c);
    double cum = 0;
    size_t keep = 0;
    while (keep < c.size() && cum < p.top_p * z) cum += c[keep++].weight;
    c.resize(keep);
  }
  if (p.min_p > 0) {
    const double z = mass(c);
    const double p_max = c[0].weight / z;
    std::erase_if(c, [&](const Candidate& e) { return e.weight / z < p.min_p * p_max; });
  }
  if (p.typical_p < 1) {
    const double z = mass(c);
    double entropy = 0;
    for (const auto& e : c) {
      if (e.weight > 0) entropy -= e.weight / z * std::log(e.weight / z);
    }
    auto score = [&](const Candidate& e) { return std::abs(-std::log(e.weight / z) - entropy); };
    std::vector<Candidate> t = c;
    std::stable_sort(t.begin(), t.end(), [&](const Candidate& a, const Candidate& b) {
      return score(a) != score(b) ? score(a) < score(b) : a.id < b.id;
    });
    double cum = 0;
    size_t keep = 0;
    while (keep < t.size() && cum < p.typical_p * z) cum += t[keep++].weight;
    t.resize(keep);
    std::sort(t.begin(), t.end(),
              [&](const Candidate& a, const Candidate& b) { return by_logit(a.id, b.id); });
    c = t;
  }
  return c;
}

std::vector<double> ref_distribution(const std::vector<double>& x, const SamplingParams& p) {
  std::vector<double> prob(x.size(), 0.0);
  const auto c = ref_candidates(x, p);
  double z = 0;
  for (const auto& e : c) z += e.weight;
  for (const auto& e : c) prob[static_cast<size_t>(e.id)] = e.weight / z;
  return prob;
}

std::vector<double> ref_distribution(const std::vector<float>& raw, const SamplingParams& p) {
  return ref_distribution(std::vector<double>(raw.begin(), raw.end()), p);
}

std::set<int32_t> support(const std::vector<double>& prob) {
  std::set<int32_t> s;
  for (size_t i = 0; i < prob.size(); ++i) {
    if (prob[i] > 0) s.insert(static_cast<int32_t>(i));
  }
  return s;
}

// Draws n tokens (each from a fresh history when `fresh`, else from one sequence) and checks every
// frequency is within five standard deviations of its expected probability, and that tokens of
// probability zero never appear.
void expect_follows(const SamplingParams& params, const std::vector<float>& logits,
                    const std::vector<double>& expected, int n, uint64_t seed = 1) {
  Sampler s(params, seed, {});
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < n; ++i) freq[static_cast<size_t>(s.sample(logits, 0).token)] += 1.0 / n;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double p = expected[i];
    if (p == 0) {
      EXPECT_EQ(freq[i], 0.0) << "token " << i << " is outside the candidates";
    } else {
      EXPECT_NEAR(freq[i], p, 5 * std::sqrt(p * (1 - p) / n) + 1e-12) << "token " << i;
    }
  }
}

// ---- Validation ----

TEST(SamplerValidate, AcceptsDefaultsAndEdges) {
  EXPECT_EQ(validate(SamplingParams{}, 10), "");
  SamplingParams p;
  p.temperature = 0;
  p.top_k = -1;
  p.top_p = 1e-6f;
  p.min_p = 1;
  p.typical_p = 1;
  p.repetition_penalty = 1e-3f;
  p.presence_penalty = -2;
  p.frequency_penalty = 2;
  p.logit_bias = {{0, -100.0f}, {9, 100.0f}};
  EXPECT_EQ(validate(p, 10), "");
  p.temperature = 100;
  EXPECT_EQ(validate(p, 10), "");
}

TEST(SamplerValidate, RejectsEachBadFieldByName) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    std::string field;
    void (*spoil)(SamplingParams&, float);
    std::vector<float> bad;
  };
  const std::vector<Case> cases = {
      {"temperature",
       [](SamplingParams& p, float v) { p.temperature = v; },
       {-0.1f, 100.5f, inf, nan}},
      {"top_k", [](SamplingParams& p, float v) { p.top_k = static_cast<int32_t>(v); }, {-2, -100}},
      {"top_p", [](SamplingParams& p, float v) { p.top_p = v; }, {0, -0.5f, 1.01f, nan}},
      {"min_p", [](SamplingParams& p, float v) { p.min_p = v; }, {-0.01f, 1.5f, nan}},
      {"typical_p", [](SamplingParams& p, float v) { p.typical_p = v; }, {0, 1.01f, nan}},
      {"repetition_penalty",
       [](SamplingParams& p, float v) { p.repetition_penalty = v; },
       {0, -1, inf, nan}},
      {"presence_penalty",
       [](SamplingParams& p, float v) { p.presence_penalty = v; },
       {-2.01f, 2.5f, nan}},
      {"frequency_penalty",
       [](SamplingParams& p, float v) { p.frequency_penalty = v; },
       {-3, 2.01f, nan}},
      {"logit_bias",
       [](SamplingParams& p, float v) {
         p.logit_bias = {{3, v}};
       },
       {-100.5f, 101, inf, nan}},
      {"logit_bias",
       [](SamplingParams& p, float v) {
         p.logit_bias = {{static_cast<int32_t>(v), 1.0f}};
       },
       {-1, 10, 11}},
  };
  for (const auto& c : cases) {
    for (float v : c.bad) {
      SamplingParams p;
      c.spoil(p, v);
      const std::string message = validate(p, 10);
      EXPECT_NE(message.find(c.field), std::string::npos)
          << c.field << " = " << v << " gave \"" << message << "\"";
    }
  }
}

TEST(SamplerValidate, ConstructorAndSampleRejectBadInput) {
  SamplingParams bad;
  bad.top_p = 0;
  EXPECT_THROW(Sampler(bad, 1, {}), std::invalid_argument);
  SamplingParams biased;
  biased.logit_bias = {{6, 1.0f}};  // kLogits has 6 tokens
  Sampler s(biased, 1, {});
  EXPECT_THROW(s.sample(kLogits, 0), std::invalid_argument);
  Sampler ok(SamplingParams{}, 1, {});
  EXPECT_THROW(ok.sample({}, 0), std::invalid_argument);
  EXPECT_THROW(ok.sample(kLogits, 21), std::invalid_argument);
  EXPECT_THROW(ok.sample(kLogits, -1), std::invalid_argument);
  EXPECT_NO_THROW(ok.sample(kLogits, 20));
}

// ---- Greedy, bias, penalties ----

TEST(SamplerGreedy, TakesTheLowestIdAmongTies) {
  EXPECT_EQ(argmax(kLogits), 1);
  const std::vector<float> tie = {0.5f, 2.0f, 2.0f};
  EXPECT_EQ(argmax(tie), 1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> with_nan = {nan, -5.0f, nan, -4.0f};
  EXPECT_EQ(argmax(with_nan), 3);
  Sampler s(temp(0), 7, {});
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.sample(tie, 0).token, 1);
}

TEST(SamplerBias, ForcesAndBans) {
  SamplingParams force;
  force.logit_bias = {{3, 100.0f}};  // the least likely token
  expect_follows(force, kLogits, {0, 0, 0, 1, 0, 0}, 2000);
  force.temperature = 0;
  Sampler greedy(force, 1, {});
  EXPECT_EQ(greedy.sample(kLogits, 0).token, 3);

  SamplingParams ban;
  ban.logit_bias = {{1, -100.0f}, {5, -100.0f}};  // the two most likely
  auto expected = ref_distribution(ref_process(kLogits, ban, {}, {}), ban);
  expected[1] = expected[5] = 0;  // e^-100 relative: never drawn in practice
  expect_follows(ban, kLogits, expected, 20000);
  ban.temperature = 0;
  Sampler banned(ban, 1, {});
  EXPECT_EQ(banned.sample(kLogits, 0).token, 2);
  // A small bias shifts the distribution by exactly e^bias.
  SamplingParams shift;
  shift.logit_bias = {{4, 1.5f}, {2, -0.5f}};
  std::vector<float> shifted = kLogits;
  shifted[4] += 1.5f;
  shifted[2] -= 0.5f;
  expect_follows(shift, kLogits, ref_distribution(shifted, temp(1)), 100000);
}

// Greedy decisions on either side of a margin pin the processed logit to within 0.01.
int32_t greedy_after(SamplingParams p, const std::vector<int32_t>& prompt,
                     const std::vector<std::vector<float>>& steps) {
  p.temperature = 0;
  Sampler s(p, 1, prompt);
  int32_t last = -1;
  for (const auto& logits : steps) last = s.sample(logits, 0).token;
  return last;
}

TEST(SamplerPenalties, OpenAIPresenceAndFrequency) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  // Token 0 is generated twice (3 - 0.25 - 0.5 = 2.25 > 2 on the second step), then its logit is
  // 3 - 2 * 0.25 - 0.5 = 2.0.
  const std::vector<float> first = {3.0f, 2.0f, 0.0f};
  for (float rival : {1.99f, 2.01f}) {
    const std::vector<float> last = {3.0f, rival, 0.0f};
    EXPECT_EQ(greedy_after(p, {}, {first, first, last}), rival < 2.0f ? 0 : 1) << rival;
  }
  // The prompt does not count for presence or frequency.
  p.presence_penalty = 2;
  p.frequency_penalty = 2;
  EXPECT_EQ(greedy_after(p, {0, 0, 0}, {{3.0f, 2.99f}}), 0);
  // Negative penalties encourage repeats: 1 + 1 * 1 + 1 = 3 > 2.99 after one generation.
  p.presence_penalty = -1;
  p.frequency_penalty = -1;
  EXPECT_EQ(greedy_after(p, {}, {{1.0f, 0.0f}, {1.0f, 2.99f}}), 0);
  EXPECT_EQ(greedy_after(p, {}, {{1.0f, 0.0f}, {1.0f, 3.01f}}), 1);
}

TEST(SamplerPenalties, RepetitionOverPromptAndGenerated) {
  SamplingParams p;
  p.repetition_penalty = 2;
  // Positive logits are divided: 4 / 2 = 2.
  for (float rival : {1.99f, 2.01f})
    EXPECT_EQ(greedy_after(p, {0}, {{4.0f, rival}}), rival < 2.0f ? 0 : 1);
  // Negative logits are multiplied: -1 * 2 = -2.
  for (float rival : {-1.99f, -2.01f})
    EXPECT_EQ(greedy_after(p, {0}, {{-1.0f, rival}}), rival < -2.0f ? 0 : 1);
  // Generated tokens count too (token 0 chosen first, then penalized), once, not per occurrence.
  for (float rival : {1.99f, 2.01f}) {
    EXPECT_EQ(greedy_after(p, {}, {{4.0f, 0.0f}, {4.0f, rival}}), rival < 2.0f ? 0 : 1);
    EXPECT_EQ(greedy_after(p, {0, 0, 0}, {{9.0f, 0.0f}, {4.0f, rival}}), rival < 2.0f ? 0 : 1);
  }
  // A penalty below 1 encourages: 1 / 0.5 = 2.
  p.repetition_penalty = 0.5f;
  for (float rival : {1.99f, 2.01f})
    EXPECT_EQ(greedy_after(p, {0}, {{1.0f, rival}}), rival < 2.0f ? 0 : 1);
}

TEST(SamplerPenalties, AppliedInOrderBiasRepetitionOpenAI) {
  // Bias first: (1 + 1) / 2 = 1.0 (penalty first would give 1.5).
  SamplingParams p;
  p.logit_bias = {{0, 1.0f}};
  p.repetition_penalty = 2;
  EXPECT_EQ(greedy_after(p, {0}, {{1.0f, 1.25f}}), 1);
  EXPECT_EQ(greedy_after(p, {0}, {{1.0f, 0.99f}}), 0);
  // Repetition before presence: 4 / 2 - 1 = 1.0 (the other way round: 1.5).
  SamplingParams q;
  q.repetition_penalty = 2;
  q.presence_penalty = 1;
  EXPECT_EQ(greedy_after(q, {}, {{4.0f, 0.0f}, {4.0f, 1.25f}}), 1);
  EXPECT_EQ(greedy_after(q, {}, {{4.0f, 0.0f}, {4.0f, 0.99f}}), 0);
}

TEST(SamplerPenalties, ShapeTheSampledDistribution) {
  SamplingParams p;
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.4f;
  p.frequency_penalty = 0.3f;
  p.logit_bias = {{3, 2.0f}};
  p.top_p = 0.9f;
  const std::vector<int32_t> prompt = {2, 4, 4};
  // Step one is certain (token 5), step two is measured over fresh samplers.
  std::vector<float> first(kLogits.size(), 0.0f);
  first[5] = 100;
  const auto expected = ref_distribution(ref_process(kLogits, p, prompt, {5}), p);
  const int n = 40000;
  std::vector<double> freq(kLogits.size(), 0.0);
  for (int i = 0; i < n; ++i) {
    Sampler s(p, static_cast<uint64_t>(i) * 7919 + 1, prompt);
    ASSERT_EQ(s.sample(first, 0).token, 5);
    freq[static_cast<size_t>(s.sample(kLogits, 0).token)] += 1.0 / n;
  }
  for (size_t i = 0; i < freq.size(); ++i) {
    const double e = expected[i];
    if (e == 0) {
      EXPECT_EQ(freq[i], 0.0) << i;
    } else {
      EXPECT_NEAR(freq[i], e, 5 * std::sqrt(e * (1 - e) / n)) << i;
    }
  }
}

// ---- Filters: hand-computed candidate sets, then the reference's distribution ----

TEST(SamplerFilters, HandComputedCandidateSets) {
  // kLogits at T = 1: p = .0499 .3684 .2234 .0067 .0183 .3333; logit order 1 5 2 0 4 3.
  struct Case {
    SamplingParams params;
    std::set<int32_t> expected;
  };
  std::vector<Case> cases;
  auto add = [&](auto set_field, std::set<int32_t> expected) {
    SamplingParams p;
    set_field(p);
    cases.push_back({p, expected});
  };
  add([](SamplingParams& p) { p.top_k = 2; }, {1, 5});
  add([](SamplingParams& p) { p.top_k = 4; }, {1, 5, 2, 0});
  add([](SamplingParams& p) { p.top_k = 100; }, {0, 1, 2, 3, 4, 5});
  add([](SamplingParams& p) { p.top_p = 0.3f; }, {1});        // .368 >= .3
  add([](SamplingParams& p) { p.top_p = 0.5f; }, {1, 5});     // .702
  add([](SamplingParams& p) { p.top_p = 0.8f; }, {1, 5, 2});  // .925
  add([](SamplingParams& p) { p.min_p = 0.5f; }, {1, 5, 2});  // e^(l-3) >= .5: l >= 2.31
  add([](SamplingParams& p) { p.min_p = 0.95f; }, {1});       // 2.9: e^-.1 = .905
  // H = 1.3255; |-log p - H|: .1733 (2) < .2267 (5) < .3267 (1) < ...; cumulative .223, .557.
  add([](SamplingParams& p) { p.typical_p = 0.5f; }, {2, 5});
  add([](SamplingParams& p) { p.typical_p = 0.2f; }, {2});
  for (const auto& c : cases) {
    EXPECT_EQ(support(ref_distribution(kLogits, c.params)), c.expected) << "reference";
    expect_follows(c.params, kLogits, ref_distribution(kLogits, c.params), 30000);
  }
}

TEST(SamplerFilters, TopKBreaksTiesByLowerId) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 2.0f, 2.0f};
  SamplingParams p;
  p.top_k = 3;
  const double z = std::exp(3.0) + 2 * std::exp(2.0);
  expect_follows(p, logits, {0, std::exp(3.0) / z, std::exp(2.0) / z, std::exp(2.0) / z, 0}, 30000);
}

TEST(SamplerFilters, TemperatureReshapes) {
  for (float t : {0.25f, 0.7f, 1.0f, 2.0f, 10.0f}) {
    SCOPED_TRACE(t);
    std::vector<double> expected(kLogits.size());
    double z = 0;
    for (size_t i = 0; i < kLogits.size(); ++i) z += (expected[i] = std::exp(kLogits[i] / t));
    for (double& e : expected) e /= z;
    expect_follows(temp(t), kLogits, expected, 40000, 17);
  }
}

TEST(SamplerFilters, CombinedOnRandomLogitsMatchTheReference) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int trial = 0; trial < 12; ++trial) {
    std::vector<float> logits(40);
    for (float& l : logits) l = normal(rng);
    SamplingParams p;
    p.temperature = 0.5f + 0.25f * static_cast<float>(trial % 5);
    p.top_k = trial % 3 == 0 ? 12 : 0;
    p.top_p = trial % 2 == 0 ? 0.9f : 1.0f;
    p.min_p = trial % 4 == 1 ? 0.05f : 0.0f;
    p.typical_p = trial % 3 == 2 ? 0.8f : 1.0f;
    SCOPED_TRACE(trial);
    expect_follows(p, logits, ref_distribution(logits, p), 20000, static_cast<uint64_t>(trial));
  }
}

// Exactly one 53-bit uniform per draw, inverted through the candidates in logit order: the test
// predicts every token from its own mt19937_64 with the same seed. Large flat vocabularies make
// the walk go deep (the lazily sorted path).
TEST(SamplerFilters, EveryDrawIsTheInverseCdfOfOneUniform) {
  struct Setup {
    size_t n_vocab;
    float spread;  // logits uniform in [-spread, spread]
    float step;    // rounded to multiples of this (many ties), unless 0
    SamplingParams params;
  };
  std::vector<Setup> setups;
  auto add = [&](size_t n, float spread, float step, auto set_field) {
    SamplingParams p;
    set_field(p);
    setups.push_back({n, spread, step, p});
  };
  add(32000, 1.0f, 0, [](SamplingParams&) {});
  add(32000, 8.0f, 0, [](SamplingParams& p) { p.temperature = 0.8f; });
  add(32000, 2.0f, 0, [](SamplingParams& p) { p.top_p = 0.95f; });
  add(32000, 8.0f, 0, [](SamplingParams& p) { p.min_p = 0.02f; });
  add(32000, 3.0f, 0,
      [](SamplingParams& p) { p.top_k = 1000, p.top_p = 0.7f, p.temperature = 1.5f; });
  // Most tokens more than 32 nats below the best (the catch-all last bucket), cut inside it.
  add(32000, 40.0f, 0, [](SamplingParams& p) { p.top_k = 20000, p.min_p = 1e-30f; });
  add(8000, 40.0f, 0, [](SamplingParams& p) { p.typical_p = 0.95f; });
  add(5000, 1.0f, 0, [](SamplingParams& p) { p.typical_p = 0.9f; });
  add(5000, 4.0f, 0, [](SamplingParams& p) { p.min_p = 0.01f, p.typical_p = 0.5f; });
  // Ties everywhere: the order within equal logits is by id.
  add(5000, 3.0f, 0.5f, [](SamplingParams& p) { p.top_k = 700; });
  add(5000, 3.0f, 0.5f, [](SamplingParams& p) { p.top_p = 0.6f; });
  add(5000, 1.0f, 0.25f, [](SamplingParams& p) { p.temperature = 0.3f; });
  for (size_t k = 0; k < setups.size(); ++k) {
    SCOPED_TRACE(k);
    const auto& [n, spread, step, params] = setups[k];
    const uint64_t seed = 1000 + k;
    Sampler s(params, seed, {});
    std::mt19937_64 twin(seed);
    std::mt19937_64 data(k);
    std::uniform_real_distribution<float> uniform(-spread, spread);
    std::vector<float> logits(n);
    for (int step_no = 0; step_no < 8; ++step_no) {
      for (float& l : logits)
        l = step > 0 ? std::round(uniform(data) / step) * step : uniform(data);
      const auto c = ref_candidates(std::vector<double>(logits.begin(), logits.end()), params);
      double z = 0;
      for (const auto& e : c) z += e.weight;
      const double target = static_cast<double>(twin() >> 11) * 0x1.0p-53 * z;
      double cum = 0;
      int32_t expected = c.back().id;
      for (const auto& e : c) {
        cum += e.weight;
        if (target < cum) {
          expected = e.id;
          break;
        }
      }
      EXPECT_EQ(s.sample(logits, 0).token, expected) << "step " << step_no;
    }
  }
}

// ---- Logprobs ----

std::vector<double> log_softmax(const std::vector<float>& l) {
  double z = 0;
  for (float v : l) z += std::exp(double{v});
  std::vector<double> out;
  for (float v : l) out.push_back(v - std::log(z));
  return out;
}

TEST(SamplerLogprobs, AreTheRawLogSoftmax) {
  // Bias, penalties and temperature change the draw, not the logprobs.
  SamplingParams p;
  p.temperature = 0.3f;
  p.logit_bias = {{3, 5.0f}};
  p.repetition_penalty = 1.5f;
  p.frequency_penalty = 1;
  const auto expected = log_softmax(kLogits);
  Sampler s(p, 3, std::vector<int32_t>{1, 2});
  for (int i = 0; i < 20; ++i) {
    const auto r = s.sample(kLogits, 4);
    EXPECT_NEAR(r.logprob, expected[static_cast<size_t>(r.token)], 1e-6);
    ASSERT_EQ(r.top.size(), 4u);
    const std::vector<int32_t> order = {1, 5, 2, 0};
    for (size_t j = 0; j < 4; ++j) {
      EXPECT_EQ(r.top[j].token, order[j]);
      EXPECT_NEAR(r.top[j].logprob, expected[static_cast<size_t>(order[j])], 1e-6);
    }
  }
}

TEST(SamplerLogprobs, TopIsOrderedWithTiesByLowerId) {
  std::mt19937_64 rng(9);
  std::uniform_int_distribution<int> level(0, 6);
  std::vector<float> logits(3000);
  for (float& l : logits) l = static_cast<float>(level(rng)) * 0.5f;  // many ties
  const auto expected = log_softmax(logits);
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
  });
  Sampler s(SamplingParams{}, 4, {});
  for (int n_top : {0, 1, 7, 20}) {
    const auto r = s.sample(logits, n_top);
    ASSERT_EQ(r.top.size(), static_cast<size_t>(n_top));
    for (int j = 0; j < n_top; ++j) {
      EXPECT_EQ(r.top[static_cast<size_t>(j)].token, ids[static_cast<size_t>(j)]);
      EXPECT_NEAR(r.top[static_cast<size_t>(j)].logprob, expected[static_cast<size_t>(ids[j])],
                  1e-5);
    }
    EXPECT_NEAR(r.logprob, expected[static_cast<size_t>(r.token)], 1e-5);
  }
  // More alternatives asked than the vocabulary has.
  const auto small = s.sample(kLogits, 20);
  EXPECT_EQ(small.top.size(), kLogits.size());
}

TEST(SamplerLogprobs, StayAccurateForLargeLogits) {
  // A float softmax would overflow or lose the small ones.
  const std::vector<float> logits = {1000.0f, 990.0f, -1000.0f};
  Sampler s(temp(0), 1, {});
  const auto r = s.sample(logits, 3);
  const double lse = 1000.0 + std::log1p(std::exp(-10.0));
  EXPECT_EQ(r.token, 0);
  EXPECT_NEAR(r.logprob, 1000.0 - lse, 1e-9);
  EXPECT_NEAR(r.top[1].logprob, 990.0 - lse, 1e-5);
  EXPECT_NEAR(r.top[2].logprob, -1000.0 - lse, 1e-3);
}

// ---- Robustness and determinism ----

TEST(SamplerRobustness, NonFiniteLogits) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> with_nan = {nan, 1.0f, nan, 0.5f, -inf};
  expect_follows(SamplingParams{}, with_nan,
                 ref_distribution(std::vector<float>{-inf, 1.0f, -inf, 0.5f, -inf}, temp(1)),
                 20000);
  const std::vector<float> with_inf = {1.0f, inf, 3.0f, inf};
  SamplingParams p;
  p.top_p = 0.9f;
  p.typical_p = 0.9f;
  Sampler s(p, 2, {});
  // +inf is the largest float: the two share all the probability.
  std::map<int32_t, int> seen;
  for (int i = 0; i < 2000; ++i) {
    const auto r = s.sample(with_inf, 2);
    ++seen[r.token];
    EXPECT_NEAR(r.logprob, -std::log(2.0), 1e-6);
    ASSERT_EQ(r.top.size(), 2u);
    EXPECT_EQ(r.top[0].token, 1);
    EXPECT_EQ(r.top[1].token, 3);
    EXPECT_NEAR(r.top[1].logprob, -std::log(2.0), 1e-6);
  }
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_NEAR(seen[1], 1000, 5 * std::sqrt(500.0));
  // Everything banned: token 0, and the logprobs say -inf.
  const std::vector<float> none = {-inf, nan, -inf};
  Sampler all_banned(SamplingParams{}, 3, {});
  const auto r = all_banned.sample(none, 2);
  EXPECT_EQ(r.token, 0);
  EXPECT_EQ(r.logprob, -inf);
}

std::vector<int32_t> run(const SamplingParams& p, uint64_t seed, int steps) {
  Sampler s(p, seed, std::vector<int32_t>{1, 2, 3});
  std::mt19937_64 data(77);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(2000);
  std::vector<int32_t> out;
  for (int i = 0; i < steps; ++i) {
    for (float& l : logits) l = normal(data);
    out.push_back(s.sample(logits, 2).token);
  }
  return out;
}

TEST(SamplerDeterminism, SameSeedSameTokensDifferentSeedsDiffer) {
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  p.frequency_penalty = 0.5f;
  p.repetition_penalty = 1.1f;
  const auto a = run(p, 42, 64);
  EXPECT_EQ(a, run(p, 42, 64));
  EXPECT_NE(a, run(p, 43, 64));
  // Independent of other samplers interleaved on the same thread, and of the thread.
  std::vector<int32_t> interleaved, threaded;
  {
    Sampler mine(p, 42, std::vector<int32_t>{1, 2, 3});
    Sampler other(SamplingParams{}, 1, {});
    std::mt19937_64 data(77);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> logits(2000), noise(6000, 0.5f);
    for (int i = 0; i < 64; ++i) {
      for (float& l : logits) l = normal(data);
      other.sample(noise, 5);
      interleaved.push_back(mine.sample(logits, 2).token);
    }
  }
  std::thread([&] { threaded = run(p, 42, 64); }).join();
  EXPECT_EQ(interleaved, a);
  EXPECT_EQ(threaded, a);
}

}  // namespace
}  // namespace maas::engine
