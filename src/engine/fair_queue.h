// The scheduling policy between tenants and priority classes, apart from the engine's mechanics.
//
// Strict priority comes first: a waiting request is admitted before any of lower priority, and
// may preempt a running sequence of lower priority. Within one priority, tenants share the engine
// by weight (weighted fair queueing on virtual time): each tenant's service is the tokens computed
// for it (prompt and generated) divided by its weight, and the next admission goes to the tenant
// with the least service. A tenant that becomes active again starts at the virtual clock (the
// least service among active tenants), so idling banks no credit. Within a tenant the engine's
// wait queue order holds: FIFO, a preempted sequence first.
//
// Slots (max_running) turn over only as requests finish, so a tenant that filled them would hold
// them for long; a waiting request of another tenant therefore preempts a sequence of the tenant
// most above its share, when that leaves the victim's tenant still at least as well served per
// weight as the waiter's: (running_victim - 1) / w_victim >= (running_waiter + 1) / w_waiter.
// That swap can never be undone by the reverse swap, so sequences do not thrash.
//
// The same order decides whose prompts a step computes (one tenant and priority per step, the
// decodes of all aside). Steps led by a tenant ahead of another, or by a tenant with more
// sequences than its weight's share of the slots (a flood, alone or not), are kept short: a
// request of another tenant, arriving meanwhile, then waits little for the step in progress
// before its own prompts run, in a step of their own. The flooding tenant loses little, since its
// requests queue for slots anyway and a prompt token costs about the same in a short step.
//
// With fair_share off, tenants are ignored (plain priority, then FIFO); service is still tracked.
// Not thread-safe: the engine's step owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace maas::engine {

// What the policy sees of a sequence.
struct SchedItem {
  std::string_view tenant;   // "" is the anonymous tenant
  int32_t priority = 0;      // higher first
  uint64_t admit_order = 0;  // running sequences: when admitted (larger is more recent)
};

class FairQueue {
 public:
  explicit FairQueue(bool fair_share) : fair_share_(fair_share) {}

  bool fair_share() const { return fair_share_; }

  // The latest request's weight becomes its tenant's weight. Throws std::invalid_argument
  // unless weight is finite and > 0.
  void set_weight(std::string_view tenant, double weight);

  // At the start of a step, the tenants of the running and waiting sequences: recounts running
  // sequences, lifts tenants that became active to the virtual clock, advances the clock and
  // forgets idle tenants that would be lifted anyway (so memory follows the active tenants).
  void begin_step(std::span<const SchedItem> running, std::span<const SchedItem> waiting);
  // Moves within a step (counts of running and waiting sequences per tenant).
  void on_admitted(std::string_view tenant);
  void on_preempted(std::string_view tenant);
  // Tokens computed for the tenant (prompt chunks and decodes).
  void charge(std::string_view tenant, int64_t tokens);

  // Position in `waiting` (sorted by priority, then queue order) of the sequence to admit next:
  // the highest priority; among its tenants, the least service, then the fewest running
  // sequences per weight; within the tenant, the first in queue order. Requires a non-empty span.
  size_t pick_next(std::span<const SchedItem> waiting) const;
  // Order of sequences for the step's token budget: priority, then service, then running
  // sequences per weight, then admission (waiting sequences count as admitted last).
  bool serves_before(const SchedItem& a, const SchedItem& b) const;
  // The part of a step's prompt budget a tenant's prompts may take when they lead the step: all
  // of it for the least served tenant (at the virtual clock), or without fair share; else its
  // weight's share among the active tenants. Steps led by tenants ahead are thus shorter, and a
  // request of a tenant behind, arriving during one, waits less for its first token.
  double prompt_share(std::string_view tenant) const;
  // Whether the steps the tenant's prompts lead are to be short (the engine's fair prompt chunk):
  // it is ahead of the least served active tenant, or it has more sequences (running and waiting)
  // than its weight's share of `slots` among the active tenants (alone: more than all of them).
  // So the least served tenant within its share, alone or not, keeps full steps. Never without
  // fair share.
  bool short_steps(std::string_view tenant, int32_t slots) const;
  // Whether the prompts of a and b may share a step: the same priority and (fair share) tenant.
  bool same_class(const SchedItem& a, const SchedItem& b) const {
    return a.priority == b.priority && (!fair_share_ || a.tenant == b.tenant);
  }
  // Order in which running sequences are preempted when KV memory runs short: lowest priority,
  // then the tenant most above its share (running per weight, then service), then the most
  // recently admitted.
  bool evicts_before(const SchedItem& a, const SchedItem& b) const;
  // A running sequence to preempt so that `waiter` can start (slots or KV memory are short):
  // the first in eviction order among those of lower priority, or, with fair share, of equal
  // priority and another tenant when the swap keeps the victim's tenant at least as well served
  // (see above). Never one of higher priority. Returns its position in `running`.
  std::optional<size_t> victim_for(const SchedItem& waiter,
                                   std::span<const SchedItem> running) const;

  double service(std::string_view tenant) const;  // tokens / weight so far; 0 if unknown
  double weight(std::string_view tenant) const;   // 1 if unknown
  int32_t running(std::string_view tenant) const;
  double virtual_clock() const { return clock_; }
  int32_t active_tenants() const { return active_; }
  size_t known_tenants() const { return tenants_.size(); }

 private:
  struct Tenant {
    double weight = 1;
    double service = 0;
    int32_t running = 0;
    int32_t waiting = 0;
    bool active = false;  // had running or waiting sequences at the last begin_step
  };
  Tenant& get(std::string_view tenant);
  const Tenant* find(std::string_view tenant) const;
  double load(std::string_view tenant) const;  // running / weight

  bool fair_share_;
  std::map<std::string, Tenant, std::less<>> tenants_;
  double clock_ = 0;
  double active_weight_ = 0;  // sum over the active tenants
  int32_t active_ = 0;
};

}  // namespace maas::engine
