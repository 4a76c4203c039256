// Dequantization known answers for every GGUF block type.
//
// Each type has:
//  - a reference decoder written here from the format description (ggml's block structs and the
//    loop structure of its dequantize_row_* functions): fields are read bit by bit from the byte
//    string, and elements are emitted in ggml's loop order rather than computed per index. It is
//    a template: in double it gives the exact value; in float it repeats ggml's float operations
//    in ggml's order, which the implementation must match bit for bit.
//  - a hand-built block with literal field values, spot-checked against expected values derived
//    by hand (see the comments), then compared element by element with the reference;
//  - random blocks (several per row) compared with the reference.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "tensor/quant.h"

namespace maas::tensor {
namespace {

using Bytes = std::vector<uint8_t>;

// `count` bits from bit `pos` of the byte string, least significant first (bit 0 = LSB of byte 0).
unsigned bits(const Bytes& b, size_t pos, unsigned count) {
  unsigned v = 0;
  for (unsigned i = 0; i < count; ++i) {
    const size_t p = pos + i;
    v |= ((b.at(p / 8) >> (p % 8)) & 1u) << i;
  }
  return v;
}
// `count` bits starting at bit `shift` of byte `byte`.
unsigned field(const Bytes& b, size_t byte, unsigned shift, unsigned count) {
  return bits(b, 8 * byte + shift, count);
}
int int8_at(const Bytes& b, size_t byte) { return static_cast<int8_t>(b.at(byte)); }

// IEEE binary16 at `byte` (little-endian), decoded from its definition.
double half_at(const Bytes& b, size_t byte) {
  const unsigned h = field(b, byte, 0, 16);
  const int exponent = (h >> 10) & 31;
  const int fraction = h & 1023;
  const double magnitude = exponent == 0 ? std::ldexp(fraction, -24)
                                         : std::ldexp(1.0 + fraction / 1024.0, exponent - 15);
  EXPECT_NE(exponent, 31) << "test blocks use finite scales";
  return (h >> 15) ? -magnitude : magnitude;
}

// ---------------------------------------------------------------------------------------------
// Reference decoders. T = double: exact value. T = float: ggml's float evaluation order.

template <typename T>
std::vector<T> ref_q4_0(const Bytes& b) {  // fp16 d, qs[16]
  std::vector<T> y(32);
  const T d = static_cast<T>(half_at(b, 0));
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<T>(static_cast<int>(field(b, 2 + j, 0, 4)) - 8) * d;
    y[j + 16] = static_cast<T>(static_cast<int>(field(b, 2 + j, 4, 4)) - 8) * d;
  }
  return y;
}

template <typename T>
std::vector<T> ref_q4_1(const Bytes& b) {  // fp16 d, fp16 m, qs[16]
  std::vector<T> y(32);
  const T d = static_cast<T>(half_at(b, 0));
  const T m = static_cast<T>(half_at(b, 2));
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<T>(field(b, 4 + j, 0, 4)) * d + m;
    y[j + 16] = static_cast<T>(field(b, 4 + j, 4, 4)) * d + m;
  }
  return y;
}

template <typename T>
std::vector<T> ref_q5_0(const Bytes& b) {  // fp16 d, qh[4] (bit j: 5th bit of element j), qs[16]
  std::vector<T> y(32);
  const T d = static_cast<T>(half_at(b, 0));
  for (int j = 0; j < 16; ++j) {
    const int lo = static_cast<int>(field(b, 6 + j, 0, 4) | (bits(b, 16 + j, 1) << 4));
    const int hi = static_cast<int>(field(b, 6 + j, 4, 4) | (bits(b, 16 + j + 16, 1) << 4));
    y[j] = static_cast<T>(lo - 16) * d;
    y[j + 16] = static_cast<T>(hi - 16) * d;
  }
  return y;
}

template <typename T>
std::vector<T> ref_q5_1(const Bytes& b) {  // fp16 d, fp16 m, qh[4], qs[16]
  std::vector<T> y(32);
  const T d = static_cast<T>(half_at(b, 0));
  const T m = static_cast<T>(half_at(b, 2));
  for (int j = 0; j < 16; ++j) {
    const unsigned lo = field(b, 8 + j, 0, 4) | (bits(b, 32 + j, 1) << 4);
    const unsigned hi = field(b, 8 + j, 4, 4) | (bits(b, 32 + j + 16, 1) << 4);
    y[j] = static_cast<T>(lo) * d + m;
    y[j + 16] = static_cast<T>(hi) * d + m;
  }
  return y;
}

template <typename T>
std::vector<T> ref_q8_0(const Bytes& b) {  // fp16 d, int8 qs[32]
  std::vector<T> y(32);
  const T d = static_cast<T>(half_at(b, 0));
  for (int j = 0; j < 32; ++j) y[j] = static_cast<T>(int8_at(b, 2 + j)) * d;
  return y;
}

template <typename T>
std::vector<T> ref_q2_k(const Bytes& b) {  // scales[16] @0, qs[64] @16, d @80, dmin @82
  std::vector<T> y;
  const T d = static_cast<T>(half_at(b, 80));
  const T dmin = static_cast<T>(half_at(b, 82));
  int scale_index = 0;
  for (int half = 0; half < 2; ++half) {          // each half of 128 elements uses 32 bytes of qs
    for (int shift = 0; shift < 8; shift += 2) {  // ... four times, two bits at a time
      for (int part = 0; part < 2; ++part) {      // 16 bytes per scale
        const T dl = d * static_cast<T>(field(b, scale_index, 0, 4));
        const T ml = dmin * static_cast<T>(field(b, scale_index, 4, 4));
        ++scale_index;
        for (int l = 0; l < 16; ++l) {
          const unsigned q = field(b, 16 + 32 * half + 16 * part + l, shift, 2);
          y.push_back(dl * static_cast<T>(q) - ml);
        }
      }
    }
  }
  return y;
}

// Q3_K's 16 signed scales: the 12 bytes read as three little-endian words; words 0 and 1 hold
// the low nibbles (scales 0-7 in the low nibbles, 8-15 in the high ones), word 2 the top two bits
// (scales k, k+4, k+8, k+12 in byte k at bits 0, 2, 4, 6). Re-assembled four scales per word.
std::vector<int> ref_q3_k_scales(const Bytes& b) {
  auto word = [&](size_t byte) { return static_cast<uint32_t>(bits(b, 8 * byte, 32)); };
  const uint32_t low_a = word(96), low_b = word(100), tops = word(104);
  const uint32_t nibbles = 0x0F0F0F0Fu, pairs = 0x03030303u;
  const uint32_t assembled[4] = {
      (low_a & nibbles) | (((tops >> 0) & pairs) << 4),         // scales 0-3
      (low_b & nibbles) | (((tops >> 2) & pairs) << 4),         // scales 4-7
      ((low_a >> 4) & nibbles) | (((tops >> 4) & pairs) << 4),  // scales 8-11
      ((low_b >> 4) & nibbles) | (((tops >> 6) & pairs) << 4),  // scales 12-15
  };
  std::vector<int> scales;
  for (int k = 0; k < 16; ++k) {
    scales.push_back(static_cast<int>((assembled[k / 4] >> (8 * (k % 4))) & 0xFF) - 32);
  }
  return scales;
}

template <typename T>
std::vector<T> ref_q3_k(const Bytes& b) {  // hmask[32] @0, qs[64] @32, scales[12] @96, d @108
  std::vector<T> y;
  const T d = static_cast<T>(half_at(b, 108));
  const std::vector<int> scales = ref_q3_k_scales(b);
  int scale_index = 0;
  int hmask_bit = 0;  // advances with every 32 elements
  for (int half = 0; half < 2; ++half) {
    for (int shift = 0; shift < 8; shift += 2, ++hmask_bit) {
      for (int part = 0; part < 2; ++part) {
        const T dl = d * static_cast<T>(scales[scale_index++]);
        for (int l = 0; l < 16; ++l) {
          const int low = static_cast<int>(field(b, 32 + 32 * half + 16 * part + l, shift, 2));
          const bool high = field(b, 16 * part + l, hmask_bit, 1) != 0;
          y.push_back(dl * static_cast<T>(low - (high ? 0 : 4)));  // clear high bit: minus 4
        }
      }
    }
  }
  return y;
}

// Q4_K/Q5_K scale and min j (0..7) from the 12 bytes at `at`, as 6-bit fields.
void ref_scale_min(const Bytes& b, size_t at, int j, unsigned& scale, unsigned& min) {
  if (j < 4) {
    scale = field(b, at + j, 0, 6);
    min = field(b, at + j + 4, 0, 6);
  } else {
    scale = field(b, at + j + 4, 0, 4) | (field(b, at + j - 4, 6, 2) << 4);
    min = field(b, at + j + 4, 4, 4) | (field(b, at + j, 6, 2) << 4);
  }
}

template <typename T>
std::vector<T> ref_q4_k(const Bytes& b) {  // d @0, dmin @2, scales[12] @4, qs[128] @16
  std::vector<T> y;
  const T d = static_cast<T>(half_at(b, 0));
  const T dmin = static_cast<T>(half_at(b, 2));
  for (int chunk = 0; chunk < 4; ++chunk) {  // 64 elements share 32 bytes: low, then high nibbles
    for (int nibble = 0; nibble < 2; ++nibble) {
      unsigned scale, min;
      ref_scale_min(b, 4, 2 * chunk + nibble, scale, min);
      const T dl = d * static_cast<T>(scale);
      const T ml = dmin * static_cast<T>(min);
      for (int l = 0; l < 32; ++l) {
        y.push_back(dl * static_cast<T>(field(b, 16 + 32 * chunk + l, 4 * nibble, 4)) - ml);
      }
    }
  }
  return y;
}

template <typename T>
std::vector<T> ref_q5_k(const Bytes& b) {  // d @0, dmin @2, scales[12] @4, qh[32] @16, qs @48
  std::vector<T> y;
  const T d = static_cast<T>(half_at(b, 0));
  const T dmin = static_cast<T>(half_at(b, 2));
  for (int chunk = 0; chunk < 4; ++chunk) {
    for (int nibble = 0; nibble < 2; ++nibble) {
      unsigned scale, min;
      ref_scale_min(b, 4, 2 * chunk + nibble, scale, min);
      const T dl = d * static_cast<T>(scale);
      const T ml = dmin * static_cast<T>(min);
      const unsigned qh_bit = 2 * chunk + nibble;
      for (int l = 0; l < 32; ++l) {
        const unsigned q =
            field(b, 48 + 32 * chunk + l, 4 * nibble, 4) + (field(b, 16 + l, qh_bit, 1) ? 16u : 0u);
        y.push_back(dl * static_cast<T>(q) - ml);
      }
    }
  }
  return y;
}

template <typename T>
std::vector<T> ref_q6_k(const Bytes& b) {  // ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208
  std::vector<T> y(256);
  const T d = static_cast<T>(half_at(b, 208));
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      // One ql byte pair and one qh byte feed four elements, 32 apart.
      const size_t ql0 = 64 * half + l, ql1 = ql0 + 32, qh = 128 + 32 * half + l;
      const int q[4] = {
          static_cast<int>(field(b, ql0, 0, 4) | (field(b, qh, 0, 2) << 4)) - 32,
          static_cast<int>(field(b, ql1, 0, 4) | (field(b, qh, 2, 2) << 4)) - 32,
          static_cast<int>(field(b, ql0, 4, 4) | (field(b, qh, 4, 2) << 4)) - 32,
          static_cast<int>(field(b, ql1, 4, 4) | (field(b, qh, 6, 2) << 4)) - 32,
      };
      for (int k = 0; k < 4; ++k) {
        const int scale = int8_at(b, 192 + 8 * half + l / 16 + 2 * k);
        y[128 * half + l + 32 * k] = d * static_cast<T>(scale) * static_cast<T>(q[k]);
      }
    }
  }
  return y;
}

template <typename T>
std::vector<T> ref_q8_k(const Bytes& b) {  // float d @0, int8 qs[256] @4, int16 bsums[16] @260
  std::vector<T> y(256);
  const T d = static_cast<T>(std::bit_cast<float>(static_cast<uint32_t>(bits(b, 0, 32))));
  for (int j = 0; j < 256; ++j) y[j] = d * static_cast<T>(int8_at(b, 4 + j));
  return y;
}

// ---------------------------------------------------------------------------------------------

struct TypeCase {
  TensorType type;
  size_t block_size;
  size_t block_bytes;
  std::vector<size_t> half_fields;  // byte offsets of fp16 scales (kept finite in random blocks)
  std::function<std::vector<double>(const Bytes&)> exact;
  std::function<std::vector<float>(const Bytes&)> ggml_order;
  // Largest offset term of a block (the min part), for the tolerance of the exact comparison.
  std::function<double(const Bytes&)> offset_bound;
};

double no_offset(const Bytes&) { return 0.0; }

const std::vector<TypeCase>& type_cases() {
  static const std::vector<TypeCase> cases = {
      {TensorType::Q4_0, 32, 18, {0}, ref_q4_0<double>, ref_q4_0<float>, no_offset},
      {TensorType::Q4_1,
       32,
       20,
       {0, 2},
       ref_q4_1<double>,
       ref_q4_1<float>,
       [](const Bytes& b) { return std::fabs(half_at(b, 2)); }},
      {TensorType::Q5_0, 32, 22, {0}, ref_q5_0<double>, ref_q5_0<float>, no_offset},
      {TensorType::Q5_1,
       32,
       24,
       {0, 2},
       ref_q5_1<double>,
       ref_q5_1<float>,
       [](const Bytes& b) { return std::fabs(half_at(b, 2)); }},
      {TensorType::Q8_0, 32, 34, {0}, ref_q8_0<double>, ref_q8_0<float>, no_offset},
      {TensorType::Q2_K,
       256,
       84,
       {80, 82},
       ref_q2_k<double>,
       ref_q2_k<float>,
       [](const Bytes& b) { return 15 * std::fabs(half_at(b, 82)); }},
      {TensorType::Q3_K, 256, 110, {108}, ref_q3_k<double>, ref_q3_k<float>, no_offset},
      {TensorType::Q4_K,
       256,
       144,
       {0, 2},
       ref_q4_k<double>,
       ref_q4_k<float>,
       [](const Bytes& b) { return 63 * std::fabs(half_at(b, 2)); }},
      {TensorType::Q5_K,
       256,
       176,
       {0, 2},
       ref_q5_k<double>,
       ref_q5_k<float>,
       [](const Bytes& b) { return 63 * std::fabs(half_at(b, 2)); }},
      {TensorType::Q6_K, 256, 210, {208}, ref_q6_k<double>, ref_q6_k<float>, no_offset},
      {TensorType::Q8_K, 256, 292, {}, ref_q8_k<double>, ref_q8_k<float>, no_offset},
  };
  return cases;
}

const TypeCase& case_for(TensorType t) {
  for (const TypeCase& c : type_cases()) {
    if (c.type == t) return c;
  }
  throw std::logic_error("no test case for type");
}

std::vector<float> decode(TensorType t, const Bytes& blocks, size_t n) {
  std::vector<float> out(n);
  dequantize_row(t, blocks.data(), out.data(), static_cast<int64_t>(n));
  return out;
}

// Decodes `block` with the implementation and checks it against both reference flavours.
void expect_matches_reference(const TypeCase& c, const Bytes& block,
                              const std::vector<float>& got) {
  const std::vector<double> exact = c.exact(block);
  const std::vector<float> ordered = c.ggml_order(block);
  ASSERT_EQ(exact.size(), c.block_size);
  ASSERT_EQ(ordered.size(), c.block_size);
  const double offset = c.offset_bound(block);
  for (size_t e = 0; e < c.block_size; ++e) {
    ASSERT_EQ(std::bit_cast<uint32_t>(got[e]) & 0x7FFFFFFFu,
              std::bit_cast<uint32_t>(ordered[e]) & 0x7FFFFFFFu)
        << gguf::type_name(c.type) << " element " << e << ": " << got[e] << " vs " << ordered[e];
    // Float rounding of at most three operations on terms bounded by |exact| + offset.
    ASSERT_NEAR(got[e], exact[e], 4e-7 * (std::fabs(exact[e]) + 2 * offset))
        << gguf::type_name(c.type) << " element " << e;
  }
}

struct SpotCheck {
  size_t element;
  double value;
};

// Decodes a hand-built block, checks the hand-derived spot values exactly, then every element
// against the reference.
void check_literal_block(TensorType t, const Bytes& block, const std::vector<SpotCheck>& spots) {
  const TypeCase& c = case_for(t);
  ASSERT_EQ(block.size(), c.block_bytes);
  const std::vector<float> got = decode(t, block, c.block_size);
  const std::vector<double> exact = c.exact(block);
  for (const SpotCheck& s : spots) {
    EXPECT_EQ(static_cast<double>(got[s.element]), s.value) << "element " << s.element;
    EXPECT_EQ(exact[s.element], s.value) << "reference, element " << s.element;
  }
  expect_matches_reference(c, block, got);
}

Bytes pattern(size_t n, unsigned mul, unsigned add) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * mul + add);
  return b;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes le16(uint16_t v) { return {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)}; }

// ---------------------------------------------------------------------------------------------
// 32-element blocks. Element j < 16 is the low nibble of qs[j], element j + 16 the high nibble.

TEST(Dequantize, Q4_0KnownBlock) {
  // d = fp16 0x3800 = 0.5; qs[j] = j | (15 - j) << 4.
  Bytes qs(16);
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const Bytes block = concat({le16(0x3800), qs});
  std::vector<SpotCheck> spots;
  for (int j = 0; j < 16; ++j) {
    spots.push_back({static_cast<size_t>(j), 0.5 * (j - 8)});              // low nibble j
    spots.push_back({static_cast<size_t>(j + 16), 0.5 * ((15 - j) - 8)});  // high nibble 15 - j
  }
  // By hand: element 0 = 0.5 * (0 - 8) = -4, element 16 = 0.5 * (15 - 8) = 3.5.
  spots.push_back({0, -4.0});
  spots.push_back({16, 3.5});
  check_literal_block(TensorType::Q4_0, block, spots);
}

TEST(Dequantize, Q4_1KnownBlock) {
  // d = 0x3400 = 0.25, m = 0xC000 = -2; qs[j] = (5j mod 16) | (3j mod 16) << 4.
  Bytes qs(16);
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(((5 * j) & 15) | (((3 * j) & 15) << 4));
  const Bytes block = concat({le16(0x3400), le16(0xC000), qs});
  std::vector<SpotCheck> spots;
  for (int j = 0; j < 16; ++j) {
    spots.push_back({static_cast<size_t>(j), 0.25 * ((5 * j) & 15) - 2.0});
    spots.push_back({static_cast<size_t>(j + 16), 0.25 * ((3 * j) & 15) - 2.0});
  }
  spots.push_back({3, 1.75});  // 0.25 * 15 - 2
  spots.push_back({20, 1.0});  // high nibble of qs[4] = 12: 0.25 * 12 - 2
  check_literal_block(TensorType::Q4_1, block, spots);
}

TEST(Dequantize, Q5_0KnownBlock) {
  // d = 0x3C00 = 1; qh = 0xA5A5F00F (bit j is the fifth bit of element j);
  // qs[j] = (3j mod 16) | (7j mod 16) << 4.
  const uint32_t qh = 0xA5A5F00Fu;
  Bytes qs(16);
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(((3 * j) & 15) | (((7 * j) & 15) << 4));
  const Bytes block = concat({le16(0x3C00), {0x0F, 0xF0, 0xA5, 0xA5}, qs});
  std::vector<SpotCheck> spots;
  for (int j = 0; j < 16; ++j) {
    const int lo = ((3 * j) & 15) | static_cast<int>(((qh >> j) & 1) << 4);
    const int hi = ((7 * j) & 15) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
    spots.push_back({static_cast<size_t>(j), lo - 16.0});
    spots.push_back({static_cast<size_t>(j + 16), hi - 16.0});
  }
  spots.push_back({0, 0.0});    // nibble 0, fifth bit 1: 16 - 16
  spots.push_back({4, -4.0});   // nibble 12, bit 4 of 0x0F clear: 12 - 16
  spots.push_back({17, -9.0});  // high nibble of qs[1] = 7, bit 17 (0xA5 bit 1) clear
  spots.push_back({31, 9.0});   // high nibble of qs[15] = 105 mod 16 = 9, bit 31 set: 25 - 16
  check_literal_block(TensorType::Q5_0, block, spots);
}

TEST(Dequantize, Q5_1KnownBlock) {
  // d = 0x3800 = 0.5, m = 0x4200 = 3; qh = 0x12345678; qs[j] = j | j << 4.
  const uint32_t qh = 0x12345678u;
  Bytes qs(16);
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(j | (j << 4));
  const Bytes block = concat({le16(0x3800), le16(0x4200), {0x78, 0x56, 0x34, 0x12}, qs});
  std::vector<SpotCheck> spots;
  for (int j = 0; j < 16; ++j) {
    spots.push_back({static_cast<size_t>(j), 0.5 * (j | (((qh >> j) & 1) << 4)) + 3.0});
    spots.push_back({static_cast<size_t>(j + 16), 0.5 * (j | (((qh >> (j + 16)) & 1) << 4)) + 3.0});
  }
  spots.push_back({0, 3.0});    // q = 0
  spots.push_back({3, 12.5});   // bit 3 of 0x78 set: q = 19 -> 9.5 + 3
  spots.push_back({20, 13.0});  // bit 20 (0x34 bit 4) set: q = 20 -> 10 + 3
  spots.push_back({31, 10.5});  // bit 31 clear: q = 15 -> 7.5 + 3
  check_literal_block(TensorType::Q5_1, block, spots);
}

TEST(Dequantize, Q8_0KnownBlock) {
  // d = 0xB800 = -0.5; qs[j] = 8j - 128 as int8: element j = -0.5 * (8j - 128) = 64 - 4j.
  Bytes qs(32);
  for (int j = 0; j < 32; ++j) qs[j] = static_cast<uint8_t>(8 * j - 128);
  const Bytes block = concat({le16(0xB800), qs});
  std::vector<SpotCheck> spots;
  for (int j = 0; j < 32; ++j) spots.push_back({static_cast<size_t>(j), 64.0 - 4.0 * j});
  spots.push_back({0, 64.0});    // -128 * -0.5
  spots.push_back({31, -60.0});  // 120 * -0.5
  check_literal_block(TensorType::Q8_0, block, spots);
}

// ---------------------------------------------------------------------------------------------
// k-quants. The spot values below were derived from the layout description (checked by hand for
// the commented ones), not from the implementation.

TEST(Dequantize, Q2_KKnownBlock) {
  // scales[j] = j | (15 - j) << 4: sub-block j has scale j and min 15 - j.
  // qs[i] = 37 i + 11 (mod 256); d = 1.0 (0x3C00), dmin = 0.5 (0x3800).
  Bytes scales(16);
  for (int j = 0; j < 16; ++j) scales[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const Bytes block = concat({scales, pattern(64, 37, 11), le16(0x3C00), le16(0x3800)});
  check_literal_block(
      TensorType::Q2_K, block,
      {
          // Element 0: sub-block 0 (scale 0, min 15): 0 * q - 0.5 * 15.
          {0, -7.5},
          {1, -7.5},
          {15, -7.5},
          {16, -4.0},
          {17, -7.0},
          {31, -5.0},
          {32, -2.5},
          {40, -6.5},
          {63, -3.0},
          {64, -5.5},
          {100, 7.5},
          {127, 10.0},
          {128, 20.5},
          {129, -3.5},
          {150, 6.0},
          {191, 9.0},
          // Element 200: second half, group 2 (shift 4), byte 32 + 8 = 40 of qs: 211 = 0b11010011
          // -> q = 1; sub-block 12: scale 12, min 3 -> 12 * 1 - 0.5 * 3 = 10.5.
          {200, 10.5},
          // Element 230: group 3 (shift 6), qs[38] = 137 = 0b10001001 -> q = 2; sub-block 14:
          // 14 * 2 - 0.5 * 1 = 27.5.
          {230, 27.5},
          {254, 0.0},
          {255, 0.0},
      });
}

TEST(Dequantize, Q3_KKnownBlock) {
  // Stored 6-bit scales S = {0, 1, 31, 32, 33, 63, 10, 50, 17, 45, 5, 60, 40, 20, 62, 2}, i.e.
  // S - 32 = {-32, -31, -1, 0, 1, 31, -22, 18, -15, 13, -27, 28, 8, -12, 30, -30}, packed by hand:
  //   byte j < 8: (S[j] & 15) | (S[j + 8] & 15) << 4, e.g. byte 1 = 1 | (45 & 15 = 13) << 4 = 0xD1
  //   byte 8 + k: S[k] >> 4 | (S[k + 4] >> 4) << 2 | (S[k + 8] >> 4) << 4 | (S[k + 12] >> 4) << 6,
  //   e.g. byte 8 = 0 | 2 << 2 | 1 << 4 | 2 << 6 = 0x98.
  const Bytes scales = {0x10, 0xD1, 0x5F, 0xC0, 0x81, 0x4F, 0xEA, 0x22, 0x98, 0x6C, 0xC1, 0x3E};
  // hmask[i] = 29 i + 7, qs[i] = 53 i + 19 (mod 256); d = 0.5 (0x3800).
  const Bytes block = concat({pattern(32, 29, 7), pattern(64, 53, 19), scales, le16(0x3800)});
  EXPECT_EQ(ref_q3_k_scales(block),
            (std::vector<int>{-32, -31, -1, 0, 1, 31, -22, 18, -15, 13, -27, 28, 8, -12, 30, -30}));
  check_literal_block(TensorType::Q3_K, block,
                      {
                          // Element 0: qs[0] = 19 = 0b10011 -> low bits 3; hmask[0] = 7, bit 0 set
                          // -> q = 3; scale -32: 0.5 * -32 * 3 = -48.
                          {0, -48.0},
                          // Element 1: qs[1] = 72 -> low bits 0; hmask[1] = 36, bit 0 clear -> q =
                          // 0 - 4; 0.5 * -32 * -4 = 64.
                          {1, 64.0},
                          {15, 32.0},
                          {16, -46.5},
                          {17, 62.0},
                          {31, 31.0},
                          {32, 0.0},
                          {40, -1.0},
                          {63, 0.0},
                          {64, 0.5},
                          {100, -33.0},
                          {127, 9.0},
                          {128, 7.5},
                          {129, 30.0},
                          {150, -19.5},
                          {191, -14.0},
                          {200, 4.0},
                          {230, 45.0},
                          {254, 15.0},
                          {255, 0.0},
                      });
}

// Scales {1, 2, 3, 63, 17, 33, 48, 62} and mins {0, 5, 63, 1, 16, 31, 47, 60}, packed by hand:
//   bytes 0-3: scale j | (scale j+4 >> 4) << 6, e.g. byte 0 = 1 | 1 << 6 = 0x41
//   bytes 4-7: min j | (min j+4 >> 4) << 6, e.g. byte 6 = 63 | 2 << 6 = 0xBF
//   bytes 8-11: (scale j+4 & 15) | (min j+4 & 15) << 4, e.g. byte 11 = 14 | 12 << 4 = 0xCE
const Bytes kScaleMinBytes = {0x41, 0x82, 0xC3, 0xFF, 0x40, 0x45,
                              0xBF, 0xC1, 0x01, 0xF1, 0xF0, 0xCE};

TEST(Dequantize, Q4_KScaleMinPacking) {
  const Bytes block = concat({le16(0), le16(0), kScaleMinBytes});
  const unsigned scales[8] = {1, 2, 3, 63, 17, 33, 48, 62};
  const unsigned mins[8] = {0, 5, 63, 1, 16, 31, 47, 60};
  for (int j = 0; j < 8; ++j) {
    unsigned scale, min;
    ref_scale_min(block, 4, j, scale, min);
    EXPECT_EQ(scale, scales[j]) << j;
    EXPECT_EQ(min, mins[j]) << j;
  }
}

TEST(Dequantize, Q4_KKnownBlock) {
  // d = 0.5 (0x3800), dmin = 0.25 (0x3400); qs[i] = 7 i + 3 (mod 256).
  const Bytes block = concat({le16(0x3800), le16(0x3400), kScaleMinBytes, pattern(128, 7, 3)});
  check_literal_block(
      TensorType::Q4_K, block,
      {
          // Element 0: low nibble of qs[0] = 3; scale 1, min 0: 0.5 * 1 * 3 = 1.5.
          {0, 1.5},
          {1, 5.0},
          {15, 6.0},
          {16, 1.5},
          {17, 5.0},
          {31, 6.0},
          // Element 32: high nibble of qs[0] = 0; scale 2, min 5: 0 - 0.25 * 5 = -1.25.
          {32, -1.25},
          {40, 1.75},
          {63, 11.75},
          {64, -11.25},
          {100, 472.25},
          {127, 346.25},
          {128, 21.5},
          {129, 81.0},
          {150, 106.5},
          {191, 140.75},
          // Element 200: chunk 3, low nibble of qs[104] = 731 mod 256 = 0xDB -> 11; sub-block 6
          // (scale 48, min 47): 0.5 * 48 * 11 - 0.25 * 47 = 252.25.
          {200, 252.25},
          {230, 357.0},
          // Element 255: high nibble of qs[127] = 0x7C -> 7; sub-block 7 (scale 62, min 60):
          // 0.5 * 62 * 7 - 0.25 * 60 = 202.
          {254, 202.0},
          {255, 202.0},
      });
}

TEST(Dequantize, Q5_KKnownBlock) {
  // d = 0.25 (0x3400), dmin = 1 (0x3C00); qh[i] = 11 i + 5, qs[i] = 13 i + 1 (mod 256).
  const Bytes block =
      concat({le16(0x3400), le16(0x3C00), kScaleMinBytes, pattern(32, 11, 5), pattern(128, 13, 1)});
  check_literal_block(
      TensorType::Q5_K, block,
      {
          // Element 0: low nibble of qs[0] = 1, qh[0] = 5 bit 0 set -> q = 17; scale 1, min 0:
          // 0.25 * 17 = 4.25.
          {0, 4.25},
          {1, 3.5},
          {15, 1.0},
          {16, 4.25},
          {17, 3.5},
          {31, 1.0},
          // Element 32: high nibble of qs[0] = 0, qh[0] bit 1 clear -> q = 0; min 5 -> -5.
          {32, -5.0},
          {40, -2.0},
          {63, 7.5},
          {64, -50.25},
          {100, 203.75},
          {127, 298.25},
          {128, -11.75},
          {129, 111.5},
          {150, 115.75},
          {191, 76.25},
          {200, 253.0},
          {230, -29.0},
          {254, 33.0},
          // Element 255: high nibble of qs[127] = 1652 mod 256 = 0x74 -> 7; qh[31] = 346 mod 256
          // = 0x5A, bit 7 clear -> q = 7; scale 62, min 60: 0.25 * 62 * 7 - 60 = 48.5.
          {255, 48.5},
      });
}

TEST(Dequantize, Q6_KKnownBlock) {
  // ql[i] = 17 i + 3, qh[i] = 23 i + 9 (mod 256); int8 scales below; d = 0.125 (0x3000).
  const int8_t scales[16] = {-128, 127, -1, 1, 0, 64, -64, 5, -7, 100, -100, 33, -33, 2, -2, 17};
  Bytes scale_bytes(16);
  std::memcpy(scale_bytes.data(), scales, 16);
  const Bytes block = concat({pattern(128, 17, 3), pattern(64, 23, 9), scale_bytes, le16(0x3000)});
  check_literal_block(
      TensorType::Q6_K, block,
      {
          // Element 0: low nibble of ql[0] = 3, bits 0-1 of qh[0] = 9 -> 1: q = 3 | 16 = 19,
          // minus 32 = -13; scale -128: 0.125 * -128 * -13 = 208.
          {0, 208.0},     {1, 448.0},    {15, -32.0},   {16, -206.375}, {17, -444.5},
          {31, 31.75},    {32, -0.375},  {40, 2.625},   {63, -3.75},    {64, 0.0},  // scale 0
          {100, 80.0},    {127, 11.875}, {128, 11.375}, {129, 24.5},    {150, 312.5},
          {191, -123.75}, {200, -49.5},  {230, 1.0},    {254, 12.75},   {255, 14.875},
      });
}

TEST(Dequantize, Q8_KKnownBlock) {
  // float d = 0.375; qs[i] = i - 128 as int8; bsums are not used for decoding (left as junk).
  Bytes block(292, 0xEE);
  const uint32_t d_bits = std::bit_cast<uint32_t>(0.375f);
  for (int i = 0; i < 4; ++i) block[i] = static_cast<uint8_t>(d_bits >> (8 * i));
  for (int i = 0; i < 256; ++i) block[4 + i] = static_cast<uint8_t>(i - 128);
  std::vector<SpotCheck> spots;
  for (int i = 0; i < 256; ++i) spots.push_back({static_cast<size_t>(i), 0.375 * (i - 128)});
  spots.push_back({0, -48.0});
  spots.push_back({255, 47.625});
  check_literal_block(TensorType::Q8_K, block, spots);
}

// ---------------------------------------------------------------------------------------------

uint16_t random_finite_half(std::mt19937& rng) {
  uint16_t h = static_cast<uint16_t>(rng());
  if ((h & 0x7C00) == 0x7C00) h &= 0xBFFF;  // exponent 31 (inf/NaN) -> 15
  return h;
}

// Rows of several blocks of random bytes (finite scales), decoded in one call: every block must
// match the reference, so block strides and offsets are right too.
TEST(Dequantize, RandomBlocksMatchReference) {
  std::mt19937 rng(20240601);
  for (const TypeCase& c : type_cases()) {
    SCOPED_TRACE(gguf::type_name(c.type));
    for (int row = 0; row < 20; ++row) {
      const size_t nblocks = 1 + row % 7;
      Bytes data(nblocks * c.block_bytes);
      for (uint8_t& byte : data) byte = static_cast<uint8_t>(rng());
      for (size_t b = 0; b < nblocks; ++b) {
        uint8_t* block = data.data() + b * c.block_bytes;
        for (size_t at : c.half_fields) {
          const uint16_t h = random_finite_half(rng);
          block[at] = static_cast<uint8_t>(h);
          block[at + 1] = static_cast<uint8_t>(h >> 8);
        }
        if (c.type == TensorType::Q8_K) {
          const float d = std::uniform_real_distribution<float>(-4.0f, 4.0f)(rng);
          const uint32_t bits = std::bit_cast<uint32_t>(d);
          for (int i = 0; i < 4; ++i) block[i] = static_cast<uint8_t>(bits >> (8 * i));
        }
      }
      const std::vector<float> got = decode(c.type, data, nblocks * c.block_size);
      for (size_t b = 0; b < nblocks; ++b) {
        const Bytes block(data.begin() + b * c.block_bytes, data.begin() + (b + 1) * c.block_bytes);
        const std::vector<float> part(got.begin() + b * c.block_size,
                                      got.begin() + (b + 1) * c.block_size);
        expect_matches_reference(c, block, part);
      }
    }
  }
}

TEST(Dequantize, FloatTypes) {
  // F16: 1, -2, 65504, smallest subnormal, inf (an odd count: the block size is 1).
  const Bytes f16 = concat({le16(0x3C00), le16(0xC000), le16(0x7BFF), le16(0x0001), le16(0x7C00)});
  const std::vector<float> h = decode(TensorType::F16, f16, 5);
  EXPECT_EQ(h, (std::vector<float>{1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24),
                                   std::numeric_limits<float>::infinity()}));
  // BF16: 1, -3, 0x4049 = 3.140625.
  const Bytes bf16 = concat({le16(0x3F80), le16(0xC040), le16(0x4049)});
  EXPECT_EQ(decode(TensorType::BF16, bf16, 3), (std::vector<float>{1.0f, -3.0f, 3.140625f}));
  // F32, little-endian: 1.5 = 0x3FC00000, -0.25 = 0xBE800000.
  const Bytes f32 = {0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x80, 0xBE};
  EXPECT_EQ(decode(TensorType::F32, f32, 2), (std::vector<float>{1.5f, -0.25f}));
}

}  // namespace
}  // namespace maas::tensor
