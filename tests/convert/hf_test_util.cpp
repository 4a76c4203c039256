#include "convert/hf_test_util.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>

#include "support/test_util.h"

namespace maas::test::hf {

namespace {

void put_u64_le(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

const char* kSp = "\xE2\x96\x81";  // U+2581

// A byte-level BPE tokenizer: the 256 byte symbols, a few merges, added tokens at ids that leave
// gaps, with the given pre-tokenizer regex. Merges are "a b" strings or [a, b] arrays.
json byte_level_tokenizer(const std::string& regex, bool merges_as_arrays) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_char(static_cast<uint8_t>(b))] = b;
  const std::string G = byte_level_char(' ');  // "Ġ"
  const std::vector<std::pair<std::string, std::string>> merges = {
      {G, "t"}, {"h", "e"}, {G + "t", "he"}, {"i", "n"}, {G, "a"}, {"in", "g"}};
  int id = 256;
  json merge_list = json::array();
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;
    if (merges_as_arrays)
      merge_list.push_back({a, b});
    else
      merge_list.push_back(a + " " + b);
  }
  json added = json::array();
  auto add = [&](int tid, const std::string& text, bool special) {
    added.push_back({{"id", tid},
                     {"content", text},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", special}});
  };
  add(264, "<|begin|>", true);
  add(265, "<|end|>", true);
  add(266, "<tool>", false);
  json tok;
  tok["version"] = "1.0";
  tok["added_tokens"] = added;
  tok["normalizer"] = nullptr;
  tok["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "Split"},
                             {"pattern", {{"Regex", regex}}},
                             {"behavior", "Isolated"},
                             {"invert", false}},
                            {{"type", "ByteLevel"},
                             {"add_prefix_space", false},
                             {"trim_offsets", true},
                             {"use_regex", false}}}}};
  tok["post_processor"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}};
  tok["decoder"] = {{"type", "ByteLevel"}};
  tok["model"] = {{"type", "BPE"},       {"dropout", nullptr},     {"unk_token", nullptr},
                  {"fuse_unk", false},   {"byte_fallback", false}, {"vocab", vocab},
                  {"merges", merge_list}};
  return tok;
}

// A Llama 2 style tokenizer.json: <unk>, <s>, </s>, 256 byte tokens, then pieces and merges.
// "▁ab" is produced by two merges of different ranks.
json spm_tokenizer() {
  json vocab = json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab[buf] = 3 + b;
  }
  const std::string sp = kSp;
  const std::vector<std::string> pieces = {sp,       "a",       "b",  "c",     "ab",
                                           sp + "a", sp + "ab", "bc", sp + "c"};
  int id = 259;
  for (const auto& p : pieces) vocab[p] = id++;
  json merges = json::array({"a b", sp + " a", sp + "a b", "b c", sp + " ab", sp + " c"});
  json added = json::array();
  for (auto [tid, text] : {std::pair{0, "<unk>"}, {1, "<s>"}, {2, "</s>"}}) {
    added.push_back({{"id", tid},
                     {"content", text},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  json tok;
  tok["version"] = "1.0";
  tok["added_tokens"] = added;
  tok["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Prepend"}, {"prepend", sp}},
                         {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}}}};
  tok["pre_tokenizer"] = nullptr;
  tok["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single",
                            {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
  tok["decoder"] = nullptr;
  tok["model"] = {{"type", "BPE"},    {"dropout", nullptr},    {"unk_token", "<unk>"},
                  {"fuse_unk", true}, {"byte_fallback", true}, {"vocab", vocab},
                  {"merges", merges}};
  return tok;
}

const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace

std::string safetensors_prefix(const std::string& header_json) {
  std::string s;
  put_u64_le(s, header_json.size());
  return s + header_json;
}

std::string safetensors_bytes(const std::vector<StTensor>& tensors, const json& metadata) {
  json header = json::object();
  uint64_t off = 0;
  for (const auto& t : tensors) {
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  std::string out = safetensors_prefix(text);
  for (const auto& t : tensors) out += t.bytes;
  return out;
}

uint16_t f16_bits(float x) {
  // Only for values exactly representable as normal halfs (or zero).
  if (x == 0) return std::signbit(x) ? 0x8000 : 0;
  const uint16_t sign = x < 0 ? 0x8000 : 0;
  int e;
  const double m = std::frexp(std::fabs(static_cast<double>(x)), &e);  // x = m * 2^e, m in [0.5, 1)
  const int exp = e - 1 + 15;
  if (exp <= 0 || exp >= 31) throw std::logic_error("value outside the normal half range");
  const double frac = (m * 2 - 1) * 1024;
  if (frac != std::floor(frac)) throw std::logic_error("value not exact in half precision");
  return static_cast<uint16_t>(sign | (exp << 10) | static_cast<uint16_t>(frac));
}

uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0xffff) != 0) throw std::logic_error("value not exact in bfloat16");
  return static_cast<uint16_t>(u >> 16);
}

StTensor make_tensor(const std::string& name, const std::string& dtype, std::vector<uint64_t> shape,
                     const std::vector<float>& values) {
  StTensor t{name, dtype, std::move(shape), {}};
  for (float v : values) {
    if (dtype == "F32") {
      char b[4];
      std::memcpy(b, &v, 4);
      t.bytes.append(b, 4);
    } else {
      const uint16_t h = dtype == "F16" ? f16_bits(v) : bf16_bits(v);
      t.bytes.push_back(static_cast<char>(h & 0xff));
      t.bytes.push_back(static_cast<char>(h >> 8));
    }
  }
  return t;
}

std::string byte_level_char(uint8_t b) {
  // Printable bytes stand for themselves; the others map, in byte order, to U+0100 onwards.
  auto printable = [](int c) {
    return (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255);
  };
  if (printable(b)) return utf8(b);
  uint32_t n = 0;
  for (int c = 0; c < b; ++c) n += printable(c) ? 0 : 1;
  return utf8(256 + n);
}

TinyModel write_tiny_model(const std::string& dir, const TinyOptions& opt, uint32_t seed) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  TinyModel m;
  const bool llama = opt.arch == Arch::kLlama, qwen3 = opt.arch == Arch::kQwen3;
  m.n_embd = 64;
  m.n_ff = 80;  // ffn_down rows of 80 do not fit 32-element blocks
  m.n_layer = 2;
  m.n_head = 4;
  m.n_head_kv = 2;
  m.head_dim = qwen3 ? 32 : 16;  // Qwen3 sets head_dim explicitly, unequal to hidden/heads
  m.n_vocab = opt.spm_tokenizer ? 300 : 272;

  json& c = m.config;
  c["architectures"] = {llama   ? "LlamaForCausalLM"
                        : qwen3 ? "Qwen3ForCausalLM"
                                : "Qwen2ForCausalLM"};
  c["model_type"] = llama ? "llama" : qwen3 ? "qwen3" : "qwen2";
  c["hidden_size"] = m.n_embd;
  c["intermediate_size"] = m.n_ff;
  c["num_hidden_layers"] = m.n_layer;
  c["num_attention_heads"] = m.n_head;
  c["num_key_value_heads"] = m.n_head_kv;
  c["max_position_embeddings"] = llama ? 2048 : 4096;
  c["rms_norm_eps"] = llama ? 1e-5 : 1e-6;
  c["rope_theta"] = llama ? 500000.0 : 1000000.0;
  c["vocab_size"] = m.n_vocab;
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = opt.tied || opt.tied_but_stored;
  c["torch_dtype"] = "bfloat16";
  if (qwen3) c["head_dim"] = m.head_dim;
  if (std::string(opt.rope_scaling) == "llama3") {
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  } else if (std::string(opt.rope_scaling) == "linear") {
    c["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  } else {
    c["rope_scaling"] = nullptr;
  }

  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::uniform_int_distribution<int> k64(-128, 128);
  std::vector<StTensor> tensors;
  auto add = [&](const std::string& name, std::vector<uint64_t> shape, const std::string& dtype) {
    uint64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> v(n);
    // F32 gets arbitrary floats; F16/BF16 get multiples of 1/64, exact in both.
    for (auto& x : v) x = dtype == "F32" ? uni(rng) : static_cast<float>(k64(rng)) / 64.0f;
    tensors.push_back(make_tensor(name, dtype, shape, v));
    m.names.push_back(name);
    m.shapes[name] = shape;
    m.values[name] = std::move(v);
    m.dtypes[name] = dtype;
  };
  const uint64_t E = m.n_embd, F = m.n_ff, Q = m.n_head * m.head_dim, KV = m.n_head_kv * m.head_dim;
  add("model.embed_tokens.weight", {m.n_vocab, E}, "BF16");
  for (uint64_t i = 0; i < m.n_layer; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {E}, "F32");
    add(p + "self_attn.q_proj.weight", {Q, E}, "F32");
    add(p + "self_attn.k_proj.weight", {KV, E}, "F32");
    add(p + "self_attn.v_proj.weight", {KV, E}, "F32");
    add(p + "self_attn.o_proj.weight", {E, Q}, "F32");
    if (opt.arch == Arch::kQwen2) {
      add(p + "self_attn.q_proj.bias", {Q}, "F32");
      add(p + "self_attn.k_proj.bias", {KV}, "F32");
      add(p + "self_attn.v_proj.bias", {KV}, "F32");
    }
    if (qwen3) {
      add(p + "self_attn.q_norm.weight", {m.head_dim}, "BF16");
      add(p + "self_attn.k_norm.weight", {m.head_dim}, "BF16");
    }
    add(p + "post_attention_layernorm.weight", {E}, "F32");
    add(p + "mlp.gate_proj.weight", {F, E}, "F16");
    add(p + "mlp.up_proj.weight", {F, E}, "F16");
    add(p + "mlp.down_proj.weight", {E, F}, "F16");
    if (opt.inv_freq) add(p + "self_attn.rotary_emb.inv_freq", {m.head_dim / 2}, "F32");
  }
  add("model.norm.weight", {E}, "F32");
  if (!opt.tied || opt.tied_but_stored) add("lm_head.weight", {m.n_vocab, E}, "F32");

  if (opt.shards <= 1) {
    write_file(dir + "/model.safetensors", safetensors_bytes(tensors, {{"format", "pt"}}));
  } else {
    json weight_map = json::object();
    std::vector<std::vector<StTensor>> parts(static_cast<size_t>(opt.shards));
    for (size_t i = 0; i < tensors.size(); ++i) parts[i % parts.size()].push_back(tensors[i]);
    for (size_t s = 0; s < parts.size(); ++s) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, parts.size());
      write_file(dir + "/" + name, safetensors_bytes(parts[s], {{"format", "pt"}}));
      for (const auto& t : parts[s]) weight_map[t.name] = name;
    }
    write_file(dir + "/model.safetensors.index.json",
               json({{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}).dump(2));
  }
  write_file(dir + "/config.json", c.dump(2));

  json& tc = m.tokenizer_config;
  if (opt.spm_tokenizer) {
    m.tokenizer = spm_tokenizer();
    tc = {
        {"add_bos_token", true},
        {"add_eos_token", false},
        {"bos_token", "<s>"},
        {"eos_token", {{"content", "</s>"}, {"lstrip", false}}},
        {"unk_token", "<unk>"},
        {"pad_token", nullptr},
        {"chat_template", "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"}};
  } else if (llama) {
    m.tokenizer = byte_level_tokenizer(kLlama3Regex, false);
    tc = {{"bos_token", "<|begin|>"},
          {"eos_token", {{"content", "<|end|>"}, {"special", true}}},
          {"chat_template",
           "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor "
           "%}"}};
  } else {
    m.tokenizer = byte_level_tokenizer(kQwen2Regex, qwen3);
    tc = {{"add_bos_token", false},
          {"bos_token", nullptr},
          {"eos_token", "<|end|>"},
          {"pad_token", "<|begin|>"},
          {"chat_template",
           json::array({{{"name", "tool_use"}, {"template", "TOOLS {{ tools }}"}},
                        {{"name", "default"},
                         {"template", "{% for m in messages %}{{ m.content }}\n{% endfor %}"}}})}};
  }
  write_file(dir + "/tokenizer.json", m.tokenizer.dump(2));
  write_file(dir + "/tokenizer_config.json", tc.dump(2));
  return m;
}

std::vector<std::string> cross_check_strings() {
  std::vector<std::string> s = {
      "",
      " ",
      "  ",
      "   ",
      "\t",
      "\n",
      "\n\n\n",
      " \n",
      "\r\n",
      "   \n   \n",
      "\t\t\t",
      " \t \n \r\n ",
      "Hello world",
      " Hello world",
      "Hello World!",
      "hello, world.",
      "HELLO WORLD",
      "I'M here",
      "I'm",
      "I'M",
      "don't",
      "DON'T",
      "Don't you're they've we'll he'd it's",
      "'s 't 're 've 'm 'll 'd",
      "'S 'T 'RE 'VE 'M 'LL 'D",
      "O'Neil's",
      "can't won't shouldn't",
      "rock 'n' roll",
      "''quoted''",
      "it''s",
      "1",
      "12",
      "123",
      "1234",
      "12345",
      "123456789",
      "3.14159",
      "1,000,000",
      "2024-11-29",
      "+1 (555) 123-4567",
      "0x1F 0b1010 1e-9",
      "v1.2.3",
      "100%",
      "$100.00 & 50%",
      "   leading spaces",
      "trailing spaces   ",
      "tabs\tand\tspaces",
      "multiple   spaces  between",
      "line1\nline2\r\nline3",
      "a  b   c    d     e",
      "ends with newline\n",
      "\n starts with newline",
      "Ünïcödé",
      "naïve café",
      "Straße",
      "Привет, мир!",
      "Γειά σου Κόσμε",
      "こんにちは世界",
      "你好，世界！",
      "안녕하세요",
      "مرحبا بالعالم",
      "שלום עולם",
      "नमस्ते दुनिया",
      "ภาษาไทย",
      "Tiếng Việt có dấu",
      "Ελληνικά και English mixed",
      "日本語とEnglishの混在テキスト",
      "🙂",
      "👍🏽",
      "👨‍👩‍👧‍👦 family",
      "🇫🇷🇩🇪",
      "emoji 🚀🔥 mixed",
      "🙂🙂🙂",
      " 🙂 ",
      "❤️",
      "def f(x):\n    return x * 2\n",
      "for (int i = 0; i < n; ++i) { sum += a[i]; }",
      "#include <stdio.h>\nint main() { return 0; }",
      "<html><body>Hi</body></html>",
      "SELECT * FROM t WHERE id = 42;",
      "https://example.com/path?q=1&r=2",
      "user@example.com",
      "C++ / Rust / Go",
      "x = [1, 2, 3]\ny = {'a': 1}",
      "    indented\n        more\n",
      "if (a && b || !c) {}",
      "a\u00a0b",
      "zero\u200bwidth",
      "ﬁ ligature",
      "ｆｕｌｌｗｉｄｔｈ",
      "\u3000ideographic space",
      "...",
      "!!!???",
      "----",
      "____",
      "`code`",
      "\"quoted\"",
      "(parens) [brackets] {braces}",
      "αβγ 123 abc",
      "mixedCASE camelCase snake_case",
      "ALLCAPS",
      "The quick brown fox jumps over the lazy dog.",
      std::string(100, 'x'),
      std::string(40, ' '),
      std::string(20, '\n'),
      "ab ab ab ab ab ab ab ab",
      "Cafe\u0301 N\u0303o\u0308",  // decomposed accents (NFC would compose them)
      "<s>",
      "</s>",
      "<unk>",
      "<0x41>",
      "▁",
      "▁▁hello",
      "Ġ",
      "<|not_a_token|>",
      "[INST] hi [/INST]",
  };
  // Numbers of many lengths, alone and after text.
  std::string digits;
  for (int n = 1; n <= 24; ++n) {
    digits += static_cast<char>('0' + (n * 7) % 10);
    s.push_back(digits);
    if (n % 3 == 0) s.push_back("x" + digits + " " + digits + "y");
  }
  // Variants of a few words with leading spaces, newlines and tabs.
  for (const char* w : {"hello", "Hello", "don't", "42", "世界", "🙂", "é"}) {
    for (const char* pre : {" ", "  ", "\n", "\t", " \n "}) s.push_back(std::string(pre) + w);
    s.push_back(std::string(w) + "\n\n");
  }
  // Seeded random mixes of fragments that stress the pre-tokenizer regexes.
  const std::vector<std::string> frags = {
      "a",   "b",    "Z", " ",    "  ", "\n",  "\t",   "'",   "'s",       "'T",     "1",      "23",
      "456", "7890", "é", "ß",    "中", "文",  "🙂", "🚀",   "-",        ".",      ",",      "!",
      "?",   "<",    ">", "(",    ")",  "The", "the",  "ing", " don",     "'t",     "\r\n",   "Ā",
      "ض",   "ж",    "ñ", "  \n", "_",  "/",   "ü",    "Ω",   "\xC2\xA0", "\u2028", "e\u0301"};
  std::mt19937 rng(1234);
  std::uniform_int_distribution<size_t> pick(0, frags.size() - 1);
  std::uniform_int_distribution<int> len(1, 24);
  for (int i = 0; i < 160; ++i) {
    std::string x;
    for (int k = len(rng); k > 0; --k) x += frags[pick(rng)];
    s.push_back(x);
  }
  return s;
}

}  // namespace maas::test::hf
