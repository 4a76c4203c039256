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

TEST(Unicode, NfcMatchesPython) {
  // Letters, combining marks of several classes, precomposed letters, Hangul syllables and jamo,
  // singletons and composition exclusions, starter + starter compositions (Oriya), emoji.
  const std::vector<std::string> pool = {"a",
                                         "e",
                                         "A",
                                         "o",
                                         "u",
                                         " ",
                                         "\xCC\x81" /* U+0301, 230 */,
                                         "\xCC\x80" /* U+0300, 230 */,
                                         "\xCC\x96" /* U+0316, 220 */,
                                         "\xCC\xA3" /* U+0323, 220 */,
                                         "\xCD\x85" /* U+0345, 240 */,
                                         "\xCC\x9B" /* U+031B, 216 */,
                                         "\xCC\x88" /* U+0308 */,
                                         "\xCC\x84" /* U+0304 */,
                                         "\xC3\xA9" /* é */,
                                         "\xC7\x96" /* ǖ */,
                                         "\xE1\xB8\x97" /* ḗ */,
                                         "\xE1\xBB\x87" /* ệ */,
                                         "\xEA\xB0\x80" /* 가 */,
                                         "\xED\x9E\xA3" /* 힣 */,
                                         "\xE1\x84\x80" /* L */,
                                         "\xE1\x85\xA1" /* V */,
                                         "\xE1\x86\xA8" /* T */,
                                         "\xE2\x84\xAB" /* Angstrom sign */,
                                         "\xE2\x84\xA6" /* Ohm sign */,
                                         "\xE0\xA5\x98" /* U+0958, excluded */,
                                         "\xE0\xA4\x95" /* U+0915 */,
                                         "\xE0\xA4\xBC" /* U+093C nukta */,
                                         "\xE0\xAD\x87" /* U+0B47 */,
                                         "\xE0\xAC\xBE" /* U+0B3E */,
                                         "\xF0\x9F\xA6\x99",
                                         "\xE6\x97\xA5",
                                         "\xCE\xB1" /* α */,
                                         "\xCD\x82" /* U+0342 */,
                                         "\xE1\xBE\xB3" /* ᾳ */};
  std::mt19937 rng(5);
  std::vector<std::string> inputs = {"", "plain ascii", "e\xCC\x81",
                                     "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"};
  for (int i = 0; i < 600; ++i) {
    std::string s;
    for (int n = static_cast<int>(rng() % 8); n > 0; --n) s += pool[rng() % pool.size()];
    inputs.push_back(s);
  }
  std::string input;
  for (const std::string& s : inputs) input += hex(s) + "\n";
  const maas::test::CommandResult r = maas::test::run_shell(
      "/usr/bin/python3 -c \"import sys, unicodedata\n"
      "for l in sys.stdin.read().split('\\n')[:-1]:\n"
      "    print(unicodedata.normalize('NFC', bytes.fromhex(l).decode()).encode().hex())\"",
      input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  for (const std::string& s : inputs) {
    std::string expected;
    ASSERT_TRUE(std::getline(lines, expected));
    EXPECT_EQ(hex(to_nfc(s)), expected) << "input " << hex(s);
  }
}

TEST(Unicode, NfcKeepsIllFormedBytes) {
  // e + U+0301 composes; a stray byte between them blocks it and survives.
  EXPECT_EQ(to_nfc("e\xCC\x81\xFF"), "\xC3\xA9\xFF");
  EXPECT_EQ(to_nfc("e\xFF\xCC\x81"), "e\xFF\xCC\x81");
  EXPECT_EQ(to_nfc("\xF0\x9F\xA6"), "\xF0\x9F\xA6");
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
