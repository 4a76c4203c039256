// Reading hyper-parameters from GGUF metadata and binding weight tensors, with validation that
// reports every problem at once.
#include <fmt/format.h>

#include <cmath>

#include "model/model.h"
#include "tensor/quant.h"

namespace maas::model {

namespace {

using gguf::TensorType;

struct ArchInfo {
  const char* name;
  Arch arch;
  RopeStyle rope;
  bool qkv_bias;
  bool qk_norm;
};
constexpr ArchInfo kArchs[] = {
    {"llama", Arch::Llama, RopeStyle::AdjacentPairs, false, false},
    {"qwen2", Arch::Qwen2, RopeStyle::SplitHalves, true, false},
    {"qwen3", Arch::Qwen3, RopeStyle::SplitHalves, false, true},
};

std::string dims_str(const std::vector<uint64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// Binds tensors by name and collects every problem instead of stopping at the first.
class Binder {
 public:
  explicit Binder(const gguf::File& f) : f_(f) {}

  const gguf::TensorInfo* find(const std::string& name, std::vector<uint64_t> want, bool required) {
    const gguf::TensorInfo* t = f_.tensor(name);
    if (t == nullptr) {
      if (required) problems.push_back(fmt::format("missing tensor '{}' {}", name, dims_str(want)));
      return nullptr;
    }
    if (t->dims != want) {
      problems.push_back(fmt::format("tensor '{}' has shape {}, expected {}", name,
                                     dims_str(t->dims), dims_str(want)));
      return nullptr;
    }
    if (!tensor::can_dequantize(t->type)) {
      problems.push_back(fmt::format("tensor '{}' has type {}, which maas cannot compute with",
                                     name, gguf::type_name(t->type)));
      return nullptr;
    }
    return t;
  }

  tensor::MatrixView matrix(const std::string& name, int64_t cols, int64_t rows,
                            bool required = true) {
    const gguf::TensorInfo* t =
        find(name, {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)}, required);
    tensor::MatrixView m;
    if (t == nullptr) return m;
    m.type = t->type;
    m.data = t->data;
    m.cols = cols;
    m.rows = rows;
    m.row_bytes = static_cast<size_t>(t->n_bytes / static_cast<uint64_t>(rows));
    return m;
  }

  std::vector<float> vector(const std::string& name, int64_t n, bool required = true) {
    const gguf::TensorInfo* t = find(name, {static_cast<uint64_t>(n)}, required);
    std::vector<float> v;
    if (t == nullptr) return v;
    v.resize(static_cast<size_t>(n));
    tensor::dequantize_row(t->type, t->data, v.data(), n);
    return v;
  }

  std::vector<std::string> problems;

 private:
  const gguf::File& f_;
};

int64_t require_positive(const gguf::File& f, const std::string& key,
                         std::vector<std::string>& problems) {
  try {
    auto v = f.get_uint(key);
    if (!v) {
      problems.push_back(fmt::format("missing metadata '{}'", key));
      return 0;
    }
    if (*v == 0 || *v > (1ull << 31)) {
      problems.push_back(fmt::format("metadata '{}' = {} is out of range", key, *v));
      return 0;
    }
    return static_cast<int64_t>(*v);
  } catch (const gguf::Error& e) {
    problems.push_back(e.what());
    return 0;
  }
}

}  // namespace

std::unique_ptr<Model> Model::load(const gguf::File& f) {
  if (f.rewritten()) {
    throw Error("model: the file's weights were rearranged by an earlier load; open it again");
  }
  auto arch_name = f.get_string("general.architecture");
  if (!arch_name) throw Error("model: metadata 'general.architecture' is missing");
  const ArchInfo* info = nullptr;
  for (const auto& a : kArchs) {
    if (*arch_name == a.name) info = &a;
  }
  if (info == nullptr) {
    throw Error(fmt::format("model: unsupported architecture '{}' (supported: llama, qwen2, qwen3)",
                            *arch_name));
  }

  auto m = std::unique_ptr<Model>(new Model());
  HParams& hp = m->hp_;
  hp.arch_name = *arch_name;
  hp.arch = info->arch;
  hp.rope_style = info->rope;
  const std::string p = *arch_name + ".";
  std::vector<std::string> problems;
  hp.n_embd = require_positive(f, p + "embedding_length", problems);
  hp.n_layer = require_positive(f, p + "block_count", problems);
  hp.n_ff = require_positive(f, p + "feed_forward_length", problems);
  hp.n_head = require_positive(f, p + "attention.head_count", problems);
  hp.n_ctx_train = require_positive(f, p + "context_length", problems);
  try {
    hp.n_head_kv =
        static_cast<int64_t>(f.get_uint(p + "attention.head_count_kv").value_or(hp.n_head));
    hp.rms_eps =
        static_cast<float>(f.get_float(p + "attention.layer_norm_rms_epsilon").value_or(1e-5));
    hp.rope_base = static_cast<float>(f.get_float(p + "rope.freq_base").value_or(10000.0));
    auto key_length = f.get_uint(p + "attention.key_length");
    auto value_length = f.get_uint(p + "attention.value_length");
    if (hp.n_head > 0)
      hp.head_dim = static_cast<int64_t>(key_length.value_or(hp.n_embd / hp.n_head));
    if (value_length && static_cast<int64_t>(*value_length) != hp.head_dim) {
      problems.push_back(
          "attention.value_length differs from key_length, which maas does not support");
    }
    hp.rope_dim =
        static_cast<int64_t>(f.get_uint(p + "rope.dimension_count").value_or(hp.head_dim));
    auto scaling = f.get_string(p + "rope.scaling.type");
    if (scaling && *scaling == "linear") {
      double factor = f.get_float(p + "rope.scaling.factor").value_or(1.0);
      if (!(factor > 0))
        problems.push_back("rope.scaling.factor must be positive");
      else
        hp.rope_freq_scale = static_cast<float>(1.0 / factor);
    } else if (scaling && *scaling != "none") {
      problems.push_back(fmt::format("rope scaling type '{}' is not supported", *scaling));
    }
  } catch (const gguf::Error& e) {
    problems.push_back(e.what());
  }
  if (hp.n_head > 0 && hp.n_head_kv > 0 && hp.n_head % hp.n_head_kv != 0) {
    problems.push_back(fmt::format("head_count {} is not a multiple of head_count_kv {}", hp.n_head,
                                   hp.n_head_kv));
  }
  if (hp.n_head_kv <= 0) problems.push_back("attention.head_count_kv must be positive");
  if (hp.head_dim <= 0 || hp.head_dim % 2 != 0)
    problems.push_back("head size must be positive and even");
  if (hp.rope_dim <= 0 || hp.rope_dim > hp.head_dim || hp.rope_dim % 2 != 0) {
    problems.push_back(
        fmt::format("rope.dimension_count {} does not fit head size {}", hp.rope_dim, hp.head_dim));
  }
  if (!(hp.rms_eps > 0) || !std::isfinite(hp.rope_base) || !(hp.rope_base > 0)) {
    problems.push_back("rms epsilon and rope base must be positive");
  }
  const gguf::TensorInfo* embd = f.tensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2) {
    problems.push_back("missing 2-D tensor 'token_embd.weight'");
  } else {
    hp.n_vocab = static_cast<int64_t>(embd->dims[1]);
  }
  if (!problems.empty()) {
    std::string msg = fmt::format("model: cannot load {} model:", *arch_name);
    for (const auto& s : problems) msg += "\n  - " + s;
    throw Error(msg);
  }

  Binder b(f);
  const int64_t E = hp.n_embd, D = hp.head_dim, q_dim = hp.n_head * D, kv_dim = hp.n_head_kv * D;
  m->token_embd_ = b.matrix("token_embd.weight", E, hp.n_vocab);
  m->output_norm_ = b.vector("output_norm.weight", E);
  m->output_ = b.matrix("output.weight", E, hp.n_vocab, /*required=*/false);
  if (m->output_.data == nullptr && f.tensor("output.weight") == nullptr) {
    m->output_ = m->token_embd_;
    m->tied_ = true;
  }
  if (f.tensor("rope_freqs.weight") != nullptr) {
    m->rope_freqs_ = b.vector("rope_freqs.weight", hp.rope_dim / 2);
  }
  m->layers_.resize(static_cast<size_t>(hp.n_layer));
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    LayerWeights& L = m->layers_[static_cast<size_t>(i)];
    const std::string n = fmt::format("blk.{}.", i);
    L.attn_norm = b.vector(n + "attn_norm.weight", E);
    L.wq = b.matrix(n + "attn_q.weight", E, q_dim);
    L.wk = b.matrix(n + "attn_k.weight", E, kv_dim);
    L.wv = b.matrix(n + "attn_v.weight", E, kv_dim);
    L.wo = b.matrix(n + "attn_output.weight", q_dim, E);
    if (info->qkv_bias) {
      L.bq = b.vector(n + "attn_q.bias", q_dim);
      L.bk = b.vector(n + "attn_k.bias", kv_dim);
      L.bv = b.vector(n + "attn_v.bias", kv_dim);
    }
    if (info->qk_norm) {
      L.q_norm = b.vector(n + "attn_q_norm.weight", D);
      L.k_norm = b.vector(n + "attn_k_norm.weight", D);
    }
    L.ffn_norm = b.vector(n + "ffn_norm.weight", E);
    L.ffn_gate = b.matrix(n + "ffn_gate.weight", E, hp.n_ff);
    L.ffn_up = b.matrix(n + "ffn_up.weight", E, hp.n_ff);
    L.ffn_down = b.matrix(n + "ffn_down.weight", hp.n_ff, E);
  }
  if (!b.problems.empty()) {
    std::string msg =
        fmt::format("model: cannot load {} model ({} problems):", *arch_name, b.problems.size());
    for (const auto& s : b.problems) msg += "\n  - " + s;
    throw Error(msg);
  }
  return m;
}

std::unique_ptr<Model> Model::load_and_pack(gguf::File& f, tensor::ThreadPool* pool) {
  std::unique_ptr<Model> m = load(f);
  std::vector<tensor::MatrixView*> matrices = {&m->token_embd_};
  if (!m->tied_) matrices.push_back(&m->output_);
  for (LayerWeights& L : m->layers_) {
    for (tensor::MatrixView* w : L.matrices()) matrices.push_back(w);
  }
  f.rewrite([&](const gguf::File::WritableData& writable) {
    for (tensor::MatrixView* w : matrices) {
      if (tensor::can_pack_panels(*w)) tensor::pack_panels(w, writable(w->data), pool);
    }
  });
  if (m->tied_) m->output_ = m->token_embd_;
  return m;
}

}  // namespace maas::model
