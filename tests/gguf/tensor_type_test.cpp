#include "gguf/tensor_type.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace maas::gguf {
namespace {

struct Expected {
  uint32_t id;
  const char* name;
  uint32_t block_size;
  uint32_t block_bytes;
};

// Geometry re-derived from the ggml block structs (fp16 = 2 bytes, QK_K = 256), term by term.
constexpr uint32_t kQK = 256;
const Expected kExpected[] = {
    {0, "f32", 1, 4},
    {1, "f16", 1, 2},
    {2, "q4_0", 32, 2 + 32 / 2},                                      // d, nibbles
    {3, "q4_1", 32, 2 + 2 + 32 / 2},                                  // d, m, nibbles
    {6, "q5_0", 32, 2 + 4 + 32 / 2},                                  // d, qh, nibbles
    {7, "q5_1", 32, 2 + 2 + 4 + 32 / 2},                              // d, m, qh, nibbles
    {8, "q8_0", 32, 2 + 32},                                          // d, bytes
    {9, "q8_1", 32, 2 + 2 + 32},                                      // d, s, bytes
    {10, "q2_k", kQK, kQK / 16 + kQK / 4 + 2 + 2},                    // scales, qs, d, dmin
    {11, "q3_k", kQK, kQK / 8 + kQK / 4 + 12 + 2},                    // hmask, qs, scales, d
    {12, "q4_k", kQK, 2 + 2 + 12 + kQK / 2},                          // d, dmin, scales, qs
    {13, "q5_k", kQK, 2 + 2 + 12 + kQK / 8 + kQK / 2},                // d, dmin, scales, qh, qs
    {14, "q6_k", kQK, kQK / 2 + kQK / 4 + kQK / 16 + 2},              // ql, qh, scales, d
    {15, "q8_k", kQK, 4 + kQK + kQK / 16 * 2},                        // f32 d, qs, i16 bsums
    {16, "iq2_xxs", kQK, 2 + kQK / 8 * 2},                            // d, u16 qs
    {17, "iq2_xs", kQK, 2 + kQK / 8 * 2 + kQK / 32},                  // d, u16 qs, scales
    {18, "iq3_xxs", kQK, 2 + 3 * kQK / 8},                            // d, qs
    {19, "iq1_s", kQK, 2 + kQK / 8 + kQK / 32 * 2},                   // d, qs, u16 qh
    {20, "iq4_nl", 32, 2 + 32 / 2},                                   // d, qs
    {21, "iq3_s", kQK, 2 + kQK / 4 + kQK / 32 + kQK / 8 + kQK / 64},  // d, qs, qh, signs, scales
    {22, "iq2_s", kQK, 2 + kQK / 4 + kQK / 32 + kQK / 32},            // d, qs, qh, scales
    {23, "iq4_xs", kQK, 2 + 2 + kQK / 64 + kQK / 2},                  // d, scales_h, scales_l, qs
    {24, "i8", 1, 1},
    {25, "i16", 1, 2},
    {26, "i32", 1, 4},
    {27, "i64", 1, 8},
    {28, "f64", 1, 8},
    {29, "iq1_m", kQK, kQK / 8 + kQK / 16 + kQK / 32},  // qs, qh, scales
    {30, "bf16", 1, 2},
    {34, "tq1_0", kQK, (kQK - 4 * kQK / 64) / 5 + kQK / 64 + 2},  // qs, qh, d
    {35, "tq2_0", kQK, kQK / 4 + 2},                              // qs, d
};

TEST(TensorType, GeometryMatchesTheGgmlBlockLayouts) {
  for (const Expected& e : kExpected) {
    SCOPED_TRACE(e.name);
    const TypeTraits* t = type_traits(e.id);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->name, e.name);
    EXPECT_EQ(t->block_size, e.block_size);
    EXPECT_EQ(t->block_bytes, e.block_bytes);
    EXPECT_EQ(type_name(static_cast<TensorType>(e.id)), e.name);
  }
  // Spot checks of the totals the brief lists, so a wrong derivation above cannot hide.
  EXPECT_EQ(type_traits(TensorType::Q4_K)->block_bytes, 144u);
  EXPECT_EQ(type_traits(TensorType::Q6_K)->block_bytes, 210u);
  EXPECT_EQ(type_traits(TensorType::IQ3_S)->block_bytes, 110u);
  EXPECT_EQ(type_traits(TensorType::TQ1_0)->block_bytes, 54u);
}

TEST(TensorType, RetiredAndOutOfRangeIdsAreUnknown) {
  for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 39u, 1000u, 0xffffffffu}) {
    EXPECT_EQ(type_traits(id), nullptr) << id;
    EXPECT_EQ(type_name(static_cast<TensorType>(id)), "unknown") << id;
  }
  size_t known = 0;
  for (uint32_t id = 0; id < 64; ++id) known += type_traits(id) != nullptr;
  EXPECT_EQ(known, std::size(kExpected));
}

TEST(TensorType, NamesParseCaseInsensitively) {
  EXPECT_EQ(type_from_name("q4_k"), TensorType::Q4_K);
  EXPECT_EQ(type_from_name("Q4_K"), TensorType::Q4_K);
  EXPECT_EQ(type_from_name("Q8_0"), TensorType::Q8_0);
  EXPECT_EQ(type_from_name("BF16"), TensorType::BF16);
  EXPECT_EQ(type_from_name("iq2_XXS"), TensorType::IQ2_XXS);
  EXPECT_EQ(type_from_name("f32"), TensorType::F32);
  EXPECT_FALSE(type_from_name("q4_k_m").has_value());
  EXPECT_FALSE(type_from_name("").has_value());
  EXPECT_FALSE(type_from_name("q4").has_value());
  EXPECT_FALSE(type_from_name("unknown").has_value());
  for (const Expected& e : kExpected) {
    EXPECT_EQ(type_from_name(e.name), static_cast<TensorType>(e.id)) << e.name;
  }
}

TEST(TensorType, BytesFor) {
  EXPECT_EQ(bytes_for(TensorType::F32, 10), 40u);
  EXPECT_EQ(bytes_for(TensorType::F16, 0), 0u);
  EXPECT_EQ(bytes_for(TensorType::Q4_0, 64), 36u);
  EXPECT_EQ(bytes_for(TensorType::Q4_K, 4096 * 4096), 4096u * 4096 / 256 * 144);
  // Not a whole number of blocks.
  EXPECT_FALSE(bytes_for(TensorType::Q4_0, 33).has_value());
  EXPECT_FALSE(bytes_for(TensorType::Q6_K, 128).has_value());
  // Unknown type.
  EXPECT_FALSE(bytes_for(static_cast<TensorType>(4), 32).has_value());
  // Overflow: 2^62 f32 elements are 2^64 bytes; the largest fitting count is fine.
  EXPECT_FALSE(bytes_for(TensorType::F32, uint64_t{1} << 62).has_value());
  EXPECT_EQ(bytes_for(TensorType::F32, (uint64_t{1} << 62) - 1),
            std::numeric_limits<uint64_t>::max() - 3);
  EXPECT_FALSE(bytes_for(TensorType::F64, std::numeric_limits<uint64_t>::max()).has_value());
  const uint64_t q8_blocks_max = std::numeric_limits<uint64_t>::max() / 34;
  EXPECT_EQ(bytes_for(TensorType::Q8_0, q8_blocks_max * 32), q8_blocks_max * 34);
  EXPECT_FALSE(bytes_for(TensorType::Q8_0, (q8_blocks_max + 1) * 32).has_value());
}

}  // namespace
}  // namespace maas::gguf
