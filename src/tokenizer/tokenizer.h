// Tokenizers built from a GGUF file's tokenizer.ggml.* metadata:
//   "llama": SentencePiece BPE with scores and byte fallback (Llama 1/2, Mistral, TinyLlama).
//   "gpt2":  byte-level BPE with merges and a pre-tokenizer chosen by tokenizer.ggml.pre
//            ("default"/"gpt2", "llama-bpe" (Llama 3), "qwen2", ...).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace maas::gguf {
class File;
}

namespace maas::tokenizer {

using Token = int32_t;

// tokenizer.ggml.token_type values.
enum class TokenAttr : int32_t {
  UNDEFINED = 0,
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Builds the tokenizer named by tokenizer.ggml.model. Throws std::runtime_error with a clear
  // message for a missing/unknown model or pre-tokenizer or inconsistent metadata.
  static std::unique_ptr<Tokenizer> from_gguf(const gguf::File& file);

  // add_special: prepend BOS / append EOS as tokenizer.ggml.add_bos_token / add_eos_token say.
  // parse_special: text of control and user-defined tokens (e.g. "<|eot_id|>") becomes that
  // token; otherwise it is tokenized as plain text.
  virtual std::vector<Token> encode(std::string_view text, bool add_special,
                                    bool parse_special) const = 0;

  // The bytes a token stands for in output text: "▁" becomes a space for "llama", byte-level
  // symbols map back to bytes for "gpt2", <0xNN> tokens become that byte. Control tokens give ""
  // unless render_special. May be part of a UTF-8 character.
  virtual std::string token_to_piece(Token t, bool render_special = false) const = 0;

  // Concatenated pieces; for "llama" with add_space_prefix, the leading space of the first piece
  // is removed as SentencePiece does.
  std::string decode(std::span<const Token> tokens, bool render_special = false) const;

  int32_t n_vocab() const { return static_cast<int32_t>(pieces_.size()); }
  const std::string& piece(Token t) const {
    return pieces_.at(static_cast<size_t>(t));
  }  // raw vocab entry
  TokenAttr attr(Token t) const { return attrs_.at(static_cast<size_t>(t)); }
  Token bos() const { return bos_; }  // -1 if none
  Token eos() const { return eos_; }  // -1 if none
  // End of generation: EOS, EOT (tokenizer.ggml.eot_token_id) and tokens like <|eot_id|>,
  // <|im_end|>.
  bool is_eog(Token t) const;
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  const std::string& model_name() const { return model_; }  // "llama" or "gpt2"
  // True for "llama" with add_space_prefix: decode drops one leading space from the first token
  // that produces text (unless it is a byte token), undoing the space encode prepended.
  bool strips_leading_space() const { return strip_leading_space_; }

 protected:
  std::string model_;
  std::vector<std::string> pieces_;
  std::vector<TokenAttr> attrs_;
  std::vector<Token> eog_;
  Token bos_ = -1, eos_ = -1;
  bool add_bos_ = false, add_eos_ = false;
  bool strip_leading_space_ = false;
};

// Turns a stream of tokens into text, holding back the bytes of an incomplete UTF-8 character
// until it completes, so every returned chunk is valid UTF-8 (invalid sequences become U+FFFD).
class StreamDecoder {
 public:
  // at_start: the tokens begin the text, so SentencePiece's leading space is dropped as decode()
  // does; false for a continuation (generated tokens after a prompt), whose spaces are real.
  explicit StreamDecoder(const Tokenizer& tok, bool at_start = true)
      : tok_(tok), first_(at_start) {}
  std::string push(Token t);  // text that became complete with this token
  std::string flush();        // what remains at the end of the stream

 private:
  const Tokenizer& tok_;
  std::string pending_;
  bool first_;
};

}  // namespace maas::tokenizer
