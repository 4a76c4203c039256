// Pre-tokenizers of byte-level BPE tokenizers (internal): the regexes that cut text into the
// pieces BPE merges within, chosen by tokenizer.ggml.pre.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace maas::tokenizer {

enum class PreType {
  GPT2,    // "default", "gpt2", "gpt-2": GPT-2's regex
  LLAMA3,  // "llama-bpe", "llama3", "llama-v3": Llama 3's regex (digits in groups of 1-3)
  QWEN2,   // "qwen2": Llama 3's regex with single digits
};

// Maps a tokenizer.ggml.pre value to its type; throws std::runtime_error listing the known names.
PreType pre_type_from_name(std::string_view name);

// The regex of a pre-tokenizer as PCRE2 compiles it.
const std::string& pre_type_regex(PreType type);

// A compiled pre-tokenizer regex. Thread-safe: split() keeps its match state on the caller's side.
class PreTokenizer {
 public:
  explicit PreTokenizer(PreType type);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  PreType type() const { return type_; }

  // Appends the pieces of text to out, in order; they concatenate back to text. Bytes that are
  // not valid UTF-8 never match the regex and come out as pieces of their own.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

 private:
  struct Regex;
  PreType type_;
  std::unique_ptr<Regex> regex_;
};

// Convenience for tests: compiles the regex and splits text.
std::vector<std::string> pre_tokenize(std::string_view text, PreType type);

}  // namespace maas::tokenizer
