// The model registry: configured models, their instances, leases, the loader thread and the
// housekeeping thread.
#include "server/model_registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace maas::server {

// ---- Registry state --------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string mib(uint64_t bytes) { return fmt::format("{:.1f} MiB", bytes / 1048576.0); }

// One loaded copy of a model. Its ServedModel is destroyed by a registry thread (or shutdown)
// once it is detached from its entry and no lease holds it.
struct Instance {
  std::string id;
  std::unique_ptr<ServedModel> model;
  uint64_t bytes = 0;
  int64_t leases = 0;  // under State::mu
  int64_t loaded_at = 0;
  bool attached = true;  // its entry's current instance; false: draining, then destroyed
  bool gone = false;     // taken out of memory (under State::mu)
};

struct PendingWaiter {
  uint64_t ticket = 0;
  ModelRegistry::Waiter fn;
  Clock::time_point deadline;
};

// One configured model.
struct Entry {
  std::shared_ptr<const ModelSpec> spec;
  std::shared_ptr<Instance> current;  // ready instance, or null
  std::weak_ptr<Instance> unloading;  // the instance an admin unload detached
  bool queued = false, in_progress = false;
  uint64_t generation = 0;  // changes whenever the configuration needs a new instance
  std::string error;        // the last load's failure
  std::vector<PendingWaiter> waiters;
  Clock::time_point last_used{};
  std::optional<int64_t> last_used_ms;
  int64_t created = 0;
};

// Work collected under the lock and run after releasing it: waiter callbacks and the
// destruction of instances (which stops their engines).
struct Deferred {
  std::vector<std::function<void()>> calls;
  std::vector<std::shared_ptr<Instance>> doomed;

  bool empty() const { return calls.empty() && doomed.empty(); }
  void run() {
    for (auto& inst : doomed) {
      std::fprintf(stderr, "maas: unloaded '%s' (%s freed)\n", inst->id.c_str(),
                   mib(inst->bytes).c_str());
      inst->model.reset();
    }
    doomed.clear();
    for (auto& call : calls) {
      try {
        call();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "maas: a request waiting for a model failed: %s\n", e.what());
      }
      call = nullptr;  // releases what it holds now
    }
    calls.clear();
  }
  void fail(PendingWaiter& w, const ApiError& error) {
    calls.push_back([fn = std::move(w.fn), error] { fn(ModelLease{}, &error); });
  }
};

ApiError retry_later(const std::string& message, const std::string& code) {
  ApiError e(503, message, {}, "server_error", code);
  e.retry_after = 5;
  return e;
}

}  // namespace

struct ModelRegistry::State : std::enable_shared_from_this<ModelRegistry::State> {
  ModelLoader loader;
  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Entry> entries;         // by id
  std::vector<std::string> order;               // ids in configuration order
  std::map<std::string, std::string> names;     // id or alias -> id
  std::vector<std::shared_ptr<Instance>> live;  // every instance in memory
  std::deque<std::string> queue;                // ids to load
  ModelsConfig limits;                          // (its models are unused)
  std::function<ModelsConfig()> source;
  std::mutex reload_mu;  // one reload at a time
  uint64_t next_ticket = 0, next_generation = 0;
  bool stopping = false, stopped = false;
  std::thread loader_thread, housekeeper_thread;

  // The lease guard: one per acquisition, shared by the lease's copies.
  struct Guard {
    std::shared_ptr<State> state;
    std::shared_ptr<Instance> inst;
    ~Guard() {
      std::lock_guard lock(state->mu);
      --inst->leases;
      auto it = state->entries.find(inst->id);
      if (it != state->entries.end() && it->second.current == inst) {
        it->second.last_used = Clock::now();
        it->second.last_used_ms = unix_ms();
      }
      state->cv.notify_all();
    }
  };

  ModelLease lease_locked(Entry& e) {
    ++e.current->leases;
    // Built in place: a temporary Guard's destructor would release the lease.
    std::shared_ptr<Guard> guard(new Guard{shared_from_this(), e.current});
    ModelLease lease;
    lease.model = std::shared_ptr<ServedModel>(guard, e.current->model.get());
    lease.spec = e.spec;
    return lease;
  }

  void queue_load_locked(const std::string& id, Entry& e) {
    if (e.queued) return;
    e.queued = true;
    queue.push_back(id);
    cv.notify_all();
  }

  // The entry stops serving its instance, which leaves memory once its leases are gone.
  void detach_locked(Entry& e, bool by_admin) {
    if (!e.current) return;
    e.current->attached = false;
    if (by_admin) e.unloading = e.current;
    e.current.reset();
    cv.notify_all();
  }

  // Detached instances no lease holds: out of `live`, to be destroyed by the caller.
  void collect_drained_locked(Deferred& d) {
    for (auto it = live.begin(); it != live.end();) {
      if (!(*it)->attached && (*it)->leases == 0) {
        (*it)->gone = true;
        d.doomed.push_back(std::move(*it));
        it = live.erase(it);
      } else {
        ++it;
      }
    }
  }

  uint64_t used_locked() const {
    uint64_t used = 0;
    for (const auto& inst : live) used += inst->bytes;
    return used;
  }

  ModelState state_locked(const Entry& e) const {
    if (e.current) return ModelState::Ready;
    if (e.queued || e.in_progress) return ModelState::Loading;
    if (auto u = e.unloading.lock(); u && !u->gone) return ModelState::Unloading;
    if (!e.error.empty()) return ModelState::Failed;
    return ModelState::Unloaded;
  }

  bool wants_instance(const Entry& e) const {
    return e.spec->policy == LoadPolicy::Always || !e.waiters.empty();
  }

  void rebuild_names_locked() {
    names.clear();
    for (const auto& [id, e] : entries) {
      names[id] = id;
      for (const auto& a : e.spec->aliases) names[a] = id;
    }
  }

  // Two threads: the loader loads one model at a time; the housekeeper answers waiters whose
  // time is up, unloads idle models and destroys drained instances, even while a load runs.
  void run_loader();
  void run_housekeeper();
  void load(const std::string& id, std::unique_lock<std::mutex>& lock);
  bool make_room(const std::string& id, uint64_t need, Deferred& d, std::string& error);
};

// Evicts least recently used idle on_demand models until `need` more bytes fit the budget. If
// they cannot fit even after evicting every candidate, evicts nothing and sets `error`.
bool ModelRegistry::State::make_room(const std::string& id, uint64_t need, Deferred& d,
                                     std::string& error) {
  const uint64_t budget = limits.memory_budget;
  if (budget == 0) return true;
  uint64_t used = used_locked();
  if (used + need <= budget) return true;
  std::vector<Entry*> candidates;
  uint64_t freeable = 0;
  for (const auto& inst : live) {
    if (!inst->attached && inst->leases == 0) freeable += inst->bytes;  // drained already
  }
  for (auto& [other, e] : entries) {
    if (other == id || !e.current || e.current->leases > 0) continue;
    if (e.spec->policy != LoadPolicy::OnDemand) continue;
    candidates.push_back(&e);
    freeable += e.current->bytes;
  }
  if (used - freeable + need > budget) {
    error = fmt::format(
        "model '{}' needs {} but the memory budget is {}, of which {} is held by models that "
        "cannot be unloaded now (load: always, or requests in flight)",
        id, mib(need), mib(budget), mib(used - freeable));
    return false;
  }
  collect_drained_locked(d);
  used = used_locked();
  std::sort(candidates.begin(), candidates.end(),
            [](const Entry* a, const Entry* b) { return a->last_used < b->last_used; });
  for (Entry* e : candidates) {
    if (used + need <= budget) break;
    std::fprintf(stderr, "maas: evicting '%s' (least recently used) to make room for '%s'\n",
                 e->spec->id.c_str(), id.c_str());
    used -= e->current->bytes;
    detach_locked(*e, false);
  }
  collect_drained_locked(d);
  return true;
}

void ModelRegistry::State::load(const std::string& id, std::unique_lock<std::mutex>& lock) {
  auto it = entries.find(id);
  if (it == entries.end()) return;
  Entry& e = it->second;
  e.queued = false;
  Deferred d;
  if (e.current) {  // loaded meanwhile (e.g. adopted): serve whoever waits
    for (auto& w : e.waiters) {
      d.calls.push_back([fn = std::move(w.fn), lease = lease_locked(e)]() mutable {
        fn(std::move(lease), nullptr);
      });
    }
    e.waiters.clear();
    lock.unlock();
    d.run();
    lock.lock();
    return;
  }
  e.in_progress = true;
  const uint64_t generation = e.generation;
  const std::shared_ptr<const ModelSpec> spec = e.spec;
  const auto started = Clock::now();
  lock.unlock();

  std::string error;
  ModelFootprint footprint;
  try {
    footprint = loader.footprint(*spec);
  } catch (const std::exception& ex) {
    error = fmt::format("model '{}' failed to load: {}", id, ex.what());
  }
  lock.lock();
  auto current = [&]() -> Entry* {
    auto found = entries.find(id);
    return found != entries.end() && found->second.generation == generation ? &found->second
                                                                            : nullptr;
  };
  // Replaced or removed while loading: the attempt serves nobody. A replacement is queued if
  // anyone wants it.
  auto abandon = [&](std::unique_ptr<ServedModel> unwanted) {
    auto found = entries.find(id);
    if (found != entries.end()) {
      found->second.in_progress = false;
      if (wants_instance(found->second)) queue_load_locked(id, found->second);
    }
    lock.unlock();
    unwanted.reset();
    lock.lock();
  };
  if (current() == nullptr) return abandon(nullptr);
  std::string code = "model_load_failed";
  if (error.empty() && !make_room(id, footprint.total(), d, error)) code = "insufficient_memory";
  lock.unlock();
  d.run();
  std::unique_ptr<ServedModel> model;
  if (error.empty()) {
    std::fprintf(stderr, "maas: loading '%s' from %s (%s)\n", id.c_str(), spec->path.c_str(),
                 mib(footprint.total()).c_str());
    try {
      model = loader.load(*spec);
    } catch (const std::exception& ex) {
      error = fmt::format("model '{}' failed to load: {}", id, ex.what());
    }
  }
  lock.lock();
  Entry* entry = current();
  if (entry == nullptr) return abandon(std::move(model));
  entry->in_progress = false;
  if (!error.empty()) {
    std::fprintf(stderr, "maas: %s\n", error.c_str());
    entry->error = error;
    const ApiError failure = retry_later(error, code);
    for (auto& w : entry->waiters) d.fail(w, failure);
  } else {
    auto inst = std::make_shared<Instance>();
    inst->id = id;
    inst->bytes = model->memory_bytes();
    inst->model = std::move(model);
    inst->loaded_at = static_cast<int64_t>(std::time(nullptr));
    live.push_back(inst);
    entry->current = inst;
    entry->error.clear();
    entry->last_used = Clock::now();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    std::fprintf(stderr, "maas: loaded '%s' (%s) in %lld ms\n", id.c_str(),
                 mib(inst->bytes).c_str(), static_cast<long long>(ms.count()));
    for (auto& w : entry->waiters) {
      // The lease moves into the waiter: no copy outlives the request's own.
      d.calls.push_back([fn = std::move(w.fn), lease = lease_locked(*entry)]() mutable {
        fn(std::move(lease), nullptr);
      });
    }
  }
  entry->waiters.clear();
  cv.notify_all();
  lock.unlock();
  d.run();
  lock.lock();
}

void ModelRegistry::State::run_loader() {
  std::unique_lock lock(mu);
  while (!stopping) {
    if (queue.empty()) {
      cv.wait(lock);
      continue;
    }
    const std::string id = queue.front();
    queue.pop_front();
    load(id, lock);
  }
}

void ModelRegistry::State::run_housekeeper() {
  std::unique_lock lock(mu);
  while (!stopping) {
    const auto now = Clock::now();
    Deferred d;
    for (auto& [id, e] : entries) {
      const auto idle = e.spec->idle_unload;
      if (e.current && e.current->leases == 0 && e.spec->policy == LoadPolicy::OnDemand &&
          idle.count() > 0 && now - e.last_used >= idle) {
        std::fprintf(stderr, "maas: unloading '%s' (unused for %lld ms)\n", id.c_str(),
                     static_cast<long long>(idle.count()));
        detach_locked(e, false);
      }
      for (auto w = e.waiters.begin(); w != e.waiters.end();) {
        if (w->deadline <= now) {
          d.fail(*w, retry_later(fmt::format("model '{}' is still loading after {} ms; retry later",
                                             id, limits.load_wait_timeout.count()),
                                 "model_loading"));
          w = e.waiters.erase(w);
        } else {
          ++w;
        }
      }
    }
    collect_drained_locked(d);
    if (!d.empty()) {
      lock.unlock();
      d.run();
      lock.lock();
      continue;
    }
    auto next = Clock::time_point::max();
    for (const auto& [id, e] : entries) {
      for (const auto& w : e.waiters) next = std::min(next, w.deadline);
      if (e.current && e.current->leases == 0 && e.spec->policy == LoadPolicy::OnDemand &&
          e.spec->idle_unload.count() > 0) {
        next = std::min(next, e.last_used + e.spec->idle_unload);
      }
    }
    if (next == Clock::time_point::max()) {
      cv.wait(lock);
    } else {
      cv.wait_until(lock, next);
    }
  }
}

// ---- ModelRegistry ---------------------------------------------------------------------------

ModelRegistry::ModelRegistry(ModelLoader loader) : state_(std::make_shared<State>()) {
  state_->loader = std::move(loader);
  state_->loader_thread = std::thread([st = state_.get()] { st->run_loader(); });
  state_->housekeeper_thread = std::thread([st = state_.get()] { st->run_housekeeper(); });
}

ModelRegistry::~ModelRegistry() { shutdown(); }

ReloadSummary ModelRegistry::apply(const ModelsConfig& config) {
  check_unique_names(config.models);
  State& st = *state_;
  ReloadSummary sum;
  Deferred d;
  {
    std::lock_guard lock(st.mu);
    st.limits.memory_budget = config.memory_budget;
    st.limits.max_load_waiters = config.max_load_waiters;
    st.limits.load_wait_timeout = config.load_wait_timeout;
    std::set<std::string> keep;
    std::vector<std::string> order;
    for (const ModelSpec& spec : config.models) {
      keep.insert(spec.id);
      order.push_back(spec.id);
      auto sp = std::make_shared<const ModelSpec>(spec);
      auto it = st.entries.find(spec.id);
      if (it == st.entries.end()) {
        Entry e;
        e.spec = sp;
        e.created = static_cast<int64_t>(std::time(nullptr));
        e.generation = ++st.next_generation;
        Entry& added = st.entries.emplace(spec.id, std::move(e)).first->second;
        if (spec.policy == LoadPolicy::Always) st.queue_load_locked(spec.id, added);
        sum.added.push_back(spec.id);
        continue;
      }
      Entry& e = it->second;
      if (!e.spec->same_instance(spec)) {
        // A new instance with the new settings; the old one finishes its requests.
        e.generation = ++st.next_generation;
        st.detach_locked(e, false);
        e.error.clear();
        e.spec = sp;
        if (st.wants_instance(e)) st.queue_load_locked(spec.id, e);
        sum.replaced.push_back(spec.id);
        continue;
      }
      const ModelSpec& old = *e.spec;
      const bool same = old.aliases == spec.aliases && old.defaults == spec.defaults &&
                        old.policy == spec.policy && old.idle_unload == spec.idle_unload;
      (same ? sum.unchanged : sum.updated).push_back(spec.id);
      e.spec = sp;
      if (spec.policy == LoadPolicy::Always && !e.current && !e.in_progress) {
        st.queue_load_locked(spec.id, e);
      }
    }
    for (auto it = st.entries.begin(); it != st.entries.end();) {
      if (keep.count(it->first) != 0) {
        ++it;
        continue;
      }
      Entry& e = it->second;
      sum.removed.push_back(it->first);
      st.detach_locked(e, false);
      const ApiError gone(
          404, fmt::format("The model '{}' was removed from the configuration", it->first), "model",
          "invalid_request_error", "model_not_found");
      for (auto& w : e.waiters) d.fail(w, gone);
      std::erase(st.queue, it->first);
      it = st.entries.erase(it);
    }
    st.order = std::move(order);
    st.rebuild_names_locked();
    st.cv.notify_all();
  }
  d.run();
  return sum;
}

void ModelRegistry::set_source(std::function<ModelsConfig()> source) {
  std::lock_guard lock(state_->reload_mu);
  state_->source = std::move(source);
}

ReloadSummary ModelRegistry::reload() {
  std::lock_guard lock(state_->reload_mu);
  if (!state_->source) throw std::runtime_error("this server has no models file to reload");
  return apply(state_->source());
}

void ModelRegistry::adopt(std::unique_ptr<ServedModel> model) {
  State& st = *state_;
  ModelSpec spec;
  spec.id = model->id;
  spec.path = model->path;
  spec.engine = model->engine->config();
  spec.origin = "add_model";
  try {
    spec.stamp_file();
  } catch (const ModelsFileError&) {
    // A model without a file on disk (tests): never equal to a configured one.
  }
  std::lock_guard lock(st.mu);
  if (st.names.count(spec.id) != 0) {
    throw std::invalid_argument(fmt::format("a model named '{}' is already configured", spec.id));
  }
  auto inst = std::make_shared<Instance>();
  inst->id = spec.id;
  inst->bytes = model->memory_bytes();
  inst->model = std::move(model);
  inst->loaded_at = static_cast<int64_t>(std::time(nullptr));
  st.live.push_back(inst);
  Entry e;
  e.spec = std::make_shared<const ModelSpec>(std::move(spec));
  e.current = inst;
  e.created = inst->loaded_at;
  e.generation = ++st.next_generation;
  e.last_used = Clock::now();
  st.entries.emplace(inst->id, std::move(e));
  st.order.push_back(inst->id);
  st.rebuild_names_locked();
}

void ModelRegistry::wait_for_always(std::chrono::milliseconds timeout) {
  State& st = *state_;
  std::unique_lock lock(st.mu);
  const bool settled = st.cv.wait_for(lock, timeout, [&] {
    for (const auto& [id, e] : st.entries) {
      if (e.spec->policy == LoadPolicy::Always && (e.queued || e.in_progress)) return false;
    }
    return true;
  });
  std::vector<std::string> failures;
  for (const std::string& id : st.order) {
    const Entry& e = st.entries.at(id);
    if (e.spec->policy != LoadPolicy::Always || e.current) continue;
    failures.push_back(!e.error.empty() ? e.error
                       : settled        ? fmt::format("model '{}' is not loaded", id)
                                        : fmt::format("model '{}' is still loading", id));
  }
  if (!failures.empty()) throw std::runtime_error(fmt::format("{}", fmt::join(failures, "; ")));
}

std::shared_ptr<const ModelSpec> ModelRegistry::find(const std::string& name) const {
  std::lock_guard lock(state_->mu);
  auto it = state_->names.find(name);
  if (it == state_->names.end()) return nullptr;
  return state_->entries.at(it->second).spec;
}

std::optional<std::string> ModelRegistry::only_model() const {
  std::lock_guard lock(state_->mu);
  if (state_->entries.size() != 1) return std::nullopt;
  return state_->entries.begin()->first;
}

ModelLease ModelRegistry::acquire(const std::string& name, Waiter waiter, uint64_t* ticket) {
  State& st = *state_;
  std::lock_guard lock(st.mu);
  auto n = st.names.find(name);
  if (n == st.names.end()) {
    throw ApiError(404, fmt::format("The model '{}' does not exist", name), "model",
                   "invalid_request_error", "model_not_found");
  }
  Entry& e = st.entries.at(n->second);
  if (e.current) {
    e.last_used = Clock::now();
    e.last_used_ms = unix_ms();
    return st.lease_locked(e);
  }
  if (st.stopping) throw retry_later("the server is shutting down", "shutting_down");
  if (e.waiters.size() >= st.limits.max_load_waiters) {
    throw retry_later(fmt::format("{} requests already wait for model '{}' to load (the limit); "
                                  "retry later",
                                  e.waiters.size(), n->second),
                      "model_loading");
  }
  const uint64_t t = ++st.next_ticket;
  e.waiters.push_back({t, std::move(waiter), Clock::now() + st.limits.load_wait_timeout});
  e.last_used_ms = unix_ms();
  if (ticket != nullptr) *ticket = t;
  if (!e.queued && !e.in_progress) st.queue_load_locked(n->second, e);
  st.cv.notify_all();
  return {};
}

void ModelRegistry::cancel_wait(uint64_t ticket) {
  std::function<void()> drop;  // destroyed unlocked: it may hold a writer
  std::lock_guard lock(state_->mu);
  for (auto& [id, e] : state_->entries) {
    for (auto w = e.waiters.begin(); w != e.waiters.end(); ++w) {
      if (w->ticket == ticket) {
        drop = [fn = std::move(w->fn)] {};
        e.waiters.erase(w);
        return;
      }
    }
  }
}

ModelState ModelRegistry::unload(const std::string& id) {
  State& st = *state_;
  Deferred d;
  ModelState state;
  {
    std::lock_guard lock(st.mu);
    auto it = st.entries.find(id);
    if (it == st.entries.end()) {
      throw ApiError(404, fmt::format("The model '{}' does not exist", id), "model",
                     "invalid_request_error", "model_not_found");
    }
    Entry& e = it->second;
    if (e.spec->policy == LoadPolicy::Always) {
      throw ApiError(409,
                     fmt::format("model '{}' has load: always and stays loaded; change its "
                                 "policy in the models file and reload to unload it",
                                 id),
                     "model", "invalid_request_error", "model_pinned");
    }
    st.detach_locked(e, true);
    if (e.queued || e.in_progress) {
      // Cancel the load: the attempt in progress is discarded, the waiters are told.
      e.generation = ++st.next_generation;
      e.queued = false;
      std::erase(st.queue, id);
      const ApiError cancelled =
          retry_later(fmt::format("model '{}' was unloaded by an administrator while loading", id),
                      "model_unloaded");
      for (auto& w : e.waiters) d.fail(w, cancelled);
      e.waiters.clear();
    }
    state = st.state_locked(e);
  }
  d.run();
  return state;
}

namespace {

ModelStatus status_of(const ModelRegistry::State& st, const std::string& id, const Entry& e);

}  // namespace

std::vector<ModelStatus> ModelRegistry::status() const {
  std::lock_guard lock(state_->mu);
  std::vector<ModelStatus> out;
  for (const std::string& id : state_->order) {
    out.push_back(status_of(*state_, id, state_->entries.at(id)));
  }
  return out;
}

std::optional<ModelStatus> ModelRegistry::status(const std::string& id) const {
  std::lock_guard lock(state_->mu);
  auto it = state_->entries.find(id);
  if (it == state_->entries.end()) return std::nullopt;
  return status_of(*state_, id, it->second);
}

namespace {

ModelStatus status_of(const ModelRegistry::State& st, const std::string& id, const Entry& e) {
  ModelStatus s;
  s.id = id;
  s.path = e.spec->path;
  s.aliases = e.spec->aliases;
  s.policy = e.spec->policy;
  s.state = st.state_locked(e);
  if (s.state == ModelState::Failed) s.error = e.error;
  for (const auto& inst : st.live) {
    if (inst->id != id) continue;
    s.memory_bytes += inst->bytes;
    s.in_flight += inst->leases;
  }
  if (e.current) s.loaded_at = e.current->loaded_at;
  s.last_used = e.last_used_ms;
  s.waiting = e.waiters.size();
  s.created = e.created;
  s.idle_unload = e.spec->idle_unload;
  return s;
}

}  // namespace

bool ModelRegistry::ready() const {
  std::lock_guard lock(state_->mu);
  if (state_->entries.empty()) return false;
  for (const auto& [id, e] : state_->entries) {
    if (e.spec->policy == LoadPolicy::Always && !e.current) return false;
  }
  return true;
}

std::vector<LoadedModelStats> ModelRegistry::loaded_stats() const {
  std::lock_guard lock(state_->mu);
  std::vector<LoadedModelStats> out;
  for (const std::string& id : state_->order) {
    const Entry& e = state_->entries.at(id);
    if (!e.current) continue;
    out.push_back({id, e.current->model->engine->stats(), e.current->bytes});
  }
  return out;
}

size_t ModelRegistry::loaded_count() const {
  std::lock_guard lock(state_->mu);
  size_t n = 0;
  for (const auto& [id, e] : state_->entries) n += e.current ? 1 : 0;
  return n;
}

uint64_t ModelRegistry::memory_in_use() const {
  std::lock_guard lock(state_->mu);
  return state_->used_locked();
}

uint64_t ModelRegistry::memory_budget() const {
  std::lock_guard lock(state_->mu);
  return state_->limits.memory_budget;
}

void ModelRegistry::shutdown(std::chrono::milliseconds drain) {
  State& st = *state_;
  Deferred d;
  {
    std::lock_guard lock(st.mu);
    if (st.stopped) return;
    st.stopped = true;
    st.stopping = true;
    const ApiError closing = retry_later("the server is shutting down", "shutting_down");
    for (auto& [id, e] : st.entries) {
      for (auto& w : e.waiters) d.fail(w, closing);
      e.waiters.clear();
      e.queued = false;
    }
    st.queue.clear();
    st.cv.notify_all();
  }
  d.run();
  if (st.loader_thread.joinable()) st.loader_thread.join();
  if (st.housekeeper_thread.joinable()) st.housekeeper_thread.join();
  {
    std::unique_lock lock(st.mu);
    const bool drained = st.cv.wait_for(lock, drain, [&] {
      return std::all_of(st.live.begin(), st.live.end(),
                         [](const auto& inst) { return inst->leases == 0; });
    });
    if (!drained) {
      std::fprintf(stderr, "maas: unloading models with requests still in flight\n");
    }
    for (auto& [id, e] : st.entries) st.detach_locked(e, false);
    for (auto& inst : st.live) inst->gone = true;
    d.doomed = std::move(st.live);
    st.live.clear();
  }
  for (auto& inst : d.doomed) inst->model.reset();  // quietly: the server is stopping
  d.doomed.clear();
}

}  // namespace maas::server
