// Hugging Face model directory -> GGUF: config.json becomes ARCH.* metadata, safetensors weights
// become GGUF tensors with llama.cpp's names, and the tokenizer files become tokenizer.ggml.*.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "convert/convert.h"
#include "convert/hf.h"
#include "convert/safetensors.h"

namespace maas::convert {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

struct Config {
  std::string hf_arch;
  std::string arch;  // GGUF architecture
  uint64_t n_embd = 0, n_ff = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_ctx = 0, n_vocab = 0;
  uint64_t head_dim = 0;
  double rms_eps = 1e-6, rope_theta = 10000.0;
  bool tied_embeddings = false;
  std::string rope_scaling;  // "", "linear" or "llama3"
  double rope_factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0, original_context = 8192.0;
};

const json* member(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

uint64_t get_uint(const json& cfg, const char* key, std::optional<uint64_t> fallback,
                  uint64_t max) {
  const json* v = member(cfg, key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    throw Error(fmt::format("config.json: missing \"{}\"", key));
  }
  if (!v->is_number_unsigned() || v->get<uint64_t>() == 0 || v->get<uint64_t>() > max) {
    throw Error(fmt::format("config.json: \"{}\" is {}; expected an integer in [1, {}]", key,
                            v->dump(), max));
  }
  return v->get<uint64_t>();
}

double get_float(const json& obj, const char* key, double fallback,
                 const char* where = "config.json") {
  const json* v = member(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() <= 0) {
    throw Error(fmt::format("{}: \"{}\" is {}; expected a positive number", where, key, v->dump()));
  }
  return v->get<double>();
}

Config parse_config(const json& cfg) {
  if (!cfg.is_object()) throw Error("config.json: not a JSON object");
  Config c;
  const json* archs = member(cfg, "architectures");
  if (archs == nullptr || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    throw Error("config.json: missing \"architectures\" (a list naming the model class)");
  }
  c.hf_arch = (*archs)[0].get<std::string>();
  if (c.hf_arch == "LlamaForCausalLM" || c.hf_arch == "MistralForCausalLM") {
    c.arch = "llama";
  } else if (c.hf_arch == "Qwen2ForCausalLM") {
    c.arch = "qwen2";
  } else if (c.hf_arch == "Qwen3ForCausalLM") {
    c.arch = "qwen3";
  } else {
    throw Error(
        fmt::format("config.json: unsupported architecture '{}' (supported: LlamaForCausalLM, "
                    "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)",
                    c.hf_arch));
  }
  if (const json* act = member(cfg, "hidden_act"); act != nullptr && *act != "silu") {
    throw Error(
        fmt::format("config.json: hidden_act {} is not supported (only silu)", act->dump()));
  }
  constexpr uint64_t kDim = 1u << 20, kCount = 1u << 16, kCtx = 1u << 30, kVocab = 1u << 22;
  c.n_embd = get_uint(cfg, "hidden_size", std::nullopt, kDim);
  c.n_ff = get_uint(cfg, "intermediate_size", std::nullopt, kDim);
  c.n_layer = get_uint(cfg, "num_hidden_layers", std::nullopt, kCount);
  c.n_head = get_uint(cfg, "num_attention_heads", std::nullopt, kCount);
  c.n_head_kv = get_uint(cfg, "num_key_value_heads", c.n_head, kCount);
  c.n_ctx = get_uint(cfg, "max_position_embeddings", std::nullopt, kCtx);
  c.n_vocab = get_uint(cfg, "vocab_size", std::nullopt, kVocab);
  c.head_dim = get_uint(cfg, "head_dim", c.n_embd / c.n_head, kDim);
  if (c.n_head % c.n_head_kv != 0) {
    throw Error(fmt::format(
        "config.json: num_attention_heads {} is not a multiple of num_key_value_heads {}", c.n_head,
        c.n_head_kv));
  }
  if (!member(cfg, "head_dim") && c.n_embd % c.n_head != 0) {
    throw Error(
        fmt::format("config.json: hidden_size {} is not a multiple of num_attention_heads {}",
                    c.n_embd, c.n_head));
  }
  if (c.head_dim % 2 != 0)
    throw Error(fmt::format("config.json: head dimension {} is odd", c.head_dim));
  c.rms_eps = get_float(cfg, "rms_norm_eps", 1e-6);
  c.rope_theta = get_float(cfg, "rope_theta", 10000.0);
  if (const json* tie = member(cfg, "tie_word_embeddings")) {
    if (!tie->is_boolean()) throw Error("config.json: tie_word_embeddings is not a boolean");
    c.tied_embeddings = tie->get<bool>();
  }

  if (const json* rs = member(cfg, "rope_scaling")) {
    if (!rs->is_object()) throw Error("config.json: rope_scaling is not an object");
    const json* type = member(*rs, "rope_type");
    if (type == nullptr) type = member(*rs, "type");
    const std::string t = type != nullptr && type->is_string() ? type->get<std::string>() : "";
    constexpr const char* kWhere = "config.json rope_scaling";
    if (t == "linear") {
      c.rope_scaling = t;
      c.rope_factor = get_float(*rs, "factor", 0.0, kWhere);
      if (c.rope_factor <= 0)
        throw Error("config.json: linear rope_scaling needs a positive \"factor\"");
    } else if (t == "llama3") {
      if (c.arch != "llama")
        throw Error(fmt::format("config.json: llama3 rope_scaling on architecture {}", c.hf_arch));
      c.rope_scaling = t;
      c.rope_factor = get_float(*rs, "factor", 8.0, kWhere);
      c.low_freq_factor = get_float(*rs, "low_freq_factor", 1.0, kWhere);
      c.high_freq_factor = get_float(*rs, "high_freq_factor", 4.0, kWhere);
      c.original_context = get_float(*rs, "original_max_position_embeddings", 8192.0, kWhere);
      if (c.low_freq_factor == c.high_freq_factor) {
        throw Error("config.json: llama3 rope_scaling has low_freq_factor == high_freq_factor");
      }
    } else if (t != "default") {
      throw Error(fmt::format(
          "config.json: rope_scaling type '{}' is not supported (supported: linear, llama3)", t));
    }
  }
  return c;
}

// One expected checkpoint tensor and where it goes.
struct Mapping {
  std::string hf_name;
  std::string gguf_name;
  std::vector<uint64_t> dims;  // GGUF order; the checkpoint's shape is the reverse
  bool required = true;
  uint64_t permute_heads = 0;  // llama q/k: reorder rows from rotate-half to adjacent pairs
};

std::vector<Mapping> expected_tensors(const Config& c) {
  const uint64_t E = c.n_embd, F = c.n_ff, V = c.n_vocab, Q = c.n_head * c.head_dim,
                 KV = c.n_head_kv * c.head_dim;
  const bool llama = c.arch == "llama";
  std::vector<Mapping> m;
  m.push_back({"model.embed_tokens.weight", "token_embd.weight", {E, V}});
  for (uint64_t i = 0; i < c.n_layer; ++i) {
    const std::string hf = fmt::format("model.layers.{}.", i);
    const std::string gg = fmt::format("blk.{}.", i);
    auto add = [&](const std::string& h, const std::string& g, std::vector<uint64_t> dims,
                   bool required = true, uint64_t heads = 0) {
      m.push_back({hf + h, gg + g, std::move(dims), required, llama ? heads : 0});
    };
    add("input_layernorm.weight", "attn_norm.weight", {E});
    add("self_attn.q_proj.weight", "attn_q.weight", {E, Q}, true, c.n_head);
    add("self_attn.k_proj.weight", "attn_k.weight", {E, KV}, true, c.n_head_kv);
    add("self_attn.v_proj.weight", "attn_v.weight", {E, KV});
    const bool bias_required = c.arch == "qwen2";
    add("self_attn.q_proj.bias", "attn_q.bias", {Q}, bias_required, c.n_head);
    add("self_attn.k_proj.bias", "attn_k.bias", {KV}, bias_required, c.n_head_kv);
    add("self_attn.v_proj.bias", "attn_v.bias", {KV}, bias_required);
    if (c.arch == "qwen3") {
      add("self_attn.q_norm.weight", "attn_q_norm.weight", {c.head_dim});
      add("self_attn.k_norm.weight", "attn_k_norm.weight", {c.head_dim});
    }
    add("self_attn.o_proj.weight", "attn_output.weight", {Q, E});
    add("post_attention_layernorm.weight", "ffn_norm.weight", {E});
    add("mlp.gate_proj.weight", "ffn_gate.weight", {E, F});
    add("mlp.up_proj.weight", "ffn_up.weight", {E, F});
    add("mlp.down_proj.weight", "ffn_down.weight", {F, E});
  }
  m.push_back({"model.norm.weight", "output_norm.weight", {E}});
  if (!c.tied_embeddings) m.push_back({"lm_head.weight", "output.weight", {E, V}});
  return m;
}

bool ignorable(const std::string& name, const Config& c) {
  return name.ends_with("rotary_emb.inv_freq") || (c.tied_embeddings && name == "lm_head.weight");
}

// The checkpoint's files and an index of every tensor in them.
struct Checkpoint {
  std::vector<safetensors::File> files;
  std::map<std::string, std::pair<size_t, const safetensors::TensorEntry*>> tensors;
};

Checkpoint open_checkpoint(const fs::path& dir) {
  Checkpoint ck;
  std::error_code ec;
  const auto single = dir / "model.safetensors";
  const auto index = dir / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    ck.files.push_back(safetensors::File::open(single.string()));
    for (const auto& t : ck.files[0].header().tensors) ck.tensors[t.name] = {0, &t};
    return ck;
  }
  if (!fs::exists(index, ec)) {
    throw Error(
        fmt::format("{}: no model.safetensors or model.safetensors.index.json", dir.string()));
  }
  const json idx = read_json_file(index.string());
  const json* map = idx.is_object() ? member(idx, "weight_map") : nullptr;
  if (map == nullptr || !map->is_object()) {
    throw Error(fmt::format("{}: no \"weight_map\" object", index.string()));
  }
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [name, file] : map->items()) {
    if (!file.is_string())
      throw Error(
          fmt::format("{}: weight_map entry '{}' is not a file name", index.string(), name));
    const auto& f = file.get_ref<const std::string&>();
    // Shards live beside the index: a path elsewhere is refused rather than followed.
    if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos ||
        f == "." || f == "..") {
      throw Error(
          fmt::format("{}: weight_map entry '{}' names '{}', not a file in the model directory",
                      index.string(), name, f));
    }
    auto [it, inserted] = shard_of_file.emplace(f, ck.files.size());
    if (inserted) ck.files.push_back(safetensors::File::open((dir / f).string()));
    const auto* entry = ck.files[it->second].header().find(name);
    if (entry == nullptr) {
      throw Error(fmt::format("{}: tensor '{}' is mapped to {}, which does not contain it",
                              index.string(), name, f));
    }
    ck.tensors[name] = {it->second, entry};
  }
  return ck;
}

std::string name_list(const std::vector<std::string>& names) {
  constexpr size_t kShown = 12;
  std::string s;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > kShown) s += fmt::format(", ... ({} in all)", names.size());
  return s;
}

uint32_t u32(uint64_t x) { return static_cast<uint32_t>(x); }  // values were bounded when parsed

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(fmt::format("{}: no such file", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open", path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(fmt::format("{}: read error", path));
  constexpr int kMaxDepth = 64;
  json::parser_callback_t depth_guard = [&](int depth, json::parse_event_t, json&) {
    if (depth > kMaxDepth) throw Error(fmt::format("{}: JSON nests too deeply", path));
    return true;
  };
  try {
    return json::parse(text, depth_guard);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: invalid JSON: {}", path, e.what()));
  }
}

std::vector<float> llama3_rope_factors(double rope_theta, uint64_t head_dim, double factor,
                                       double low_freq_factor, double high_freq_factor,
                                       double original_context) {
  const double low_freq_wavelen = original_context / low_freq_factor;
  const double high_freq_wavelen = original_context / high_freq_factor;
  std::vector<float> out;
  for (uint64_t i = 0; i < head_dim / 2; ++i) {
    const double freq =
        1.0 / std::pow(rope_theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
    const double wavelen = 2.0 * M_PI / freq;
    double f;
    if (wavelen < high_freq_wavelen) {
      f = 1.0;  // high frequencies keep their speed
    } else if (wavelen > low_freq_wavelen) {
      f = factor;  // low frequencies slow down by the full factor
    } else {       // in between, interpolate the frequency linearly in original_context / wavelen
      const double smooth =
          (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      f = 1.0 / ((1.0 - smooth) / factor + smooth);
    }
    out.push_back(static_cast<float>(f));
  }
  return out;
}

std::vector<float> permute_rope_rows(std::span<const float> data, uint64_t n_heads,
                                     uint64_t head_dim, uint64_t row_len) {
  if (head_dim % 2 != 0 || data.size() != n_heads * head_dim * row_len) {
    throw Error(fmt::format("cannot permute {} values as {} heads x {} rows x {}", data.size(),
                            n_heads, head_dim, row_len));
  }
  std::vector<float> out(data.size());
  const uint64_t half = head_dim / 2;
  for (uint64_t h = 0; h < n_heads; ++h) {
    for (uint64_t i = 0; i < half; ++i) {
      for (uint64_t j = 0; j < 2; ++j) {
        const float* src = data.data() + (h * head_dim + j * half + i) * row_len;
        std::copy(src, src + row_len, out.data() + (h * head_dim + 2 * i + j) * row_len);
      }
    }
  }
  return out;
}

int32_t file_type_for(gguf::TensorType t) {
  using T = gguf::TensorType;
  switch (t) {
    case T::F32:
      return 0;
    case T::F16:
      return 1;
    case T::Q4_0:
      return 2;
    case T::Q4_1:
      return 3;
    case T::Q8_0:
      return 7;
    case T::Q5_0:
      return 8;
    case T::Q5_1:
      return 9;
    case T::Q2_K:
      return 10;
    case T::Q3_K:
      return 11;  // Q3_K_S: every matrix Q3_K
    case T::Q4_K:
      return 14;  // Q4_K_S
    case T::Q5_K:
      return 16;  // Q5_K_S
    case T::Q6_K:
      return 18;
    case T::BF16:
      return 32;
    default:
      return -1;
  }
}

void hf_to_gguf(const std::string& model_dir, const std::string& out_path, const Options& opts) {
  const fs::path dir(model_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(fmt::format("{}: not a directory", model_dir));
  const Config c = parse_config(read_json_file((dir / "config.json").string()));

  // Check every tensor's presence and shape before converting any.
  Checkpoint ck = open_checkpoint(dir);
  const auto expected = expected_tensors(c);
  std::vector<std::string> missing, wrong_shape, unknown;
  std::map<std::string, const Mapping*> by_hf_name;
  for (const auto& m : expected) by_hf_name[m.hf_name] = &m;
  for (const auto& m : expected) {
    auto it = ck.tensors.find(m.hf_name);
    if (it == ck.tensors.end()) {
      if (m.required) missing.push_back(m.hf_name);
      continue;
    }
    const auto& shape = it->second.second->shape;
    if (!std::equal(shape.begin(), shape.end(), m.dims.rbegin(), m.dims.rend())) {
      wrong_shape.push_back(fmt::format("{} is [{}], expected [{}]", m.hf_name,
                                        fmt::join(shape, ", "),
                                        fmt::join(m.dims.rbegin(), m.dims.rend(), ", ")));
    }
  }
  for (const auto& [name, where] : ck.tensors) {
    if (!by_hf_name.count(name) && !ignorable(name, c)) unknown.push_back(name);
  }
  if (!unknown.empty()) {
    throw Error(fmt::format("{}: {} checkpoint tensor(s) this converter does not know for {}: {}",
                            model_dir, unknown.size(), c.hf_arch, name_list(unknown)));
  }
  if (!missing.empty()) {
    throw Error(fmt::format("{}: missing tensor(s): {}", model_dir, name_list(missing)));
  }
  if (!wrong_shape.empty()) {
    throw Error(fmt::format("{}: tensor shape(s) do not match config.json: {}", model_dir,
                            name_list(wrong_shape)));
  }

  gguf::Writer w;
  const std::string& a = c.arch;
  std::string name = fs::path(model_dir).lexically_normal().filename().string();
  if (name.empty()) name = fs::path(model_dir).lexically_normal().parent_path().filename().string();
  w.set_string("general.architecture", a);
  w.set_string("general.name", name);
  w.set_u32(a + ".context_length", u32(c.n_ctx));
  w.set_u32(a + ".embedding_length", u32(c.n_embd));
  w.set_u32(a + ".block_count", u32(c.n_layer));
  w.set_u32(a + ".feed_forward_length", u32(c.n_ff));
  w.set_u32(a + ".attention.head_count", u32(c.n_head));
  w.set_u32(a + ".attention.head_count_kv", u32(c.n_head_kv));
  w.set_f32(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_eps));
  w.set_f32(a + ".rope.freq_base", static_cast<float>(c.rope_theta));
  w.set_u32(a + ".rope.dimension_count", u32(c.head_dim));
  if (c.head_dim != c.n_embd / c.n_head || c.n_embd % c.n_head != 0) {
    w.set_u32(a + ".attention.key_length", u32(c.head_dim));
    w.set_u32(a + ".attention.value_length", u32(c.head_dim));
  }
  if (c.rope_scaling == "linear") {
    w.set_string(a + ".rope.scaling.type", "linear");
    w.set_f32(a + ".rope.scaling.factor", static_cast<float>(c.rope_factor));
  }
  w.set_u32(a + ".vocab_size", u32(c.n_vocab));
  if (const int32_t ft = file_type_for(opts.type); ft >= 0)
    w.set_u32("general.file_type", static_cast<uint32_t>(ft));

  const uint64_t n_tokens = hf_tokenizer_to_gguf(model_dir, w, c.n_vocab);
  if (n_tokens != c.n_vocab) {
    throw Error(fmt::format("{}: the tokenizer has {} tokens but config.json's vocab_size is {}",
                            model_dir, n_tokens, c.n_vocab));
  }

  if (c.rope_scaling == "llama3") {
    const auto factors =
        llama3_rope_factors(c.rope_theta, c.head_dim, c.rope_factor, c.low_freq_factor,
                            c.high_freq_factor, c.original_context);
    add_weight(w, "rope_freqs.weight", {factors.size()}, factors, opts);
  }
  for (const auto& m : expected) {
    auto it = ck.tensors.find(m.hf_name);
    if (it == ck.tensors.end()) continue;  // an optional tensor this checkpoint does not have
    const auto& [file, entry] = it->second;
    std::vector<float> data = ck.files[file].to_f32(*entry);
    if (m.permute_heads != 0) {
      data =
          permute_rope_rows(data, m.permute_heads, c.head_dim, m.dims.size() == 2 ? m.dims[0] : 1);
    }
    add_weight(w, m.gguf_name, m.dims, data, opts);
  }
  w.write(out_path);
}

}  // namespace maas::convert
