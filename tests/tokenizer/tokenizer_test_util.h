// Shared helpers of the tokenizer tests: loading the real vocabularies in /work/shared/vocab.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"

namespace maas::tokenizer::test {

inline std::string vocab_path(const std::string& name) {
  return maas::test::shared_dir() + "/vocab/" + name;
}

// A vocabulary file with its tokenizer, loaded once per test binary.
struct LoadedVocab {
  gguf::File file;
  std::unique_ptr<Tokenizer> tok;
};

inline const Tokenizer& llama_spm() {
  static const LoadedVocab v = [] {
    gguf::File f = gguf::File::open(vocab_path("ggml-vocab-llama-spm.gguf"));
    auto t = Tokenizer::from_gguf(f);
    return LoadedVocab{std::move(f), std::move(t)};
  }();
  return *v.tok;
}

inline const Tokenizer& gpt2() {
  static const LoadedVocab v = [] {
    gguf::File f = gguf::File::open(vocab_path("ggml-vocab-gpt-2.gguf"));
    auto t = Tokenizer::from_gguf(f);
    return LoadedVocab{std::move(f), std::move(t)};
  }();
  return *v.tok;
}

inline std::string ids_to_string(const std::vector<Token>& ids) {
  std::string s;
  for (Token t : ids) s += " " + std::to_string(t);
  return s;
}

}  // namespace maas::tokenizer::test
