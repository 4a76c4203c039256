// WeightLayout::kPanels16 (ops.h): the byte permutation pack_panels applies, checked against the
// layout as documented; rows read back from it; and products over it, on every kernel target,
// bit for bit equal to the same matrix's products in the row layout on the scalar target (which
// kernel_matmul_test.cpp holds to the float64 references).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/kernels.h"
#include "tensor/matmul_test_util.h"
#include "tensor/ops.h"
#include "tensor/thread_pool.h"

namespace maas::tensor {
namespace {

using gguf::TensorType;
using namespace test;  // NOLINT(google-build-using-namespace): the shared helpers

Matrix packed_copy(const Matrix& m, ThreadPool* pool = nullptr) {
  Matrix p = m;
  MatrixView v = p.view();
  pack_panels(&v, p.data.data(), pool);
  p.layout = v.layout;
  return p;
}

TEST(PanelLayout, PackingIsThePermutationDocumented) {
  std::mt19937 rng(5);
  ThreadPool pool(2);
  for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
    const int64_t rows = 53, cols = 96, n_blocks = 3;
    const Matrix m = make_matrix(TensorType::Q8_0, rows, cols, true, 0, rng);
    const Matrix packed = packed_copy(m, p);
    ASSERT_EQ(packed.layout, WeightLayout::kPanels16);
    ASSERT_EQ(packed.data.size(), m.data.size());
    const size_t rb = m.row_bytes;
    for (int64_t r = 0; r < 48; ++r) {
      const uint8_t* panel = packed.data.data() + static_cast<size_t>(r / 16) * 16 * rb;
      const int64_t i = r % 16;
      for (int64_t b = 0; b < n_blocks; ++b) {
        const uint8_t* blk = m.data.data() + static_cast<size_t>(r) * rb + b * 34;
        const uint8_t* col = panel + b * 16 * 34;
        EXPECT_EQ(0, std::memcmp(col + 2 * i, blk, 2)) << "scale of row " << r << " block " << b;
        for (int64_t j = 0; j < 32; ++j) {
          EXPECT_EQ(col[32 + 64 * (j / 4) + 4 * i + j % 4], blk[2 + j])
              << "row " << r << " block " << b << " quant " << j;
        }
      }
    }
    // Rows after the last whole panel keep the row layout.
    EXPECT_EQ(0, std::memcmp(packed.data.data() + 48 * rb, m.data.data() + 48 * rb, 5 * rb));
  }
}

TEST(PanelLayout, RowsReadBackFromEitherPart) {
  std::mt19937 rng(6);
  const Matrix m = make_matrix(TensorType::Q8_0, 37, 64, false, 0, rng);
  const Matrix packed = packed_copy(m);
  std::vector<float> want(64), got(64);
  for (int64_t r = 0; r < m.rows; ++r) {
    get_row(m.view(), r, want.data());
    get_row(packed.view(), r, got.data());
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), sizeof(float) * 64)) << "row " << r;
  }
}

TEST(PanelLayout, OnlyWholeUnpaddedQ8_0Panels) {
  std::mt19937 rng(7);
  const Matrix q8 = make_matrix(TensorType::Q8_0, 16, 64, false, 0, rng);
  EXPECT_TRUE(can_pack_panels(q8.view()));
  const Matrix cases[] = {make_matrix(TensorType::Q4_0, 32, 64, false, 0, rng),
                          make_matrix(TensorType::Q8_0, 32, 64, false, 2, rng),  // padded rows
                          make_matrix(TensorType::Q8_0, 15, 64, false, 0, rng)};
  for (const Matrix& c : cases) {
    EXPECT_FALSE(can_pack_panels(c.view()));
    Matrix copy = c;
    MatrixView v = copy.view();
    pack_panels(&v, copy.data.data(), nullptr);
    EXPECT_EQ(v.layout, WeightLayout::kRows);
    EXPECT_EQ(copy.data, c.data);
  }
  // Packing twice would scramble the panels: the second call leaves them.
  Matrix twice = packed_copy(q8);
  const std::vector<uint8_t> once = twice.data;
  MatrixView v = twice.view();
  EXPECT_FALSE(can_pack_panels(v));
  pack_panels(&v, twice.data.data(), nullptr);
  EXPECT_EQ(twice.data, once);
  // The kernels accept the layout only for what pack_panels produces.
  Matrix q4 = make_matrix(TensorType::Q4_0, 16, 64, false, 0, rng);
  q4.layout = WeightLayout::kPanels16;
  const std::vector<float> x(64, 1.0f);
  EXPECT_THROW(run(q4, x, 1), std::invalid_argument);
}

TEST(PanelLayout, ProductsEqualTheRowLayoutsOnEveryTarget) {
  struct Shape {
    int64_t rows, cols, tokens;
  };
  // One panel; panels plus a tail; 4 to 9 panels for one token (several streams per thread,
  // unevenly filled); batches below, at and above the tile unit's 16 tokens; long rows.
  const Shape shapes[] = {{16, 32, 1},   {37, 96, 1},    {64, 1120, 1},  {80, 64, 1},
                          {150, 256, 1}, {37, 96, 13},   {50, 2080, 40}, {129, 160, 31},
                          {33, 64, 129}, {48, 4096, 16}, {16, 32, 17}};
  std::mt19937 rng(20261129);
  ThreadPool pool(2);
  for (const Shape& s : shapes) {
    for (bool random_bytes : {true, false}) {
      const Matrix m = make_matrix(TensorType::Q8_0, s.rows, s.cols, random_bytes, 0, rng);
      const Matrix packed = packed_copy(m);
      const std::vector<float> x = make_activations(s.tokens, s.cols, rng);
      kernels::force_target("scalar");
      const std::vector<float> want = run(m, x, s.tokens);
      for (const std::string& target : kernels::available_targets()) {
        kernels::force_target(target);
        for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
          for (TokenKind kind : {TokenKind::kGenerated, TokenKind::kPrompt}) {
            const uint64_t before = kernels::amx_product_count();
            const std::vector<float> got = run(packed, x, s.tokens, p, 0, kind);
            const std::string what = std::to_string(s.rows) + "x" + std::to_string(s.cols) + ", " +
                                     std::to_string(s.tokens) + " tokens on " + target +
                                     (p != nullptr ? ", 2 threads" : ", 1 thread") +
                                     (random_bytes ? ", random bytes" : ", quantized");
            if (target == "amx" && s.tokens >= kernels::amx_min_tokens()) {
              EXPECT_GT(kernels::amx_product_count(), before) << what << ": no tile product";
            }
            ASSERT_EQ(0, std::memcmp(got.data(), want.data(), sizeof(float) * got.size())) << what;
          }
        }
      }
      kernels::force_target("");
    }
  }
}

}  // namespace
}  // namespace maas::tensor
