// The engine's internals, shared by engine.cpp (the step, outputs, block bookkeeping) and
// scheduler.cpp (admission, preemption, the step's token budget). Not a public header.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/fair_queue.h"
#include "engine/kv_blocks.h"
#include "engine/stop_matcher.h"
#include "tensor/thread_pool.h"

namespace maas::engine {

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
  std::vector<double> embedding_sum;  // embedding requests: sum of the final hidden states
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

struct Engine::Impl {
  Impl(const model::Model& m, const tokenizer::Tokenizer& t, const EngineConfig& c,
       int32_t n_blocks)
      : model(m),
        tok(t),
        config(c),
        pool(c.threads),
        cache(m.hparams(), n_blocks, c.block_size, c.kv_type),
        runner(m, cache, &pool),
        blocks(n_blocks, c.block_size),
        fair(c.fair_share),
        kinds_differ(m.prompt_arithmetic_differs()) {}

  const model::Model& model;
  const tokenizer::Tokenizer& tok;
  EngineConfig config;
  int64_t max_context = 0;
  tensor::ThreadPool pool;
  model::KvCache cache;
  model::BatchRunner runner;
  BlockManager blocks;
  FairQueue fair;
  // Whether prompt and generated tokens get different arithmetic (see block_parent).
  bool kinds_differ = false;

  std::mutex inbox_mu;
  std::condition_variable inbox_cv;
  std::vector<std::unique_ptr<Sequence>> inbox;
  std::deque<std::unique_ptr<Sequence>> waiting;
  std::vector<float> hidden;  // final hidden states of a step with embedding requests
  std::vector<std::unique_ptr<Sequence>> running;
  uint64_t next_admit = 0;
  double seconds_per_row = 0;  // a step's time per token computed, measured; 0 until known
  std::mt19937_64 seed_rng{std::random_device{}()};

  mutable std::mutex stats_mu;
  EngineStats stats;

  std::thread loop;
  std::atomic<bool> stopping{false};

  struct Planned {
    Sequence* seq;
    int64_t n;
  };
  // The work of one step as the scheduler plans it.
  struct StepPlan {
    std::vector<Planned> chunks;
    std::vector<Sequence*> deferred;  // running prompts planned after the admissions
    int64_t budget = 0;               // tokens left
    std::optional<SchedItem> lead;    // the class whose prompts this step computes
    int64_t prompt_left = 0;          // prompt tokens the lead may still take (once it is set)
    int64_t decodes = 0;              // decoding sequences as the step is planned
  };

  // engine.cpp: the step, outputs, block bookkeeping.
  bool step();
  void publish_stats();
  static SchedItem item(const Sequence& s) {
    return {s.req->req.tenant, s.req->req.priority, s.admit_order};
  }
  template <class Seqs>
  static std::vector<SchedItem> items_of(const Seqs& seqs) {
    std::vector<SchedItem> out;
    for (const auto& s : seqs) out.push_back(item(*s));
    return out;
  }
  void publish_full_blocks(Sequence& seq);
  // The parent hash block i of seq (whose chain so far ends in `parent`) is published and
  // looked up under. When prompt and generated tokens get different arithmetic
  // (model::Model::prompt_arithmetic_differs), a block holding generated tokens is another entry
  // than the same tokens computed as a prompt, so its count of prompt tokens goes into the key.
  uint64_t block_parent(const Sequence& seq, int64_t i, uint64_t parent) const;
  void release_blocks(Sequence& seq);
  void preempt(Sequence& seq);
  void sample_and_emit(Sequence& seq, std::span<const float> logits,
                       std::vector<std::unique_ptr<Sequence>>& forks);
  void fork_children(Sequence& parent, std::span<const float> logits,
                     std::vector<std::unique_ptr<Sequence>>& forks);
  void finish(Sequence& seq, FinishReason reason, Output out);
  void emit(Sequence& seq, Output out);
  void init_choice(Sequence& seq);

  // scheduler.cpp: who runs in this step and with how many tokens.
  StepPlan schedule();
  void enqueue_waiting(std::unique_ptr<Sequence> seq);
  size_t next_waiting();
  void admit(Sequence& s);
  void plan_deferred(StepPlan& sp);
  int64_t prompt_room(const StepPlan& sp, const Sequence& s) const;
  int64_t short_step_chunk(const StepPlan& sp) const;
  void measure_step(Clock::duration took, int64_t rows);
  void take_prompt(StepPlan& sp, const Sequence& s, int64_t n);
  bool make_room(const Sequence& waiter, uint64_t admitted_from, StepPlan& sp);
  bool ensure_blocks(Sequence& seq, int64_t n_positions, std::vector<Sequence*>& unplanned,
                     std::vector<Sequence*>& preempted);
  bool fits(const Sequence& seq, int64_t n_positions) const;  // free blocks suffice
  bool try_allocate(Sequence& seq, int64_t n_positions);
  void lookup_prefix(Sequence& seq);
};

}  // namespace maas::engine
