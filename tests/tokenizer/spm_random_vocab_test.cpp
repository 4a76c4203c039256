// Differential test of the "llama" algorithm against libsentencepiece on random small BPE
// vocabularies: integer scores (many ties), UNUSED pieces, characters missing from the
// vocabulary (byte fallback), with and without the dummy prefix. The same pieces go into a GGUF
// for us and into a SentencePiece ModelProto (serialized by hand in Python: no protobuf module).
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_util.h"
#include "synthetic_vocab.h"

namespace maas::tokenizer::test {
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

// Reads "D <0|1>", "P <hex> <score> <type>" and "T <hex>" lines; prints the ids of each text.
const char* kScript = R"PY(
import struct, sys, sentencepiece as spm
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
def field(num, wire, value):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(value)
    if wire == 5:
        return key + struct.pack('<f', value)
    return key + varint(len(value)) + value
pieces, texts, dummy = b'', [], 1
for line in sys.stdin.read().split('\n'):
    parts = line.split(' ')
    if parts[0] == 'D':
        dummy = int(parts[1])
    elif parts[0] == 'P':
        pieces += field(1, 2, field(1, 2, bytes.fromhex(parts[1])) +
                        field(2, 5, float(parts[2])) + field(3, 0, int(parts[3])))
    elif parts[0] == 'T':
        texts.append(bytes.fromhex(parts[1]).decode('utf-8'))
trainer = field(3, 0, 2) + field(35, 0, 1)  # model_type BPE, byte_fallback
normalizer = field(1, 2, b'identity') + field(3, 0, dummy) + field(4, 0, 0) + field(5, 0, 1)
proto = pieces + field(2, 2, trainer) + field(3, 2, normalizer)
sp = spm.SentencePieceProcessor(model_proto=proto)
for t in texts:
    print(' '.join(map(str, sp.encode(t))))
)PY";

TEST(SpmRandomVocab, MatchesSentencePiece) {
  const std::vector<std::string> alphabet = {"a", "b", "c", "d", "\xE2\x96\x81", "\xC3\xA9"};
  const std::string dir = maas::test::scratch_dir();
  maas::test::write_file(dir + "/spm_random.py", kScript);
  for (unsigned seed = 1; seed <= 12; ++seed) {
    std::mt19937 rng(seed);
    const bool dummy_prefix = seed % 2 == 0;
    std::vector<VocabEntry> entries = spm_base_entries();
    std::set<std::string> seen;
    for (const VocabEntry& e : entries) seen.insert(e.text);
    // Single characters, except "é" in some vocabularies (then it falls back to bytes).
    for (const std::string& ch : alphabet) {
      if (ch == "\xC3\xA9" && seed % 3 == 0) continue;
      entries.push_back({ch, -10.0f - static_cast<float>(rng() % 3)});
      seen.insert(ch);
    }
    while (entries.size() < 259 + alphabet.size() + 40) {
      std::string piece;
      for (int n = 2 + static_cast<int>(rng() % 4); n > 0; --n) piece += alphabet[rng() % 5];
      if (!seen.insert(piece).second) continue;
      const TokenAttr type = rng() % 8 == 0 ? TokenAttr::UNUSED : TokenAttr::NORMAL;
      entries.push_back({piece, -static_cast<float>(rng() % 6), type});
    }
    std::vector<std::string> texts = {"", " ", "a", "  ab  "};
    const std::vector<std::string> text_chars = {"a",        "b", "c", "d", " ", "\xE2\x96\x81",
                                                 "\xC3\xA9", "x"};
    for (int i = 0; i < 40; ++i) {
      std::string t;
      for (int n = static_cast<int>(rng() % 24); n > 0; --n)
        t += text_chars[rng() % text_chars.size()];
      texts.push_back(t);
    }

    std::string input = "D " + std::to_string(dummy_prefix ? 1 : 0) + "\n";
    for (const VocabEntry& e : entries) {
      input += "P " + hex(e.text) + " " + std::to_string(static_cast<int>(e.score)) + " " +
               std::to_string(static_cast<int>(e.type)) + "\n";
    }
    for (const std::string& t : texts) input += "T " + hex(t) + "\n";
    const maas::test::CommandResult r =
        maas::test::run_shell("/usr/bin/python3 " + dir + "/spm_random.py", input);
    ASSERT_EQ(r.exit_code, 0) << r.err;

    gguf::Writer w = vocab_writer("llama", entries);
    w.set_u32("tokenizer.ggml.unknown_token_id", 0);
    w.set_bool("tokenizer.ggml.add_space_prefix", dummy_prefix);
    const auto tok = build_tokenizer(w);
    std::istringstream lines(r.out);
    for (const std::string& t : texts) {
      std::string expected;
      ASSERT_TRUE(std::getline(lines, expected));
      std::string ours;
      for (Token id : tok->encode(t, false, false)) {
        if (!ours.empty()) ours += ' ';
        ours += std::to_string(id);
      }
      EXPECT_EQ(ours, expected) << "seed " << seed << " text '" << t << "'";
    }
  }
}

}  // namespace
}  // namespace maas::tokenizer::test
