// Matrix-product kernels behind tensor::matmul, one set per CPU target, chosen at run time.
//
// The value of y[t][r] is defined by one reduction order per weight type, the same on every
// target, so a result is bit-identical whatever the CPU target, the number of tokens, the token
// tiling and the thread count (batch invariance; kernels_scalar.cpp is the plain statement of it):
//
// - F32, F16, BF16: the weights widened exactly to f32 and the activations as given. Sixteen
//   running sums s[0..15]; element k goes to s[k % 16] by one fused multiply-add, in increasing
//   k, the last group padded with zeros; then s[l] += s[l + 8], s[l] += s[l + 4], s[l] += s[l + 2]
//   for the remaining l, and y = s[0] + s[1].
// - Quantized weights: each token's activations are quantized to int8 on the fly, with one
//   scale per 32 elements for the 32-element block types and one per 256 for the k-quants
//   (da = amax / 127, q = round-to-nearest-even(x / da) in [-127, 127]). Each weight block b
//   then gives exact integers (the dot products of the weight quants with the activation quants,
//   weighted by the block's integer sub-scales), and the row's float sum runs over blocks in
//   order: acc = fma(float(I_b), d_b * da_b, acc), plus a second such step for the types with a
//   minimum (see kernels_scalar.cpp for each type's I_b and scale).
//
// Vector targets put 8 or 16 rows side by side in the lanes of a vector ("panels" of rows
// transposed on the fly), so that every lane repeats the scalar sequence above for its row.
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
  kCount
};
inline constexpr int kSlotCount = static_cast<int>(Slot::kCount);

// The slot of a weight type, or -1 when there is no kernel for it.
int slot_of(gguf::TensorType t);

// How a kernel wants its activations. block == 0: as f32. Otherwise quantized to int8 with one
// scale per `block` elements (32 or 256), partial sums of the quants over every `sub` elements
// (16 or 32), and init[s] = -bias * sum[s] precomputed for kernels that work on quants offset by
// `bias` (so that they are unsigned).
struct ActFormat {
  int block = 0;
  int sub = 0;
  int bias = 0;
};

// n_tokens rows of `cols` activations quantized according to an ActFormat.
struct QuantizedActs {
  int8_t* q = nullptr;       // [t * cols + i]
  float* d = nullptr;        // [t * (cols / block) + b]
  int16_t* sums = nullptr;   // [t * (cols / sub) + s]
  int32_t* init = nullptr;   // [t * (cols / sub) + s]
  int64_t cols = 0;
};

// One call computes y[t * ldy + r] for r in [row_begin, row_end) and t < n_tokens.
struct GemmArgs {
  const uint8_t* w = nullptr;  // row r starts at w + r * row_bytes
  size_t row_bytes = 0;
  int64_t cols = 0;
  int64_t row_begin = 0;
  int64_t row_end = 0;
  const float* x = nullptr;            // f32 activations [t * cols + i], for block == 0
  const QuantizedActs* qa = nullptr;   // quantized activations, for block != 0
  int64_t n_tokens = 0;
  float* y = nullptr;
  int64_t ldy = 0;
};

using GemmFn = void (*)(const GemmArgs&);
// Quantizes tokens [t_begin, t_end) of x ([t * cols + i]) into out.
using QuantizeActsFn = void (*)(const float* x, int64_t cols, int64_t t_begin, int64_t t_end,
                                const ActFormat& format, const QuantizedActs& out);

struct TypeKernel {
  GemmFn gemm = nullptr;
  ActFormat act;
  int row_unit = 1;  // rows processed together: thread shares are multiples of it
};

struct KernelTable {
  std::string name;  // "avx3_dl", "avx3", "avx2_vnni", "avx2", "scalar"
  TypeKernel types[kSlotCount];
  QuantizeActsFn quantize_acts = nullptr;
};

// The table in use (the best target of this CPU unless one was forced).
const KernelTable& active();
std::string active_target_name();
// Targets this CPU can run, best first; "scalar" is always last.
std::vector<std::string> available_targets();
// Highway's names of the targets it finds supported here.
std::vector<std::string> highway_targets();
// Uses the named target from now on ("" or "auto": the best one). Throws std::invalid_argument
// for a target this build or CPU cannot run. Not thread-safe against concurrent matmuls.
void force_target(const std::string& name);

// Scalar tables and pieces shared with the vector targets (kernels_scalar.cpp).
namespace scalar {
void fill_table(KernelTable* table);
void quantize_acts(const float* x, int64_t cols, int64_t t_begin, int64_t t_end,
                   const ActFormat& format, const QuantizedActs& out);
}  // namespace scalar

// Per-target table fillers of the Highway translation units. They fill the slots their unit
// implements for the target Highway currently dispatches to; `avx_vnni` selects the AVX-VNNI
// variant of the AVX2 target.
void fill_quant32_kernels(KernelTable* table, bool avx_vnni);
void fill_kquant_kernels(KernelTable* table, bool avx_vnni);
void fill_float_kernels(KernelTable* table);

}  // namespace maas::tensor::kernels
