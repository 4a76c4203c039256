// GGUF (v2 and v3) reader over mmap and writer.
// Spec: the ggml project's docs/gguf.md. All integers are little-endian.
//
// The reader treats a file as untrusted: every count, length, offset and size is checked against
// the bytes present before it is used, and every failure throws gguf::Error with a message naming
// the key or tensor and what is wrong. Tensor data is never copied: TensorInfo::data points into
// the mapping, which lives as long as the File.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "gguf/tensor_type.h"

namespace maas::gguf {

// The largest general.alignment accepted (real files use 32). A bound keeps a hostile file from
// making the writer pad gigabytes when the file is written back.
inline constexpr uint32_t kMaxAlignment = 1u << 20;

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Metadata value type ids, as stored on disk.
enum class ValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
std::string_view value_type_name(ValueType t);

struct Value;
struct Array {
  ValueType elem_type = ValueType::UINT8;
  std::vector<Value> items;  // every item has type elem_type
};

// One metadata value. The variant's index equals the ValueType id, so type() is index().
struct Value {
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, Array, uint64_t, int64_t, double>;
  Storage v;

  Value() = default;
  template <typename T>
  Value(T x) : v(std::move(x)) {}  // NOLINT(google-explicit-constructor)

  ValueType type() const { return static_cast<ValueType>(v.index()); }
  bool is_integer() const;  // any of the 8 integer types
  bool is_float() const;    // FLOAT32 or FLOAT64
  // Conversions; each throws Error if the value is not of a fitting type or out of range.
  uint64_t as_uint() const;  // integer >= 0
  int64_t as_int() const;    // integer within int64
  double as_double() const;  // float or integer
  bool as_bool() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  // Human-readable rendering for `maas info` (long arrays abbreviated).
  std::string to_string(size_t max_items = 8) const;

  // Array builders for the writer.
  static Value strings(const std::vector<std::string>& xs);
  static Value floats(const std::vector<float>& xs);
  static Value int32s(const std::vector<int32_t>& xs);
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // dims[0] varies fastest (the row length); 1 to 4 dims
  TensorType type = TensorType::F32;
  uint64_t offset = 0;  // from the start of the data section, a multiple of the alignment
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the file's mapping (or buffer)

  uint64_t rows() const { return dims.empty() ? 0 : n_elements / dims[0]; }
};

class File {
 public:
  // How tensor data gets into memory. Map: the page cache's pages, mapped read-only (fast load,
  // shared between processes). Copy: read into private memory advised for huge pages (a load
  // pass over the file, but decoding streams the weights 4-10% faster here).
  enum class Load { Map, Copy };
  // Maps (or copies) the file read-only and parses it. Throws Error naming the path and the
  // problem.
  static File open(const std::string& path, Load load = Load::Map);
  // Parses a buffer the caller keeps alive for the File's lifetime (fuzzing, tests).
  static File parse(std::span<const uint8_t> bytes);

  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section in the file
  uint64_t file_size() const { return size_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;

  // Typed lookups: nullopt if the key is absent, Error if present with an unfitting type.
  std::optional<uint64_t> get_uint(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<std::vector<std::string>> get_string_array(std::string_view key) const;
  std::optional<std::vector<float>> get_float_array(std::string_view key) const;
  std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* tensor(std::string_view name) const;  // nullptr if absent

  // Load::Copy only: calls fn(writable) with the copy writable for the call (read-only before
  // and after), where writable(p) is the writable address of p, a pointer into the file's bytes
  // such as a TensorInfo's data (Error for any other); rewritten() is true from then on. Returns
  // false without calling fn for a mapped or parsed file or one already rewritten. For readers
  // that rearrange tensors in place for their kernels (the copy's bytes then differ from the
  // file's).
  using WritableData = std::function<uint8_t*(const uint8_t*)>;
  bool rewrite(const std::function<void(const WritableData&)>& fn);
  bool rewritten() const { return rewritten_; }

 private:
  File() = default;
  void parse_all(std::span<const uint8_t> bytes);

  struct Mapping;
  std::unique_ptr<Mapping> mapping_;
  bool private_copy_ = false;
  bool rewritten_ = false;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<TensorInfo> tensors_;
  // Indices into kv_ and tensors_ sorted by name: duplicate detection and lookups in O(log n).
  std::vector<size_t> kv_by_key_;
  std::vector<size_t> tensors_by_name_;
};

// Builds a GGUF v3 file. Metadata keeps insertion order (setting a key again replaces it in place).
// "general.alignment" (u32, a power of two) is honoured if set; the default is 32.
class Writer {
 public:
  void set(const std::string& key, Value v);
  void set_u32(const std::string& key, uint32_t x) { set(key, Value(x)); }
  void set_i32(const std::string& key, int32_t x) { set(key, Value(x)); }
  void set_u64(const std::string& key, uint64_t x) { set(key, Value(x)); }
  void set_f32(const std::string& key, float x) { set(key, Value(x)); }
  void set_bool(const std::string& key, bool x) { set(key, Value(x)); }
  void set_string(const std::string& key, std::string x) { set(key, Value(std::move(x))); }

  // Copies data; its size must be bytes_for(type, product of dims). Throws Error otherwise,
  // or if the name is already used.
  void add_tensor(const std::string& name, TensorType type, std::vector<uint64_t> dims,
                  std::span<const uint8_t> data);
  void add_tensor_f32(const std::string& name, std::vector<uint64_t> dims,
                      std::span<const float> data);

  std::vector<uint8_t> to_bytes() const;
  void write(const std::string& path) const;  // throws Error on I/O failure

  // Testing hook: the version written (2 or 3).
  uint32_t version = 3;

 private:
  std::vector<std::pair<std::string, Value>> kv_;
  struct PendingTensor {
    std::string name;
    TensorType type;
    std::vector<uint64_t> dims;
    std::vector<uint8_t> data;
  };
  std::vector<PendingTensor> tensors_;
};

}  // namespace maas::gguf
