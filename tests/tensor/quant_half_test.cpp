// fp16 / bf16 <-> fp32 conversions: known answers, every half and bfloat16 pattern, and rounding
// of floats checked against a brute-force nearest-value search over all halves.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tensor/quant.h"

namespace maas::tensor {
namespace {

float from_bits(uint32_t u) { return std::bit_cast<float>(u); }
uint32_t to_bits(float f) { return std::bit_cast<uint32_t>(f); }

// Value of a half from the IEEE 754 definition (binary16: bias 15, 10 fraction bits), in double.
double half_value(uint16_t h) {
  const int sign = h >> 15;
  const int exponent = (h >> 10) & 31;
  const int fraction = h & 1023;
  double magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<double>(fraction), -24);  // subnormal: 0.f * 2^-14
  } else if (exponent == 31) {
    magnitude = fraction == 0 ? std::numeric_limits<double>::infinity()
                              : std::numeric_limits<double>::quiet_NaN();
  } else {
    magnitude = std::ldexp(1.0 + fraction / 1024.0, exponent - 15);
  }
  return sign ? -magnitude : magnitude;
}

TEST(Fp16, KnownAnswers) {
  struct Case {
    float value;
    uint16_t bits;
  };
  const Case cases[] = {
      {1.0f, 0x3C00},
      {-2.0f, 0xC000},
      {0.5f, 0x3800},
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {65504.0f, 0x7BFF},                  // largest finite half
      {std::ldexp(1.0f, -14), 0x0400},     // smallest normal
      {std::ldexp(1.0f, -24), 0x0001},     // smallest subnormal
      {std::ldexp(1023.0f, -24), 0x03FF},  // largest subnormal
      {std::numeric_limits<float>::infinity(), 0x7C00},
      {-std::numeric_limits<float>::infinity(), 0xFC00},
      {0.333251953125f, 0x3555},  // 1365 / 4096: 1.0101010101b * 2^-2
  };
  for (const Case& c : cases) {
    EXPECT_EQ(fp32_to_fp16(c.value), c.bits) << c.value;
    EXPECT_EQ(to_bits(fp16_to_fp32(c.bits)), to_bits(c.value)) << std::hex << c.bits;
  }
}

TEST(Fp16, RoundsToNearestEven) {
  const float ulp1 = std::ldexp(1.0f, -10);  // spacing of halves in [1, 2)
  // Exactly halfway: ties go to the even mantissa.
  EXPECT_EQ(fp32_to_fp16(1.0f + ulp1 / 2), 0x3C00);      // between 0x3C00 and 0x3C01 -> 0x3C00
  EXPECT_EQ(fp32_to_fp16(1.0f + 3 * ulp1 / 2), 0x3C02);  // between 0x3C01 and 0x3C02 -> 0x3C02
  // Just past halfway rounds up, just below rounds down.
  EXPECT_EQ(fp32_to_fp16(std::nextafter(1.0f + ulp1 / 2, 2.0f)), 0x3C01);
  EXPECT_EQ(fp32_to_fp16(std::nextafter(1.0f + 3 * ulp1 / 2, 0.0f)), 0x3C01);
  EXPECT_EQ(fp32_to_fp16(-(1.0f + ulp1 / 2)), 0xBC00);
  // Mantissa carry into the exponent: 2 - 2^-12 is past halfway from 0x3BFF... to 2.0.
  EXPECT_EQ(fp32_to_fp16(2.0f - std::ldexp(1.0f, -12)), 0x4000);
  // Overflow: 65519 rounds down to 65504, 65520 (halfway to 2^16) ties away from odd 0x7BFF.
  EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(1e10f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-1e10f), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::max()), 0x7C00);
  // Subnormals, in units of 2^-24.
  const float unit = std::ldexp(1.0f, -24);
  EXPECT_EQ(fp32_to_fp16(unit / 2), 0x0000);  // tie between 0 and 1 -> 0
  EXPECT_EQ(fp32_to_fp16(std::nextafter(unit / 2, 1.0f)), 0x0001);
  EXPECT_EQ(fp32_to_fp16(1.5f * unit), 0x0002);  // tie between 1 and 2 -> 2
  EXPECT_EQ(fp32_to_fp16(2.5f * unit), 0x0002);  // tie between 2 and 3 -> 2
  EXPECT_EQ(fp32_to_fp16(-2.5f * unit), 0x8002);
  EXPECT_EQ(fp32_to_fp16(1023.5f * unit), 0x0400);  // tie -> even 1024: the smallest normal
  EXPECT_EQ(fp32_to_fp16(1022.5f * unit), 0x03FE);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(fp32_to_fp16(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(Fp16, NanStaysNan) {
  const uint32_t nans[] = {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0x7F802000u, 0xFFBFFFFFu};
  for (uint32_t bits : nans) {
    const uint16_t h = fp32_to_fp16(from_bits(bits));
    EXPECT_EQ(h & 0x7C00, 0x7C00) << std::hex << bits;
    EXPECT_NE(h & 0x03FF, 0) << std::hex << bits;  // not an infinity
    EXPECT_EQ(h >> 15, bits >> 31) << std::hex << bits;
  }
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7E00)));
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7C01)));
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0xFFFF)));
}

// Every one of the 65536 patterns: decodes to the value of the IEEE definition, and a non-NaN one
// converts back to itself.
TEST(Fp16, AllPatternsDecodeAndRoundTrip) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = fp16_to_fp32(bits);
    const double expected = half_value(bits);
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      const uint16_t back = fp32_to_fp16(f);
      ASSERT_TRUE(std::isnan(half_value(back))) << std::hex << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), expected) << std::hex << h;
    ASSERT_EQ(std::signbit(f), (h >> 15) != 0) << std::hex << h;
    ASSERT_EQ(fp32_to_fp16(f), bits) << std::hex << h;
  }
}

// Rounding of arbitrary floats against a brute-force reference: the nearest of all finite
// non-negative halves (ties to the even pattern), or infinity from 65520 up.
class NearestHalf {
 public:
  NearestHalf() {
    for (uint16_t h = 0; h < 0x7C00; ++h) values_.push_back(half_value(h));
  }
  uint16_t operator()(float f) const {
    const double a = std::fabs(static_cast<double>(f));
    const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
    if (a >= 65520.0) return sign | 0x7C00;
    // values_ is increasing with the pattern; find the neighbours of a.
    const auto it = std::lower_bound(values_.begin(), values_.end(), a);
    const size_t hi = static_cast<size_t>(it - values_.begin());
    if (hi == 0) return sign;
    if (hi == values_.size()) return sign | static_cast<uint16_t>(hi - 1);
    const size_t lo = hi - 1;
    const double dlo = a - values_[lo];
    const double dhi = values_[hi] - a;
    size_t pick = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
    return sign | static_cast<uint16_t>(pick);
  }

 private:
  std::vector<double> values_;
};

TEST(Fp16, RandomFloatsRoundLikeBruteForce) {
  const NearestHalf nearest;
  std::mt19937 rng(12345);
  // Random bit patterns over the exponent range that matters (2^-27 .. 2^17), both signs.
  std::uniform_int_distribution<uint32_t> mantissa(0, 0x7FFFFF);
  std::uniform_int_distribution<uint32_t> exponent(127 - 27, 127 + 17);
  std::uniform_int_distribution<uint32_t> sign(0, 1);
  for (int i = 0; i < 200000; ++i) {
    const float f = from_bits((sign(rng) << 31) | (exponent(rng) << 23) | mantissa(rng));
    ASSERT_EQ(fp32_to_fp16(f), nearest(f)) << std::hexfloat << f;
  }
  // Exact midpoints between consecutive halves and their float neighbours: the tie cases.
  for (uint16_t h = 0; h < 0x7BFF; ++h) {
    const double mid = (half_value(h) + half_value(static_cast<uint16_t>(h + 1))) / 2;
    const float m = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(m), mid);  // midpoints of halves are floats
    for (float f : {m, std::nextafter(m, 0.0f), std::nextafter(m, 1e9f)}) {
      ASSERT_EQ(fp32_to_fp16(f), nearest(f)) << std::hex << h;
      ASSERT_EQ(fp32_to_fp16(-f), nearest(-f)) << std::hex << h;
    }
  }
}

TEST(Bf16, KnownAnswers) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(fp32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(fp32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(fp32_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(fp32_to_bf16(3.140625f), 0x4049);  // 1.5703125 * 2: exactly representable
  EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_fp32(0x4049), 3.140625f);
  EXPECT_EQ(bf16_to_fp32(0x0001), std::ldexp(1.0f, -133));  // smallest bf16 subnormal

  // Ties to even on the 16 dropped bits.
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F808000u)), 0x3F80);  // halfway, even below
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F818000u)), 0x3F82);  // halfway, even above
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F808001u)), 0x3F81);
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F807FFFu)), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(from_bits(0x00008000u)), 0x0000);  // subnormal tie -> even 0
  EXPECT_EQ(fp32_to_bf16(from_bits(0x00018000u)), 0x0002);  // subnormal tie -> even 2
  EXPECT_EQ(fp32_to_bf16(from_bits(0x007FFFFFu)), 0x0080);  // carries into the smallest normal
  // The largest float is past halfway to 2^128: rounds to infinity.
  EXPECT_EQ(fp32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(fp32_to_bf16(from_bits(0x7F7F7FFFu)), 0x7F7F);

  // NaN stays NaN, even one whose payload lives only in the dropped bits.
  for (uint32_t bits : {0x7FC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu}) {
    const uint16_t b = fp32_to_bf16(from_bits(bits));
    EXPECT_TRUE(std::isnan(bf16_to_fp32(b))) << std::hex << bits;
    EXPECT_EQ(b >> 15, bits >> 31);
  }
}

TEST(Bf16, AllPatternsRoundTrip) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(h));
    ASSERT_EQ(to_bits(f), h << 16);
    if (!std::isnan(f)) {
      ASSERT_EQ(fp32_to_bf16(f), h) << std::hex << h;
    }
  }
}

TEST(Bf16, RandomFloatsRoundToNearest) {
  // Reference: of the two bf16 neighbours (truncation and the next pattern), the nearer one in
  // double arithmetic, the even one on a tie.
  std::mt19937 rng(777);
  std::uniform_int_distribution<uint32_t> any(0, 0xFFFFFFFFu);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t bits = any(rng);
    const float f = from_bits(bits);
    if (std::isnan(f) || std::isinf(f)) continue;
    const uint16_t below = static_cast<uint16_t>(bits >> 16);  // toward zero
    const uint16_t above = static_cast<uint16_t>(below + 1);   // away from zero (may be inf)
    const double a = std::fabs(static_cast<double>(f));
    const double lo = std::fabs(static_cast<double>(bf16_to_fp32(below)));
    // The value past the largest finite bf16 is 2^128 for rounding purposes.
    const double hi = (above & 0x7FFF) == 0x7F80
                          ? std::ldexp(1.0, 128)
                          : std::fabs(static_cast<double>(bf16_to_fp32(above)));
    const uint16_t expected = (a - lo) < (hi - a)   ? below
                              : (hi - a) < (a - lo) ? above
                              : (below % 2 == 0)    ? below
                                                    : above;
    ASSERT_EQ(fp32_to_bf16(f), expected) << std::hex << bits;
  }
}

}  // namespace
}  // namespace maas::tensor

namespace maas::tensor {
namespace {

// dequantize_row(F16) may take a hardware path: it must give exactly fp16_to_fp32 for every one
// of the 65536 halves, at every offset of a row (vector body and scalar tail).
TEST(QuantHalfTest, F16RowsDecodeEveryHalfExactly) {
  std::vector<uint8_t> bytes(2 * 65536 + 2 * 13);
  for (uint32_t h = 0; h < 65536 + 13; ++h) {
    bytes[2 * h] = static_cast<uint8_t>(h & 0xff);
    bytes[2 * h + 1] = static_cast<uint8_t>((h >> 8) & 0xff);
  }
  for (int64_t start : {0, 3}) {
    const int64_t n = 65536 + 7;  // not a multiple of the vector width
    std::vector<float> got(static_cast<size_t>(n));
    dequantize_row(TensorType::F16, bytes.data() + 2 * start, got.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const auto h = static_cast<uint16_t>((start + i) & 0xffff);
      const float want = fp16_to_fp32(h);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got[static_cast<size_t>(i)])) << h;
      } else {
        EXPECT_EQ(std::memcmp(&got[static_cast<size_t>(i)], &want, 4), 0) << "half " << h;
      }
    }
  }
}

}  // namespace
}  // namespace maas::tensor
