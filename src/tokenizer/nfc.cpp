// Unicode Normalization Form C (Unicode Standard Annex #15), over the tables in nfc_tables.cpp
// plus the algorithmic Hangul syllable (de)composition.
#include <algorithm>
#include <unordered_map>
#include <vector>

#include "tokenizer/nfc_tables.h"
#include "tokenizer/unicode.h"

namespace maas::tokenizer::unicode {

namespace {

using nfc_data::kCombiningClassCount;
using nfc_data::kCombiningClasses;
using nfc_data::kDecompositionCount;
using nfc_data::kDecompositions;

// Hangul syllables: S = SBase + (L * VCount + V) * TCount + T.
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// An ill-formed byte b travels through the algorithm as this value: outside Unicode, class 0,
// no decomposition, composes with nothing.
constexpr uint32_t kRawByte = 0x110000;

int combining_class(uint32_t cp) {
  const auto* end = kCombiningClasses + kCombiningClassCount;
  const auto* it = std::upper_bound(kCombiningClasses, end, cp,
                                    [](uint32_t c, const auto& r) { return c < r.first; });
  if (it == kCombiningClasses) return 0;
  --it;
  return cp <= it->last ? it->combining_class : 0;
}

const nfc_data::Decomposition* find_decomposition(uint32_t cp) {
  const auto* end = kDecompositions + kDecompositionCount;
  const auto* it = std::lower_bound(kDecompositions, end, cp,
                                    [](const auto& d, uint32_t c) { return d.code_point < c; });
  return it != end && it->code_point == cp ? it : nullptr;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const nfc_data::Decomposition* d = cp < kRawByte ? find_decomposition(cp) : nullptr;
  if (d == nullptr) {
    out.push_back(cp);
    return;
  }
  decompose(d->first, out);  // depth is bounded by the data (at most 4)
  if (d->second != 0) decompose(d->second, out);
}

const std::unordered_map<uint64_t, uint32_t>& compositions() {
  static const std::unordered_map<uint64_t, uint32_t> map = [] {
    std::unordered_map<uint64_t, uint32_t> m;
    for (size_t i = 0; i < kDecompositionCount; ++i) {
      const auto& d = kDecompositions[i];
      if (d.composes) m.emplace((uint64_t{d.first} << 32) | d.second, d.code_point);
    }
    return m;
  }();
  return map;
}

// The primary composite of a starter and a following character, or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const auto& m = compositions();
  const auto it = m.find((uint64_t{a} << 32) | b);
  return it == m.end() ? 0 : it->second;
}

}  // namespace

std::string to_nfc(std::string_view s) {
  if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; })) {
    return std::string(s);  // ASCII is always NFC
  }
  // 1. Full canonical decomposition.
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t len = valid_sequence_length(s, i);
    if (len == 0) {
      cps.push_back(kRawByte + static_cast<uint8_t>(s[i]));
      ++i;
      continue;
    }
    uint32_t cp = static_cast<uint8_t>(s[i]);
    if (len > 1) {
      cp &= 0x7Fu >> len;
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
    }
    decompose(cp, cps);
    i += len;
  }
  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  std::vector<int> classes(cps.size());
  for (size_t i = 0; i < cps.size(); ++i)
    classes[i] = cps[i] < kRawByte ? combining_class(cps[i]) : 0;
  for (size_t i = 1; i < cps.size(); ++i) {
    for (size_t j = i; j > 0 && classes[j] != 0 && classes[j - 1] > classes[j]; --j) {
      std::swap(cps[j], cps[j - 1]);
      std::swap(classes[j], classes[j - 1]);
    }
  }
  // 3. Canonical composition: a character joins the last starter unless blocked by a character
  // in between of class 0 or of a class not below its own.
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  ptrdiff_t starter = -1;
  int last_class = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    const uint32_t cp = cps[i];
    const int cls = classes[i];
    if (starter >= 0 && cp < kRawByte) {
      const bool adjacent = static_cast<size_t>(starter) + 1 == out.size();
      if (adjacent || (last_class != 0 && last_class < cls)) {
        if (const uint32_t composite = compose(out[static_cast<size_t>(starter)], cp)) {
          out[static_cast<size_t>(starter)] = composite;
          continue;
        }
      }
    }
    if (cls == 0) {
      starter = cp < kRawByte ? static_cast<ptrdiff_t>(out.size()) : -1;
      last_class = 0;
    } else {
      last_class = cls;
    }
    out.push_back(cp);
  }
  std::string result;
  result.reserve(s.size());
  for (uint32_t cp : out) {
    if (cp >= kRawByte) {
      result += static_cast<char>(cp - kRawByte);
    } else {
      append_utf8(cp, result);
    }
  }
  return result;
}

}  // namespace maas::tokenizer::unicode
