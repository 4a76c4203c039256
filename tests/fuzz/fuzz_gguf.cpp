// Fuzz target: gguf::File::parse on arbitrary bytes. A gguf::Error is the expected way to refuse
// input; anything else escaping, a sanitizer report or a broken invariant (checked with abort) is
// a bug. On success every metadata value is rendered and read through the typed getters, every
// tensor's bytes are touched, and the file is written back with gguf::Writer and parsed again,
// which must give the same metadata and tensors.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace {

using namespace maas::gguf;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_gguf: invariant broken: %s\n", what);
    std::abort();
  }
}

template <typename F>
void try_get(F get) {
  try {
    (void)get();
  } catch (const Error&) {
    // a type mismatch is reported, not a bug
  }
}

void walk(const File& f, std::span<const uint8_t> bytes) {
  const uint64_t alignment = f.alignment();
  check(alignment != 0 && (alignment & (alignment - 1)) == 0, "alignment is a power of two");
  check(f.data_offset() % alignment == 0, "data section aligned");
  for (const auto& kv : f.metadata()) {
    const std::string& key = kv.first;  // a named reference: lambdas cannot capture bindings
    const Value& value = kv.second;
    (void)value.to_string();
    (void)value.to_string(0);
    check(f.find(key) == &value, "find returns the entry");
    try_get([&] { return f.get_uint(key); });
    try_get([&] { return f.get_int(key); });
    try_get([&] { return f.get_float(key); });
    try_get([&] { return f.get_bool(key); });
    try_get([&] { return f.get_string(key); });
    try_get([&] { return f.get_string_array(key); });
    try_get([&] { return f.get_float_array(key); });
    try_get([&] { return f.get_int_array(key); });
  }
  const uint8_t* begin = bytes.data();
  const uint8_t* end = bytes.data() + bytes.size();
  unsigned sum = 0;
  for (const TensorInfo& t : f.tensors()) {
    check(f.tensor(t.name) == &t, "tensor() returns the entry");
    check(!t.dims.empty() && t.dims.size() <= 4, "1 to 4 dims");
    check(t.offset % alignment == 0, "tensor offset aligned");
    const TypeTraits* traits = type_traits(t.type);
    check(traits != nullptr, "known type");
    check(t.dims[0] % traits->block_size == 0, "whole blocks per row");
    check(bytes_for(t.type, t.n_elements) == t.n_bytes, "n_bytes matches the type");
    check(t.n_bytes > 0, "tensor has data");
    check(t.data >= begin && t.data <= end && t.n_bytes <= static_cast<uint64_t>(end - t.data),
          "tensor data inside the buffer");
    check(t.data == begin + f.data_offset() + t.offset, "data pointer matches the offset");
    sum += t.data[0] + t.data[t.n_bytes - 1];  // the sanitizers check these reads
  }
  (void)sum;
}

// Writes f back out and parses the result: same version, metadata and tensors.
void round_trip(const File& f) {
  Writer w;
  w.version = f.version();
  for (const auto& [key, value] : f.metadata()) w.set(key, value);
  for (const TensorInfo& t : f.tensors()) {
    w.add_tensor(t.name, t.type, t.dims, {t.data, static_cast<size_t>(t.n_bytes)});
  }
  const std::vector<uint8_t> bytes = w.to_bytes();
  const File g = File::parse(bytes);  // an Error here escapes: the writer made a bad file
  check(g.version() == f.version(), "round trip keeps the version");
  check(g.alignment() == f.alignment(), "round trip keeps the alignment");
  check(g.metadata().size() == f.metadata().size(), "round trip keeps the key count");
  const size_t all = std::numeric_limits<size_t>::max();
  for (size_t i = 0; i < f.metadata().size(); ++i) {
    check(g.metadata()[i].first == f.metadata()[i].first, "round trip keeps key order");
    check(g.metadata()[i].second.to_string(all) == f.metadata()[i].second.to_string(all),
          "round trip keeps values");
  }
  check(g.tensors().size() == f.tensors().size(), "round trip keeps the tensor count");
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const TensorInfo& a = f.tensors()[i];
    const TensorInfo& b = g.tensors()[i];
    check(a.name == b.name && a.type == b.type && a.dims == b.dims && a.n_bytes == b.n_bytes,
          "round trip keeps tensor infos");
    check(std::memcmp(a.data, b.data, a.n_bytes) == 0, "round trip keeps tensor data");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  std::optional<File> file;
  try {
    file.emplace(File::parse(bytes));
  } catch (const Error& e) {
    check(std::strncmp(e.what(), "gguf: ", 6) == 0, "errors start with 'gguf: '");
    return 0;
  }
  walk(*file, bytes);
  round_trip(*file);
  return 0;
}
