// WeightLayout::kPanels16: Q8_0 matrices rearranged at load so that the vector kernels read 16
// rows side by side with plain loads (see ops.h for the layout). Decoding a token reads each
// weight once; in the row layout every 32-element block of 16 rows must be transposed into
// vector lanes on the fly (two 16-row transposes and a gather of the scales per block), which
// keeps a core busy for longer than the memory takes to deliver the block.
#include <cstring>
#include <vector>

#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/thread_pool.h"

namespace maas::tensor {

namespace {

constexpr int64_t kBlock = 32;
constexpr size_t kBlockBytes = 34;
constexpr size_t kColumnBytes = kPanelRows * kBlockBytes;  // one block column of a panel: 544

// Byte offsets within a panel's block column: the scale of row i, and quant j of row i.
constexpr size_t scale_offset(int64_t i) { return static_cast<size_t>(2 * i); }
constexpr size_t quant_offset(int64_t i, int64_t j) {
  return static_cast<size_t>(32 + 64 * (j / 4) + 4 * i + j % 4);
}

// One panel from rows (16 rows of n_blocks blocks each) into out (16 * n_blocks * 34 bytes).
void pack_one(const uint8_t* rows, size_t row_bytes, int64_t n_blocks, uint8_t* out) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* col = out + static_cast<size_t>(b) * kColumnBytes;
    for (int64_t i = 0; i < kPanelRows; ++i) {
      const uint8_t* blk = rows + static_cast<size_t>(i) * row_bytes + b * kBlockBytes;
      std::memcpy(col + scale_offset(i), blk, 2);
      for (int64_t g = 0; g < kBlock / 4; ++g)
        std::memcpy(col + quant_offset(i, 4 * g), blk + 2 + 4 * g, 4);
    }
  }
}

}  // namespace

bool can_pack_panels(const MatrixView& w) {
  return w.type == gguf::TensorType::Q8_0 && w.layout == WeightLayout::kRows && w.cols > 0 &&
         w.cols % kBlock == 0 &&
         w.row_bytes == static_cast<size_t>(w.cols / kBlock) * kBlockBytes && w.rows >= kPanelRows;
}

void pack_panels(MatrixView* w, uint8_t* data, ThreadPool* pool) {
  if (!can_pack_panels(*w) || data != w->data) return;
  const int64_t n_panels = w->rows / kPanelRows;
  const size_t panel_bytes = w->row_bytes * kPanelRows;
  const int64_t n_blocks = w->cols / kBlock;
  auto job = [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> copy(panel_bytes);
    for (int64_t p = begin; p < end; ++p) {
      uint8_t* panel = data + static_cast<size_t>(p) * panel_bytes;
      std::memcpy(copy.data(), panel, panel_bytes);
      pack_one(copy.data(), w->row_bytes, n_blocks, panel);
    }
  };
  if (pool != nullptr && pool->size() > 1) {
    pool->parallel_for(n_panels, job);
  } else {
    job(0, n_panels);
  }
  w->layout = WeightLayout::kPanels16;
}

void get_row(const MatrixView& w, int64_t r, float* out) {
  const int64_t packed_rows =
      w.layout == WeightLayout::kPanels16 ? w.rows / kPanelRows * kPanelRows : 0;
  if (r >= packed_rows) {
    dequantize_row(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, out, w.cols);
    return;
  }
  // Gather the row's blocks back into the row layout, then dequantize as usual.
  const uint8_t* panel = w.data + static_cast<size_t>(r / kPanelRows) * kPanelRows * w.row_bytes;
  const int64_t i = r % kPanelRows;
  std::vector<uint8_t> row(w.row_bytes);
  for (int64_t b = 0; b < w.cols / kBlock; ++b) {
    const uint8_t* col = panel + static_cast<size_t>(b) * kColumnBytes;
    uint8_t* blk = row.data() + b * kBlockBytes;
    std::memcpy(blk, col + scale_offset(i), 2);
    for (int64_t j = 0; j < kBlock; j += 4) std::memcpy(blk + 2 + j, col + quant_offset(i, j), 4);
  }
  dequantize_row(w.type, row.data(), out, w.cols);
}

}  // namespace maas::tensor
