// AMX-BF16 matrix products for F16 and BF16 weights on CPUs with AMX (Sapphire Rapids and
// later), for prompt tokens (any number of them).
//
// The tile unit multiplies bf16 numbers (8 significant bits) exactly and sums the products in
// f32. Both operands are split into bf16 parts whose sum is what the other targets multiply:
// - an F16 weight (11 significant bits) is hi + lo exactly: hi its f32 value with the low 16
//   bits cleared (8 bits), lo = w - hi (at most 3 bits); a BF16 weight is hi alone;
// - an activation x is xh + xl: xh = bf16(x), xl = bf16(x - xh), both rounded to nearest even,
//   so that |x - xh - xl| <= 2^-17 |x| (16 significant bits; llama.cpp rounds activations to
//   fp16, 11 bits, for its F16 products).
//
// The arithmetic: TDPBF16PS computes, for each output, C = C + (e0 + e1), where e0 and e1 start
// from +0 and run fused multiply-adds (f32, round to nearest even, denormals flushed) over the
// even and the odd elements of the instruction's 16 pairs in order (the SDM states it so; a test
// checks it bit for bit against this CPU). Each output starts from C = +0 and takes, per 32
// columns in order, the instructions hi.xh, hi.xl, lo.xh, lo.xl (F16) or hi.xh, hi.xl (BF16).
// That is not the 16-chain order of kernels.h, so these kernels serve prompt tokens only
// (KernelTable::prompt; see TokenKind in ops.h): a prompt token always gets this arithmetic, a
// generated token always the 16-chain one, whatever the batch. Within the tile arithmetic a
// token's outputs depend only on its own activations, never on the other tokens of the batch,
// on K-blocking (accumulators are stored and reloaded exactly) or on the thread count.
//
// Layout: per panel of 16 rows and per 32 columns, the weights' parts are unpacked into A tiles
// (16 rows x 32 bf16, pairs of adjacent columns as the instruction wants them); the activations'
// parts are laid out once per call as B tiles (16 pairs of columns x up to 16 tokens). Up to 4
// C tiles (64 tokens) stay in the tile registers across a K-block. While the tile unit works on
// one panel, the vector code unpacks the next (PanelUnpacker).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "tensor/amx_tiles.h"
#include "tensor/kernels.h"

namespace maas::tensor::kernels {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

namespace {

constexpr int kRows = 16;        // rows per panel: one A tile
constexpr int kTileTokens = 16;  // tokens per B/C tile
constexpr int kChunk = 32;       // columns per tile product (16 pairs)
constexpr int kGroupTiles = 4;   // C tiles held at once: tmm4..tmm7
constexpr size_t kATileBytes = kRows * kChunk * 2;
// Activation bytes one K-block may span (both parts, every token tile), to stay in L2.
constexpr size_t kBlockActBytes = size_t{512} << 10;

}  // namespace

MAAS_AMX_BEGIN("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,f16c,fma,amx-tile,amx-bf16")

namespace {

struct Shape {
  int64_t cols = 0;
  int64_t n_chunks = 0;  // 32-column steps, the last one zero-padded
  int64_t n_tokens = 0;
  int tile_tokens = 0;  // columns of the B and C tiles: min(n_tokens, 16)
  int64_t n_tiles = 0;  // token tiles, the last one zero-padded
  size_t b_part_bytes() const { return static_cast<size_t>(kRows) * tile_tokens * 4; }
  // One part (xh or xl) of one chunk of one token tile.
  size_t b_offset(int64_t tile, int64_t chunk, int part) const {
    return ((static_cast<size_t>(tile) * n_chunks + chunk) * 2 + part) * b_part_bytes();
  }
};

// 16 bf16 widened to f32, exactly.
inline __m512 widen(__m256i bf16) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16), 16));
}
// 32 f32 as bf16, in order (low, then high).
inline __m512i pack_bf16(__m512 low, __m512 high) {
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(high, low));
}

inline __mmask16 mask16(int64_t left) {
  return left >= 16 ? __mmask16{0xFFFF} : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
}

// 16x16 transpose of dwords: out[j] lane i = in[i] lane j.
inline void transpose16(const __m512i* in, __m512i* out) {
  __m512i t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(in[i], in[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(in[i], in[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // u[4g + m], 128-bit block b: rows 4g..4g+3 of column 4b + m.
  for (int g = 0; g < 16; g += 8) {
    for (int m = 0; m < 4; ++m) {
      t[g + m] = _mm512_shuffle_i32x4(u[g + m], u[g + 4 + m], 0x88);
      t[g + 4 + m] = _mm512_shuffle_i32x4(u[g + m], u[g + 4 + m], 0xDD);
    }
  }
  for (int m = 0; m < 8; ++m) {
    out[m] = _mm512_shuffle_i32x4(t[m], t[m + 8], 0x88);
    out[m + 8] = _mm512_shuffle_i32x4(t[m], t[m + 8], 0xDD);
  }
}

// The B tiles: for token tile T, chunk c and part p, row k holds the part of columns 32c + 2k
// and 32c + 2k + 1 (xh = bf16(x), xl = bf16(x - xh)) for each token of the tile in turn: per
// token, the chunk's 16 pairs of each part are one vector; 16 tokens' vectors are transposed.
// Tokens past n_tokens and columns past cols are zero.
void prepare_b(const float* x, const Shape& s, uint8_t* b) {
  const __mmask16 row_mask = mask16(s.tile_tokens);
  for (int64_t tile = 0; tile < s.n_tiles; ++tile) {
    for (int64_t c = 0; c < s.n_chunks; ++c) {
      __m512i parts[2][16], rows[16];
      const int64_t left = s.cols - c * kChunk;
      for (int j = 0; j < 16; ++j) {
        const int64_t t = tile * s.tile_tokens + j;
        if (j >= s.tile_tokens || t >= s.n_tokens) {
          parts[0][j] = parts[1][j] = _mm512_setzero_si512();
          continue;
        }
        const float* xt = x + t * s.cols + c * kChunk;
        const __m512 v0 = _mm512_maskz_loadu_ps(mask16(left), xt);
        const __m512 v1 = _mm512_maskz_loadu_ps(mask16(left - 16), xt + 16);
        const __m512i h = pack_bf16(v0, v1);
        parts[0][j] = h;
        parts[1][j] = pack_bf16(_mm512_sub_ps(v0, widen(_mm512_castsi512_si256(h))),
                                _mm512_sub_ps(v1, widen(_mm512_extracti64x4_epi64(h, 1))));
      }
      for (int p = 0; p < 2; ++p) {
        transpose16(parts[p], rows);
        uint8_t* dst = b + s.b_offset(tile, c, p);
        for (int k = 0; k < 16; ++k) {
          _mm512_mask_storeu_epi32(dst + k * s.tile_tokens * 4, row_mask, rows[k]);
        }
      }
    }
  }
}

// The F16 weights of 32 columns starting at `col` as hi and lo (f32), zero past `cols`.
struct WeightParts {
  __m512 hi0, hi1, lo0, lo1;
};
template <int kParts>
inline WeightParts load_weights32(const uint8_t* row, int64_t cols, int64_t col) {
  const int64_t left = cols - col;
  const __mmask32 m = left >= 32  ? ~__mmask32{0}
                      : left <= 0 ? 0
                                  : static_cast<__mmask32>((uint64_t{1} << left) - 1);
  const __m512i h = _mm512_maskz_loadu_epi16(m, row + col * 2);
  WeightParts w;
  if constexpr (kParts == 1) {
    w.hi0 = widen(_mm512_castsi512_si256(h));
    w.hi1 = widen(_mm512_extracti64x4_epi64(h, 1));
  } else {
    const __m512i keep_high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    const __m512 w0 = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    const __m512 w1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
    w.hi0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(w0), keep_high));
    w.hi1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(w1), keep_high));
    w.lo0 = _mm512_sub_ps(w0, w.hi0);
    w.lo1 = _mm512_sub_ps(w1, w.hi1);
  }
  return w;
}

// Columns [32c, 32c + 32) of one row into its rows of chunk c's A tiles: hi at `dst`, lo at
// dst + 1 KiB (F16).
template <int kParts>
inline void unpack_row_chunk(const uint8_t* row, int64_t cols, int64_t c, uint8_t* dst) {
  const WeightParts w = load_weights32<kParts>(row, cols, c * kChunk);
  _mm512_store_si512(dst, pack_bf16(w.hi0, w.hi1));
  if constexpr (kParts == 2) _mm512_store_si512(dst + kATileBytes, pack_bf16(w.lo0, w.lo1));
}

// Unpacks the next panel while the tile unit works on this one: a panel's weights are read four
// rows at a time, each along its columns, and the vector work is spread over the current
// panel's tile steps so that both units stay busy.
template <int kParts>
class PanelUnpacker {
 public:
  PanelUnpacker(int64_t cols, int64_t c0, int64_t c1) : cols_(cols), c0_(c0), c1_(c1) {}

  // Starts on a panel (rows[16]) into `dst`, to be done in about `steps` calls of step().
  void start(const uint8_t* const* rows, uint8_t* dst, int64_t steps) {
    std::copy(rows, rows + kRows, rows_);
    dst_ = dst;
    quad_ = 0;
    c_ = c0_;
    const int64_t units = kRows / 4 * (c1_ - c0_);  // (4-row quad, chunk) pairs
    per_step_ = std::max<int64_t>(1, (units + steps - 1) / steps);
  }
  void finish() {
    while (quad_ < kRows / 4) step();
  }
  void step() {
    for (int64_t i = 0; i < per_step_ && quad_ < kRows / 4; ++i) {
      uint8_t* chunk = dst_ + (c_ - c0_) * kParts * kATileBytes;
      for (int r = quad_ * 4; r < quad_ * 4 + 4; ++r) {
        unpack_row_chunk<kParts>(rows_[r], cols_, c_, chunk + r * 64);
      }
      if (++c_ == c1_) {
        c_ = c0_;
        ++quad_;
      }
    }
  }

 private:
  int64_t cols_, c0_, c1_;
  const uint8_t* rows_[kRows] = {};
  uint8_t* dst_ = nullptr;
  int quad_ = kRows / 4;  // done
  int64_t c_ = 0, per_step_ = 0;
};

// C tile I (tmm4 + I): zero, load, store (16 rows x tile_tokens f32, `stride` bytes apart) and
// one chunk's products with the A tiles (tmm0: hi, tmm1: lo) and B tiles (tmm2: xh, tmm3: xl).
// The tile numbers are part of the instructions, hence one specialization per tile.
template <int I>
struct CTile;
#define MAAS_C_TILE(I, TMM)                                                                 \
  template <>                                                                               \
  struct CTile<I> {                                                                         \
    static void zero() { _tile_zero(TMM); }                                                 \
    static void load(const float* p, long stride) { MAAS_TILE_LOAD(TMM, p, stride, 1024); } \
    static void store(float* p, long stride) { MAAS_TILE_STORE(TMM, p, stride, 1024); }     \
    static void hi_products() {                                                             \
      _tile_dpbf16ps(TMM, 0, 2);                                                            \
      _tile_dpbf16ps(TMM, 0, 3);                                                            \
    }                                                                                       \
    static void lo_products() {                                                             \
      _tile_dpbf16ps(TMM, 1, 2);                                                            \
      _tile_dpbf16ps(TMM, 1, 3);                                                            \
    }                                                                                       \
  };
MAAS_C_TILE(0, 4)
MAAS_C_TILE(1, 5)
MAAS_C_TILE(2, 6)
MAAS_C_TILE(3, 7)
#undef MAAS_C_TILE

// One chunk's products for token tile I: C += hi.xh, hi.xl (, lo.xh, lo.xl).
template <int I, int kParts>
inline void chunk_products(const uint8_t* bh, const uint8_t* bl, long stride) {
  MAAS_TILE_LOAD(2, bh, stride, 1024);
  MAAS_TILE_LOAD(3, bl, stride, 1024);
  CTile<I>::hi_products();
  if constexpr (kParts == 2) CTile<I>::lo_products();
}

struct GroupArgs {
  const Shape* s;
  const uint8_t* a;  // the panel's unpacked chunks [c0, c1)
  const uint8_t* b;
  int64_t c0, c1;
  int64_t tile0;  // first token tile of the group
  float* acc;     // the group's kGroupTiles accumulators (16 x tile_tokens each), or null
  bool first_block, last_block;
  float* out;  // where the last block's sums go
};

template <int kTiles, int kParts>
void group_products(const GroupArgs& g, PanelUnpacker<kParts>& next) {
  const Shape& s = *g.s;
  const long stride = static_cast<long>(s.tile_tokens) * 4;
  const size_t c_floats = static_cast<size_t>(kRows) * s.tile_tokens;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    if (g.first_block) {
      (CTile<I>::zero(), ...);
    } else {
      (CTile<I>::load(g.acc + I * c_floats, stride), ...);
    }
    for (int64_t c = g.c0; c < g.c1; ++c) {
      next.step();
      const uint8_t* a = g.a + (c - g.c0) * kParts * kATileBytes;
      MAAS_TILE_LOAD(0, a, 64, kATileBytes);
      if constexpr (kParts == 2) {
        MAAS_TILE_LOAD(1, a + kATileBytes, 64, kATileBytes);
      }
      (chunk_products<I, kParts>(g.b + s.b_offset(g.tile0 + I, c, 0),
                                 g.b + s.b_offset(g.tile0 + I, c, 1), stride),
       ...);
    }
    float* dst = g.last_block ? g.out : g.acc;
    (CTile<I>::store(dst + I * c_floats, stride), ...);
  }
  (std::make_integer_sequence<int, kTiles>{});
}

template <int kParts>
void run_group(int tiles, const GroupArgs& g, PanelUnpacker<kParts>& next) {
  switch (tiles) {
    case 1:
      return group_products<1, kParts>(g, next);
    case 2:
      return group_products<2, kParts>(g, next);
    case 3:
      return group_products<3, kParts>(g, next);
    default:
      return group_products<4, kParts>(g, next);
  }
}

template <int kParts>
void gemm_amx_float(const GemmArgs& g) {
  Shape s;
  s.cols = g.cols;
  s.n_chunks = (g.cols + kChunk - 1) / kChunk;
  s.n_tokens = g.n_tokens;
  s.tile_tokens = static_cast<int>(std::min<int64_t>(g.n_tokens, kTileTokens));
  s.n_tiles = (g.n_tokens + s.tile_tokens - 1) / s.tile_tokens;
  const size_t b_bytes = s.b_offset(s.n_tiles, 0, 0);
  auto* b = static_cast<uint8_t*>(thread_scratch(kScratchActFloats, b_bytes));
  prepare_b(g.x, s, b);
  const int64_t n_panels = (g.row_end - g.row_begin + kRows - 1) / kRows;
  const int64_t last_row = g.row_end - 1;
  const auto panel_rows = [&](int64_t p, const uint8_t** rows) {
    const int64_t r0 = g.row_begin + p * kRows;
    for (int r = 0; r < kRows; ++r) {
      rows[r] = g.w + static_cast<size_t>(std::min(r0 + r, last_row)) * g.row_bytes;
    }
  };
  const size_t chunk_act_bytes = static_cast<size_t>(s.n_tiles) * 2 * s.b_part_bytes();
  const int64_t block_chunks =
      std::clamp<int64_t>(static_cast<int64_t>(kBlockActBytes / chunk_act_bytes), 1, s.n_chunks);
  const int64_t n_token_groups = (s.n_tiles + kGroupTiles - 1) / kGroupTiles;
  const size_t c_floats = static_cast<size_t>(kRows) * s.tile_tokens;
  const size_t panel_acc = static_cast<size_t>(s.n_tiles) * c_floats;
  const bool blocked = block_chunks < s.n_chunks;
  const size_t panel_bytes = static_cast<size_t>(block_chunks) * kParts * kATileBytes;
  auto* panels = static_cast<uint8_t*>(thread_scratch(kScratchPanel, 2 * panel_bytes));
  auto* acc = static_cast<float*>(thread_scratch(
      kScratchAccumulators,
      sizeof(float) * ((blocked ? n_panels * panel_acc : 0) + kGroupTiles * c_floats)));
  float* out = acc + (blocked ? n_panels * panel_acc : 0);

  amx::TileConfig config;
  for (int t = 0; t < 8; ++t) config.rows[t] = kRows;
  config.colsb[0] = config.colsb[1] = 64;
  for (int t = 2; t < 8; ++t) config.colsb[t] = static_cast<uint16_t>(s.tile_tokens * 4);
  _tile_loadconfig(&config);

  for (int64_t c0 = 0; c0 < s.n_chunks; c0 += block_chunks) {
    const int64_t c1 = std::min(s.n_chunks, c0 + block_chunks);
    const int64_t steps = n_token_groups * (c1 - c0);  // tile steps per panel
    PanelUnpacker<kParts> next(g.cols, c0, c1);
    const uint8_t* rows[kRows];
    panel_rows(0, rows);
    next.start(rows, panels, steps);
    next.finish();
    for (int64_t p = 0; p < n_panels; ++p) {
      const uint8_t* a = panels + (p % 2) * panel_bytes;
      if (p + 1 < n_panels) {
        panel_rows(p + 1, rows);
        next.start(rows, panels + ((p + 1) % 2) * panel_bytes, steps);
      }
      const int64_t r0 = g.row_begin + p * kRows;
      for (int64_t t0 = 0; t0 < s.n_tiles; t0 += kGroupTiles) {
        const int n_tiles = static_cast<int>(std::min<int64_t>(kGroupTiles, s.n_tiles - t0));
        float* group_acc = blocked ? acc + p * panel_acc + t0 * c_floats : nullptr;
        const GroupArgs ga{&s, a, b, c0, c1, t0, group_acc, c0 == 0, c1 == s.n_chunks, out};
        run_group<kParts>(n_tiles, ga, next);
        if (!ga.last_block) continue;
        const int n_rows = static_cast<int>(std::min<int64_t>(kRows, g.row_end - r0));
        for (int i = 0; i < n_tiles; ++i) {
          const float* o = out + i * c_floats;
          const int64_t first = (t0 + i) * s.tile_tokens;
          const int64_t n = std::min<int64_t>(s.tile_tokens, g.n_tokens - first);
          for (int64_t t = 0; t < n; ++t) {
            float* y = g.y + (first + t) * g.ldy + r0;
            for (int r = 0; r < n_rows; ++r) y[r] = o[r * s.tile_tokens + t];
          }
        }
      }
      next.finish();
    }
  }
  _tile_release();
  amx::count_product();
}

void gemm_amx_f16(const GemmArgs& g) { gemm_amx_float<2>(g); }
void gemm_amx_bf16(const GemmArgs& g) { gemm_amx_float<1>(g); }

}  // namespace

MAAS_AMX_END

void fill_amx_float_kernels(KernelTable* table) {
  const auto install = [&](Slot slot, GemmFn fn) {
    table->prompt[static_cast<int>(slot)] = TypeKernel{fn, ActFormat{}, kRows};
  };
  install(Slot::F16, gemm_amx_f16);
  install(Slot::BF16, gemm_amx_bf16);
}

#else  // not x86-64

void fill_amx_float_kernels(KernelTable*) {}

#endif

}  // namespace maas::tensor::kernels
