#include "convert/safetensors.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "convert/convert.h"
#include "tensor/quant.h"

namespace maas::convert::safetensors {

namespace {

using json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; so do we (a real header of a model
// with tens of thousands of tensors is a few MB).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
// Deepest JSON nesting a valid header has is 3 (root / tensor / shape); allow some slack.
constexpr int kMaxJsonDepth = 16;
constexpr size_t kMaxDims = 8;

struct DTypeInfo {
  DType type;
  std::string_view name;
  uint64_t size;
};
constexpr std::array<DTypeInfo, 15> kDTypes = {{
    {DType::F32, "F32", 4},
    {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},
    {DType::F64, "F64", 8},
    {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},
    {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},
    {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},
    {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},
    {DType::BOOL, "BOOL", 1},
    {DType::F8_E4M3, "F8_E4M3", 1},
    {DType::F8_E5M2, "F8_E5M2", 1},
}};

const DTypeInfo& info(DType t) {
  for (const auto& d : kDTypes) {
    if (d.type == t) return d;
  }
  return kDTypes[0];  // unreachable: every enumerator is listed
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

TensorEntry parse_entry(const std::string& what, const std::string& name, const json& v) {
  auto fail = [&](std::string_view msg) {
    return Error(fmt::format("{}: tensor '{}': {}", what, name, msg));
  };
  if (!v.is_object()) throw fail("header entry is not a JSON object");
  TensorEntry t;
  t.name = name;

  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) throw fail("missing or non-string \"dtype\"");
  const auto& dts = dt->get_ref<const std::string&>();
  auto known = std::find_if(kDTypes.begin(), kDTypes.end(),
                            [&](const DTypeInfo& d) { return d.name == dts; });
  if (known == kDTypes.end()) throw fail(fmt::format("unknown dtype \"{}\"", dts));
  t.dtype = known->type;

  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) throw fail("missing or non-array \"shape\"");
  if (sh->size() > kMaxDims)
    throw fail(fmt::format("{} dimensions (at most {})", sh->size(), kMaxDims));
  uint64_t n = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) throw fail("shape entries must be non-negative integers");
    const auto x = d.get<uint64_t>();
    if (__builtin_mul_overflow(n, x, &n)) throw fail("shape's element count overflows");
    t.shape.push_back(x);
  }

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    throw fail("\"data_offsets\" must be [begin, end] with non-negative integers");
  }
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.end < t.begin)
    throw fail(fmt::format("data_offsets end {} is before begin {}", t.end, t.begin));
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(n, info(t.dtype).size, &bytes)) throw fail("byte size overflows");
  if (t.end - t.begin != bytes) {
    throw fail(fmt::format("data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}",
                           t.begin, t.end, t.end - t.begin, fmt::join(t.shape, "x"), dts, bytes));
  }
  return t;
}

}  // namespace

std::string_view dtype_name(DType t) { return info(t).name; }
uint64_t dtype_size(DType t) { return info(t).size; }
bool dtype_convertible(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

uint64_t TensorEntry::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // checked against overflow when parsed
  return n;
}

const TensorEntry* Header::find(std::string_view name) const {
  auto it = std::lower_bound(tensors.begin(), tensors.end(), name,
                             [](const TensorEntry& t, std::string_view n) { return t.name < n; });
  return it != tensors.end() && it->name == name ? &*it : nullptr;
}

Header parse_header(std::span<const uint8_t> file, const std::string& what) {
  if (file.size() < 8) {
    throw Error(fmt::format("{}: file too short ({} bytes) for the 8-byte header length", what,
                            file.size()));
  }
  const uint64_t header_len = read_u64_le(file.data());
  if (header_len > file.size() - 8) {
    throw Error(fmt::format("{}: header length {} runs past the end of the file ({} bytes)", what,
                            header_len, file.size()));
  }
  if (header_len > kMaxHeaderBytes) {
    throw Error(fmt::format("{}: header length {} is above the {} byte limit", what, header_len,
                            kMaxHeaderBytes));
  }
  if (header_len < 2 || file[8] != '{') {
    throw Error(
        fmt::format("{}: header is not a JSON object (bad magic or not a safetensors file)", what));
  }
  const auto* text = reinterpret_cast<const char*>(file.data() + 8);
  json root;
  try {
    // The callback only bounds nesting, so that hostile input cannot exhaust the stack.
    json::parser_callback_t depth_guard = [&](int depth, json::parse_event_t, json&) {
      if (depth > kMaxJsonDepth) throw Error(fmt::format("{}: header JSON nests too deeply", what));
      return true;
    };
    root = json::parse(text, text + header_len, depth_guard);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: header is not valid JSON: {}", what, e.what()));
  }
  if (!root.is_object()) throw Error(fmt::format("{}: header is not a JSON object", what));

  Header h;
  h.data_start = 8 + header_len;
  const uint64_t data_size = file.size() - h.data_start;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        throw Error(fmt::format("{}: __metadata__ is not a JSON object", what));
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          throw Error(fmt::format("{}: __metadata__ value of '{}' is not a string", what, mk));
        }
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    TensorEntry t = parse_entry(what, key, value);
    if (t.end > data_size) {
      throw Error(
          fmt::format("{}: tensor '{}': data_offsets [{}, {}] run past the data section ({} bytes)",
                      what, key, t.begin, t.end, data_size));
    }
    h.tensors.push_back(std::move(t));
  }
  // nlohmann's object keeps keys sorted and unique, so the list is already sorted by name.
  std::sort(h.tensors.begin(), h.tensors.end(),
            [](const TensorEntry& a, const TensorEntry& b) { return a.name < b.name; });
  return h;
}

void to_f32(DType t, const uint8_t* src, float* dst, uint64_t n) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);  // little-endian host (x86-64/aarch64), any alignment
      return;
    case DType::F16:
    case DType::BF16:
      for (uint64_t i = 0; i < n; ++i) {
        const auto h = static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
        dst[i] = t == DType::F16 ? tensor::fp16_to_fp32(h) : tensor::bf16_to_fp32(h);
      }
      return;
    default:
      throw Error(fmt::format(
          "safetensors dtype {} cannot be converted (supported: F32, F16, BF16)", dtype_name(t)));
  }
}

struct File::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr) munmap(addr, size);
  }
};

File::File(File&&) noexcept = default;
File& File::operator=(File&&) noexcept = default;
File::~File() = default;

File File::open(const std::string& path) {
  const std::string what = "safetensors file " + path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", what, std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("{}: not a regular file", what));
  }
  File f;
  f.path_ = path;
  f.mapping_ = std::make_unique<Mapping>();
  const auto size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void* addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error(fmt::format("{}: cannot map: {}", what, std::strerror(err)));
    }
    f.mapping_->addr = addr;
    f.mapping_->size = size;
  }
  ::close(fd);
  const std::span<const uint8_t> bytes(static_cast<const uint8_t*>(f.mapping_->addr), size);
  f.header_ = parse_header(bytes, what);
  return f;
}

std::span<const uint8_t> File::bytes(const TensorEntry& t) const {
  // Entries come from this file's header, whose offsets were checked against the mapping.
  const auto* base = static_cast<const uint8_t*>(mapping_->addr) + header_.data_start;
  return {base + t.begin, static_cast<size_t>(t.end - t.begin)};
}

std::vector<float> File::to_f32(const TensorEntry& t) const {
  if (!dtype_convertible(t.dtype)) {
    throw Error(
        fmt::format("{}: tensor '{}' has dtype {}, which cannot be converted (supported: F32, "
                    "F16, BF16)",
                    path_, t.name, dtype_name(t.dtype)));
  }
  std::vector<float> out(t.n_elements());
  safetensors::to_f32(t.dtype, bytes(t).data(), out.data(), out.size());
  return out;
}

}  // namespace maas::convert::safetensors
