#include "model/random_model.h"

#include <cmath>
#include <complex>

#include "tensor/quant.h"

namespace maas::test {

RandomModel make_random_model(const RandomModelSpec& s) {
  RandomModel m;
  m.spec = s;
  std::mt19937_64 rng(s.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  using U = uint64_t;
  auto add = [&](const std::string& name, std::vector<U> dims, float scale, float offset = 0.0f) {
    U n = 1;
    for (U d : dims) n *= d;
    std::vector<float> v(n);
    for (auto& x : v) x = offset + scale * normal(rng);
    m.tensors[name] = {dims, v};
  };
  const U E = static_cast<U>(s.embd), V = static_cast<U>(s.vocab), D = static_cast<U>(s.head_dim),
          Q = static_cast<U>(s.heads) * D, KV = static_cast<U>(s.kv_heads) * D,
          F = static_cast<U>(s.ff);
  add("token_embd.weight", {E, V}, 1.0f);
  add("output_norm.weight", {E}, 0.1f, 1.0f);
  if (!s.tied) add("output.weight", {E, V}, 1.0f / std::sqrt(static_cast<float>(E)));
  if (s.rope_freqs) {
    std::uniform_real_distribution<float> factor(1.0f, 8.0f);
    std::vector<float> f(D / 2);
    for (auto& x : f) x = factor(rng);
    m.tensors["rope_freqs.weight"] = {{D / 2}, f};
  }
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(E));
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {E}, 0.1f, 1.0f);
    add(p + "attn_q.weight", {E, Q}, in_scale);
    add(p + "attn_k.weight", {E, KV}, in_scale);
    add(p + "attn_v.weight", {E, KV}, in_scale);
    add(p + "attn_output.weight", {Q, E}, 1.0f / std::sqrt(static_cast<float>(Q)));
    if (s.arch == "qwen2") {
      add(p + "attn_q.bias", {Q}, 0.5f);
      add(p + "attn_k.bias", {KV}, 0.5f);
      add(p + "attn_v.bias", {KV}, 0.5f);
    }
    if (s.arch == "qwen3") {
      add(p + "attn_q_norm.weight", {D}, 0.2f, 1.0f);
      add(p + "attn_k_norm.weight", {D}, 0.2f, 1.0f);
    }
    add(p + "ffn_norm.weight", {E}, 0.1f, 1.0f);
    add(p + "ffn_gate.weight", {E, F}, in_scale);
    add(p + "ffn_up.weight", {E, F}, in_scale);
    add(p + "ffn_down.weight", {F, E}, 1.0f / std::sqrt(static_cast<float>(F)));
  }
  return m;
}

void RandomModel::round_trip_matrices(gguf::TensorType type) {
  for (auto& [name, t] : tensors) {
    if (t.first.size() != 2) continue;
    const uint64_t row = t.first[0];
    std::vector<uint8_t> q(*gguf::bytes_for(type, row));
    for (size_t off = 0; off < t.second.size(); off += row) {
      tensor::quantize_row(type, t.second.data() + off, q.data(), static_cast<int64_t>(row));
      tensor::dequantize_row(type, q.data(), t.second.data() + off, static_cast<int64_t>(row));
    }
  }
}

void RandomModel::write(gguf::Writer& out, gguf::TensorType matrix_type) const {
  const auto& s = spec;
  const std::string a = s.arch + ".";
  out.set_string("general.architecture", s.arch);
  out.set_u32(a + "context_length", static_cast<uint32_t>(s.ctx));
  out.set_u32(a + "embedding_length", static_cast<uint32_t>(s.embd));
  out.set_u32(a + "block_count", static_cast<uint32_t>(s.layers));
  out.set_u32(a + "feed_forward_length", static_cast<uint32_t>(s.ff));
  out.set_u32(a + "attention.head_count", static_cast<uint32_t>(s.heads));
  out.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.kv_heads));
  out.set_f32(a + "attention.layer_norm_rms_epsilon", static_cast<float>(s.rms_eps));
  out.set_f32(a + "rope.freq_base", static_cast<float>(s.rope_base));
  if (s.head_dim * s.heads != s.embd) {
    out.set_u32(a + "attention.key_length", static_cast<uint32_t>(s.head_dim));
    out.set_u32(a + "attention.value_length", static_cast<uint32_t>(s.head_dim));
  }
  if (s.linear_rope_factor > 0) {
    out.set_string(a + "rope.scaling.type", "linear");
    out.set_f32(a + "rope.scaling.factor", static_cast<float>(s.linear_rope_factor));
  }
  for (const auto& [name, t] : tensors) {
    if (t.first.size() != 2 || matrix_type == gguf::TensorType::F32) {
      out.add_tensor_f32(name, t.first, t.second);
      continue;
    }
    const uint64_t row = t.first[0];
    const uint64_t row_bytes = *gguf::bytes_for(matrix_type, row);
    std::vector<uint8_t> q(row_bytes * (t.second.size() / row));
    for (size_t r = 0; r < t.second.size() / row; ++r) {
      tensor::quantize_row(matrix_type, t.second.data() + r * row, q.data() + r * row_bytes,
                           static_cast<int64_t>(row));
    }
    out.add_tensor(name, matrix_type, t.first, q);
  }
}

namespace {

using Vec = std::vector<double>;

// y = W x with W stored GGUF-style: dims {in, out}, row r (length in) produces y[r].
Vec linear(const std::vector<float>& W, const Vec& x, size_t out) {
  Vec y(out, 0.0);
  const size_t in = x.size();
  for (size_t r = 0; r < out; ++r) {
    for (size_t c = 0; c < in; ++c) y[r] += static_cast<double>(W[r * in + c]) * x[c];
  }
  return y;
}

Vec rmsnorm(const Vec& x, const std::vector<float>& g, double eps, size_t offset = 0,
            size_t n = 0) {
  if (n == 0) n = x.size();
  double ms = 0;
  for (size_t i = 0; i < n; ++i) ms += x[offset + i] * x[offset + i];
  ms /= static_cast<double>(n);
  Vec y(n);
  for (size_t i = 0; i < n; ++i) y[i] = x[offset + i] / std::sqrt(ms + eps) * g[i];
  return y;
}

// Rotates one head (D values at x[off..]) for position pos. llama pairs (2i, 2i+1); qwen pairs
// (i, i + D/2). Each pair is treated as a complex number multiplied by e^{i*theta}.
void rope(const RandomModel& m, Vec& x, size_t off, int64_t pos) {
  const auto& s = m.spec;
  const size_t D = static_cast<size_t>(s.head_dim);
  const bool adjacent = s.arch == "llama";
  for (size_t i = 0; i < D / 2; ++i) {
    double freq = std::pow(s.rope_base, -static_cast<double>(2 * i) / static_cast<double>(D));
    if (m.has("rope_freqs.weight")) freq /= m.w("rope_freqs.weight")[i];
    double p = static_cast<double>(pos);
    if (s.linear_rope_factor > 0) p /= s.linear_rope_factor;
    const std::complex<double> rot = std::polar(1.0, p * freq);
    const size_t a = adjacent ? off + 2 * i : off + i;
    const size_t b = adjacent ? off + 2 * i + 1 : off + i + D / 2;
    const std::complex<double> z = std::complex<double>(x[a], x[b]) * rot;
    x[a] = z.real();
    x[b] = z.imag();
  }
}

}  // namespace

std::vector<std::vector<double>> reference_forward(const RandomModel& m,
                                                   const std::vector<int32_t>& tokens) {
  const auto& s = m.spec;
  const size_t T = tokens.size(), E = static_cast<size_t>(s.embd),
               D = static_cast<size_t>(s.head_dim), H = static_cast<size_t>(s.heads),
               HKV = static_cast<size_t>(s.kv_heads), F = static_cast<size_t>(s.ff),
               V = static_cast<size_t>(s.vocab);
  std::vector<Vec> h(T, Vec(E));
  const auto& emb = m.w("token_embd.weight");
  for (size_t t = 0; t < T; ++t) {
    for (size_t i = 0; i < E; ++i) h[t][i] = emb[static_cast<size_t>(tokens[t]) * E + i];
  }
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    std::vector<Vec> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      Vec xn = rmsnorm(h[t], m.w(p + "attn_norm.weight"), s.rms_eps);
      q[t] = linear(m.w(p + "attn_q.weight"), xn, H * D);
      k[t] = linear(m.w(p + "attn_k.weight"), xn, HKV * D);
      v[t] = linear(m.w(p + "attn_v.weight"), xn, HKV * D);
      if (m.has(p + "attn_q.bias")) {
        for (size_t i = 0; i < H * D; ++i) q[t][i] += m.w(p + "attn_q.bias")[i];
        for (size_t i = 0; i < HKV * D; ++i) k[t][i] += m.w(p + "attn_k.bias")[i];
        for (size_t i = 0; i < HKV * D; ++i) v[t][i] += m.w(p + "attn_v.bias")[i];
      }
      if (m.has(p + "attn_q_norm.weight")) {
        for (size_t hh = 0; hh < H; ++hh) {
          Vec n = rmsnorm(q[t], m.w(p + "attn_q_norm.weight"), s.rms_eps, hh * D, D);
          std::copy(n.begin(), n.end(), q[t].begin() + static_cast<std::ptrdiff_t>(hh * D));
        }
        for (size_t hh = 0; hh < HKV; ++hh) {
          Vec n = rmsnorm(k[t], m.w(p + "attn_k_norm.weight"), s.rms_eps, hh * D, D);
          std::copy(n.begin(), n.end(), k[t].begin() + static_cast<std::ptrdiff_t>(hh * D));
        }
      }
      for (size_t hh = 0; hh < H; ++hh) rope(m, q[t], hh * D, static_cast<int64_t>(t));
      for (size_t hh = 0; hh < HKV; ++hh) rope(m, k[t], hh * D, static_cast<int64_t>(t));
    }
    for (size_t t = 0; t < T; ++t) {
      Vec att(H * D, 0.0);
      for (size_t hh = 0; hh < H; ++hh) {
        const size_t kvh = hh / (H / HKV);
        Vec sc(t + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= t; ++j) {
          double d = 0;
          for (size_t i = 0; i < D; ++i) d += q[t][hh * D + i] * k[j][kvh * D + i];
          sc[j] = d / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, sc[j]);
        }
        double z = 0;
        for (double& x : sc) z += (x = std::exp(x - mx));
        for (size_t j = 0; j <= t; ++j) {
          for (size_t i = 0; i < D; ++i) att[hh * D + i] += sc[j] / z * v[j][kvh * D + i];
        }
      }
      Vec o = linear(m.w(p + "attn_output.weight"), att, E);
      for (size_t i = 0; i < E; ++i) h[t][i] += o[i];
      Vec xn = rmsnorm(h[t], m.w(p + "ffn_norm.weight"), s.rms_eps);
      Vec g = linear(m.w(p + "ffn_gate.weight"), xn, F);
      Vec u = linear(m.w(p + "ffn_up.weight"), xn, F);
      for (size_t i = 0; i < F; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      Vec dn = linear(m.w(p + "ffn_down.weight"), g, E);
      for (size_t i = 0; i < E; ++i) h[t][i] += dn[i];
    }
  }
  std::vector<std::vector<double>> logits(T);
  const auto& out = s.tied ? m.w("token_embd.weight") : m.w("output.weight");
  for (size_t t = 0; t < T; ++t)
    logits[t] = linear(out, rmsnorm(h[t], m.w("output_norm.weight"), s.rms_eps), V);
  return logits;
}

}  // namespace maas::test
