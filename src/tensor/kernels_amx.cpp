// AMX-INT8 matrix products for the 32-element block types (Q4_0, Q8_0), used for prefill and
// batches of at least kAmxMinTokens tokens on CPUs with AMX (Sapphire Rapids and later).
//
// The arithmetic is the one of kernels.h, so results stay bit-identical to every other target:
// the tile unit computes each weight block's exact integer dot products (int8 x int8 summed in
// int32: exact, a block's sum never exceeds 32 * 128 * 127), and the vector code then runs each
// row's float chain over the blocks in order, acc = fma(float(I_b), d_b * da_b, acc), with one
// lane per token.
//
// Per panel of 16 rows, the weights are unpacked once into int8 tiles (A: 16 rows x 32 quants
// per block) and reused for every tile of 16 tokens, whose activation quants are already in the
// layout the instruction wants (B: 8 rows of 4 quants x 16 tokens; see Activations with tile 16).
// Each block gives C = A x B (16 rows x 16 tokens of int32), stored to a small ring of buffers
// and scaled into 16 vectors of accumulators (one per row, one lane per token). The tile store
// is the slow step (it waits for the product), so the tile unit works a few blocks ahead of the
// vector code, alternating between two sets of tiles.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "tensor/amx_tiles.h"
#include "tensor/kernels.h"
#include "tensor/panels.h"

namespace maas::tensor::kernels {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

namespace {

// Below this many tokens matmul uses the AVX-512 kernels (KernelTable::few_tokens): as fast for
// small batches, faster for decode (their compact 8-token activation layout stays in L1). The
// tile kernels themselves take any number of tokens.
constexpr int64_t kAmxMinTokens = 16;
// Tokens of an activation tile (interleaved per group of 4 quants): one B tile.
constexpr int kTokens = 16;
constexpr int kRows = 16;   // rows per panel: one A tile
constexpr int kBlock = 32;  // elements per weight block: the K of one tile product
constexpr int kPrefetchBlocks = 4;
constexpr int kRing = 2;  // product buffers: the one being scaled, the one being stored

std::atomic<uint64_t> g_amx_products{0};

using amx::TileConfig;

// Two sets of tiles, for even and odd blocks: weights (A) 0 and 3, activations (B) 1 and 4,
// products (C) 2 and 5.
TileConfig make_config() {
  TileConfig c;
  for (int set = 0; set < 2; ++set) {
    c.rows[3 * set] = kRows;
    c.colsb[3 * set] = kBlock;
    c.rows[3 * set + 1] = kBlock / 4;
    c.colsb[3 * set + 1] = kTokens * 4;
    c.rows[3 * set + 2] = kRows;
    c.colsb[3 * set + 2] = kTokens * 4;
  }
  return c;
}

}  // namespace

// Everything below is compiled for AVX-512 + AMX and runs only after dispatch checked the CPU.
MAAS_AMX_BEGIN("avx512f,avx512bw,avx512dq,avx512vl,f16c,fma,amx-tile,amx-int8")

namespace {

// Unpackers: a panel's 16 rows (rows[r]; rows past the matrix repeat its last row), every block:
// the 32 signed weight integers of row r at a[(b * 16 + r) * 32] (the integers of the block's dot
// product in kernels_scalar.cpp) and the block's scale at dw[b * 16 + r].

// The 16 rows' fp16 scales at byte `off` of each row, widened exactly (like fp16_to_fp32).
inline void unpack_scales(const uint8_t* const* rows, size_t off, float* dw) {
  alignas(32) uint16_t h[kRows];
  for (int r = 0; r < kRows; ++r) std::memcpy(&h[r], rows[r] + off, sizeof h[r]);
  _mm512_storeu_ps(dw, _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(h))));
}

inline __m128i load_quants16(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

void unpack_q4_0(const uint8_t* const* rows, int64_t n_blocks, int8_t* a, float* dw) {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  const __m512i eight = _mm512_set1_epi8(8);
  // Four rows' low (elements 0-15) and high (16-31) nibbles, 16 bytes per row, interleaved
  // into the rows of the tile: [lo 0, hi 0, lo 1, hi 1] and [lo 2, hi 2, lo 3, hi 3].
  const __m512i first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const size_t off = static_cast<size_t>(b) * 18;
    unpack_scales(rows, off, dw + b * kRows);
    for (int r = 0; r < kRows; r += 4) {
      __m512i q = _mm512_castsi128_si512(load_quants16(rows[r] + off + 2));
      q = _mm512_inserti32x4(q, load_quants16(rows[r + 1] + off + 2), 1);
      q = _mm512_inserti32x4(q, load_quants16(rows[r + 2] + off + 2), 2);
      q = _mm512_inserti32x4(q, load_quants16(rows[r + 3] + off + 2), 3);
      const __m512i lo = _mm512_sub_epi8(_mm512_and_si512(q, mask), eight);
      const __m512i hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(q, 4), mask), eight);
      int8_t* dst = a + (b * kRows + r) * kBlock;
      _mm512_storeu_si512(dst, _mm512_permutex2var_epi64(lo, first, hi));
      _mm512_storeu_si512(dst + 64, _mm512_permutex2var_epi64(lo, second, hi));
    }
  }
}

void unpack_q8_0(const uint8_t* const* rows, int64_t n_blocks, int8_t* a, float* dw) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const size_t off = static_cast<size_t>(b) * 34;
    unpack_scales(rows, off, dw + b * kRows);
    for (int r = 0; r < kRows; ++r) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(a + (b * kRows + r) * kBlock),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + off + 2)));
    }
  }
}

using UnpackFn = void (*)(const uint8_t* const*, int64_t, int8_t*, float*);

// Block b's integer dot products for 16 rows and 16 tokens into tile set kSet's C tile.
template <int kSet>
inline void tile_product(const int8_t* a, const int8_t* q, int64_t b) {
  constexpr int64_t kQBytes = kTokens * kBlock;  // one block's quants of a token tile
  if constexpr (kSet == 0) {
    MAAS_TILE_LOAD(0, a + b * kRows * kBlock, kBlock, kRows * kBlock);
    MAAS_TILE_LOAD(1, q + b * kQBytes, kTokens * 4, kQBytes);
    _tile_zero(2);
    _tile_dpbssd(2, 0, 1);
  } else {
    MAAS_TILE_LOAD(3, a + b * kRows * kBlock, kBlock, kRows * kBlock);
    MAAS_TILE_LOAD(4, q + b * kQBytes, kTokens * 4, kQBytes);
    _tile_zero(5);
    _tile_dpbssd(5, 3, 4);
  }
}

// Stores tile set kSet's products ([row][token] int32) to c.
template <int kSet>
inline void store_product(int32_t* c) {
  constexpr int64_t kCBytes = kRows * kTokens * 4;
  if constexpr (kSet == 0) {
    MAAS_TILE_STORE(2, c, kTokens * 4, kCBytes);
  } else {
    MAAS_TILE_STORE(5, c, kTokens * 4, kCBytes);
  }
}

// Stores block b + 1's product (tile set (b + 1) % 2) to its buffer in the ring.
inline void store_next_product(int32_t* c_ring, int64_t b) {
  int32_t* next = c_ring + ((b + 1) % 2) * kRows * kTokens;
  if (b % 2 == 0) {
    store_product<1>(next);
  } else {
    store_product<0>(next);
  }
}

// The float step of one block for a stored product c (16 vectors of 16 int32): acc[i] =
// fma(float(c[i]), lanes * s[i], acc[i]), lanes holding one operand's scales per lane and s[i]
// the other's for vector i (the product of the two scales is the same either way round).
inline void scale_product(const int32_t* c, __m512 lanes, const float* s, __m512* acc) {
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) {
    const __m512 scale = _mm512_mul_ps(lanes, _mm512_set1_ps(s[i]));
    const __m512 dot = _mm512_cvtepi32_ps(_mm512_load_si512(c + i * 16));
    acc[i] = _mm512_fmadd_ps(dot, scale, acc[i]);
  }
}

// y for rows [r0, r0 + 16) of the panel in `a`/`dw` and tokens [t0, t0 + 16).
void product_group(const GemmArgs& g, const int8_t* a, const float* dw, int64_t r0, int n_rows,
                   int64_t t0, int32_t* c_ring, float* out_buf) {
  const Activations& act = *g.act;
  const int64_t n_blocks = act.n_blocks;
  const int n_tok = static_cast<int>(g.n_tokens - t0 < kTokens ? g.n_tokens - t0 : kTokens);
  const int8_t* q = act.q + act.q_index(t0, 0);
  const float* d = act.d + act.d_index(t0, 0);
  __m512 acc[kRows];
  for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
  // Block b + 1's product runs on the tile unit while the vector code scales block b's; its
  // store comes last, when the product is (nearly) done: a tile store waiting for its product
  // holds up everything behind it.
  tile_product<0>(a, q, 0);
  store_product<0>(c_ring);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const bool more = b + 1 < n_blocks;
    if (more) {
      if (b % 2 == 0) {
        tile_product<1>(a, q, b + 1);
      } else {
        tile_product<0>(a, q, b + 1);
      }
    }
    // The panel's weights and the token tile's quants come from L2: the tile loads do not start
    // the hardware's L1 prefetch, so it is done here, kPrefetchBlocks ahead.
    if (b + kPrefetchBlocks < n_blocks) {
      const int8_t* pa = a + (b + kPrefetchBlocks) * kRows * kBlock;
      const int8_t* pq = q + (b + kPrefetchBlocks) * kTokens * kBlock;
      for (int line = 0; line < kRows * kBlock; line += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(pa + line), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(pq + line), _MM_HINT_T0);
      }
    }
    scale_product(c_ring + (b % 2) * kRows * kTokens, _mm512_loadu_ps(d + b * kTokens),
                  dw + b * kRows, acc);
    if (more) store_next_product(c_ring, b);
  }
  for (int r = 0; r < kRows; ++r) _mm512_store_ps(out_buf + r * kTokens, acc[r]);
  for (int t = 0; t < n_tok; ++t) {
    float* y = g.y + (t0 + t) * g.ldy + r0;
    for (int r = 0; r < n_rows; ++r) y[r] = out_buf[r * kTokens + t];
  }
}

void gemm_amx(const GemmArgs& g, UnpackFn unpack) {
  const int64_t n_blocks = g.act->n_blocks;
  auto* a = static_cast<int8_t*>(
      thread_scratch(kScratchPanel, static_cast<size_t>(n_blocks) * kRows * kBlock));
  auto* dw = static_cast<float*>(thread_scratch(
      kScratchAccumulators,
      sizeof(float) * (static_cast<size_t>(n_blocks) * kRows + (1 + kRing) * kRows * kTokens)));
  float* out_buf = dw + n_blocks * kRows;  // 64-byte aligned: n_blocks * 16 floats before it
  auto* c_ring = reinterpret_cast<int32_t*>(out_buf + kRows * kTokens);
  static const TileConfig config = make_config();
  _tile_loadconfig(&config);
  const auto panel_rows = [&](int64_t r0, const uint8_t** rows) {
    const int64_t last = g.row_end - 1;
    for (int r = 0; r < kRows; ++r) {
      rows[r] = g.w + static_cast<size_t>(r0 + r <= last ? r0 + r : last) * g.row_bytes;
    }
  };
  for (int64_t r0 = g.row_begin; r0 < g.row_end; r0 += kRows) {
    const int n_rows = static_cast<int>(g.row_end - r0 < kRows ? g.row_end - r0 : kRows);
    const uint8_t* rows[kRows];
    panel_rows(r0, rows);
    unpack(rows, n_blocks, a, dw);
    for (int64_t t0 = 0; t0 < g.n_tokens; t0 += kTokens) {
      product_group(g, a, dw, r0, n_rows, t0, c_ring, out_buf);
    }
  }
  _tile_release();
  amx::count_product();
}

void gemm_amx_q4_0(const GemmArgs& g) { gemm_amx(g, unpack_q4_0); }
void gemm_amx_q8_0(const GemmArgs& g) { gemm_amx(g, unpack_q8_0); }

// Q8_0 in 16-row panels (WeightLayout::kPanels16). A block column's 8 groups of 64 bytes (quants
// 4g..4g+3 of the 16 rows) are exactly the tile unit's B operand for K = 32, so the weights load
// straight from the matrix with no unpacking; the activations are the A operand (16 tokens x 32
// quants), laid out once per call as [token tile][block][token][32]. C is then [token][row]:
// each token's accumulator vector holds the panel's 16 rows, and the float steps per lane are
// the scalar kernel's.
TileConfig make_panel_config() {
  TileConfig c;
  for (int set = 0; set < 2; ++set) {
    c.rows[3 * set] = kTokens;  // A: tokens x the block's 32 quants
    c.colsb[3 * set] = kBlock;
    c.rows[3 * set + 1] = kBlock / 4;  // B: groups of 4 quants x 16 rows
    c.colsb[3 * set + 1] = kRows * 4;
    c.rows[3 * set + 2] = kTokens;  // C: tokens x rows
    c.colsb[3 * set + 2] = kRows * 4;
  }
  return c;
}

using panels::kColumnBytes;
constexpr int64_t kATileBytes = kTokens * kBlock;

template <int kSet>
inline void panel_tile_product(const uint8_t* col, const int8_t* a) {
  if constexpr (kSet == 0) {
    MAAS_TILE_LOAD(0, a, kBlock, kATileBytes);
    MAAS_TILE_LOAD(1, col + panels::kQuantsOffset, panels::kGroupBytes, kRows * kBlock);
    _tile_zero(2);
    _tile_dpbssd(2, 0, 1);
  } else {
    MAAS_TILE_LOAD(3, a, kBlock, kATileBytes);
    MAAS_TILE_LOAD(4, col + panels::kQuantsOffset, panels::kGroupBytes, kRows * kBlock);
    _tile_zero(5);
    _tile_dpbssd(5, 3, 4);
  }
}

// y for the 16 rows of the panel at `panel` (rows r0..) and the n_tok tokens from t0, whose
// quants and scales are at a ([block][token][32]) and da ([block][token]).
void panel_group(const GemmArgs& g, const uint8_t* panel, int64_t r0, const int8_t* a,
                 const float* da, int64_t t0, int n_tok, int32_t* c_ring) {
  const int64_t n_blocks = g.cols / kBlock;
  __m512 acc[kTokens];
  for (int t = 0; t < kTokens; ++t) acc[t] = _mm512_setzero_ps();
  panel_tile_product<0>(panel, a);
  store_product<0>(c_ring);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const bool more = b + 1 < n_blocks;
    const uint8_t* col = panel + static_cast<size_t>(b) * kColumnBytes;
    if (more) {
      if (b % 2 == 0) {
        panel_tile_product<1>(col + kColumnBytes, a + (b + 1) * kATileBytes);
      } else {
        panel_tile_product<0>(col + kColumnBytes, a + (b + 1) * kATileBytes);
      }
    }
    // Tile loads do not start the hardware's L1 prefetch (see product_group).
    if (b + kPrefetchBlocks < n_blocks) {
      const uint8_t* pw = col + kPrefetchBlocks * kColumnBytes;
      const int8_t* pa = a + (b + kPrefetchBlocks) * kATileBytes;
      for (size_t line = 0; line < kColumnBytes; line += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(pw + line), _MM_HINT_T0);
      }
      for (int line = 0; line < kATileBytes; line += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(pa + line), _MM_HINT_T0);
      }
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col)));
    scale_product(c_ring + (b % 2) * kRows * kTokens, dw, da + b * kTokens, acc);
    if (more) store_next_product(c_ring, b);
  }
  for (int t = 0; t < n_tok; ++t) _mm512_storeu_ps(g.y + (t0 + t) * g.ldy + r0, acc[t]);
}

void gemm_amx_q8_0_panels(const GemmArgs& g) {
  const Activations& act = *g.act;
  const int64_t n_blocks = g.cols / kBlock;
  const int64_t n_tiles = (g.n_tokens + kTokens - 1) / kTokens;
  const size_t a_bytes = static_cast<size_t>(n_tiles * n_blocks * kATileBytes);
  auto* a = static_cast<int8_t*>(thread_scratch(
      kScratchPanel, a_bytes + sizeof(float) * static_cast<size_t>(n_tiles * n_blocks * kTokens)));
  auto* da = reinterpret_cast<float*>(a + a_bytes);  // a_bytes is a multiple of 64
  auto* c_ring = static_cast<int32_t*>(
      thread_scratch(kScratchAccumulators, sizeof(int32_t) * kRing * kRows * kTokens));
  const int64_t panels_end = std::min(g.row_end, g.packed_rows);
  const int64_t first =
      std::min((g.row_begin + kRows - 1) / kRows * kRows, std::max(panels_end, g.row_begin));
  if (first > g.row_begin) scalar::q8_0_panel_rows(g, g.row_begin, first);
  int64_t r0 = first;
  if (r0 + kRows <= panels_end) {
    // The activations as A tiles; tokens past the end are zeros (their results are dropped).
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      for (int64_t b = 0; b < n_blocks; ++b) {
        int8_t* dst = a + (tile * n_blocks + b) * kATileBytes;
        float* dst_d = da + (tile * n_blocks + b) * kTokens;
        for (int t = 0; t < kTokens; ++t) {
          const int64_t tok = tile * kTokens + t;
          if (tok < g.n_tokens) {
            std::memcpy(dst + t * kBlock, act.q + act.q_index(tok, b * kBlock), kBlock);
            dst_d[t] = act.d[act.d_index(tok, b)];
          } else {
            std::memset(dst + t * kBlock, 0, kBlock);
            dst_d[t] = 0.0f;
          }
        }
      }
    }
    static const TileConfig config = make_panel_config();
    _tile_loadconfig(&config);
    for (; r0 + kRows <= panels_end; r0 += kRows) {
      const uint8_t* panel = g.w + static_cast<size_t>(r0) * g.row_bytes;
      for (int64_t tile = 0; tile < n_tiles; ++tile) {
        const int n_tok = static_cast<int>(std::min<int64_t>(kTokens, g.n_tokens - tile * kTokens));
        panel_group(g, panel, r0, a + tile * n_blocks * kATileBytes, da + tile * n_blocks * kTokens,
                    tile * kTokens, n_tok, c_ring);
      }
    }
    _tile_release();
    amx::count_product();
  }
  if (g.row_end > r0) scalar::q8_0_panel_rows(g, r0, g.row_end);
}

}  // namespace

MAAS_AMX_END

bool amx_usable() {
  // Linux hands out the 8 KiB of tile state only to processes that ask (once, for all threads).
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  static const bool granted = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return granted;
}

void fill_amx_kernels(KernelTable* table) {
  // Activation quants in tiles of 16 tokens, the B tile's layout (the tile kernels multiply
  // signed quants directly: no offset, so no bias).
  const auto install = [&](Slot slot, GemmFn fn) {
    table->types[static_cast<int>(slot)] = TypeKernel{fn, ActFormat{32, 32, 0, kTokens}, kRows};
  };
  install(Slot::Q4_0, gemm_amx_q4_0);
  install(Slot::Q8_0, gemm_amx_q8_0);
  // Activations in the plain layout (one token after another), copied into A tiles per call.
  table->types[static_cast<int>(Slot::Q8_0_Panels)] =
      TypeKernel{gemm_amx_q8_0_panels, ActFormat{32, 32, 0, 1}, kRows};
}

namespace amx {
void count_product() { g_amx_products.fetch_add(1, std::memory_order_relaxed); }
}  // namespace amx

uint64_t amx_product_count() { return g_amx_products.load(std::memory_order_relaxed); }

int64_t amx_min_tokens() { return kAmxMinTokens; }

#else  // not x86-64

bool amx_usable() { return false; }
void fill_amx_kernels(KernelTable*) {}
uint64_t amx_product_count() { return 0; }
int64_t amx_min_tokens() { return 0; }

#endif

}  // namespace maas::tensor::kernels
