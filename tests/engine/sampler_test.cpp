// The sampler against the distributions it must draw from, computed independently in double.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/sampler.h"

namespace maas::engine {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f};

std::vector<double> softmax(const std::vector<float>& l, double temp) {
  std::vector<double> p(l.size());
  double z = 0;
  for (size_t i = 0; i < l.size(); ++i) z += (p[i] = std::exp(l[i] / temp));
  for (double& x : p) x /= z;
  return p;
}

std::vector<double> frequencies(SamplingParams params, int n) {
  Sampler s(params);
  std::vector<double> f(kLogits.size(), 0.0);
  for (int i = 0; i < n; ++i) f[static_cast<size_t>(s.sample(kLogits))] += 1.0 / n;
  return f;
}

TEST(SamplerTest, GreedyTakesTheFirstMaximum) {
  EXPECT_EQ(argmax(kLogits), 1);
  const std::vector<float> tie = {0.5f, 2.0f, 2.0f};
  EXPECT_EQ(argmax(tie), 1);
  Sampler s({0.0f, 40, 0.9f, 7});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.sample(kLogits), 1);
}

TEST(SamplerTest, TemperatureOneFollowsSoftmax) {
  const int n = 200000;
  const auto f = frequencies({1.0f, 0, 1.0f, 123}, n);
  const auto p = softmax(kLogits, 1.0);
  for (size_t i = 0; i < p.size(); ++i) {
    // Five standard deviations of a binomial proportion.
    EXPECT_NEAR(f[i], p[i], 5 * std::sqrt(p[i] * (1 - p[i]) / n) + 1e-9) << "token " << i;
  }
}

TEST(SamplerTest, TopKAndTopPRestrictTheCandidates) {
  const int n = 100000;
  // top_k = 2: only tokens 1 (3.0) and 5 (2.9), renormalized.
  auto f = frequencies({1.0f, 2, 1.0f, 5}, n);
  const double p1 = std::exp(3.0) / (std::exp(3.0) + std::exp(2.9));
  EXPECT_NEAR(f[1], p1, 0.01);
  EXPECT_NEAR(f[5], 1 - p1, 0.01);
  EXPECT_EQ(f[0] + f[2] + f[3] + f[4], 0.0);
  // top_p = 0.5: the smallest set of most likely tokens whose mass reaches 0.5.
  const auto p = softmax(kLogits, 1.0);
  ASSERT_LT(p[1], 0.5);
  ASSERT_GE(p[1] + p[5], 0.5);
  f = frequencies({1.0f, 0, 0.5f, 9}, n);
  EXPECT_NEAR(f[1], p[1] / (p[1] + p[5]), 0.01);
  EXPECT_EQ(f[0] + f[2] + f[3] + f[4], 0.0);
}

TEST(SamplerTest, LowTemperatureSharpens) {
  const auto f = frequencies({0.25f, 0, 1.0f, 3}, 50000);
  const auto p = softmax(kLogits, 0.25);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(f[i], p[i], 0.01);
}

TEST(SamplerTest, SeedsReproduce) {
  auto draw = [](uint64_t seed) {
    Sampler s({1.0f, 0, 1.0f, seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(kLogits));
    return out;
  };
  EXPECT_EQ(draw(11), draw(11));
  EXPECT_NE(draw(11), draw(12));
}

}  // namespace
}  // namespace maas::engine
