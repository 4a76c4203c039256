// The byte layout of WeightLayout::kPanels16 (ops.h), shared by its packer (panels.cpp) and the
// kernels that read it (kernels_scalar.cpp, kernels_q32.cpp, kernels_amx.cpp). Internal to
// src/tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "tensor/ops.h"

namespace maas::tensor::panels {

inline constexpr int64_t kRows = kPanelRows;
inline constexpr int64_t kBlock = 32;      // elements per Q8_0 block
inline constexpr size_t kBlockBytes = 34;  // a Q8_0 block: fp16 scale, 32 int8 quants
inline constexpr size_t kColumnBytes = kRows * kBlockBytes;  // one block column of a panel
inline constexpr size_t kQuantsOffset = 32;  // the 16 scales come first in a block column
inline constexpr size_t kGroupBytes = 64;    // quants 4g..4g+3 of the 16 rows

// Within a block column: the scale of row i, and quant j of row i.
constexpr size_t scale_offset(int64_t i) { return static_cast<size_t>(2 * i); }
constexpr size_t quant_offset(int64_t i, int64_t j) {
  return kQuantsOffset + static_cast<size_t>(j / 4) * kGroupBytes +
         static_cast<size_t>(4 * i + j % 4);
}

// Block b of row i of the panel at `panel`, back in Q8_0's block layout.
inline void read_block(const uint8_t* panel, int64_t i, int64_t b, uint8_t out[kBlockBytes]) {
  const uint8_t* col = panel + static_cast<size_t>(b) * kColumnBytes;
  std::memcpy(out, col + scale_offset(i), 2);
  for (int64_t j = 0; j < kBlock; j += 4) std::memcpy(out + 2 + j, col + quant_offset(i, j), 4);
}

// The inverse: a row-layout block written as block b of row i of the panel at `panel`.
inline void write_block(const uint8_t in[kBlockBytes], int64_t i, int64_t b, uint8_t* panel) {
  uint8_t* col = panel + static_cast<size_t>(b) * kColumnBytes;
  std::memcpy(col + scale_offset(i), in, 2);
  for (int64_t j = 0; j < kBlock; j += 4) std::memcpy(col + quant_offset(i, j), in + 2 + j, 4);
}

}  // namespace maas::tensor::panels
