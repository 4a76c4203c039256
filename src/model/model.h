// Decoder-only transformer models read from GGUF: architecture, hyper-parameters and weights
// (pointers into the file's mapping), and a forward pass with a KV cache.
//
// Architectures: "llama" (Llama 1/2/3, Mistral, TinyLlama; RoPE on adjacent pairs, optional
// rope_freqs for Llama 3 scaling, tied or separate output), "qwen2" (Q/K/V biases, RoPE on split
// halves), "qwen3" (per-head RMSNorm of Q and K, split-half RoPE, explicit head size).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "tensor/ops.h"

namespace maas::tensor {
class ThreadPool;
}

namespace maas::model {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Arch { Llama, Qwen2, Qwen3 };
// How RoPE pairs the dimensions of a head: (2i, 2i+1) or (i, i + rope_dim/2).
enum class RopeStyle { AdjacentPairs, SplitHalves };

struct HParams {
  std::string arch_name;
  Arch arch = Arch::Llama;
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;  // per-head size of Q and K (and V)
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f;
  int64_t rope_dim = 0;          // leading dims of each head that RoPE rotates
  float rope_freq_scale = 1.0f;  // linear scaling: positions are multiplied by this
  RopeStyle rope_style = RopeStyle::AdjacentPairs;
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  tensor::MatrixView wq, wk, wv, wo;
  std::vector<float> bq, bk, bv;      // qwen2 (empty when absent)
  std::vector<float> q_norm, k_norm;  // qwen3 (empty when absent)
  tensor::MatrixView ffn_gate, ffn_up, ffn_down;

  // The seven matrices, in the order a layer uses them.
  std::array<const tensor::MatrixView*, 7> matrices() const {
    return {&wq, &wk, &wv, &wo, &ffn_gate, &ffn_up, &ffn_down};
  }
  std::array<tensor::MatrixView*, 7> matrices() {
    return {&wq, &wk, &wv, &wo, &ffn_gate, &ffn_up, &ffn_down};
  }
};

class Model {
 public:
  // Reads hyper-parameters and binds the weights. The file must outlive the model. Throws
  // model::Error listing every missing or misshapen tensor, or naming an unknown architecture.
  static std::unique_ptr<Model> load(const gguf::File& file);
  // load(file), then, when file holds a private copy of its tensors (gguf::File::Load::Copy),
  // rearranges the Q8_0 matrices there into 16-row panels (tensor::pack_panels: the products are
  // bit-identical, decoding reads them faster). The file cannot be loaded again afterwards.
  // pool (may be null) does the rearranging.
  static std::unique_ptr<Model> load_and_pack(gguf::File& file, tensor::ThreadPool* pool);

  const HParams& hparams() const { return hp_; }
  const tensor::MatrixView& token_embd() const { return token_embd_; }
  const tensor::MatrixView& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const std::vector<float>& rope_freq_factors() const { return rope_freqs_; }  // empty if none
  bool tied_output() const { return tied_; }
  // Whether prompt tokens get other arithmetic than generated ones for some weight matrix on the
  // CPU target in use (tensor::prompt_kernels_differ): then the KV of a token depends on its
  // kind, which the prefix cache must keep apart.
  bool prompt_arithmetic_differs() const;

 private:
  HParams hp_;
  tensor::MatrixView token_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
  std::vector<float> rope_freqs_;
  bool tied_ = false;
};

class KvCache;
enum class KvType;

// One sequence's share of a forward step.
struct SeqChunk {
  std::span<const int32_t> tokens;       // new tokens, at positions pos0, pos0 + 1, ...
  int64_t pos0 = 0;                      // positions before it are already in the KV cache
  std::span<const int32_t> block_table;  // KV blocks covering positions [0, pos0 + tokens.size())
  int64_t n_logits = 1;                  // logits wanted for the last n_logits tokens
  // How many of the leading tokens are prompt tokens (tensor::TokenKind::kPrompt); the rest were
  // generated. A token must be of the same kind every time it is computed (see TokenKind).
  int64_t n_prompt = 0;
};

// Runs forward steps over batches of sequences: one pass through the weights per step (the
// tokens of all sequences form one activation matrix), each sequence's attention reading its
// own KV blocks. A token's result depends only on its sequence's tokens, never on what else is
// in the batch or how its prompt was split into chunks (batch invariance): every row's
// reductions run in a fixed order. Keeps scratch buffers between steps.
class BatchRunner {
 public:
  BatchRunner(const Model& model, KvCache& cache, tensor::ThreadPool* pool);

  // Writes the chunks' K/V into the cache and returns the wanted logits: for each chunk in
  // order, n_logits rows of n_vocab. If hidden is given, it receives every token's final
  // normalized hidden state ([total tokens][n_embd]). Throws model::Error for an empty chunk, a
  // token id out of range, a block table too short or naming a block outside the cache.
  std::span<const float> run(std::span<const SeqChunk> batch, std::vector<float>* hidden = nullptr);

  const Model& model() const { return model_; }
  KvCache& cache() { return cache_; }

 private:
  void attention(int64_t layer, std::span<const SeqChunk> batch);
  // The rows of a step by kind (tensor::TokenKind): the prompt tokens' rows, then the generated
  // ones, each in row order; built once per step.
  struct KindSplit {
    int64_t n_prompt = 0;
    std::vector<int64_t> order;
    void build(std::span<const uint8_t> is_prompt);
  };
  // y = w x for the rows of x, each with its kind's arithmetic: one product when that is the
  // same for every row, else one per kind, over the rows gathered together.
  void linear(const tensor::MatrixView& w, const float* x, const KindSplit& kinds, float* y);

  const Model& model_;
  KvCache& cache_;
  tensor::ThreadPool* pool_;
  // Per-token bookkeeping and activations of the current step.
  std::vector<int32_t> row_chunk_;
  std::vector<int64_t> row_pos_, row_order_;
  std::vector<uint8_t> row_prompt_, out_prompt_;  // 1: a prompt token's row, logit row
  KindSplit row_kinds_, out_kinds_;
  std::vector<float> split_x_, split_y_;
  std::vector<float> x_, xn_, q_, k_, v_, attn_, proj_, gate_, up_, rope_cos_, rope_sin_, logits_;
};

// One sequence with its own contiguous KV cache: the simple path for tools and tests.
class Session {
 public:
  // n_ctx: the most positions this session can hold (0: the model's training context).
  Session(const Model& model, int64_t n_ctx, tensor::ThreadPool* pool);
  Session(const Model& model, int64_t n_ctx, tensor::ThreadPool* pool, KvType kv_type);
  ~Session();

  // Appends tokens at positions n_past().. and runs them through the model. Returns the logits
  // of the last token (n_vocab floats); if all_logits is given, it receives every token's logits
  // ([tokens.size()][n_vocab]). Throws model::Error if the context would overflow or a token id
  // is out of range.
  // `kind` says whether the tokens are a prompt or were generated (see tensor::TokenKind).
  std::span<const float> eval(std::span<const int32_t> tokens,
                              std::vector<float>* all_logits = nullptr,
                              tensor::TokenKind kind = tensor::TokenKind::kGenerated);

  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return n_ctx_; }
  void reset() { n_past_ = 0; }

 private:
  int64_t n_ctx_;
  int64_t n_past_ = 0;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<BatchRunner> runner_;
  std::vector<int32_t> block_table_;
  std::vector<float> logits_;
};

}  // namespace maas::model
