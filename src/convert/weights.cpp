#include <fmt/format.h>

#include "convert/convert.h"
#include "tensor/quant.h"

namespace maas::convert {

using gguf::TensorType;

TensorType stored_type(TensorType want, uint64_t row) {
  const auto* traits = gguf::type_traits(want);
  if (traits == nullptr || !tensor::can_quantize(want)) {
    throw Error(fmt::format("cannot convert weights to type {}", gguf::type_name(want)));
  }
  if (row % traits->block_size == 0) return want;
  if (traits->block_size > 32 && row % 32 == 0) return TensorType::Q8_0;
  return TensorType::F16;
}

void add_weight(gguf::Writer& w, const std::string& name, std::vector<uint64_t> dims,
                std::span<const float> data, const Options& opts) {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  if (n != data.size()) {
    throw Error(fmt::format("tensor {}: {} values given for {} elements", name, data.size(), n));
  }
  TensorType type = TensorType::F32;
  if (dims.size() == 2) type = stored_type(opts.type, dims[0]);
  if (type == TensorType::F32) {
    w.add_tensor_f32(name, std::move(dims), data);
    return;
  }
  const uint64_t row = dims[0];
  const uint64_t rows = n / row;
  const uint64_t row_bytes = *gguf::bytes_for(type, row);
  std::vector<uint8_t> out(row_bytes * rows);
  for (uint64_t r = 0; r < rows; ++r) {
    tensor::quantize_row(type, data.data() + r * row, out.data() + r * row_bytes,
                         static_cast<int64_t>(row));
  }
  w.add_tensor(name, type, std::move(dims), out);
}

}  // namespace maas::convert
