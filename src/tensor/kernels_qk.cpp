// Integer kernels of the k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) for the vector targets, on
// panels of 8 or 16 rows transposed one row per lane, one 256-element super-block at a time (see
// kernels_q32.cpp for the scheme, kernels_scalar.cpp for the arithmetic every lane repeats).
//
// Per super-block and token, each sub-block's quant dot product is an exact int32 that is
// multiplied by the sub-block's integer scale and summed (I); the mins give M = sum of
// min * activation partial sum (16-bit pairs, one multiply-add per two sub-blocks). Quants are
// stored unsigned: Q3_K offset by 4 and Q6_K by 32, undone by the activation format's init.
#include "tensor/hwy_config.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/kernels_qk.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "tensor/kernels_simd-inl.h"

MAAS_BEGIN_TARGET();
namespace maas::tensor::kernels::HWY_NAMESPACE {

#if MAAS_KERNELS_SIMD

enum class KQuant { kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K };

template <KQuant kType, bool kAvxVnni>
struct KQuantKind {
  static constexpr int kBlockElems = 256;
  static constexpr int kDecodeChunkBlocks = 2;
  static constexpr int kMaxChunkBlocks = 4;
  static constexpr int kPanelRows = kLanes;
  static constexpr int kMaxTokens = kMaxTile;
  static constexpr int kActTile = kMaxTile;
  static constexpr bool kFusedDecode = false;
  static constexpr int kBlockBytes = kType == KQuant::kQ2_K   ? 84
                                     : kType == KQuant::kQ3_K ? 110
                                     : kType == KQuant::kQ4_K ? 144
                                     : kType == KQuant::kQ5_K ? 176
                                                              : 210;
  static constexpr int kSub = kType == KQuant::kQ4_K || kType == KQuant::kQ5_K ? 32 : 16;
  static constexpr int kSubBlocks = kBlockElems / kSub;
  static constexpr bool kHasMin =
      kType == KQuant::kQ2_K || kType == KQuant::kQ4_K || kType == KQuant::kQ5_K;
  static constexpr int kBias = kType == KQuant::kQ3_K ? 4 : kType == KQuant::kQ6_K ? 32 : 0;

  // One super-block of a panel.
  struct Block {
    HWY_ALIGN uint32_t q[64][kLanes];  // [group of 4 elements][row]
    HWY_ALIGN int32_t scale[kSubBlocks][kLanes];
    HWY_ALIGN int32_t min_pairs[kSubBlocks / 2][kLanes];  // min 2p | min 2p+1 << 16
    HWY_ALIGN float d[kLanes];
    HWY_ALIGN float dmin[kLanes];
  };
  struct Chunk {
    Block blocks[kMaxChunkBlocks];
  };

  static HWY_INLINE void StoreScale(Block* c, int j, VU v) {
    hn::Store(hn::BitCast(DI(), v), DI(), c->scale[j]);
  }
  static HWY_INLINE void StoreMins(Block* c, const VU* mins) {
    for (int p = 0; p < kSubBlocks / 2; ++p) {
      hn::Store(hn::BitCast(DI(), hn::Or(mins[2 * p], hn::ShiftLeft<16>(mins[2 * p + 1]))), DI(),
                c->min_pairs[p]);
    }
  }

  // Q2_K and Q3_K: the 2-bit fields of 64 bytes of qs at `qs`; element 128h + 32i + l sits in
  // byte 32h + l at shift 2i. high(l4, h, i) supplies Q3_K's third bit (shifted into place).
  template <class High>
  static HWY_INLINE void BuildCrumbs(const PanelRows<kLanes>& p, size_t qs, Block* c,
                                     const High& high) {
    const DU du;
    for (int c4 = 0; c4 < 4; ++c4) {
      VU packed[4];
      LoadTransposed(p.rows, qs + 16 * c4, packed);
      const int h = c4 / 2;
      for (int k = 0; k < 4; ++k) {
        const int l4 = 4 * (c4 % 2) + k;  // which 4 bytes of the 32
        for (int i = 0; i < 4; ++i) {
          const VU u = hn::Or(BytesShiftMask(packed[k], 2 * i, 0x03030303u), high(l4, h, i));
          hn::Store(u, du, c->q[32 * h + 8 * i + l4]);
        }
      }
    }
  }

  // Q4_K and Q5_K: low nibbles of 128 bytes of qs; byte p holds element 64(p/32) + p%32 in its low
  // nibble and that + 32 in its high nibble. fifth(l4, s) supplies Q5_K's bit 4 of the elements
  // 32s + 4 l4 .. + 3.
  template <class Fifth>
  static HWY_INLINE void BuildNibbles(const PanelRows<kLanes>& p, size_t qs, Block* c,
                                      const Fifth& fifth) {
    const DU du;
    const VU low4 = hn::Set(du, 0x0F0F0F0Fu);
    for (int c8 = 0; c8 < 8; ++c8) {
      VU packed[4];
      LoadTransposed(p.rows, qs + 16 * c8, packed);
      for (int k = 0; k < 4; ++k) {
        const int l4 = 4 * (c8 % 2) + k;
        const int group = 16 * (c8 / 2) + l4;
        const int s = 2 * (c8 / 2);  // 32-element sub-block of the low nibble
        hn::Store(hn::Or(hn::And(packed[k], low4), fifth(l4, s)), du, c->q[group]);
        hn::Store(hn::Or(BytesShiftMask(packed[k], 4, 0x0F0F0F0Fu), fifth(l4, s + 1)), du,
                  c->q[group + 8]);
      }
    }
  }

  // Q4_K/Q5_K scales and mins: 6 bits each, packed in 12 bytes (words h1, h2, h3 per lane).
  static HWY_INLINE void BuildScalesK4(VU h1, VU h2, VU h3, Block* c) {
    VU mins[8];
    for (int j = 0; j < 4; ++j) {
      StoreScale(c, j, BytesShiftMask(h1, 8 * j, 63));
      mins[j] = BytesShiftMask(h2, 8 * j, 63);
      StoreScale(c, 4 + j,
                 hn::Or(BytesShiftMask(h3, 8 * j, 0xF),
                        hn::ShiftLeft<4>(BytesShiftMask(h1, 8 * j + 6, 3))));
      mins[4 + j] = hn::Or(BytesShiftMask(h3, 8 * j + 4, 0xF),
                           hn::ShiftLeft<4>(BytesShiftMask(h2, 8 * j + 6, 3)));
    }
    StoreMins(c, mins);
  }

  static void Build(const PanelRows<kLanes>& p, size_t offset, int n_blocks, int /*last_len*/,
                    Chunk* chunk) {
    for (int b = 0; b < n_blocks; ++b) {
      BuildBlock(p, offset + static_cast<size_t>(b) * kBlockBytes, &chunk->blocks[b]);
    }
  }

  static HWY_INLINE void BuildBlock(const PanelRows<kLanes>& p, size_t off, Block* c) {
    const DU du;
    const DI di;
    const DF df;
    const VU zero = hn::Zero(du);
    if constexpr (kType == KQuant::kQ2_K) {
      VU s[4];
      LoadTransposed(p.rows, off, s);
      VU mins[16];
      for (int j = 0; j < 16; ++j) {
        StoreScale(c, j, BytesShiftMask(s[j / 4], 8 * (j % 4), 0xF));
        mins[j] = BytesShiftMask(s[j / 4], 8 * (j % 4) + 4, 0xF);
      }
      StoreMins(c, mins);
      const VU head = GatherWords(p.rows[0], p.offsets, off + 80);
      hn::Store(HalfLowToFloat(head), df, c->d);
      hn::Store(HalfHighToFloat(head), df, c->dmin);
      BuildCrumbs(p, off + 16, c, [&](int, int, int) { return zero; });
    } else if constexpr (kType == KQuant::kQ3_K) {
      VU hmask[8];
      LoadTransposed(p.rows, off, hmask);
      LoadTransposed(p.rows, off + 16, hmask + 4);
      BuildCrumbs(p, off + 32, c, [&](int l4, int h, int i) {
        return hn::ShiftLeft<2>(BytesShiftMask(hmask[l4], 4 * h + i, 0x01010101u));
      });
      // Bytes 94..109: two bytes of qs, the 12 scale bytes, then d (never past the block).
      VU tail[4];
      LoadTransposed(p.rows, off + 94, tail);
      auto scale_byte = [&](int n) {
        return BytesShiftMask(tail[(n + 2) / 4], 8 * ((n + 2) % 4), 0xFF);
      };
      for (int j = 0; j < 16; ++j) {
        const VU low =
            j < 8 ? hn::And(scale_byte(j), hn::Set(du, 0xF)) : hn::ShiftRight<4>(scale_byte(j - 8));
        const VU high = BytesShiftMask(scale_byte(8 + j % 4), 2 * (j / 4), 3);
        StoreScale(c, j, hn::Sub(hn::Or(low, hn::ShiftLeft<4>(high)), hn::Set(du, 32)));
      }
      hn::Store(HalfHighToFloat(tail[3]), df, c->d);
    } else if constexpr (kType == KQuant::kQ4_K || kType == KQuant::kQ5_K) {
      VU head[4];
      LoadTransposed(p.rows, off, head);
      hn::Store(HalfLowToFloat(head[0]), df, c->d);
      hn::Store(HalfHighToFloat(head[0]), df, c->dmin);
      BuildScalesK4(head[1], head[2], head[3], c);
      if constexpr (kType == KQuant::kQ4_K) {
        BuildNibbles(p, off + 16, c, [&](int, int) { return zero; });
      } else {
        VU qh[8];
        LoadTransposed(p.rows, off + 16, qh);
        LoadTransposed(p.rows, off + 32, qh + 4);
        BuildNibbles(p, off + 48, c, [&](int l4, int s) {
          return hn::ShiftLeft<4>(BytesShiftMask(qh[l4], s, 0x01010101u));
        });
      }
    } else {  // Q6_K
      // Per half h of 128 elements: ql bytes 64h + l (elements 128h + l, low nibble, and
      // 128h + 64 + l, high nibble), 64h + 32 + l (128h + 32 + l and 128h + 96 + l); qh byte
      // 32h + l has the top 2 bits of 128h + 32i + l at shift 2i.
      const VU low4 = hn::Set(du, 0x0F0F0F0Fu);
      for (int h = 0; h < 2; ++h) {
        for (int half = 0; half < 2; ++half) {
          VU a[4], b[4], top[4];
          LoadTransposed(p.rows, off + 64 * h + 16 * half, a);
          LoadTransposed(p.rows, off + 64 * h + 32 + 16 * half, b);
          LoadTransposed(p.rows, off + 128 + 32 * h + 16 * half, top);
          for (int k = 0; k < 4; ++k) {
            const int l4 = 4 * half + k;
            auto bits = [&](int i) {
              return hn::ShiftLeft<4>(BytesShiftMask(top[k], 2 * i, 0x03030303u));
            };
            hn::Store(hn::Or(hn::And(a[k], low4), bits(0)), du, c->q[32 * h + l4]);
            hn::Store(hn::Or(hn::And(b[k], low4), bits(1)), du, c->q[32 * h + 8 + l4]);
            hn::Store(hn::Or(BytesShiftMask(a[k], 4, 0x0F0F0F0Fu), bits(2)), du,
                      c->q[32 * h + 16 + l4]);
            hn::Store(hn::Or(BytesShiftMask(b[k], 4, 0x0F0F0F0Fu), bits(3)), du,
                      c->q[32 * h + 24 + l4]);
          }
        }
      }
      VU scales[4];
      LoadTransposed(p.rows, off + 192, scales);
      for (int j = 0; j < 16; ++j) {
        const VI word = hn::BitCast(di, scales[j / 4]);
        const VI sc = hn::ShiftRightSame(hn::ShiftLeftSame(word, 24 - 8 * (j % 4)), 24);
        hn::Store(sc, di, c->scale[j]);
      }
      hn::Store(HalfHighToFloat(GatherWords(p.rows[0], p.offsets, off + 206)), df, c->d);
    }
  }

  template <int kT>
  static HWY_INLINE void Compute(const Chunk& chunk, int n_blocks, int /*last_len*/,
                                 const TokenTile<kMaxTokens, kLanes>& tile) {
    const DI di;
    const DU du;
    const DF df;
    VF acc[kT];
    for (int t = 0; t < kT; ++t) acc[t] = hn::Load(df, tile.Acc(t));
    for (int b = 0; b < n_blocks; ++b) {
      const Block& c = chunk.blocks[b];
      VI isum[kT];
      for (int t = 0; t < kT; ++t) isum[t] = hn::Zero(di);
      for (int j = 0; j < kSubBlocks; ++j) {
        const int sub = b * kSubBlocks + j;
        VI s[kT];
        for (int t = 0; t < kT; ++t)
          s[t] = kBias != 0 ? hn::Set(di, tile.Init(sub, t)) : hn::Zero(di);
#pragma GCC unroll 8
        for (int g = 0; g < kSub / 4; ++g) {
          const VU w = hn::Load(du, c.q[j * (kSub / 4) + g]);
          for (int t = 0; t < kT; ++t) {
            s[t] = DotU8I8<kAvxVnni>(s[t], w, tile.Quants(64 * b + j * (kSub / 4) + g, t));
          }
        }
        const VI scale = hn::Load(di, c.scale[j]);
        for (int t = 0; t < kT; ++t) isum[t] = hn::Add(isum[t], hn::Mul(s[t], scale));
      }
      const VF dv = hn::Load(df, c.d);
      for (int t = 0; t < kT; ++t) {
        acc[t] = hn::MulAdd(hn::ConvertTo(df, isum[t]), hn::Mul(dv, hn::Set(df, tile.Scale(b, t))),
                            acc[t]);
      }
      if constexpr (kHasMin) {
        const VF dminv = hn::Load(df, c.dmin);
        for (int t = 0; t < kT; ++t) {
          VI m = hn::Zero(di);
          for (int p = 0; p < kSubBlocks / 2; ++p) {
            m = DotPairsI16(m, hn::Load(di, c.min_pairs[p]),
                            tile.SumPair(b * kSubBlocks / 2 + p, t));
          }
          acc[t] = hn::MulAdd(hn::ConvertTo(df, hn::Neg(m)),
                              hn::Mul(dminv, hn::Set(df, tile.Scale(b, t))), acc[t]);
        }
      }
    }
    for (int t = 0; t < kT; ++t) hn::Store(acc[t], df, tile.Acc(t));
  }
};

template <bool kAvxVnni>
void FillVariant(KernelTable* table) {
  auto set = [&](Slot slot, GemmFn fn, int sub, int bias) {
    table->types[static_cast<int>(slot)] =
        TypeKernel{fn, ActFormat{256, sub, bias, kMaxTile}, kLanes};
  };
  using Q2_K = KQuantKind<KQuant::kQ2_K, kAvxVnni>;
  using Q3_K = KQuantKind<KQuant::kQ3_K, kAvxVnni>;
  using Q4_K = KQuantKind<KQuant::kQ4_K, kAvxVnni>;
  using Q5_K = KQuantKind<KQuant::kQ5_K, kAvxVnni>;
  using Q6_K = KQuantKind<KQuant::kQ6_K, kAvxVnni>;
  set(Slot::Q2_K, GemmPanels<Q2_K>, Q2_K::kSub, Q2_K::kBias);
  set(Slot::Q3_K, GemmPanels<Q3_K>, Q3_K::kSub, Q3_K::kBias);
  set(Slot::Q4_K, GemmPanels<Q4_K>, Q4_K::kSub, Q4_K::kBias);
  set(Slot::Q5_K, GemmPanels<Q5_K>, Q5_K::kSub, Q5_K::kBias);
  set(Slot::Q6_K, GemmPanels<Q6_K>, Q6_K::kSub, Q6_K::kBias);
}

#endif  // MAAS_KERNELS_SIMD

void FillKQuant(KernelTable* table, bool avx_vnni) {
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
  (void)avx_vnni;
#endif
}

}  // namespace maas::tensor::kernels::HWY_NAMESPACE
MAAS_END_TARGET();

#if HWY_ONCE
namespace maas::tensor::kernels {
HWY_EXPORT(FillKQuant);
void fill_kquant_kernels(KernelTable* table, bool avx_vnni) {
  HWY_DYNAMIC_DISPATCH(FillKQuant)(table, avx_vnni);
}
}  // namespace maas::tensor::kernels
#endif
