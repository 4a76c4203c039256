// The fair-share policy on its own: virtual time, the admission order, the eviction order and
// the choice of a victim for a waiting request, against hand-computed answers and a brute-force
// simulation of slot hand-overs.
#include "engine/fair_queue.h"

#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace maas::test {
namespace {

using engine::FairQueue;
using engine::SchedItem;

SchedItem item(std::string_view tenant, int32_t priority = 0, uint64_t admit = 0) {
  return {tenant, priority, admit};
}

TEST(FairQueue, ServiceIsTokensOverWeight) {
  FairQueue q(true);
  q.set_weight("a", 3);
  q.set_weight("b", 1);
  const std::vector<SchedItem> running = {item("a"), item("b")};
  q.begin_step(running, {});
  q.charge("a", 30);
  q.charge("b", 10);
  q.charge("a", 6);
  EXPECT_DOUBLE_EQ(q.service("a"), 12.0);  // 36 / 3
  EXPECT_DOUBLE_EQ(q.service("b"), 10.0);
  EXPECT_EQ(q.running("a"), 1);
  EXPECT_EQ(q.active_tenants(), 2);
  // The latest weight counts from then on; earlier service stays.
  q.set_weight("a", 0.5);
  q.charge("a", 1);
  EXPECT_DOUBLE_EQ(q.service("a"), 14.0);
  EXPECT_THROW(q.set_weight("a", 0), std::invalid_argument);
  EXPECT_THROW(q.set_weight("a", -1), std::invalid_argument);
  EXPECT_THROW(q.set_weight("a", std::numeric_limits<double>::quiet_NaN()), std::invalid_argument);
  EXPECT_THROW(q.set_weight("a", std::numeric_limits<double>::infinity()), std::invalid_argument);
}

// A tenant that was idle restarts at the least service of the active tenants; one that was
// ahead when it left keeps its lead.
TEST(FairQueue, IdleTenantsBankNoCredit) {
  FairQueue q(true);
  const std::vector<SchedItem> ab = {item("a"), item("b")}, a = {item("a")};
  q.begin_step(ab, {});
  q.charge("a", 100);
  q.charge("b", 40);
  q.begin_step(ab, {});
  EXPECT_DOUBLE_EQ(q.virtual_clock(), 40.0);
  q.begin_step(a, {});  // b is idle, and behind the clock: forgotten
  EXPECT_DOUBLE_EQ(q.virtual_clock(), 100.0);
  EXPECT_EQ(q.known_tenants(), 1u);
  EXPECT_EQ(q.active_tenants(), 1);
  q.charge("a", 400);
  q.begin_step(a, {});
  const std::vector<SchedItem> waiting_b = {item("b")};
  q.begin_step(a, waiting_b);  // b returns (waiting counts as active)
  EXPECT_DOUBLE_EQ(q.service("b"), 500.0);
  EXPECT_EQ(q.active_tenants(), 2);

  // c gets ahead of the clock, leaves, comes back: it keeps its service.
  const std::vector<SchedItem> abc = {item("a"), item("b"), item("c")};
  q.begin_step(abc, {});
  q.charge("c", 2000);  // c at 2500, a and b at 500
  q.begin_step(ab, {});
  EXPECT_EQ(q.known_tenants(), 3u);  // c is remembered: it is ahead of the clock
  q.charge("a", 100);
  q.charge("b", 100);
  q.begin_step(abc, {});
  EXPECT_DOUBLE_EQ(q.service("c"), 2500.0);
  EXPECT_DOUBLE_EQ(q.virtual_clock(), 600.0);
  // When every tenant is idle, the ones behind the clock are forgotten, so memory follows the
  // active tenants.
  q.begin_step({}, {});
  EXPECT_EQ(q.known_tenants(), 1u);
  EXPECT_EQ(q.active_tenants(), 0);
}

// The least served tenant's prompts may take a whole step; a tenant ahead of it its weight's
// share of the active tenants' weights.
TEST(FairQueue, PromptShareOfAStep) {
  FairQueue q(true);
  q.set_weight("a", 1);
  q.set_weight("b", 3);
  const std::vector<SchedItem> running = {item("a"), item("b"), item("b")};
  q.begin_step(running, {});
  EXPECT_DOUBLE_EQ(q.prompt_share("a"), 1.0);  // both at the clock
  EXPECT_DOUBLE_EQ(q.prompt_share("b"), 1.0);
  q.charge("a", 100);
  q.begin_step(running, {});
  EXPECT_DOUBLE_EQ(q.prompt_share("a"), 0.25);
  EXPECT_DOUBLE_EQ(q.prompt_share("b"), 1.0);
  q.charge("b", 600);  // b at 200, a at 100
  q.begin_step(running, {});
  EXPECT_DOUBLE_EQ(q.prompt_share("a"), 1.0);
  EXPECT_DOUBLE_EQ(q.prompt_share("b"), 0.75);
  // Alone, a tenant is the clock.
  q.begin_step(std::vector<SchedItem>{item("b")}, {});
  EXPECT_DOUBLE_EQ(q.prompt_share("b"), 1.0);
  FairQueue fifo(false);
  fifo.begin_step(running, {});
  fifo.charge("a", 100);
  fifo.begin_step(running, {});
  EXPECT_DOUBLE_EQ(fifo.prompt_share("a"), 1.0);
}

// Short steps for a tenant ahead of another, or with more sequences than its weight's share of
// the slots; full ones for the least served within its share, alone or not; never for FIFO.
TEST(FairQueue, ShortStepsForTenantsAheadAndFloods) {
  FairQueue q(true);
  const std::vector<SchedItem> a3(3, item("a")), a4(4, item("a"));
  q.begin_step(a3, {});  // alone with 3 sequences: a flood with 2 slots, not with 3
  EXPECT_TRUE(q.short_steps("a", 2));
  EXPECT_FALSE(q.short_steps("a", 3));
  q.begin_step(a3, a3);  // 6 sequences, 3 of them waiting
  EXPECT_TRUE(q.short_steps("a", 5));
  EXPECT_FALSE(q.short_steps("a", 6));
  // Admissions and preemptions within a step move sequences between running and waiting.
  q.on_admitted("a");
  EXPECT_EQ(q.running("a"), 4);
  EXPECT_FALSE(q.short_steps("a", 6));
  q.on_preempted("a");
  q.on_preempted("a");
  EXPECT_EQ(q.running("a"), 2);
  EXPECT_FALSE(q.short_steps("a", 6));
  EXPECT_TRUE(q.short_steps("a", 5));
  q.charge("a", 50);
  // b returns level with a (at the clock): of 8 slots each may hold 4.
  std::vector<SchedItem> running = a4;
  const std::vector<SchedItem> b1 = {item("b")};
  q.begin_step(running, b1);
  EXPECT_FALSE(q.short_steps("a", 8));
  EXPECT_TRUE(q.short_steps("a", 7));  // 4 > 3.5
  EXPECT_FALSE(q.short_steps("b", 2));
  q.charge("b", 10);  // b ahead by 10, within its share: short all the same
  running.push_back(item("b"));
  q.begin_step(running, {});
  EXPECT_TRUE(q.short_steps("b", 100));
  EXPECT_FALSE(q.short_steps("a", 8));
  EXPECT_DOUBLE_EQ(q.service("b"), 60.0);
  // Service and the share of slots are per weight: 60 tokens at weight 3 put a at 70, ahead of b
  // at 60; a's share of 8 slots is 6.
  q.set_weight("a", 3);
  q.charge("a", 60);
  q.begin_step(running, {});
  EXPECT_TRUE(q.short_steps("a", 100));
  EXPECT_FALSE(q.short_steps("b", 4));  // its share: 1 of 4 slots
  EXPECT_TRUE(q.short_steps("b", 3));
  q.charge("b", 20);  // b at 80: a is the least served again
  q.begin_step(running, {});
  EXPECT_FALSE(q.short_steps("a", 6));  // 4 sequences, share 4.5
  EXPECT_TRUE(q.short_steps("a", 5));   // share 3.75
  EXPECT_FALSE(q.short_steps("x", 1));  // unknown tenants: never
  FairQueue fifo(false);
  fifo.begin_step(a4, a4);
  EXPECT_FALSE(fifo.short_steps("a", 1));
  fifo.charge("a", 100);
  fifo.begin_step(a4, b1);
  EXPECT_FALSE(fifo.short_steps("a", 1));
}

TEST(FairQueue, PicksByPriorityThenServiceThenLoadThenQueueOrder) {
  FairQueue q(true);
  q.set_weight("heavy", 4);
  const std::vector<SchedItem> running = {item("a"), item("a"), item("heavy"), item("heavy")};
  q.begin_step(running, {});
  q.charge("a", 50);
  q.charge("b", 10);
  q.charge("heavy", 40);  // 10 per weight: b and heavy are tied
  std::vector<SchedItem> waiting = {item("a"), item("b"), item("heavy"), item("b")};
  // b and heavy tie on service; heavy runs 2 / 4 = 0.5 per weight, b runs 0: b first.
  EXPECT_EQ(q.pick_next(waiting), 1u);
  q.charge("b", 1);
  EXPECT_EQ(q.pick_next(waiting), 2u);
  // A higher priority wins whatever the service; FIFO within it.
  waiting.push_back(item("a", 1));
  waiting.push_back(item("b", 1));
  EXPECT_EQ(q.pick_next(waiting), 5u);  // b has less service than a
  q.charge("b", 100);
  EXPECT_EQ(q.pick_next(waiting), 4u);

  FairQueue fifo(false);
  fifo.begin_step(running, {});
  fifo.charge("a", 1000);
  EXPECT_EQ(fifo.pick_next(std::vector<SchedItem>{item("a"), item("b")}), 0u);
  EXPECT_EQ(fifo.pick_next(std::vector<SchedItem>{item("a"), item("b", 2), item("c", 2)}), 1u);
}

TEST(FairQueue, ServiceAndEvictionOrders) {
  FairQueue q(true);
  q.set_weight("a", 2);
  const std::vector<SchedItem> running = {item("a"), item("a"), item("a"),
                                          item("a"), item("b"), item("c")};
  q.begin_step(running, {});
  q.charge("a", 20);  // 10
  q.charge("b", 30);
  q.charge("c", 5);
  // Service order: priority, then least service, then admission.
  EXPECT_TRUE(q.serves_before(item("b", 1, 9), item("c", 0, 1)));
  EXPECT_TRUE(q.serves_before(item("c", 0, 9), item("a", 0, 1)));
  EXPECT_TRUE(q.serves_before(item("a", 0, 1), item("a", 0, 2)));
  EXPECT_FALSE(q.serves_before(item("b", 0, 1), item("a", 0, 2)));
  // Equal service: the tenant with fewer running sequences per weight, then admission.
  q.charge("c", 5);  // c at 10 like a; a runs 4 / 2 = 2 per weight, c 1
  EXPECT_TRUE(q.serves_before(item("c", 0, 9), item("a", 0, 1)));
  EXPECT_TRUE(q.serves_before(item("a", 0, 1), item("a", 0, 9)));
  // Eviction: lowest priority, then the most running per weight (a: 4 / 2 = 2), then the most
  // service (b 30 over c 10, both 1 running), then the most recent.
  EXPECT_TRUE(q.evicts_before(item("c", -1, 1), item("a", 0, 9)));
  EXPECT_TRUE(q.evicts_before(item("a", 0, 1), item("b", 0, 9)));
  EXPECT_TRUE(q.evicts_before(item("b", 0, 1), item("c", 0, 9)));
  EXPECT_TRUE(q.evicts_before(item("c", 0, 9), item("c", 0, 1)));

  FairQueue fifo(false);
  fifo.begin_step(running, {});
  fifo.charge("c", 1000);
  EXPECT_TRUE(fifo.serves_before(item("c", 0, 1), item("b", 0, 2)));
  EXPECT_TRUE(fifo.evicts_before(item("b", 0, 2), item("a", 0, 1)));
}

TEST(FairQueue, VictimsNeverOutrankTheWaiter) {
  // Tenant a holds 5 slots, b 1 (equal weights).
  FairQueue q(true);
  std::vector<SchedItem> running;
  for (uint64_t i = 0; i < 5; ++i) running.push_back(item("a", 0, i));
  running.push_back(item("b", 0, 5));
  q.begin_step(running, {});
  // b's waiter: (5 - 1) >= (1 + 1), so a's most recent sequence makes room.
  EXPECT_EQ(q.victim_for(item("b"), running), 4u);
  // A waiter of a's own tenant, or of lower priority, finds none.
  EXPECT_FALSE(q.victim_for(item("a"), running));
  EXPECT_FALSE(q.victim_for(item("b", -1), running));
  // At 4 : 3, (4 - 1) < (3 + 1): balanced enough, no swap (it would only be swapped back).
  running[4] = item("b", 0, 4);
  running.push_back(item("b", 0, 6));
  q.begin_step(running, {});
  EXPECT_FALSE(q.victim_for(item("b"), running));
  // A third tenant takes from the one most above its share (a: 4 running), its most recent.
  EXPECT_EQ(q.victim_for(item("c"), running), 3u);
  // A lower-priority sequence goes first, whichever tenant holds it, even the waiter's own.
  running.push_back(item("c", -1, 7));
  q.begin_step(running, {});
  EXPECT_EQ(q.victim_for(item("c"), running), 7u);
  EXPECT_EQ(q.victim_for(item("a", 5), running), 7u);
  // Without fair share only priority preempts.
  FairQueue fifo(false);
  fifo.begin_step(running, {});
  EXPECT_EQ(fifo.victim_for(item("c"), running), 7u);
  running.pop_back();
  fifo.begin_step(running, {});
  EXPECT_FALSE(fifo.victim_for(item("c"), running));
}

// Brute force: every slot starts with tenant "a"; the others queue. Hand the slots over the way
// the engine does (the next waiter by pick_next takes a victim's place) until no swap is allowed;
// the split must be the hand-computed weighted share, reached without handing a slot back.
TEST(FairQueue, SlotHandOversReachTheWeightedShareWithoutThrashing) {
  struct Case {
    std::map<std::string, double> weights;
    int slots;
    std::map<std::string, int> want;
  };
  const std::vector<Case> cases = {
      {{{"a", 1}, {"b", 1}}, 8, {{"a", 4}, {"b", 4}}},
      {{{"a", 3}, {"b", 1}}, 8, {{"a", 6}, {"b", 2}}},
      {{{"a", 1}, {"b", 3}}, 8, {{"a", 2}, {"b", 6}}},
      {{{"a", 1}, {"b", 1}, {"c", 1}}, 9, {{"a", 3}, {"b", 3}, {"c", 3}}},
      {{{"a", 2}, {"b", 1}, {"c", 1}}, 8, {{"a", 4}, {"b", 2}, {"c", 2}}},
      {{{"a", 1}, {"b", 1}}, 1, {{"a", 1}, {"b", 0}}},
      {{{"a", 1}, {"b", 1}}, 3, {{"a", 2}, {"b", 1}}},
  };
  for (const Case& c : cases) {
    FairQueue q(true);
    for (const auto& [t, w] : c.weights) q.set_weight(t, w);
    std::vector<std::string> names;  // storage for the views
    for (const auto& [t, w] : c.weights) names.push_back(t);
    std::vector<SchedItem> running, waiting;
    uint64_t admit = 0;
    for (int i = 0; i < c.slots; ++i) running.push_back(item(names[0], 0, admit++));
    for (size_t t = 1; t < names.size(); ++t) {
      for (int i = 0; i < c.slots; ++i) waiting.push_back(item(names[t]));
    }
    q.begin_step(running, waiting);
    std::map<std::string, int> handed_back;
    int swaps = 0;
    while (!waiting.empty()) {
      const size_t w = q.pick_next(waiting);
      const auto v = q.victim_for(waiting[w], running);
      if (!v) break;
      ++swaps;
      ASSERT_LE(swaps, 100);
      const SchedItem victim = running[*v];
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(*v));
      q.on_preempted(victim.tenant);
      SchedItem in = waiting[w];
      waiting.erase(waiting.begin() + static_cast<std::ptrdiff_t>(w));
      in.admit_order = admit++;
      running.push_back(in);
      q.on_admitted(in.tenant);
      if (victim.tenant != names[0]) ++handed_back[std::string(victim.tenant)];
      waiting.insert(waiting.begin(), victim);
    }
    std::map<std::string, int> got;
    for (const auto& [t, w] : c.weights) got[t] = 0;
    for (const SchedItem& s : running) ++got[std::string(s.tenant)];
    EXPECT_EQ(got, c.want) << "slots " << c.slots;
    EXPECT_TRUE(handed_back.empty()) << "a slot went back and forth";
    EXPECT_EQ(swaps, c.slots - c.want.at(names[0]));
  }
}

}  // namespace
}  // namespace maas::test
