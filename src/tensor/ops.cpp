#include "tensor/ops.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/kernels.h"
#include "tensor/quant.h"
#include "tensor/thread_pool.h"

namespace maas::tensor {

float dot(const float* a, const float* b, int64_t n) {
  // Eight independent partial sums in a fixed order: vectorizable, and the same for every caller.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

namespace {

// Below this many multiply-adds a product runs on the calling thread alone: waking the pool would
// cost more than it saves. Results do not depend on it (see kernels.h).
constexpr double kParallelMinWork = 1 << 17;

std::string type_label(gguf::TensorType t) {
  return std::string(gguf::type_name(t)) + " (id " + std::to_string(static_cast<uint32_t>(t)) + ")";
}

void check_matrix(const MatrixView& w, const float* x, int64_t n_tokens, const float* y) {
  if (n_tokens < 0 || w.rows < 0 || w.cols < 0) {
    throw std::invalid_argument("matmul: negative size");
  }
  const gguf::TypeTraits* traits = gguf::type_traits(w.type);
  if (traits == nullptr || kernels::slot_of(w.type) < 0) {
    throw std::invalid_argument("matmul: no kernel for weight type " + type_label(w.type));
  }
  if (w.cols % traits->block_size != 0) {
    throw std::invalid_argument("matmul: " + std::to_string(w.cols) + " columns of " +
                                type_label(w.type) + " is not a whole number of blocks");
  }
  const std::optional<uint64_t> bytes = gguf::bytes_for(w.type, static_cast<uint64_t>(w.cols));
  if (!bytes || w.row_bytes < *bytes) {
    throw std::invalid_argument("matmul: row stride " + std::to_string(w.row_bytes) +
                                " is smaller than a row of " + std::to_string(w.cols) + " " +
                                type_label(w.type));
  }
  if (w.layout == WeightLayout::kPanels16 &&
      (w.type != gguf::TensorType::Q8_0 || w.row_bytes != *bytes)) {
    throw std::invalid_argument("matmul: the panel layout needs Q8_0 rows without padding, not " +
                                type_label(w.type));
  }
  if (n_tokens > 0 && w.rows > 0 && (x == nullptr || y == nullptr || w.data == nullptr)) {
    throw std::invalid_argument("matmul: null buffer");
  }
  // Scratch sizes derive from these products: keep them far from overflowing size_t.
  const double elements = static_cast<double>(n_tokens + 64) * static_cast<double>(w.cols);
  if (elements > 0x1p46 || static_cast<double>(n_tokens) * static_cast<double>(w.rows) > 0x1p46) {
    throw std::invalid_argument("matmul: " + std::to_string(n_tokens) + " tokens of " +
                                std::to_string(w.cols) + " x " + std::to_string(w.rows) +
                                " is too large");
  }
}

int slot_of(const MatrixView& w) {
  return w.layout == WeightLayout::kPanels16 ? static_cast<int>(kernels::Slot::Q8_0_Panels)
                                             : kernels::slot_of(w.type);
}

}  // namespace

bool prompt_kernels_differ(const MatrixView& w) {
  const int slot = slot_of(w);
  return slot >= 0 && kernels::active().prompt[slot].gemm != nullptr;
}

bool prompt_kernels_differ(gguf::TensorType type) {
  MatrixView w;
  w.type = type;
  return prompt_kernels_differ(w);
}

void matmul(const MatrixView& w, const float* x, int64_t n_tokens, float* y, ThreadPool* pool,
            TokenKind kind) {
  check_matrix(w, x, n_tokens, y);
  if (n_tokens == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    std::fill(y, y + n_tokens * w.rows, 0.0f);
    return;
  }
  const kernels::KernelTable& table =
      w.row_bytes <= kernels::kMaxVectorRowBytes ? kernels::active() : kernels::scalar_table();
  const int slot = slot_of(w);
  const kernels::TypeKernel& kernel =
      kind == TokenKind::kPrompt && table.prompt[slot].gemm != nullptr ? table.prompt[slot]
      : n_tokens < table.few_tokens_below                              ? table.few_tokens[slot]
                                                                       : table.types[slot];
  const double work =
      static_cast<double>(w.rows) * static_cast<double>(w.cols) * static_cast<double>(n_tokens);
  const bool parallel = pool != nullptr && pool->size() > 1 && work >= kParallelMinWork;

  kernels::GemmArgs args;
  args.w = w.data;
  args.row_bytes = w.row_bytes;
  args.cols = w.cols;
  args.n_tokens = n_tokens;
  args.y = y;
  args.ldy = w.rows;
  args.x = x;
  if (w.layout == WeightLayout::kPanels16) args.packed_rows = w.rows / kPanelRows * kPanelRows;

  // Prepared activations live in the caller's scratch and are read by every worker.
  kernels::Activations act;
  const kernels::ActFormat& format = kernel.act;
  if (format.block != 0 || format.tile > 1) {
    act.cols = w.cols;
    act.tile = format.tile;
    const size_t n = static_cast<size_t>(act.padded_tokens(n_tokens));
    const size_t cols = static_cast<size_t>(w.cols);
    if (format.block == 0) {
      act.x = static_cast<float*>(
          kernels::thread_scratch(kernels::kScratchActFloats, sizeof(float) * n * cols));
    } else {
      act.n_blocks = w.cols / format.block;
      act.n_sums = w.cols / format.sub;
      act.q = static_cast<int8_t*>(kernels::thread_scratch(kernels::kScratchActQuants, n * cols));
      act.d = static_cast<float*>(kernels::thread_scratch(
          kernels::kScratchActScales, sizeof(float) * n * static_cast<size_t>(act.n_blocks)));
      act.sums = static_cast<int16_t*>(kernels::thread_scratch(
          kernels::kScratchActSums, 2 * sizeof(int16_t) * n * static_cast<size_t>(act.n_pairs())));
      act.init = static_cast<int32_t*>(kernels::thread_scratch(
          kernels::kScratchActInit, sizeof(int32_t) * n * static_cast<size_t>(act.n_sums)));
    }
    auto prepare = [&](int64_t begin, int64_t end) {
      table.prepare_acts(x, w.cols, begin, end, format, act);
    };
    if (parallel && n_tokens > 1) {
      pool->parallel_for(n_tokens, prepare);
    } else {
      prepare(0, n_tokens);
    }
    args.act = &act;
  }

  // Rows go to threads in whole units of the kernel's panel height.
  const int64_t unit = kernel.row_unit;
  const int64_t units = (w.rows + unit - 1) / unit;
  auto rows_job = [&](int64_t begin, int64_t end) {
    kernels::GemmArgs a = args;
    a.row_begin = begin * unit;
    a.row_end = std::min(w.rows, end * unit);
    if (a.row_begin < a.row_end) kernel.gemm(a);
  };
  if (parallel && units > 1) {
    pool->parallel_for(units, rows_job);
  } else {
    rows_job(0, units);
  }
}

void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  float ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * (weight ? weight[i] : 1.0f);
}

void softmax(float* x, int64_t n) {
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, x[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  for (int64_t i = 0; i < n; ++i) x[i] /= sum;
}

}  // namespace maas::tensor
