// Hugging Face tokenizer.json (+ tokenizer_config.json) -> tokenizer.ggml.* metadata.
//
// Two families are recognised from the tokenizer.json pipeline:
//   - byte-level BPE (a ByteLevel pre-tokenizer): GGUF model "gpt2". Vocabulary strings are kept
//     in their byte-level form ("Ġthe"), merges are written as "left right", and the pre-tokenizer
//     regex decides tokenizer.ggml.pre, which selects the same regex in the GGUF reader.
//   - SentencePiece-style BPE (byte_fallback, "▁" for spaces): GGUF model "llama". GGUF's llama
//     tokenizer does not read merges: it repeatedly joins the adjacent pair whose concatenation is
//     a vocabulary entry with the highest score. Hugging Face's BPE joins the pair with the lowest
//     merge rank. Giving each token the score -(rank of the first merge that produces it) makes
//     the two procedures pick the same pair whenever every split of a token into two vocabulary
//     entries is itself a merge, which holds for vocabularies converted from SentencePiece models
//     (their merges list every such split, ordered by the SentencePiece score of the result).
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "convert/convert.h"
#include "convert/hf.h"
#include "tokenizer/tokenizer.h"

namespace maas::convert {

namespace {

using json = nlohmann::json;
using tokenizer::TokenAttr;

// More tokens than any real vocabulary (the largest are ~256k); bounds what a hostile id allocates.
constexpr uint64_t kMaxTokens = 1u << 22;

// Pre-tokenizer regexes as tokenizer.json spells them, and the tokenizer.ggml.pre they select.
struct KnownPre {
  const char* regex;
  const char* pre;
};
constexpr KnownPre kKnownPres[] = {
    {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     "llama-bpe"},
    {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     "qwen2"},
    {R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", "gpt2"},
};
constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string type_of(const json* j) {
  if (j == nullptr) return "none";
  const json* t = member(*j, "type");
  return t != nullptr && t->is_string() ? t->get<std::string>() : "?";
}

bool bool_member(const json& obj, const char* key, bool fallback) {
  const json* v = member(obj, key);
  return v != nullptr && v->is_boolean() ? v->get<bool>() : fallback;
}

// The items of a "Sequence" component (pretokenizers / normalizers / processors), or the
// component itself.
std::vector<const json*> flatten(const json* component, const char* list_key) {
  std::vector<const json*> out;
  if (component == nullptr) return out;
  if (type_of(component) == "Sequence") {
    const json* items = member(*component, list_key);
    if (items != nullptr && items->is_array()) {
      for (const auto& item : *items) out.push_back(&item);
    }
  } else {
    out.push_back(component);
  }
  return out;
}

// A special-token entry of tokenizer_config.json: a string, {"content": "..."} or null.
std::optional<std::string> token_text(const json& cfg, const char* key) {
  const json* v = member(cfg, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  const json* content = member(*v, "content");
  if (content != nullptr && content->is_string()) return content->get<std::string>();
  throw Error(
      fmt::format("tokenizer_config.json: {} is neither a string nor {{\"content\": ...}}", key));
}

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<bool> from_added;  // set by added_tokens (overrides the model vocabulary)
  std::unordered_map<std::string, int32_t> ids;

  std::optional<int32_t> find(const std::string& text) const {
    auto it = ids.find(text);
    return it == ids.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }
};

uint64_t checked_id(const json& v, const std::string& what) {
  if (!v.is_number_unsigned() || v.get<uint64_t>() >= kMaxTokens) {
    throw Error(fmt::format("tokenizer.json: {} has id {} (must be an integer in [0, {}))", what,
                            v.dump(), kMaxTokens));
  }
  return v.get<uint64_t>();
}

Vocab read_vocab(const json& model, const json& tok, uint64_t n_vocab_min) {
  const json* vocab = member(model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    throw Error("tokenizer.json: model.vocab is missing or not an object of token -> id");
  }
  const json* added = member(tok, "added_tokens");
  if (added != nullptr && !added->is_array())
    throw Error("tokenizer.json: added_tokens is not an array");

  uint64_t n = n_vocab_min;
  for (const auto& [text, id] : vocab->items())
    n = std::max(n, checked_id(id, "token '" + text + "'") + 1);
  if (added != nullptr) {
    for (const auto& a : *added) {
      const json* id = member(a, "id");
      if (id == nullptr) throw Error("tokenizer.json: an added_tokens entry has no id");
      n = std::max(n, checked_id(*id, "an added token") + 1);
    }
  }
  Vocab v;
  v.tokens.resize(n);
  v.types.assign(n, static_cast<int32_t>(TokenAttr::UNUSED));
  v.from_added.assign(n, false);
  std::vector<bool> set(n, false);
  for (const auto& [text, id_json] : vocab->items()) {
    const auto id = id_json.get<uint64_t>();
    if (set[id]) {
      throw Error(fmt::format("tokenizer.json: id {} is used by both '{}' and '{}'", id,
                              v.tokens[id], text));
    }
    set[id] = true;
    v.tokens[id] = text;
    v.types[id] = static_cast<int32_t>(TokenAttr::NORMAL);
  }
  if (added != nullptr) {
    for (const auto& a : *added) {
      const auto id = a["id"].get<uint64_t>();
      const json* content = member(a, "content");
      if (content == nullptr || !content->is_string()) {
        throw Error(fmt::format("tokenizer.json: added token {} has no string content", id));
      }
      set[id] = true;
      v.tokens[id] = content->get<std::string>();
      v.from_added[id] = true;
      v.types[id] = static_cast<int32_t>(
          bool_member(a, "special", false) ? TokenAttr::CONTROL : TokenAttr::USER_DEFINED);
    }
  }
  for (uint64_t id = 0; id < n; ++id) {
    if (!set[id]) v.tokens[id] = fmt::format("[PAD{}]", id);  // type stays UNUSED
  }
  // Lookups by text prefer added tokens, as Hugging Face's token_to_id does.
  for (int pass = 0; pass < 2; ++pass) {
    for (uint64_t id = 0; id < n; ++id) {
      if (v.from_added[id] == (pass == 0)) v.ids.emplace(v.tokens[id], static_cast<int32_t>(id));
    }
  }
  return v;
}

// model.merges as (left, right) pairs; entries are "left right" strings or [left, right] arrays.
std::vector<std::pair<std::string, std::string>> read_merges(const json& model) {
  std::vector<std::pair<std::string, std::string>> out;
  const json* merges = member(model, "merges");
  if (merges == nullptr) return out;
  if (!merges->is_array()) throw Error("tokenizer.json: model.merges is not an array");
  out.reserve(merges->size());
  for (const auto& m : *merges) {
    if (m.is_string()) {
      const auto& s = m.get_ref<const std::string&>();
      const auto space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        throw Error(fmt::format(
            "tokenizer.json: merge \"{}\" is not two tokens separated by one space", s));
      }
      out.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      if (out.back().first.find(' ') != std::string::npos ||
          out.back().second.find(' ') != std::string::npos) {
        throw Error(
            fmt::format("tokenizer.json: merge [\"{}\", \"{}\"] contains a space, which GGUF's "
                        "\"left right\" merges cannot represent",
                        out.back().first, out.back().second));
      }
    } else {
      throw Error(
          fmt::format("tokenizer.json: merge {} is neither \"a b\" nor [\"a\", \"b\"]", m.dump()));
    }
    if (out.back().first.empty() || out.back().second.empty()) {
      throw Error(fmt::format("tokenizer.json: merge {} has an empty side", m.dump()));
    }
  }
  return out;
}

// tokenizer.ggml.pre for a byte-level pre-tokenizer, or an Error saying why it is not supported.
std::string byte_level_pre(const json* pre_tokenizer) {
  const auto items = flatten(pre_tokenizer, "pretokenizers");
  const json* byte_level = nullptr;
  const json* split = nullptr;
  for (const json* item : items) {
    const std::string t = type_of(item);
    if (t == "ByteLevel" && byte_level == nullptr) {
      byte_level = item;
    } else if (t == "Split" && split == nullptr && byte_level == nullptr) {
      split = item;
    } else {
      throw Error(
          fmt::format("tokenizer.json: unsupported pre-tokenizer step '{}' (supported: one "
                      "regex Split followed by ByteLevel, or ByteLevel alone)",
                      t));
    }
  }
  if (bool_member(*byte_level, "add_prefix_space", false)) {
    throw Error("tokenizer.json: ByteLevel pre-tokenizer with add_prefix_space is not supported");
  }
  std::string regex;
  if (bool_member(*byte_level, "use_regex", true)) {
    if (split != nullptr)
      throw Error("tokenizer.json: both a Split and a regex ByteLevel pre-tokenizer");
    regex = kKnownPres[2].regex;  // ByteLevel's own regex is GPT-2's
  } else {
    if (split == nullptr)
      throw Error("tokenizer.json: ByteLevel pre-tokenizer without any regex split");
    const json* pattern = member(*split, "pattern");
    const json* re = pattern != nullptr ? member(*pattern, "Regex") : nullptr;
    if (re == nullptr || !re->is_string())
      throw Error("tokenizer.json: Split pre-tokenizer without a Regex pattern");
    const json* behavior = member(*split, "behavior");
    if (behavior == nullptr || *behavior != "Isolated" || bool_member(*split, "invert", false)) {
      throw Error(
          "tokenizer.json: Split pre-tokenizer must have behavior Isolated and invert false");
    }
    regex = re->get<std::string>();
  }
  for (const auto& k : kKnownPres) {
    if (regex == k.regex) return k.pre;
  }
  throw Error(
      fmt::format("tokenizer.json: unknown pre-tokenizer regex {} (known: the GPT-2, Llama 3 "
                  "and Qwen2 ones)",
                  json(regex).dump()));
}

// Whether the SentencePiece-style pipeline prepends "▁" to the text; throws for pipelines other
// than the two Hugging Face writes for SentencePiece BPE models.
bool spm_add_space_prefix(const json& tok) {
  const json* normalizer = member(tok, "normalizer");
  const json* pre = member(tok, "pre_tokenizer");
  bool prefix = false, replaces_spaces = false;
  for (const json* n : flatten(normalizer, "normalizers")) {
    const std::string t = type_of(n);
    const json* content = member(*n, "content");
    const json* pattern = member(*n, "pattern");
    const json* str = pattern != nullptr ? member(*pattern, "String") : nullptr;
    const json* prepend = member(*n, "prepend");
    if (t == "Prepend" && prepend != nullptr && *prepend == kSpace) {
      prefix = true;
    } else if (t == "Replace" && str != nullptr && *str == " " && content != nullptr &&
               *content == kSpace) {
      replaces_spaces = true;
    } else {
      throw Error(
          fmt::format("tokenizer.json: unsupported normalizer step '{}' for a SentencePiece-style "
                      "tokenizer",
                      t));
    }
  }
  if (pre != nullptr) {
    if (type_of(pre) != "Metaspace") {
      throw Error(
          fmt::format("tokenizer.json: unsupported pre-tokenizer '{}' for a SentencePiece-style "
                      "tokenizer",
                      type_of(pre)));
    }
    const json* replacement = member(*pre, "replacement");
    if (replacement != nullptr && *replacement != kSpace) {
      throw Error("tokenizer.json: Metaspace replacement other than U+2581 is not supported");
    }
    if (bool_member(*pre, "split", false)) {
      throw Error(
          "tokenizer.json: Metaspace with split=true is not supported (SentencePiece does not "
          "split)");
    }
    replaces_spaces = true;
    const json* scheme = member(*pre, "prepend_scheme");
    if (scheme != nullptr && scheme->is_string()) {
      prefix = *scheme != "never";
    } else {
      prefix = bool_member(*pre, "add_prefix_space", true);
    }
  }
  if (!replaces_spaces)
    throw Error("tokenizer.json: SentencePiece-style tokenizer that does not map spaces to U+2581");
  return prefix;
}

// Scores reproducing Hugging Face's merge order under GGUF's score-driven llama tokenizer (see
// the file comment).
std::vector<float> spm_scores(const Vocab& v,
                              const std::vector<std::pair<std::string, std::string>>& merges) {
  const auto n = v.tokens.size();
  std::vector<float> scores(n, 0.0f);
  std::vector<bool> scored(n, false);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    auto id = v.find(merges[rank].first + merges[rank].second);
    if (!id) {
      throw Error(fmt::format(
          "tokenizer.json: merge \"{} {}\" produces a token missing from the vocabulary",
          merges[rank].first, merges[rank].second));
    }
    if (!scored[*id]) {
      scored[*id] = true;
      scores[*id] = -static_cast<float>(rank);
    }
  }
  for (size_t id = 0; id < n; ++id) {
    const auto type = static_cast<TokenAttr>(v.types[id]);
    // Tokens no merge produces come after every merge result (single characters, which start as
    // symbols and need no score, and pieces Hugging Face cannot reach).
    if (!scored[id] && type == TokenAttr::NORMAL)
      scores[id] = -static_cast<float>(merges.size() + id);
  }
  return scores;
}

bool is_byte_token(const std::string& s) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return s.size() == 6 && s.starts_with("<0x") && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

// The post-processor's TemplateProcessing step, if any.
const json* template_processing(const json& tok) {
  for (const json* p : flatten(member(tok, "post_processor"), "processors")) {
    if (type_of(p) == "TemplateProcessing") return p;
  }
  return nullptr;
}

// Whether a template's single-sequence form starts (front) or ends with `token`.
bool template_adds(const json* tmpl, const std::optional<std::string>& token, bool front) {
  if (tmpl == nullptr || !token) return false;
  const json* single = member(*tmpl, "single");
  if (single == nullptr || !single->is_array() || single->empty()) return false;
  const json& piece = front ? single->front() : single->back();
  const json* special = member(piece, "SpecialToken");
  const json* id = special != nullptr ? member(*special, "id") : nullptr;
  return id != nullptr && *id == *token;
}

std::optional<std::string> chat_template(const json& cfg, const std::filesystem::path& dir) {
  if (const json* t = member(cfg, "chat_template")) {
    if (t->is_string()) return t->get<std::string>();
    if (t->is_array()) {
      for (const auto& named : *t) {
        const json* name = member(named, "name");
        const json* text = member(named, "template");
        if (name != nullptr && *name == "default" && text != nullptr && text->is_string()) {
          return text->get<std::string>();
        }
      }
      throw Error("tokenizer_config.json: chat_template is a list without a \"default\" template");
    }
    throw Error(
        "tokenizer_config.json: chat_template is neither a string nor a list of named templates");
  }
  std::error_code ec;
  const auto jinja = dir / "chat_template.jinja";
  if (std::filesystem::is_regular_file(jinja, ec)) {
    std::ifstream in(jinja, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) throw Error(fmt::format("cannot read {}", jinja.string()));
    return text;
  }
  return std::nullopt;
}

}  // namespace

uint64_t hf_tokenizer_to_gguf(const std::string& dir_name, gguf::Writer& w, uint64_t n_vocab_min) {
  const std::filesystem::path dir(dir_name);
  const json tok = read_json_file((dir / "tokenizer.json").string());
  std::error_code ec;
  const auto cfg_path = dir / "tokenizer_config.json";
  const json cfg =
      std::filesystem::exists(cfg_path, ec) ? read_json_file(cfg_path.string()) : json::object();
  if (!tok.is_object()) throw Error("tokenizer.json: not a JSON object");
  if (!cfg.is_object()) throw Error("tokenizer_config.json: not a JSON object");

  const json* model = member(tok, "model");
  if (model == nullptr || !model->is_object()) throw Error("tokenizer.json: no model object");
  const std::string model_type = type_of(model);
  if (model_type != "BPE") {
    throw Error(
        fmt::format("tokenizer.json: model type '{}' is not supported (only BPE)", model_type));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json* v = member(*model, key);
    if (v != nullptr && !(v->is_string() && v->get<std::string>().empty())) {
      throw Error(fmt::format("tokenizer.json: BPE with {} is not supported", key));
    }
  }

  // Which family: a ByteLevel step anywhere in the pre-tokenizer means byte-level BPE.
  bool byte_level = false;
  for (const json* p : flatten(member(tok, "pre_tokenizer"), "pretokenizers")) {
    byte_level = byte_level || type_of(p) == "ByteLevel";
  }
  const bool byte_fallback = bool_member(*model, "byte_fallback", false);
  if (!byte_level && !byte_fallback) {
    throw Error(
        fmt::format("tokenizer.json: unsupported BPE tokenizer (pre-tokenizer '{}', no byte "
                    "fallback): neither byte-level nor SentencePiece-style",
                    type_of(member(tok, "pre_tokenizer"))));
  }

  Vocab v = read_vocab(*model, tok, n_vocab_min);
  const auto merges = read_merges(*model);
  std::vector<std::string> merge_strings;

  std::string pre;
  bool add_space_prefix = false;
  std::vector<float> scores;
  if (byte_level) {
    pre = byte_level_pre(member(tok, "pre_tokenizer"));
    const std::string norm = type_of(member(tok, "normalizer"));
    // NFC (Qwen) changes only text that is not already composed; GGUF has no key for it.
    if (norm != "none" && norm != "NFC") {
      throw Error(
          fmt::format("tokenizer.json: normalizer '{}' is not supported for byte-level BPE", norm));
    }
    merge_strings.reserve(merges.size());
    for (const auto& [a, b] : merges) {
      if (!v.find(a) || !v.find(b)) {
        throw Error(fmt::format(
            "tokenizer.json: merge \"{} {}\" uses a token missing from the vocabulary", a, b));
      }
      merge_strings.push_back(a + " " + b);
    }
  } else {
    add_space_prefix = spm_add_space_prefix(tok);
    for (size_t id = 0; id < v.tokens.size(); ++id) {
      if (v.types[id] == static_cast<int32_t>(TokenAttr::NORMAL) && is_byte_token(v.tokens[id])) {
        v.types[id] = static_cast<int32_t>(TokenAttr::BYTE);
      }
    }
    scores = spm_scores(v, merges);
  }

  // Special tokens: tokenizer_config.json names them by text; SentencePiece models default to
  // the LlamaTokenizer ones.
  std::optional<std::string> unk_text;
  if (const json* u = member(*model, "unk_token"); u != nullptr && u->is_string())
    unk_text = u->get<std::string>();
  auto special = [&](const char* key,
                     std::optional<std::string> fallback) -> std::optional<int32_t> {
    // An explicit null means "none"; only an absent key takes the family's default.
    auto text = cfg.contains(key) ? token_text(cfg, key) : fallback;
    if (!text) return std::nullopt;
    auto id = v.find(*text);
    if (!id) {
      throw Error(
          fmt::format("tokenizer_config.json: {} \"{}\" is not in the vocabulary", key, *text));
    }
    return id;
  };
  const bool spm = !byte_level;
  auto maybe = [&](const char* text) {
    return spm && v.find(text) ? std::optional<std::string>(text) : std::nullopt;
  };
  const auto bos = special("bos_token", maybe("<s>"));
  const auto eos = special("eos_token", maybe("</s>"));
  const auto unk = special("unk_token", unk_text && v.find(*unk_text) ? unk_text : std::nullopt);
  const auto pad = special("pad_token", std::nullopt);
  if (unk) v.types[*unk] = static_cast<int32_t>(TokenAttr::UNKNOWN);
  if (spm) {
    for (const auto& id : {bos, eos}) {
      if (id) v.types[*id] = static_cast<int32_t>(TokenAttr::CONTROL);
    }
  }

  // add_bos / add_eos: tokenizer_config.json, else the post-processor template, else the family's
  // convention (SentencePiece LlamaTokenizer and Llama 3 start every text with BOS).
  auto bos_text = bos ? std::optional<std::string>(v.tokens[*bos]) : std::nullopt;
  auto eos_text = eos ? std::optional<std::string>(v.tokens[*eos]) : std::nullopt;
  const json* tmpl = template_processing(tok);
  bool add_bos =
      tmpl != nullptr ? template_adds(tmpl, bos_text, true) : (spm || pre == "llama-bpe");
  bool add_eos = template_adds(tmpl, eos_text, false);
  if (const json* b = member(cfg, "add_bos_token"); b != nullptr && b->is_boolean())
    add_bos = b->get<bool>();
  if (const json* e = member(cfg, "add_eos_token"); e != nullptr && e->is_boolean())
    add_eos = e->get<bool>();
  add_bos = add_bos && bos.has_value();
  add_eos = add_eos && eos.has_value();

  w.set_string("tokenizer.ggml.model", byte_level ? "gpt2" : "llama");
  if (byte_level) w.set_string("tokenizer.ggml.pre", pre);
  w.set("tokenizer.ggml.tokens", gguf::Value::strings(v.tokens));
  if (!byte_level) w.set("tokenizer.ggml.scores", gguf::Value::floats(scores));
  w.set("tokenizer.ggml.token_type", gguf::Value::int32s(v.types));
  if (byte_level) w.set("tokenizer.ggml.merges", gguf::Value::strings(merge_strings));
  if (bos) w.set_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(*bos));
  if (eos) w.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(*eos));
  if (unk) w.set_u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(*unk));
  if (pad) w.set_u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(*pad));
  w.set_bool("tokenizer.ggml.add_bos_token", add_bos);
  w.set_bool("tokenizer.ggml.add_eos_token", add_eos);
  if (!byte_level) w.set_bool("tokenizer.ggml.add_space_prefix", add_space_prefix);
  if (auto t = chat_template(cfg, dir)) w.set_string("tokenizer.chat_template", *t);
  return v.tokens.size();
}

}  // namespace maas::convert
