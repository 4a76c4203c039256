// WeightLayout::kPanels16: Q8_0 matrices rearranged at load so that the vector kernels read 16
// rows side by side with plain loads (see ops.h for the layout). Decoding a token reads each
// weight once; in the row layout every 32-element block of 16 rows must be transposed into
// vector lanes on the fly (two 16-row transposes and a gather of the scales per block), which
// keeps a core busy for longer than the memory takes to deliver the block.
#include <cstring>
#include <vector>

#include "tensor/ops.h"
#include "tensor/panels.h"
#include "tensor/quant.h"
#include "tensor/thread_pool.h"

namespace maas::tensor {

namespace {

using panels::kBlock;
using panels::kBlockBytes;

// One panel from rows (16 rows of n_blocks blocks each) into out (16 * n_blocks * 34 bytes).
void pack_one(const uint8_t* rows, size_t row_bytes, int64_t n_blocks, uint8_t* out) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    for (int64_t i = 0; i < kPanelRows; ++i) {
      panels::write_block(rows + static_cast<size_t>(i) * row_bytes + b * kBlockBytes, i, b, out);
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
  // Each block gathered back into the row layout, then dequantized as usual.
  const uint8_t* panel = w.data + static_cast<size_t>(r / kPanelRows) * kPanelRows * w.row_bytes;
  uint8_t blk[kBlockBytes];
  for (int64_t b = 0; b < w.cols / kBlock; ++b) {
    panels::read_block(panel, r % kPanelRows, b, blk);
    dequantize_row(w.type, blk, out + b * kBlock, kBlock);
  }
}

}  // namespace maas::tensor
