// "llama" tokenizer: SentencePiece BPE. Merges the adjacent pair of symbols whose concatenation
// is the vocabulary piece with the highest score, leftmost first, until none is left; symbols
// outside the vocabulary fall back to <0xNN> byte tokens.
#include <fmt/format.h>

#include <cstdint>
#include <optional>
#include <queue>
#include <stdexcept>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace maas::tokenizer::detail {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

// The byte of a "<0xNN>" piece, or -1.
int parse_byte_piece(std::string_view s) {
  if (s.size() != 6 || !s.starts_with("<0x") || s[5] != '>') return -1;
  int value = 0;
  for (char c : s.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

class SpmTokenizer final : public VocabTokenizer {
 public:
  explicit SpmTokenizer(const gguf::File& file);

  std::vector<Token> encode(std::string_view text, bool add_special,
                            bool parse_special) const override;

 private:
  // Tokenizes text whose spaces are already escaped as "▁".
  void encode_escaped(std::string_view text, std::vector<Token>& out) const;
  void append_bytes(std::string_view bytes, std::vector<Token>& out) const;

  TextToToken piece_to_token_;  // the pieces merging may form (is_text_piece)
  std::vector<float> scores_;
  std::array<Token, 256> byte_tokens_{};
  bool add_space_prefix_ = true;
};

SpmTokenizer::SpmTokenizer(const gguf::File& file) {
  load_vocab(file, "llama", /*default_add_bos=*/true);
  const size_t n = pieces_.size();
  if (std::optional<std::vector<float>> scores = file.get_float_array("tokenizer.ggml.scores")) {
    if (scores->size() != n) {
      throw std::runtime_error(
          fmt::format("tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {}",
                      scores->size(), n));
    }
    scores_ = std::move(*scores);
  } else {
    scores_.assign(n, 0.0f);
  }
  add_space_prefix_ = file.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
  strip_leading_space_ = add_space_prefix_;

  piece_to_token_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (is_text_piece(attrs_[i])) piece_to_token_[pieces_[i]] = static_cast<Token>(i);
  }

  // Byte fallback: <0xNN> tokens, else a piece that is the byte itself, else <unk>.
  byte_tokens_.fill(-1);
  for (size_t i = 0; i < n; ++i) {
    const int b = parse_byte_piece(pieces_[i]);
    if (b >= 0 && (attrs_[i] == TokenAttr::BYTE || byte_tokens_[b] < 0)) {
      byte_tokens_[b] = static_cast<Token>(i);
    }
  }
  for (int b = 0; b < 256; ++b) {
    if (byte_tokens_[b] >= 0) continue;
    const auto it = piece_to_token_.find(std::string(1, static_cast<char>(b)));
    byte_tokens_[b] = it != piece_to_token_.end() ? it->second : unk_;
  }

  decoded_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const int b = attrs_[i] == TokenAttr::BYTE ? parse_byte_piece(pieces_[i]) : -1;
    if (b >= 0) {
      decoded_[i] = std::string(1, static_cast<char>(b));
      continue;
    }
    std::string& text = decoded_[i];
    const std::string& piece = pieces_[i];
    for (size_t pos = 0; pos < piece.size();) {
      if (std::string_view(piece).substr(pos).starts_with(kSpaceSymbol)) {
        text += ' ';
        pos += kSpaceSymbol.size();
      } else {
        text += piece[pos++];
      }
    }
  }
}

std::vector<Token> SpmTokenizer::encode(std::string_view text, bool add_special,
                                        bool parse_special) const {
  std::vector<Token> out;
  begin_special(add_special, out);
  bool after_special = true;  // the start of the text counts as following a special token
  std::string escaped;
  for (const Fragment& fragment : split_special(text, parse_special)) {
    if (fragment.token >= 0) {
      out.push_back(fragment.token);
      after_special = true;
      continue;
    }
    // As llama.cpp does (and Hugging Face's legacy Llama tokenizer), the dummy prefix goes before
    // the text at the start and after every special token.
    escaped.clear();
    if (add_space_prefix_ && after_special) escaped += kSpaceSymbol;
    for (char c : fragment.text) {
      if (c == ' ') {
        escaped += kSpaceSymbol;
      } else {
        escaped += c;
      }
    }
    encode_escaped(escaped, out);
    after_special = false;
  }
  end_special(add_special, out);
  return out;
}

void SpmTokenizer::append_bytes(std::string_view bytes, std::vector<Token>& out) const {
  for (char c : bytes) {
    const Token t = byte_tokens_[static_cast<uint8_t>(c)];
    if (t >= 0) out.push_back(t);  // a vocabulary without byte tokens nor <unk> loses the byte
  }
}

void SpmTokenizer::encode_escaped(std::string_view text, std::vector<Token>& out) const {
  if (text.empty()) return;
  // Every symbol covers text[start, start+len); merged-away symbols have len 0. Nodes remember
  // how each symbol was formed, to split pieces of UNUSED tokens back up as SentencePiece does.
  struct Node {
    uint32_t start, len;
    int32_t left = -1, right = -1;
  };
  struct Symbol {
    int32_t prev, next;
    uint32_t start, len;
    int32_t node;
  };
  struct Bigram {
    float score;
    int32_t left, right;
    uint32_t len;
  };
  struct Lower {  // priority_queue pops the greatest: highest score, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  if (text.size() > UINT32_MAX / 2) throw std::length_error("text too long to tokenize");
  std::vector<Node> nodes;
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < text.size();) {
    // Ill-formed UTF-8 bytes become one-byte symbols and so byte tokens.
    const size_t len = std::max<size_t>(1, unicode::valid_sequence_length(text, pos));
    const auto index = static_cast<int32_t>(symbols.size());
    nodes.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(len)});
    symbols.push_back(
        {index - 1, index + 1, static_cast<uint32_t>(pos), static_cast<uint32_t>(len), index});
    pos += len;
  }
  const auto n_symbols = static_cast<int32_t>(symbols.size());

  std::priority_queue<Bigram, std::vector<Bigram>, Lower> queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right >= n_symbols) return;
    const Symbol& l = symbols[left];
    const Symbol& r = symbols[right];
    const auto it = piece_to_token_.find(text.substr(l.start, l.len + r.len));
    if (it == piece_to_token_.end()) return;
    queue.push({scores_[static_cast<size_t>(it->second)], left, right, l.len + r.len});
  };
  for (int32_t i = 0; i + 1 < n_symbols; ++i) try_add(i, i + 1);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = symbols[b.left];
    Symbol& r = symbols[b.right];
    // Stale if either side was merged since: lengths only grow, so the sum tells.
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;
    nodes.push_back({l.start, b.len, l.node, r.node});
    l.node = static_cast<int32_t>(nodes.size() - 1);
    l.len = b.len;
    r.len = 0;
    l.next = r.next;
    if (r.next < n_symbols) symbols[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  // Emits a node: its token, or for an UNUSED token the parts it was merged from, or bytes.
  std::vector<int32_t> stack;
  for (int32_t i = 0; i < n_symbols; i = symbols[i].next) {
    stack.push_back(symbols[i].node);
    while (!stack.empty()) {
      const Node node = nodes[stack.back()];
      stack.pop_back();
      const std::string_view piece = text.substr(node.start, node.len);
      const auto it = piece_to_token_.find(piece);
      if (it == piece_to_token_.end()) {
        append_bytes(piece, out);
      } else if (attrs_[it->second] == TokenAttr::UNUSED && node.left >= 0) {
        stack.push_back(node.right);
        stack.push_back(node.left);
      } else {
        out.push_back(it->second);
      }
    }
  }
}

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(const gguf::File& file) {
  return std::make_unique<SpmTokenizer>(file);
}

}  // namespace maas::tokenizer::detail
