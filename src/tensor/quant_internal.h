// Internals shared by the quantization sources (quant.cpp: fp16/bf16, dispatch, 32-element
// blocks; quant_k.cpp: 256-element k-quant super-blocks). Not part of the public interface.
//
// Blocks are read and written byte by byte with explicit little-endian loads and stores: GGUF data
// is little-endian, and blocks such as Q4_0 (18 bytes) leave their fp16 fields unaligned.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace maas::tensor::detail {

inline uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void store_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline float load_f32(const uint8_t* p) {
  const uint32_t bits = load_u32(p);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline void store_f32(uint8_t* p, float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  store_u32(p, bits);
}

// Rounds to nearest (ties to even, as ggml's nearest_int) and clamps to [lo, hi]. Clamping happens
// in float first, so huge values, infinities and NaN (mapped to lo) never reach an int conversion.
inline int round_clamp(float v, int lo, int hi) {
  if (!(v > static_cast<float>(lo))) return lo;
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(std::nearbyint(v));
}

// Row kernels over whole blocks: src/dst point at nblocks consecutive blocks.
using DequantizeBlocks = void (*)(const uint8_t* src, float* dst, int64_t nblocks);
using QuantizeBlocks = void (*)(const float* src, uint8_t* dst, int64_t nblocks);

// k-quants (quant_k.cpp). Super-blocks of 256 elements.
inline constexpr int kSuperBlock = 256;
inline constexpr int kQ2KBytes = 84;
inline constexpr int kQ3KBytes = 110;
inline constexpr int kQ4KBytes = 144;
inline constexpr int kQ5KBytes = 176;
inline constexpr int kQ6KBytes = 210;
inline constexpr int kQ8KBytes = 292;

void dequantize_q2_k(const uint8_t* src, float* dst, int64_t nblocks);
void dequantize_q3_k(const uint8_t* src, float* dst, int64_t nblocks);
void dequantize_q4_k(const uint8_t* src, float* dst, int64_t nblocks);
void dequantize_q5_k(const uint8_t* src, float* dst, int64_t nblocks);
void dequantize_q6_k(const uint8_t* src, float* dst, int64_t nblocks);
void dequantize_q8_k(const uint8_t* src, float* dst, int64_t nblocks);

void quantize_q2_k(const float* src, uint8_t* dst, int64_t nblocks);
void quantize_q3_k(const float* src, uint8_t* dst, int64_t nblocks);
void quantize_q4_k(const float* src, uint8_t* dst, int64_t nblocks);
void quantize_q5_k(const float* src, uint8_t* dst, int64_t nblocks);
void quantize_q6_k(const float* src, uint8_t* dst, int64_t nblocks);
void quantize_q8_k(const float* src, uint8_t* dst, int64_t nblocks);

// Q4_K/Q5_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. Bytes 0-3 hold
// scales 0-3 and bytes 4-7 mins 0-3 in their low 6 bits; scales/mins 4-7 keep their low nibbles
// in bytes 8-11 and their top 2 bits in the spare top bits of bytes 0-3 (scales) and 4-7 (mins).
inline void unpack_scale_min(const uint8_t* packed, int j, int& scale, int& min) {
  if (j < 4) {
    scale = packed[j] & 63;
    min = packed[j + 4] & 63;
  } else {
    scale = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
    min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

}  // namespace maas::tensor::detail
