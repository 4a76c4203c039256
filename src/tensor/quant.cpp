// f32 <-> GGUF weight types: half/bfloat16 conversions, the 32-element block types (Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0) and the dispatch by type. The k-quants live in quant_k.cpp.
//
// Dequantization reproduces ggml's reference decoders operation by operation (same float
// products and sums in the same order, no fused multiply-add), so a GGUF file decodes to the
// values llama.cpp's scalar reference path computes. Quantization makes the same scale choices as
// ggml's reference quantizers (quantize_row_*_ref) for the 32-element types, and a least-squares
// scale search for the k-quants (quant_k.cpp); the bytes need not match ggml's.
#include "tensor/quant.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tensor/quant_internal.h"

namespace maas::tensor {

using namespace detail;

// ---------------------------------------------------------------------------------------------
// Half precision (IEEE binary16: 1 sign, 5 exponent, 10 mantissa bits) and bfloat16.

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    std::memcpy(&bits, &magnitude, sizeof bits);
    bits |= sign;
  } else if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf, or NaN keeping its payload
  } else {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t fp32_to_fp16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;

  if (magnitude > 0x7F800000u) {
    // NaN: keep the top payload bits and force the quiet bit so the result cannot become inf.
    return static_cast<uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  }
  if (magnitude >= 0x477FF000u) {
    // From 65520 (halfway between 65504, the largest half, and 65536) up, including inf.
    return static_cast<uint16_t>(sign | 0x7C00u);
  }
  if (magnitude >= 0x38800000u) {
    // Normal half (>= 2^-14). Rebias the exponent, then round the 13 dropped bits to nearest
    // even; a carry out of the mantissa correctly bumps the exponent.
    uint32_t h = (magnitude >> 13) - ((127u - 15u) << 10);
    const uint32_t rest = magnitude & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (magnitude <= 0x33000000u) {
    return sign;  // at most 2^-25, half the smallest subnormal: rounds (ties to even) to zero
  }
  // Subnormal half: the value in units of 2^-24 is significand * 2^(exponent - 126), with
  // exponent in [102, 112], so the shift below is 14..24 bits.
  const uint32_t exponent = magnitude >> 23;
  const uint32_t significand = (magnitude & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - exponent;
  uint32_t h = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (h & 1u))) ++h;  // may carry into the smallest normal
  return static_cast<uint16_t>(sign | h);
}

float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t fp32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<uint16_t>((bits >> 16) | 0x40u);  // NaN: quiet, never truncated to inf
  }
  // Round to nearest even on the 16 dropped bits; overflow rounds up into inf as it should.
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

namespace {

// ---------------------------------------------------------------------------------------------
// Plain float types.

void dequantize_f32(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = load_f32(src + 4 * i);
}
void quantize_f32(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_f32(dst + 4 * i, src[i]);
}
// Half to float is exact, so the F16C instruction gives the same floats as the portable code
// (NaNs stay NaNs): it serves every F16 reader (weights' rows, the F16 KV cache, which attention
// converts for every key it visits: 10% of a serving benchmark's time with the portable loop).
#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) void dequantize_f16_f16c(const uint8_t* src, float* dst,
                                                              int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(src + 2 * i));
}
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  // (clang 14's __builtin_cpu_supports does not know "f16c": ask cpuid directly.)
  return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) != 0 &&
         (c & bit_F16C) != 0;
}
const bool kHasF16c = cpu_has_f16c();
#endif

void dequantize_f16(const uint8_t* src, float* dst, int64_t n) {
#if defined(__x86_64__)
  if (kHasF16c) return dequantize_f16_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(src + 2 * i));
}
void quantize_f16(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, fp32_to_fp16(src[i]));
}
void dequantize_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
}
void quantize_bf16(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, fp32_to_bf16(src[i]));
}

// ---------------------------------------------------------------------------------------------
// 32-element blocks. Element j < 16 sits in the low nibble of qs[j], element j + 16 in its high
// nibble. Q5_* keep the fifth bit of element j in bit j of the little-endian 32-bit qh.
//
//   Q4_0 (18 bytes): fp16 d, qs[16]           x = d * (q - 8)
//   Q4_1 (20 bytes): fp16 d, fp16 m, qs[16]   x = d * q + m
//   Q5_0 (22 bytes): fp16 d, qh[4], qs[16]    x = d * (q - 16)
//   Q5_1 (24 bytes): fp16 d, fp16 m, qh[4], qs[16]
//   Q8_0 (34 bytes): fp16 d, int8 qs[32]      x = d * q

constexpr int kBlock = 32;
constexpr int kQ4_0Bytes = 18;
constexpr int kQ4_1Bytes = 20;
constexpr int kQ5_0Bytes = 22;
constexpr int kQ5_1Bytes = 24;
constexpr int kQ8_0Bytes = 34;

// Quant of element j (0..31) from the nibble array, plus its fifth bit from qh if given.
inline int low_quant(const uint8_t* qs, int j) {
  return j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
}
inline int fifth_bit(uint32_t qh, int j) { return static_cast<int>((qh >> j) & 1u) << 4; }

// Packs 32 quants (each < 32) into nibbles and, when qh is non-null, their fifth bits.
void pack_block_quants(const std::array<int, kBlock>& q, uint8_t* qs, uint8_t* qh) {
  uint32_t high = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
  }
  for (int j = 0; j < kBlock; ++j) high |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  if (qh != nullptr) store_u32(qh, high);
}

void dequantize_q4_0(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ4_0Bytes, dst += kBlock) {
    const float d = fp16_to_fp32(load_u16(src));
    const uint8_t* qs = src + 2;
    for (int j = 0; j < kBlock; ++j) dst[j] = static_cast<float>(low_quant(qs, j) - 8) * d;
  }
}

void dequantize_q4_1(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ4_1Bytes, dst += kBlock) {
    const float d = fp16_to_fp32(load_u16(src));
    const float m = fp16_to_fp32(load_u16(src + 2));
    const uint8_t* qs = src + 4;
    for (int j = 0; j < kBlock; ++j) dst[j] = static_cast<float>(low_quant(qs, j)) * d + m;
  }
}

void dequantize_q5_0(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ5_0Bytes, dst += kBlock) {
    const float d = fp16_to_fp32(load_u16(src));
    const uint32_t qh = load_u32(src + 2);
    const uint8_t* qs = src + 6;
    for (int j = 0; j < kBlock; ++j) {
      dst[j] = static_cast<float>((low_quant(qs, j) | fifth_bit(qh, j)) - 16) * d;
    }
  }
}

void dequantize_q5_1(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ5_1Bytes, dst += kBlock) {
    const float d = fp16_to_fp32(load_u16(src));
    const float m = fp16_to_fp32(load_u16(src + 2));
    const uint32_t qh = load_u32(src + 4);
    const uint8_t* qs = src + 8;
    for (int j = 0; j < kBlock; ++j) {
      dst[j] = static_cast<float>(low_quant(qs, j) | fifth_bit(qh, j)) * d + m;
    }
  }
}

void dequantize_q8_0(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ8_0Bytes, dst += kBlock) {
    const float d = fp16_to_fp32(load_u16(src));
    for (int j = 0; j < kBlock; ++j) {
      dst[j] = static_cast<float>(static_cast<int8_t>(src[2 + j])) * d;
    }
  }
}

// The element of largest magnitude, with its sign (the first one on ties).
float signed_absmax(const float* x, int n) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// Symmetric blocks (Q4_0, Q5_0): d = max / -2^(bits-1), where max is the signed element of largest
// magnitude, so that element lands exactly on the extra negative level and the full range
// [-2^(bits-1), 2^(bits-1) - 1] is used. Quants are computed against the stored (fp16-rounded)
// d, so the rounding of d itself is taken into account.
template <int kLevels, int kBytes, bool kHasQh>
void quantize_symmetric(const float* src, uint8_t* dst, int64_t nblocks) {
  constexpr int kOffset = kLevels / 2;
  for (int64_t b = 0; b < nblocks; ++b, src += kBlock, dst += kBytes) {
    const uint16_t d16 = fp32_to_fp16(signed_absmax(src, kBlock) / -static_cast<float>(kOffset));
    const float d = fp16_to_fp32(d16);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    std::array<int, kBlock> q;
    for (int j = 0; j < kBlock; ++j)
      q[j] = round_clamp(src[j] * id, -kOffset, kOffset - 1) + kOffset;
    store_u16(dst, d16);
    if constexpr (kHasQh) {
      pack_block_quants(q, dst + 6, dst + 2);
    } else {
      pack_block_quants(q, dst + 2, nullptr);
    }
  }
}

// Affine blocks (Q4_1, Q5_1): x = d * q + m with m the block minimum and d = (max - min) / levels.
template <int kMaxQuant, int kBytes, bool kHasQh>
void quantize_affine(const float* src, uint8_t* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kBlock, dst += kBytes) {
    float min = src[0];
    float max = src[0];
    for (int j = 1; j < kBlock; ++j) {
      min = std::min(min, src[j]);
      max = std::max(max, src[j]);
    }
    const uint16_t m16 = fp32_to_fp16(min);
    const float m = fp16_to_fp32(m16);
    // The range from the rounded minimum, so the largest element is still reachable.
    const uint16_t d16 = fp32_to_fp16((max - m) / static_cast<float>(kMaxQuant));
    const float d = fp16_to_fp32(d16);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    std::array<int, kBlock> q;
    for (int j = 0; j < kBlock; ++j) q[j] = round_clamp((src[j] - m) * id, 0, kMaxQuant);
    store_u16(dst, d16);
    store_u16(dst + 2, m16);
    if constexpr (kHasQh) {
      pack_block_quants(q, dst + 8, dst + 4);
    } else {
      pack_block_quants(q, dst + 4, nullptr);
    }
  }
}

void quantize_q8_0(const float* src, uint8_t* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kBlock, dst += kQ8_0Bytes) {
    float amax = 0.0f;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(src[j]));
    const uint16_t d16 = fp32_to_fp16(amax / 127.0f);
    const float d = fp16_to_fp32(d16);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(dst, d16);
    for (int j = 0; j < kBlock; ++j) {
      dst[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(round_clamp(src[j] * id, -127, 127)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

struct Codec {
  TensorType type;
  int block_size;   // elements per block
  int block_bytes;  // bytes per block
  DequantizeBlocks dequantize;
  QuantizeBlocks quantize;  // null: decode only
};

constexpr std::array kCodecs = {
    Codec{TensorType::F32, 1, 4, dequantize_f32, quantize_f32},
    Codec{TensorType::F16, 1, 2, dequantize_f16, quantize_f16},
    Codec{TensorType::BF16, 1, 2, dequantize_bf16, quantize_bf16},
    Codec{TensorType::Q4_0, kBlock, kQ4_0Bytes, dequantize_q4_0,
          quantize_symmetric<16, kQ4_0Bytes, false>},
    Codec{TensorType::Q4_1, kBlock, kQ4_1Bytes, dequantize_q4_1,
          quantize_affine<15, kQ4_1Bytes, false>},
    Codec{TensorType::Q5_0, kBlock, kQ5_0Bytes, dequantize_q5_0,
          quantize_symmetric<32, kQ5_0Bytes, true>},
    Codec{TensorType::Q5_1, kBlock, kQ5_1Bytes, dequantize_q5_1,
          quantize_affine<31, kQ5_1Bytes, true>},
    Codec{TensorType::Q8_0, kBlock, kQ8_0Bytes, dequantize_q8_0, quantize_q8_0},
    Codec{TensorType::Q2_K, kSuperBlock, kQ2KBytes, dequantize_q2_k, quantize_q2_k},
    Codec{TensorType::Q3_K, kSuperBlock, kQ3KBytes, dequantize_q3_k, quantize_q3_k},
    Codec{TensorType::Q4_K, kSuperBlock, kQ4KBytes, dequantize_q4_k, quantize_q4_k},
    Codec{TensorType::Q5_K, kSuperBlock, kQ5KBytes, dequantize_q5_k, quantize_q5_k},
    Codec{TensorType::Q6_K, kSuperBlock, kQ6KBytes, dequantize_q6_k, quantize_q6_k},
    Codec{TensorType::Q8_K, kSuperBlock, kQ8KBytes, dequantize_q8_k, quantize_q8_k},
};

const Codec* find_codec(TensorType t) {
  for (const Codec& c : kCodecs) {
    if (c.type == t) return &c;
  }
  return nullptr;
}

std::string describe(TensorType t) {
  const std::string_view name = gguf::type_name(t);
  return std::string(name) + " (id " + std::to_string(static_cast<uint32_t>(t)) + ")";
}

// The number of blocks in n elements; throws if n is negative or not a whole number of blocks.
int64_t block_count(const Codec& c, int64_t n) {
  if (n < 0 || n % c.block_size != 0) {
    throw std::invalid_argument("tensor type " + describe(c.type) + ": " + std::to_string(n) +
                                " elements is not a multiple of the block size " +
                                std::to_string(c.block_size));
  }
  return n / c.block_size;
}

}  // namespace

void fp16_to_fp32_row(const uint16_t* src, float* dst, int64_t n) {
  dequantize_f16(reinterpret_cast<const uint8_t*>(src), dst, n);
}

bool can_dequantize(TensorType t) { return find_codec(t) != nullptr; }

bool can_quantize(TensorType t) {
  const Codec* c = find_codec(t);
  return c != nullptr && c->quantize != nullptr;
}

void dequantize_row(TensorType t, const void* src, float* dst, int64_t n) {
  const Codec* c = find_codec(t);
  if (c == nullptr) {
    throw std::invalid_argument("cannot dequantize tensor type " + describe(t));
  }
  const int64_t nblocks = block_count(*c, n);
  if (nblocks == 0) return;
  if (src == nullptr || dst == nullptr) throw std::invalid_argument("dequantize_row: null buffer");
  c->dequantize(static_cast<const uint8_t*>(src), dst, nblocks);
}

void quantize_row(TensorType t, const float* src, void* dst, int64_t n) {
  const Codec* c = find_codec(t);
  if (c == nullptr || c->quantize == nullptr) {
    throw std::invalid_argument("cannot quantize to tensor type " + describe(t));
  }
  const int64_t nblocks = block_count(*c, n);
  if (nblocks == 0) return;
  if (src == nullptr || dst == nullptr) throw std::invalid_argument("quantize_row: null buffer");
  c->quantize(src, static_cast<uint8_t*>(dst), nblocks);
}

}  // namespace maas::tensor
