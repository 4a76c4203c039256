// The forward pass of one sequence: embeddings, transformer blocks with a KV cache, logits.
#include <fmt/format.h>

#include <cmath>

#include "model/model.h"
#include "tensor/thread_pool.h"

namespace maas::model {

namespace {

// cos and sin of every rotated pair's angle at position pos: computed once per token and shared
// by all heads of all layers (pow/cos/sin per head and layer were a visible part of prefill).
void rope_angles(const HParams& hp, const std::vector<float>& freq_factors, int64_t pos,
                 float* cos_out, float* sin_out) {
  for (int64_t i = 0; i < hp.rope_dim / 2; ++i) {
    double inv_freq = std::pow(static_cast<double>(hp.rope_base),
                               -2.0 * static_cast<double>(i) / static_cast<double>(hp.rope_dim));
    if (!freq_factors.empty()) inv_freq /= freq_factors[static_cast<size_t>(i)];
    const double theta = static_cast<double>(pos) * hp.rope_freq_scale * inv_freq;
    cos_out[i] = static_cast<float>(std::cos(theta));
    sin_out[i] = static_cast<float>(std::sin(theta));
  }
}

// Rotates the first rope_dim dims of one head vector in place by precomputed angles.
void apply_rope(const HParams& hp, const float* c, const float* s, float* x) {
  const int64_t half = hp.rope_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t a = hp.rope_style == RopeStyle::AdjacentPairs ? 2 * i : i;
    const int64_t b = hp.rope_style == RopeStyle::AdjacentPairs ? 2 * i + 1 : i + half;
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * c[i] - x1 * s[i];
    x[b] = x0 * s[i] + x1 * c[i];
  }
}

void add_bias(float* y, const std::vector<float>& bias, int64_t n_tokens) {
  if (bias.empty()) return;
  const size_t n = bias.size();
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (size_t i = 0; i < n; ++i)
      y[t * static_cast<int64_t>(n) + static_cast<int64_t>(i)] += bias[i];
  }
}

}  // namespace

Session::Session(const Model& model, int64_t n_ctx, tensor::ThreadPool* pool)
    : model_(model), pool_(pool) {
  const HParams& hp = model.hparams();
  n_ctx_ = n_ctx > 0 ? n_ctx : hp.n_ctx_train;
  const size_t per_layer = static_cast<size_t>(n_ctx_ * hp.n_head_kv * hp.head_dim);
  k_cache_.assign(per_layer * static_cast<size_t>(hp.n_layer), 0.0f);
  v_cache_.assign(per_layer * static_cast<size_t>(hp.n_layer), 0.0f);
}

void Session::attention(int64_t layer, int64_t n_tokens, const float* q, float* out) {
  const HParams& hp = model_.hparams();
  const int64_t D = hp.head_dim, kv_dim = hp.n_head_kv * D, group = hp.n_head / hp.n_head_kv;
  const float* K = k_cache_.data() + layer * n_ctx_ * kv_dim;
  const float* V = v_cache_.data() + layer * n_ctx_ * kv_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  auto job = [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(n_past_ + n_tokens));
    for (int64_t job_i = begin; job_i < end; ++job_i) {
      const int64_t t = job_i / hp.n_head, h = job_i % hp.n_head;
      const int64_t n_keys = n_past_ + t + 1;  // causal: keys up to and including this token
      const float* qh = q + t * hp.n_head * D + h * D;
      const int64_t kvh = h / group;
      for (int64_t j = 0; j < n_keys; ++j) {
        scores[static_cast<size_t>(j)] = tensor::dot(qh, K + j * kv_dim + kvh * D, D) * scale;
      }
      tensor::softmax(scores.data(), n_keys);
      float* o = out + t * hp.n_head * D + h * D;
      for (int64_t d = 0; d < D; ++d) o[d] = 0;
      for (int64_t j = 0; j < n_keys; ++j) {
        const float w = scores[static_cast<size_t>(j)];
        const float* vj = V + j * kv_dim + kvh * D;
        for (int64_t d = 0; d < D; ++d) o[d] += w * vj[d];
      }
    }
  };
  if (pool_ != nullptr) {
    pool_->parallel_for(n_tokens * hp.n_head, job);
  } else {
    job(0, n_tokens * hp.n_head);
  }
}

std::span<const float> Session::eval(std::span<const int32_t> tokens,
                                     std::vector<float>* all_logits) {
  const HParams& hp = model_.hparams();
  const auto T = static_cast<int64_t>(tokens.size());
  if (T == 0) throw Error("model: eval called with no tokens");
  if (n_past_ + T > n_ctx_) {
    throw Error(fmt::format("model: context overflow: {} positions used + {} new > context size {}",
                            n_past_, T, n_ctx_));
  }
  for (int32_t tok : tokens) {
    if (tok < 0 || tok >= hp.n_vocab) {
      throw Error(fmt::format("model: token id {} is out of range [0, {})", tok, hp.n_vocab));
    }
  }
  const int64_t E = hp.n_embd, D = hp.head_dim, q_dim = hp.n_head * D, kv_dim = hp.n_head_kv * D;
  auto buf = [](int64_t n) { return std::vector<float>(static_cast<size_t>(n)); };
  std::vector<float> x = buf(T * E), xn = buf(T * E), q = buf(T * q_dim), k = buf(T * kv_dim),
                     v = buf(T * kv_dim), attn = buf(T * q_dim), proj = buf(T * E),
                     gate = buf(T * hp.n_ff), up = buf(T * hp.n_ff);

  const int64_t half = hp.rope_dim / 2;
  std::vector<float> rope_cos = buf(T * half), rope_sin = buf(T * half);
  for (int64_t t = 0; t < T; ++t) {
    rope_angles(hp, model_.rope_freq_factors(), n_past_ + t, &rope_cos[t * half],
                &rope_sin[t * half]);
  }

  for (int64_t t = 0; t < T; ++t)
    tensor::get_row(model_.token_embd(), tokens[static_cast<size_t>(t)], &x[t * E]);

  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const LayerWeights& L = model_.layers()[static_cast<size_t>(l)];
    for (int64_t t = 0; t < T; ++t)
      tensor::rms_norm(&x[t * E], L.attn_norm.data(), E, hp.rms_eps, &xn[t * E]);
    tensor::matmul(L.wq, xn.data(), T, q.data(), pool_);
    tensor::matmul(L.wk, xn.data(), T, k.data(), pool_);
    tensor::matmul(L.wv, xn.data(), T, v.data(), pool_);
    add_bias(q.data(), L.bq, T);
    add_bias(k.data(), L.bk, T);
    add_bias(v.data(), L.bv, T);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t pos = n_past_ + t;
      for (int64_t h = 0; h < hp.n_head; ++h) {
        float* qh = &q[t * q_dim + h * D];
        if (!L.q_norm.empty()) tensor::rms_norm(qh, L.q_norm.data(), D, hp.rms_eps, qh);
        apply_rope(hp, &rope_cos[t * half], &rope_sin[t * half], qh);
      }
      for (int64_t h = 0; h < hp.n_head_kv; ++h) {
        float* kh = &k[t * kv_dim + h * D];
        if (!L.k_norm.empty()) tensor::rms_norm(kh, L.k_norm.data(), D, hp.rms_eps, kh);
        apply_rope(hp, &rope_cos[t * half], &rope_sin[t * half], kh);
      }
      float* kc = k_cache_.data() + (l * n_ctx_ + pos) * kv_dim;
      float* vc = v_cache_.data() + (l * n_ctx_ + pos) * kv_dim;
      std::copy_n(&k[t * kv_dim], kv_dim, kc);
      std::copy_n(&v[t * kv_dim], kv_dim, vc);
    }
    attention(l, T, q.data(), attn.data());
    tensor::matmul(L.wo, attn.data(), T, proj.data(), pool_);
    for (int64_t i = 0; i < T * E; ++i) x[i] += proj[i];

    for (int64_t t = 0; t < T; ++t)
      tensor::rms_norm(&x[t * E], L.ffn_norm.data(), E, hp.rms_eps, &xn[t * E]);
    tensor::matmul(L.ffn_gate, xn.data(), T, gate.data(), pool_);
    tensor::matmul(L.ffn_up, xn.data(), T, up.data(), pool_);
    for (int64_t i = 0; i < T * hp.n_ff; ++i) gate[i] = tensor::silu(gate[i]) * up[i];
    tensor::matmul(L.ffn_down, gate.data(), T, proj.data(), pool_);
    for (int64_t i = 0; i < T * E; ++i) x[i] += proj[i];
  }

  // Only the rows whose logits are wanted go through the output matrix.
  const int64_t first = all_logits != nullptr ? 0 : T - 1;
  const int64_t n_out = T - first;
  for (int64_t t = first; t < T; ++t) {
    tensor::rms_norm(&x[t * E], model_.output_norm().data(), E, hp.rms_eps, &xn[(t - first) * E]);
  }
  std::vector<float> logits = buf(n_out * hp.n_vocab);
  tensor::matmul(model_.output(), xn.data(), n_out, logits.data(), pool_);
  n_past_ += T;
  logits_.assign(logits.end() - hp.n_vocab, logits.end());
  if (all_logits != nullptr) *all_logits = std::move(logits);
  return logits_;
}

}  // namespace maas::model
