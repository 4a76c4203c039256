// The serving engine: turns a stream of requests into one batched forward pass per step.
//
// Requests enter a queue. Each step the scheduler gives every running sequence its next token
// (decode) and fills the rest of a per-step token budget with prompt chunks (chunked prefill),
// so a long prompt never stalls the decoders. KV memory is a pool of fixed-size blocks; full
// blocks are content-addressed (hash chain of model, cache salt and tokens) and reused by later
// requests with the same prefix. When the pool runs dry the lowest-priority, most recently
// admitted sequence is preempted (its blocks freed, its tokens recomputed later). Results are
// batch invariant: a request's tokens are the same alone or in any batch.
//
// Who goes first (engine/fair_queue.h, applied in scheduler.cpp): strict priority, then weighted
// fair share between tenants (virtual time over computed tokens), then FIFO within a tenant. A
// waiting request may preempt a running sequence of lower priority, or of a tenant holding more
// than its share of the running slots, so one tenant's flood cannot lock another out. A step
// computes the prompts of one tenant and priority only (everyone's decodes run in every step):
// the first served. A tenant ahead of another, or with more sequences than its weight's share of
// the slots (a flood), leads short steps only (see fair_prompt_chunk), so a request of another
// tenant arriving meanwhile waits little; the least served tenant within its share (alone or not)
// may fill the budget.
//
// Threading: submit() and the handles are thread-safe. The engine runs either on its own thread
// (start()) or is driven by step() from one thread (tests, tools), never both.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/sampler.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace maas::engine {

// A request the engine refuses at submission (the server's 400).
class InvalidRequest : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The wait queue is full (the server's 429): retry later.
class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class FinishReason { None, Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

struct Request {
  std::vector<int32_t> prompt;  // token ids, at least one
  SamplingParams sampling;
  std::optional<uint64_t> seed;  // none: a random seed is drawn
  int64_t max_tokens = -1;       // -1: until the context is full
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t n = 1;                 // independent samples of one prompt (sharing its KV blocks)
  int32_t logprobs = -1;         // -1: none; 0..20: the sampled token's logprob and this many top
  bool prompt_logprobs = false;  // logprobs of the prompt tokens (with `logprobs` top entries)
  std::string cache_salt;        // requests share cached prefixes only with the same salt
  int32_t priority = 0;          // higher is scheduled first and preempted last
  // Tenants share the engine by weight within a priority ("" is one anonymous tenant). The
  // latest request's weight (finite, > 0) becomes its tenant's weight.
  std::string tenant;
  double tenant_weight = 1;
  // An embedding instead of a generation: the prompt's final hidden states, mean-pooled and
  // L2-normalised, arrive in the final Output (sampling fields are ignored).
  bool embedding = false;
};

struct TokenOutput {
  int32_t token = 0;
  float logprob = 0;  // when logprobs were asked
  std::vector<TokenLogprob> top;
};

// What one choice produced since the last event.
struct Output {
  int32_t index = 0;  // choice index, < n
  std::string text;   // new text: complete UTF-8 characters, stop strings withheld
  std::vector<TokenOutput> tokens;
  FinishReason finish = FinishReason::None;
  std::string error;             // for FinishReason::Error
  std::vector<float> embedding;  // for embedding requests, in the final output
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache
  int64_t completion_tokens = 0;
};

using Clock = std::chrono::steady_clock;

// The caller's side of a request: a stream of outputs, usage and cancellation.
class RequestHandle {
 public:
  // Waits until outputs are available and moves them into `out` (appending). Returns false
  // once the request has finished and every output was taken.
  bool next(std::vector<Output>& out);
  // Like next() without waiting; returns whether anything was taken.
  bool try_next(std::vector<Output>& out);
  // Asks the engine to stop the request; it finishes with FinishReason::Cancelled within a step.
  void cancel() { cancelled_.store(true); }
  bool finished() const;
  Usage usage() const;
  // Logprobs of prompt tokens 1.. (the first has none), when the request asked for them.
  std::vector<TokenOutput> prompt_logprobs() const;
  // Called (on the engine thread, without locks held) whenever outputs arrive: for callers that
  // wait asynchronously. Set before the engine sees the request or under no concurrency.
  void set_notify(std::function<void()> fn);

  uint64_t id() const { return id_; }
  Clock::time_point submitted_at() const { return submitted_; }
  // Set when the first token of any choice was produced / when the request finished.
  std::optional<Clock::time_point> first_token_at() const;
  std::optional<Clock::time_point> scheduled_at() const;

 private:
  friend class Engine;
  void push(Output o, bool final);

  uint64_t id_ = 0;
  int32_t open_choices_ = 1;
  Clock::time_point submitted_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Output> pending_;
  bool done_ = false;
  Usage usage_;
  std::vector<TokenOutput> prompt_logprobs_;
  std::optional<Clock::time_point> first_token_, scheduled_;
  std::function<void()> notify_;
};

struct EngineConfig {
  int32_t max_running = 32;    // sequences in one batch
  int32_t token_budget = 256;  // tokens per step (decodes and prompt chunks)
  int64_t max_context = 0;     // 0: the model's training context
  size_t kv_memory = 0;  // bytes for the KV pool; 0: max_running full contexts, capped at 2 GiB
  int32_t block_size = 16;
  model::KvType kv_type = model::KvType::F16;
  bool prefix_cache = true;
  size_t max_waiting = 0;          // requests queued beyond the running ones; 0: unbounded
  int threads = 0;                 // 0: all cores
  std::string model_id = "model";  // part of every prefix-cache hash
  // Weighted fair share between tenants (admission, prompt budget, preemption to reach a fair
  // share of slots); off: priority, then FIFO. Priority preemption applies either way.
  bool fair_share = true;
  // With fair share, steps led by a tenant ahead of another active tenant, or with more sequences
  // than its weight's share of max_running (a flood; alone, more than max_running), are short, so
  // that a request of another tenant never waits long for the step in progress (the least served
  // tenant within its share may use the whole token_budget). A short step's prompt tokens are
  // what fits with its decodes in fair_step_ms at the measured time per token (0: no time
  // target), but at least fair_prompt_chunk (0: no short steps).
  int32_t fair_prompt_chunk = 32;
  double fair_step_ms = 100;
};

struct EngineStats {
  int32_t running = 0, waiting = 0;
  int32_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_free = 0;
  uint64_t steps = 0, preemptions = 0;
  uint64_t prompt_tokens = 0, cached_tokens = 0, computed_tokens = 0, generated_tokens = 0;
  // Of computed_tokens: those of sequences with one position left (decodes, and a prompt's last
  // token when it comes alone); the rest is prompt chunks, recomputation after a preemption
  // included.
  uint64_t decode_tokens = 0;
  uint64_t prefix_hits = 0, prefix_misses = 0;  // block lookups
  // Of `preemptions`: to admit a waiting request of higher priority / of an under-served tenant.
  uint64_t priority_preemptions = 0, fair_preemptions = 0;
  int32_t active_tenants = 0;  // tenants with running or waiting requests
};

class Engine {
 public:
  // The model and tokenizer must outlive the engine. Throws model::Error if the KV pool cannot
  // hold even one full context.
  Engine(const model::Model& model, const tokenizer::Tokenizer& tok, EngineConfig config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request. Throws InvalidRequest (bad parameters, a prompt or
  // max_tokens beyond the context, a request the KV pool could never hold) or QueueFull.
  std::shared_ptr<RequestHandle> submit(Request req);

  // Runs one scheduling step on the calling thread. Returns false if there was nothing to do.
  bool step();
  // Runs steps on a background thread until stop() (or destruction); stop() cancels nothing:
  // call it when no request is in flight, or cancel them first.
  void start();
  void stop();

  // The KV block pool an engine with this config allocates for a model (blocks of
  // config.block_size tokens), before constructing one: what a memory budget must count.
  struct KvPool {
    int64_t blocks = 0;
    size_t bytes_per_block = 0;
    uint64_t bytes() const { return static_cast<uint64_t>(blocks) * bytes_per_block; }
  };
  static KvPool kv_pool(const model::HParams& hp, const EngineConfig& config);

  EngineStats stats() const;
  const EngineConfig& config() const { return config_; }
  int64_t max_context() const { return max_context_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  EngineConfig config_;
  int64_t max_context_ = 0;
};

}  // namespace maas::engine
