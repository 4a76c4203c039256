// Reader for the safetensors format (Hugging Face): an 8-byte little-endian header length N, N
// bytes of JSON mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the byte after the header) plus an optional "__metadata__" object of strings, then
// the tensor bytes (row-major, little-endian).
//
// Files are untrusted: the header length, every offset, every shape and the JSON itself are
// checked before use, and any problem throws convert::Error naming the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace maas::convert::safetensors {

// The dtypes of the format. Only F32, F16 and BF16 convert to f32; a tensor of another dtype is
// accepted by the parser (its size is still checked) and refused when its values are read.
enum class DType {
  F32,
  F16,
  BF16,
  F64,
  I8,
  U8,
  I16,
  U16,
  I32,
  U32,
  I64,
  U64,
  BOOL,
  F8_E4M3,
  F8_E5M2
};
std::string_view dtype_name(DType t);
uint64_t dtype_size(DType t);
bool dtype_convertible(DType t);

struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;  // as stored: shape[0] is the slowest-varying (PyTorch order)
  uint64_t begin = 0;           // byte range within the data section
  uint64_t end = 0;
  uint64_t n_elements() const;
};

struct Header {
  std::vector<TensorEntry> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data section (8 + header length)

  const TensorEntry* find(std::string_view name) const;
};

// Parses and checks the header of a whole safetensors file held in `file` (its bytes from offset
// 0 to the end). `what` names the file in error messages.
Header parse_header(std::span<const uint8_t> file, const std::string& what = "safetensors");

// A safetensors file mapped read-only.
class File {
 public:
  static File open(const std::string& path);
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  // The raw bytes of one tensor of this file.
  std::span<const uint8_t> bytes(const TensorEntry& t) const;
  // The tensor converted to f32, in stored (row-major) order.
  std::vector<float> to_f32(const TensorEntry& t) const;

 private:
  File() = default;
  struct Mapping;
  std::unique_ptr<Mapping> mapping_;
  std::string path_;
  Header header_;
};

// Converts `n` elements of type `t` at `src` (any alignment) into f32.
void to_f32(DType t, const uint8_t* src, float* dst, uint64_t n);

}  // namespace maas::convert::safetensors
