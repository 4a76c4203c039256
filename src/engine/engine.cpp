// The engine's step: runs the batch the scheduler (scheduler.cpp) planned, keeps the KV block
// tables and the prefix cache, and turns sampled tokens into outputs (text deltas, stop strings,
// finish reasons).
#include "engine/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "engine/engine_internal.h"

namespace maas::engine {

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

}  // namespace

// ---- Engine --------------------------------------------------------------------------------

Engine::KvPool Engine::kv_pool(const model::HParams& hp, const EngineConfig& c) {
  KvPool pool;
  const int64_t max_context = c.max_context > 0 ? c.max_context : hp.n_ctx_train;
  if (max_context <= 0 || c.block_size <= 0 || c.max_running <= 0) return pool;
  pool.bytes_per_block = model::KvCache::bytes_per_block(hp, c.block_size, c.kv_type);
  if (pool.bytes_per_block == 0) return pool;
  const int64_t blocks_per_context = (max_context + c.block_size - 1) / c.block_size;
  int64_t n = 0;
  if (c.kv_memory > 0) {
    n = static_cast<int64_t>(c.kv_memory / pool.bytes_per_block);
  } else {
    // Room for max_running full contexts, at most 2 GiB.
    n = std::min<int64_t>(blocks_per_context * c.max_running,
                          static_cast<int64_t>((size_t{2} << 30) / pool.bytes_per_block));
  }
  pool.blocks = std::min<int64_t>(n, INT32_MAX / 2);
  return pool;
}

Engine::Engine(const model::Model& model, const tokenizer::Tokenizer& tok, EngineConfig config)
    : config_(std::move(config)) {
  const model::HParams& hp = model.hparams();
  max_context_ = config_.max_context > 0 ? config_.max_context : hp.n_ctx_train;
  if (max_context_ <= 0) throw model::Error("engine: the model declares no context size");
  if (config_.block_size <= 0 || config_.max_running <= 0 || config_.token_budget <= 0) {
    throw model::Error("engine: block size, max running sequences and token budget must be > 0");
  }
  if (config_.fair_prompt_chunk < 0 || !(config_.fair_step_ms >= 0) ||
      !std::isfinite(config_.fair_step_ms)) {
    throw model::Error("engine: the fair prompt chunk and step time must be >= 0 (0: no limit)");
  }
  const KvPool pool = kv_pool(hp, config_);
  const int64_t blocks_per_context = (max_context_ + config_.block_size - 1) / config_.block_size;
  if (pool.blocks < blocks_per_context) {
    throw model::Error(fmt::format(
        "engine: KV memory for {} blocks ({} bytes each) cannot hold one context of {} tokens; "
        "raise the KV memory or lower the context size",
        pool.blocks, pool.bytes_per_block, max_context_));
  }
  const int64_t n_blocks = pool.blocks;
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
  if (!std::isfinite(req.tenant_weight) || req.tenant_weight <= 0) {
    throw InvalidRequest("the tenant's weight must be a finite number > 0");
  }
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

void Engine::Impl::release_blocks(Sequence& seq) {
  for (int32_t b : seq.blocks) blocks.release(b);
  seq.blocks.clear();
  seq.n_computed = 0;
  seq.n_published = 0;
}

void Engine::Impl::preempt(Sequence& seq) {
  release_blocks(seq);
  fair.on_preempted(seq.req->req.tenant);
  std::lock_guard lock(stats_mu);
  ++stats.preemptions;
}

uint64_t Engine::Impl::block_parent(const Sequence& seq, int64_t i, uint64_t parent) const {
  const int64_t bs = config.block_size;
  const int64_t n_prompt = std::clamp<int64_t>(seq.n_prompt - i * bs, 0, bs);
  if (!kinds_differ || n_prompt == bs) return parent;
  const int32_t marker = static_cast<int32_t>(-1 - n_prompt);  // token ids are never negative
  return BlockManager::chain_hash(parent, std::span<const int32_t>(&marker, 1));
}

void Engine::Impl::publish_full_blocks(Sequence& seq) {
  const int64_t bs = config.block_size;
  const int64_t full = seq.n_computed / bs;
  for (int64_t i = seq.n_published; i < full; ++i) {
    const uint64_t parent =
        block_parent(seq, i, i == 0 ? seq.req->root_hash : seq.hashes[static_cast<size_t>(i - 1)]);
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
    for (auto& s : inbox) {
      fair.set_weight(s->req->req.tenant, s->req->req.tenant_weight);
      enqueue_waiting(std::move(s));
    }
    inbox.clear();
  }
  // Cancellations, before any work is planned. Callers cancel concurrently: the flag is read once
  // per sequence, and what was finished leaves (a second read could drop one unfinished).
  auto done = [](const std::unique_ptr<Sequence>& s) { return s->done; };
  for (auto& s : running) {
    if (s->req->handle->cancelled_.load()) finish(*s, FinishReason::Cancelled, {});
  }
  std::erase_if(running, done);
  for (auto& s : waiting) {
    if (s->req->handle->cancelled_.load()) finish(*s, FinishReason::Cancelled, {});
  }
  std::erase_if(waiting, done);
  if (running.empty() && waiting.empty()) {
    fair.begin_step({}, {});  // every tenant is idle now
    publish_stats();
    return false;
  }

  const auto started = Clock::now();
  StepPlan sp = schedule();
  std::vector<Planned>& plan = sp.chunks;

  if (!plan.empty()) {
    std::vector<model::SeqChunk> batch;
    batch.reserve(plan.size());
    uint64_t decodes = 0;  // sequences with one position left (as the scheduler sees them)
    for (const Planned& p : plan) {
      decodes += p.seq->n_computed + 1 == static_cast<int64_t>(p.seq->tokens.size()) ? 1 : 0;
      model::SeqChunk c;
      c.tokens = std::span<const int32_t>(p.seq->tokens.data() + p.seq->n_computed,
                                          static_cast<size_t>(p.n));
      c.pos0 = p.seq->n_computed;
      c.block_table = p.seq->blocks;
      c.n_prompt = std::clamp<int64_t>(p.seq->n_prompt - p.seq->n_computed, 0, p.n);
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
      stats.decode_tokens += decodes;
    }
    int64_t rows = 0;
    for (const Planned& p : plan) {
      fair.charge(p.seq->req->req.tenant, p.n);
      rows += p.n;
    }
    measure_step(Clock::now() - started, rows);
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
  publish_stats();
  return true;
}

void Engine::Impl::publish_stats() {
  std::lock_guard lock(stats_mu);
  stats.running = static_cast<int32_t>(running.size());
  stats.waiting = static_cast<int32_t>(waiting.size());
  stats.kv_blocks_total = blocks.n_blocks();
  stats.kv_blocks_free = blocks.n_free();
  stats.kv_blocks_used = blocks.n_referenced();
  const auto bs = blocks.stats();
  stats.prefix_hits = bs.hits;
  stats.prefix_misses = bs.misses;
  stats.active_tenants = fair.active_tenants();
}

}  // namespace maas::engine
