#include "tokenizer/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdexcept>

namespace maas::tokenizer {

namespace {

// The Hugging Face tokenizer.json regexes (Oniguruma), with \s spelled out as Unicode White_Space
// (U+0009-000D, U+0085 and the Z categories), which is what Oniguruma's and llama.cpp's \s mean;
// PCRE2's \s with PCRE2_UCP would also match U+180E.
#define MAAS_WS "\\x{09}-\\x{0D}\\x{85}\\p{Z}"

const std::string kGpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" MAAS_WS
                               "\\p{L}\\p{N}]+"
                               "|[" MAAS_WS "]+(?![^" MAAS_WS "])|[" MAAS_WS "]+";

const std::string kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^" MAAS_WS "\\p{L}\\p{N}]+[\\r\\n]*|[" MAAS_WS
    "]*[\\r\\n]+"
    "|[" MAAS_WS "]+(?![^" MAAS_WS "])|[" MAAS_WS "]+";

const std::string kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^" MAAS_WS "\\p{L}\\p{N}]+[\\r\\n]*|[" MAAS_WS
    "]*[\\r\\n]+"
    "|[" MAAS_WS "]+(?![^" MAAS_WS "])|[" MAAS_WS "]+";

#undef MAAS_WS

struct NamedType {
  std::string_view name;
  PreType type;
};
constexpr NamedType kNames[] = {
    {"default", PreType::GPT2},     {"gpt2", PreType::GPT2},     {"gpt-2", PreType::GPT2},
    {"llama-bpe", PreType::LLAMA3}, {"llama3", PreType::LLAMA3}, {"llama-v3", PreType::LLAMA3},
    {"qwen2", PreType::QWEN2},
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof buf) < 0)
    return "PCRE2 error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

PreType pre_type_from_name(std::string_view name) {
  for (const auto& n : kNames) {
    if (n.name == name) return n.type;
  }
  std::string known;
  for (const auto& n : kNames) {
    if (!known.empty()) known += ", ";
    known += n.name;
  }
  throw std::runtime_error("unknown pre-tokenizer tokenizer.ggml.pre = '" + std::string(name) +
                           "' (known: " + known + ")");
}

const std::string& pre_type_regex(PreType type) {
  switch (type) {
    case PreType::LLAMA3:
      return kLlama3Regex;
    case PreType::QWEN2:
      return kQwen2Regex;
    case PreType::GPT2:
      break;
  }
  return kGpt2Regex;
}

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(PreType type) : type_(type), regex_(std::make_unique<Regex>()) {
  const std::string& pattern = pre_type_regex(type);
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  // MATCH_INVALID_UTF: ill-formed bytes in the subject never match and never make matching fail.
  regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                               PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error,
                               &error_offset, nullptr);
  if (regex_->code == nullptr) {
    throw std::runtime_error("cannot compile pre-tokenizer regex at offset " +
                             std::to_string(error_offset) + ": " + pcre2_message(error));
  }
  // JIT is an optimisation only: without it pcre2_match interprets the pattern.
  pcre2_jit_compile(regex_->code, PCRE2_JIT_COMPLETE);
}

PreTokenizer::~PreTokenizer() = default;

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  if (text.empty()) return;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(regex_->code, nullptr), &pcre2_match_data_free);
  if (!match) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;      // where the next search starts
  size_t emitted = 0;  // end of the text already appended to out
  while (pos < text.size()) {
    int rc = pcre2_match(regex_->code, subject, text.size(), pos, 0, match.get(), nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      // E.g. the JIT stack ran out on a pathological subject: the interpreter keeps its
      // backtracking state on the heap.
      rc = pcre2_match(regex_->code, subject, text.size(), pos, PCRE2_NO_JIT, match.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw std::runtime_error("pre-tokenizer regex failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const size_t start = ovector[0], end = ovector[1];
    if (start < pos || end < start || end > text.size()) {
      throw std::runtime_error("pre-tokenizer regex returned an invalid match");
    }
    if (end == start) {  // none of the regexes can match empty; guard against looping anyway
      pos = start + 1;
      continue;
    }
    if (start > emitted) out.push_back(text.substr(emitted, start - emitted));
    out.push_back(text.substr(start, end - start));
    emitted = pos = end;
  }
  if (emitted < text.size()) out.push_back(text.substr(emitted));
}

std::vector<std::string> pre_tokenize(std::string_view text, PreType type) {
  const PreTokenizer pre(type);
  std::vector<std::string_view> pieces;
  pre.split(text, pieces);
  return {pieces.begin(), pieces.end()};
}

}  // namespace maas::tokenizer
