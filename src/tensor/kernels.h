// Matrix-product kernels behind tensor::matmul, one set per CPU target, chosen at run time.
//
// The value of y[t][r] is defined by one reduction order per weight type, the same on every
// target, so a result is bit-identical whatever the CPU target, the number of tokens, the token
// tiling and the thread count (batch invariance; kernels_scalar.cpp is the plain statement of it).
// The one exception: KernelTable::prompt, kernels for prompt tokens with their own order (the
// amx target's F16/BF16 tile kernels), batch-invariant among themselves:
//
// - F32, F16, BF16: the weights widened exactly to f32 and the activations as given, summed in
//   16 chains: column k feeds s[k % 16] = fma(w[k], x[k], s[k % 16]) in increasing k, from
//   s = +0 (columns past `cols` do nothing), then the fixed pairwise tree s[j] += s[j + 8] for
//   j < 8, then s[j] += s[j + 4] for j < 4, += 2, += 1: y = s[0]. Decoding keeps a row's 16
//   chains in the lanes of a vector (contiguous loads of each weight row, 16 independent chains
//   to hide latency with); batches run chain by chain with rows in lanes (kernels_float.cpp).
// - Quantized weights: each token's activations are quantized to int8 on the fly, with one
//   scale per 32 elements for the 32-element block types and one per 256 for the k-quants
//   (da = amax / 127, q = round-to-nearest-even(x / da) in [-127, 127]). Each weight block b
//   then gives exact integers (the dot products of the weight quants with the activation quants,
//   weighted by the block's integer sub-scales), and the row's float sum runs over blocks in
//   order: acc = fma(float(I_b), d_b * da_b, acc), plus a second such step for the types with a
//   minimum (see kernels_scalar.cpp for each type's I_b and scale).
//
// For quantized weights, vector targets put 8 or 16 rows side by side in the lanes of a vector
// ("panels" of rows transposed on the fly), so that every lane repeats the scalar sequence above
// for its row, and broadcast each token's activations to all lanes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gguf/tensor_type.h"

namespace maas::tensor::kernels {

// Weight types with a kernel, in the order of KernelTable::types.
enum class Slot : int {
  F32,
  F16,
  BF16,
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  Q8_0_Panels,  // Q8_0 in WeightLayout::kPanels16 (ops.h)
  kCount
};
inline constexpr int kSlotCount = static_cast<int>(Slot::kCount);

// The slot of a weight type, or -1 when there is no kernel for it.
int slot_of(gguf::TensorType t);

// How a kernel wants its activations. block == 0: as f32, in place (tile == 1) or copied into the
// interleaved layout below (tile > 1). Otherwise quantized to int8 with one scale per `block`
// elements (32 or 256), partial sums of the quants over every `sub` elements (16 or 32), and
// init[s] = -bias * sum[s] precomputed for kernels that work on quants offset by `bias` (so that
// they are unsigned). `tile` tokens are interleaved in memory (see Activations) so that a kernel
// reaches a whole token tile from one pointer.
struct ActFormat {
  int block = 0;
  int sub = 0;
  int bias = 0;
  int tile = 1;
};

// Activations of n tokens as a kernel reads them. Tokens come in tiles of `tile` (the last one
// padded); within a tile, each float, each group of 4 quants, each scale, init and pair of
// partial sums is stored for every token of the tile in turn. With tile == 1 this is simply
// [token][element].
struct Activations {
  float* x = nullptr;  // f32 activations (block == 0, tile > 1)
  int8_t* q = nullptr;
  float* d = nullptr;
  int16_t* sums = nullptr;
  int32_t* init = nullptr;
  int64_t cols = 0;
  int64_t n_blocks = 0;  // scales per token: cols / block
  int64_t n_sums = 0;    // partial sums per token: cols / sub
  int tile = 1;

  int64_t n_pairs() const { return (n_sums + 1) / 2; }
  // Tokens rounded up to whole tiles: what the buffers must hold.
  int64_t padded_tokens(int64_t n_tokens) const { return (n_tokens + tile - 1) / tile * tile; }
  size_t x_index(int64_t t, int64_t i) const {
    return static_cast<size_t>(((t / tile) * cols + i) * tile + t % tile);
  }
  size_t q_index(int64_t t, int64_t i) const {
    return static_cast<size_t>((((t / tile) * (cols / 4) + i / 4) * tile + t % tile) * 4 + i % 4);
  }
  size_t d_index(int64_t t, int64_t b) const {
    return static_cast<size_t>(((t / tile) * n_blocks + b) * tile + t % tile);
  }
  size_t init_index(int64_t t, int64_t s) const {
    return static_cast<size_t>(((t / tile) * n_sums + s) * tile + t % tile);
  }
  // Partial sums are kept in pairs (2p, 2p + 1) so that a 32-bit load reads both.
  size_t sum_index(int64_t t, int64_t s) const {
    return static_cast<size_t>((((t / tile) * n_pairs() + s / 2) * tile + t % tile) * 2 + s % 2);
  }
};

// One call computes y[t * ldy + r] for r in [row_begin, row_end) and t < n_tokens.
struct GemmArgs {
  const uint8_t* w = nullptr;  // row r starts at w + r * row_bytes
  size_t row_bytes = 0;
  int64_t cols = 0;
  int64_t row_begin = 0;
  int64_t row_end = 0;
  const float* x = nullptr;          // the caller's f32 activations [t * cols + i]
  const Activations* act = nullptr;  // activations in the kernel's ActFormat (unless block and
                                     // tile are 0 and 1: then x is read directly)
  int64_t n_tokens = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  // Slot::Q8_0_Panels: rows [0, packed_rows) are in 16-row panels (WeightLayout::kPanels16; panel
  // p at w + 16 * p * row_bytes), the rest in the row layout. row_begin is a multiple of 16.
  int64_t packed_rows = 0;
};

using GemmFn = void (*)(const GemmArgs&);
// Converts tokens [t_begin, t_end) of x ([t * cols + i]) into out according to format.
using PrepareActsFn = void (*)(const float* x, int64_t cols, int64_t t_begin, int64_t t_end,
                               const ActFormat& format, const Activations& out);

struct TypeKernel {
  GemmFn gemm = nullptr;
  ActFormat act;
  int row_unit = 1;  // rows processed together: thread shares are multiples of it
};

struct KernelTable {
  std::string name;  // "amx", "avx3_dl", "avx3", "avx2_vnni", "avx2", "scalar"
  TypeKernel types[kSlotCount];
  // Products of fewer than few_tokens_below tokens use few_tokens instead (the amx table: the
  // avx3_dl kernels with their compact activation layout, which decodes faster).
  int64_t few_tokens_below = 0;
  TypeKernel few_tokens[kSlotCount];
  // Kernels for prompt tokens (TokenKind::kPrompt in ops.h) that sum in another order than the
  // one above, where set (gemm != nullptr); the amx table's F16 and BF16 tile kernels.
  TypeKernel prompt[kSlotCount];
  PrepareActsFn prepare_acts = nullptr;
  int64_t hwy_target = 0;  // the Highway target whose code filled the table (0: scalar only)
};

// The scalar table (also used for rows too long for the vector kernels' 32-bit offsets).
const KernelTable& scalar_table();

// Rows longer than this go to the scalar kernels (panel offsets are 32-bit).
inline constexpr size_t kMaxVectorRowBytes = size_t{1} << 26;

// Per-thread, grow-only, 64-byte-aligned scratch memory; contents are unspecified on return.
enum ScratchId : int {
  kScratchAccumulators,
  kScratchPanel,
  kScratchActFloats,
  kScratchActQuants,
  kScratchActScales,
  kScratchActSums,
  kScratchActInit,
  kScratchCount
};
void* thread_scratch(ScratchId id, size_t bytes);

// The table in use: the best target of this CPU, unless the environment variable
// MAAS_KERNEL_TARGET names another available one at start-up, or force_target() chose one.
const KernelTable& active();
std::string active_target_name();
// Targets this CPU can run, best first; "scalar" is always last.
std::vector<std::string> available_targets();
// Highway's names of the targets it finds supported here.
std::vector<std::string> highway_targets();
// Uses the named target from now on ("" or "auto": the best one). Throws std::invalid_argument
// for a target this build or CPU cannot run. Products already running finish on the old target.
void force_target(const std::string& name);

// Scalar tables and pieces shared with the vector targets (kernels_scalar.cpp).
namespace scalar {
void fill_table(KernelTable* table);
void prepare_acts(const float* x, int64_t cols, int64_t t_begin, int64_t t_end,
                  const ActFormat& format, const Activations& out);
// Rows [begin, end) of a Slot::Q8_0_Panels product (either part of the matrix), one row and
// token at a time, from quantized activations in any tile layout: the reference, and the vector
// kernels' path for the rows after the last whole panel.
void q8_0_panel_rows(const GemmArgs& a, int64_t begin, int64_t end);
}  // namespace scalar

// Per-target table fillers of the Highway translation units. They fill the slots their unit
// implements for the target Highway currently dispatches to; `avx_vnni` selects the AVX-VNNI
// variant of the AVX2 target.
void fill_quant32_kernels(KernelTable* table, bool avx_vnni);
void fill_kquant_kernels(KernelTable* table, bool avx_vnni);
void fill_float_kernels(KernelTable* table);
// AMX-INT8 (kernels_amx.cpp): whether the CPU has it and the OS granted this process the tile
// state; fill_amx_kernels puts the tile kernels (activations in tiles of 16 tokens) in place of
// the types it implements in a copy of the avx3_dl table, whose own kernels stay in few_tokens.
// amx_product_count() counts the products that ran on the tile unit (for tests that must know
// the AMX path was taken).
bool amx_usable();
void fill_amx_kernels(KernelTable* table);
uint64_t amx_product_count();
// AMX-BF16 (kernels_amx_float.cpp): F16 and BF16 weights on the tile unit, for prompt tokens
// (KernelTable::prompt). Not in the 16-chain order above: see that file.
void fill_amx_float_kernels(KernelTable* table);
// Tokens from which the AMX kernels use the tile unit.
int64_t amx_min_tokens();

}  // namespace maas::tensor::kernels
