#include "gguf/tensor_type.h"

#include <array>

namespace maas::gguf {
namespace {

// Indexed by on-disk id. Ids 4 and 5 (the old Q4_2/Q4_3) and 31-33 (the removed interleaved
// Q4_0_x_y layouts) are retired in ggml and stay unknown here: a file using them is refused.
// Geometry follows the ggml block structs, e.g. Q4_K = fp16 d + fp16 dmin + 12 scale bytes +
// 128 bytes of nibbles = 144 bytes per 256 elements.
constexpr uint32_t kNumIds = 36;
constexpr std::array<TypeTraits, kNumIds> kTraits = [] {
  std::array<TypeTraits, kNumIds> t{};
  auto set = [&t](TensorType id, std::string_view name, uint32_t block_size, uint32_t bytes) {
    t[static_cast<uint32_t>(id)] = TypeTraits{name, block_size, bytes};
  };
  set(TensorType::F32, "f32", 1, 4);
  set(TensorType::F16, "f16", 1, 2);
  set(TensorType::Q4_0, "q4_0", 32, 18);
  set(TensorType::Q4_1, "q4_1", 32, 20);
  set(TensorType::Q5_0, "q5_0", 32, 22);
  set(TensorType::Q5_1, "q5_1", 32, 24);
  set(TensorType::Q8_0, "q8_0", 32, 34);
  set(TensorType::Q8_1, "q8_1", 32, 36);
  set(TensorType::Q2_K, "q2_k", 256, 84);
  set(TensorType::Q3_K, "q3_k", 256, 110);
  set(TensorType::Q4_K, "q4_k", 256, 144);
  set(TensorType::Q5_K, "q5_k", 256, 176);
  set(TensorType::Q6_K, "q6_k", 256, 210);
  set(TensorType::Q8_K, "q8_k", 256, 292);
  set(TensorType::IQ2_XXS, "iq2_xxs", 256, 66);
  set(TensorType::IQ2_XS, "iq2_xs", 256, 74);
  set(TensorType::IQ3_XXS, "iq3_xxs", 256, 98);
  set(TensorType::IQ1_S, "iq1_s", 256, 50);
  set(TensorType::IQ4_NL, "iq4_nl", 32, 18);
  set(TensorType::IQ3_S, "iq3_s", 256, 110);
  set(TensorType::IQ2_S, "iq2_s", 256, 82);
  set(TensorType::IQ4_XS, "iq4_xs", 256, 136);
  set(TensorType::I8, "i8", 1, 1);
  set(TensorType::I16, "i16", 1, 2);
  set(TensorType::I32, "i32", 1, 4);
  set(TensorType::I64, "i64", 1, 8);
  set(TensorType::F64, "f64", 1, 8);
  set(TensorType::IQ1_M, "iq1_m", 256, 56);
  set(TensorType::BF16, "bf16", 1, 2);
  set(TensorType::TQ1_0, "tq1_0", 256, 54);
  set(TensorType::TQ2_0, "tq2_0", 256, 66);
  return t;
}();

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

const TypeTraits* type_traits(uint32_t id) {
  if (id >= kNumIds || kTraits[id].block_size == 0) return nullptr;
  return &kTraits[id];
}

std::string_view type_name(TensorType t) {
  const TypeTraits* traits = type_traits(t);
  return traits ? traits->name : std::string_view("unknown");
}

std::optional<TensorType> type_from_name(std::string_view name) {
  for (uint32_t id = 0; id < kNumIds; ++id) {
    const TypeTraits& t = kTraits[id];
    if (t.block_size == 0 || t.name.size() != name.size()) continue;
    bool equal = true;
    for (size_t i = 0; i < name.size() && equal; ++i) equal = lower(name[i]) == t.name[i];
    if (equal) return static_cast<TensorType>(id);
  }
  return std::nullopt;
}

std::optional<uint64_t> bytes_for(TensorType t, uint64_t n) {
  const TypeTraits* traits = type_traits(t);
  if (!traits || n % traits->block_size != 0) return std::nullopt;
  const uint64_t blocks = n / traits->block_size;
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(blocks, static_cast<uint64_t>(traits->block_bytes), &bytes)) {
    return std::nullopt;
  }
  return bytes;
}

}  // namespace maas::gguf
