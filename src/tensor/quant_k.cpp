// The k-quants: 256-element super-blocks split into sub-blocks of 16 or 32 elements, each with a
// small integer scale (and for Q2_K/Q4_K/Q5_K a min) relative to the super-block's fp16 d (dmin).
//
// Layouts, little-endian, as ggml's block_q*_K structs:
//   Q2_K  84 bytes: scales[16] (low nibble scale, high nibble min), qs[64] (2 bits), d, dmin
//   Q3_K 110 bytes: hmask[32] (3rd bit), qs[64] (low 2 bits), scales[12] (16 x 6 bits), d
//   Q4_K 144 bytes: d, dmin, scales[12] (8 scales + 8 mins, 6 bits each), qs[128] (4 bits)
//   Q5_K 176 bytes: d, dmin, scales[12], qh[32] (5th bit), qs[128] (low 4 bits)
//   Q6_K 210 bytes: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], d
//   Q8_K 292 bytes: float d, int8 qs[256], int16 bsums[16] (sums of 16 quants)
//
// Element order: the 2-bit types (and Q3_K's low bits) fill a 32-byte group of qs four times, at
// bit shifts 0, 2, 4, 6, before moving to the next group: element e of a super-block sits in
// qs[32 * (e / 128) + e % 32] at shift 2 * ((e % 128) / 32). The 4-bit types fill 32 bytes' low
// nibbles, then their high nibbles. Dequantization repeats ggml's float operations in ggml's
// order, so results are bit-identical to its scalar reference.
//
// Quantization: each sub-block gets a least-squares fit of its scale (and min) over a small grid
// of candidate level spacings, the sub-block scales are then quantized against the fp16
// super-block scale, and finally every element is re-rounded against the scales exactly as they
// will be decoded.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "tensor/quant.h"
#include "tensor/quant_internal.h"

namespace maas::tensor::detail {

namespace {

// ---------------------------------------------------------------------------------------------
// Field access shared by decoders and encoders.

// Byte and shift holding the 2-bit field of element e (Q2_K qs, Q3_K low bits).
inline int crumb_byte(int e) { return 32 * (e / 128) + e % 32; }
inline int crumb_shift(int e) { return 2 * ((e % 128) / 32); }

// Byte and shift holding the low nibble of element e in Q4_K/Q5_K qs: 64-element chunks share
// 32 bytes, the first 32 elements in the low nibbles, the next 32 in the high ones.
inline int nibble_byte(int e) { return 32 * (e / 64) + e % 32; }
inline int nibble_shift(int e) { return 4 * ((e / 32) % 2); }

inline void pack_scale_min(const std::array<int, 8>& scale, const std::array<int, 8>& min,
                           uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>(scale[j] | ((scale[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>(min[j] | ((min[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((scale[j + 4] & 0x0F) | ((min[j + 4] & 0x0F) << 4));
  }
}

// Q3_K: signed scale of sub-block j (0..15). The 6-bit value (offset by 32) has its low nibble in
// byte j (j < 8) or the high nibble of byte j - 8, and its top 2 bits in byte 8 + j % 4 at bit
// 2 * (j / 4).
inline int q3_k_scale(const uint8_t* packed, int j) {
  const int low = j < 8 ? (packed[j] & 0x0F) : (packed[j - 8] >> 4);
  const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// Q6_K: where the low nibble and the top 2 bits of element e live. Each half of 128 elements uses
// 64 bytes of ql (elements 0-31 and 32-63 in low nibbles, 64-95 and 96-127 in high nibbles) and 32
// bytes of qh (four 2-bit fields per byte, one per group of 32).
inline int q6_low_byte(int e) { return 64 * (e / 128) + 32 * ((e % 128 / 32) % 2) + e % 32; }
inline int q6_low_shift(int e) { return 4 * ((e % 128) / 64); }
inline int q6_high_byte(int e) { return 32 * (e / 128) + e % 32; }
inline int q6_high_shift(int e) { return 2 * ((e % 128) / 32); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Dequantization.

void dequantize_q2_k(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ2KBytes, dst += kSuperBlock) {
    const uint8_t* scales = src;
    const uint8_t* qs = src + 16;
    const float d = fp16_to_fp32(load_u16(src + 80));
    const float dmin = fp16_to_fp32(load_u16(src + 82));
    for (int sub = 0; sub < 16; ++sub) {
      const float dl = d * static_cast<float>(scales[sub] & 0x0F);
      const float ml = dmin * static_cast<float>(scales[sub] >> 4);
      for (int e = 16 * sub; e < 16 * sub + 16; ++e) {
        const int q = (qs[crumb_byte(e)] >> crumb_shift(e)) & 3;
        dst[e] = dl * static_cast<float>(q) - ml;
      }
    }
  }
}

void dequantize_q3_k(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ3KBytes, dst += kSuperBlock) {
    const uint8_t* hmask = src;
    const uint8_t* qs = src + 32;
    const uint8_t* scales = src + 96;
    const float d = fp16_to_fp32(load_u16(src + 108));
    for (int sub = 0; sub < 16; ++sub) {
      const float dl = d * static_cast<float>(q3_k_scale(scales, sub));
      for (int e = 16 * sub; e < 16 * sub + 16; ++e) {
        const int low = (qs[crumb_byte(e)] >> crumb_shift(e)) & 3;
        // A clear high bit means the quant is negative: q = low - 4.
        const bool high = (hmask[e % 32] >> (e / 32)) & 1;
        dst[e] = dl * static_cast<float>(low - (high ? 0 : 4));
      }
    }
  }
}

void dequantize_q4_k(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ4KBytes, dst += kSuperBlock) {
    const float d = fp16_to_fp32(load_u16(src));
    const float dmin = fp16_to_fp32(load_u16(src + 2));
    const uint8_t* scales = src + 4;
    const uint8_t* qs = src + 16;
    for (int sub = 0; sub < 8; ++sub) {
      int scale, min;
      unpack_scale_min(scales, sub, scale, min);
      const float dl = d * static_cast<float>(scale);
      const float ml = dmin * static_cast<float>(min);
      for (int e = 32 * sub; e < 32 * sub + 32; ++e) {
        const int q = (qs[nibble_byte(e)] >> nibble_shift(e)) & 0x0F;
        dst[e] = dl * static_cast<float>(q) - ml;
      }
    }
  }
}

void dequantize_q5_k(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ5KBytes, dst += kSuperBlock) {
    const float d = fp16_to_fp32(load_u16(src));
    const float dmin = fp16_to_fp32(load_u16(src + 2));
    const uint8_t* scales = src + 4;
    const uint8_t* qh = src + 16;
    const uint8_t* qs = src + 48;
    for (int sub = 0; sub < 8; ++sub) {
      int scale, min;
      unpack_scale_min(scales, sub, scale, min);
      const float dl = d * static_cast<float>(scale);
      const float ml = dmin * static_cast<float>(min);
      for (int e = 32 * sub; e < 32 * sub + 32; ++e) {
        const int low = (qs[nibble_byte(e)] >> nibble_shift(e)) & 0x0F;
        const int high = (qh[e % 32] >> sub) & 1;  // bit `sub` of qh[l] for element 32*sub + l
        dst[e] = dl * static_cast<float>(low | (high << 4)) - ml;
      }
    }
  }
}

void dequantize_q6_k(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ6KBytes, dst += kSuperBlock) {
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const uint8_t* scales = src + 192;
    const float d = fp16_to_fp32(load_u16(src + 208));
    for (int sub = 0; sub < 16; ++sub) {
      const float dl = d * static_cast<float>(static_cast<int8_t>(scales[sub]));
      for (int e = 16 * sub; e < 16 * sub + 16; ++e) {
        const int low = (ql[q6_low_byte(e)] >> q6_low_shift(e)) & 0x0F;
        const int high = (qh[q6_high_byte(e)] >> q6_high_shift(e)) & 3;
        dst[e] = dl * static_cast<float>((low | (high << 4)) - 32);
      }
    }
  }
}

void dequantize_q8_k(const uint8_t* src, float* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kQ8KBytes, dst += kSuperBlock) {
    const float d = load_f32(src);
    for (int e = 0; e < kSuperBlock; ++e) {
      dst[e] = d * static_cast<float>(static_cast<int8_t>(src[4 + e]));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Scale search for quantization.

namespace {

constexpr float kTiny = 1e-15f;  // magnitudes below this quantize to an all-zero block

// Per-element importance for the fits. Without activation statistics every element counts the
// same: a dot product's error is sum(error_i * activation_i), whatever the weight's own size, so
// plain squared error is the right target. (ggml's reference quantizers weight by |x| or x^2;
// on Gaussian, uniform and heavy-tailed data unit weights give 1-11% lower RMS error.)
constexpr std::array<float, 32> kUnitWeights = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                                1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

// The element of largest magnitude, with its sign (the first one on ties).
float signed_absmax(const float* x, int n) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  return max;
}

// Fits x[i] ~ scale * l[i] with integers l in [-nmax, nmax - 1], minimizing sum w * error^2.
// The largest-magnitude element goes to the extra level -nmax (scale takes the opposite sign);
// 19 grids around that (nmax + 0.1 * step) are tried, each with its least-squares scale.
// Writes l + nmax (0 .. 2 * nmax - 1) to levels; returns the scale (0 for an all-zero input).
float fit_symmetric(const float* x, const float* w, int n, int nmax, uint8_t* levels) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kTiny) {
    std::fill(levels, levels + n, static_cast<uint8_t>(nmax));
    return 0.0f;
  }
  std::array<int, 32> best{};
  std::array<int, 32> trial{};
  float best_lx = 0.0f;  // sum w * x * l
  float best_l2 = 0.0f;  // sum w * l^2
  for (int step : {0, -9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
    const float iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / max;
    float sumlx = 0.0f;
    float suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      trial[i] = round_clamp(iscale * x[i], -nmax, nmax - 1);
      sumlx += w[i] * x[i] * static_cast<float>(trial[i]);
      suml2 += w[i] * static_cast<float>(trial[i] * trial[i]);
    }
    // The least-squares scale sumlx / suml2 lowers the error by sumlx^2 / suml2: keep the best.
    const bool better =
        suml2 > 0.0f && (best_l2 <= 0.0f || sumlx * sumlx * best_l2 > best_lx * best_lx * suml2);
    if (step == 0 || better) {
      best = trial;
      best_lx = sumlx;
      best_l2 = suml2;
    }
  }
  for (int i = 0; i < n; ++i) levels[i] = static_cast<uint8_t>(best[i] + nmax);
  return best_l2 > 0.0f ? best_lx / best_l2 : 0.0f;
}

struct AffineFit {
  float scale = 0.0f;   // >= 0
  float offset = 0.0f;  // >= 0; x ~ scale * l - offset
};

// How fit_affine searches: candidate grids map [min, max] onto nmax + rmin + rdelta * step levels
// for step = 0 .. nstep.
struct AffineSearch {
  float rmin;
  float rdelta;
  int nstep;
};

// Fits x[i] ~ scale * l[i] - offset with integers l in [0, nmax] and offset >= 0 (the block
// minimum, clamped to at most zero, is what the offset represents). For each candidate grid the
// levels are rounded, then scale and offset are solved by weighted least squares; the candidate
// with the smallest weighted error wins. Writes l to levels.
AffineFit fit_affine(const float* x, const float* w, int n, int nmax, const AffineSearch& search,
                     uint8_t* levels) {
  float min = x[0];
  float max = x[0];
  float sum_w = 0.0f;
  float sum_x = 0.0f;
  for (int i = 0; i < n; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  min = std::min(min, 0.0f);
  if (!(max > min)) {
    std::fill(levels, levels + n, uint8_t{0});
    return {0.0f, -min};
  }
  auto error_of = [&](float scale, float minimum, const uint8_t* l) {
    float err = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float diff = scale * static_cast<float>(l[i]) + minimum - x[i];
      err += w[i] * diff * diff;
    }
    return err;
  };

  // Baseline: nmax levels spread evenly over [min, max].
  float best_scale = (max - min) / static_cast<float>(nmax);
  float best_min = min;
  const float base_iscale = static_cast<float>(nmax) / (max - min);  // max > min: no 0 divisor
  for (int i = 0; i < n; ++i) {
    levels[i] = static_cast<uint8_t>(round_clamp(base_iscale * (x[i] - min), 0, nmax));
  }
  float best_error = error_of(best_scale, best_min, levels);

  // Each candidate grid starts from the best minimum found so far, so the search also walks the
  // minimum towards its least-squares value.
  std::array<uint8_t, 32> trial;
  for (int step = 0; step <= search.nstep; ++step) {
    const float range = max - best_min;
    if (!(range > 0.0f)) break;  // a degenerate fit (non-finite input): keep what we have
    const float iscale =
        (search.rmin + search.rdelta * static_cast<float>(step) + static_cast<float>(nmax)) / range;
    float sum_l = 0.0f;
    float sum_l2 = 0.0f;
    float sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = round_clamp(iscale * (x[i] - best_min), 0, nmax);
      trial[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * static_cast<float>(l);
      sum_l2 += w[i] * static_cast<float>(l * l);
      sum_xl += w[i] * static_cast<float>(l) * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0.0f)) continue;
    float scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float minimum = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (minimum > 0.0f) {  // the offset only subtracts: refit the scale alone
      minimum = 0.0f;
      scale = sum_xl / sum_l2;
    }
    const float err = error_of(scale, minimum, trial.data());
    if (err < best_error) {
      best_error = err;
      best_scale = scale;
      best_min = minimum;
      std::copy(trial.begin(), trial.begin() + n, levels);
    }
  }
  return {std::max(best_scale, 0.0f), -best_min};
}

// Quantizes `value` against a stored fp16 super-scale: round(value / d) clamped to [lo, hi], or 0
// when d is zero.
int quantize_against(float value, float d, int lo, int hi) {
  return d != 0.0f ? round_clamp(value / d, lo, hi) : 0;
}

// Shared by Q4_K and Q5_K: 8 sub-blocks of 32 with affine fits, 6-bit scales and mins relative to
// fp16 d and dmin. Writes d, dmin and the packed scales to block[0..15]; fills levels (0..nmax)
// requantized against the stored scales.
void quantize_scale_min_block(const float* x, int nmax, const AffineSearch& search, uint8_t* block,
                              std::array<uint8_t, kSuperBlock>& levels) {
  std::array<float, 8> scales;
  std::array<float, 8> offsets;
  for (int sub = 0; sub < 8; ++sub) {
    const AffineFit fit =
        fit_affine(x + 32 * sub, kUnitWeights.data(), 32, nmax, search, &levels[32 * sub]);
    scales[sub] = fit.scale;
    offsets[sub] = fit.offset;
  }
  const float max_scale = *std::max_element(scales.begin(), scales.end());
  const float max_offset = *std::max_element(offsets.begin(), offsets.end());
  const uint16_t d16 = fp32_to_fp16(max_scale / 63.0f);
  const uint16_t dmin16 = fp32_to_fp16(max_offset / 63.0f);
  const float d = fp16_to_fp32(d16);
  const float dmin = fp16_to_fp32(dmin16);
  std::array<int, 8> qscale;
  std::array<int, 8> qmin;
  for (int sub = 0; sub < 8; ++sub) {
    qscale[sub] = quantize_against(scales[sub], d, 0, 63);
    qmin[sub] = quantize_against(offsets[sub], dmin, 0, 63);
  }
  store_u16(block, d16);
  store_u16(block + 2, dmin16);
  pack_scale_min(qscale, qmin, block + 4);

  // Requantize every element against the scales as they will be decoded.
  for (int sub = 0; sub < 8; ++sub) {
    const float dl = d * static_cast<float>(qscale[sub]);
    const float ml = dmin * static_cast<float>(qmin[sub]);
    for (int e = 32 * sub; e < 32 * sub + 32; ++e) {
      levels[e] = static_cast<uint8_t>(quantize_against(x[e] + ml, dl, 0, nmax));
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Quantization.

void quantize_q2_k(const float* src, uint8_t* dst, int64_t nblocks) {
  constexpr AffineSearch kSearch{-0.5f, 0.1f, 15};
  for (int64_t b = 0; b < nblocks; ++b, src += kSuperBlock, dst += kQ2KBytes) {
    std::array<uint8_t, kSuperBlock> levels;
    std::array<float, 16> scales;
    std::array<float, 16> offsets;
    for (int sub = 0; sub < 16; ++sub) {
      const AffineFit fit =
          fit_affine(src + 16 * sub, kUnitWeights.data(), 16, 3, kSearch, &levels[16 * sub]);
      scales[sub] = fit.scale;
      offsets[sub] = fit.offset;
    }
    const uint16_t d16 = fp32_to_fp16(*std::max_element(scales.begin(), scales.end()) / 15.0f);
    const uint16_t dmin16 = fp32_to_fp16(*std::max_element(offsets.begin(), offsets.end()) / 15.0f);
    const float d = fp16_to_fp32(d16);
    const float dmin = fp16_to_fp32(dmin16);
    std::memset(dst, 0, kQ2KBytes);
    uint8_t* qs = dst + 16;
    for (int sub = 0; sub < 16; ++sub) {
      const int qscale = quantize_against(scales[sub], d, 0, 15);
      const int qmin = quantize_against(offsets[sub], dmin, 0, 15);
      dst[sub] = static_cast<uint8_t>(qscale | (qmin << 4));
      const float dl = d * static_cast<float>(qscale);
      const float ml = dmin * static_cast<float>(qmin);
      for (int e = 16 * sub; e < 16 * sub + 16; ++e) {
        const int l = quantize_against(src[e] + ml, dl, 0, 3);
        qs[crumb_byte(e)] |= static_cast<uint8_t>(l << crumb_shift(e));
      }
    }
    store_u16(dst + 80, d16);
    store_u16(dst + 82, dmin16);
  }
}

void quantize_q3_k(const float* src, uint8_t* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kSuperBlock, dst += kQ3KBytes) {
    std::array<uint8_t, kSuperBlock> levels;
    std::array<float, 16> scales;
    for (int sub = 0; sub < 16; ++sub) {
      scales[sub] = fit_symmetric(src + 16 * sub, kUnitWeights.data(), 16, 4, &levels[16 * sub]);
    }
    std::memset(dst, 0, kQ3KBytes);
    const float max_scale = signed_absmax(scales.data(), 16);
    if (std::fabs(max_scale) < kTiny) continue;  // all zero: d = 0
    // The largest sub-block scale maps to -32, the extra level of the signed 6-bit range.
    const uint16_t d16 = fp32_to_fp16(max_scale / -32.0f);
    const float d = fp16_to_fp32(d16);
    uint8_t* hmask = dst;
    uint8_t* qs = dst + 32;
    uint8_t* packed_scales = dst + 96;
    for (int sub = 0; sub < 16; ++sub) {
      const int qscale = quantize_against(scales[sub], d, -32, 31);
      const int stored = qscale + 32;
      if (sub < 8) {
        packed_scales[sub] |= static_cast<uint8_t>(stored & 0x0F);
      } else {
        packed_scales[sub - 8] |= static_cast<uint8_t>((stored & 0x0F) << 4);
      }
      packed_scales[8 + sub % 4] |= static_cast<uint8_t>((stored >> 4) << (2 * (sub / 4)));

      const float dl = d * static_cast<float>(qscale);
      for (int e = 16 * sub; e < 16 * sub + 16; ++e) {
        const int l = quantize_against(src[e], dl, -4, 3) + 4;  // 0..7
        qs[crumb_byte(e)] |= static_cast<uint8_t>((l & 3) << crumb_shift(e));
        hmask[e % 32] |= static_cast<uint8_t>((l >> 2) << (e / 32));
      }
    }
    store_u16(dst + 108, d16);
  }
}

void quantize_q4_k(const float* src, uint8_t* dst, int64_t nblocks) {
  constexpr AffineSearch kSearch{-1.0f, 0.1f, 20};
  for (int64_t b = 0; b < nblocks; ++b, src += kSuperBlock, dst += kQ4KBytes) {
    std::array<uint8_t, kSuperBlock> levels;
    quantize_scale_min_block(src, 15, kSearch, dst, levels);
    uint8_t* qs = dst + 16;
    std::memset(qs, 0, 128);
    for (int e = 0; e < kSuperBlock; ++e) {
      qs[nibble_byte(e)] |= static_cast<uint8_t>(levels[e] << nibble_shift(e));
    }
  }
}

void quantize_q5_k(const float* src, uint8_t* dst, int64_t nblocks) {
  constexpr AffineSearch kSearch{-0.5f, 0.1f, 15};
  for (int64_t b = 0; b < nblocks; ++b, src += kSuperBlock, dst += kQ5KBytes) {
    std::array<uint8_t, kSuperBlock> levels;
    quantize_scale_min_block(src, 31, kSearch, dst, levels);
    uint8_t* qh = dst + 16;
    uint8_t* qs = dst + 48;
    std::memset(qh, 0, 32 + 128);
    for (int e = 0; e < kSuperBlock; ++e) {
      qs[nibble_byte(e)] |= static_cast<uint8_t>((levels[e] & 0x0F) << nibble_shift(e));
      qh[e % 32] |= static_cast<uint8_t>((levels[e] >> 4) << (e / 32));
    }
  }
}

void quantize_q6_k(const float* src, uint8_t* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kSuperBlock, dst += kQ6KBytes) {
    std::array<uint8_t, kSuperBlock> levels;
    std::array<float, 16> scales;
    for (int sub = 0; sub < 16; ++sub) {
      scales[sub] = fit_symmetric(src + 16 * sub, kUnitWeights.data(), 16, 32, &levels[16 * sub]);
    }
    std::memset(dst, 0, kQ6KBytes);
    const float max_scale = signed_absmax(scales.data(), 16);
    if (std::fabs(max_scale) < kTiny) continue;  // all zero: d = 0
    // The largest sub-block scale maps to -128, the extra level of int8.
    const uint16_t d16 = fp32_to_fp16(max_scale / -128.0f);
    const float d = fp16_to_fp32(d16);
    uint8_t* ql = dst;
    uint8_t* qh = dst + 128;
    for (int sub = 0; sub < 16; ++sub) {
      const int qscale = quantize_against(scales[sub], d, -128, 127);
      dst[192 + sub] = static_cast<uint8_t>(static_cast<int8_t>(qscale));
      const float dl = d * static_cast<float>(qscale);
      for (int e = 16 * sub; e < 16 * sub + 16; ++e) {
        const int l = quantize_against(src[e], dl, -32, 31) + 32;  // 0..63
        ql[q6_low_byte(e)] |= static_cast<uint8_t>((l & 0x0F) << q6_low_shift(e));
        qh[q6_high_byte(e)] |= static_cast<uint8_t>((l >> 4) << q6_high_shift(e));
      }
    }
    store_u16(dst + 208, d16);
  }
}

void quantize_q8_k(const float* src, uint8_t* dst, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b, src += kSuperBlock, dst += kQ8KBytes) {
    std::memset(dst, 0, kQ8KBytes);
    const float max = signed_absmax(src, kSuperBlock);
    if (max == 0.0f) continue;  // d = 0, all quants and sums 0
    // d is a full float here: the largest magnitude maps onto +-127.
    const float d = max / -127.0f;
    const float iscale = -127.0f / max;
    int8_t* qs = reinterpret_cast<int8_t*>(dst + 4);
    for (int e = 0; e < kSuperBlock; ++e)
      qs[e] = static_cast<int8_t>(round_clamp(iscale * src[e], -128, 127));
    for (int group = 0; group < 16; ++group) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += qs[16 * group + i];
      store_u16(dst + 260 + 2 * group, static_cast<uint16_t>(static_cast<int16_t>(sum)));
    }
    store_f32(dst, d);
  }
}

}  // namespace maas::tensor::detail
