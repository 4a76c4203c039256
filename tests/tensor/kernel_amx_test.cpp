// The AMX-INT8 kernels (kernels_amx.cpp) against the scalar reference kernels, bit for bit: the
// tile unit computes each block's integer dot products and the vector code the float chain, so
// every output must equal the scalar kernel's (which kernel_matmul_test.cpp checks against
// float64). Shapes are awkward on purpose: rows not a multiple of the 16-row panel, token counts
// not a multiple of the 16-token tile, padded row strides, one and two threads. Skipped on CPUs
// (or kernels) without AMX.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gguf/tensor_type.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/thread_pool.h"

namespace maas::tensor {
namespace {

using gguf::TensorType;

bool has_amx() {
  const std::vector<std::string> targets = kernels::available_targets();
  return std::find(targets.begin(), targets.end(), "amx") != targets.end();
}

struct Weights {
  TensorType type;
  int64_t rows, cols;
  size_t row_bytes;
  std::vector<uint8_t> data;
  MatrixView view() const { return MatrixView{type, data.data(), cols, rows, row_bytes}; }
};

// Random quant bytes (every bit pattern, Q8_0's -128 included) with sane fp16 scales at the
// start of each block, or quantized Gaussian rows; `padding` bytes of garbage after each row.
Weights make_weights(TensorType t, int64_t rows, int64_t cols, bool random_bytes, size_t padding,
                     std::mt19937& rng) {
  const size_t packed = static_cast<size_t>(*gguf::bytes_for(t, static_cast<uint64_t>(cols)));
  Weights w{t, rows, cols, packed + padding, {}};
  w.data.assign(w.row_bytes * static_cast<size_t>(rows), 0xA5);
  const size_t block_bytes = gguf::type_traits(t)->block_bytes;
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(-0.08f, 0.08f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = w.data.data() + static_cast<size_t>(r) * w.row_bytes;
    if (random_bytes) {
      for (size_t i = 0; i < packed; ++i) dst[i] = static_cast<uint8_t>(rng());
      for (size_t b = 0; b < packed / block_bytes; ++b) {
        const uint16_t h = fp32_to_fp16(scale(rng));
        std::memcpy(dst + b * block_bytes, &h, sizeof h);
      }
    } else {
      for (float& v : row) v = gauss(rng) * (r % 7 == 0 ? 5.0f : 1.0f);
      quantize_row(t, row.data(), dst, cols);
    }
  }
  return w;
}

// Gaussian activations with outliers; token 3 (when present) is all zeros (scale 0).
std::vector<float> make_activations(int64_t n_tokens, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n_tokens * cols));
  for (float& v : x) v = gauss(rng);
  for (size_t i = 0; i < x.size(); i += 97) x[i] *= 40.0f;
  if (n_tokens > 3) std::fill(x.begin() + 3 * cols, x.begin() + 4 * cols, 0.0f);
  return x;
}

std::vector<float> run(const Weights& w, const std::vector<float>& x, int64_t n_tokens,
                       const std::string& target, ThreadPool* pool) {
  kernels::force_target(target);
  std::vector<float> y(static_cast<size_t>(n_tokens * w.rows), -7.0f);
  matmul(w.view(), x.data(), n_tokens, y.data(), pool);
  kernels::force_target("");
  return y;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class AmxKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!has_amx()) GTEST_SKIP() << "no AMX here";
  }
  void TearDown() override { kernels::force_target(""); }
};

TEST_F(AmxKernels, MatchScalarKernelsBitForBit) {
  std::mt19937 rng(20261129);
  ThreadPool pool(2);
  struct Shape {
    int64_t rows, cols, tokens;
  };
  const Shape shapes[] = {{16, 32, 16}, {37, 96, 17},   {50, 2080, 40}, {33, 64, 129},
                          {1, 32, 16},  {129, 160, 31}, {16, 4096, 48}, {70, 288, 16}};
  for (TensorType type : {TensorType::Q4_0, TensorType::Q8_0}) {
    for (const Shape& s : shapes) {
      for (bool random_bytes : {true, false}) {
        const size_t padding = s.rows % 2 == 0 ? 0 : 7;
        const Weights w = make_weights(type, s.rows, s.cols, random_bytes, padding, rng);
        const std::vector<float> x = make_activations(s.tokens, s.cols, rng);
        const std::vector<float> expected = run(w, x, s.tokens, "scalar", nullptr);
        for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
          const uint64_t before = kernels::amx_product_count();
          const std::vector<float> got = run(w, x, s.tokens, "amx", p);
          const std::string what = std::string(gguf::type_name(type)) + " " +
                                   std::to_string(s.rows) + "x" + std::to_string(s.cols) + ", " +
                                   std::to_string(s.tokens) + " tokens, " +
                                   (random_bytes ? "random bytes" : "quantized") +
                                   (p != nullptr ? ", 2 threads" : ", 1 thread");
          EXPECT_GT(kernels::amx_product_count(), before) << what << ": the tile unit never ran";
          ASSERT_TRUE(same_bits(got, expected)) << what;
        }
      }
    }
  }
}

// Few tokens go to the AVX-512 kernels (same bits); a token's outputs do not depend on whether
// its batch was large enough for the tile unit.
TEST_F(AmxKernels, BatchInvariantAcrossTheTileThreshold) {
  std::mt19937 rng(7);
  for (TensorType type : {TensorType::Q4_0, TensorType::Q8_0}) {
    const Weights w = make_weights(type, 45, 256, false, 0, rng);
    const int64_t n_tokens = 35;
    const std::vector<float> x = make_activations(n_tokens, w.cols, rng);
    const std::vector<float> all = run(w, x, n_tokens, "amx", nullptr);
    for (int64_t first : {0, 5, 19, 34}) {
      for (int64_t count : {1, 2, 15, 16}) {
        if (first + count > n_tokens) continue;
        const std::vector<float> part(x.begin() + first * w.cols,
                                      x.begin() + (first + count) * w.cols);
        const uint64_t before = kernels::amx_product_count();
        const std::vector<float> y = run(w, part, count, "amx", nullptr);
        EXPECT_EQ(kernels::amx_product_count() > before, count >= 16);
        const std::vector<float> slice(all.begin() + first * w.rows,
                                       all.begin() + (first + count) * w.rows);
        ASSERT_TRUE(same_bits(y, slice))
            << gguf::type_name(type) << " tokens " << first << ".." << first + count;
      }
    }
  }
}

}  // namespace
}  // namespace maas::tensor
