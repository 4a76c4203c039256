// The scheduler's side of a step: which sequences run and with how many tokens. Policy (who
// goes first) is FairQueue's; this file applies it to slots, KV blocks and the token budget.
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/engine_internal.h"

namespace maas::engine {

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

bool Engine::Impl::fits(const Sequence& seq, int64_t n_positions) const {
  const int64_t bs = config.block_size;
  const auto need = static_cast<size_t>((n_positions + bs - 1) / bs);
  return need <= seq.blocks.size() + static_cast<size_t>(blocks.n_free());
}

bool Engine::Impl::try_allocate(Sequence& seq, int64_t n_positions) {
  const int64_t bs = config.block_size;
  const auto need = static_cast<size_t>((n_positions + bs - 1) / bs);
  if (need <= seq.blocks.size()) return true;
  if (static_cast<size_t>(blocks.n_free()) < need - seq.blocks.size()) return false;
  while (seq.blocks.size() < need) seq.blocks.push_back(*blocks.allocate());
  return true;
}

// Gives seq blocks for n_positions, preempting sequences of `unplanned` (all after seq in
// service order) in eviction order while the pool is short; when seq itself comes first in that
// order (or none is left), seq is preempted and false returned.
bool Engine::Impl::ensure_blocks(Sequence& seq, int64_t n_positions,
                                 std::vector<Sequence*>& unplanned,
                                 std::vector<Sequence*>& preempted) {
  while (!try_allocate(seq, n_positions)) {
    auto victim = unplanned.begin();
    for (auto it = unplanned.begin(); it != unplanned.end(); ++it) {
      if (fair.evicts_before(item(**it), item(**victim))) victim = it;
    }
    Sequence* v = &seq;
    if (victim != unplanned.end() && !fair.evicts_before(item(seq), item(**victim))) {
      v = *victim;
      unplanned.erase(victim);
    }
    preempt(*v);
    preempted.push_back(v);
    if (v == &seq) return false;
  }
  return true;
}

// The waiting sequence the policy admits next (without fair share, the queue's order is it).
size_t Engine::Impl::next_waiting() {
  return fair.fair_share() ? fair.pick_next(items_of(waiting)) : 0;
}

void Engine::Impl::admit(Sequence& s) {
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
  fair.on_admitted(s.req->req.tenant);
}

// Preempts the running sequence the policy names so that `waiter` can start, taking it out of
// this step's plan (nothing has run yet) and giving its budget back. Sequences admitted in this
// step (admit_order >= admitted_from) are never victims. Returns false if there is none.
bool Engine::Impl::make_room(const Sequence& waiter, uint64_t admitted_from, StepPlan& sp) {
  std::vector<SchedItem> items;
  std::vector<size_t> at;  // position in `running` of each candidate
  for (size_t i = 0; i < running.size(); ++i) {
    if (running[i]->admit_order >= admitted_from) continue;
    items.push_back(item(*running[i]));
    at.push_back(i);
  }
  const auto victim = fair.victim_for(item(waiter), items);
  if (!victim) return false;
  const auto it = running.begin() + static_cast<std::ptrdiff_t>(at[*victim]);
  Sequence& v = **it;
  const bool by_priority = v.req->req.priority < waiter.req->req.priority;
  const auto p = std::find_if(sp.chunks.begin(), sp.chunks.end(),
                              [&](const Planned& q) { return q.seq == &v; });
  if (p != sp.chunks.end()) {
    sp.budget += p->n;
    sp.chunks.erase(p);
  }
  std::erase(sp.deferred, &v);
  preempt(v);
  {
    std::lock_guard lock(stats_mu);
    ++(by_priority ? stats.priority_preemptions : stats.fair_preemptions);
  }
  std::unique_ptr<Sequence> owned = std::move(*it);
  running.erase(it);
  enqueue_waiting(std::move(owned));
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
    const uint64_t key_parent = block_parent(seq, i, parent);
    auto hit = blocks.lookup(key_parent, toks);
    if (!hit) break;
    seq.blocks.push_back(*hit);
    parent = BlockManager::chain_hash(key_parent, toks);
    if (seq.hashes.size() <= static_cast<size_t>(i)) seq.hashes.push_back(parent);
  }
  seq.n_computed = static_cast<int64_t>(seq.blocks.size()) * bs;
}

// Gives the first deferred prompt its chunk of what is left of the budget if it may share the
// step with the leading prompts (or leads) and its blocks are free; else it waits a step.
void Engine::Impl::plan_deferred(StepPlan& sp) {
  Sequence& s = *sp.deferred.front();
  sp.deferred.erase(sp.deferred.begin());
  if (sp.lead && !fair.same_class(*sp.lead, item(s))) return;
  const int64_t n = std::min(
      {static_cast<int64_t>(s.tokens.size()) - s.n_computed, sp.budget, prompt_room(sp, s)});
  if (n <= 0 || !try_allocate(s, s.n_computed + n)) return;
  take_prompt(sp, s, n);
  sp.chunks.push_back({&s, n});
  sp.budget -= n;
}

// The prompt tokens of a short step: what fits with the step's decodes in fair_step_ms at the
// measured time per token, but at least fair_prompt_chunk. Where compute dominates (large models
// on CPUs) that is the chunk, a prompt token costing about the same in a short step as in a long
// one; where a step's fixed costs dominate (small models, fast kernels), steps that are short in
// time carry more tokens, so the flooding tenant does not pay those costs over and over.
int64_t Engine::Impl::short_step_chunk(const StepPlan& sp) const {
  int64_t chunk = config.fair_prompt_chunk;
  if (config.fair_step_ms > 0 && seconds_per_row > 0) {
    const double rows =
        config.fair_step_ms / 1000 / seconds_per_row - static_cast<double>(sp.decodes);
    if (rows >= config.token_budget) return config.token_budget;
    chunk = std::max(chunk, static_cast<int64_t>(rows));
  }
  return chunk;
}

// Prompt tokens s may take in this step if its class leads it (or will): its tenant's share of
// the budget, and no more than a short step's chunk when the policy wants the step short (its
// tenant is ahead of another, or floods the engine). A request of another tenant that arrives
// during the step then waits for a short step only.
int64_t Engine::Impl::prompt_room(const StepPlan& sp, const Sequence& s) const {
  if (sp.lead) return sp.prompt_left;
  const std::string_view tenant = s.req->req.tenant;
  const double share = fair.prompt_share(tenant);
  int64_t room =
      std::max<int64_t>(1, std::llround(static_cast<double>(config.token_budget) * share));
  if (config.fair_prompt_chunk > 0 && fair.short_steps(tenant, config.max_running)) {
    room = std::min(room, short_step_chunk(sp));
  }
  return room;
}

// Steps of a few tokens are bound by reading the weights, not by their tokens: only larger ones
// tell the time per token.
void Engine::Impl::measure_step(Clock::duration took, int64_t rows) {
  if (rows < 16) return;
  const double x = std::chrono::duration<double>(took).count() / static_cast<double>(rows);
  seconds_per_row = seconds_per_row > 0 ? 0.8 * seconds_per_row + 0.2 * x : x;
}

void Engine::Impl::take_prompt(StepPlan& sp, const Sequence& s, int64_t n) {
  sp.prompt_left = prompt_room(sp, s) - n;
  if (!sp.lead) sp.lead = item(s);
}

Engine::Impl::StepPlan Engine::Impl::schedule() {
  fair.begin_step(items_of(running), items_of(waiting));
  // Running sequences in the order they are served: priority, then (fair share) the tenant's
  // service so far, then admission.
  std::stable_sort(running.begin(), running.end(), [&](const auto& a, const auto& b) {
    return fair.serves_before(item(*a), item(*b));
  });
  StepPlan sp;
  sp.budget = config.token_budget;
  std::vector<Sequence*> unplanned, preempted;
  for (auto& s : running) unplanned.push_back(s.get());
  // A waiting sequence is served after every running one of its tenant and priority.
  auto waiting_item = [](const Sequence& s) {
    SchedItem i = item(s);
    i.admit_order = std::numeric_limits<uint64_t>::max();
    return i;
  };
  // A step computes the prompts of one class (tenant and priority; with fair share off, priority)
  // besides everyone's decodes: the first served that has a prompt chunk to compute, running or
  // waiting. The others wait a step rather than fill this one: a step's time grows with its
  // tokens (compute-bound prompts on CPUs gain little from sharing a step), and the leading
  // prompts are the first tokens of the request served first. Prompts served after the next
  // waiting sequence are deferred until it is known whether that one gets in.
  std::optional<SchedItem> next_in;
  if (!waiting.empty()) next_in = waiting_item(*waiting[next_waiting()]);
  // In that order, each decoding sequence gets one token and each prompt a chunk of what is left
  // of the budget after the decodes still to come, so prompts never starve decoders.
  int64_t decodes_left = 0;
  for (auto& s : running) {
    decodes_left += static_cast<int64_t>(s->tokens.size()) - s->n_computed == 1 ? 1 : 0;
  }
  sp.decodes = decodes_left;
  std::vector<Sequence*> order;
  for (auto& s : running) order.push_back(s.get());
  for (Sequence* s : order) {
    if (std::find(preempted.begin(), preempted.end(), s) != preempted.end()) continue;
    std::erase(unplanned, s);
    const int64_t remaining = static_cast<int64_t>(s->tokens.size()) - s->n_computed;
    int64_t n = 0;
    if (remaining == 1) {
      --decodes_left;
      n = sp.budget > 0 ? 1 : 0;
    } else if (sp.lead ? !fair.same_class(*sp.lead, item(*s))
                       : next_in && fair.serves_before(*next_in, item(*s))) {
      sp.deferred.push_back(s);
      continue;
    } else {
      n = std::min({remaining, sp.budget - decodes_left, prompt_room(sp, *s)});
    }
    if (n <= 0) continue;
    if (!ensure_blocks(*s, s->n_computed + n, unplanned, preempted)) continue;
    if (remaining > 1) take_prompt(sp, *s, n);
    sp.chunks.push_back({s, n});
    sp.budget -= n;
  }
  // Preempted sequences go back to the queue.
  for (Sequence* p : preempted) {
    std::erase(sp.deferred, p);
    auto it =
        std::find_if(running.begin(), running.end(), [&](const auto& s) { return s.get() == p; });
    std::unique_ptr<Sequence> owned = std::move(*it);
    running.erase(it);
    enqueue_waiting(std::move(owned));
  }
  // Admission of waiting sequences in the policy's order while there is room and budget (not in
  // a step that had to preempt for memory), merged with the deferred prompts in service order.
  // Without a slot or KV blocks, the next in line may take the place of a sequence of lower
  // priority or of a tenant above its share; else it waits (no overtaking, so a large request is
  // not starved by small ones).
  const uint64_t admitted_from = next_admit;
  while (preempted.empty() && !waiting.empty() && sp.budget > 0) {
    const auto at = waiting.begin() + static_cast<std::ptrdiff_t>(next_waiting());
    Sequence& s = **at;
    if (!sp.deferred.empty() && !fair.serves_before(waiting_item(s), item(*sp.deferred.front()))) {
      plan_deferred(sp);
      continue;
    }
    // Of another class than the leading prompts, it takes its slot now and computes its prompt in
    // a later step; the pool must have the blocks for a first chunk all the same.
    const bool chunk = (!sp.lead || fair.same_class(*sp.lead, item(s))) && prompt_room(sp, s) > 0;
    if (static_cast<int32_t>(running.size()) < config.max_running) {
      if (config.prefix_cache && !s.req->req.prompt_logprobs && !s.req->req.embedding) {
        lookup_prefix(s);
      }
      const int64_t first = std::min({static_cast<int64_t>(s.tokens.size()) - s.n_computed,
                                      sp.budget, chunk ? prompt_room(sp, s) : sp.budget});
      if (chunk ? try_allocate(s, s.n_computed + first) : fits(s, s.n_computed + first)) {
        if (chunk) take_prompt(sp, s, first);
        admit(s);
        if (chunk) sp.chunks.push_back({&s, first});
        sp.budget -= chunk ? first : 0;
        running.push_back(std::move(*at));
        waiting.erase(at);
        continue;
      }
      release_blocks(s);
    }
    // Making room lowers only the victim's tenant's load: the same waiter comes next.
    if (!make_room(s, admitted_from, sp)) break;
  }
  while (!sp.deferred.empty() && sp.budget > 0) plan_deferred(sp);
  return sp;
}

}  // namespace maas::engine
