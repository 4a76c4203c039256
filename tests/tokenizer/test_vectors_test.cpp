// The acceptance test: llama.cpp's tokenizer test vectors for two real vocabularies, every line.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tokenizer_test_util.h"

namespace maas::tokenizer::test {
namespace {

struct Case {
  std::string input;
  std::string expected;  // " id id id", as in the .out file
};

std::vector<Case> read_cases(const std::string& vocab) {
  const std::string inp = maas::test::read_file(vocab_path(vocab + ".inp"));
  const std::string out = maas::test::read_file(vocab_path(vocab + ".out"));
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  size_t pos = 0;
  for (size_t hit; (hit = inp.find(separator, pos)) != std::string::npos;) {
    inputs.push_back(inp.substr(pos, hit - pos));
    pos = hit + separator.size();
  }
  EXPECT_EQ(pos, inp.size()) << "the .inp file ends with a separator";
  std::vector<std::string> lines;
  pos = 0;
  for (size_t hit; (hit = out.find('\n', pos)) != std::string::npos;) {
    lines.push_back(out.substr(pos, hit - pos));
    pos = hit + 1;
  }
  EXPECT_EQ(inputs.size(), lines.size());
  std::vector<Case> cases;
  for (size_t i = 0; i < inputs.size() && i < lines.size(); ++i)
    cases.push_back({inputs[i], lines[i]});
  return cases;
}

void check_vectors(const std::string& vocab, const Tokenizer& tok) {
  const std::vector<Case> cases = read_cases(vocab);
  ASSERT_GT(cases.size(), 40u);
  int failed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::vector<Token> ids = tok.encode(cases[i].input, false, false);
    if (ids_to_string(ids) != cases[i].expected) {
      ++failed;
      ADD_FAILURE() << vocab << " case " << i << " input '" << cases[i].input
                    << "'\n  expected:" << cases[i].expected
                    << "\n  actual:  " << ids_to_string(ids);
    }
  }
  EXPECT_EQ(failed, 0) << "of " << cases.size() << " cases";
}

TEST(TestVectors, LlamaSpm) { check_vectors("ggml-vocab-llama-spm.gguf", llama_spm()); }

TEST(TestVectors, Gpt2) { check_vectors("ggml-vocab-gpt-2.gguf", gpt2()); }

// Every case also decodes back to its input (the leading-space rule undoes the dummy prefix).
TEST(TestVectors, DecodeRoundTrip) {
  for (const auto& [vocab, tok] :
       {std::pair<std::string, const Tokenizer*>{"ggml-vocab-llama-spm.gguf", &llama_spm()},
        {"ggml-vocab-gpt-2.gguf", &gpt2()}}) {
    for (const Case& c : read_cases(vocab)) {
      EXPECT_EQ(tok->decode(tok->encode(c.input, false, false)), c.input) << vocab;
    }
  }
}

}  // namespace
}  // namespace maas::tokenizer::test
