// Reference CPU operators of the forward pass. Each row's reduction runs in a fixed order that
// does not depend on how many tokens are processed together, so a token's result is the same
// whether it is evaluated alone or in a batch (batch invariance).
#pragma once

#include <cstddef>
#include <cstdint>

#include "gguf/tensor_type.h"

namespace maas::tensor {

class ThreadPool;

// How a matrix's bytes are arranged. kRows: as in a GGUF file, row r at data + r * row_bytes.
// kPanels16 (Q8_0 only, see pack_panels): the same bytes permuted so that each group of 16 rows
// is one contiguous panel with the 16 rows' quants side by side, the layout the vector kernels
// read without transposing; rows past the last whole panel stay as in kRows.
enum class WeightLayout { kRows, kPanels16 };

// A matrix of `rows` rows with `cols` elements each, stored in a GGUF weight type.
struct MatrixView {
  gguf::TensorType type = gguf::TensorType::F32;
  const uint8_t* data = nullptr;
  int64_t cols = 0;
  int64_t rows = 0;
  size_t row_bytes = 0;
  WeightLayout layout = WeightLayout::kRows;
};

// Rows per panel of WeightLayout::kPanels16.
inline constexpr int64_t kPanelRows = 16;

// Whether pack_panels applies to w (a kRows Q8_0 matrix with unpadded rows and at least one
// whole panel).
bool can_pack_panels(const MatrixView& w);
// Rearranges w's bytes in place (data must be w.data, writable) into WeightLayout::kPanels16 and
// sets w->layout; does nothing unless can_pack_panels(*w). Panel p (rows 16p..16p+15) takes the
// bytes rows 16p..16p+15 had, as n = cols / 32 block columns of 544 bytes: block column b holds
// the 16 rows' fp16 scales of block b (row i at byte 2i), then 8 groups of 64 bytes, group g
// holding quants 4g..4g+3 of block b of row i at bytes 32 + 64g + 4i (a pure permutation: the
// products are bit-identical to the row layout's). Runs on the pool's threads (may be null).
void pack_panels(MatrixView* w, uint8_t* data, ThreadPool* pool);

// What the tokens of a product are. Prompt tokens (prefill) may get kernels that are much faster
// for many tokens but sum in another order (on CPUs with AMX, F16 and BF16 weights go to the
// bf16 tile unit); generated tokens, one per sequence and step, always get the kernels of
// kernels.h. Each kind's results are bit-identical for any n_tokens and thread count, so a
// token's result does not depend on its batch as long as its kind does not: the forward pass
// computes a prompt's tokens as kPrompt and generated tokens as kGenerated, always.
enum class TokenKind { kGenerated, kPrompt };

// y[t][r] = sum_c w[r][c] * x[t][c] for t < n_tokens. x is [n_tokens][cols], y [n_tokens][rows].
// Rows are split across the pool's threads (pool may be null: run on the caller; small products
// always do). For quantized weights the activations are first quantized to int8 (one scale per 32
// or 256 elements), as llama.cpp does; float weights use the activations as given. Results are
// bit-identical for any n_tokens, thread count and (for kGenerated, and kPrompt unless
// prompt_kernels_differ) CPU target (see kernels.h). Throws std::invalid_argument for a type
// without kernel or inconsistent sizes.
void matmul(const MatrixView& w, const float* x, int64_t n_tokens, float* y, ThreadPool* pool,
            TokenKind kind = TokenKind::kGenerated);

// Whether kPrompt products of this weight type use other kernels than kGenerated ones on the
// CPU target in use (and so give slightly different sums).
bool prompt_kernels_differ(gguf::TensorType type);
// The same for a matrix, whose layout picks its kernels too.
bool prompt_kernels_differ(const MatrixView& w);

// Dequantizes row r of w (either layout) into out (w.cols floats).
void get_row(const MatrixView& w, int64_t r, float* out);

// out = x / sqrt(mean(x^2) + eps) * weight, over n elements (weight may be null: no scaling).
void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out);

// In-place softmax over n elements.
void softmax(float* x, int64_t n);

inline float silu(float x) { return x / (1.0f + __builtin_expf(-x)); }

float dot(const float* a, const float* b, int64_t n);

}  // namespace maas::tensor
