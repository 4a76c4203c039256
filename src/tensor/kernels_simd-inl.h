// Per-target helpers shared by the Highway kernel units (kernels_q32.cpp, kernels_qk.cpp,
// kernels_float.cpp): loading a panel of rows transposed (one row per vector lane), int8 dot
// products, half-precision conversion, and GemmPanels, the driver that walks panels, column
// chunks and token tiles. Included once per target through hwy/foreach_target.h.
//
// Only the vector targets (AVX2, AVX3, AVX3_DL) are implemented here (MAAS_KERNELS_SIMD); on
// the fallback target (SCALAR, or EMU128 with clang) the units leave the plain scalar kernels.

// Per-target include guard (Highway's convention): toggled for each target.
#if defined(MAAS_TENSOR_KERNELS_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef MAAS_TENSOR_KERNELS_SIMD_INL_H_
#undef MAAS_TENSOR_KERNELS_SIMD_INL_H_
#else
#define MAAS_TENSOR_KERNELS_SIMD_INL_H_
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "hwy/highway.h"
#include "tensor/kernels.h"

#undef MAAS_KERNELS_SIMD
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define MAAS_KERNELS_SIMD 1
#else
#define MAAS_KERNELS_SIMD 0
#endif

// Highway's AVX3_DL target string has no avx512vnni; every CPU of the target has it (and dispatch
// checks the CPUID bit before using the target). Each unit brackets its per-target code with
// MAAS_BEGIN_TARGET / MAAS_END_TARGET, which add it to Highway's target attributes.
#undef MAAS_BEGIN_TARGET
#undef MAAS_END_TARGET
#if HWY_TARGET == HWY_AVX3_DL
#define MAAS_BEGIN_TARGET()                         \
  HWY_PUSH_ATTRIBUTES(HWY_TARGET_STR ",avx512vnni") \
  static_assert(true, "for the trailing semicolon")
#else
#define MAAS_BEGIN_TARGET() HWY_BEFORE_NAMESPACE()
#endif
#define MAAS_END_TARGET() HWY_AFTER_NAMESPACE()

MAAS_BEGIN_TARGET();
namespace maas::tensor::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if MAAS_KERNELS_SIMD

using DI = hn::ScalableTag<int32_t>;
using DU = hn::ScalableTag<uint32_t>;
using DF = hn::ScalableTag<float>;
using VI = hn::Vec<DI>;
using VU = hn::Vec<DU>;
using VF = hn::Vec<DF>;

// Rows per panel: one per 32-bit lane.
constexpr int kLanes = HWY_LANES(int32_t);
static_assert(kLanes == 8 || kLanes == 16, "panels are written for AVX2 and AVX-512");

// Largest token tile of the integer kernels (accumulators live in registers; the float kernels,
// with one accumulator per token instead of two, take twice as many).
constexpr int kMaxTile = kLanes == 16 ? 8 : 4;

// Whether the target (or its AVX-VNNI variant) has an unsaturated u8 x s8 dot product.
template <bool kAvxVnni>
constexpr bool HasVnni() {
  return HWY_TARGET == HWY_AVX3_DL || (HWY_TARGET == HWY_AVX2 && kAvxVnni);
}

// ---------------------------------------------------------------------------------------------
// Loads

HWY_INLINE hn::Vec<hn::Full128<uint32_t>> Load16(const uint8_t* p) {
  return hn::LoadU(hn::Full128<uint32_t>(), reinterpret_cast<const uint32_t*>(p));
}

// out[k] lane i = the k-th little-endian 32-bit word of the 16 bytes at rows[i] + offset: four
// 4x4 transposes of 32-bit words, one per 128-bit block, with row 4j + m of the panel loaded into
// block j of z[m] so that lane order ends up equal to row order.
HWY_INLINE void LoadTransposed(const uint8_t* const* rows, size_t offset, VU out[4]) {
  const DU du;
  VU z[4];
  for (int m = 0; m < 4; ++m) {
#if HWY_TARGET == HWY_AVX2
    z[m] = hn::Combine(du, Load16(rows[4 + m] + offset), Load16(rows[m] + offset));
#else
    // Broadcast loads with merge masks: the load ports and port 0 or 5 do the work, where
    // inserting 128-bit halves would queue on the shuffle port (port 5).
    auto load = [&](int i) {
      return _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[i] + offset));
    };
    __m512i v = _mm512_broadcast_i32x4(load(m));
    v = _mm512_mask_broadcast_i32x4(v, 0x00F0, load(4 + m));
    v = _mm512_mask_broadcast_i32x4(v, 0x0F00, load(8 + m));
    v = _mm512_mask_broadcast_i32x4(v, 0xF000, load(12 + m));
    z[m] = VU{v};
#endif
  }
  const VU t0 = hn::InterleaveLower(du, z[0], z[1]);
  const VU t1 = hn::InterleaveLower(du, z[2], z[3]);
  const VU t2 = hn::InterleaveUpper(du, z[0], z[1]);
  const VU t3 = hn::InterleaveUpper(du, z[2], z[3]);
  const hn::Repartition<uint64_t, DU> d64;
  out[0] = hn::BitCast(du, hn::InterleaveLower(d64, hn::BitCast(d64, t0), hn::BitCast(d64, t1)));
  out[1] = hn::BitCast(du, hn::InterleaveUpper(d64, hn::BitCast(d64, t0), hn::BitCast(d64, t1)));
  out[2] = hn::BitCast(du, hn::InterleaveLower(d64, hn::BitCast(d64, t2), hn::BitCast(d64, t3)));
  out[3] = hn::BitCast(du, hn::InterleaveUpper(d64, hn::BitCast(d64, t2), hn::BitCast(d64, t3)));
}

// Lane i = the 32-bit word at base + offsets[i] + offset.
HWY_INLINE VU GatherWords(const uint8_t* base, VI offsets, size_t offset) {
  return hn::BitCast(
      DU(), hn::GatherOffset(DI(), reinterpret_cast<const int32_t*>(base + offset), offsets));
}

// The 32-bit word at p, in every lane.
HWY_INLINE VI BroadcastWord(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return hn::Set(DI(), v);
}

// Converts the IEEE half in the low (or high) 16 bits of each lane to float, exactly.
HWY_INLINE VF HalfLowToFloat(VU v) {
#if HWY_TARGET == HWY_AVX2
  const __m256i low = _mm256_and_si256(v.raw, _mm256_set1_epi32(0xFFFF));
  const __m128i packed =
      _mm_packus_epi32(_mm256_castsi256_si128(low), _mm256_extracti128_si256(low, 1));
  return VF{_mm256_cvtph_ps(packed)};
#else
  return VF{_mm512_cvtph_ps(_mm512_cvtepi32_epi16(v.raw))};
#endif
}
HWY_INLINE VF HalfHighToFloat(VU v) { return HalfLowToFloat(hn::ShiftRight<16>(v)); }

// Per byte: (v >> shift) & mask, for a mask that keeps only bits that did not cross bytes.
HWY_INLINE VU BytesShiftMask(VU v, int shift, uint32_t mask) {
  return hn::And(hn::ShiftRightSame(v, shift), hn::Set(DU(), mask));
}

// ---------------------------------------------------------------------------------------------
// Dot products of 4 bytes per 32-bit lane.

// acc + sum of the four products of the unsigned bytes of w and the signed bytes of a. Without
// VNNI the pairwise products are summed into saturating int16 first: callers keep w <= 63.
template <bool kAvxVnni>
HWY_INLINE VI DotU8I8(VI acc, VU w, VI a) {
#if HWY_TARGET == HWY_AVX3_DL
  return VI{_mm512_dpbusd_epi32(acc.raw, w.raw, a.raw)};
#elif HWY_TARGET == HWY_AVX3
  const __m512i pairs = _mm512_maddubs_epi16(w.raw, a.raw);
  return hn::Add(acc, VI{_mm512_madd_epi16(pairs, _mm512_set1_epi16(1))});
#else
  if constexpr (kAvxVnni) {
    // AVX-VNNI is not part of Highway's AVX2 target: inline assembly keeps the instruction out
    // of the code paths of CPUs without it (only the kAvxVnni instantiations contain it).
    __m256i r = acc.raw;
    asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(r) : "x"(w.raw), "x"(a.raw));
    return VI{r};
  } else {
    const __m256i pairs = _mm256_maddubs_epi16(w.raw, a.raw);
    return hn::Add(acc, VI{_mm256_madd_epi16(pairs, _mm256_set1_epi16(1))});
  }
#endif
}

// acc + sum of the four products of the signed bytes of w and of a, for targets without VNNI:
// |w| times a with w's sign keeps every pairwise sum within int16 (128 * 127 * 2 < 32768).
HWY_INLINE VI DotI8I8(VI acc, VU w, VI a) {
#if HWY_TARGET == HWY_AVX2
  const __m256i pairs =
      _mm256_maddubs_epi16(_mm256_abs_epi8(w.raw), _mm256_sign_epi8(a.raw, w.raw));
  return hn::Add(acc, VI{_mm256_madd_epi16(pairs, _mm256_set1_epi16(1))});
#else
  const __mmask64 negative = _mm512_movepi8_mask(w.raw);
  const __m512i signed_a = _mm512_mask_sub_epi8(a.raw, negative, _mm512_setzero_si512(), a.raw);
  const __m512i pairs = _mm512_maddubs_epi16(_mm512_abs_epi8(w.raw), signed_a);
  return hn::Add(acc, VI{_mm512_madd_epi16(pairs, _mm512_set1_epi16(1))});
#endif
}

// acc + per lane lo16(m) * lo16(s) + hi16(m) * hi16(s) (signed 16-bit halves).
HWY_INLINE VI DotPairsI16(VI acc, VI m, VI s) {
  const hn::Repartition<int16_t, DI> d16;
  VI unused = hn::Zero(DI());
  return hn::ReorderWidenMulAccumulate(DI(), hn::BitCast(d16, m), hn::BitCast(d16, s), acc, unused);
}

// ---------------------------------------------------------------------------------------------
// Panels: kRows rows (one or two vectors' lanes), one per lane. Panel k of a range of n rows
// holds rows k, k + S, k + 2S, ... with S = ceil(n / kRows), so that each lane reads one long
// sequential stream over the panels (rows k, k + 1, ... are adjacent in memory), which the
// hardware prefetchers follow; sixteen neighbouring short rows would interleave within each page
// and defeat them. Lanes past the end of the range repeat its last row (computed and dropped), so
// no load leaves the matrix.

template <int kRows>
struct PanelRows {
  const uint8_t* rows[kRows];
  int64_t index[kRows];  // row of each lane, -1 for a repeated one
  VI offsets;            // rows[i] - rows[0] in bytes, for the first kLanes rows (gathers)
};

// The lane stride S of a range of rows, or 0 for panels of kRows consecutive rows: with many
// tokens (the product is bound by arithmetic, not memory, and consecutive rows keep each token's
// outputs in one cache line) or when the panel's byte offsets would not fit 32 bits.
template <int kRows>
HWY_INLINE int64_t LaneStride(const GemmArgs& a) {
  if (a.n_tokens > kMaxTile) return 0;
  const int64_t stride = (a.row_end - a.row_begin + kRows - 1) / kRows;
  const double span = static_cast<double>(stride) * kRows * static_cast<double>(a.row_bytes);
  return span < 2147483647.0 ? stride : 0;
}

// Panel k of the range (k < S), or of consecutive rows from row_begin + k * kRows if S == 0.
template <int kRows>
HWY_INLINE void SetupPanel(const GemmArgs& a, int64_t stride, int64_t k, PanelRows<kRows>* p) {
  HWY_ALIGN int32_t offsets[kLanes];
  const int64_t first = stride != 0 ? a.row_begin + k : a.row_begin + k * kRows;
  const int64_t step = stride != 0 ? stride : 1;
  for (int i = 0; i < kRows; ++i) {
    const int64_t r = first + i * step;
    p->index[i] = r < a.row_end ? r : -1;
    const int64_t used = std::min(r, a.row_end - 1);
    p->rows[i] = a.w + static_cast<size_t>(used) * a.row_bytes;
    if (i < kLanes)
      offsets[i] = static_cast<int32_t>(static_cast<int64_t>(p->rows[i] - p->rows[0]));
  }
  p->offsets = hn::Load(DI(), offsets);
}

// Activations of a tile of tokens from the first block of the current chunk, in the interleaved
// layout of Activations with tile kStride (token i of the tile below), and the running sums of a
// panel of kRows rows.
template <int kStride, int kRows>
struct TokenTile {
  const float* x;
  const int8_t* q;
  const float* d;
  const int16_t* sums;
  const int32_t* init;
  float* acc;  // kRows running sums per token (one per row of the panel)

  // Indices are pointer-sized so that the compiler folds them into addressing modes.
  // Column k of token i.
  HWY_INLINE float X(ptrdiff_t k, ptrdiff_t i) const { return x[k * kStride + i]; }
  // The 4 quants of group `group` (4 elements) of token i, in every lane.
  HWY_INLINE VI Quants(ptrdiff_t group, ptrdiff_t i) const {
    return BroadcastWord(q + (group * kStride + i) * 4);
  }
  HWY_INLINE float Scale(ptrdiff_t block, ptrdiff_t i) const { return d[block * kStride + i]; }
  HWY_INLINE int32_t Init(ptrdiff_t sub, ptrdiff_t i) const { return init[sub * kStride + i]; }
  HWY_INLINE int16_t Sum(ptrdiff_t sub, ptrdiff_t i) const {
    return sums[((sub / 2) * kStride + i) * 2 + sub % 2];
  }
  // Partial sums 2p and 2p + 1 of token i as the halves of a 32-bit word, in every lane.
  HWY_INLINE VI SumPair(ptrdiff_t pair, ptrdiff_t i) const {
    return BroadcastWord(sums + (pair * kStride + i) * 2);
  }
  HWY_INLINE float* Acc(int i) const { return acc + i * kRows; }
};

template <class Kind>
using KindTile = TokenTile<Kind::kActTile, Kind::kPanelRows>;

// Runs the largest tile of at most `nt` tokens; returns its size.
template <class Kind, int kT = Kind::kMaxTokens>
HWY_INLINE int RunTile(const typename Kind::Chunk& chunk, int n_blocks, int last_len,
                       const KindTile<Kind>& tile, int64_t nt) {
  if constexpr (kT > 1) {
    if (nt < kT) return RunTile<Kind, kT / 2>(chunk, n_blocks, last_len, tile, nt);
  }
  Kind::template Compute<kT>(chunk, n_blocks, last_len, tile);
  return kT;
}

// How many chunks ahead GemmPanels prefetches the rows of a panel.
constexpr int64_t kPrefetchChunks = 2;

// Prefetches bytes [begin, end) of every row of a panel.
template <int kRows>
HWY_INLINE void PrefetchRows(const uint8_t* const* rows, size_t begin, size_t end) {
  for (size_t line = begin; line < end; line += 64) {
    for (int i = 0; i < kRows; ++i) __builtin_prefetch(rows[i] + line);
  }
  if (end > begin) {
    for (int i = 0; i < kRows; ++i) __builtin_prefetch(rows[i] + end - 1);
  }
}

// Runs a Kind's kernel over rows [row_begin, row_end): per panel, per chunk of blocks, build the
// transposed chunk once and run every token tile over it. Kind provides kPanelRows (a multiple of
// kLanes; kLanes for kinds that gather), kBlockElems, kBlockBytes, kSub, kDecodeChunkBlocks,
// kMaxChunkBlocks (even), kMaxTokens (a power of two: the largest token tile), kActTile (the
// activation layout's tile, a multiple of kMaxTokens), a Chunk type,
// Build(const PanelRows&, size_t byte_offset, int n_blocks, int last_len, Chunk*) and
// Compute<kT>(const Chunk&, int n_blocks, int last_len, const KindTile<Kind>&), and
// kFusedDecode with, if true, Decode(const PanelRows&, size_t byte_offset, int n_blocks,
// int last_len, const TokenTile&) doing Build then Compute<1> without storing the chunk. Only the
// float kinds have a partial last block (cols not a multiple of kBlockElems): last_len is the
// number of columns of the chunk's last block.
template <class Kind>
void GemmPanels(const GemmArgs& a) {
  constexpr int kRows = Kind::kPanelRows;
  const Activations& act = *a.act;
  const int64_t n_blocks = (a.cols + Kind::kBlockElems - 1) / Kind::kBlockElems;
  const int final_len = static_cast<int>(a.cols - (n_blocks - 1) * Kind::kBlockElems);
  constexpr int kSubsPerBlock = Kind::kBlockElems / Kind::kSub;
  const int64_t n_tok = a.n_tokens;
  // Short chunks while decoding (the chunk is used once, keep it in L1), long ones when many
  // token tiles reuse it (fewer tile set-ups).
  const int chunk_blocks =
      n_tok > Kind::kMaxTokens ? Kind::kMaxChunkBlocks : Kind::kDecodeChunkBlocks;
  const int64_t n_chunks = (n_blocks + chunk_blocks - 1) / chunk_blocks;
  const size_t chunk_bytes = static_cast<size_t>(chunk_blocks) * Kind::kBlockBytes;
  const size_t row_data_bytes = static_cast<size_t>(a.cols) * Kind::kBlockBytes / Kind::kBlockElems;
  float* acc = static_cast<float*>(
      thread_scratch(kScratchAccumulators, sizeof(float) * kRows * static_cast<size_t>(n_tok)));
  auto* chunk = static_cast<typename Kind::Chunk*>(
      thread_scratch(kScratchPanel, sizeof(typename Kind::Chunk)));
  const int64_t stride = LaneStride<kRows>(a);
  const int64_t n_panels = stride != 0 ? stride : (a.row_end - a.row_begin + kRows - 1) / kRows;
  PanelRows<kRows> panel, next;
  SetupPanel(a, stride, 0, &next);
  for (int64_t k = 0; k < n_panels; ++k) {
    panel = next;
    const bool has_next = k + 1 < n_panels;
    if (has_next) SetupPanel(a, stride, k + 1, &next);
    std::fill(acc, acc + kRows * n_tok, 0.0f);
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t b0 = c * chunk_blocks;
      const int nb = static_cast<int>(std::min<int64_t>(chunk_blocks, n_blocks - b0));
      // Software prefetch kPrefetchChunks chunks ahead, running on into the next panel: the
      // panel's row streams start cold at every panel.
      const int64_t target = c + kPrefetchChunks;
      if (target < n_chunks) {
        const size_t begin = static_cast<size_t>(target) * chunk_bytes;
        PrefetchRows<kRows>(panel.rows, begin, std::min(begin + chunk_bytes, row_data_bytes));
      } else if (has_next && target - n_chunks < n_chunks) {
        const size_t begin = static_cast<size_t>(target - n_chunks) * chunk_bytes;
        PrefetchRows<kRows>(next.rows, begin, std::min(begin + chunk_bytes, row_data_bytes));
      }
      const int last_len = b0 + nb == n_blocks ? final_len : Kind::kBlockElems;
      const size_t offset = static_cast<size_t>(b0) * Kind::kBlockBytes;
      // Activations of the tile of tokens from t0, at the chunk's first block.
      auto tile_at = [&](int64_t t0) {
        const int64_t first = b0 * Kind::kBlockElems;
        KindTile<Kind> tile{};
        tile.acc = acc + t0 * kRows;
        if (act.x != nullptr) {
          tile.x = act.x + act.x_index(t0, first);
        } else {
          tile.q = act.q + act.q_index(t0, first);
          tile.d = act.d + act.d_index(t0, b0);
          tile.sums = act.sums + act.sum_index(t0, b0 * kSubsPerBlock);
          tile.init = act.init + act.init_index(t0, b0 * kSubsPerBlock);
        }
        return tile;
      };
      if constexpr (Kind::kFusedDecode) {
        if (n_tok == 1) {
          Kind::Decode(panel, offset, nb, last_len, tile_at(0));
          continue;
        }
      }
      Kind::Build(panel, offset, nb, last_len, chunk);
      // Token tiles of the largest power of two that fits: each starts at a multiple of its
      // size, so it never straddles two stored tiles of the activation layout.
      for (int64_t t0 = 0; t0 < n_tok;) {
        t0 += RunTile<Kind>(*chunk, nb, last_len, tile_at(t0), n_tok - t0);
      }
    }
    if (stride == 0 && panel.index[kRows - 1] >= 0) {
      for (int64_t t = 0; t < n_tok; ++t) {
        std::memcpy(a.y + t * a.ldy + panel.index[0], acc + t * kRows, sizeof(float) * kRows);
      }
    } else {
      for (int64_t t = 0; t < n_tok; ++t) {
        for (int i = 0; i < kRows; ++i) {
          if (panel.index[i] >= 0) a.y[t * a.ldy + panel.index[i]] = acc[t * kRows + i];
        }
      }
    }
  }
}

#endif  // MAAS_KERNELS_SIMD

}  // namespace maas::tensor::kernels::HWY_NAMESPACE
MAAS_END_TARGET();

#endif  // include guard
