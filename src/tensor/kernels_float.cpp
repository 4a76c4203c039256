// Float-weight kernels (F32, F16, BF16) and the activation preparation (int8 quantization, f32
// interleaving) for the vector targets.
//
// kernels.h defines each float output as 16 chains of fused multiply-adds, column k feeding
// chain k % 16, folded by a fixed tree. Two layouts compute exactly that:
//
// - One token, or a few (decoding, bound by memory bandwidth): columns in lanes. A 16-lane
//   vector (two 8-lane ones on AVX2) holds a row's 16 chains for one token; each row is read
//   with plain contiguous loads, widened in registers, and kDecodeRows rows run at once so that
//   their chains hide the fused multiply-add latency. The tree folds the lanes at the end.
// - Batches (bound by arithmetic): rows in lanes, chain by chain. For chain j, a vector
//   holds 16 (8) rows and the tokens' activations are broadcast, an outer product whose
//   accumulators are one lane per output; the weights are widened and transposed once per
//   block of rows into thread scratch (columns of chain j contiguous), reused by every tile of
//   tokens. The 16 chains' sums are kept apart and folded by the same tree at the end, now with
//   whole-vector additions.

#include "tensor/hwy_config.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/kernels_float.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cstring>

#include "hwy/highway.h"
#include "tensor/kernels_simd-inl.h"
#include "tensor/quant.h"

MAAS_BEGIN_TARGET();
namespace maas::tensor::kernels::HWY_NAMESPACE {

#if MAAS_KERNELS_SIMD

enum class FloatType { kF32, kF16, kBF16 };

// Vectors per group of 16 lane sums.
constexpr int kHalves = 16 / kLanes;

// Register tile of the multi-token kernel: kTileVecs vectors of rows x kTileTokens tokens of
// accumulators, plus kTileVecs weight vectors and one broadcast activation, within the 32
// (AVX-512) or 16 (AVX2) vector registers. kPanelRows rows are widened and transposed together;
// 64 divides the usual row counts, so that two threads get equal shares of whole panels.
constexpr int kTileVecs = kLanes == 16 ? 4 : 2;
constexpr int kTileTokens = 6;
constexpr int kPanelRows = kTileVecs * kLanes;
// Steps (16-column groups) of a K-block: chain j's steps of the panel (16 KiB on AVX-512) stay
// in L1 while every token tile runs over them; a chain's sums go to scratch between K-blocks.
constexpr int kBlockSteps = 64;
constexpr int kBlockCols = 16 * kBlockSteps;
// Most tokens per pass over the weights (each pass widens and transposes them again); the 16
// sums per output of a pass's tokens stay in L2.
constexpr int64_t kMaxPassTokens = (128 + kTileTokens - 1) / kTileTokens * kTileTokens;
// Most weight lines one RunChain call prefetches for the next K-block.
constexpr int kMaxLinesPerCall = 256;
// How many pairs of steps BuildPanel prefetches its rows ahead (into L1: ~5% faster prefill).
constexpr int kBuildAhead = 4;

// Rows in flight while decoding, and how far ahead of its loads each row's stream is prefetched
// (measured: 4 rows and 1 KiB, into L1, stream the most; without the prefetch, 15% less).
constexpr int kDecodeRows = 4;
constexpr size_t kDecodePrefetchBytes = 1024;
// Tokens per pass of DecodeRows (its kDecodeRows * kMaxDirectTokens * kHalves accumulators fit
// the registers), and the batches small enough for a few such passes over the weights, faster
// than widening and transposing them for the multi-token kernel.
constexpr int kMaxDirectTokens = kLanes == 16 ? 6 : 1;
constexpr int64_t kMaxDirectBatch = kLanes == 16 ? 24 : 1;

// Padding of a partial last group of 16 columns: fma(-0, +0, s) == s for every s (the exact
// product -0 added to s gives s back, -0 and +0 included), so padded columns add nothing, as
// kernels.h specifies, without masks. A +0 product would turn a -0 sum into +0.
constexpr float kWeightPad = -0.0f;
constexpr float kActPad = 0.0f;

template <FloatType kType>
constexpr int kElemBytes = kType == FloatType::kF32 ? 4 : 2;

// Weights k..k+kLanes-1 of a row (p points at weight k) widened to f32, exactly.
template <FloatType kType>
HWY_INLINE VF LoadWeights(const uint8_t* p) {
#if HWY_TARGET == HWY_AVX2
  if constexpr (kType == FloatType::kF32) {
    return VF{_mm256_loadu_ps(reinterpret_cast<const float*>(p))};
  } else if constexpr (kType == FloatType::kF16) {
    return VF{_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
  } else {  // bfloat16 is the top half of a float
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return VF{_mm256_castsi256_ps(_mm256_slli_epi32(u, 16))};
  }
#else
  if constexpr (kType == FloatType::kF32) {
    return VF{_mm512_loadu_ps(p)};
  } else if constexpr (kType == FloatType::kF16) {
    return VF{_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  } else {
    const __m512i u =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return VF{_mm512_castsi512_ps(_mm512_slli_epi32(u, 16))};
  }
#endif
}

template <FloatType kType>
float LoadScalar(const uint8_t* p) {
  if constexpr (kType == FloatType::kF32) {
    float f;
    std::memcpy(&f, p, sizeof f);
    return f;
  } else {
    const uint16_t h = static_cast<uint16_t>(p[0] | (p[1] << 8));
    return kType == FloatType::kF16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
  }
}

// The `len` (<= 16) weights at p, widened into out[0..16), padded.
template <FloatType kType>
void LoadWeightTail(const uint8_t* p, int len, float* out) {
  for (int i = 0; i < 16; ++i) {
    out[i] = i < len ? LoadScalar<kType>(p + i * kElemBytes<kType>) : kWeightPad;
  }
}

// The tree of kernels.h over the 16 lane sums in v (and v_hi on AVX2, lanes 8..15):
// s[j] + s[j + 8], then + 4, + 2, + 1.
HWY_INLINE float Fold(VF v, VF v_hi) {
#if HWY_TARGET == HWY_AVX2
  const __m256 s8 = _mm256_add_ps(v.raw, v_hi.raw);
#else
  (void)v_hi;
  const __m256 s8 =
      _mm256_add_ps(_mm512_castps512_ps256(v.raw),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v.raw), 1)));
#endif
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
  return _mm_cvtss_f32(s1);
}

// ---------------------------------------------------------------------------------------------
// One token, or a few.

// y[t][r] for the kDecodeRows rows at `rows` and kT tokens (x + t * ldx): each row's 16 lane
// chains per token in one pass over its weights, the group's rows interleaved so that their
// chains overlap. x_tail holds each token's last cols % 16 activations, padded (16 per token).
template <FloatType kType, int kT>
HWY_INLINE void DecodeGroup(const uint8_t* const* rows, const float* x, int64_t ldx,
                            const float* x_tail, int64_t cols, float* out) {
  constexpr size_t kE = kElemBytes<kType>;
  const DF df;
  VF acc[kDecodeRows][kT][kHalves];
  for (int r = 0; r < kDecodeRows; ++r) {
    for (int t = 0; t < kT; ++t) {
      for (int h = 0; h < kHalves; ++h) acc[r][t][h] = hn::Zero(df);
    }
  }
  auto step = [&](int64_t k) {
    for (int h = 0; h < kHalves; ++h) {
      VF w[kDecodeRows];
      for (int r = 0; r < kDecodeRows; ++r) {
        w[r] = LoadWeights<kType>(rows[r] + static_cast<size_t>(k + h * kLanes) * kE);
      }
      for (int t = 0; t < kT; ++t) {
        const VF xv = hn::LoadU(df, x + t * ldx + k + h * kLanes);
        for (int r = 0; r < kDecodeRows; ++r) acc[r][t][h] = hn::MulAdd(w[r], xv, acc[r][t][h]);
      }
    }
  };
  int64_t k = 0;
  for (; k + 32 <= cols; k += 32) {
    const size_t off = static_cast<size_t>(k) * kE + kDecodePrefetchBytes;
    for (int r = 0; r < kDecodeRows; ++r) {
      for (size_t line = 0; line < 32 * kE; line += 64) __builtin_prefetch(rows[r] + off + line);
    }
    step(k);
    step(k + 16);
  }
  if (k + 16 <= cols) {
    step(k);
    k += 16;
  }
  if (k < cols) {
    HWY_ALIGN float w[16];
    for (int r = 0; r < kDecodeRows; ++r) {
      LoadWeightTail<kType>(rows[r] + static_cast<size_t>(k) * kE, static_cast<int>(cols - k), w);
      for (int t = 0; t < kT; ++t) {
        for (int h = 0; h < kHalves; ++h) {
          acc[r][t][h] = hn::MulAdd(hn::Load(df, w + h * kLanes),
                                    hn::Load(df, x_tail + t * 16 + h * kLanes), acc[r][t][h]);
        }
      }
    }
  }
  for (int t = 0; t < kT; ++t) {
    for (int r = 0; r < kDecodeRows; ++r) {
      out[t * kDecodeRows + r] = Fold(acc[r][t][0], acc[r][t][kHalves - 1]);
    }
  }
}

// Rows [row_begin, row_end) for kT tokens (few enough that reading the weights is what takes
// the time). Row i of group g is row_begin + g + i * S with S = ceil(n / kDecodeRows): each of
// the group's rows reads one long sequential stream over the groups (rows g and g + 1 are
// adjacent in memory), which the hardware prefetchers follow. Missing rows of the last groups
// repeat the range's last row (computed and dropped).
template <FloatType kType, int kT>
void DecodeRows(const GemmArgs& a) {
  const int64_t n = a.row_end - a.row_begin;
  const int64_t stride = (n + kDecodeRows - 1) / kDecodeRows;
  HWY_ALIGN float x_tail[kT * 16];
  const int64_t full = a.cols / 16 * 16;
  for (int t = 0; t < kT; ++t) {
    for (int64_t i = 0; i < 16; ++i) {
      x_tail[t * 16 + i] = full + i < a.cols ? a.x[t * a.cols + full + i] : kActPad;
    }
  }
  for (int64_t g = 0; g < stride; ++g) {
    const uint8_t* rows[kDecodeRows];
    int64_t index[kDecodeRows];
    for (int i = 0; i < kDecodeRows; ++i) {
      const int64_t r = a.row_begin + g + i * stride;
      index[i] = r < a.row_end ? r : -1;
      rows[i] = a.w + static_cast<size_t>(std::min(r, a.row_end - 1)) * a.row_bytes;
    }
    float out[kT * kDecodeRows];
    DecodeGroup<kType, kT>(rows, a.x, a.cols, x_tail, a.cols, out);
    for (int t = 0; t < kT; ++t) {
      for (int i = 0; i < kDecodeRows; ++i) {
        if (index[i] >= 0) a.y[t * a.ldy + index[i]] = out[t * kDecodeRows + i];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Several tokens.

// Transposes kLanes x kLanes floats: out[j] lane i = in[i] lane j.
HWY_INLINE void Transpose(const VF* in, VF* out) {
#if HWY_TARGET == HWY_AVX2
  __m256 t[8], u[8];
  for (int p = 0; p < 4; ++p) {
    t[2 * p] = _mm256_unpacklo_ps(in[2 * p].raw, in[2 * p + 1].raw);
    t[2 * p + 1] = _mm256_unpackhi_ps(in[2 * p].raw, in[2 * p + 1].raw);
  }
  // u[4g + m], per 128-bit half b: rows 4g..4g+3 of column 4b + m.
  for (int g = 0; g < 2; ++g) {
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int m = 0; m < 4; ++m) {
    out[m] = VF{_mm256_permute2f128_ps(u[m], u[4 + m], 0x20)};
    out[4 + m] = VF{_mm256_permute2f128_ps(u[m], u[4 + m], 0x31)};
  }
#else
  __m512 t[16], u[16];
  for (int p = 0; p < 8; ++p) {
    t[2 * p] = _mm512_unpacklo_ps(in[2 * p].raw, in[2 * p + 1].raw);
    t[2 * p + 1] = _mm512_unpackhi_ps(in[2 * p].raw, in[2 * p + 1].raw);
  }
  // u[4g + m], per 128-bit block b: rows 4g..4g+3 of column 4b + m.
  auto lo = [](__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  };
  auto hi = [](__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  };
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = lo(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = hi(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = lo(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = hi(t[4 * g + 1], t[4 * g + 3]);
  }
  // Column 4b + m, block g = u[4g + m] block b: a 4 x 4 transpose of 128-bit blocks.
  for (int m = 0; m < 4; ++m) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
    const __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
    out[m] = VF{_mm512_shuffle_f32x4(v0, v2, 0x88)};
    out[4 + m] = VF{_mm512_shuffle_f32x4(v0, v2, 0xDD)};
    out[8 + m] = VF{_mm512_shuffle_f32x4(v1, v3, 0x88)};
    out[12 + m] = VF{_mm512_shuffle_f32x4(v1, v3, 0xDD)};
  }
#endif
}

// Floats between the chains of a panel (chain_stride below): the chain's columns plus one cache
// line, so that the 16 stores of a transposed step do not all fall in one cache set.
HWY_INLINE int64_t ChainStride(int64_t n_steps) { return n_steps * kPanelRows + 16; }

// Widens and transposes K-block b of rows [r0, r0 + kPanelRows) into `panel`: the weight of row
// r0 + r, column 16 * (b * kBlockSteps + i) + j at panel[j * ChainStride + i * kPanelRows + r],
// so that chain j's columns are contiguous. Rows past row_end and columns past cols are padding.
template <FloatType kType>
void BuildPanel(const GemmArgs& a, int64_t r0, int64_t b, int64_t n_steps, float* panel) {
  constexpr size_t kE = kElemBytes<kType>;
  const DF df;
  const int64_t g0 = b * kBlockSteps;
  const int64_t chain_stride = ChainStride(n_steps);
  // Steps whose 16 columns are all inside the row.
  const int64_t full_steps = std::min<int64_t>(n_steps, a.cols / 16 - g0);
  for (int v = 0; v < kTileVecs; ++v) {
    const int64_t first = r0 + v * kLanes;
    const int live = static_cast<int>(std::clamp<int64_t>(a.row_end - first, 0, kLanes));
    const uint8_t* base = a.w + static_cast<size_t>(std::min(first, a.row_end - 1)) * a.row_bytes +
                          static_cast<size_t>(16 * g0) * kE;
    float* dst = panel + v * kLanes;
    auto store = [&](int h, int64_t i, const VF* in) {
      VF out[kLanes];
      Transpose(in, out);
      for (int m = 0; m < kLanes; ++m) {
        hn::Store(out[m], df, dst + (h * kLanes + m) * chain_stride + i * kPanelRows);
      }
    };
    int64_t i = 0;
    if (live == kLanes) {
#if HWY_TARGET != HWY_AVX2
      if constexpr (kE == 2) {
        // Two steps per whole cache line of each row: rows a power-of-two apart share cache sets,
        // so a line is used up at once rather than reloaded for the second step.
        for (; i + 2 <= full_steps; i += 2) {
          VF in[2][kLanes];
#pragma GCC unroll 16
          for (int r = 0; r < kLanes; ++r) {
            // The line kBuildAhead pairs of steps on, into L1 (from L2, where the previous
            // K-block's calls prefetched it, or from memory if that failed).
            __builtin_prefetch(base + r * a.row_bytes + 16 * (i + 2 * kBuildAhead) * kE);
            const __m512i raw = _mm512_loadu_si512(base + r * a.row_bytes + 16 * i * kE);
            const __m256i lo = _mm512_castsi512_si256(raw), hi = _mm512_extracti64x4_epi64(raw, 1);
            if constexpr (kType == FloatType::kF16) {
              in[0][r] = VF{_mm512_cvtph_ps(lo)};
              in[1][r] = VF{_mm512_cvtph_ps(hi)};
            } else {
              in[0][r] = VF{_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(lo), 16))};
              in[1][r] = VF{_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16))};
            }
          }
          store(0, i, in[0]);
          store(0, i + 1, in[1]);
        }
      }
#endif
      for (; i < full_steps; ++i) {
        for (int h = 0; h < kHalves; ++h) {
          VF in[kLanes];
#pragma GCC unroll 16
          for (int r = 0; r < kLanes; ++r) {
            in[r] = LoadWeights<kType>(base + r * a.row_bytes + (16 * i + h * kLanes) * kE);
          }
          store(h, i, in);
        }
      }
    }
    // The panel's last rows, the row's last partial group: element by element.
    for (; i < n_steps; ++i) {
      HWY_ALIGN float w[kLanes][16];
      const int64_t col = 16 * (g0 + i);
      for (int r = 0; r < kLanes; ++r) {
        if (r < live) {
          LoadWeightTail<kType>(base + r * a.row_bytes + static_cast<size_t>(16 * i) * kE,
                                static_cast<int>(std::min<int64_t>(16, a.cols - col)), w[r]);
        } else {
          std::fill(w[r], w[r] + 16, kWeightPad);
        }
      }
      for (int h = 0; h < kHalves; ++h) {
        VF in[kLanes];
        for (int r = 0; r < kLanes; ++r) in[r] = hn::Load(df, w[r] + h * kLanes);
        store(h, i, in);
      }
    }
  }
}

// The activations of tokens [t0, t0 + n) in the order the tiles read them: token tile q, K-block
// b, chain j, step i, token t of the tile at
// acts[(((q * n_kblocks + b) * 16 + j) * kBlockSteps + i) * kTileTokens + t]; padding for the
// columns past cols (and zeros for the tokens past the last one).
void BuildActs(const GemmArgs& a, int64_t t0, int64_t n, int64_t n_kblocks, float* acts) {
  const int64_t n_tiles = (n + kTileTokens - 1) / kTileTokens;
  const int64_t n_groups = (a.cols + 15) / 16;
  for (int64_t q = 0; q < n_tiles; ++q) {
    const int live = static_cast<int>(std::min<int64_t>(kTileTokens, n - q * kTileTokens));
    const float* x = a.x + (t0 + q * kTileTokens) * a.cols;
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t b = g / kBlockSteps, i = g % kBlockSteps, col = 16 * g;
      float* dst = acts + ((q * n_kblocks + b) * 16 * kBlockSteps + i) * kTileTokens;
      if (live == kTileTokens && col + 16 <= a.cols) {
        // Transposes of the tile's 16 columns: chain j's tokens in the low lanes of out[j].
        const DF df;
        const auto tokens = hn::FirstN(df, kTileTokens);
        for (int h = 0; h < kHalves; ++h) {
          VF in[kLanes], out[kLanes];
          for (int t = 0; t < kLanes; ++t) {
            in[t] =
                t < kTileTokens ? hn::LoadU(df, x + t * a.cols + col + h * kLanes) : hn::Zero(df);
          }
          Transpose(in, out);
          for (int m = 0; m < kLanes; ++m) {
            hn::BlendedStore(out[m], tokens, df,
                             dst + (h * kLanes + m) * kBlockSteps * kTileTokens);
          }
        }
        continue;
      }
      for (int j = 0; j < 16; ++j) {
        for (int t = 0; t < kTileTokens; ++t) {
          dst[j * kBlockSteps * kTileTokens + t] =
              t < live && col + j < a.cols ? x[t * a.cols + col + j] : kActPad;
        }
      }
    }
  }
}

// The weight lines of one K-block of one panel, handed out a few at a time to be prefetched into
// L2 while the previous K-block computes: the panel's rows are many short streams that the
// hardware prefetchers pick up late (without this, prefill is ~5% slower).
class PanelPrefetcher {
 public:
  void Start(const GemmArgs& a, int64_t r0, int64_t b, size_t elem_bytes) {
    line_ = lines_per_row_ = 0;
    rows_left_ = std::max<int64_t>(0, std::min<int64_t>(kPanelRows, a.row_end - r0));
    if (rows_left_ == 0) return;
    const size_t begin = static_cast<size_t>(b) * kBlockCols * elem_bytes;
    const size_t end =
        std::min(begin + kBlockCols * elem_bytes, static_cast<size_t>(a.cols) * elem_bytes);
    row_ = a.w + static_cast<size_t>(r0) * a.row_bytes + begin;
    row_bytes_ = a.row_bytes;
    lines_per_row_ = (end - begin + 63) / 64;
  }
  size_t Lines() const { return static_cast<size_t>(rows_left_) * lines_per_row_; }
  // Prefetches all the remaining lines now.
  void IssueAll() {
    for (; rows_left_ > 0; Advance()) __builtin_prefetch(row_ + line_ * 64, 0, 2);
  }
  // Takes the addresses of up to `max` more lines; returns how many.
  int Take(const uint8_t** out, int max) {
    int n = 0;
    for (; n < max && rows_left_ > 0; ++n, Advance()) out[n] = row_ + line_ * 64;
    return n;
  }

 private:
  void Advance() {
    if (++line_ == lines_per_row_) {
      line_ = 0;
      row_ += row_bytes_;
      --rows_left_;
    }
  }

  const uint8_t* row_ = nullptr;
  size_t row_bytes_ = 0;
  size_t lines_per_row_ = 0;
  size_t line_ = 0;
  int64_t rows_left_ = 0;
};

// Chain j of a panel over one K-block for a tile of kT tokens: sums[t * kTileVecs + v] (16
// floats each) += the rows of vector v times token t, over the block's n_steps columns of chain
// j, starting from +0 for the first K-block.
template <int kT, bool kFirst>
HWY_NOINLINE void RunChain(const float* HWY_RESTRICT w, const float* HWY_RESTRICT x,
                           int64_t n_steps, float* HWY_RESTRICT sums,
                           const uint8_t* const* weight_lines, int n_weight_lines) {
  const DF df;
  VF acc[kTileVecs][kT];
#pragma GCC unroll 8
  for (int v = 0; v < kTileVecs; ++v) {
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) {
      acc[v][t] = kFirst ? hn::Zero(df) : hn::Load(df, sums + (t * kTileVecs + v) * 16);
    }
  }
  auto step = [&](const float* wi, const float* xi) {
    VF wv[kTileVecs];
#pragma GCC unroll 8
    for (int v = 0; v < kTileVecs; ++v) wv[v] = hn::Load(df, wi + v * kLanes);
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) {
      const VF xv = hn::Set(df, xi[t]);
#pragma GCC unroll 8
      for (int v = 0; v < kTileVecs; ++v) acc[v][t] = hn::MulAdd(wv[v], xv, acc[v][t]);
    }
  };
  // Lines of the next K-block's weights, spread over the call's pairs of steps.
  const int per_pair =
      static_cast<int>((n_weight_lines + n_steps / 2 - 1) / std::max<int64_t>(1, n_steps / 2));
  int pf = 0;
  int64_t n = n_steps;
  for (; n >= 2; n -= 2, w += 2 * kPanelRows, x += 2 * kTileTokens) {
    for (int i = 0; i < per_pair && pf < n_weight_lines; ++i) {
      __builtin_prefetch(weight_lines[pf++], 0, 2);
    }
    step(w, x);
    step(w + kPanelRows, x + kTileTokens);
  }
  if (n != 0) step(w, x);
#pragma GCC unroll 8
  for (int v = 0; v < kTileVecs; ++v) {
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) hn::Store(acc[v][t], df, sums + (t * kTileVecs + v) * 16);
  }
}

// Runs chain j for the tile of min(kT, nt) tokens.
template <int kT = kTileTokens>
HWY_INLINE void RunChainTokens(const float* w, const float* x, int64_t n_steps, float* sums,
                               bool first, int64_t nt, const uint8_t* const* lines, int n_lines) {
  if constexpr (kT > 1) {
    if (nt < kT) return RunChainTokens<kT - 1>(w, x, n_steps, sums, first, nt, lines, n_lines);
  }
  if (first) {
    RunChain<kT, true>(w, x, n_steps, sums, lines, n_lines);
  } else {
    RunChain<kT, false>(w, x, n_steps, sums, lines, n_lines);
  }
}

// Folds the 16 chains of every output of a panel (sums of token tile q, chain j at
// sums + (q * 16 + j) * kTileTokens * kTileVecs * 16) by the tree of kernels.h, a vector of
// rows at a time, into y.
void FoldPanel(const GemmArgs& a, int64_t r0, int64_t t0, int64_t n, const float* sums) {
  const DF df;
  constexpr int64_t kChainStride = kTileTokens * kTileVecs * 16;
  for (int64_t token = 0; token < n; ++token) {
    const float* s_t =
        sums + (token / kTileTokens) * 16 * kChainStride + (token % kTileTokens) * kTileVecs * 16;
    float* y = a.y + (t0 + token) * a.ldy;
    for (int v = 0; v < kTileVecs; ++v) {
      const int64_t first_row = r0 + v * kLanes;
      if (first_row >= a.row_end) break;
      VF s[16];
      for (int j = 0; j < 16; ++j) s[j] = hn::Load(df, s_t + j * kChainStride + v * 16);
      for (int half = 8; half >= 1; half /= 2) {
        for (int j = 0; j < half; ++j) s[j] = hn::Add(s[j], s[j + half]);
      }
      if (first_row + kLanes <= a.row_end) {
        hn::StoreU(s[0], df, y + first_row);
      } else {
        HWY_ALIGN float lanes[kLanes];
        hn::Store(s[0], df, lanes);
        for (int64_t r = first_row; r < a.row_end; ++r) y[r] = lanes[r - first_row];
      }
    }
  }
}

// Tokens [t0, t0 + n) over the thread's rows, panel by panel.
template <FloatType kType>
void GemmPass(const GemmArgs& a, int64_t t0, int64_t n) {
  const int64_t n_groups = (a.cols + 15) / 16;
  const int64_t n_kblocks = (n_groups + kBlockSteps - 1) / kBlockSteps;
  const int64_t n_tiles = (n + kTileTokens - 1) / kTileTokens;
  constexpr int64_t kChainStride = kTileTokens * kTileVecs * 16;
  auto* panel = static_cast<float*>(
      thread_scratch(kScratchPanel, sizeof(float) * 16 * ChainStride(kBlockSteps)));
  auto* sums = static_cast<float*>(thread_scratch(
      kScratchAccumulators, sizeof(float) * static_cast<size_t>(n_tiles * 16 * kChainStride)));
  auto* acts = static_cast<float*>(thread_scratch(
      kScratchActFloats,
      sizeof(float) * static_cast<size_t>(n_tiles * n_kblocks * kBlockCols * kTileTokens)));
  BuildActs(a, t0, n, n_kblocks, acts);
  PanelPrefetcher prefetch;
  prefetch.Start(a, a.row_begin, 0, kElemBytes<kType>);
  for (int64_t r0 = a.row_begin; r0 < a.row_end; r0 += kPanelRows) {
    for (int64_t b = 0; b < n_kblocks; ++b) {
      prefetch.IssueAll();  // what the last K-block's calls left (or the first K-block)
      const int64_t n_steps = std::min<int64_t>(kBlockSteps, n_groups - b * kBlockSteps);
      BuildPanel<kType>(a, r0, b, n_steps, panel);
      if (b + 1 < n_kblocks) {
        prefetch.Start(a, r0, b + 1, kElemBytes<kType>);
      } else {
        prefetch.Start(a, r0 + kPanelRows, 0, kElemBytes<kType>);
      }
      const int64_t calls = 16 * n_tiles;
      const int per_call = static_cast<int>(std::min<int64_t>(
          kMaxLinesPerCall, (static_cast<int64_t>(prefetch.Lines()) + calls - 1) / calls));
      for (int j = 0; j < 16; ++j) {
        const float* w = panel + j * ChainStride(n_steps);
        for (int64_t q = 0; q < n_tiles; ++q) {
          const uint8_t* lines[kMaxLinesPerCall];
          const int n_lines = prefetch.Take(lines, per_call);
          RunChainTokens(w, acts + ((q * n_kblocks + b) * 16 + j) * kBlockSteps * kTileTokens,
                         n_steps, sums + (q * 16 + j) * kChainStride, b == 0, n - q * kTileTokens,
                         lines, n_lines);
        }
      }
    }
    FoldPanel(a, r0, t0, n, sums);
  }
}

template <FloatType kType>
void GemmTokens(const GemmArgs& a) {
  // Passes of equal size, in whole tiles.
  const int64_t n_passes = (a.n_tokens + kMaxPassTokens - 1) / kMaxPassTokens;
  const int64_t tiles = (a.n_tokens + kTileTokens - 1) / kTileTokens;
  const int64_t pass = (tiles + n_passes - 1) / n_passes * kTileTokens;
  for (int64_t t0 = 0; t0 < a.n_tokens; t0 += pass) {
    GemmPass<kType>(a, t0, std::min(pass, a.n_tokens - t0));
  }
}

// Tokens [t0, t0 + n) of a, n <= kMaxDirectTokens, by DecodeRows.
template <FloatType kType, int kT = kMaxDirectTokens>
void DecodeTokens(const GemmArgs& a, int64_t t0, int64_t n) {
  if constexpr (kT > 1) {
    if (n < kT) return DecodeTokens<kType, kT - 1>(a, t0, n);
  }
  GemmArgs part = a;
  part.x = a.x + t0 * a.cols;
  part.y = a.y + t0 * a.ldy;
  part.n_tokens = kT;
  DecodeRows<kType, kT>(part);
}

template <FloatType kType>
void GemmFloat(const GemmArgs& a) {
  if (a.n_tokens > kMaxDirectBatch) return GemmTokens<kType>(a);
  // Passes of at most kMaxDirectTokens tokens over the weights, of equal sizes.
  const int64_t passes = (a.n_tokens + kMaxDirectTokens - 1) / kMaxDirectTokens;
  for (int64_t p = 0, t0 = 0; p < passes; ++p) {
    const int64_t n = (a.n_tokens - t0) / (passes - p);
    DecodeTokens<kType>(a, t0, n);
    t0 += n;
  }
}

// ---------------------------------------------------------------------------------------------
// Activation preparation: the same operations as scalar::prepare_acts, a vector at a time.

void PrepareActsVec(const float* x, int64_t cols, int64_t t_begin, int64_t t_end,
                    const ActFormat& format, const Activations& out) {
  if (format.block == 0) {  // f32, interleaved by tiles of tokens
    for (int64_t t = t_begin; t < t_end; ++t) {
      const float* xr = x + t * cols;
      float* dst = out.x + out.x_index(t, 0);
      for (int64_t i = 0; i < cols; ++i) dst[i * out.tile] = xr[i];
    }
    return;
  }
  const DF df;
  const DI di;
  const DU du;
  const hn::Rebind<int8_t, DI> d8;
  const VU abs_mask = hn::Set(du, 0x7FFFFFFFu);
  const VI lo = hn::Set(di, -127), hi = hn::Set(di, 127);
  const ptrdiff_t k = out.tile;
  HWY_ALIGN int8_t q[kLanes];
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* xr = x + t * cols;
    // This token's slots: group g of 4 quants at q_t + 4 k g, block b's scale at d_t[k b], ...
    int8_t* q_t = out.q + out.q_index(t, 0);
    float* d_t = out.d + out.d_index(t, 0);
    int16_t* sums_t = out.sums + out.sum_index(t, 0);
    int32_t* init_t = out.init + out.init_index(t, 0);
    for (int64_t b = 0; b < out.n_blocks; ++b) {
      const float* xb = xr + b * format.block;
      VU amax = hn::Zero(du);
      for (int i = 0; i < format.block; i += kLanes) {
        amax = hn::Max(amax, hn::And(hn::BitCast(du, hn::LoadU(df, xb + i)), abs_mask));
      }
      const uint32_t amax_bits = hn::GetLane(hn::MaxOfLanes(du, amax));
      float amax_f;
      std::memcpy(&amax_f, &amax_bits, sizeof amax_f);
      const float d = amax_f / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      d_t[b * k] = d;
      const VF vid = hn::Set(df, id);
      VI sum = hn::Zero(di);
      for (int i = 0; i < format.block; i += kLanes) {
        const VI qi = hn::Min(hn::Max(hn::NearestInt(hn::Mul(hn::LoadU(df, xb + i), vid)), lo), hi);
        hn::Store(hn::DemoteTo(d8, qi), d8, q);
        const int64_t first = b * format.block + i;
        int8_t* dst = q_t + (first / 4) * 4 * k;
        for (int g = 0; g < kLanes / 4; ++g) std::memcpy(dst + 4 * k * g, q + 4 * g, 4);
        sum = hn::Add(sum, qi);
        if ((i + kLanes) % format.sub == 0) {
          const int32_t total = hn::GetLane(hn::SumOfLanes(di, sum));
          const int64_t sub = (first + kLanes) / format.sub - 1;
          sums_t[(sub / 2) * 2 * k + sub % 2] = static_cast<int16_t>(total);
          init_t[sub * k] = -format.bias * total;
          sum = hn::Zero(di);
        }
      }
    }
  }
}

#endif  // MAAS_KERNELS_SIMD

void FillFloat(KernelTable* table) {
  table->hwy_target = HWY_TARGET;
#if MAAS_KERNELS_SIMD
  const ActFormat f32{0, 0, 0, 1};  // the caller's activations, read in place
  table->types[static_cast<int>(Slot::F32)] =
      TypeKernel{GemmFloat<FloatType::kF32>, f32, kPanelRows};
  table->types[static_cast<int>(Slot::F16)] =
      TypeKernel{GemmFloat<FloatType::kF16>, f32, kPanelRows};
  table->types[static_cast<int>(Slot::BF16)] =
      TypeKernel{GemmFloat<FloatType::kBF16>, f32, kPanelRows};
  table->prepare_acts = PrepareActsVec;
#endif
}

}  // namespace maas::tensor::kernels::HWY_NAMESPACE
MAAS_END_TARGET();

#if HWY_ONCE
namespace maas::tensor::kernels {
HWY_EXPORT(FillFloat);
void fill_float_kernels(KernelTable* table) { HWY_DYNAMIC_DISPATCH(FillFloat)(table); }
}  // namespace maas::tensor::kernels
#endif
