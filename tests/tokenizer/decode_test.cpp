// Decoding: round trips, SentencePiece's leading-space rule, and StreamDecoder's handling of
// characters split across byte tokens.
#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace maas::tokenizer::test {
namespace {

using Ids = std::vector<Token>;

std::string stream_decode(const Tokenizer& tok, const Ids& ids, std::vector<std::string>* chunks) {
  StreamDecoder stream(tok);
  std::string all;
  for (Token t : ids) {
    std::string chunk = stream.push(t);
    if (chunks) chunks->push_back(chunk);
    all += chunk;
  }
  all += stream.flush();
  return all;
}

std::vector<std::string> sample_texts(unsigned seed, bool include_invalid) {
  const std::vector<std::string> fragments = {"Hello",
                                              " world",
                                              " ",
                                              "  ",
                                              "\n",
                                              "\n\n",
                                              "\t",
                                              "x",
                                              "42",
                                              "3.14",
                                              "'s",
                                              "I'm",
                                              ",",
                                              ".",
                                              "!",
                                              "\xC3\xA9",
                                              "\xE6\x97\xA5\xE6\x9C\xAC",
                                              "\xF0\x9F\xA6\x99",
                                              "\xF0\x9F\x9A\x80",
                                              "\xE2\x9C\x85",
                                              "\xD0\x9F\xD1\x80\xD0\xB8",
                                              "\xE2\x80\x94",
                                              "<s>",
                                              "<|endoftext|>"};
  const std::vector<std::string> invalid = {"\xFF", "\xC3", "\xF0\x9F", "\x80", "\xED\xA0\x80"};
  std::mt19937 rng(seed);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    std::string s;
    for (int n = static_cast<int>(rng() % 10); n > 0; --n) {
      s += include_invalid && rng() % 5 == 0 ? invalid[rng() % invalid.size()]
                                             : fragments[rng() % fragments.size()];
    }
    texts.push_back(s);
  }
  return texts;
}

// decode(encode(s)) == s: for "llama" the dummy-prefix space is added and removed again; byte
// fallback (llama) and the byte alphabet (gpt2) carry even ill-formed UTF-8 through.
TEST(Decode, RoundTrip) {
  for (bool invalid : {false, true}) {
    for (const std::string& s : sample_texts(invalid ? 2 : 1, invalid)) {
      EXPECT_EQ(llama_spm().decode(llama_spm().encode(s, false, false)), s);
      EXPECT_EQ(gpt2().decode(gpt2().encode(s, false, false)), s);
      EXPECT_EQ(gpt2().decode(gpt2().encode(s, true, false)), s);
    }
  }
  EXPECT_EQ(llama_spm().decode(llama_spm().encode("  two spaces", true, false)), "  two spaces");
}

// SentencePiece's rule (checked against its Python module): the first token that yields text
// loses one leading space, unless it is a byte token; control tokens before it do not count.
TEST(Decode, LeadingSpaceRule) {
  const Tokenizer& tok = llama_spm();
  EXPECT_EQ(tok.decode(Ids{29871, 15043}), " Hello");  // "▁" then "▁Hello"
  EXPECT_EQ(tok.decode(Ids{13, 15043}), "\n Hello");   // <0x0A> then "▁Hello"
  EXPECT_EQ(tok.decode(Ids{1, 15043}), "Hello");       // <s> then "▁Hello"
  EXPECT_EQ(tok.decode(Ids{1, 1, 15043}), "Hello");
  EXPECT_EQ(tok.decode(Ids{1, 29871, 15043}), " Hello");
  EXPECT_EQ(tok.decode(Ids{259, 15043}), "  Hello");  // "▁▁" then "▁Hello"
  EXPECT_EQ(tok.decode(Ids{35, 15043}), "  Hello");   // <0x20> is a byte: kept
  EXPECT_TRUE(tok.strips_leading_space());
  EXPECT_FALSE(gpt2().strips_leading_space());
  EXPECT_EQ(gpt2().decode(Ids{18435}), " Hello");  // GPT-2 keeps every space
}

TEST(Decode, OutOfRangeTokenThrows) {
  EXPECT_THROW(llama_spm().decode(Ids{32000}), std::out_of_range);
  EXPECT_THROW(gpt2().token_to_piece(-1), std::out_of_range);
  StreamDecoder stream(gpt2());
  EXPECT_THROW(stream.push(50257), std::out_of_range);
}

// 🦙 (U+1F999) is not in Llama 2's vocabulary: it falls back to four byte tokens (<0x00> is
// token 3), and the stream emits the character once, whole, with the last of them.
TEST(StreamDecoder, CharacterSplitAcrossByteTokens) {
  const Tokenizer& tok = llama_spm();
  const Ids ids = tok.encode("\xF0\x9F\xA6\x99", false, false);
  ASSERT_EQ(ids, (Ids{29871, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99}));
  std::vector<std::string> chunks;
  EXPECT_EQ(stream_decode(tok, ids, &chunks), "\xF0\x9F\xA6\x99");
  EXPECT_EQ(chunks, (std::vector<std::string>{"", "", "", "", "\xF0\x9F\xA6\x99"}));

  // After text, the same: nothing until the character completes.
  const Ids ids2 = tok.encode("Hi \xF0\x9F\xA6\x99!", false, false);
  chunks.clear();
  EXPECT_EQ(stream_decode(tok, ids2, &chunks), "Hi \xF0\x9F\xA6\x99!");
  int whole = 0;
  for (const std::string& c : chunks) {
    EXPECT_TRUE(unicode::is_valid(c));
    whole += c.find("\xF0\x9F\xA6\x99") != std::string::npos;
  }
  EXPECT_EQ(whole, 1);
}

TEST(StreamDecoder, InvalidBytesBecomeReplacementCharacters) {
  const Tokenizer& tok = llama_spm();
  auto byte = [](int b) { return static_cast<Token>(3 + b); };
  StreamDecoder s(tok);
  EXPECT_EQ(s.push(byte(0xFF)), "\xEF\xBF\xBD");  // can never start a character
  EXPECT_EQ(s.push(byte(0xF0)), "");              // may still complete
  EXPECT_EQ(s.push(byte('A')),
            "\xEF\xBF\xBD"
            "A");  // did not
  EXPECT_EQ(s.push(byte(0xE2)), "");
  EXPECT_EQ(s.push(byte(0x82)), "");
  EXPECT_EQ(s.flush(), "\xEF\xBF\xBD");  // one replacement for the cut-off sequence
  EXPECT_EQ(s.flush(), "");
}

// The stream's output concatenates to decode() (for valid UTF-8) and every chunk is valid UTF-8.
TEST(StreamDecoder, MatchesDecode) {
  for (const Tokenizer* tok : {&llama_spm(), &gpt2()}) {
    for (bool invalid : {false, true}) {
      for (const std::string& s : sample_texts(invalid ? 4 : 3, invalid)) {
        for (bool add_special : {false, true}) {
          const Ids ids = tok->encode(s, add_special, true);
          std::vector<std::string> chunks;
          const std::string streamed = stream_decode(*tok, ids, &chunks);
          for (const std::string& c : chunks) EXPECT_TRUE(unicode::is_valid(c));
          EXPECT_TRUE(unicode::is_valid(streamed));
          const std::string decoded = tok->decode(ids);
          if (!invalid) {
            EXPECT_EQ(streamed, decoded);
          }
          std::string sanitized;
          unicode::append_sanitized(decoded, true, sanitized);
          EXPECT_EQ(streamed, sanitized);
        }
      }
    }
  }
}

}  // namespace
}  // namespace maas::tokenizer::test
