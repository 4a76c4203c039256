// Shared by the matmul tests: random weight matrices of every type, activations with outliers,
// and float64 references of their products (see kernel_matmul_test.cpp for what each bounds).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gguf/tensor_type.h"
#include "tensor/ops.h"
#include "tensor/quant.h"

namespace maas::tensor::test {

using gguf::TensorType;
using tensor::TokenKind;

inline const TensorType kAllTypes[] = {
    TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q4_0, TensorType::Q4_1,
    TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0, TensorType::Q2_K, TensorType::Q3_K,
    TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

inline std::string name(TensorType t) { return std::string(gguf::type_name(t)); }

inline bool is_float(TensorType t) {
  return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16;
}
inline bool is_kquant(TensorType t) {
  return t == TensorType::Q2_K || t == TensorType::Q3_K || t == TensorType::Q4_K ||
         t == TensorType::Q5_K || t == TensorType::Q6_K;
}
inline int64_t block_size(TensorType t) { return gguf::type_traits(t)->block_size; }

// Offsets of the fp16 scale fields in a block (from the ggml block layouts).
inline std::vector<int> half_fields(TensorType t) {
  switch (t) {
    case TensorType::Q4_0:
    case TensorType::Q5_0:
    case TensorType::Q8_0:
      return {0};
    case TensorType::Q4_1:
    case TensorType::Q5_1:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
      return {0, 2};
    case TensorType::Q2_K:
      return {80, 82};
    case TensorType::Q3_K:
      return {108};
    case TensorType::Q6_K:
      return {208};
    default:
      return {};
  }
}

// A weight matrix with its rows `row_bytes` apart (row_bytes may exceed the packed size).
struct Matrix {
  TensorType type;
  int64_t rows, cols;
  size_t row_bytes;
  std::vector<uint8_t> data;
  std::vector<double> dequantized;  // [r * cols + c]
  WeightLayout layout = WeightLayout::kRows;

  MatrixView view() const { return MatrixView{type, data.data(), cols, rows, row_bytes, layout}; }
};

// Weights either quantized from Gaussian floats (realistic) or random bytes with sane fp16 scales
// (every quant bit pattern, including Q8_0's -128 and extreme k-quant sub-scales).
inline Matrix make_matrix(TensorType t, int64_t rows, int64_t cols, bool random_bytes,
                          size_t padding, std::mt19937& rng) {
  Matrix m{t, rows, cols, 0, {}, {}};
  const size_t packed = static_cast<size_t>(*gguf::bytes_for(t, static_cast<uint64_t>(cols)));
  m.row_bytes = packed + padding;
  m.data.assign(m.row_bytes * static_cast<size_t>(rows), 0xEE);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = m.data.data() + static_cast<size_t>(r) * m.row_bytes;
    if (random_bytes && !is_float(t)) {
      for (size_t i = 0; i < packed; ++i) dst[i] = static_cast<uint8_t>(rng());
      const size_t block_bytes = gguf::type_traits(t)->block_bytes;
      for (size_t b = 0; b < packed / block_bytes; ++b) {
        for (int off : half_fields(t)) {
          const uint16_t h = fp32_to_fp16(scale(rng));
          dst[b * block_bytes + off] = static_cast<uint8_t>(h);
          dst[b * block_bytes + off + 1] = static_cast<uint8_t>(h >> 8);
        }
      }
    } else {
      const float row_scale = r % 5 == 0 ? 4.0f : 1.0f;
      for (float& v : row) v = gauss(rng) * row_scale;
      quantize_row(t, row.data(), dst, cols);
    }
    dequantize_row(t, dst, row.data(), cols);
    for (float v : row) m.dequantized.push_back(v);
  }
  return m;
}

// Gaussian activations with outliers and an all-zero stretch (a block whose scale is 0).
inline std::vector<float> make_activations(int64_t n_tokens, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n_tokens * cols));
  for (float& v : x) v = gauss(rng);
  for (int64_t t = 0; t < n_tokens; ++t) {
    x[static_cast<size_t>(t * cols + (t * 7) % cols)] *= 30.0f;
    if (t % 3 == 1) {
      for (int64_t c = 0; c < std::min<int64_t>(cols, 32); ++c)
        x[static_cast<size_t>(t * cols + c)] = 0;
    }
  }
  return x;
}

// The activation quantization the kernels specify, for quantized weight types.
inline void quantize_activation_block(const float* x, int n, std::vector<double>& xq,
                                      double& scale) {
  float amax = 0;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < n; ++i) {
    const float q = std::clamp(std::nearbyint(x[i] * id), -127.0f, 127.0f);
    xq.push_back(static_cast<double>(d) * q);
  }
  scale = d;
}

struct Reference {
  std::vector<double> exact;  // dequantized weights . raw activations
  std::vector<double> bound;  // allowed |error| against exact
  std::vector<double>
      quantized;               // dequantized weights . quantized activations (float types: exact)
  std::vector<double> tight;   // allowed |error| against quantized
  std::vector<double> abs_wx;  // sum |w x|: the scale of the rounding errors
};

inline Reference reference(const Matrix& m, const std::vector<float>& x, int64_t n_tokens) {
  Reference ref;
  const int64_t cols = m.cols;
  const int act_block = is_float(m.type) ? 0 : is_kquant(m.type) ? 256 : 32;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xt = &x[static_cast<size_t>(t * cols)];
    std::vector<double> xq, half_step(static_cast<size_t>(cols), 0.0);
    if (act_block != 0) {
      for (int64_t b = 0; b < cols / act_block; ++b) {
        double d;
        quantize_activation_block(xt + b * act_block, act_block, xq, d);
        for (int i = 0; i < act_block; ++i)
          half_step[static_cast<size_t>(b * act_block + i)] = d / 2;
      }
    } else {
      xq.assign(xt, xt + cols);
    }
    for (int64_t r = 0; r < m.rows; ++r) {
      const double* w = &m.dequantized[static_cast<size_t>(r * cols)];
      double exact = 0, quantized = 0, abs_wx = 0, abs_wxq = 0, quant_err = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const size_t i = static_cast<size_t>(c);
        exact += w[c] * xt[c];
        quantized += w[c] * xq[i];
        abs_wx += std::fabs(w[c] * xt[c]);
        abs_wxq += std::fabs(w[c] * xq[i]);
        quant_err += std::fabs(w[c]) * half_step[i];
      }
      // Float rounding: the float kernels sum each product into one of 16 chains of fused
      // multiply-adds (ceil(cols / 16) roundings each), then fold the chains in a 4-level tree:
      // every product goes through at most ceil(cols / 16) + 4 roundings of 2^-24 (relative),
      // so the error is within (that + 1) * 2^-24 * sum |w x| (Higham's gamma_n, first order).
      // The integer kernels round a few times per block (scale product, fused multiply-add), and
      // the dequantized weights here carry the decoder's own float rounding.
      const double chain = static_cast<double>((cols + 15) / 16);
      const double rounding = act_block == 0 ? (chain + 5) * 0x1p-24 * abs_wx : 1e-5 * abs_wxq;
      ref.exact.push_back(exact);
      ref.bound.push_back(quant_err * 1.001 + rounding + 1e-6 * abs_wx + 1e-30);
      ref.quantized.push_back(quantized);
      ref.tight.push_back(rounding + 1e-30);
      ref.abs_wx.push_back(abs_wx);
    }
  }
  return ref;
}

inline std::vector<float> run(const Matrix& m, const std::vector<float>& x, int64_t n_tokens,
                              ThreadPool* pool = nullptr, int64_t first_token = 0,
                              TokenKind kind = TokenKind::kGenerated) {
  std::vector<float> y(static_cast<size_t>(n_tokens * m.rows), -1.0f);
  matmul(m.view(), x.data() + first_token * m.cols, n_tokens, y.data(), pool, kind);
  return y;
}

// Shapes per type: several blocks per row, more than one column chunk both when decoding (8
// blocks of 32, 2 super-blocks, 512 floats) and in batches (32 blocks, 4 super-blocks), and an
// odd number of blocks; rows not a multiple of 8 or 16.
inline int64_t test_cols(TensorType t) {
  if (is_float(t)) return 531;
  if (is_kquant(t)) return 5 * 256;
  return 35 * 32;
}

}  // namespace maas::tensor::test
