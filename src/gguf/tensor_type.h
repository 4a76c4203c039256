// ggml tensor type ids and their block geometry, as stored in GGUF files.
// The geometry is part of the file format: the reader needs it to check every tensor's size.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace maas::gguf {

// Numeric values are the on-disk ids (ggml_type); never renumber.
enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
};

struct TypeTraits {
  std::string_view name;  // lower case, as llama.cpp prints it ("q4_k")
  uint32_t block_size;    // elements per block
  uint32_t block_bytes;   // bytes per block
};

// Traits of a known type id, or nullptr for an id this build does not know.
const TypeTraits* type_traits(uint32_t id);
inline const TypeTraits* type_traits(TensorType t) { return type_traits(static_cast<uint32_t>(t)); }

std::string_view type_name(TensorType t);  // "unknown" for an unknown id
// Parses a name such as "q4_k", "Q8_0", "f16" (case-insensitive).
std::optional<TensorType> type_from_name(std::string_view name);

// Bytes needed for n elements of type t; nullopt if t is unknown, n is not a multiple of the block
// size, or the result overflows.
std::optional<uint64_t> bytes_for(TensorType t, uint64_t n);

}  // namespace maas::gguf
