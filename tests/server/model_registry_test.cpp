// The model registry with the real stories260K model: memory footprints, LRU eviction under a
// budget, leases through unloads and reloads, requests that wait for a load (bounded), failed
// loads and their retry, idle unloading and the reload diff.
#include "server/model_registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "convert/convert.h"
#include "gguf/gguf.h"
#include "support/test_util.h"

namespace maas::server {
namespace {

using namespace std::chrono_literals;

const std::string& stories_path() {
  static const std::string path = [] {
    const std::string dir = test::shared_dir() + "/models/stories260K";
    const std::string out = test::scratch_dir() + "/stories260K.gguf";
    convert::llama2c_to_gguf(dir + "/stories260K.bin", dir + "/tok512.bin", out, {});
    return out;
  }();
  return path;
}

constexpr size_t kKvMemory = size_t{1} << 20;

ModelSpec spec(const std::string& id, LoadPolicy policy, size_t kv_memory = kKvMemory) {
  ModelSpec s;
  s.id = id;
  s.path = stories_path();
  s.policy = policy;
  s.engine.kv_memory = kv_memory;
  s.engine.max_running = 4;
  s.engine.threads = 1;
  s.origin = "test";
  s.stamp_file();
  return s;
}

ModelsConfig config(std::vector<ModelSpec> models, size_t budget = 0) {
  ModelsConfig c;
  c.models = std::move(models);
  c.memory_budget = budget;
  return c;
}

// What a waiter was called with, taken out once (no copy of the lease lingers).
class Outcome {
 public:
  ModelRegistry::Waiter waiter() {
    return [this](ModelLease lease, const ApiError* error) {
      std::lock_guard lock(mu_);
      lease_ = std::move(lease);
      if (error != nullptr) error_ = *error;
      done_ = true;
      cv_.notify_all();
    };
  }
  bool wait(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_; });
  }
  bool done() {
    std::lock_guard lock(mu_);
    return done_;
  }
  ModelLease take_lease() {
    std::lock_guard lock(mu_);
    return std::move(lease_);
  }
  std::optional<ApiError> error() {
    std::lock_guard lock(mu_);
    return error_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  ModelLease lease_;
  std::optional<ApiError> error_;
};

// A lease on `name`, waiting for its load if needed; an empty lease (and a test failure) if it
// cannot be had.
ModelLease acquire(ModelRegistry& r, const std::string& name) {
  Outcome o;
  if (ModelLease l = r.acquire(name, o.waiter())) return l;
  EXPECT_TRUE(o.wait()) << name << " did not load";
  if (auto e = o.error()) ADD_FAILURE() << name << ": " << e->what();
  return o.take_lease();
}

ModelState state(const ModelRegistry& r, const std::string& id) {
  auto s = r.status(id);
  return s ? s->state : ModelState::Unloaded;
}

// Polls until `pred` holds (the loader thread works asynchronously).
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 5s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// Greedy tokens of "Once upon a time" through a model's engine.
std::vector<int32_t> generate(ServedModel& m, int n = 6) {
  engine::Request req;
  req.prompt = m.tok->encode("Once upon a time", true, false);
  req.sampling.temperature = 0;
  req.max_tokens = n;
  auto h = m.engine->submit(req);
  std::vector<int32_t> tokens;
  std::vector<engine::Output> outs;
  while (h->next(outs)) {
    for (auto& o : outs) {
      for (auto& t : o.tokens) tokens.push_back(t.token);
    }
    outs.clear();
  }
  return tokens;
}

// The bytes one loaded stories model takes with kv_memory `kv`, computed independently: the
// file on disk, plus whole KV blocks (16 positions of K and V, f16, for every layer) that fit.
uint64_t expected_bytes(size_t kv) {
  const gguf::File f = gguf::File::open(stories_path());
  const uint64_t n_layer = *f.get_uint("llama.block_count");
  const uint64_t n_embd = *f.get_uint("llama.embedding_length");
  const uint64_t n_head = *f.get_uint("llama.attention.head_count");
  const uint64_t n_head_kv = *f.get_uint("llama.attention.head_count_kv");
  const uint64_t kv_dim = n_embd / n_head * n_head_kv;
  const uint64_t per_block = 2 /*K,V*/ * kv_dim * 2 /*f16*/ * 16 * n_layer;
  return std::filesystem::file_size(stories_path()) + kv / per_block * per_block;
}

TEST(ModelRegistry, FootprintIsTheFileAndTheKvPool) {
  const ModelSpec s = spec("a", LoadPolicy::OnDemand);
  const ModelFootprint f = estimate_footprint(s);
  EXPECT_EQ(f.total(), expected_bytes(kKvMemory));
  EXPECT_EQ(f.weight_bytes, std::filesystem::file_size(stories_path()));
  // What the loaded model reports is what the estimate promised.
  auto m = ServedModel::load("a", s.path, s.engine);
  EXPECT_EQ(m->weight_bytes, f.weight_bytes);
  EXPECT_EQ(m->kv_bytes, f.kv_bytes);
  // And what the registry counts.
  ModelRegistry r;
  r.apply(config({s}));
  ModelLease l = acquire(r, "a");
  ASSERT_TRUE(l);
  EXPECT_EQ(r.memory_in_use(), f.total());
  EXPECT_EQ(r.status("a")->memory_bytes, f.total());
}

TEST(ModelRegistry, EvictsTheLeastRecentlyUsedIdleModelUnderTheBudget) {
  const uint64_t one = expected_bytes(kKvMemory);
  ModelRegistry r;
  // Room for two models, not three.
  r.apply(config({spec("a", LoadPolicy::OnDemand), spec("b", LoadPolicy::OnDemand),
                  spec("c", LoadPolicy::OnDemand), spec("pinned", LoadPolicy::Always)},
                 3 * one + one / 2));
  r.wait_for_always(10s);
  EXPECT_EQ(state(r, "pinned"), ModelState::Ready);
  acquire(r, "a");
  std::this_thread::sleep_for(2ms);
  acquire(r, "b");
  std::this_thread::sleep_for(2ms);
  acquire(r, "a");  // a is now more recent than b
  std::this_thread::sleep_for(2ms);
  acquire(r, "c");  // evicts b, the least recently used; never the pinned model
  EXPECT_EQ(state(r, "a"), ModelState::Ready);
  EXPECT_EQ(state(r, "b"), ModelState::Unloaded);
  EXPECT_EQ(state(r, "c"), ModelState::Ready);
  EXPECT_EQ(state(r, "pinned"), ModelState::Ready);
  EXPECT_EQ(r.memory_in_use(), 3 * one);
  EXPECT_LE(r.memory_in_use(), r.memory_budget());

  // A model in use is not evicted even when it is the least recently used.
  ModelLease busy = acquire(r, "a");
  std::this_thread::sleep_for(2ms);
  acquire(r, "c");
  std::this_thread::sleep_for(2ms);
  acquire(r, "b");  // a is least recently used but busy: c goes
  EXPECT_EQ(state(r, "a"), ModelState::Ready);
  EXPECT_EQ(state(r, "b"), ModelState::Ready);
  EXPECT_EQ(state(r, "c"), ModelState::Unloaded);
  EXPECT_EQ(r.loaded_count(), 3u);
}

TEST(ModelRegistry, AModelThatCannotFitIsRefusedWith503) {
  const uint64_t one = expected_bytes(kKvMemory);
  ModelRegistry r;
  r.apply(config({spec("pinned", LoadPolicy::Always), spec("a", LoadPolicy::OnDemand),
                  spec("b", LoadPolicy::OnDemand)},
                 2 * one + one / 2));
  r.wait_for_always(10s);
  ModelLease busy = acquire(r, "a");  // busy: cannot be evicted
  Outcome o;
  EXPECT_FALSE(r.acquire("b", o.waiter()));
  ASSERT_TRUE(o.wait());
  auto e = o.error();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 503);
  EXPECT_EQ(e->code, "insufficient_memory");
  EXPECT_GT(e->retry_after, 0);
  EXPECT_NE(std::string(e->what()).find("memory budget"), std::string::npos) << e->what();
  // Nothing was evicted for a load that could not fit anyway.
  EXPECT_EQ(state(r, "a"), ModelState::Ready);
  EXPECT_EQ(state(r, "pinned"), ModelState::Ready);
  EXPECT_EQ(state(r, "b"), ModelState::Failed);
  // Once a is idle, b fits by evicting it.
  busy = {};
  ModelLease b = acquire(r, "b");
  EXPECT_TRUE(b);
  EXPECT_EQ(state(r, "a"), ModelState::Unloaded);
}

TEST(ModelRegistry, ALeaseKeepsItsModelAliveThroughUnload) {
  ModelRegistry r;
  r.apply(config({spec("a", LoadPolicy::OnDemand), spec("pinned", LoadPolicy::Always)}));
  r.wait_for_always(10s);
  ModelLease lease = acquire(r, "a");
  ASSERT_TRUE(lease);
  const std::vector<int32_t> before = generate(*lease);
  ASSERT_EQ(before.size(), 6u);

  EXPECT_EQ(r.unload("a"), ModelState::Unloading);
  auto s = r.status("a");
  EXPECT_EQ(s->state, ModelState::Unloading);
  EXPECT_EQ(s->in_flight, 1);
  EXPECT_EQ(s->memory_bytes, expected_bytes(kKvMemory));
  // The engine still serves the request that holds it, with the same results.
  EXPECT_EQ(generate(*lease), before);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(state(r, "a"), ModelState::Unloading);

  lease = {};
  EXPECT_TRUE(eventually([&] { return state(r, "a") == ModelState::Unloaded; }));
  EXPECT_EQ(r.status("a")->memory_bytes, 0u);
  EXPECT_EQ(r.memory_in_use(), expected_bytes(kKvMemory));  // the pinned model

  // The next request loads it again.
  ModelLease again = acquire(r, "a");
  ASSERT_TRUE(again);
  EXPECT_EQ(generate(*again), before);

  // `always` models refuse; unknown ids are 404.
  try {
    r.unload("pinned");
    ADD_FAILURE() << "unloaded a pinned model";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 409);
  }
  try {
    r.unload("nope");
    ADD_FAILURE() << "unloaded an unknown model";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 404);
  }
}

// A loader whose loads wait for the test to open a gate, counting them.
struct GatedLoader {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  std::atomic<int> loads{0}, started{0};

  ModelLoader loader() {
    ModelLoader l;
    l.load = [this](const ModelSpec& s) {
      ++started;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return open; });
      }
      ++loads;
      return ServedModel::load(s.id, s.path, s.engine);
    };
    return l;
  }
  void release() {
    std::lock_guard lock(mu);
    open = true;
    cv.notify_all();
  }
};

TEST(ModelRegistry, ConcurrentRequestsDuringALoadWaitThenAllGetIt) {
  GatedLoader gate;
  ModelRegistry r(gate.loader());
  r.apply(config({spec("a", LoadPolicy::OnDemand)}));
  constexpr int kRequests = 6;
  std::vector<Outcome> outcomes(kRequests);
  std::vector<std::thread> threads;
  std::atomic<int> parked{0};
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      if (!r.acquire("a", outcomes[i].waiter())) ++parked;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(parked.load(), kRequests);
  EXPECT_TRUE(eventually([&] { return gate.started.load() == 1; }));
  auto s = r.status("a");
  EXPECT_EQ(s->state, ModelState::Loading);
  EXPECT_EQ(s->waiting, static_cast<size_t>(kRequests));
  std::this_thread::sleep_for(20ms);
  for (auto& o : outcomes) EXPECT_FALSE(o.done()) << "answered before the model loaded";

  gate.release();
  std::vector<ModelLease> leases;
  for (auto& o : outcomes) {
    ASSERT_TRUE(o.wait());
    EXPECT_FALSE(o.error());
    leases.push_back(o.take_lease());
    ASSERT_TRUE(leases.back());
    EXPECT_EQ(leases.back().model.get(), leases.front().model.get());
  }
  EXPECT_EQ(gate.loads.load(), 1);  // one load served them all
  EXPECT_EQ(r.status("a")->in_flight, kRequests);
  EXPECT_EQ(generate(*leases.back()).size(), 6u);
  leases.clear();
  EXPECT_EQ(r.status("a")->in_flight, 0);
}

TEST(ModelRegistry, WaitingIsBoundedInNumberAndTime) {
  GatedLoader gate;
  ModelRegistry r(gate.loader());
  ModelsConfig c = config({spec("a", LoadPolicy::OnDemand), spec("b", LoadPolicy::OnDemand)});
  c.max_load_waiters = 2;
  c.load_wait_timeout = 150ms;
  r.apply(c);
  Outcome first, second;
  EXPECT_FALSE(r.acquire("a", first.waiter()));
  EXPECT_FALSE(r.acquire("a", second.waiter()));
  Outcome third;
  try {
    r.acquire("a", third.waiter());
    ADD_FAILURE() << "a third waiter was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 503);
    EXPECT_EQ(e.code, "model_loading");
    EXPECT_GT(e.retry_after, 0);
    EXPECT_NE(std::string(e.what()).find("'a'"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(third.done());  // a refused waiter is never called
  // Past the timeout the waiters are answered 503 while the load goes on.
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(first.wait(5s));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 100ms);
  ASSERT_TRUE(first.error());
  EXPECT_EQ(first.error()->status, 503);
  EXPECT_NE(std::string(first.error()->what()).find("still loading"), std::string::npos);
  ASSERT_TRUE(second.wait(5s));
  EXPECT_TRUE(second.error());
  // Unknown names are 404 at once.
  try {
    r.acquire("zzz", third.waiter());
    ADD_FAILURE();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 404);
    EXPECT_EQ(e.code, "model_not_found");
  }
  gate.release();
  EXPECT_TRUE(eventually([&] { return state(r, "a") == ModelState::Ready; }));
  EXPECT_TRUE(r.acquire("a", third.waiter()));  // ready: a lease at once
}

TEST(ModelRegistry, AWaiterWhoseClientLeftIsForgotten) {
  GatedLoader gate;
  ModelRegistry r(gate.loader());
  r.apply(config({spec("a", LoadPolicy::OnDemand)}));
  Outcome stays, leaves;
  uint64_t stays_ticket = 0, leaves_ticket = 0;
  EXPECT_FALSE(r.acquire("a", stays.waiter(), &stays_ticket));
  EXPECT_FALSE(r.acquire("a", leaves.waiter(), &leaves_ticket));
  EXPECT_NE(stays_ticket, leaves_ticket);
  EXPECT_EQ(r.status("a")->waiting, 2u);
  r.cancel_wait(leaves_ticket);
  EXPECT_EQ(r.status("a")->waiting, 1u);
  gate.release();
  ASSERT_TRUE(stays.wait());
  EXPECT_TRUE(stays.take_lease());
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(leaves.done());
}

TEST(ModelRegistry, AFailedLoadIsReportedAndRetriedOnTheNextRequest) {
  std::atomic<int> attempts{0};
  ModelLoader flaky;
  flaky.load = [&](const ModelSpec& s) -> std::unique_ptr<ServedModel> {
    if (++attempts == 1) throw std::runtime_error("the disk is on fire");
    return ServedModel::load(s.id, s.path, s.engine);
  };
  ModelRegistry r(flaky);
  r.apply(config({spec("a", LoadPolicy::OnDemand)}));
  Outcome o;
  EXPECT_FALSE(r.acquire("a", o.waiter()));
  ASSERT_TRUE(o.wait());
  ASSERT_TRUE(o.error());
  EXPECT_EQ(o.error()->status, 503);
  EXPECT_EQ(o.error()->code, "model_load_failed");
  EXPECT_NE(std::string(o.error()->what()).find("the disk is on fire"), std::string::npos);
  auto s = r.status("a");
  EXPECT_EQ(s->state, ModelState::Failed);
  EXPECT_NE(s->error.find("the disk is on fire"), std::string::npos);
  EXPECT_EQ(s->memory_bytes, 0u);

  ModelLease l = acquire(r, "a");
  ASSERT_TRUE(l);
  EXPECT_EQ(attempts.load(), 2);
  s = r.status("a");
  EXPECT_EQ(s->state, ModelState::Ready);
  EXPECT_TRUE(s->error.empty());

  // A real broken file: the reader's message reaches the waiter, and /ready stays false for an
  // `always` model that failed.
  const std::string bad = test::scratch_dir() + "/broken.gguf";
  test::write_file(bad, "GGUF but not really");
  ModelSpec broken = spec("broken", LoadPolicy::Always);
  broken.path = bad;
  broken.stamp_file();
  ModelRegistry r2;
  r2.apply(config({broken}));
  try {
    r2.wait_for_always(10s);
    ADD_FAILURE() << "a broken model loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("broken.gguf"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(r2.ready());
  EXPECT_EQ(state(r2, "broken"), ModelState::Failed);
}

TEST(ModelRegistry, IdleOnDemandModelsUnloadAfterTheirTimeout) {
  ModelRegistry r;
  ModelSpec a = spec("a", LoadPolicy::OnDemand);
  a.idle_unload = 150ms;
  r.apply(config({a}));
  {
    ModelLease l = acquire(r, "a");
    std::this_thread::sleep_for(300ms);  // in use: stays however long it takes
    EXPECT_EQ(state(r, "a"), ModelState::Ready);
  }
  const auto released = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return state(r, "a") == ModelState::Unloaded; }));
  EXPECT_GE(std::chrono::steady_clock::now() - released, 100ms);
  EXPECT_EQ(r.memory_in_use(), 0u);
}

TEST(ModelRegistry, ReloadReplacesOnlyWhatChanged) {
  ModelRegistry r;
  ModelSpec c = spec("c", LoadPolicy::OnDemand);
  r.apply(config({spec("a", LoadPolicy::Always), spec("b", LoadPolicy::Always), c,
                  spec("gone", LoadPolicy::Always)}));
  r.wait_for_always(10s);
  ModelLease a_lease = acquire(r, "a");
  ModelLease b_lease = acquire(r, "b");
  ModelLease gone_lease = acquire(r, "gone");
  const std::vector<int32_t> expected = generate(*a_lease);
  const uint64_t one = expected_bytes(kKvMemory);

  // Duplicate names: refused, nothing changes.
  EXPECT_THROW(r.apply(config({spec("a", LoadPolicy::Always), spec("a", LoadPolicy::Always)})),
               ModelsFileError);
  EXPECT_TRUE(r.find("gone"));

  ModelSpec c2 = c;
  c2.aliases = {"c-alias"};
  c2.defaults = {{"temperature", 0.5}};
  const auto sum =
      r.apply(config({spec("a", LoadPolicy::Always), spec("b", LoadPolicy::Always, 2 * kKvMemory),
                      c2, spec("d", LoadPolicy::Always)}));
  EXPECT_EQ(sum.added, std::vector<std::string>{"d"});
  EXPECT_EQ(sum.replaced, std::vector<std::string>{"b"});
  EXPECT_EQ(sum.updated, std::vector<std::string>{"c"});
  EXPECT_EQ(sum.removed, std::vector<std::string>{"gone"});
  EXPECT_EQ(sum.unchanged, std::vector<std::string>{"a"});
  r.wait_for_always(10s);

  // Unchanged: the very same instance keeps serving.
  ModelLease a_now = acquire(r, "a");
  EXPECT_EQ(a_now.model.get(), a_lease.model.get());
  // Replaced: a new instance with the new settings; the old one serves its request to the end.
  ModelLease b_now = acquire(r, "b");
  EXPECT_NE(b_now.model.get(), b_lease.model.get());
  EXPECT_EQ(b_now->memory_bytes(), expected_bytes(2 * kKvMemory));
  EXPECT_EQ(generate(*b_lease), expected);
  // Removed: unknown to new requests, alive for the one holding it.
  EXPECT_FALSE(r.find("gone"));
  EXPECT_FALSE(r.status("gone"));
  Outcome o;
  EXPECT_THROW(r.acquire("gone", o.waiter()), ApiError);
  EXPECT_EQ(generate(*gone_lease), expected);
  // Updated in place: the new alias and defaults, no load.
  ASSERT_TRUE(r.find("c-alias"));
  EXPECT_EQ(r.find("c-alias")->id, "c");
  EXPECT_EQ(r.find("c")->defaults["temperature"], 0.5);
  EXPECT_EQ(state(r, "c"), ModelState::Unloaded);
  // Added: loaded (always).
  EXPECT_EQ(state(r, "d"), ModelState::Ready);
  std::vector<std::string> ids;
  for (const auto& s : r.status()) ids.push_back(s.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "c", "d"}));

  // Memory: a, new b, d, plus the old b and "gone" until their leases end.
  EXPECT_EQ(r.memory_in_use(), 4 * one + expected_bytes(2 * kKvMemory));
  b_lease = {};
  gone_lease = {};
  EXPECT_TRUE(
      eventually([&] { return r.memory_in_use() == 2 * one + expected_bytes(2 * kKvMemory); }));
}

TEST(ModelRegistry, AnAdoptedModelServesAsAnAlwaysModel) {
  ModelRegistry r;
  EXPECT_FALSE(r.ready());  // nothing configured
  const ModelSpec s = spec("pre", LoadPolicy::Always);
  r.adopt(ServedModel::load("pre", s.path, s.engine));
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.only_model(), "pre");
  auto status = r.status("pre");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->state, ModelState::Ready);
  EXPECT_EQ(status->policy, LoadPolicy::Always);
  EXPECT_EQ(status->memory_bytes, expected_bytes(kKvMemory));
  Outcome o;
  ModelLease l = r.acquire("pre", o.waiter());
  ASSERT_TRUE(l);
  EXPECT_EQ(generate(*l).size(), 6u);
  EXPECT_THROW(r.adopt(ServedModel::load("pre", s.path, s.engine)), std::invalid_argument);
}

TEST(ModelRegistry, ShutdownAnswersWaitingRequests) {
  GatedLoader gate;
  ModelRegistry r(gate.loader());
  r.apply(config({spec("a", LoadPolicy::OnDemand)}));
  Outcome o;
  EXPECT_FALSE(r.acquire("a", o.waiter()));
  EXPECT_TRUE(eventually([&] { return gate.started.load() == 1; }));
  std::thread stopper([&] { r.shutdown(1s); });
  ASSERT_TRUE(o.wait(5s));  // answered before the load finished
  ASSERT_TRUE(o.error());
  EXPECT_EQ(o.error()->status, 503);
  EXPECT_EQ(o.error()->code, "shutting_down");
  gate.release();
  stopper.join();
  EXPECT_EQ(r.memory_in_use(), 0u);
  try {
    r.acquire("a", o.waiter());
    ADD_FAILURE();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 503);
  }
}

}  // namespace
}  // namespace maas::server
