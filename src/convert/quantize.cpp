// `maas quantize`: re-encode a GGUF model's weight matrices, with llama.cpp-style mixes.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <optional>

#include "convert/convert.h"
#include "convert/hf.h"
#include "tensor/quant.h"

namespace maas::convert {

namespace {

using gguf::TensorType;

struct Mix {
  TensorType base;
  std::optional<TensorType> more_bits;  // for the attn_v / ffn_down layers that get more bits
  std::optional<TensorType> attn_output;
};

std::optional<Mix> mix_from_name(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (name == "q4_k_m") return Mix{TensorType::Q4_K, TensorType::Q6_K, std::nullopt};
  if (name == "q4_k_s") return Mix{TensorType::Q4_K, std::nullopt, std::nullopt};
  if (name == "q5_k_m") return Mix{TensorType::Q5_K, TensorType::Q6_K, std::nullopt};
  if (name == "q5_k_s") return Mix{TensorType::Q5_K, std::nullopt, std::nullopt};
  if (name == "q3_k_m") return Mix{TensorType::Q3_K, TensorType::Q5_K, TensorType::Q4_K};
  if (auto t = gguf::type_from_name(name)) return Mix{*t, std::nullopt, std::nullopt};
  return std::nullopt;
}

// llama.cpp's choice of the layers that keep more bits in the _M mixes: the first and last
// eighth, and every third layer in between.
bool use_more_bits(int64_t layer, int64_t n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

int64_t layer_of(const std::string& name) {
  if (!name.starts_with("blk.")) return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return -1;
  try {
    return std::stoll(name.substr(4, dot - 4));
  } catch (const std::exception&) {
    return -1;
  }
}

}  // namespace

void quantize_model(const std::string& in_path, const std::string& out_path,
                    const QuantizeOptions& opts) {
  const auto mix = mix_from_name(opts.type);
  if (!mix) {
    throw Error(
        fmt::format("quantize: unknown type '{}' (a weight type such as q4_0, q8_0, q4_k, q6_k, "
                    "f16, bf16, or a mix: q4_k_m, q4_k_s, q5_k_m, q5_k_s, q3_k_m)",
                    opts.type));
  }
  if (!tensor::can_quantize(mix->base)) {
    throw Error(fmt::format("quantize: cannot quantize into {}", gguf::type_name(mix->base)));
  }
  auto in = gguf::File::open(in_path);
  gguf::Writer w;
  for (const auto& [key, value] : in.metadata()) {
    if (key != "general.file_type") w.set(key, value);
  }
  const int32_t ftype = file_type_for(mix->base);
  if (ftype >= 0) w.set_u32("general.file_type", static_cast<uint32_t>(ftype));
  int64_t n_layers = 0;
  for (const auto& t : in.tensors()) n_layers = std::max(n_layers, layer_of(t.name) + 1);
  const bool has_output = in.tensor("output.weight") != nullptr;
  const auto bits = [](TensorType t) {
    const auto* tr = gguf::type_traits(t);
    return 8.0 * tr->block_bytes / tr->block_size;
  };

  std::vector<float> row;
  for (const auto& t : in.tensors()) {
    if (t.dims.size() != 2) {
      w.add_tensor(t.name, t.type, t.dims, {t.data, t.n_bytes});
      continue;
    }
    TensorType want = mix->base;
    const bool is_output =
        t.name == "output.weight" || (!has_output && t.name == "token_embd.weight");
    const int64_t layer = layer_of(t.name);
    // Like llama.cpp: the output matrix keeps 6 bits when the rest gets fewer.
    if (is_output && bits(want) < 6.5) want = TensorType::Q6_K;
    if (mix->more_bits && layer >= 0 &&
        (t.name.ends_with("attn_v.weight") || t.name.ends_with("ffn_down.weight")) &&
        use_more_bits(layer, n_layers)) {
      want = *mix->more_bits;
    }
    if (mix->attn_output && t.name.ends_with("attn_output.weight")) want = *mix->attn_output;
    for (const auto& [pattern, type] : opts.overrides) {
      if (t.name.find(pattern) != std::string::npos) want = type;
    }
    want = stored_type(want, t.dims[0]);
    if (!tensor::can_dequantize(t.type)) {
      throw Error(fmt::format("quantize: tensor '{}' has type {}, which maas cannot read", t.name,
                              gguf::type_name(t.type)));
    }
    if (want == t.type) {
      w.add_tensor(t.name, t.type, t.dims, {t.data, t.n_bytes});
      continue;
    }
    const uint64_t cols = t.dims[0], rows = t.dims[1];
    const uint64_t in_row_bytes = t.n_bytes / rows;
    std::vector<float> values(cols * rows);
    for (uint64_t r = 0; r < rows; ++r) {
      tensor::dequantize_row(t.type, t.data + r * in_row_bytes, values.data() + r * cols,
                             static_cast<int64_t>(cols));
    }
    add_weight(w, t.name, t.dims, values, Options{want});
  }
  w.write(out_path);
}

}  // namespace maas::convert
