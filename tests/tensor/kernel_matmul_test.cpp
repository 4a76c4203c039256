// tensor::matmul on every kernel target this machine runs, for every weight type, on awkward
// shapes (rows, columns and token counts that are not multiples of the panel, chunk, tile or
// vector widths), against float64 references computed here:
//  - the exact product of the dequantized weights and the raw activations, within a bound derived
//    from the activation quantization (each activation is off by at most half its block's
//    scale) plus float rounding;
//  - the exact product of the dequantized weights and the activations quantized as the kernels
//    specify (scale amax / 127 per 32 or 256 elements, round to nearest even), reimplemented here,
//    within float rounding only;
//  - bit identity between targets (every target repeats the scalar kernel's operations), and
//    batch invariance: a token's outputs are the same bits alone, inside batches of 2..17 tokens
//    at any position, and with 1 or 2 threads;
//  - the AMX kernels bit for bit against the scalar ones where the tile unit runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gguf/tensor_type.h"
#include "tensor/cpu_features.h"
#include "tensor/kernels.h"
#include "tensor/matmul_test_util.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/thread_pool.h"

namespace maas::tensor {
namespace {

using gguf::TensorType;
using tensor::TokenKind;
using namespace test;  // NOLINT(google-build-using-namespace): the shared helpers

class KernelTargets : public ::testing::Test {
 protected:
  void TearDown() override { kernels::force_target(""); }
};

TEST_F(KernelTargets, MatchFloat64ReferencesOnEveryTarget) {
  const std::vector<std::string> targets = kernels::available_targets();
  ASSERT_FALSE(targets.empty());
  EXPECT_EQ(targets.back(), "scalar");
  std::mt19937 rng(1234);
  for (TensorType type : kAllTypes) {
    for (bool random_bytes : {false, true}) {
      const int64_t rows = 37, cols = test_cols(type), n_tokens = 13;
      const Matrix m = make_matrix(type, rows, cols, random_bytes, random_bytes ? 6 : 0, rng);
      const std::vector<float> x = make_activations(n_tokens, cols, rng);
      const Reference ref = reference(m, x, n_tokens);
      std::vector<float> scalar_y;
      for (auto it = targets.rbegin(); it != targets.rend(); ++it) {
        kernels::force_target(*it);
        const std::vector<float> y = run(m, x, n_tokens);
        int bad = 0;
        for (size_t i = 0; i < y.size() && bad < 3; ++i) {
          const double e1 = std::fabs(y[i] - ref.exact[i]);
          const double e2 = std::fabs(y[i] - ref.quantized[i]);
          if (!(e1 <= ref.bound[i]) || !(e2 <= ref.tight[i])) {
            ++bad;
            ADD_FAILURE() << name(type) << (random_bytes ? " random bytes" : " quantized") << " on "
                          << *it << " [" << i / rows << "][" << i % rows << "] = " << y[i]
                          << ": exact " << ref.exact[i] << " (bound " << ref.bound[i]
                          << "), with quantized activations " << ref.quantized[i] << " (bound "
                          << ref.tight[i] << ")";
          }
        }
        if (*it == "scalar") {
          scalar_y = y;
        } else {
          EXPECT_EQ(0, std::memcmp(y.data(), scalar_y.data(), sizeof(float) * y.size()))
              << name(type) << ": " << *it << " differs from the scalar kernel";
        }
      }
    }
  }
}

// Tiny and degenerate shapes: one row, one block, one token; a column count below one vector.
TEST_F(KernelTargets, SmallShapes) {
  std::mt19937 rng(99);
  for (const std::string& target : kernels::available_targets()) {
    kernels::force_target(target);
    for (TensorType type : kAllTypes) {
      for (int64_t rows : {1, 2, 9}) {
        const int64_t cols = is_float(type) ? 3 : block_size(type);
        const Matrix m = make_matrix(type, rows, cols, false, 0, rng);
        const std::vector<float> x = make_activations(2, cols, rng);
        const Reference ref = reference(m, x, 2);
        const std::vector<float> y = run(m, x, 2);
        for (size_t i = 0; i < y.size(); ++i) {
          EXPECT_LE(std::fabs(y[i] - ref.quantized[i]), ref.tight[i])
              << name(type) << " on " << target << " rows " << rows << " [" << i << "]";
        }
      }
    }
  }
}

// For each kind of token (ops.h: prompt tokens may get other kernels than generated ones).
TEST_F(KernelTargets, BatchInvariance) {
  std::mt19937 rng(7);
  ThreadPool one(1), two(2);
  for (const std::string& target : kernels::available_targets()) {
    kernels::force_target(target);
    for (TensorType type : kAllTypes) {
      const int64_t rows = 45, cols = test_cols(type), n_tokens = 17;
      const Matrix m = make_matrix(type, rows, cols, true, 0, rng);
      const std::vector<float> x = make_activations(n_tokens, cols, rng);
      for (TokenKind kind : {TokenKind::kGenerated, TokenKind::kPrompt}) {
        const std::string what = name(type) + " on " + target +
                                 (kind == TokenKind::kPrompt ? ", prompt" : ", generated");
        const std::vector<float> all = run(m, x, n_tokens, nullptr, 0, kind);
        // Every batch size, at a position that varies with the size.
        for (int64_t size = 1; size <= n_tokens; ++size) {
          const int64_t first = (size * 5) % (n_tokens - size + 1);
          const std::vector<float> part = run(m, x, size, nullptr, first, kind);
          EXPECT_EQ(0, std::memcmp(part.data(), &all[static_cast<size_t>(first * rows)],
                                   sizeof(float) * part.size()))
              << what << ": batch of " << size << " at " << first;
        }
        // Thread counts (the matrix is big enough for the pool to split it).
        for (ThreadPool* pool : {&one, &two}) {
          const std::vector<float> threaded = run(m, x, n_tokens, pool, 0, kind);
          EXPECT_EQ(0, std::memcmp(threaded.data(), all.data(), sizeof(float) * all.size()))
              << what << " with " << pool->size() << " threads";
        }
      }
    }
  }
}

// One token over a matrix large enough that the pool splits its rows, as in decoding.
TEST_F(KernelTargets, ThreadSplitOfOneToken) {
  std::mt19937 rng(11);
  ThreadPool two(2);
  for (const std::string& target : kernels::available_targets()) {
    kernels::force_target(target);
    for (TensorType type : {TensorType::F16, TensorType::Q4_0, TensorType::Q6_K}) {
      const int64_t cols = is_kquant(type) ? 1024 : 992;
      const Matrix m = make_matrix(type, 150, cols, false, 0, rng);
      const std::vector<float> x = make_activations(1, cols, rng);
      const std::vector<float> alone = run(m, x, 1);
      const std::vector<float> split = run(m, x, 1, &two);
      EXPECT_EQ(0, std::memcmp(alone.data(), split.data(), sizeof(float) * alone.size()))
          << name(type) << " on " << target;
    }
  }
}

// Float weights: kernels.h defines each output as 16 chains of fused multiply-adds (column k
// into chain k % 16, in increasing k) folded by a fixed pairwise tree. Recomputed here from that
// statement, bit for bit, on every target, for shapes around every width the vector code works
// in (16-column groups, 32-column decode steps, panels of 16 to 64 rows, token tiles of 6,
// decode passes of up to 6 tokens for batches of up to 24), every token count up to 40 and 1 to
// 3 threads.
float specified_float_sum(const double* w, const float* x, int64_t cols) {
  float s[16] = {};
  for (int64_t c = 0; c < cols; ++c) {
    s[c % 16] = std::fma(static_cast<float>(w[c]), x[c], s[c % 16]);
  }
  for (int j = 0; j < 8; ++j) s[j] = s[j] + s[j + 8];
  for (int j = 0; j < 4; ++j) s[j] = s[j] + s[j + 4];
  for (int j = 0; j < 2; ++j) s[j] = s[j] + s[j + 2];
  return s[0] + s[1];
}

TEST_F(KernelTargets, FloatSumOrderIsTheSpecifiedOne) {
  std::mt19937 rng(21);
  ThreadPool two(2), three(3);
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{1, 1},   {3, 15},  {17, 16},  {5, 17},   {37, 31},  {9, 33},
                          {20, 48}, {6, 100}, {33, 257}, {19, 512}, {150, 531}};
  const int64_t max_tokens = 40;
  for (TensorType type : {TensorType::F32, TensorType::F16, TensorType::BF16}) {
    for (const Shape& shape : shapes) {
      const int64_t rows = shape.rows, cols = shape.cols;
      const Matrix m = make_matrix(type, rows, cols, false, type == TensorType::F32 ? 4 : 6, rng);
      const std::vector<float> x = make_activations(max_tokens, cols, rng);
      std::vector<float> expected(static_cast<size_t>(max_tokens * rows));
      for (int64_t t = 0; t < max_tokens; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          expected[static_cast<size_t>(t * rows + r)] =
              specified_float_sum(&m.dequantized[static_cast<size_t>(r * cols)],
                                  &x[static_cast<size_t>(t * cols)], cols);
        }
      }
      for (const std::string& target : kernels::available_targets()) {
        kernels::force_target(target);
        // Every token count on the vector targets; a few on the slow scalar one.
        for (int64_t n = 1; n <= max_tokens; n += target == "scalar" ? 13 : 1) {
          const int64_t first = (n * 7) % (max_tokens - n + 1);
          for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two, &three}) {
            if (pool != nullptr && n % 3 != 1 && n != max_tokens) continue;
            const std::vector<float> y = run(m, x, n, pool, first);
            const float* want = &expected[static_cast<size_t>(first * rows)];
            if (std::memcmp(y.data(), want, sizeof(float) * y.size()) != 0) {
              size_t i = 0;
              while (std::memcmp(&y[i], &want[i], sizeof(float)) == 0) ++i;
              ADD_FAILURE() << name(type) << " " << rows << "x" << cols << " on " << target << ", "
                            << n << " tokens from " << first << ", " << (pool ? pool->size() : 0)
                            << " threads: [" << i / rows << "][" << i % rows << "] = " << y[i]
                            << ", specified " << want[i];
            }
          }
        }
      }
    }
  }
}

// Rows longer than a K-block of the multi-token kernel (1024 columns, so chains continue from
// sums kept in scratch) and batches longer than one pass over the weights (132 tokens).
TEST_F(KernelTargets, FloatLongRowsAndLargeBatches) {
  std::mt19937 rng(22);
  ThreadPool two(2);
  const int64_t rows = 70, cols = 2100, max_tokens = 140;
  for (TensorType type : {TensorType::F16, TensorType::BF16, TensorType::F32}) {
    const Matrix m = make_matrix(type, rows, cols, false, 0, rng);
    const std::vector<float> x = make_activations(max_tokens, cols, rng);
    std::vector<float> expected(static_cast<size_t>(max_tokens * rows));
    for (int64_t t = 0; t < max_tokens; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        expected[static_cast<size_t>(t * rows + r)] = specified_float_sum(
            &m.dequantized[static_cast<size_t>(r * cols)], &x[static_cast<size_t>(t * cols)], cols);
      }
    }
    for (const std::string& target : kernels::available_targets()) {
      kernels::force_target(target);
      for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{30}, max_tokens}) {
        for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
          const std::vector<float> y = run(m, x, n, pool, max_tokens - n);
          EXPECT_EQ(0,
                    std::memcmp(y.data(), &expected[static_cast<size_t>((max_tokens - n) * rows)],
                                sizeof(float) * y.size()))
              << name(type) << " on " << target << ", " << n << " tokens"
              << (pool ? ", 2 threads" : "");
        }
      }
    }
  }
}

// The sign of a zero sum: columns past `cols` add nothing, not a +0 product (which would turn a
// chain's -0 into +0). Every product here underflows to -0, so with 17 columns every chain is -0
// (chain 0 sums columns 0 and 16, chains 1..15 one column each) and so is the result; padding
// chains 1..15 with +0 products for columns 17..31 would give +0.
TEST_F(KernelTargets, FloatZeroSignsFollowTheSpecification) {
  const int64_t cols = 17;
  std::vector<float> w(cols, 1e-30f), x(cols, -1e-30f);  // products underflow to -0
  w[16] = 0.0f;                                          // column 16: +0 * -1e-30 = -0
  std::vector<uint8_t> data(sizeof(float) * cols);
  std::memcpy(data.data(), w.data(), data.size());
  std::vector<double> wd(w.begin(), w.end());
  const float want = specified_float_sum(wd.data(), x.data(), cols);
  for (const std::string& target : kernels::available_targets()) {
    kernels::force_target(target);
    for (int64_t n : {1, 2, 30}) {  // the paths for one token, a few and a batch
      std::vector<float> xs, y(static_cast<size_t>(n), 5.0f);
      for (int64_t t = 0; t < n; ++t) xs.insert(xs.end(), x.begin(), x.end());
      matmul(MatrixView{TensorType::F32, data.data(), cols, 1, data.size()}, xs.data(), n, y.data(),
             nullptr);
      for (float v : y) {
        EXPECT_EQ(0.0f, v) << target;
        EXPECT_EQ(std::signbit(want), std::signbit(v)) << target << " with " << n << " tokens";
      }
    }
  }
}

// The pool spins between loops and sleeps after a while: loops right after each other, after a
// pause long enough for the workers to sleep, and of every small size must each cover [0, n)
// exactly once.
TEST(KernelThreadPool, EveryIndexOnceAcrossSpinningAndSleeping) {
  ThreadPool pool(3);
  for (int round = 0; round < 200; ++round) {
    if (round % 50 == 49) {
      std::this_thread::sleep_for(std::chrono::microseconds(4 * ThreadPool::kSpinMicros));
    }
    const int64_t n = round % 23;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << n << " " << i;
  }
}

TEST(KernelDispatch, RejectsBadInput) {
  std::vector<uint8_t> data(1024);
  std::vector<float> x(64), y(64);
  MatrixView w{TensorType::Q4_0, data.data(), 48, 1, 27};  // 48 is not a multiple of 32
  EXPECT_THROW(matmul(w, x.data(), 1, y.data(), nullptr), std::invalid_argument);
  w = MatrixView{TensorType::Q4_0, data.data(), 64, 2, 35};  // a row of 64 Q4_0 needs 36 bytes
  EXPECT_THROW(matmul(w, x.data(), 1, y.data(), nullptr), std::invalid_argument);
  w = MatrixView{TensorType::Q8_K, data.data(), 256, 1, 292};  // no kernel for Q8_K weights
  EXPECT_THROW(matmul(w, x.data(), 1, y.data(), nullptr), std::invalid_argument);
  w = MatrixView{TensorType::F32, nullptr, 4, 2, 16};
  EXPECT_THROW(matmul(w, x.data(), 1, y.data(), nullptr), std::invalid_argument);
  w = MatrixView{TensorType::F32, data.data(), 4, 2, 16};
  EXPECT_THROW(matmul(w, x.data(), -1, y.data(), nullptr), std::invalid_argument);
  w = MatrixView{TensorType::F32, data.data(), int64_t{1} << 40, 2, size_t{1} << 42};
  EXPECT_THROW(matmul(w, x.data(), 1 << 10, y.data(), nullptr), std::invalid_argument);
  EXPECT_THROW(kernels::force_target("no-such-target"), std::invalid_argument);
}

TEST(KernelDispatch, ZeroColumnsGiveZeros) {
  std::vector<uint8_t> data(16);
  std::vector<float> x(1), y(3, 5.0f);
  const MatrixView w{TensorType::F32, data.data(), 0, 3, 0};
  matmul(w, x.data(), 1, y.data(), nullptr);
  EXPECT_EQ(y, std::vector<float>(3, 0.0f));
}

TEST(KernelDispatch, ReportsFeaturesAndTargets) {
  kernels::force_target("auto");  // whatever MAAS_KERNEL_TARGET said
  const std::string report = cpu_report();
  EXPECT_NE(report.find("chosen: " + kernels::active_target_name()), std::string::npos) << report;
  const std::vector<std::string> targets = kernels::available_targets();
  EXPECT_EQ(kernels::active_target_name(), targets.front());
  const CpuFeatures& f = cpu_features();
  // What the CPU reports decides which vector targets exist.
  const bool has_avx2 = std::find(targets.begin(), targets.end(), "avx2") != targets.end();
  EXPECT_EQ(has_avx2, f.avx2 && f.fma && f.f16c && f.bmi2);
  const bool has_avx3 = std::find(targets.begin(), targets.end(), "avx3") != targets.end();
  EXPECT_EQ(has_avx3, has_avx2 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl);
  const bool has_vnni2 = std::find(targets.begin(), targets.end(), "avx2_vnni") != targets.end();
  EXPECT_EQ(has_vnni2, has_avx2 && f.avx_vnni);
  kernels::force_target("scalar");
  EXPECT_EQ(kernels::active_target_name(), "scalar");
  kernels::force_target("auto");
  EXPECT_EQ(kernels::active_target_name(), targets.front());
}

// The AMX-INT8 kernels (kernels_amx.cpp) bit for bit against the scalar kernels, at the token
// counts where the tile unit runs (16 and more): rows not a multiple of its 16-row panel, tokens
// not a multiple of its 16-token tile, padded rows, one and two threads. A counter shows the
// tile unit ran. Skipped without AMX.
class AmxKernels : public KernelTargets {
 protected:
  void SetUp() override {
    const std::vector<std::string> targets = kernels::available_targets();
    if (std::find(targets.begin(), targets.end(), "amx") == targets.end()) {
      GTEST_SKIP() << "no AMX here";
    }
  }
};

std::vector<float> run_on(const std::string& target, const Matrix& m, const std::vector<float>& x,
                          int64_t n_tokens, ThreadPool* pool = nullptr,
                          TokenKind kind = TokenKind::kGenerated) {
  kernels::force_target(target);
  std::vector<float> y = run(m, x, n_tokens, pool, 0, kind);
  kernels::force_target("");
  return y;
}

// A product's shape, and how a failure names it.
struct Shape {
  int64_t rows, cols, tokens;
};
std::string label(TensorType type, const Shape& s, const ThreadPool* pool) {
  return name(type) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols) + ", " +
         std::to_string(s.tokens) + " tokens, " + (pool != nullptr ? "2 threads" : "1 thread");
}

TEST_F(AmxKernels, MatchScalarKernelsBitForBit) {
  std::mt19937 rng(20261129);
  ThreadPool pool(2);
  const Shape shapes[] = {{16, 32, 16}, {37, 96, 17},   {50, 2080, 40}, {33, 64, 129},
                          {1, 32, 16},  {129, 160, 31}, {16, 4096, 48}, {70, 288, 16}};
  for (TensorType type : {TensorType::Q4_0, TensorType::Q8_0}) {
    for (const Shape& s : shapes) {
      for (bool random_bytes : {true, false}) {
        const Matrix m = make_matrix(type, s.rows, s.cols, random_bytes, s.rows % 2 ? 7 : 0, rng);
        const std::vector<float> x = make_activations(s.tokens, s.cols, rng);
        const std::vector<float> expected = run_on("scalar", m, x, s.tokens);
        for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
          const uint64_t before = kernels::amx_product_count();
          const std::vector<float> got = run_on("amx", m, x, s.tokens, p);
          const std::string what =
              label(type, s, p) + (random_bytes ? ", random bytes" : ", quantized");
          EXPECT_GT(kernels::amx_product_count(), before) << what << ": the tile unit never ran";
          ASSERT_EQ(0, std::memcmp(got.data(), expected.data(), sizeof(float) * got.size()))
              << what;
        }
      }
    }
  }
}

// Fewer than 16 tokens go to the AVX-512 kernels; a token's outputs do not depend on whether its
// batch was large enough for the tile unit.
TEST_F(AmxKernels, BatchInvariantAcrossTheTileThreshold) {
  std::mt19937 rng(7);
  for (TensorType type : {TensorType::Q4_0, TensorType::Q8_0}) {
    const Matrix m = make_matrix(type, 45, 256, false, 0, rng);
    const int64_t n_tokens = 35;
    const std::vector<float> x = make_activations(n_tokens, m.cols, rng);
    const std::vector<float> all = run_on("amx", m, x, n_tokens);
    for (int64_t first : {0, 5, 19, 34}) {
      for (int64_t count : {1, 2, 15, 16}) {
        if (first + count > n_tokens) continue;
        const std::vector<float> part(x.begin() + first * m.cols,
                                      x.begin() + (first + count) * m.cols);
        const uint64_t before = kernels::amx_product_count();
        const std::vector<float> y = run_on("amx", m, part, count);
        EXPECT_EQ(kernels::amx_product_count() > before, count >= 16);
        ASSERT_EQ(0, std::memcmp(y.data(), all.data() + first * m.rows, sizeof(float) * y.size()))
            << name(type) << " tokens " << first << ".." << first + count;
      }
    }
  }
}

// The AMX-BF16 prompt kernels (kernels_amx_float.cpp), recomputed from Intel's statement of
// TDPBF16PS (SDM): per output, C = C + (e0 + e1) per instruction, e0 and e1 fused multiply-add
// chains from +0 over the even and odd elements of its 16 pairs, f32, round to nearest even,
// denormal inputs read as zero and denormal results flushed. The operands are the bf16 parts of
// the weights (hi: the low 16 bits cleared, lo = w - hi for F16) and of the activations
// (xh = bf16(x), xl = bf16(x - xh), rounded to nearest even), per 32 columns in the order
// hi.xh, hi.xl, lo.xh, lo.xl.
float flush(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }

float bf16_nearest_even(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&v, &u, 4);
  return v;
}

float bf16_truncate(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u &= 0xFFFF0000u;
  std::memcpy(&v, &u, 4);
  return v;
}

float tile_unit_sum(const double* w, const float* x, int64_t cols, bool f16) {
  const int64_t padded = (cols + 31) / 32 * 32;
  std::vector<float> hi(static_cast<size_t>(padded), 0.0f), lo = hi, xh = hi, xl = hi;
  for (int64_t c = 0; c < cols; ++c) {
    const auto i = static_cast<size_t>(c);
    const auto wf = static_cast<float>(w[c]);
    hi[i] = f16 ? bf16_truncate(wf) : wf;
    lo[i] = wf - hi[i];
    xh[i] = bf16_nearest_even(x[c]);
    xl[i] = bf16_nearest_even(x[c] - xh[i]);
  }
  const std::vector<float>* parts[4][2] = {{&hi, &xh}, {&hi, &xl}, {&lo, &xh}, {&lo, &xl}};
  float c_acc = 0.0f;
  for (int64_t chunk = 0; chunk < padded / 32; ++chunk) {
    for (int q = 0; q < (f16 ? 4 : 2); ++q) {
      const std::vector<float>& a = *parts[q][0];
      const std::vector<float>& b = *parts[q][1];
      float e[2] = {0.0f, 0.0f};
      for (int64_t k = 0; k < 16; ++k) {
        for (int el = 0; el < 2; ++el) {
          const auto i = static_cast<size_t>(chunk * 32 + 2 * k + el);
          e[el] = flush(std::fma(flush(a[i]), flush(b[i]), e[el]));
        }
      }
      c_acc = flush(c_acc + flush(e[0] + e[1]));
    }
  }
  return c_acc;
}

TEST_F(AmxKernels, PromptFloatKernelsFollowTheTileUnitsArithmetic) {
  if (!prompt_kernels_differ(TensorType::F16) || !prompt_kernels_differ(TensorType::BF16)) {
    GTEST_SKIP() << "no AMX-BF16 here";
  }
  std::mt19937 rng(20261130);
  ThreadPool pool(2);
  // Rows not a multiple of 16, columns not a multiple of 32, token tiles not full, more than the
  // 4 token tiles held at once, and K-blocks (70 tokens of 4100 columns take three).
  const Shape shapes[] = {{16, 32, 1}, {37, 531, 13},  {50, 2080, 40}, {33, 64, 129},
                          {1, 3, 2},   {129, 160, 17}, {70, 4100, 70}, {20, 100, 16}};
  for (TensorType type : {TensorType::F16, TensorType::BF16}) {
    for (const Shape& sh : shapes) {
      const Matrix m = make_matrix(type, sh.rows, sh.cols, false, sh.rows % 2 ? 6 : 0, rng);
      const std::vector<float> x = make_activations(sh.tokens, sh.cols, rng);
      std::vector<float> want(static_cast<size_t>(sh.tokens * sh.rows));
      for (int64_t t = 0; t < sh.tokens; ++t) {
        for (int64_t r = 0; r < sh.rows; ++r) {
          want[static_cast<size_t>(t * sh.rows + r)] =
              tile_unit_sum(&m.dequantized[static_cast<size_t>(r * sh.cols)],
                            &x[static_cast<size_t>(t * sh.cols)], sh.cols, type == TensorType::F16);
        }
      }
      const Reference ref = reference(m, x, sh.tokens);
      // Close to the exact sum too: 16-bit activations (2^-17 of each part left out) and one
      // f32 rounding per instruction and chain step (first order).
      const double rounding = 0x1p-16 + static_cast<double>((sh.cols + 31) / 32 * 4 + 18) * 0x1p-24;
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        const uint64_t before = kernels::amx_product_count();
        const std::vector<float> got = run_on("amx", m, x, sh.tokens, p, TokenKind::kPrompt);
        const std::string what = label(type, sh, p);
        EXPECT_GT(kernels::amx_product_count(), before) << what << ": the tile unit never ran";
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_EQ(0, std::memcmp(&got[i], &want[i], sizeof(float)))
              << what << " [" << i / static_cast<size_t>(sh.rows) << "]["
              << i % static_cast<size_t>(sh.rows) << "] = " << got[i] << ", the SDM's arithmetic "
              << want[i];
          EXPECT_LE(std::fabs(got[i] - ref.exact[i]), rounding * ref.abs_wx[i] + 1e-30)
              << what << " [" << i << "]";
        }
      }
    }
  }
}

// Generated tokens keep the 16-chain kernels on the amx target: its float products of one kind
// equal the avx3_dl target's, and prompt products differ from them somewhere.
TEST_F(AmxKernels, GeneratedTokensKeepTheChainOrder) {
  if (!prompt_kernels_differ(TensorType::F16)) GTEST_SKIP() << "no AMX-BF16 here";
  std::mt19937 rng(5);
  const Matrix m = make_matrix(TensorType::F16, 40, 700, false, 0, rng);
  const std::vector<float> x = make_activations(20, 700, rng);
  kernels::force_target("avx3_dl");
  const std::vector<float> chains = run(m, x, 20);
  kernels::force_target("amx");
  EXPECT_EQ(0, std::memcmp(run(m, x, 20).data(), chains.data(), sizeof(float) * chains.size()));
  EXPECT_NE(0, std::memcmp(run(m, x, 20, nullptr, 0, TokenKind::kPrompt).data(), chains.data(),
                           sizeof(float) * chains.size()));
}

}  // namespace
}  // namespace maas::tensor
