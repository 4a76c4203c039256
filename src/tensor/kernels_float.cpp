// Float-weight kernels (F32, F16, BF16) and the activation preparation (int8 quantization, f32
// interleaving) for the vector targets.
//
// Float kernels use the panels of kernels_simd-inl.h like the integer ones: each chunk of 16
// columns of a panel is transposed and widened to f32 (one vector per column, one lane per row),
// then every token of a tile accumulates vector(column k) * broadcast(x[k]) in column order, so
// each lane runs exactly the scalar kernel's chain of fused multiply-adds for its row.

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

template <FloatType kType, int kVecsPerColumn>
struct FloatKind {
  static constexpr int kElemBytes = kType == FloatType::kF32 ? 4 : 2;
  // Vectors of rows per column. Two make a column's broadcast activation feed two multiply-adds
  // (fewer loads per multiply-add, faster with many tokens), but decoding with 32 interleaved row
  // streams is slower than with 16: GemmFloat picks by the number of tokens.
  static constexpr int kVecs = kVecsPerColumn;
  static constexpr int kPanelRows = kVecs * kLanes;
  static constexpr int kBlockElems = 16;
  static constexpr int kBlockBytes = 16 * kElemBytes;
  static constexpr int kSub = 16;  // no partial sums
  static constexpr int kDecodeChunkBlocks = 8;
  static constexpr int kMaxChunkBlocks = 32 / kVecs;
  // kVecs accumulators per token; with the column vectors and a broadcast, 16 / kVecs tokens fit
  // the AVX-512 registers (8 / kVecs the AVX2 ones). Activations are laid out for the largest.
  static constexpr int kMaxTokens = 2 * kMaxTile / kVecs;
  static constexpr int kActTile = 2 * kMaxTile;
  static constexpr bool kFusedDecode = true;
  using Tile = TokenTile<kActTile, kPanelRows>;
  using Panel = PanelRows<kPanelRows>;

  struct Chunk {
    HWY_ALIGN float w[kMaxChunkBlocks][16][kPanelRows];  // [block][column][row]
  };

  static float LoadScalar(const uint8_t* p) {
    if constexpr (kType == FloatType::kF32) {
      float f;
      std::memcpy(&f, p, sizeof f);
      return f;
    } else {
      const uint16_t h = static_cast<uint16_t>(p[0] | (p[1] << 8));
      return kType == FloatType::kF16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
    }
  }

  // The 16 columns of a whole block at `off` for the kLanes rows at `rows`, one vector per column.
  static HWY_INLINE void BuildBlock(const uint8_t* const* rows, size_t off, VF w[16]) {
    const DF df;
    const DU du;
    if constexpr (kType == FloatType::kF32) {
      for (int q = 0; q < 4; ++q) {
        VU v[4];
        LoadTransposed(rows, off + 16 * q, v);
        for (int j = 0; j < 4; ++j) w[4 * q + j] = hn::BitCast(df, v[j]);
      }
    } else {
      for (int h = 0; h < 2; ++h) {
        VU v[4];  // word j holds columns 8h + 2j (low half) and 8h + 2j + 1 (high half)
        LoadTransposed(rows, off + 16 * h, v);
        for (int j = 0; j < 4; ++j) {
          if constexpr (kType == FloatType::kF16) {
            w[8 * h + 2 * j] = HalfLowToFloat(v[j]);
            w[8 * h + 2 * j + 1] = HalfHighToFloat(v[j]);
          } else {  // bfloat16 is the top half of a float
            w[8 * h + 2 * j] = hn::BitCast(df, hn::ShiftLeft<16>(v[j]));
            w[8 * h + 2 * j + 1] = hn::BitCast(df, hn::And(v[j], hn::Set(du, 0xFFFF0000u)));
          }
        }
      }
    }
  }

  // A partial block at the end of the rows: element by element, never past the row.
  static void BuildPartialBlock(const Panel& p, size_t off, int len, float (*w)[kPanelRows]) {
    for (int k = 0; k < 16; ++k) {
      for (int i = 0; i < kPanelRows; ++i) {
        w[k][i] = k < len ? LoadScalar(p.rows[i] + off + k * kElemBytes) : 0.0f;
      }
    }
  }

  static void Build(const Panel& p, size_t offset, int n_blocks, int last_len, Chunk* c) {
    const DF df;
    for (int b = 0; b < n_blocks; ++b) {
      const size_t off = offset + static_cast<size_t>(b) * kBlockBytes;
      if (b == n_blocks - 1 && last_len < 16) {
        BuildPartialBlock(p, off, last_len, c->w[b]);
        continue;
      }
      for (int v = 0; v < kVecs; ++v) {
        VF w[16];
        BuildBlock(p.rows + v * kLanes, off, w);
        for (int k = 0; k < 16; ++k) hn::Store(w[k], df, c->w[b][k] + v * kLanes);
      }
    }
  }

  // acc[v][t] += column k's vector v times token t's activation, for the tile's tokens.
  template <int kT>
  static HWY_INLINE void Step(const VF w[kVecs], const Tile& tile, ptrdiff_t k,
                              VF (*acc)[kMaxTokens]) {
    const DF df;
    for (int t = 0; t < kT; ++t) {
      const VF x = hn::Set(df, tile.X(k, t));
      for (int v = 0; v < kVecs; ++v) acc[v][t] = hn::MulAdd(w[v], x, acc[v][t]);
    }
  }

  // One token: builds each block in registers and feeds it straight to the chains of fused
  // multiply-adds (the same operations as Build then Compute<1>), so that the next blocks' loads
  // and conversions overlap the chains' latency instead of a round trip through memory.
  static void Decode(const Panel& p, size_t offset, int n_blocks, int last_len, const Tile& tile) {
    const DF df;
    VF acc[kVecs][kMaxTokens];
    for (int v = 0; v < kVecs; ++v) acc[v][0] = hn::Load(df, tile.Acc(0) + v * kLanes);
    for (int b = 0; b < n_blocks; ++b) {
      const size_t off = offset + static_cast<size_t>(b) * kBlockBytes;
      const ptrdiff_t col = 16 * static_cast<ptrdiff_t>(b);
      if (b == n_blocks - 1 && last_len < 16) {
        HWY_ALIGN float w[16][kPanelRows];
        BuildPartialBlock(p, off, last_len, w);
        for (int k = 0; k < last_len; ++k) {
          VF wk[kVecs];
          for (int v = 0; v < kVecs; ++v) wk[v] = hn::Load(df, w[k] + v * kLanes);
          Step<1>(wk, tile, col + k, acc);
        }
        continue;
      }
      VF w[kVecs][16];
      for (int v = 0; v < kVecs; ++v) BuildBlock(p.rows + v * kLanes, off, w[v]);
      for (int k = 0; k < 16; ++k) {
        VF wk[kVecs];
        for (int v = 0; v < kVecs; ++v) wk[v] = w[v][k];
        Step<1>(wk, tile, col + k, acc);
      }
    }
    for (int v = 0; v < kVecs; ++v) hn::Store(acc[v][0], df, tile.Acc(0) + v * kLanes);
  }

  template <int kT>
  static HWY_INLINE void Compute(const Chunk& c, int n_blocks, int last_len, const Tile& tile) {
    const DF df;
    VF acc[kVecs][kMaxTokens];
    for (int t = 0; t < kT; ++t) {
      for (int v = 0; v < kVecs; ++v) acc[v][t] = hn::Load(df, tile.Acc(t) + v * kLanes);
    }
    for (int b = 0; b < n_blocks; ++b) {
      const ptrdiff_t col = 16 * static_cast<ptrdiff_t>(b);
      const int len = b == n_blocks - 1 ? last_len : 16;
      if (len < 16) {
        for (int k = 0; k < len; ++k) {
          VF wk[kVecs];
          for (int v = 0; v < kVecs; ++v) wk[v] = hn::Load(df, c.w[b][k] + v * kLanes);
          Step<kT>(wk, tile, col + k, acc);
        }
        continue;
      }
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k) {
        VF wk[kVecs];
        for (int v = 0; v < kVecs; ++v) wk[v] = hn::Load(df, c.w[b][k] + v * kLanes);
        Step<kT>(wk, tile, col + k, acc);
      }
    }
    for (int t = 0; t < kT; ++t) {
      for (int v = 0; v < kVecs; ++v) hn::Store(acc[v][t], df, tile.Acc(t) + v * kLanes);
    }
  }
};

// Panels of one row vector for a few tokens (more row streams would slow decoding), of two for
// larger batches. Each row's arithmetic is the same either way.
template <FloatType kType>
void GemmFloat(const GemmArgs& a) {
  if (a.n_tokens > kMaxTile) {
    GemmPanels<FloatKind<kType, 2>>(a);
  } else {
    GemmPanels<FloatKind<kType, 1>>(a);
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
  const ActFormat f32{0, 0, 0, 2 * kMaxTile};
  constexpr int kUnit = 2 * kLanes;  // a multiple of both panel heights
  table->types[static_cast<int>(Slot::F32)] = TypeKernel{GemmFloat<FloatType::kF32>, f32, kUnit};
  table->types[static_cast<int>(Slot::F16)] = TypeKernel{GemmFloat<FloatType::kF16>, f32, kUnit};
  table->types[static_cast<int>(Slot::BF16)] = TypeKernel{GemmFloat<FloatType::kBF16>, f32, kUnit};
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
