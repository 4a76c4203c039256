// Assembles GGUF bytes field by field, straight from the spec (little-endian, strings as u64
// length + bytes), independently of gguf::Writer: the reader's tests use it for known-answer and
// deliberately malformed files.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace maas::gguf::test {

struct ByteBuilder {
  std::vector<uint8_t> b;

  ByteBuilder& raw(std::string_view s) {
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  ByteBuilder& le(uint64_t x, int n) {
    for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(x >> (8 * i)));
    return *this;
  }
  ByteBuilder& u8(uint8_t x) { return le(x, 1); }
  ByteBuilder& u16(uint16_t x) { return le(x, 2); }
  ByteBuilder& u32(uint32_t x) { return le(x, 4); }
  ByteBuilder& u64(uint64_t x) { return le(x, 8); }
  ByteBuilder& f32(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    return u32(bits);
  }
  ByteBuilder& f64(double x) {
    uint64_t bits;
    std::memcpy(&bits, &x, 8);
    return u64(bits);
  }
  ByteBuilder& str(std::string_view s) { return u64(s.size()).raw(s); }
  // GGUF header: magic, version, tensor count, metadata count.
  ByteBuilder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
  }
  // Key and value type id; the caller appends the value.
  ByteBuilder& key(std::string_view k, uint32_t type) { return str(k).u32(type); }
  ByteBuilder& tensor_info(std::string_view name, const std::vector<uint64_t>& dims, uint32_t type,
                           uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) u64(d);
    return u32(type).u64(offset);
  }
  ByteBuilder& pad_to(size_t alignment) {
    while (b.size() % alignment) b.push_back(0);
    return *this;
  }
  ByteBuilder& fill(size_t n, uint8_t start) {
    for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(start + i));
    return *this;
  }
  size_t size() const { return b.size(); }
  std::span<const uint8_t> span() const { return b; }
};

}  // namespace maas::gguf::test
