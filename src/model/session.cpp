// Session: one sequence over a private KV cache whose blocks are laid out in order.
#include <fmt/format.h>

#include "model/kv_cache.h"
#include "model/model.h"

namespace maas::model {

namespace {
constexpr int32_t kSessionBlock = 16;
}

Session::Session(const Model& model, int64_t n_ctx, tensor::ThreadPool* pool)
    : Session(model, n_ctx, pool, KvType::F32) {}

Session::Session(const Model& model, int64_t n_ctx, tensor::ThreadPool* pool, KvType kv_type) {
  const HParams& hp = model.hparams();
  n_ctx_ = n_ctx > 0 ? n_ctx : hp.n_ctx_train;
  if (n_ctx_ <= 0) throw Error("model: context size must be positive");
  const auto n_blocks = static_cast<int32_t>((n_ctx_ + kSessionBlock - 1) / kSessionBlock);
  cache_ = std::make_unique<KvCache>(hp, n_blocks, kSessionBlock, kv_type);
  runner_ = std::make_unique<BatchRunner>(model, *cache_, pool);
  for (int32_t b = 0; b < n_blocks; ++b) block_table_.push_back(b);
}

Session::~Session() = default;

std::span<const float> Session::eval(std::span<const int32_t> tokens,
                                     std::vector<float>* all_logits, tensor::TokenKind kind) {
  const auto T = static_cast<int64_t>(tokens.size());
  if (T == 0) throw Error("model: eval called with no tokens");
  if (n_past_ + T > n_ctx_) {
    throw Error(fmt::format("model: context overflow: {} positions used + {} new > context size {}",
                            n_past_, T, n_ctx_));
  }
  SeqChunk chunk{tokens, n_past_, block_table_, all_logits != nullptr ? T : 1,
                 kind == tensor::TokenKind::kPrompt ? T : 0};
  const std::span<const float> out = runner_->run({&chunk, 1});
  n_past_ += T;
  const auto n_vocab = static_cast<size_t>(runner_->model().hparams().n_vocab);
  logits_.assign(out.end() - static_cast<std::ptrdiff_t>(n_vocab), out.end());
  if (all_logits != nullptr) all_logits->assign(out.begin(), out.end());
  return logits_;
}

}  // namespace maas::model
