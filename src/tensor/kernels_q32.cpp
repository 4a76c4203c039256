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
#include "tensor/panels.h"

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

// Q8_0 in 16-row panels (WeightLayout::kPanels16, ops.h): each block column holds the 16 rows'
// scales and then, per group of 4 quants, the 64 bytes that LoadTransposed would build, so a
// block is 8 plain vector loads (two per group on AVX2's 8 lanes) instead of two transposes and
// a gather. The arithmetic per lane is Block32Kind's for Q8_0 (signed quants without VNNI,
// offset by 128 with it, undone by the activations' init).
template <bool kAvxVnni>
struct Q8Panels {
  static constexpr bool kSigned = !HasVnni<kAvxVnni>();
  static constexpr int kBias = kSigned ? 0 : 128;
  static constexpr int kHalves = 16 / kLanes;  // vectors per 16 rows
  static constexpr size_t kColumnBytes = panels::kColumnBytes;

  static HWY_INLINE VF Scales(const uint8_t* col, int h) {
#if HWY_TARGET == HWY_AVX2
    return VF{_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(col + 16 * h)))};
#else
    (void)h;
    return VF{_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col)))};
#endif
  }

  // kP panels (16 rows each) against the tile of kT tokens from t0, over every block: acc[i][t]
  // holds panel i's 16 sums for token t. Per block, group by group, each group's 64 bytes of
  // every panel are loaded once and multiplied with every token's 4 activation quants.
  template <int kP, int kT>
  static HWY_INLINE void Run(const GemmArgs& a, const uint8_t* const* panel, int64_t t0,
                             VF (&acc)[kP][kT][kHalves]) {
    const DU du;
    const DF df;
    const DI di;
    const Activations& act = *a.act;
    TokenTile<kMaxTile, kLanes> tile{};
    tile.q = act.q + act.q_index(t0, 0);
    tile.d = act.d + act.d_index(t0, 0);
    tile.init = act.init + act.init_index(t0, 0);
    const int64_t n_blocks = a.cols / panels::kBlock;
    const VU flip = hn::Set(du, 0x80808080u);
    for (int i = 0; i < kP; ++i) {
      for (int t = 0; t < kT; ++t) {
        for (int h = 0; h < kHalves; ++h) acc[i][t][h] = hn::Zero(df);
      }
    }
    for (int64_t b = 0; b < n_blocks; ++b) {
      const size_t off = static_cast<size_t>(b) * kColumnBytes;
      if constexpr (kT == 1) {  // decoding: the panels stream from memory
        for (int i = 0; i < kP; ++i) {
          for (size_t line = 0; line < kColumnBytes; line += 64) {
            __builtin_prefetch(panel[i] + off + kPrefetchBytes + line);
          }
        }
      }
      VI s[kP][kT][kHalves];
      for (int t = 0; t < kT; ++t) {
        const VI init = kBias != 0 ? hn::Set(di, tile.Init(b, t)) : hn::Zero(di);
        for (int i = 0; i < kP; ++i) {
          for (int h = 0; h < kHalves; ++h) s[i][t][h] = init;
        }
      }
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        for (int i = 0; i < kP; ++i) {
          for (int h = 0; h < kHalves; ++h) {
            const uint8_t* group = panel[i] + off + panels::quant_offset(kLanes * h, 4 * g);
            VU q = hn::LoadU(du, reinterpret_cast<const uint32_t*>(group));
            if constexpr (!kSigned) q = hn::Xor(q, flip);
            for (int t = 0; t < kT; ++t) {
              const VI x = tile.Quants(8 * b + g, t);
              s[i][t][h] =
                  kSigned ? DotI8I8(s[i][t][h], q, x) : DotU8I8<kAvxVnni>(s[i][t][h], q, x);
            }
          }
        }
      }
      for (int i = 0; i < kP; ++i) {
        for (int h = 0; h < kHalves; ++h) {
          const VF d = Scales(panel[i] + off, h);
          for (int t = 0; t < kT; ++t) {
            const VF scale = hn::Mul(d, hn::Set(df, tile.Scale(b, t)));
            acc[i][t][h] = hn::MulAdd(hn::ConvertTo(df, s[i][t][h]), scale, acc[i][t][h]);
          }
        }
      }
    }
  }

  // Tokens [t0, t0 + kT) against the panel of rows r0..r0 + 15.
  template <int kT>
  static HWY_INLINE void Tile(const GemmArgs& a, const uint8_t* panel, int64_t r0, int64_t t0) {
    VF acc[1][kT][kHalves];
    Run<1, kT>(a, &panel, t0, acc);
    for (int t = 0; t < kT; ++t) {
      for (int h = 0; h < kHalves; ++h) {
        hn::StoreU(acc[0][t][h], DF(), a.y + (t0 + t) * a.ldy + r0 + h * kLanes);
      }
    }
  }

  // Runs the largest tile of at most nt tokens; returns its size.
  template <int kT = kMaxTile>
  static HWY_INLINE int RunTile(const GemmArgs& a, const uint8_t* panel, int64_t r0, int64_t t0,
                                int64_t nt) {
    if constexpr (kT > 1) {
      if (nt < kT) return RunTile<kT / 2>(a, panel, r0, t0, nt);
    }
    Tile<kT>(a, panel, r0, t0);
    return kT;
  }

  // Decoding one token: kStreams panels at once, each from its own part of the range (panel i of
  // group k is first + k + i * S, S = ceil(n / kStreams)), so that the core reads kStreams
  // sequential streams, advancing together 64 bytes at a time, each prefetched kPrefetchBytes
  // ahead. Measured with 2 threads (matmul_bench --huge, 8192x2048 and 2048x8192): one panel at
  // a time 21-24 GB/s (one stream per core keeps too few reads in flight), 2, 4 or 8 at once
  // 27-28.5 on a fast evening; on a slower one, prefetching 1, 2 or 4 KiB ahead gave 25.1 ->
  // 26.4, 26.8, 26.6, and advancing the streams group by group instead of block by block another
  // 3-6% (3 rounds each, alternating). Missing panels of the last groups repeat one (computed and
  // dropped).
  static constexpr int kStreams = 4;
  static constexpr size_t kPrefetchBytes = 2048;
  static void DecodePanels(const GemmArgs& a, int64_t first, int64_t n_panels) {
    const int64_t stride = (n_panels + kStreams - 1) / kStreams;
    for (int64_t k = 0; k < stride; ++k) {
      const uint8_t* panel[kStreams];
      int64_t index[kStreams];
      for (int i = 0; i < kStreams; ++i) {
        const int64_t p = k + i * stride;
        index[i] = p < n_panels ? first + p * 16 : -1;
        panel[i] = a.w + static_cast<size_t>(first + std::min(p, n_panels - 1) * 16) * a.row_bytes;
      }
      VF acc[kStreams][1][kHalves];
      Run<kStreams, 1>(a, panel, 0, acc);
      for (int i = 0; i < kStreams; ++i) {
        if (index[i] < 0) continue;
        for (int h = 0; h < kHalves; ++h) {
          hn::StoreU(acc[i][0][h], DF(), a.y + index[i] + h * kLanes);
        }
      }
    }
  }

  static void Gemm(const GemmArgs& a) {
    const int64_t panels_end = std::min(a.row_end, a.packed_rows);
    // Rows before the first whole panel of the range (none when row_begin is a panel's first
    // row, as matmul's row shares are) and after the last go to the one-row-at-a-time path.
    const int64_t first = std::min((a.row_begin + 15) / 16 * 16, std::max(panels_end, a.row_begin));
    if (first > a.row_begin) scalar::q8_0_panel_rows(a, a.row_begin, first);
    int64_t r0 = first;
    if (a.n_tokens == 1 && panels_end >= first + 16) {
      const int64_t n_panels = (panels_end - first) / 16;
      DecodePanels(a, first, n_panels);
      r0 = first + n_panels * 16;
    }
    for (; r0 + 16 <= panels_end; r0 += 16) {
      const uint8_t* panel = a.w + static_cast<size_t>(r0) * a.row_bytes;
      for (int64_t t0 = 0; t0 < a.n_tokens;) t0 += RunTile(a, panel, r0, t0, a.n_tokens - t0);
    }
    if (a.row_end > r0) scalar::q8_0_panel_rows(a, r0, a.row_end);
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
  using Q8P = Q8Panels<kAvxVnni>;
  table->types[static_cast<int>(Slot::Q8_0_Panels)] =
      TypeKernel{Q8P::Gemm, ActFormat{32, 32, Q8P::kBias, kMaxTile}, 16};
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
