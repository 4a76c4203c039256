// UTF-8 helpers against independent references: Python's UTF-8 decoder (errors="replace"
// follows the same maximal-subpart rule) and GPT-2's published byte alphabet.
#include "tokenizer/unicode.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_util.h"

namespace maas::tokenizer::unicode {
namespace {

std::string hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string h;
  for (unsigned char c : s) {
    h += digits[c >> 4];
    h += digits[c & 15];
  }
  return h;
}

TEST(Unicode, SanitizeMatchesPython) {
  // Byte strings biased towards UTF-8 structure: lead bytes, continuation bytes, edge values.
  const std::vector<uint8_t> interesting = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF,
                                            0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE,
                                            0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFE, 0xFF};
  std::mt19937 rng(99);
  std::vector<std::string> inputs = {
      "",        "plain", "\xF0\x9F\xA6\x99", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE0\x80\x80",
      "\xC0\xAF"};
  for (int i = 0; i < 500; ++i) {
    std::string s;
    for (int n = static_cast<int>(rng() % 10); n > 0; --n) {
      s += static_cast<char>(interesting[rng() % interesting.size()]);
    }
    inputs.push_back(s);
  }
  std::string input;
  for (const std::string& s : inputs) input += hex(s) + "\n";
  const maas::test::CommandResult r = maas::test::run_shell(
      "/usr/bin/python3 -c \"import sys\n"
      "for l in sys.stdin.read().split('\\n')[:-1]:\n"
      "    print(bytes.fromhex(l).decode('utf-8', 'replace').encode('utf-8').hex())\"",
      input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  for (const std::string& s : inputs) {
    std::string expected;
    ASSERT_TRUE(std::getline(lines, expected));
    std::string ours;
    EXPECT_EQ(append_sanitized(s, true, ours), s.size());
    EXPECT_EQ(hex(ours), expected) << "input " << hex(s);
    EXPECT_EQ(is_valid(s), ours == s) << "input " << hex(s);
  }
}

TEST(Unicode, SanitizeHoldsBackOnlyCompletablePrefixes) {
  std::string out;
  EXPECT_EQ(append_sanitized("ab\xF0\x9F\xA6", false, out), 2u);  // 🦙 minus its last byte
  EXPECT_EQ(out, "ab");
  out.clear();
  EXPECT_EQ(append_sanitized("ab\xFF", false, out), 3u);  // 0xFF can never start a character
  EXPECT_EQ(out, "ab\xEF\xBF\xBD");
  out.clear();
  EXPECT_EQ(append_sanitized("\xE0\x80", false, out), 2u);  // E0 80 can never complete
  EXPECT_EQ(out, "\xEF\xBF\xBD\xEF\xBF\xBD");
}

// GPT-2's bytes_to_unicode(): printable bytes ! .. ~, ¡ .. ¬, ® .. ÿ stand for themselves; the
// 68 others get U+0100 onwards in byte order (so space is "Ġ" U+0120, newline "Ċ" U+010A).
TEST(Unicode, Gpt2ByteAlphabet) {
  EXPECT_EQ(byte_to_codepoint('A'), 0x41u);
  EXPECT_EQ(byte_to_codepoint(0x00), 0x100u);
  EXPECT_EQ(byte_to_codepoint(' '), 0x120u);
  EXPECT_EQ(byte_to_codepoint('\n'), 0x10Au);
  EXPECT_EQ(byte_to_codepoint(0x7F), 0x121u);
  EXPECT_EQ(byte_to_codepoint(0xAD), 0x143u);
  EXPECT_EQ(byte_to_utf8(' '), "\xC4\xA0");
  std::set<uint32_t> seen;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = byte_to_codepoint(static_cast<uint8_t>(b));
    EXPECT_TRUE(seen.insert(cp).second);
    EXPECT_EQ(codepoint_to_byte(cp), b);
  }
  EXPECT_EQ(codepoint_to_byte(0x20), -1);
  EXPECT_EQ(codepoint_to_byte(0x144), -1);
  EXPECT_EQ(codepoint_to_byte(0x1F999), -1);
}

}  // namespace
}  // namespace maas::tokenizer::unicode
