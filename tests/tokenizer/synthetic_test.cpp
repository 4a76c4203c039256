// Small hand-made vocabularies: each expected tokenization is worked out by hand from the
// algorithm's definition (SentencePiece's bpe_model.cc for "llama", GPT-2's bpe() for "gpt2").
// Also: metadata that must be rejected with a clear message.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "synthetic_vocab.h"
#include "tokenizer/unicode.h"

namespace maas::tokenizer::test {
namespace {

using Ids = std::vector<Token>;

// ---- "llama" --------------------------------------------------------------------------------

// Ids 259.. of the entries below.
enum : Token { kSpace = 259, kA, kB, kC, kD, kAB, kBC, kABC, kABCD, kAA, kSpaceA, kTag };

gguf::Writer tiny_spm(bool add_space_prefix) {
  std::vector<VocabEntry> v = spm_base_entries();
  v.push_back({"\xE2\x96\x81", -10});  // "▁"
  v.push_back({"a", -10});
  v.push_back({"b", -10});
  v.push_back({"c", -10});
  v.push_back({"d", -10});
  v.push_back({"ab", -1});
  v.push_back({"bc", -2});
  v.push_back({"abc", 0, TokenAttr::UNUSED});
  v.push_back({"abcd", -5});
  v.push_back({"aa", -1});
  v.push_back(
      {"\xE2\x96\x81"
       "a",
       -3});
  v.push_back({"<tag>", 0, TokenAttr::USER_DEFINED});
  gguf::Writer w = vocab_writer("llama", v);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_bool("tokenizer.ggml.add_space_prefix", add_space_prefix);
  return w;
}

TEST(SyntheticSpm, HighestScoreFirstLeftmostOnTies) {
  const auto tok = build_tokenizer(tiny_spm(false));
  // ab (-1) beats bc (-2).
  EXPECT_EQ(tok->encode("bc", false, false), (Ids{kBC}));
  // "aaa": both "aa" pairs score -1; the left one merges first.
  EXPECT_EQ(tok->encode("aaa", false, false), (Ids{kAA, kA}));
  EXPECT_EQ(tok->encode("aaaa", false, false), (Ids{kAA, kAA}));
}

TEST(SyntheticSpm, UnusedPiecesMergeButAreSplitBack) {
  const auto tok = build_tokenizer(tiny_spm(false));
  // a b c -> ab c -> abc (UNUSED, score 0): output as the two parts it was merged from.
  EXPECT_EQ(tok->encode("abc", false, false), (Ids{kAB, kC}));
  // ... but abc can still merge on: abc d -> abcd.
  EXPECT_EQ(tok->encode("abcd", false, false), (Ids{kABCD}));
}

TEST(SyntheticSpm, SpacePrefixAndByteFallback) {
  const auto with = build_tokenizer(tiny_spm(true));
  const auto without = build_tokenizer(tiny_spm(false));
  // "▁a" (-3) vs "aa" (-1): "▁ a a" -> "▁ aa".
  EXPECT_EQ(with->encode("aa", false, false), (Ids{kSpace, kAA}));
  EXPECT_EQ(with->encode("a", false, false), (Ids{kSpaceA}));
  EXPECT_EQ(without->encode("a b", false, false), (Ids{kA, kSpace, kB}));
  // "x" and "é" are not in the vocabulary: their bytes (<0x00> is id 3).
  EXPECT_EQ(without->encode("x\xC3\xA9", false, false), (Ids{3 + 'x', 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(with->decode(with->encode(" a x\xC3\xA9 ", false, false)), " a x\xC3\xA9 ");
  EXPECT_EQ(without->decode(Ids{kSpaceA}), " a");
  EXPECT_EQ(with->decode(Ids{kSpaceA}), "a");
}

TEST(SyntheticSpm, UserDefinedTokensAreAlwaysSplitOut) {
  const auto tok = build_tokenizer(tiny_spm(true));
  // Text after a special token gets the dummy prefix again, as llama.cpp does.
  const Ids expected = {kSpaceA, kTag, kSpace, kB};
  EXPECT_EQ(tok->encode("a<tag>b", false, false), expected);
  EXPECT_EQ(tok->encode("a<tag>b", false, true), expected);
  EXPECT_EQ(tok->decode(expected), "a<tag> b");
  // Control tokens only with parse_special.
  EXPECT_EQ(tok->encode("</s>", false, true), (Ids{2}));
  EXPECT_NE(tok->encode("</s>", false, false), (Ids{2}));
}

TEST(SyntheticSpm, AddSpecialFlags) {
  gguf::Writer w = tiny_spm(true);
  EXPECT_EQ(build_tokenizer(w)->encode("a", true, false), (Ids{1, kSpaceA}));  // default: BOS
  w.set_bool("tokenizer.ggml.add_bos_token", false);
  w.set_bool("tokenizer.ggml.add_eos_token", true);
  const auto tok = build_tokenizer(w);
  EXPECT_EQ(tok->encode("a", true, false), (Ids{kSpaceA, 2}));
  EXPECT_EQ(tok->encode("a", false, false), (Ids{kSpaceA}));
  EXPECT_TRUE(tok->is_eog(2));
}

// ---- "gpt2" ---------------------------------------------------------------------------------

// Byte-level vocabulary: ids 0..255 are the alphabet characters of bytes 0..255, then these.
gguf::Writer tiny_bpe(const std::string& pre, const std::vector<std::string>& extra,
                      const std::vector<std::string>& merges) {
  std::vector<VocabEntry> v;
  for (int b = 0; b < 256; ++b) v.push_back({unicode::byte_to_utf8(static_cast<uint8_t>(b))});
  for (const std::string& t : extra) v.push_back({t});
  v.push_back({"<|end|>", 0, TokenAttr::CONTROL});
  gguf::Writer w = vocab_writer("gpt2", v);
  w.set_string("tokenizer.ggml.pre", pre);
  w.set("tokenizer.ggml.merges", gguf::Value::strings(merges));
  w.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v.size() - 1));
  return w;
}

TEST(SyntheticBpe, LowestRankFirstLeftmostOnTies) {
  // 256 "ab", 257 "bc", 258 "abc", 259 "aa"
  const auto tok =
      build_tokenizer(tiny_bpe("gpt2", {"ab", "bc", "abc", "aa"}, {"b c", "a b", "ab c", "a a"}));
  // "b c" has rank 0: a + bc; "a bc" is no merge.
  EXPECT_EQ(tok->encode("abc", false, false), (Ids{'a', 257}));
  EXPECT_EQ(tok->encode("abd", false, false), (Ids{256, 'd'}));
  EXPECT_EQ(tok->encode("aaa", false, false), (Ids{259, 'a'}));
  // Merges stay within pre-tokens: " ab" is one (space + letters); "ab!ab" is three.
  EXPECT_EQ(tok->encode("ab!ab", false, false), (Ids{256, '!', 256}));
  // The space maps to "Ġ" (U+0120), id 32, and has no merge here.
  EXPECT_EQ(tok->encode(" ab", false, false), (Ids{' ', 256}));
  EXPECT_EQ(tok->decode(tok->encode(" ab\n\xFF", false, false)), " ab\n\xFF");
}

TEST(SyntheticBpe, Llama3IgnoresMergesForWholeWords) {
  // "xyz" (258) is in the vocabulary but no merge makes it from "xy" (256) and "z".
  const std::vector<std::string> extra = {"xy", "yz", "xyz"};
  const std::vector<std::string> merges = {"x y", "y z"};
  EXPECT_EQ(build_tokenizer(tiny_bpe("gpt2", extra, merges))->encode("xyz", false, false),
            (Ids{256, 'z'}));
  EXPECT_EQ(build_tokenizer(tiny_bpe("qwen2", extra, merges))->encode("xyz", false, false),
            (Ids{256, 'z'}));
  const auto llama3 = build_tokenizer(tiny_bpe("llama-bpe", extra, merges));
  EXPECT_EQ(llama3->encode("xyz", false, false), (Ids{258}));
  // Not a vocabulary entry: merges as usual, "x y" (rank 0) first.
  EXPECT_EQ(llama3->encode("xyzy", false, false), (Ids{256, 'z', 'y'}));
  EXPECT_TRUE(llama3->add_bos() == false);  // no BOS id in this file, so nothing to add
}

TEST(SyntheticBpe, Qwen2NormalizesToNfc) {
  // "é" is bytes C3 A9, alphabet characters "Ã" and "©"; 256 is their merge.
  const std::vector<std::string> extra = {"\xC3\x83\xC2\xA9"};
  const std::vector<std::string> merges = {"\xC3\x83 \xC2\xA9"};
  const std::string decomposed = "e\xCC\x81";  // e + U+0301 COMBINING ACUTE ACCENT
  const auto qwen2 = build_tokenizer(tiny_bpe("qwen2", extra, merges));
  EXPECT_EQ(qwen2->encode(decomposed, false, false), (Ids{256}));
  EXPECT_EQ(qwen2->encode("\xC3\xA9", false, false), (Ids{256}));
  // GPT-2 and Llama 3 take the text as it is.
  EXPECT_EQ(build_tokenizer(tiny_bpe("gpt2", extra, merges))->encode(decomposed, false, false),
            (Ids{'e', 0xCC, 0x81}));
  EXPECT_EQ(build_tokenizer(tiny_bpe("llama-bpe", extra, merges))->encode(decomposed, false, false),
            (Ids{'e', 0xCC, 0x81}));
}

TEST(SyntheticBpe, SpecialAndEog) {
  const auto tok = build_tokenizer(tiny_bpe("gpt2", {}, {}));
  const Token end = tok->n_vocab() - 1;
  EXPECT_EQ(tok->encode("a<|end|>", false, true), (Ids{'a', end}));
  EXPECT_EQ(tok->encode("a<|end|>", false, false), (Ids{'a', '<', '|', 'e', 'n', 'd', '|', '>'}));
  EXPECT_TRUE(tok->is_eog(end));
  EXPECT_FALSE(tok->is_eog('a'));
}

// ---- bad metadata ---------------------------------------------------------------------------

std::string error_of(const gguf::Writer& w) {
  try {
    build_tokenizer(w);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_error(const gguf::Writer& w, const std::vector<std::string>& words) {
  const std::string msg = error_of(w);
  for (const std::string& word : words) {
    EXPECT_NE(msg.find(word), std::string::npos) << "'" << msg << "' lacks '" << word << "'";
  }
}

TEST(BadMetadata, Rejected) {
  expect_error(gguf::Writer(), {"tokenizer.ggml.model"});
  {
    gguf::Writer w = tiny_spm(true);
    w.set_string("tokenizer.ggml.model", "bert");
    expect_error(w, {"bert", "llama", "gpt2"});
  }
  {
    gguf::Writer w;
    w.set_string("tokenizer.ggml.model", "llama");
    expect_error(w, {"tokenizer.ggml.tokens", "missing"});
  }
  {
    gguf::Writer w = tiny_spm(true);
    w.set("tokenizer.ggml.tokens", gguf::Value::strings({}));
    expect_error(w, {"tokenizer.ggml.tokens", "empty"});
  }
  {
    gguf::Writer w = tiny_spm(true);
    w.set("tokenizer.ggml.scores", gguf::Value::floats({1.0f, 2.0f}));
    expect_error(w, {"tokenizer.ggml.scores", "2"});
  }
  {
    gguf::Writer w = tiny_spm(true);
    w.set("tokenizer.ggml.token_type", gguf::Value::int32s({1, 1, 1}));
    expect_error(w, {"tokenizer.ggml.token_type", "3"});
  }
  {
    gguf::Writer w = tiny_spm(true);
    std::vector<int32_t> types(271, 1);
    types[5] = 9;
    w.set("tokenizer.ggml.token_type", gguf::Value::int32s(types));
    expect_error(w, {"tokenizer.ggml.token_type[5]", "9"});
  }
  {
    gguf::Writer w = tiny_spm(true);
    w.set_u32("tokenizer.ggml.bos_token_id", 100000);
    expect_error(w, {"tokenizer.ggml.bos_token_id", "100000"});
  }
  {
    gguf::Writer w = tiny_spm(true);
    w.set_string("tokenizer.ggml.eos_token_id", "two");
    expect_error(w, {"tokenizer.ggml.eos_token_id"});
  }
  {
    gguf::Writer w = tiny_bpe("gpt2", {}, {});
    w.set_string("tokenizer.ggml.pre", "mystery-pre");
    expect_error(w, {"mystery-pre", "llama-bpe", "qwen2", "gpt2"});
  }
  {
    gguf::Writer w = vocab_writer("gpt2", {{"a"}, {"b"}});
    expect_error(w, {"tokenizer.ggml.merges", "missing"});
  }
  {
    gguf::Writer w = tiny_bpe("gpt2", {"ab"}, {"a b", "ab"});
    expect_error(w, {"tokenizer.ggml.merges[1]", "'ab'"});
  }
  // Sanity: the unmodified files load.
  EXPECT_EQ(error_of(tiny_spm(true)), "(no error)");
  EXPECT_EQ(error_of(tiny_bpe("gpt2", {}, {})), "(no error)");
}

}  // namespace
}  // namespace maas::tokenizer::test
