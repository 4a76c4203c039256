// Fuzz target: the safetensors header parser (length, JSON, dtypes, shapes, offsets). Every
// entry it accepts must describe bytes inside the buffer, which reading them here checks under
// AddressSanitizer.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "convert/convert.h"
#include "convert/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace st = maas::convert::safetensors;
  try {
    const st::Header h = st::parse_header({data, size}, "fuzz input");
    for (const st::TensorEntry& t : h.tensors) {
      if (!st::dtype_convertible(t.dtype) || t.n_elements() > (1u << 16)) continue;
      std::vector<float> out(t.n_elements());
      st::to_f32(t.dtype, data + h.data_start + t.begin, out.data(), out.size());
    }
  } catch (const maas::convert::Error&) {
    // Refusing bad input is the expected outcome.
  }
  return 0;
}
