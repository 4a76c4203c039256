// "gpt2" tokenizer: byte-level BPE. Text is cut by the pre-tokenizer regex; within each piece,
// every byte starts as the token of its GPT-2 alphabet character and the adjacent pair with the
// lowest merge rank (leftmost first) is merged until no listed merge applies.
#include <fmt/format.h>

#include <cstdint>
#include <optional>
#include <queue>
#include <stdexcept>

#include "gguf/gguf.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace maas::tokenizer::detail {

namespace {

PreType read_pre_type(const gguf::File& file) {
  // Files from before tokenizer.ggml.pre existed use GPT-2's regex, as llama.cpp assumes.
  const std::optional<std::string> name = file.get_string("tokenizer.ggml.pre");
  return pre_type_from_name(name ? *name : "default");
}

uint64_t pair_key(Token left, Token right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

class BpeTokenizer final : public VocabTokenizer {
 public:
  explicit BpeTokenizer(const gguf::File& file);

  std::vector<Token> encode(std::string_view text, bool add_special,
                            bool parse_special) const override;

 private:
  void encode_word(std::string_view word, std::vector<Token>& out) const;

  struct Merge {
    int32_t rank;
    Token result;
  };
  PreTokenizer pre_;
  // Llama 3 (Hugging Face's ignore_merges): a piece that is a whole vocabulary entry is that
  // token, whatever the merges would make of it.
  bool ignore_merges_ = false;
  // Qwen2's tokenizer.json normalizes text to NFC before pre-tokenizing (llama.cpp skips this,
  // which changes the tokens of text that is not already composed).
  bool nfc_ = false;
  std::unordered_map<uint64_t, Merge> merges_;  // by pair_key(left, right)
  std::array<Token, 256> byte_tokens_{};        // the token of each byte's alphabet character
};

BpeTokenizer::BpeTokenizer(const gguf::File& file) : pre_(read_pre_type(file)) {
  ignore_merges_ = pre_.type() == PreType::LLAMA3;
  nfc_ = pre_.type() == PreType::QWEN2;
  load_vocab(file, "gpt2", /*default_add_bos=*/pre_.type() == PreType::LLAMA3);
  const size_t n = pieces_.size();

  const std::optional<std::vector<std::string>> merges =
      file.get_string_array("tokenizer.ggml.merges");
  if (!merges) throw std::runtime_error("tokenizer.ggml.merges is missing (needed by gpt2)");
  if (merges->size() > static_cast<size_t>(INT32_MAX)) {
    throw std::runtime_error("tokenizer.ggml.merges has more than 2^31-1 entries");
  }
  merges_.reserve(merges->size());
  std::string joined;
  for (size_t i = 0; i < merges->size(); ++i) {
    const std::string& m = (*merges)[i];
    // The first space after the first character separates the two parts (a part may be a space
    // itself in vocabularies that are not byte-level).
    const size_t space = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (space == std::string::npos) {
      throw std::runtime_error(fmt::format(
          "tokenizer.ggml.merges[{}] = '{}' is not two tokens separated by a space", i, m));
    }
    const std::string_view left = std::string_view(m).substr(0, space);
    const std::string_view right = std::string_view(m).substr(space + 1);
    joined.assign(left);
    joined += right;
    const Token l = find_token(left), r = find_token(right), result = find_token(joined);
    // A merge of parts that are not tokens can never apply (Hugging Face rejects such files).
    if (l < 0 || r < 0 || result < 0) continue;
    merges_.emplace(pair_key(l, r), Merge{static_cast<int32_t>(i), result});  // first one wins
  }

  for (int b = 0; b < 256; ++b) {
    const Token t = find_token(unicode::byte_to_utf8(static_cast<uint8_t>(b)));
    byte_tokens_[b] = t >= 0 ? t : unk_;
  }

  decoded_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& piece = pieces_[i];
    std::string& text = decoded_[i];
    for (size_t pos = 0; pos < piece.size();) {
      const size_t len = unicode::valid_sequence_length(piece, pos);
      if (len == 0) {  // not UTF-8: keep the byte as it is
        text += piece[pos++];
        continue;
      }
      uint32_t cp = static_cast<uint8_t>(piece[pos]);
      if (len > 1) {
        cp &= 0x7F >> len;
        for (size_t k = 1; k < len; ++k)
          cp = (cp << 6) | (static_cast<uint8_t>(piece[pos + k]) & 0x3F);
      }
      const int b = unicode::codepoint_to_byte(cp);
      if (b >= 0) {
        text += static_cast<char>(b);
      } else {  // outside the byte alphabet: the character stands for itself
        text.append(piece, pos, len);
      }
      pos += len;
    }
  }
}

std::vector<Token> BpeTokenizer::encode(std::string_view text, bool add_special,
                                        bool parse_special) const {
  std::vector<Token> out;
  begin_special(add_special, out);
  std::vector<std::string_view> words;
  std::string normalized;
  for (const Fragment& fragment : split_special(text, parse_special)) {
    if (fragment.token >= 0) {
      out.push_back(fragment.token);
      continue;
    }
    words.clear();
    if (nfc_) {
      normalized = unicode::to_nfc(fragment.text);
      pre_.split(normalized, words);
    } else {
      pre_.split(fragment.text, words);
    }
    for (std::string_view word : words) encode_word(word, out);
  }
  end_special(add_special, out);
  return out;
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<Token>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    std::string mapped;
    for (char c : word) mapped += unicode::byte_to_utf8(static_cast<uint8_t>(c));
    const auto it = text_to_token_.find(mapped);
    if (it != text_to_token_.end() && is_text_piece(attrs_[it->second])) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() == 1) {
    if (const Token t = byte_tokens_[static_cast<uint8_t>(word[0])]; t >= 0) out.push_back(t);
    return;
  }
  if (word.size() > UINT32_MAX / 2) throw std::length_error("text too long to tokenize");

  struct Symbol {
    int32_t prev, next;
    uint32_t len;  // bytes of the word covered; 0 once merged into the symbol on its left
    Token token;
  };
  struct Bigram {
    int32_t rank;
    int32_t left, right;
    uint32_t len;
    Token result;
  };
  struct Greater {  // priority_queue pops the greatest: lowest rank, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
  };

  const auto n = static_cast<int32_t>(word.size());
  std::vector<Symbol> symbols(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {i - 1, i + 1, 1, byte_tokens_[static_cast<uint8_t>(word[i])]};
  }
  std::priority_queue<Bigram, std::vector<Bigram>, Greater> queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right >= n) return;
    const Symbol& l = symbols[left];
    const Symbol& r = symbols[right];
    if (l.token < 0 || r.token < 0) return;
    const auto it = merges_.find(pair_key(l.token, r.token));
    if (it == merges_.end()) return;
    queue.push({it->second.rank, left, right, l.len + r.len, it->second.result});
  };
  for (int32_t i = 0; i + 1 < n; ++i) try_add(i, i + 1);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = symbols[b.left];
    Symbol& r = symbols[b.right];
    // Stale if either side was merged since: lengths only grow, so the sum tells.
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;
    l.token = b.result;
    l.len = b.len;
    r.len = 0;
    l.next = r.next;
    if (r.next < n) symbols[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  for (int32_t i = 0; i < n; i = symbols[i].next) {
    if (symbols[i].token >= 0) out.push_back(symbols[i].token);  // no token for a byte: dropped
  }
}

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const gguf::File& file) {
  return std::make_unique<BpeTokenizer>(file);
}

}  // namespace maas::tokenizer::detail
