// Unicode data behind unicode::to_nfc (internal); the tables live in nfc_tables.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

namespace maas::tokenizer::unicode::nfc_data {

struct Decomposition {
  uint32_t code_point;
  uint32_t first, second;  // second == 0: a singleton decomposition
  uint8_t composes;        // 1 if first + second compose back to code_point
};
struct CombiningRange {
  uint32_t first, last;
  uint8_t combining_class;
};

extern const Decomposition kDecompositions[];  // sorted by code_point
extern const size_t kDecompositionCount;
extern const CombiningRange kCombiningClasses[];  // sorted, disjoint
extern const size_t kCombiningClassCount;

}  // namespace maas::tokenizer::unicode::nfc_data
