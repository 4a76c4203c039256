#include "tensor/ops.h"

#include <cmath>
#include <vector>

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

void get_row(const MatrixView& w, int64_t r, float* out) {
  dequantize_row(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, out, w.cols);
}

void matmul(const MatrixView& w, const float* x, int64_t n_tokens, float* y, ThreadPool* pool) {
  auto rows_job = [&](int64_t begin, int64_t end) {
    std::vector<float> row(w.type == gguf::TensorType::F32 ? 0 : static_cast<size_t>(w.cols));
    for (int64_t r = begin; r < end; ++r) {
      const float* wr;
      if (w.type == gguf::TensorType::F32) {
        wr = reinterpret_cast<const float*>(w.data + static_cast<size_t>(r) * w.row_bytes);
      } else {
        get_row(w, r, row.data());
        wr = row.data();
      }
      for (int64_t t = 0; t < n_tokens; ++t) y[t * w.rows + r] = dot(wr, x + t * w.cols, w.cols);
    }
  };
  if (pool != nullptr) {
    pool->parallel_for(w.rows, rows_job);
  } else {
    rows_job(0, w.rows);
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
