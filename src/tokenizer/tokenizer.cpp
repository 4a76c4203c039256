#include "tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace maas::tokenizer {

namespace {

// Texts of tokens that end a turn in the chat formats of common model families.
constexpr std::string_view kEndOfGenerationTexts[] = {
    "</s>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "<|end|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<|return|>",
    "<|call|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
};

// A token id from metadata: nullopt if absent or negative (some converters write -1 for "none").
std::optional<int64_t> read_token_id(const gguf::File& file, const std::string& key) {
  const gguf::Value* v = file.find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_integer()) {
    throw std::runtime_error(fmt::format("tokenizer metadata {} must be an integer, not {}", key,
                                         gguf::value_type_name(v->type())));
  }
  const int64_t id = v->as_int();
  if (id < 0) return std::nullopt;
  return id;
}

// SentencePiece's decoding rule for the dummy prefix: the first piece that has text loses one
// leading space, unless it is a byte token; control tokens before it do not count. `pending` is
// true until that piece is seen.
void strip_dummy_prefix(const Tokenizer& tok, Token t, std::string& piece, bool& pending) {
  if (!pending || piece.empty()) return;
  if (piece[0] == ' ' && tok.attr(t) != TokenAttr::BYTE) piece.erase(0, 1);
  pending = false;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::File& file) {
  const std::optional<std::string> model = file.get_string("tokenizer.ggml.model");
  if (!model) {
    throw std::runtime_error("tokenizer.ggml.model is missing: the file has no tokenizer");
  }
  if (*model == "llama") return detail::make_spm_tokenizer(file);
  if (*model == "gpt2") return detail::make_bpe_tokenizer(file);
  throw std::runtime_error(fmt::format(
      "unsupported tokenizer model tokenizer.ggml.model = '{}' (supported: llama, gpt2)", *model));
}

bool Tokenizer::is_eog(Token t) const { return std::binary_search(eog_.begin(), eog_.end(), t); }

std::string Tokenizer::decode(std::span<const Token> tokens, bool render_special) const {
  std::string out;
  bool first = strip_leading_space_;
  for (Token t : tokens) {
    std::string piece = token_to_piece(t, render_special);
    strip_dummy_prefix(*this, t, piece, first);
    out += piece;
  }
  return out;
}

std::string StreamDecoder::push(Token t) {
  std::string piece = tok_.token_to_piece(t);
  if (tok_.strips_leading_space()) strip_dummy_prefix(tok_, t, piece, first_);
  pending_ += piece;
  std::string out;
  pending_.erase(0, unicode::append_sanitized(pending_, /*at_end=*/false, out));
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  unicode::append_sanitized(pending_, /*at_end=*/true, out);
  pending_.clear();
  return out;
}

namespace detail {

void VocabTokenizer::load_vocab(const gguf::File& file, std::string model, bool default_add_bos) {
  model_ = std::move(model);
  std::optional<std::vector<std::string>> tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (!tokens) throw std::runtime_error("tokenizer.ggml.tokens is missing");
  if (tokens->empty()) throw std::runtime_error("tokenizer.ggml.tokens is empty");
  if (tokens->size() > static_cast<size_t>(INT32_MAX)) {
    throw std::runtime_error("tokenizer.ggml.tokens has more than 2^31-1 entries");
  }
  pieces_ = std::move(*tokens);
  const size_t n = pieces_.size();

  attrs_.assign(n, TokenAttr::NORMAL);
  if (std::optional<std::vector<int64_t>> types = file.get_int_array("tokenizer.ggml.token_type")) {
    if (types->size() != n) {
      throw std::runtime_error(
          fmt::format("tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
                      types->size(), n));
    }
    for (size_t i = 0; i < n; ++i) {
      const int64_t v = (*types)[i];
      if (v < 0 || v > static_cast<int64_t>(TokenAttr::BYTE)) {
        throw std::runtime_error(
            fmt::format("tokenizer.ggml.token_type[{}] = {} is not a token type (0-6)", i, v));
      }
      attrs_[i] = static_cast<TokenAttr>(v);
    }
  }

  text_to_token_.reserve(n);
  for (size_t i = 0; i < n; ++i) text_to_token_[pieces_[i]] = static_cast<Token>(i);

  // Ids that encode emits must exist; the others are only consulted, so bad ones are ignored.
  auto required_id = [&](const std::string& key) -> Token {
    const std::optional<int64_t> id = read_token_id(file, key);
    if (!id) return -1;
    if (*id >= static_cast<int64_t>(n)) {
      throw std::runtime_error(
          fmt::format("{} = {} is outside the vocabulary of {} tokens", key, *id, n));
    }
    return static_cast<Token>(*id);
  };
  auto optional_id = [&](const std::string& key) -> Token {
    const std::optional<int64_t> id = read_token_id(file, key);
    return id && *id < static_cast<int64_t>(n) ? static_cast<Token>(*id) : -1;
  };
  bos_ = required_id("tokenizer.ggml.bos_token_id");
  eos_ = required_id("tokenizer.ggml.eos_token_id");
  unk_ = required_id("tokenizer.ggml.unknown_token_id");
  add_bos_ = file.get_bool("tokenizer.ggml.add_bos_token").value_or(default_add_bos) && bos_ >= 0;
  add_eos_ = file.get_bool("tokenizer.ggml.add_eos_token").value_or(false) && eos_ >= 0;

  for (size_t i = 0; i < n; ++i) {
    const TokenAttr a = attrs_[i];
    if (pieces_[i].empty()) continue;
    if (a == TokenAttr::CONTROL || a == TokenAttr::UNKNOWN || a == TokenAttr::USER_DEFINED) {
      special_by_first_byte_[static_cast<uint8_t>(pieces_[i][0])].push_back(static_cast<Token>(i));
      has_user_defined_ |= a == TokenAttr::USER_DEFINED;
    }
  }
  for (auto& ids : special_by_first_byte_) {
    std::sort(ids.begin(), ids.end(), [&](Token a, Token b) {
      const size_t la = pieces_[a].size(), lb = pieces_[b].size();
      return la != lb ? la > lb : a < b;
    });
  }

  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (const Token id = optional_id(key); id >= 0) eog_.push_back(id);
  }
  if (eos_ >= 0) eog_.push_back(eos_);
  for (std::string_view text : kEndOfGenerationTexts) {
    const Token id = find_token(text);
    if (id >= 0 && (attrs_[id] == TokenAttr::CONTROL || attrs_[id] == TokenAttr::USER_DEFINED)) {
      eog_.push_back(id);
    }
  }
  std::sort(eog_.begin(), eog_.end());
  eog_.erase(std::unique(eog_.begin(), eog_.end()), eog_.end());
}

std::vector<Fragment> VocabTokenizer::split_special(std::string_view text,
                                                    bool parse_special) const {
  std::vector<Fragment> out;
  if (!parse_special && !has_user_defined_) {
    if (!text.empty()) out.push_back({text});
    return out;
  }
  size_t plain_start = 0;
  for (size_t i = 0; i < text.size();) {
    Token hit = -1;
    for (Token id : special_by_first_byte_[static_cast<uint8_t>(text[i])]) {
      if (!parse_special && attrs_[id] != TokenAttr::USER_DEFINED) continue;
      if (text.substr(i).starts_with(pieces_[id])) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    if (i > plain_start) out.push_back({text.substr(plain_start, i - plain_start)});
    out.push_back({{}, hit});
    i += pieces_[hit].size();
    plain_start = i;
  }
  if (plain_start < text.size()) out.push_back({text.substr(plain_start)});
  return out;
}

Token VocabTokenizer::find_token(std::string_view s) const {
  const auto it = text_to_token_.find(s);
  return it == text_to_token_.end() ? -1 : it->second;
}

void VocabTokenizer::begin_special(bool add_special, std::vector<Token>& out) const {
  if (add_special && add_bos_) out.push_back(bos_);
}

void VocabTokenizer::end_special(bool add_special, std::vector<Token>& out) const {
  if (add_special && add_eos_) out.push_back(eos_);
}

std::string VocabTokenizer::token_to_piece(Token t, bool render_special) const {
  if (t < 0 || t >= n_vocab()) {
    throw std::out_of_range(
        fmt::format("token id {} is outside the vocabulary of {} tokens", t, n_vocab()));
  }
  const auto i = static_cast<size_t>(t);
  switch (attrs_[i]) {
    case TokenAttr::NORMAL:
    case TokenAttr::UNDEFINED:
    case TokenAttr::BYTE:
      return decoded_[i];
    case TokenAttr::USER_DEFINED:
      return pieces_[i];
    case TokenAttr::CONTROL:
    case TokenAttr::UNKNOWN:
      return render_special ? pieces_[i] : std::string();
    case TokenAttr::UNUSED:
      break;
  }
  return {};
}

}  // namespace detail

}  // namespace maas::tokenizer
