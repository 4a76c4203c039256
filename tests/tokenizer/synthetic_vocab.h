// Builds small vocabularies as in-memory GGUF files for the tokenizer tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace maas::tokenizer::test {

struct VocabEntry {
  std::string text;
  float score = 0.0f;
  TokenAttr type = TokenAttr::NORMAL;
};

// The 259 entries every SentencePiece vocabulary here starts with: <unk>, <s>, </s>,
// <0x00>..<0xFF>.
inline std::vector<VocabEntry> spm_base_entries() {
  std::vector<VocabEntry> v = {{"<unk>", 0, TokenAttr::UNKNOWN},
                               {"<s>", 0, TokenAttr::CONTROL},
                               {"</s>", 0, TokenAttr::CONTROL}};
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    v.push_back({std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, TokenAttr::BYTE});
  }
  return v;
}

// A "llama" (or other model) file's tokenizer metadata for the given entries.
inline gguf::Writer vocab_writer(const std::string& model, const std::vector<VocabEntry>& entries) {
  gguf::Writer w;
  w.set_string("tokenizer.ggml.model", model);
  std::vector<std::string> texts;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (const VocabEntry& e : entries) {
    texts.push_back(e.text);
    scores.push_back(e.score);
    types.push_back(static_cast<int32_t>(e.type));
  }
  w.set("tokenizer.ggml.tokens", gguf::Value::strings(texts));
  if (model == "llama") w.set("tokenizer.ggml.scores", gguf::Value::floats(scores));
  w.set("tokenizer.ggml.token_type", gguf::Value::int32s(types));
  return w;
}

inline std::unique_ptr<Tokenizer> build_tokenizer(const gguf::Writer& w) {
  const std::vector<uint8_t> bytes = w.to_bytes();
  const gguf::File file = gguf::File::parse(bytes);
  return Tokenizer::from_gguf(file);  // keeps no reference to the file
}

}  // namespace maas::tokenizer::test
