// Integer kernels of the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) for the vector
// targets. A panel of 8 or 16 rows is transposed so that lane i of a vector holds 4 consecutive
// quants of row i; each token's int8 activations are broadcast 4 at a time and multiplied into
// 32-bit lane sums, so every lane computes exactly the scalar kernel's integers and float steps
// for its row (kernels_scalar.cpp).
//
// Quants are stored unsigned (offset by the type's bias 8 or 16, and by 128 for Q8_0 with
// VNNI); the activation format carries init = -bias * sum(activation quants) to undo the offset.
#include "tensor/hwy_config.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/kernels_q32.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "tensor/kernels_simd-inl.h"

MAAS_BEGIN_TARGET();
namespace maas::tensor::kernels::HWY_NAMESPACE {

#if MAAS_KERNELS_SIMD

enum class Block32 { kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0 };

template <Block32 kType, bool kAvxVnni>
struct Block32Kind {
  static constexpr int kBlockElems = 32;
  static constexpr int kSub = 32;
  static constexpr int kDecodeChunkBlocks = 8;
  static constexpr int kMaxChunkBlocks = 32;
  static constexpr int kPanelRows = kLanes;
  static constexpr int kMaxTokens = kMaxTile;
  static constexpr int kActTile = kMaxTile;
  static constexpr bool kFusedDecode = true;
  static constexpr int kBlockBytes = kType == Block32::kQ4_0   ? 18
                                     : kType == Block32::kQ4_1 ? 20
                                     : kType == Block32::kQ5_0 ? 22
                                     : kType == Block32::kQ5_1 ? 24
                                                               : 34;
  static constexpr bool kHasMin = kType == Block32::kQ4_1 || kType == Block32::kQ5_1;
  static constexpr bool kFifthBit = kType == Block32::kQ5_0 || kType == Block32::kQ5_1;
  // Q8_0 without VNNI keeps signed quants (see DotI8I8); everything else is unsigned.
  static constexpr bool kSignedQuants = kType == Block32::kQ8_0 && !HasVnni<kAvxVnni>();
  static constexpr int kBias = kType == Block32::kQ4_0   ? 8
                               : kType == Block32::kQ5_0 ? 16
                               : kType == Block32::kQ8_0 ? (kSignedQuants ? 0 : 128)
                                                         : 0;
  // Offset of the quants (after d, m and qh).
  static constexpr int kQsOffset = kType == Block32::kQ4_0   ? 2
                                   : kType == Block32::kQ4_1 ? 4
                                   : kType == Block32::kQ5_0 ? 6
                                   : kType == Block32::kQ5_1 ? 8
                                                             : 2;

  struct Chunk {
    HWY_ALIGN uint32_t q[kMaxChunkBlocks][8][kLanes];  // [block][group of 4 elements][row]
    HWY_ALIGN float d[kMaxChunkBlocks][kLanes];
    HWY_ALIGN float m[kMaxChunkBlocks][kLanes];
  };

  // Spreads bits 4g..4g+3 of each lane's qh to bit 4 of its 4 bytes: the multiply moves bit k of
  // the nibble to bit 8k (the shifted copies never overlap, so nothing carries).
  static HWY_INLINE VU FifthBits(VU qh, int g) {
    const DU du;
    const VU nibble = BytesShiftMask(qh, 4 * g, 0xF);
    const VU spread = hn::And(hn::Mul(nibble, hn::Set(du, 0x00204081u)), hn::Set(du, 0x01010101u));
    return hn::ShiftLeft<4>(spread);
  }

  // One block of the panel in registers: its 8 groups of quants, d, and m (Q4_1, Q5_1).
  static HWY_INLINE void BuildBlock(const PanelRows<kLanes>& p, size_t off, VU q[8], VF& d, VF& m) {
    const DU du;
    const VU head = GatherWords(p.rows[0], p.offsets, off);
    d = HalfLowToFloat(head);
    if constexpr (kHasMin) m = HalfHighToFloat(head);
    if constexpr (kType == Block32::kQ8_0) {
      VU lo[4], hi[4];
      LoadTransposed(p.rows, off + 2, lo);
      LoadTransposed(p.rows, off + 18, hi);
      const VU flip = hn::Set(du, kSignedQuants ? 0u : 0x80808080u);
      for (int g = 0; g < 4; ++g) {
        q[g] = hn::Xor(lo[g], flip);
        q[4 + g] = hn::Xor(hi[g], flip);
      }
    } else {
      VU packed[4];
      LoadTransposed(p.rows, off + kQsOffset, packed);
      VU qh = hn::Zero(du);
      if constexpr (kFifthBit) qh = GatherWords(p.rows[0], p.offsets, off + kQsOffset - 4);
      for (int g = 0; g < 4; ++g) {
        q[g] = hn::And(packed[g], hn::Set(du, 0x0F0F0F0Fu));
        q[4 + g] = BytesShiftMask(packed[g], 4, 0x0F0F0F0Fu);
        if constexpr (kFifthBit) {
          q[g] = hn::Or(q[g], FifthBits(qh, g));
          q[4 + g] = hn::Or(q[4 + g], FifthBits(qh, 4 + g));
        }
      }
    }
  }

  static void Build(const PanelRows<kLanes>& p, size_t offset, int n_blocks, int /*last_len*/,
                    Chunk* c) {
    const DU du;
    const DF df;
    for (int b = 0; b < n_blocks; ++b) {
      VU q[8];
      VF d, m;
      BuildBlock(p, offset + static_cast<size_t>(b) * kBlockBytes, q, d, m);
      for (int g = 0; g < 8; ++g) hn::Store(q[g], du, c->q[b][g]);
      hn::Store(d, df, c->d[b]);
      if constexpr (kHasMin) hn::Store(m, df, c->m[b]);
    }
  }

  // One block's contribution for tile token t (the operations of the scalar kernel, per lane).
  template <int kT>
  static HWY_INLINE void Accumulate(const VU q[8], VF d, VF m, int b,
                                    const TokenTile<kMaxTokens, kLanes>& tile, VF acc[kT]) {
    const DI di;
    const DF df;
    VI s[kT];
    for (int t = 0; t < kT; ++t) s[t] = kBias != 0 ? hn::Set(di, tile.Init(b, t)) : hn::Zero(di);
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) {
      for (int t = 0; t < kT; ++t) {
        const VI x = tile.Quants(8 * b + g, t);
        s[t] = kSignedQuants ? DotI8I8(s[t], q[g], x) : DotU8I8<kAvxVnni>(s[t], q[g], x);
      }
    }
    for (int t = 0; t < kT; ++t) {
      acc[t] =
          hn::MulAdd(hn::ConvertTo(df, s[t]), hn::Mul(d, hn::Set(df, tile.Scale(b, t))), acc[t]);
    }
    if constexpr (kHasMin) {
      for (int t = 0; t < kT; ++t) {
        acc[t] = hn::MulAdd(hn::Set(df, static_cast<float>(tile.Sum(b, t))),
                            hn::Mul(m, hn::Set(df, tile.Scale(b, t))), acc[t]);
      }
    }
  }

  // One token without storing the chunk (see GemmPanels).
  static void Decode(const PanelRows<kLanes>& p, size_t offset, int n_blocks, int /*last_len*/,
                     const TokenTile<kMaxTokens, kLanes>& tile) {
    const DF df;
    VF acc[1] = {hn::Load(df, tile.Acc(0))};
    for (int b = 0; b < n_blocks; ++b) {
      VU q[8];
      VF d, m;
      BuildBlock(p, offset + static_cast<size_t>(b) * kBlockBytes, q, d, m);
      Accumulate<1>(q, d, m, b, tile, acc);
    }
    hn::Store(acc[0], df, tile.Acc(0));
  }

  template <int kT>
  static HWY_INLINE void Compute(const Chunk& c, int n_blocks, int /*last_len*/,
                                 const TokenTile<kMaxTokens, kLanes>& tile) {
    const DU du;
    const DF df;
    VF acc[kT];
    for (int t = 0; t < kT; ++t) acc[t] = hn::Load(df, tile.Acc(t));
    for (int b = 0; b < n_blocks; ++b) {
      VU q[8];
      for (int g = 0; g < 8; ++g) q[g] = hn::Load(du, c.q[b][g]);
      const VF m = kHasMin ? hn::Load(df, c.m[b]) : hn::Zero(df);
      Accumulate<kT>(q, hn::Load(df, c.d[b]), m, b, tile, acc);
    }
    for (int t = 0; t < kT; ++t) hn::Store(acc[t], df, tile.Acc(t));
  }
};

template <bool kAvxVnni>
void FillVariant(KernelTable* table) {
  auto set = [&](Slot slot, GemmFn fn, int bias) {
    table->types[static_cast<int>(slot)] =
        TypeKernel{fn, ActFormat{32, 32, bias, kMaxTile}, kLanes};
  };
  using Q4_0 = Block32Kind<Block32::kQ4_0, kAvxVnni>;
  using Q4_1 = Block32Kind<Block32::kQ4_1, kAvxVnni>;
  using Q5_0 = Block32Kind<Block32::kQ5_0, kAvxVnni>;
  using Q5_1 = Block32Kind<Block32::kQ5_1, kAvxVnni>;
  using Q8_0 = Block32Kind<Block32::kQ8_0, kAvxVnni>;
  set(Slot::Q4_0, GemmPanels<Q4_0>, Q4_0::kBias);
  set(Slot::Q4_1, GemmPanels<Q4_1>, Q4_1::kBias);
  set(Slot::Q5_0, GemmPanels<Q5_0>, Q5_0::kBias);
  set(Slot::Q5_1, GemmPanels<Q5_1>, Q5_1::kBias);
  set(Slot::Q8_0, GemmPanels<Q8_0>, Q8_0::kBias);
}

#endif  // MAAS_KERNELS_SIMD

void FillQuant32(KernelTable* table, bool avx_vnni) {
  table->hwy_target = HWY_TARGET;
#if HWY_TARGET == HWY_AVX2
  if (avx_vnni) {
    FillVariant<true>(table);
    return;
  }
#endif
#if MAAS_KERNELS_SIMD
  FillVariant<false>(table);
#else
  (void)avx_vnni;  // the scalar kernels are already in the table
#endif
}

}  // namespace maas::tensor::kernels::HWY_NAMESPACE
MAAS_END_TARGET();

#if HWY_ONCE
namespace maas::tensor::kernels {
HWY_EXPORT(FillQuant32);
void fill_quant32_kernels(KernelTable* table, bool avx_vnni) {
  HWY_DYNAMIC_DISPATCH(FillQuant32)(table, avx_vnni);
}
}  // namespace maas::tensor::kernels
#endif
