// GGUF writer: header, metadata in insertion order, tensor infos, then each tensor's data at an
// offset aligned to general.alignment, padded with zero bytes.
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "gguf/gguf.h"

namespace maas::gguf {
namespace {

// Must not exceed the reader's limit, so that everything written reads back.
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kDefaultAlignment = 32;

class Bytes {
 public:
  std::vector<uint8_t> out;

  void uint(uint64_t x, int n_bytes) {
    for (int i = 0; i < n_bytes; ++i) out.push_back(static_cast<uint8_t>(x >> (8 * i)));
  }
  void str(const std::string& s) {
    uint(s.size(), 8);
    out.insert(out.end(), s.begin(), s.end());
  }
  void pad_to(uint64_t alignment) {
    out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
  }
};

void check_value(const Value& v, const std::string& key, int depth) {
  if (const Array* a = std::get_if<Array>(&v.v)) {
    if (depth >= kMaxArrayDepth) {
      throw Error(fmt::format("gguf: key '{}': arrays nested more than {} levels deep", key,
                              kMaxArrayDepth));
    }
    if (static_cast<uint32_t>(a->elem_type) > static_cast<uint32_t>(ValueType::FLOAT64)) {
      throw Error(fmt::format("gguf: key '{}': unknown array element type {}", key,
                              static_cast<uint32_t>(a->elem_type)));
    }
    for (const Value& item : a->items) {
      if (item.type() != a->elem_type) {
        throw Error(fmt::format("gguf: key '{}': array of {} holds a {} item", key,
                                value_type_name(a->elem_type), value_type_name(item.type())));
      }
      check_value(item, key, depth + 1);
    }
  }
}

void put_value(Bytes& b, const Value& v) {
  std::visit(
      [&b](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          b.str(x);
        } else if constexpr (std::is_same_v<T, Array>) {
          b.uint(static_cast<uint32_t>(x.elem_type), 4);
          b.uint(x.items.size(), 8);
          for (const Value& item : x.items) put_value(b, item);
        } else if constexpr (std::is_same_v<T, bool>) {
          b.uint(x ? 1 : 0, 1);
        } else if constexpr (std::is_same_v<T, float>) {
          uint32_t bits;
          std::memcpy(&bits, &x, sizeof bits);
          b.uint(bits, 4);
        } else if constexpr (std::is_same_v<T, double>) {
          uint64_t bits;
          std::memcpy(&bits, &x, sizeof bits);
          b.uint(bits, 8);
        } else {
          b.uint(static_cast<uint64_t>(x), sizeof(T));  // two's complement for signed types
        }
      },
      v.v);
}

uint64_t round_up(uint64_t x, uint64_t alignment) {
  return (x + alignment - 1) / alignment * alignment;
}

// A file descriptor closed on scope exit; the temporary file is removed unless committed.
struct TempFile {
  std::string path;
  int fd = -1;
  bool committed = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!committed && !path.empty()) ::unlink(path.c_str());
  }
};

void write_all(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(fmt::format("gguf: {}: write failed: {}", path, std::strerror(errno)));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

void Writer::set(const std::string& key, Value v) {
  if (key == "general.alignment") {
    const uint32_t* a = std::get_if<uint32_t>(&v.v);
    if (!a || *a == 0 || (*a & (*a - 1)) != 0 || *a > kMaxAlignment) {
      throw Error(
          fmt::format("gguf: general.alignment must be a uint32 power of two <= 2^20, got {} {}",
                      value_type_name(v.type()), v.to_string(2)));
    }
  }
  check_value(v, key, 0);
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  kv_.emplace_back(key, std::move(v));
}

void Writer::add_tensor(const std::string& name, TensorType type, std::vector<uint64_t> dims,
                        std::span<const uint8_t> data) {
  for (const auto& t : tensors_) {
    if (t.name == name) throw Error(fmt::format("gguf: duplicate tensor name '{}'", name));
  }
  const TypeTraits* traits = type_traits(type);
  if (!traits) {
    throw Error(fmt::format("gguf: tensor '{}': unknown tensor type id {}", name,
                            static_cast<uint32_t>(type)));
  }
  if (dims.empty() || dims.size() > kMaxDims) {
    throw Error(fmt::format("gguf: tensor '{}': {} dimensions, expected 1 to {}", name, dims.size(),
                            kMaxDims));
  }
  uint64_t n = 1;
  for (uint64_t d : dims) {
    if (d == 0) throw Error(fmt::format("gguf: tensor '{}': a dimension is 0", name));
    if (__builtin_mul_overflow(n, d, &n)) {
      throw Error(fmt::format("gguf: tensor '{}': element count overflows", name));
    }
  }
  if (dims[0] % traits->block_size != 0) {
    throw Error(
        fmt::format("gguf: tensor '{}': row length {} is not a multiple of the {} block "
                    "size {}",
                    name, dims[0], traits->name, traits->block_size));
  }
  const std::optional<uint64_t> bytes = bytes_for(type, n);
  if (!bytes || *bytes != data.size()) {
    throw Error(fmt::format("gguf: tensor '{}': {} bytes of data given, {} {} elements need {}",
                            name, data.size(), n, traits->name,
                            bytes ? std::to_string(*bytes) : std::string("more than 2^64")));
  }
  tensors_.push_back({name, type, std::move(dims), {data.begin(), data.end()}});
}

void Writer::add_tensor_f32(const std::string& name, std::vector<uint64_t> dims,
                            std::span<const float> data) {
  add_tensor(name, TensorType::F32, std::move(dims),
             {reinterpret_cast<const uint8_t*>(data.data()), data.size_bytes()});
}

namespace {

// The header (through the padding before the data section) and where each tensor's data goes.
struct Layout {
  std::vector<uint8_t> header;
  std::vector<uint64_t> offsets;  // from the start of the data section
  uint64_t alignment = kDefaultAlignment;
  uint64_t data_size = 0;  // padded
};

template <typename Tensors>
Layout layout(uint32_t version, const std::vector<std::pair<std::string, Value>>& kv,
              const Tensors& tensors) {
  if (version != 2 && version != 3) {
    throw Error(fmt::format("gguf: cannot write GGUF version {} (only 2 and 3)", version));
  }
  Layout l;
  for (const auto& [key, value] : kv) {
    if (key == "general.alignment") l.alignment = std::get<uint32_t>(value.v);
  }
  Bytes b;
  for (char ch : std::string_view("GGUF")) b.out.push_back(static_cast<uint8_t>(ch));
  b.uint(version, 4);
  b.uint(tensors.size(), 8);
  b.uint(kv.size(), 8);
  for (const auto& [key, value] : kv) {
    b.str(key);
    b.uint(static_cast<uint32_t>(value.type()), 4);
    put_value(b, value);
  }
  for (const auto& t : tensors) {
    b.str(t.name);
    b.uint(t.dims.size(), 4);
    for (uint64_t d : t.dims) b.uint(d, 8);
    b.uint(static_cast<uint32_t>(t.type), 4);
    b.uint(l.data_size, 8);
    l.offsets.push_back(l.data_size);
    l.data_size += round_up(t.data.size(), l.alignment);
  }
  b.pad_to(l.alignment);
  l.header = std::move(b.out);
  return l;
}

}  // namespace

std::vector<uint8_t> Writer::to_bytes() const {
  Layout l = layout(version, kv_, tensors_);
  std::vector<uint8_t> out = std::move(l.header);
  const uint64_t data_start = out.size();
  out.resize(data_start + l.data_size, 0);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    std::memcpy(out.data() + data_start + l.offsets[i], tensors_[i].data.data(),
                tensors_[i].data.size());
  }
  return out;
}

void Writer::write(const std::string& path) const {
  const Layout l = layout(version, kv_, tensors_);
  // Write beside the target and rename over it, so a failed write never leaves a partial file
  // under the final name.
  TempFile tmp;
  static std::atomic<uint64_t> counter{0};
  for (int attempt = 0; tmp.fd < 0; ++attempt) {
    tmp.path = fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter++);
    // 0666 and O_EXCL: the umask applies as for any new file, and a stale name is never reused.
    tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (tmp.fd < 0 && (errno != EEXIST || attempt >= 100)) {
      const int err = errno;
      tmp.path.clear();
      throw Error(
          fmt::format("gguf: {}: cannot create temporary file: {}", path, std::strerror(err)));
    }
  }
  write_all(tmp.fd, l.header.data(), l.header.size(), path);
  static const uint8_t kZeros[64] = {};
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& data = tensors_[i].data;
    write_all(tmp.fd, data.data(), data.size(), path);
    uint64_t pad = round_up(data.size(), l.alignment) - data.size();
    while (pad > 0) {
      const size_t n = std::min<uint64_t>(pad, sizeof kZeros);
      write_all(tmp.fd, kZeros, n, path);
      pad -= n;
    }
  }
  // fsync before rename: after a crash the final name holds either the old file or the new one.
  const bool synced = ::fsync(tmp.fd) == 0;
  int err = errno;
  const bool closed = ::close(tmp.fd) == 0;
  if (synced) err = errno;
  tmp.fd = -1;
  if (!synced || !closed) {
    throw Error(fmt::format("gguf: {}: write failed: {}", path, std::strerror(err)));
  }
  if (::rename(tmp.path.c_str(), path.c_str()) != 0) {
    throw Error(fmt::format("gguf: {}: cannot rename temporary file into place: {}", path,
                            std::strerror(errno)));
  }
  tmp.committed = true;
}

}  // namespace maas::gguf
