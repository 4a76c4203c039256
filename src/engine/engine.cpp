// The scheduler: queues, KV block tables, prefix cache, preemption, and turning sampled tokens
// into outputs (text deltas, stop strings, finish reasons).
#include "engine/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <random>

#include "engine/kv_blocks.h"
#include "engine/stop_matcher.h"
#include "tensor/thread_pool.h"

namespace maas::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None:
      return "none";
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
    case FinishReason::Cancelled:
      return "cancelled";
    case FinishReason::Error:
      return "error";
  }
  return "?";
}

// ---- RequestHandle -------------------------------------------------------------------------

bool RequestHandle::next(std::vector<Output>& out) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !pending_.empty() || done_; });
  if (pending_.empty()) return false;
  std::move(pending_.begin(), pending_.end(), std::back_inserter(out));
  pending_.clear();
  return true;
}

bool RequestHandle::try_next(std::vector<Output>& out) {
  std::lock_guard lock(mu_);
  if (pending_.empty()) return false;
  std::move(pending_.begin(), pending_.end(), std::back_inserter(out));
  pending_.clear();
  return true;
}

bool RequestHandle::finished() const {
  std::lock_guard lock(mu_);
  return done_;
}

Usage RequestHandle::usage() const {
  std::lock_guard lock(mu_);
  return usage_;
}

std::vector<TokenOutput> RequestHandle::prompt_logprobs() const {
  std::lock_guard lock(mu_);
  return prompt_logprobs_;
}

void RequestHandle::set_notify(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  notify_ = std::move(fn);
}

std::optional<Clock::time_point> RequestHandle::first_token_at() const {
  std::lock_guard lock(mu_);
  return first_token_;
}

std::optional<Clock::time_point> RequestHandle::scheduled_at() const {
  std::lock_guard lock(mu_);
  return scheduled_;
}

void RequestHandle::push(Output o, bool final) {
  std::function<void()> notify;
  {
    std::lock_guard lock(mu_);
    if (!o.tokens.empty() && !first_token_) first_token_ = Clock::now();
    pending_.push_back(std::move(o));
    if (final) done_ = true;
    notify = notify_;
  }
  cv_.notify_all();
  if (notify) notify();
}

// ---- Engine internals ----------------------------------------------------------------------

namespace {

// Log-softmax of one row of logits in double; the logprob of `token` and the n best.
TokenOutput logprobs_of(std::span<const float> logits, int32_t token, int n_top) {
  double max = -INFINITY;
  for (float l : logits) {
    if (!std::isnan(l)) max = std::max<double>(max, l);
  }
  double sum = 0;
  for (float l : logits) {
    if (!std::isnan(l)) sum += std::exp(static_cast<double>(l) - max);
  }
  const double log_z = max + std::log(sum);
  auto lp = [&](int32_t id) {
    const float l = logits[static_cast<size_t>(id)];
    return std::isnan(l) ? -INFINITY : static_cast<float>(l - log_z);
  };
  TokenOutput out;
  out.token = token;
  out.logprob = lp(token);
  if (n_top > 0) {
    std::vector<int32_t> ids(logits.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    const auto k = std::min(ids.size(), static_cast<size_t>(n_top));
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                      [&](int32_t a, int32_t b) {
                        const float la = lp(a), lb = lp(b);
                        return la != lb ? la > lb : a < b;
                      });
    for (size_t i = 0; i < k; ++i) out.top.push_back({ids[i], lp(ids[i])});
  }
  return out;
}

struct RequestState;

// One generated sequence (a choice of a request).
struct Sequence {
  std::shared_ptr<RequestState> req;
  int32_t index = 0;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int64_t n_prompt = 0;
  int64_t n_computed = 0;        // positions whose KV is in the cache
  std::vector<int32_t> blocks;   // block table
  std::vector<uint64_t> hashes;  // chain hash of each full block, as far as known
  int64_t generated = 0;
  uint64_t admit_order = 0;  // when it (last) started running: larger is more recent
  int64_t n_published = 0;
  std::vector<double> embedding_sum;  // embedding requests: sum of the final hidden states   //
                                      // leading full blocks known to be in the prefix cache
  bool ever_admitted = false;
  bool done = false;
  std::optional<Sampler> sampler;
  std::optional<tokenizer::StreamDecoder> decoder;
  std::optional<StopMatcher> stop;
};

struct RequestState {
  Request req;
  std::shared_ptr<RequestHandle> handle;
  uint64_t seed = 0;
  int64_t max_tokens = 0;
  uint64_t root_hash = 0;
  int32_t open = 1;  // choices not yet finished
  bool forked = false;
  bool failed = false;
  Usage usage;
};

}  // namespace

struct Engine::Impl {
  Impl(const model::Model& m, const tokenizer::Tokenizer& t, const EngineConfig& c,
       int32_t n_blocks)
      : model(m),
        tok(t),
        config(c),
        pool(c.threads),
        cache(m.hparams(), n_blocks, c.block_size, c.kv_type),
        runner(m, cache, &pool),
        blocks(n_blocks, c.block_size) {}

  const model::Model& model;
  const tokenizer::Tokenizer& tok;
  EngineConfig config;
  int64_t max_context = 0;
  tensor::ThreadPool pool;
  model::KvCache cache;
  model::BatchRunner runner;
  BlockManager blocks;

  std::mutex inbox_mu;
  std::condition_variable inbox_cv;
  std::vector<std::unique_ptr<Sequence>> inbox;
  std::deque<std::unique_ptr<Sequence>> waiting;
  std::vector<float> hidden;  // final hidden states of a step with embedding requests
  std::vector<std::unique_ptr<Sequence>> running;
  uint64_t next_admit = 0;
  std::mt19937_64 seed_rng{std::random_device{}()};

  mutable std::mutex stats_mu;
  EngineStats stats;

  std::thread loop;
  std::atomic<bool> stopping{false};

  bool step();
  void enqueue_waiting(std::unique_ptr<Sequence> seq);
  bool ensure_blocks(Sequence& seq, int64_t n_positions, std::vector<Sequence*>& unplanned,
                     std::vector<Sequence*>& preempted);
  bool try_allocate(Sequence& seq, int64_t n_positions);
  void lookup_prefix(Sequence& seq);
  void publish_full_blocks(Sequence& seq);
  void release_blocks(Sequence& seq);
  void preempt(Sequence& seq);
  void sample_and_emit(Sequence& seq, std::span<const float> logits,
                       std::vector<std::unique_ptr<Sequence>>& forks);
  void fork_children(Sequence& parent, std::span<const float> logits,
                     std::vector<std::unique_ptr<Sequence>>& forks);
  void finish(Sequence& seq, FinishReason reason, Output out);
  void emit(Sequence& seq, Output out);
  void init_choice(Sequence& seq);
};

// ---- Engine --------------------------------------------------------------------------------

Engine::Engine(const model::Model& model, const tokenizer::Tokenizer& tok, EngineConfig config)
    : config_(std::move(config)) {
  const model::HParams& hp = model.hparams();
  max_context_ = config_.max_context > 0 ? config_.max_context : hp.n_ctx_train;
  if (max_context_ <= 0) throw model::Error("engine: the model declares no context size");
  if (config_.block_size <= 0 || config_.max_running <= 0 || config_.token_budget <= 0) {
    throw model::Error("engine: block size, max running sequences and token budget must be > 0");
  }
  const size_t per_block = model::KvCache::bytes_per_block(hp, config_.block_size, config_.kv_type);
  const int64_t blocks_per_context = (max_context_ + config_.block_size - 1) / config_.block_size;
  int64_t n_blocks = 0;
  if (config_.kv_memory > 0) {
    n_blocks = static_cast<int64_t>(config_.kv_memory / per_block);
  } else {
    n_blocks = std::min<int64_t>(blocks_per_context * config_.max_running,
                                 static_cast<int64_t>((size_t{2} << 30) / per_block));
  }
  if (n_blocks < blocks_per_context) {
    throw model::Error(fmt::format(
        "engine: KV memory for {} blocks ({} bytes each) cannot hold one context of {} tokens; "
        "raise the KV memory or lower the context size",
        n_blocks, per_block, max_context_));
  }
  n_blocks = std::min<int64_t>(n_blocks, INT32_MAX / 2);
  impl_ = std::make_unique<Impl>(model, tok, config_, static_cast<int32_t>(n_blocks));
  impl_->max_context = max_context_;
}

Engine::~Engine() {
  stop();
  // Requests still queued or running end as cancelled, so nobody waits on them forever.
  std::vector<std::unique_ptr<Sequence>> left;
  {
    std::lock_guard lock(impl_->inbox_mu);
    for (auto& s : impl_->inbox) left.push_back(std::move(s));
    impl_->inbox.clear();
  }
  for (auto& s : impl_->running) left.push_back(std::move(s));
  for (auto& s : impl_->waiting) left.push_back(std::move(s));
  impl_->running.clear();
  impl_->waiting.clear();
  for (auto& s : left) {
    if (!s->done) impl_->finish(*s, FinishReason::Cancelled, {});
  }
}

std::shared_ptr<RequestHandle> Engine::submit(Request req) {
  const int64_t n_vocab = impl_->model.hparams().n_vocab;
  const auto n_prompt = static_cast<int64_t>(req.prompt.size());
  if (n_prompt == 0) throw InvalidRequest("the prompt has no tokens");
  for (int32_t t : req.prompt) {
    if (t < 0 || t >= n_vocab) {
      throw InvalidRequest(fmt::format("prompt token id {} is out of range [0, {})", t, n_vocab));
    }
  }
  for (int32_t t : req.stop_token_ids) {
    if (t < 0 || t >= n_vocab) {
      throw InvalidRequest(fmt::format("stop token id {} is out of range [0, {})", t, n_vocab));
    }
  }
  if (std::string err = validate(req.sampling, n_vocab); !err.empty()) throw InvalidRequest(err);
  if (req.n < 1 || req.n > 128) throw InvalidRequest("n must be between 1 and 128");
  if (req.logprobs < -1 || req.logprobs > 20) {
    throw InvalidRequest("logprobs must be between 0 and 20");
  }
  if (n_prompt >= max_context_) {
    throw InvalidRequest(fmt::format(
        "the prompt has {} tokens, which leaves no room in the model's context of {} tokens",
        n_prompt, max_context_));
  }
  if (req.max_tokens < -1) throw InvalidRequest("max_tokens must not be negative");
  if (req.embedding) {
    req.max_tokens = 0;
    req.n = 1;
    req.prompt_logprobs = false;
  }
  const int64_t max_tokens = req.max_tokens < 0 ? max_context_ - n_prompt : req.max_tokens;
  if (n_prompt + max_tokens > max_context_) {
    throw InvalidRequest(fmt::format(
        "this model's context is {} tokens; the prompt has {} and max_tokens asks for {} more",
        max_context_, n_prompt, max_tokens));
  }
  const int64_t bs = config_.block_size;
  const int64_t need = (n_prompt + max_tokens + bs - 1) / bs + (req.n - 1) * (max_tokens / bs + 2);
  if (need > impl_->blocks.n_blocks()) {
    throw InvalidRequest(fmt::format(
        "the request needs up to {} KV blocks but the pool has {}: lower n or max_tokens", need,
        impl_->blocks.n_blocks()));
  }

  auto state = std::make_shared<RequestState>();
  state->handle = std::make_shared<RequestHandle>();
  state->handle->submitted_ = Clock::now();
  state->handle->open_choices_ = req.n;
  state->max_tokens = max_tokens;
  state->open = req.n;
  state->usage.prompt_tokens = n_prompt;
  {
    std::lock_guard lock(impl_->inbox_mu);
    state->seed = req.seed ? *req.seed : impl_->seed_rng();
    static std::atomic<uint64_t> next_id{1};
    state->handle->id_ = next_id++;
  }
  state->root_hash = BlockManager::root_hash(config_.model_id, req.cache_salt);
  state->req = std::move(req);

  auto seq = std::make_unique<Sequence>();
  seq->req = state;
  seq->tokens = state->req.prompt;
  seq->n_prompt = n_prompt;
  impl_->init_choice(*seq);
  auto handle = state->handle;
  {
    std::lock_guard lock(impl_->inbox_mu);
    if (config_.max_waiting > 0) {
      size_t queued = impl_->inbox.size();
      {
        std::lock_guard slock(impl_->stats_mu);
        queued += static_cast<size_t>(impl_->stats.waiting);
      }
      if (queued >= config_.max_waiting) {
        throw QueueFull(fmt::format("the server is busy: {} requests are waiting", queued));
      }
    }
    impl_->inbox.push_back(std::move(seq));
  }
  impl_->inbox_cv.notify_one();
  return handle;
}

bool Engine::step() { return impl_->step(); }

void Engine::start() {
  if (impl_->loop.joinable()) return;
  impl_->stopping = false;
  impl_->loop = std::thread([this] {
    while (!impl_->stopping.load()) {
      if (!impl_->step()) {
        std::unique_lock lock(impl_->inbox_mu);
        impl_->inbox_cv.wait_for(lock, std::chrono::milliseconds(50),
                                 [&] { return !impl_->inbox.empty() || impl_->stopping.load(); });
      }
    }
  });
}

void Engine::stop() {
  if (!impl_ || !impl_->loop.joinable()) return;
  {
    std::lock_guard lock(impl_->inbox_mu);
    impl_->stopping = true;
  }
  impl_->inbox_cv.notify_all();
  impl_->loop.join();
}

EngineStats Engine::stats() const {
  std::lock_guard lock(impl_->stats_mu);
  return impl_->stats;
}

// ---- Scheduling ----------------------------------------------------------------------------

void Engine::Impl::init_choice(Sequence& seq) {
  RequestState& r = *seq.req;
  seq.sampler.emplace(r.req.sampling, r.seed + static_cast<uint64_t>(seq.index), r.req.prompt);
  seq.decoder.emplace(tok, /*at_start=*/false);  // continues the prompt's text
  seq.stop.emplace(r.req.stop);
}

// Waiting sequences are ordered by priority (higher first), then by arrival; a preempted
// sequence goes before the others of its priority so it resumes first.
void Engine::Impl::enqueue_waiting(std::unique_ptr<Sequence> seq) {
  const int32_t prio = seq->req->req.priority;
  auto it = waiting.begin();
  if (seq->ever_admitted) {
    while (it != waiting.end() && (*it)->req->req.priority > prio) ++it;
  } else {
    while (it != waiting.end() && (*it)->req->req.priority >= prio) ++it;
  }
  waiting.insert(it, std::move(seq));
}

void Engine::Impl::release_blocks(Sequence& seq) {
  for (int32_t b : seq.blocks) blocks.release(b);
  seq.blocks.clear();
  seq.n_computed = 0;
  seq.n_published = 0;
}

void Engine::Impl::preempt(Sequence& seq) {
  release_blocks(seq);
  std::lock_guard lock(stats_mu);
  ++stats.preemptions;
}

bool Engine::Impl::try_allocate(Sequence& seq, int64_t n_positions) {
  const int64_t bs = config.block_size;
  const auto need = static_cast<size_t>((n_positions + bs - 1) / bs);
  if (need <= seq.blocks.size()) return true;
  if (static_cast<size_t>(blocks.n_free()) < need - seq.blocks.size()) return false;
  while (seq.blocks.size() < need) seq.blocks.push_back(*blocks.allocate());
  return true;
}

// Gives seq blocks for n_positions, preempting sequences from the end of `unplanned` (the lowest
// priority, most recently admitted) while the pool is short; if none is left, seq itself is
// preempted and false returned.
bool Engine::Impl::ensure_blocks(Sequence& seq, int64_t n_positions,
                                 std::vector<Sequence*>& unplanned,
                                 std::vector<Sequence*>& preempted) {
  while (!try_allocate(seq, n_positions)) {
    if (unplanned.empty()) {
      preempt(seq);
      preempted.push_back(&seq);
      return false;
    }
    Sequence* victim = unplanned.back();
    unplanned.pop_back();
    preempt(*victim);
    preempted.push_back(victim);
  }
  return true;
}

// Reuses cached full blocks of the sequence's prefix; at least one token is left to compute, so
// that the last position's logits come out of this request's own forward pass.
void Engine::Impl::lookup_prefix(Sequence& seq) {
  const int64_t bs = config.block_size;
  const int64_t max_blocks = (static_cast<int64_t>(seq.tokens.size()) - 1) / bs;
  uint64_t parent = seq.req->root_hash;
  for (int64_t i = 0; i < max_blocks; ++i) {
    std::span<const int32_t> toks(seq.tokens.data() + i * bs, static_cast<size_t>(bs));
    auto hit = blocks.lookup(parent, toks);
    if (!hit) break;
    seq.blocks.push_back(*hit);
    parent = BlockManager::chain_hash(parent, toks);
    if (seq.hashes.size() <= static_cast<size_t>(i)) seq.hashes.push_back(parent);
  }
  seq.n_computed = static_cast<int64_t>(seq.blocks.size()) * bs;
}

void Engine::Impl::publish_full_blocks(Sequence& seq) {
  const int64_t bs = config.block_size;
  const int64_t full = seq.n_computed / bs;
  for (int64_t i = seq.n_published; i < full; ++i) {
    const uint64_t parent = i == 0 ? seq.req->root_hash : seq.hashes[static_cast<size_t>(i - 1)];
    std::span<const int32_t> toks(seq.tokens.data() + i * bs, static_cast<size_t>(bs));
    if (seq.hashes.size() <= static_cast<size_t>(i)) {
      seq.hashes.push_back(BlockManager::chain_hash(parent, toks));
    }
    const int32_t b = seq.blocks[static_cast<size_t>(i)];
    if (!blocks.is_published(b)) blocks.publish(b, parent, toks);
  }
  seq.n_published = std::max(seq.n_published, full);
}

void Engine::Impl::emit(Sequence& seq, Output out) {
  out.index = seq.index;
  seq.req->handle->push(std::move(out), false);
}

void Engine::Impl::finish(Sequence& seq, FinishReason reason, Output out) {
  RequestState& r = *seq.req;
  seq.done = true;
  out.index = seq.index;
  out.finish = reason;
  release_blocks(seq);
  const bool last = --r.open == 0;
  {
    std::lock_guard lock(r.handle->mu_);
    r.handle->usage_ = r.usage;
  }
  r.handle->push(std::move(out), last);
}

void Engine::Impl::fork_children(Sequence& parent, std::span<const float> logits,
                                 std::vector<std::unique_ptr<Sequence>>& forks) {
  RequestState& r = *parent.req;
  r.forked = true;
  const int64_t bs = config.block_size;
  const int64_t full = parent.n_computed / bs, partial = parent.n_computed % bs;
  for (int32_t i = 1; i < r.req.n; ++i) {
    auto child = std::make_unique<Sequence>();
    child->req = parent.req;
    child->index = i;
    child->tokens = parent.tokens;
    child->n_prompt = parent.n_prompt;
    child->hashes = parent.hashes;
    init_choice(*child);
    // Full blocks are shared; a partly filled last block is copied, since the child writes into
    // it. Without a free block for the copy the child recomputes (from the prefix cache).
    std::optional<int32_t> copy;
    if (partial > 0) copy = blocks.allocate();
    if (partial == 0 || copy) {
      for (int64_t b = 0; b < full; ++b) {
        blocks.retain(parent.blocks[static_cast<size_t>(b)]);
        child->blocks.push_back(parent.blocks[static_cast<size_t>(b)]);
      }
      if (copy) {
        cache.copy_block(*copy, parent.blocks[static_cast<size_t>(full)],
                         static_cast<int32_t>(partial));
        child->blocks.push_back(*copy);
      }
      child->n_computed = parent.n_computed;
      child->ever_admitted = true;
      child->admit_order = next_admit++;
      sample_and_emit(*child, logits, forks);
    }
    forks.push_back(std::move(child));
  }
}

void Engine::Impl::sample_and_emit(Sequence& seq, std::span<const float> logits,
                                   std::vector<std::unique_ptr<Sequence>>& forks) {
  RequestState& r = *seq.req;
  if (r.req.embedding) {
    Output out;
    double norm = 0;
    for (double v : seq.embedding_sum) norm += v * v;
    norm = std::sqrt(norm);
    for (double v : seq.embedding_sum) {
      out.embedding.push_back(static_cast<float>(norm > 0 ? v / norm : 0.0));
    }
    finish(seq, FinishReason::Stop, std::move(out));
    return;
  }
  if (seq.generated >= r.max_tokens) {  // max_tokens 0: only the prompt was wanted
    finish(seq, FinishReason::Length, {});
    return;
  }
  if (r.req.n > 1 && !r.forked && seq.index == 0) fork_children(seq, logits, forks);
  const SampleResult s = seq.sampler->sample(logits, std::max(0, r.req.logprobs));
  seq.tokens.push_back(s.token);
  ++seq.generated;
  ++r.usage.completion_tokens;
  {
    std::lock_guard lock(stats_mu);
    ++stats.generated_tokens;
  }
  Output out;
  TokenOutput t;
  t.token = s.token;
  if (r.req.logprobs >= 0) {
    t.logprob = s.logprob;
    t.top = s.top;
  }
  out.tokens.push_back(std::move(t));

  const bool eog = !r.req.ignore_eos && tok.is_eog(s.token);
  const bool stop_id = std::find(r.req.stop_token_ids.begin(), r.req.stop_token_ids.end(),
                                 s.token) != r.req.stop_token_ids.end();
  if (!eog && !stop_id) {
    auto m = seq.stop->push(seq.decoder->push(s.token));
    out.text = std::move(m.text);
    if (m.stopped) {
      finish(seq, FinishReason::Stop, std::move(out));
      return;
    }
  }
  const bool length =
      seq.generated >= r.max_tokens || static_cast<int64_t>(seq.tokens.size()) >= max_context;
  if (eog || stop_id || length) {
    // Release what the decoder and the stop matcher still hold, unless a stop string is in it.
    auto m = seq.stop->push(seq.decoder->flush());
    out.text += m.text;
    if (!m.stopped) out.text += seq.stop->flush();
    // flush() may still find a stop string held back behind a longer candidate.
    const bool stopped = m.stopped || seq.stop->stopped();
    finish(seq, eog || stop_id || stopped ? FinishReason::Stop : FinishReason::Length,
           std::move(out));
    return;
  }
  emit(seq, std::move(out));
}

bool Engine::Impl::step() {
  {
    std::lock_guard lock(inbox_mu);
    for (auto& s : inbox) enqueue_waiting(std::move(s));
    inbox.clear();
  }
  // Cancellations, before any work is planned.
  auto cancelled = [](const std::unique_ptr<Sequence>& s) {
    return s->req->handle->cancelled_.load();
  };
  for (auto& s : running) {
    if (cancelled(s)) finish(*s, FinishReason::Cancelled, {});
  }
  std::erase_if(running, cancelled);
  for (auto& s : waiting) {
    if (cancelled(s)) finish(*s, FinishReason::Cancelled, {});
  }
  std::erase_if(waiting, cancelled);
  if (running.empty() && waiting.empty()) {
    std::lock_guard lock(stats_mu);
    stats.running = 0;
    stats.waiting = 0;
    stats.kv_blocks_total = blocks.n_blocks();
    stats.kv_blocks_free = blocks.n_free();
    stats.kv_blocks_used = blocks.n_referenced();
    return false;
  }

  // Running sequences in the order they keep their place: priority, then admission.
  std::stable_sort(running.begin(), running.end(), [](const auto& a, const auto& b) {
    if (a->req->req.priority != b->req->req.priority) {
      return a->req->req.priority > b->req->req.priority;
    }
    return a->admit_order < b->admit_order;
  });
  struct Planned {
    Sequence* seq;
    int64_t n;
  };
  std::vector<Planned> plan;
  std::vector<Sequence*> unplanned, preempted;
  for (auto it = running.rbegin(); it != running.rend(); ++it) unplanned.push_back(it->get());
  std::reverse(unplanned.begin(), unplanned.end());  // front: first in order; back: the victim
  // In that order, each decoding sequence gets one token and each prompt a chunk of what is left
  // of the budget after the decodes still to come, so prompts never starve decoders.
  int64_t budget = config.token_budget;
  int64_t decodes_left = 0;
  for (auto& s : running) {
    decodes_left += static_cast<int64_t>(s->tokens.size()) - s->n_computed == 1 ? 1 : 0;
  }
  std::vector<Sequence*> order;
  for (auto& s : running) order.push_back(s.get());
  for (Sequence* s : order) {
    if (std::find(preempted.begin(), preempted.end(), s) != preempted.end()) continue;
    std::erase(unplanned, s);
    const int64_t remaining = static_cast<int64_t>(s->tokens.size()) - s->n_computed;
    int64_t n = 0;
    if (remaining == 1) {
      --decodes_left;
      n = budget > 0 ? 1 : 0;
    } else {
      n = std::min(remaining, budget - decodes_left);
    }
    if (n <= 0) continue;
    if (!ensure_blocks(*s, s->n_computed + n, unplanned, preempted)) continue;
    plan.push_back({s, n});
    budget -= n;
  }
  // Preempted sequences go back to the queue.
  for (Sequence* p : preempted) {
    auto it =
        std::find_if(running.begin(), running.end(), [&](const auto& s) { return s.get() == p; });
    std::unique_ptr<Sequence> owned = std::move(*it);
    running.erase(it);
    enqueue_waiting(std::move(owned));
  }
  // Admission of waiting sequences while there is room (not in a step that had to preempt).
  while (preempted.empty() && !waiting.empty() && budget > 0 &&
         static_cast<int32_t>(running.size()) < config.max_running) {
    Sequence& s = *waiting.front();
    if (config.prefix_cache && !s.req->req.prompt_logprobs && !s.req->req.embedding) {
      lookup_prefix(s);
    }
    const int64_t n =
        std::min<int64_t>(static_cast<int64_t>(s.tokens.size()) - s.n_computed, budget);
    if (!try_allocate(s, s.n_computed + n)) {
      release_blocks(s);
      break;
    }
    if (!s.ever_admitted && s.index == 0) {
      s.req->usage.cached_tokens = s.n_computed;
      std::lock_guard lock(stats_mu);
      stats.prompt_tokens += static_cast<uint64_t>(s.n_prompt);
      stats.cached_tokens += static_cast<uint64_t>(s.n_computed);
    }
    if (!s.ever_admitted) {
      std::lock_guard lock(s.req->handle->mu_);
      if (!s.req->handle->scheduled_) s.req->handle->scheduled_ = Clock::now();
    }
    s.ever_admitted = true;
    s.admit_order = next_admit++;
    plan.push_back({&s, n});
    budget -= n;
    running.push_back(std::move(waiting.front()));
    waiting.pop_front();
  }

  if (!plan.empty()) {
    std::vector<model::SeqChunk> batch;
    batch.reserve(plan.size());
    for (const Planned& p : plan) {
      model::SeqChunk c;
      c.tokens = std::span<const int32_t>(p.seq->tokens.data() + p.seq->n_computed,
                                          static_cast<size_t>(p.n));
      c.pos0 = p.seq->n_computed;
      c.block_table = p.seq->blocks;
      const bool completes = p.seq->n_computed + p.n == static_cast<int64_t>(p.seq->tokens.size());
      const bool want_prompt_lp = p.seq->req->req.prompt_logprobs && p.seq->index == 0 &&
                                  p.seq->n_computed < p.seq->n_prompt;
      c.n_logits = p.seq->req->req.embedding ? 0 : want_prompt_lp ? p.n : (completes ? 1 : 0);
      batch.push_back(c);
    }
    std::span<const float> logits;
    std::string error;
    const bool any_embedding = std::any_of(
        plan.begin(), plan.end(), [](const Planned& p) { return p.seq->req->req.embedding; });
    try {
      logits = runner.run(batch, any_embedding ? &hidden : nullptr);
    } catch (const std::exception& e) {
      error = e.what();
    }
    const auto E = static_cast<size_t>(model.hparams().n_embd);
    size_t hidden_row = 0;
    const auto V = static_cast<size_t>(model.hparams().n_vocab);
    std::vector<std::unique_ptr<Sequence>> forks;
    size_t row = 0;
    for (size_t i = 0; i < plan.size(); ++i) {
      Sequence& s = *plan[i].seq;
      const int64_t n_logits = batch[i].n_logits;
      if (!error.empty()) {
        Output o;
        o.error = error;
        finish(s, FinishReason::Error, std::move(o));
        continue;
      }
      const int64_t first_pos = s.n_computed + plan[i].n - n_logits;
      if (s.req->req.embedding) {
        s.embedding_sum.resize(E, 0.0);
        for (int64_t j = 0; j < plan[i].n; ++j) {
          const float* h = hidden.data() + (hidden_row + static_cast<size_t>(j)) * E;
          for (size_t d = 0; d < E; ++d) s.embedding_sum[d] += h[d];
        }
      }
      hidden_row += static_cast<size_t>(plan[i].n);
      s.n_computed += plan[i].n;
      if (config.prefix_cache) publish_full_blocks(s);
      if (s.req->req.prompt_logprobs && s.index == 0 && n_logits > 1) {
        std::lock_guard lock(s.req->handle->mu_);
        auto& pl = s.req->handle->prompt_logprobs_;
        for (int64_t j = 0; j < n_logits; ++j) {
          const int64_t next_pos = first_pos + j + 1;
          if (next_pos >= s.n_prompt || next_pos != static_cast<int64_t>(pl.size()) + 1) continue;
          pl.push_back(logprobs_of({logits.data() + (row + static_cast<size_t>(j)) * V, V},
                                   s.tokens[static_cast<size_t>(next_pos)],
                                   std::max(0, s.req->req.logprobs)));
        }
      }
      row += static_cast<size_t>(n_logits);
      if (s.n_computed == static_cast<int64_t>(s.tokens.size())) {
        sample_and_emit(s,
                        s.req->req.embedding
                            ? std::span<const float>()
                            : std::span<const float>(logits.data() + (row - 1) * V, V),
                        forks);
      }
    }
    {
      std::lock_guard lock(stats_mu);
      ++stats.steps;
      for (const Planned& p : plan) stats.computed_tokens += static_cast<uint64_t>(p.n);
    }
    // Children of n > 1 requests run (or wait, if they could not share the parent's blocks).
    for (auto& f : forks) {
      if (f->done) continue;
      if (f->n_computed > 0) {
        running.push_back(std::move(f));
      } else {
        enqueue_waiting(std::move(f));
      }
    }
  }
  // Finished sequences (their blocks are already released) leave.
  std::erase_if(running, [](const auto& s) { return s->done; });
  {
    std::lock_guard lock(stats_mu);
    stats.running = static_cast<int32_t>(running.size());
    stats.waiting = static_cast<int32_t>(waiting.size());
    stats.kv_blocks_total = blocks.n_blocks();
    stats.kv_blocks_free = blocks.n_free();
    stats.kv_blocks_used = blocks.n_referenced();
    const auto bs = blocks.stats();
    stats.prefix_hits = bs.hits;
    stats.prefix_misses = bs.misses;
  }
  return true;
}

}  // namespace maas::engine
