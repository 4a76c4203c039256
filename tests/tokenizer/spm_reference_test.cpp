// Cross-checks the "llama" tokenizer on the Llama 2 GGUF vocabulary against libsentencepiece
// (Python's sentencepiece module) with Llama 2's own tokenizer.model, an independent reference.
#include <gtest/gtest.h>

#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer_test_util.h"

namespace maas::tokenizer::test {
namespace {

std::string to_hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : s) {
    hex += digits[c >> 4];
    hex += digits[c & 15];
  }
  return hex;
}

std::string from_hex(const std::string& hex) {
  std::string s;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    s += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return s;
}

// Hand-picked strings, then random mixes of fragments from many scripts and whitespace shapes.
std::vector<std::string> test_strings() {
  std::vector<std::string> out = {
      "Hello world",
      " Hello world",
      "  leading and trailing  ",
      "\n\nnewlines\n",
      "\t\ttabs\tand spaces \t ",
      "a",
      " ",
      "1234567890",
      "3.14159 2,718 1e-9 0x1F",
      "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it",
      "The quick brown fox jumps over the lazy dog.",
      "日本語のテキストです。東京タワー",
      "中文分词测试，你好世界！",
      "한국어 문장입니다",
      "Привет, как дела? Ёжик",
      "Ελληνικά γράμματα",
      "עברית ומספרים 123",
      "مرحبا بالعالم",
      "हिन्दी भाषा",
      "ภาษาไทย",
      "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅",
      "👨‍👩‍👧‍👦 family, 🇩🇪 flag, 🤷🏽‍♀️",
      "e\xCC\x81 combining acute, n\xCC\x83",
      "\xF0\x9D\x94\x98\xF0\x9D\x94\xAB math letters",
      "\xEF\xBB\xBF"
      "BOM at start",
      "zero\xE2\x80\x8Bwidth\xE2\x80\x8Cjoiner",
      "\xE3\x80\x80ideographic space\xC2\xA0nbsp",
      "private \xEE\x80\x80 use \xF3\xB0\x80\x80",
      "<s> </s> <unk> [INST] <<SYS>>",
      "▁ literal lower block ▁▁",
      "code: for (int i = 0; i < n; ++i) { x += y[i]; }",
      "{\"json\": [1, 2, 3], \"nested\": {\"k\": null}}",
      "https://example.com/path?query=1&x=y#frag",
      "!!!!!!??????......,,,,,''''\"\"\"\"",
      "-----=======*****#####",
      "ALLCAPS lowercase MiXeD CaSe",
      "\r\nwindows\r\nline\r\nendings\r\n",
      "ied 4 ½ months",
      "Führer Äpfel Öl Übermut ß",
      "Cà phê Việt Nam",
  };
  const std::vector<std::string> fragments = {"the",
                                              "The",
                                              " of",
                                              "and",
                                              "tokenizer",
                                              "Llama",
                                              "antidisestablishment",
                                              "xyzzy",
                                              "qwj",
                                              " ",
                                              "  ",
                                              "   ",
                                              "\t",
                                              "\n",
                                              "\n\n",
                                              "\r\n",
                                              " \n ",
                                              "0",
                                              "7",
                                              "42",
                                              "2024",
                                              "3.5",
                                              "1,000",
                                              ".",
                                              ",",
                                              "!",
                                              "?",
                                              "'",
                                              "\"",
                                              "(",
                                              ")",
                                              "[",
                                              "]",
                                              "{",
                                              "}",
                                              "<",
                                              ">",
                                              "/",
                                              "\\",
                                              "#",
                                              "@",
                                              "$",
                                              "%",
                                              "^",
                                              "&",
                                              "*",
                                              "-",
                                              "_",
                                              "+",
                                              "=",
                                              "~",
                                              "`",
                                              "|",
                                              ";",
                                              ":",
                                              "é",
                                              "ñ",
                                              "ü",
                                              "ø",
                                              "ç",
                                              "ß",
                                              "Ω",
                                              "π",
                                              "λ",
                                              "Ж",
                                              "я",
                                              "ш",
                                              "ü",
                                              "日",
                                              "本",
                                              "語",
                                              "中",
                                              "文",
                                              "字",
                                              "한",
                                              "국",
                                              "あ",
                                              "カ",
                                              "ー",
                                              "の",
                                              "😀",
                                              "🚀",
                                              "👍🏿",
                                              "❤️",
                                              "✅",
                                              "🦙",
                                              "∑",
                                              "∞",
                                              "≠",
                                              "→",
                                              "€",
                                              "£",
                                              "¥",
                                              "©",
                                              "™",
                                              "\xE2\x80\x94",
                                              "\xE2\x80\x9C",
                                              "\xE2\x80\x9D",
                                              "\xC2\xA0",
                                              "\xE3\x80\x80",
                                              "\xE0\xB8\x81",
                                              "\xD8\xB9",
                                              "\xE1\x9E\x80",
                                              "\xF0\x90\x8D\x88",
                                              "\xF0\x9F\xA7\xAC",
                                              "▁",
                                              "<s>",
                                              "</s>"};
  std::mt19937 rng(20241129);
  std::uniform_int_distribution<size_t> pick(0, fragments.size() - 1);
  std::uniform_int_distribution<int> length(1, 24);
  for (int i = 0; i < 320; ++i) {
    std::string s;
    for (int n = length(rng); n > 0; --n) s += fragments[pick(rng)];
    out.push_back(s);
  }
  return out;
}

TEST(SpmReference, MatchesSentencePiece) {
  const std::string model = maas::test::shared_dir() + "/models/llama2-tokenizer/tokenizer.model";
  const std::string dir = maas::test::scratch_dir();
  const std::vector<std::string> strings = test_strings();
  std::string input;
  for (const std::string& s : strings) input += to_hex(s) + "\n";
  // Prints, per input line, the ids and then the hex of decode(ids).
  const std::string script =
      "import sys, sentencepiece as spm\n"
      "sp = spm.SentencePieceProcessor(model_file=sys.argv[1])\n"
      "for line in sys.stdin.read().split('\\n')[:-1]:\n"
      "    ids = sp.encode(bytes.fromhex(line).decode('utf-8'))\n"
      "    print(' '.join(map(str, ids)))\n"
      "    print(sp.decode(ids).encode('utf-8').hex())\n";
  maas::test::write_file(dir + "/spm_ref.py", script);
  const maas::test::CommandResult r =
      maas::test::run_shell("/usr/bin/python3 " + dir + "/spm_ref.py '" + model + "'", input);
  ASSERT_EQ(r.exit_code, 0) << r.err;

  std::istringstream lines(r.out);
  const Tokenizer& tok = llama_spm();
  int mismatches = 0;
  for (const std::string& s : strings) {
    std::string ids_line, decoded_hex;
    ASSERT_TRUE(std::getline(lines, ids_line) && std::getline(lines, decoded_hex));
    const std::vector<Token> ids = tok.encode(s, false, false);
    std::string ours = ids_to_string(ids);
    if (!ours.empty()) ours.erase(0, 1);
    if (ours != ids_line) {
      ++mismatches;
      ADD_FAILURE() << "input '" << s << "'\n  sentencepiece: " << ids_line
                    << "\n  ours:          " << ours;
    }
    EXPECT_EQ(tok.decode(ids), from_hex(decoded_hex)) << "decode of '" << s << "'";
  }
  EXPECT_EQ(mismatches, 0) << "of " << strings.size() << " strings";
}

}  // namespace
}  // namespace maas::tokenizer::test
