// Weighted fair sharing between tenants: virtual-time bookkeeping and the orders built on it.
#include "engine/fair_queue.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace maas::engine {

FairQueue::Tenant& FairQueue::get(std::string_view tenant) {
  auto it = tenants_.find(tenant);
  if (it == tenants_.end()) it = tenants_.emplace(std::string(tenant), Tenant{}).first;
  return it->second;
}

const FairQueue::Tenant* FairQueue::find(std::string_view tenant) const {
  auto it = tenants_.find(tenant);
  return it == tenants_.end() ? nullptr : &it->second;
}

double FairQueue::service(std::string_view tenant) const {
  const Tenant* t = find(tenant);
  return t ? t->service : 0;
}

double FairQueue::weight(std::string_view tenant) const {
  const Tenant* t = find(tenant);
  return t ? t->weight : 1;
}

int32_t FairQueue::running(std::string_view tenant) const {
  const Tenant* t = find(tenant);
  return t ? t->running : 0;
}

double FairQueue::load(std::string_view tenant) const {
  const Tenant* t = find(tenant);
  return t ? t->running / t->weight : 0;
}

void FairQueue::set_weight(std::string_view tenant, double weight) {
  if (!std::isfinite(weight) || weight <= 0) {
    throw std::invalid_argument("a tenant's weight must be a finite number > 0");
  }
  get(tenant).weight = weight;
}

void FairQueue::begin_step(std::span<const SchedItem> running, std::span<const SchedItem> waiting) {
  for (auto& [name, t] : tenants_) t.running = t.waiting = 0;
  for (const SchedItem& s : running) ++get(s.tenant).running;
  for (const SchedItem& s : waiting) ++get(s.tenant).waiting;
  // The clock follows the least service among tenants that stay active; it never goes back,
  // since newcomers are lifted to it and service only grows.
  double least = std::numeric_limits<double>::infinity();
  for (const auto& [name, t] : tenants_) {
    if (t.active && t.running + t.waiting > 0) least = std::min(least, t.service);
  }
  if (least != std::numeric_limits<double>::infinity()) clock_ = std::max(clock_, least);
  active_ = 0;
  active_weight_ = 0;
  for (auto it = tenants_.begin(); it != tenants_.end();) {
    Tenant& t = it->second;
    const bool now_active = t.running + t.waiting > 0;
    if (now_active && !t.active) t.service = std::max(t.service, clock_);  // no banked credit
    t.active = now_active;
    active_ += now_active ? 1 : 0;
    active_weight_ += now_active ? t.weight : 0;
    // An idle tenant at or behind the clock would restart at the clock: nothing to remember
    // but its weight, which its next request brings again.
    if (!now_active && t.service <= clock_) {
      it = tenants_.erase(it);
    } else {
      ++it;
    }
  }
}

void FairQueue::on_admitted(std::string_view tenant) {
  Tenant& t = get(tenant);
  ++t.running;
  t.waiting = std::max(0, t.waiting - 1);
}

void FairQueue::on_preempted(std::string_view tenant) {
  Tenant& t = get(tenant);
  t.running = std::max(0, t.running - 1);
  ++t.waiting;
}

void FairQueue::charge(std::string_view tenant, int64_t tokens) {
  Tenant& t = get(tenant);
  t.service += static_cast<double>(tokens) / t.weight;
}

size_t FairQueue::pick_next(std::span<const SchedItem> waiting) const {
  size_t best = 0;
  if (!fair_share_) {
    for (size_t i = 1; i < waiting.size(); ++i) {
      if (waiting[i].priority > waiting[best].priority) best = i;
    }
    return best;
  }
  double best_service = service(waiting[0].tenant), best_load = load(waiting[0].tenant);
  for (size_t i = 1; i < waiting.size(); ++i) {
    const SchedItem& s = waiting[i];
    if (s.priority < waiting[best].priority) continue;
    if (s.priority == waiting[best].priority && s.tenant == waiting[best].tenant) continue;
    const double sv = service(s.tenant), ld = load(s.tenant);
    const bool better = s.priority > waiting[best].priority ||
                        (sv != best_service ? sv < best_service : ld < best_load);
    if (better) {
      best = i;
      best_service = sv;
      best_load = ld;
    }
  }
  return best;
}

double FairQueue::prompt_share(std::string_view tenant) const {
  const Tenant* t = find(tenant);
  if (!fair_share_ || !t || t->service <= clock_ || active_weight_ <= 0) return 1;
  return std::min(1.0, t->weight / active_weight_);
}

bool FairQueue::short_steps(std::string_view tenant, int32_t slots) const {
  const Tenant* t = find(tenant);
  if (!fair_share_ || !t || !t->active) return false;
  if (active_ > 1 && t->service > clock_) return true;
  return static_cast<double>(t->running + t->waiting) >
         static_cast<double>(slots) * t->weight / active_weight_;
}

bool FairQueue::serves_before(const SchedItem& a, const SchedItem& b) const {
  if (a.priority != b.priority) return a.priority > b.priority;
  if (fair_share_ && a.tenant != b.tenant) {
    const double sa = service(a.tenant), sb = service(b.tenant);
    if (sa != sb) return sa < sb;
    const double la = load(a.tenant), lb = load(b.tenant);
    if (la != lb) return la < lb;
  }
  return a.admit_order < b.admit_order;
}

bool FairQueue::evicts_before(const SchedItem& a, const SchedItem& b) const {
  if (a.priority != b.priority) return a.priority < b.priority;
  if (fair_share_ && a.tenant != b.tenant) {
    const double la = load(a.tenant), lb = load(b.tenant);
    if (la != lb) return la > lb;
    const double sa = service(a.tenant), sb = service(b.tenant);
    if (sa != sb) return sa > sb;
  }
  return a.admit_order > b.admit_order;
}

std::optional<size_t> FairQueue::victim_for(const SchedItem& waiter,
                                            std::span<const SchedItem> running) const {
  std::optional<size_t> best;
  for (size_t i = 0; i < running.size(); ++i) {
    const SchedItem& v = running[i];
    if (v.priority > waiter.priority) continue;
    if (v.priority == waiter.priority) {
      if (!fair_share_ || v.tenant == waiter.tenant) continue;
      // Only a swap after which the victim's tenant is still at least as well served per
      // weight as the waiter's: the reverse swap is then never allowed, so nothing thrashes.
      const double rv = this->running(v.tenant), rw = this->running(waiter.tenant);
      if ((rv - 1) * weight(waiter.tenant) < (rw + 1) * weight(v.tenant)) continue;
    }
    if (!best || evicts_before(v, running[*best])) best = i;
  }
  return best;
}

}  // namespace maas::engine
