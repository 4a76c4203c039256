// Special tokens on the real vocabularies: parsing on and off, BOS/EOS, end-of-generation.
// Expected ids come from SentencePiece (Llama 2's tokenizer.model) and GPT-2's published
// tokenization, not from this code.
#include <gtest/gtest.h>

#include <vector>

#include "tokenizer_test_util.h"

namespace maas::tokenizer::test {
namespace {

using Ids = std::vector<Token>;

TEST(SpecialTokens, Gpt2EndOfText) {
  const Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.encode("<|endoftext|>", false, true), (Ids{50256}));
  // As text: "<", "|", "end", "of", "text", "|", ">".
  EXPECT_EQ(tok.encode("<|endoftext|>", false, false), (Ids{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(tok.encode("Hello<|endoftext|> world", false, true), (Ids{15496, 50256, 995}));
  EXPECT_EQ(tok.encode("Hello<|endoftext|> world", false, false),
            (Ids{15496, 27, 91, 437, 1659, 5239, 91, 29, 995}));
  EXPECT_EQ(tok.encode("<|endoftext|><|endoftext|>", false, true), (Ids{50256, 50256}));
}

TEST(SpecialTokens, LlamaControlTokens) {
  const Tokenizer& tok = llama_spm();
  // Text after a special token gets the dummy-prefix space, as if encoded on its own
  // (SentencePiece: "Hello" -> 15043, "x" -> 921).
  EXPECT_EQ(tok.encode("<s>Hello</s>x", false, true), (Ids{1, 15043, 2, 921}));
  // SentencePiece itself never matches control pieces in text.
  EXPECT_EQ(tok.encode("<s>Hello</s>x", false, false),
            (Ids{529, 29879, 29958, 10994, 829, 29879, 29958, 29916}));
  EXPECT_EQ(tok.encode("<unk>", false, true), (Ids{0}));
}

TEST(SpecialTokens, AddSpecial) {
  const Tokenizer& llama = llama_spm();
  EXPECT_TRUE(llama.add_bos());
  EXPECT_FALSE(llama.add_eos());
  EXPECT_EQ(llama.bos(), 1);
  EXPECT_EQ(llama.eos(), 2);
  EXPECT_EQ(llama.encode("Hello world", true, false), (Ids{1, 15043, 3186}));
  EXPECT_EQ(llama.encode("Hello world", false, false), (Ids{15043, 3186}));
  EXPECT_EQ(llama.encode("", true, false), (Ids{1}));
  EXPECT_EQ(llama.encode("", false, false), (Ids{}));

  // GPT-2's file sets no add_bos_token: nothing is added.
  const Tokenizer& g = gpt2();
  EXPECT_FALSE(g.add_bos());
  EXPECT_EQ(g.bos(), 50256);
  EXPECT_EQ(g.encode("Hello world", true, false), (Ids{15496, 995}));
}

TEST(SpecialTokens, EndOfGeneration) {
  EXPECT_TRUE(llama_spm().is_eog(2));
  EXPECT_FALSE(llama_spm().is_eog(1));
  EXPECT_FALSE(llama_spm().is_eog(15043));
  EXPECT_TRUE(gpt2().is_eog(50256));
  EXPECT_FALSE(gpt2().is_eog(15496));
}

TEST(SpecialTokens, RenderSpecial) {
  const Tokenizer& tok = llama_spm();
  EXPECT_EQ(tok.decode(Ids{1, 15043, 2}), "Hello");
  EXPECT_EQ(tok.decode(Ids{1, 15043, 2}, true), "<s> Hello</s>");
  EXPECT_EQ(tok.token_to_piece(1), "");
  EXPECT_EQ(tok.token_to_piece(1, true), "<s>");
  EXPECT_EQ(gpt2().decode(Ids{15496, 50256}), "Hello");
  EXPECT_EQ(gpt2().decode(Ids{15496, 50256}, true), "Hello<|endoftext|>");
}

}  // namespace
}  // namespace maas::tokenizer::test
