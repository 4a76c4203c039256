// Internals shared by the "llama" (SentencePiece BPE) and "gpt2" (byte-level BPE) tokenizers.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace maas::tokenizer::detail {

// Lets unordered maps keyed by std::string be searched with a std::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TextToToken = std::unordered_map<std::string, Token, StringHash, std::equal_to<>>;

// A part of the input once special-token text is cut out: plain text, or one special token.
struct Fragment {
  std::string_view text;
  Token token = -1;  // >= 0: this fragment is that special token
};

// The vocabulary and special-token handling both models share.
class VocabTokenizer : public Tokenizer {
 public:
  std::string token_to_piece(Token t, bool render_special) const override;

 protected:
  // Reads tokenizer.ggml.tokens / token_type / *_token_id / add_*_token and builds the lookup
  // tables. Throws std::runtime_error naming the key for missing or inconsistent metadata.
  void load_vocab(const gguf::File& file, std::string model, bool default_add_bos);

  // Splits text at special tokens, leftmost-longest (as Hugging Face's added-token matcher
  // does). User-defined tokens are always split out (SentencePiece, Hugging Face and llama.cpp
  // all treat them as part of the text's vocabulary); control and unknown tokens only with
  // parse_special.
  std::vector<Fragment> split_special(std::string_view text, bool parse_special) const;

  // The token whose text is s among every vocabulary entry (for duplicates, the last), or -1.
  Token find_token(std::string_view s) const;

  // Adds BOS / EOS around the output of encode when asked and configured.
  void begin_special(bool add_special, std::vector<Token>& out) const;
  void end_special(bool add_special, std::vector<Token>& out) const;

  Token unk_ = -1;
  TextToToken text_to_token_;
  // The output text of NORMAL (and UNDEFINED) tokens, precomputed by each model.
  std::vector<std::string> decoded_;

 private:
  // Special tokens by the first byte of their text, longest text first.
  std::array<std::vector<Token>, 256> special_by_first_byte_;
  bool has_user_defined_ = false;
};

// Whether token type t takes part in merging and vocabulary lookups of plain text (SentencePiece
// keeps control, unknown and byte pieces out of its piece table).
inline bool is_text_piece(TokenAttr t) {
  return t == TokenAttr::NORMAL || t == TokenAttr::UNDEFINED || t == TokenAttr::USER_DEFINED ||
         t == TokenAttr::UNUSED;
}

std::unique_ptr<Tokenizer> make_spm_tokenizer(const gguf::File& file);
std::unique_ptr<Tokenizer> make_bpe_tokenizer(const gguf::File& file);

}  // namespace maas::tokenizer::detail
