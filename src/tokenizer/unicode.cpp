#include "tokenizer/unicode.h"

#include <array>

namespace maas::tokenizer::unicode {

namespace {

// How a well-formed sequence starting with lead byte b continues (Unicode table 3-7): its total
// length and the allowed range of the second byte (later bytes are always 0x80..0xBF).
struct LeadInfo {
  uint8_t length = 0;  // 0: b cannot start a sequence
  uint8_t second_lo = 0x80, second_hi = 0xBF;
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0};
  if (b < 0xE0) return {2};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};  // excludes surrogates
  if (b < 0xF0) return {3};
  if (b == 0xF0) return {4, 0x90, 0xBF};  // excludes overlongs
  if (b < 0xF4) return {4};
  if (b == 0xF4) return {4, 0x80, 0x8F};  // up to U+10FFFF
  return {0};
}

// The longest well-formed prefix of a sequence starting at s[i] (i < s.size()).
struct Prefix {
  size_t length = 1;       // at least 1: an invalid byte is a maximal subpart of its own
  bool complete = false;   // the prefix is a whole sequence
  bool truncated = false;  // the prefix is incomplete only because s ends
};

Prefix maximal_prefix(std::string_view s, size_t i) {
  const LeadInfo info = lead_info(static_cast<uint8_t>(s[i]));
  if (info.length <= 1) return {1, info.length == 1, false};
  size_t n = 1;
  while (n < info.length) {
    if (i + n == s.size()) return {n, false, true};
    const auto c = static_cast<uint8_t>(s[i + n]);
    const uint8_t lo = n == 1 ? info.second_lo : 0x80;
    const uint8_t hi = n == 1 ? info.second_hi : 0xBF;
    if (c < lo || c > hi) return {n, false, false};
    ++n;
  }
  return {n, true, false};
}

struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 512> from_cp{};  // every mapped code point is below 0x144
};

const ByteMap& byte_map() {
  static const ByteMap map = [] {
    ByteMap m;
    m.from_cp.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : next++;
      m.to_cp[b] = cp;
      append_utf8(cp, m.to_utf8[b]);
      m.from_cp[cp] = static_cast<int16_t>(b);
    }
    return m;
  }();
  return map;
}

}  // namespace

size_t valid_sequence_length(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  const Prefix p = maximal_prefix(s, i);
  return p.complete ? p.length : 0;
}

bool is_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = valid_sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t append_sanitized(std::string_view s, bool at_end, std::string& out) {
  size_t i = 0;
  while (i < s.size()) {
    const Prefix p = maximal_prefix(s, i);
    const size_t n = p.length;
    if (p.complete) {
      out.append(s.substr(i, n));
    } else if (p.truncated && !at_end) {
      break;  // may still be completed by bytes that have not arrived yet
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += n;
  }
  return i;
}

uint32_t byte_to_codepoint(uint8_t b) { return byte_map().to_cp[b]; }

const std::string& byte_to_utf8(uint8_t b) { return byte_map().to_utf8[b]; }

int codepoint_to_byte(uint32_t cp) { return cp < 512 ? byte_map().from_cp[cp] : -1; }

}  // namespace maas::tokenizer::unicode
