// The forward pass over a batch of sequences: embeddings, transformer blocks reading and writing
// a paged KV cache, logits.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "model/kv_cache.h"
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

void resize(std::vector<float>& v, int64_t n) {
  if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
}

// Keys per step of the online softmax. A constant, not the cache's block size, so that results do
// not depend on how the KV cache is paged either.
constexpr int64_t kKeyTile = 32;

// Scratch space of one attention job, reused across jobs on the same thread.
struct AttentionScratch {
  std::vector<float> keys, values, scores, acc, max, sum;
};

}  // namespace

BatchRunner::BatchRunner(const Model& model, KvCache& cache, tensor::ThreadPool* pool)
    : model_(model), cache_(cache), pool_(pool) {}

// Attention of every new token over its sequence's keys, one (token, KV head) pair per job: the
// query heads sharing a KV head (GQA) are processed together, so each key block is converted
// once for all of them. Keys are visited kKeyTile at a time with a running maximum and sum (online
// softmax): no score row as long as the context is materialised, and the order of operations
// depends only on the token's position, so chunking and batching do not change the result.
void BatchRunner::attention(int64_t layer, std::span<const SeqChunk> batch) {
  const HParams& hp = model_.hparams();
  const int64_t D = hp.head_dim, n_kv = hp.n_head_kv, group = hp.n_head / hp.n_head_kv;
  const int64_t q_dim = hp.n_head * D;
  const int32_t bs = cache_.block_size();
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const auto n_rows = static_cast<int64_t>(row_order_.size());

  auto job = [&](int64_t begin, int64_t end) {
    thread_local AttentionScratch s;
    s.keys.resize(static_cast<size_t>(kKeyTile * D));
    s.values.resize(static_cast<size_t>(kKeyTile * D));
    s.scores.resize(static_cast<size_t>(group * kKeyTile));
    s.acc.resize(static_cast<size_t>(group * D));
    s.max.resize(static_cast<size_t>(group));
    s.sum.resize(static_cast<size_t>(group));
    for (int64_t j = begin; j < end; ++j) {
      const int64_t row = row_order_[static_cast<size_t>(j / n_kv)], kvh = j % n_kv;
      const SeqChunk& c = batch[static_cast<size_t>(row_chunk_[static_cast<size_t>(row)])];
      const int64_t n_keys = row_pos_[static_cast<size_t>(row)] + 1;  // causal
      const float* q = q_.data() + row * q_dim + kvh * group * D;
      std::fill(s.acc.begin(), s.acc.end(), 0.0f);
      std::fill(s.max.begin(), s.max.end(), -std::numeric_limits<float>::infinity());
      std::fill(s.sum.begin(), s.sum.end(), 0.0f);
      for (int64_t first = 0; first < n_keys; first += kKeyTile) {
        const auto n = static_cast<int32_t>(std::min<int64_t>(kKeyTile, n_keys - first));
        // Gather the tile's rows from the blocks it spans.
        for (int64_t p = first; p < first + n;) {
          const int32_t block = c.block_table[static_cast<size_t>(p / bs)];
          const auto slot0 = static_cast<int32_t>(p % bs);
          const auto cnt = static_cast<int32_t>(std::min<int64_t>(bs - slot0, first + n - p));
          cache_.read_k(layer, block, kvh, slot0, cnt, s.keys.data() + (p - first) * D);
          cache_.read_v(layer, block, kvh, slot0, cnt, s.values.data() + (p - first) * D);
          p += cnt;
        }
        for (int64_t g = 0; g < group; ++g) {
          float* sc = s.scores.data() + g * kKeyTile;
          float block_max = s.max[static_cast<size_t>(g)];
          for (int32_t i = 0; i < n; ++i) {
            sc[i] = tensor::dot(q + g * D, s.keys.data() + i * D, D) * scale;
            block_max = std::max(block_max, sc[i]);
          }
          // Rescale what was accumulated under the old maximum.
          const float correction = std::exp(s.max[static_cast<size_t>(g)] - block_max);
          float* acc = s.acc.data() + g * D;
          float sum = s.sum[static_cast<size_t>(g)] * correction;
          for (int64_t d = 0; d < D; ++d) acc[d] *= correction;
          for (int32_t i = 0; i < n; ++i) {
            const float p = std::exp(sc[i] - block_max);
            sum += p;
            const float* v = s.values.data() + i * D;
            for (int64_t d = 0; d < D; ++d) acc[d] += p * v[d];
          }
          s.max[static_cast<size_t>(g)] = block_max;
          s.sum[static_cast<size_t>(g)] = sum;
        }
      }
      float* out = attn_.data() + row * q_dim + kvh * group * D;
      for (int64_t g = 0; g < group; ++g) {
        const float inv = 1.0f / s.sum[static_cast<size_t>(g)];
        for (int64_t d = 0; d < D; ++d)
          out[g * D + d] = s.acc[static_cast<size_t>(g * D + d)] * inv;
      }
    }
  };
  if (pool_ != nullptr) {
    pool_->parallel_for(n_rows * n_kv, job);
  } else {
    job(0, n_rows * n_kv);
  }
}

bool Model::prompt_arithmetic_differs() const {
  if (tensor::prompt_kernels_differ(output_)) return true;
  for (const LayerWeights& L : layers_) {
    for (const tensor::MatrixView* w : L.matrices()) {
      if (tensor::prompt_kernels_differ(*w)) return true;
    }
  }
  return false;
}

void BatchRunner::KindSplit::build(std::span<const uint8_t> is_prompt) {
  order.clear();
  for (uint8_t kind : {uint8_t{1}, uint8_t{0}}) {
    for (size_t t = 0; t < is_prompt.size(); ++t) {
      if (is_prompt[t] == kind) order.push_back(static_cast<int64_t>(t));
    }
  }
  n_prompt = static_cast<int64_t>(std::count(is_prompt.begin(), is_prompt.end(), 1));
}

void BatchRunner::linear(const tensor::MatrixView& w, const float* x, const KindSplit& kinds,
                         float* y) {
  const auto T = static_cast<int64_t>(kinds.order.size());
  const int64_t n_prompt = kinds.n_prompt;
  if (n_prompt == 0 || n_prompt == T || !tensor::prompt_kernels_differ(w)) {
    tensor::matmul(w, x, T, y, pool_,
                   n_prompt == T ? tensor::TokenKind::kPrompt : tensor::TokenKind::kGenerated);
    return;
  }
  const auto cols = static_cast<size_t>(w.cols), rows = static_cast<size_t>(w.rows);
  resize(split_x_, T * w.cols);
  resize(split_y_, T * w.rows);
  for (size_t i = 0; i < kinds.order.size(); ++i) {
    std::copy_n(x + static_cast<size_t>(kinds.order[i]) * cols, cols, &split_x_[i * cols]);
  }
  tensor::matmul(w, split_x_.data(), n_prompt, split_y_.data(), pool_, tensor::TokenKind::kPrompt);
  tensor::matmul(w, &split_x_[static_cast<size_t>(n_prompt) * cols], T - n_prompt,
                 &split_y_[static_cast<size_t>(n_prompt) * rows], pool_,
                 tensor::TokenKind::kGenerated);
  for (size_t i = 0; i < kinds.order.size(); ++i) {
    std::copy_n(&split_y_[i * rows], rows, y + static_cast<size_t>(kinds.order[i]) * rows);
  }
}

std::span<const float> BatchRunner::run(std::span<const SeqChunk> batch,
                                        std::vector<float>* hidden) {
  const HParams& hp = model_.hparams();
  const int32_t bs = cache_.block_size();
  int64_t T = 0, n_out = 0;
  for (const SeqChunk& c : batch) {
    const auto n = static_cast<int64_t>(c.tokens.size());
    if (n == 0) throw Error("model: a batch entry has no tokens");
    if (c.pos0 < 0) throw Error("model: negative position");
    if (c.n_logits < 0 || c.n_logits > n) {
      throw Error(fmt::format("model: {} logits asked of a chunk of {} tokens", c.n_logits, n));
    }
    if (c.n_prompt < 0 || c.n_prompt > n) {
      throw Error(fmt::format("model: {} prompt tokens in a chunk of {} tokens", c.n_prompt, n));
    }
    const int64_t end = c.pos0 + n;
    if (static_cast<int64_t>(c.block_table.size()) * bs < end) {
      throw Error(fmt::format("model: block table of {} blocks cannot hold {} positions",
                              c.block_table.size(), end));
    }
    for (size_t b = 0; b < static_cast<size_t>((end + bs - 1) / bs); ++b) {
      if (c.block_table[b] < 0 || c.block_table[b] >= cache_.n_blocks()) {
        throw Error(fmt::format("model: KV block {} is outside the cache", c.block_table[b]));
      }
    }
    for (int32_t tok : c.tokens) {
      if (tok < 0 || tok >= hp.n_vocab) {
        throw Error(fmt::format("model: token id {} is out of range [0, {})", tok, hp.n_vocab));
      }
    }
    T += n;
    n_out += c.n_logits;
  }
  if (T == 0) throw Error("model: eval called with no tokens");

  const int64_t E = hp.n_embd, D = hp.head_dim, q_dim = hp.n_head * D, kv_dim = hp.n_head_kv * D;
  const int64_t half = hp.rope_dim / 2;
  for (auto* v : {&x_, &xn_, &proj_}) resize(*v, T * E);
  for (auto* v : {&q_, &attn_}) resize(*v, T * q_dim);
  for (auto* v : {&k_, &v_}) resize(*v, T * kv_dim);
  for (auto* v : {&gate_, &up_}) resize(*v, T * hp.n_ff);
  for (auto* v : {&rope_cos_, &rope_sin_}) resize(*v, T * half);

  // Rows: every new token of every chunk, in batch order.
  row_chunk_.clear();
  row_pos_.clear();
  row_prompt_.clear();
  out_prompt_.clear();
  for (size_t ci = 0; ci < batch.size(); ++ci) {
    const SeqChunk& c = batch[ci];
    const auto n = static_cast<int64_t>(c.tokens.size());
    for (int64_t i = 0; i < n; ++i) {
      row_chunk_.push_back(static_cast<int32_t>(ci));
      row_pos_.push_back(c.pos0 + i);
      row_prompt_.push_back(i < c.n_prompt ? 1 : 0);
    }
    for (int64_t i = n - c.n_logits; i < n; ++i) out_prompt_.push_back(i < c.n_prompt ? 1 : 0);
  }
  row_kinds_.build(row_prompt_);
  out_kinds_.build(out_prompt_);
  // Attention jobs take rows alternately from the cheap (early) and costly (late) end, so the
  // pool's equal contiguous shares get about equal work.
  row_order_.resize(static_cast<size_t>(T));
  std::vector<int64_t> by_pos(static_cast<size_t>(T));
  for (int64_t r = 0; r < T; ++r) by_pos[static_cast<size_t>(r)] = r;
  std::stable_sort(by_pos.begin(), by_pos.end(), [&](int64_t a, int64_t b) {
    return row_pos_[static_cast<size_t>(a)] < row_pos_[static_cast<size_t>(b)];
  });
  for (int64_t i = 0, lo = 0, hi = T - 1; i < T; ++i) {
    row_order_[static_cast<size_t>(i)] = by_pos[static_cast<size_t>(i % 2 == 0 ? lo++ : hi--)];
  }

  for (int64_t t = 0; t < T; ++t) {
    rope_angles(hp, model_.rope_freq_factors(), row_pos_[static_cast<size_t>(t)],
                &rope_cos_[t * half], &rope_sin_[t * half]);
  }
  {
    int64_t t = 0;
    for (const SeqChunk& c : batch) {
      for (int32_t tok : c.tokens) tensor::get_row(model_.token_embd(), tok, &x_[t++ * E]);
    }
  }

  // Per-row work split across the pool when there are enough rows to pay for the hand-off.
  auto parallel_rows = [&](int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (pool_ != nullptr && n >= 8) {
      pool_->parallel_for(n, fn);
    } else {
      fn(0, n);
    }
  };
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const LayerWeights& L = model_.layers()[static_cast<size_t>(l)];
    parallel_rows(T, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        tensor::rms_norm(&x_[t * E], L.attn_norm.data(), E, hp.rms_eps, &xn_[t * E]);
    });
    linear(L.wq, xn_.data(), row_kinds_, q_.data());
    linear(L.wk, xn_.data(), row_kinds_, k_.data());
    linear(L.wv, xn_.data(), row_kinds_, v_.data());
    add_bias(q_.data(), L.bq, T);
    add_bias(k_.data(), L.bk, T);
    add_bias(v_.data(), L.bv, T);
    // Per token: q/k norms, RoPE, K/V into the cache (each token writes its own slot).
    parallel_rows(T, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        for (int64_t h = 0; h < hp.n_head; ++h) {
          float* qh = &q_[t * q_dim + h * D];
          if (!L.q_norm.empty()) tensor::rms_norm(qh, L.q_norm.data(), D, hp.rms_eps, qh);
          apply_rope(hp, &rope_cos_[t * half], &rope_sin_[t * half], qh);
        }
        for (int64_t h = 0; h < hp.n_head_kv; ++h) {
          float* kh = &k_[t * kv_dim + h * D];
          if (!L.k_norm.empty()) tensor::rms_norm(kh, L.k_norm.data(), D, hp.rms_eps, kh);
          apply_rope(hp, &rope_cos_[t * half], &rope_sin_[t * half], kh);
        }
        const SeqChunk& c = batch[static_cast<size_t>(row_chunk_[static_cast<size_t>(t)])];
        const int64_t pos = row_pos_[static_cast<size_t>(t)];
        cache_.write(l, c.block_table[static_cast<size_t>(pos / bs)],
                     static_cast<int32_t>(pos % bs), &k_[t * kv_dim], &v_[t * kv_dim]);
      }
    });
    attention(l, batch);
    linear(L.wo, attn_.data(), row_kinds_, proj_.data());
    for (int64_t i = 0; i < T * E; ++i) x_[i] += proj_[i];

    parallel_rows(T, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        tensor::rms_norm(&x_[t * E], L.ffn_norm.data(), E, hp.rms_eps, &xn_[t * E]);
    });
    linear(L.ffn_gate, xn_.data(), row_kinds_, gate_.data());
    linear(L.ffn_up, xn_.data(), row_kinds_, up_.data());
    // SwiGLU, elementwise: split across the pool (each element's arithmetic is the same
    // whichever thread runs it). Single-threaded it was ~15% of a 256-token prefill step.
    parallel_rows(T, [&](int64_t t0, int64_t t1) {
      for (int64_t i = t0 * hp.n_ff; i < t1 * hp.n_ff; ++i) {
        gate_[i] = tensor::silu(gate_[i]) * up_[i];
      }
    });
    linear(L.ffn_down, gate_.data(), row_kinds_, proj_.data());
    for (int64_t i = 0; i < T * E; ++i) x_[i] += proj_[i];
  }

  if (hidden != nullptr) {
    hidden->resize(static_cast<size_t>(T * E));
    for (int64_t t = 0; t < T; ++t) {
      tensor::rms_norm(&x_[t * E], model_.output_norm().data(), E, hp.rms_eps, &(*hidden)[t * E]);
    }
  }
  // Only the rows whose logits are wanted go through the output matrix.
  int64_t out_row = 0, t0 = 0;
  for (const SeqChunk& c : batch) {
    const auto n = static_cast<int64_t>(c.tokens.size());
    for (int64_t t = t0 + n - c.n_logits; t < t0 + n; ++t) {
      tensor::rms_norm(&x_[t * E], model_.output_norm().data(), E, hp.rms_eps, &xn_[out_row++ * E]);
    }
    t0 += n;
  }
  logits_.resize(static_cast<size_t>(n_out * hp.n_vocab));
  if (n_out > 0) linear(model_.output(), xn_.data(), out_kinds_, logits_.data());
  return logits_;
}

}  // namespace maas::model
