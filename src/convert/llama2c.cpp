// llama2.c legacy checkpoints: a header of 7 little-endian int32 (dim, hidden_dim, n_layers,
// n_heads, n_kv_heads, vocab_size, seq_len; vocab_size < 0 means a separate classifier), then the
// f32 tensors in a fixed order. Its tokenizer.bin: int32 max_token_length, then per token a f32
// score, an int32 byte length and the bytes, with spaces where SentencePiece has U+2581.
#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "convert/convert.h"
#include "tokenizer/tokenizer.h"

namespace maas::convert {

namespace {

std::vector<uint8_t> read_all(const std::string& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(fmt::format("{}: {} is a directory", what, path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open {}", what, path));
  in.seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(in.tellg());
  in.seekg(0);
  std::vector<uint8_t> data(size);
  if (size > 0 &&
      !in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(size))) {
    throw Error(fmt::format("{}: cannot read {}", what, path));
  }
  return data;
}

int32_t read_i32(const std::vector<uint8_t>& d, size_t off) {
  int32_t v;
  std::memcpy(&v, d.data() + off, 4);
  return v;
}

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
};

// vocab_size < 0: read tokens until the end of the file.
Vocab read_tokenizer(const std::string& path, int64_t vocab_size) {
  const auto d = read_all(path, "llama2.c tokenizer");
  if (d.size() < 4)
    throw Error(fmt::format("llama2.c tokenizer {}: file too short ({} bytes)", path, d.size()));
  const int32_t max_len = read_i32(d, 0);
  if (max_len <= 0 || max_len > (1 << 20)) {
    throw Error(fmt::format("llama2.c tokenizer {}: bad max_token_length {}", path, max_len));
  }
  Vocab v;
  size_t off = 4;
  for (int64_t i = 0; vocab_size < 0 ? off < d.size() : i < vocab_size; ++i) {
    if (d.size() - off < 8) {
      throw Error(fmt::format("llama2.c tokenizer {}: truncated at token {} of {} (offset {})",
                              path, i, vocab_size, off));
    }
    float score;
    std::memcpy(&score, d.data() + off, 4);
    const int32_t len = read_i32(d, off + 4);
    off += 8;
    if (len < 0 || len > max_len || static_cast<size_t>(len) > d.size() - off) {
      throw Error(
          fmt::format("llama2.c tokenizer {}: token {} has bad length {} (max {}, {} bytes left)",
                      path, i, len, max_len, d.size() - off));
    }
    std::string piece(reinterpret_cast<const char*>(d.data() + off), static_cast<size_t>(len));
    off += static_cast<size_t>(len);
    auto type = tokenizer::TokenAttr::NORMAL;
    // llama2.c's exporter writes BOS/EOS as "\n<s>\n" / "\n</s>\n"; GGUF uses the SentencePiece
    // pieces.
    if (i == 0) {
      piece = "<unk>";
      type = tokenizer::TokenAttr::UNKNOWN;
    } else if (i == 1 || i == 2) {
      piece = i == 1 ? "<s>" : "</s>";
      type = tokenizer::TokenAttr::CONTROL;
    } else if (piece.size() == 6 && piece.starts_with("<0x") && piece.back() == '>') {
      type = tokenizer::TokenAttr::BYTE;
    } else {
      std::string sp;
      for (char c : piece) {
        if (c == ' ')
          sp += "\xE2\x96\x81";  // U+2581
        else
          sp += c;
      }
      piece = std::move(sp);
    }
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(static_cast<int32_t>(type));
  }
  if (off != d.size()) {
    throw Error(fmt::format("llama2.c tokenizer {}: {} unexpected bytes after {} tokens", path,
                            d.size() - off, vocab_size));
  }
  if (v.tokens.size() < 3)
    throw Error(fmt::format("llama2.c tokenizer {}: fewer than 3 tokens", path));
  return v;
}

}  // namespace

uint64_t llama2c_tokenizer_to_gguf(const std::string& tokenizer_path, gguf::Writer& w,
                                   int64_t vocab_size) {
  auto vocab_data = read_tokenizer(tokenizer_path, vocab_size);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set("tokenizer.ggml.tokens", gguf::Value::strings(vocab_data.tokens));
  w.set("tokenizer.ggml.scores", gguf::Value::floats(vocab_data.scores));
  w.set("tokenizer.ggml.token_type", gguf::Value::int32s(vocab_data.types));
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_bool("tokenizer.ggml.add_eos_token", false);
  return vocab_data.tokens.size();
}

void llama2c_to_gguf(const std::string& checkpoint_path, const std::string& tokenizer_path,
                     const std::string& out_path, const Options& opts) {
  const auto d = read_all(checkpoint_path, "llama2.c checkpoint");
  const std::string what = "llama2.c checkpoint " + checkpoint_path;
  if (d.size() < 28)
    throw Error(fmt::format("{}: file too short for the header ({} bytes)", what, d.size()));
  if (std::memcmp(d.data(), "24ka", 4) == 0) {
    throw Error(fmt::format(
        "{}: this is llama2.c's versioned export format; only the legacy format is supported",
        what));
  }
  const int64_t dim = read_i32(d, 0), hidden = read_i32(d, 4), n_layers = read_i32(d, 8),
                n_heads = read_i32(d, 12), n_kv_heads = read_i32(d, 16), seq_len = read_i32(d, 24);
  const int32_t raw_vocab = read_i32(d, 20);
  const bool shared = raw_vocab > 0;
  const int64_t vocab =
      raw_vocab == std::numeric_limits<int32_t>::min() ? 0 : std::abs(int64_t{raw_vocab});
  constexpr int64_t kMax = 1 << 20;
  auto in_range = [&](int64_t x) { return x > 0 && x <= kMax; };
  if (!in_range(dim) || !in_range(hidden) || !in_range(n_layers) || !in_range(n_heads) ||
      !in_range(n_kv_heads) || !in_range(vocab) || !in_range(seq_len) || dim % n_heads != 0 ||
      n_heads % n_kv_heads != 0 || (dim / n_heads) % 2 != 0) {
    throw Error(fmt::format(
        "{}: implausible header dim={} hidden_dim={} n_layers={} n_heads={} n_kv_heads={} "
        "vocab_size={} seq_len={}",
        what, dim, hidden, n_layers, n_heads, n_kv_heads, raw_vocab, seq_len));
  }
  const int64_t head = dim / n_heads, kv_dim = head * n_kv_heads;
  // Every size below is at most 2^20 * 2^20 * 2^20 floats: no overflow in int64.
  const int64_t floats =
      vocab * dim + n_layers * (2 * dim + 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * hidden) +
      dim + seq_len * head + (shared ? 0 : vocab * dim);
  const uint64_t expected = 28 + 4 * static_cast<uint64_t>(floats);
  if (d.size() != expected) {
    throw Error(fmt::format("{}: size {} bytes does not match the header, which implies {} bytes",
                            what, d.size(), expected));
  }
  const float* p = reinterpret_cast<const float*>(d.data() + 28);
  auto take = [&](int64_t n) {
    std::span<const float> s(p, static_cast<size_t>(n));
    p += n;
    return s;
  };
  using U = uint64_t;
  const U E = static_cast<U>(dim), F = static_cast<U>(hidden), KV = static_cast<U>(kv_dim);
  gguf::Writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", std::filesystem::path(checkpoint_path).stem().string());
  w.set_u32("llama.context_length", static_cast<uint32_t>(seq_len));
  w.set_u32("llama.embedding_length", static_cast<uint32_t>(dim));
  w.set_u32("llama.block_count", static_cast<uint32_t>(n_layers));
  w.set_u32("llama.feed_forward_length", static_cast<uint32_t>(hidden));
  w.set_u32("llama.attention.head_count", static_cast<uint32_t>(n_heads));
  w.set_u32("llama.attention.head_count_kv", static_cast<uint32_t>(n_kv_heads));
  w.set_u32("llama.rope.dimension_count", static_cast<uint32_t>(head));
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_u32("llama.vocab_size", static_cast<uint32_t>(vocab));
  llama2c_tokenizer_to_gguf(tokenizer_path, w, vocab);

  const auto n_l = static_cast<size_t>(n_layers);
  auto embd = take(vocab * dim);
  add_weight(w, "token_embd.weight", {E, static_cast<U>(vocab)}, embd, opts);
  // Per-layer tensors are stored grouped by kind: all layers' attention norms, then all wq, ...
  auto per_layer = [&](const char* name, std::vector<U> dims) {
    const int64_t n = static_cast<int64_t>(dims[0] * (dims.size() > 1 ? dims[1] : 1));
    for (size_t l = 0; l < n_l; ++l)
      add_weight(w, fmt::format("blk.{}.{}", l, name), dims, take(n), opts);
  };
  per_layer("attn_norm.weight", {E});
  per_layer("attn_q.weight", {E, E});
  per_layer("attn_k.weight", {E, KV});
  per_layer("attn_v.weight", {E, KV});
  per_layer("attn_output.weight", {E, E});
  per_layer("ffn_norm.weight", {E});
  per_layer("ffn_gate.weight", {E, F});
  per_layer("ffn_down.weight", {F, E});
  per_layer("ffn_up.weight", {E, F});
  add_weight(w, "output_norm.weight", {E}, take(dim), opts);
  take(seq_len *
       head);  // precomputed RoPE tables (freq_cis_real, freq_cis_imag): recomputed at run time
  if (!shared) add_weight(w, "output.weight", {E, static_cast<U>(vocab)}, take(vocab * dim), opts);
  w.write(out_path);
}

}  // namespace maas::convert
