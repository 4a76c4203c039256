// The models `maas serve` offers: each configured model (server/models_file.h) with its state,
// loaded on demand or at start, unloaded when idle or evicted under a memory budget, replaced on
// reload, and kept alive by leases while requests use it.
//
// Threading: every method is thread-safe and none blocks on a load, except wait_for_always().
// Loads run on the registry's loader thread, one at a time; idle unloads, wait timeouts and the
// destruction of instances on its housekeeping thread (an engine must never be stopped from its
// own thread, where the last request may end). Requests for a model that is not loaded yet wait
// as Waiters: callbacks invoked later, once, without the registry's lock held, with a lease or
// an error.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/models_file.h"
#include "server/openai_schema.h"
#include "template/template.h"

namespace maas::gguf {
class File;
}

namespace maas::server {

// A loaded model with its engine.
struct ServedModel {
  std::string id, path;
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::unique_ptr<engine::Engine> engine;
  std::optional<tmpl::Template> chat_template;  // none: the default (see docs/API.md)
  int64_t created = 0;                          // unix time it was loaded
  uint64_t weight_bytes = 0;                    // the GGUF file (mapped or copied)
  uint64_t kv_bytes = 0;                        // the engine's KV block pool
  uint64_t memory_bytes() const { return weight_bytes + kv_bytes; }

  // Loads the file, builds the engine and starts its thread. Throws with a clear message.
  static std::unique_ptr<ServedModel> load(const std::string& id, const std::string& path,
                                           const engine::EngineConfig& config,
                                           bool copy_weights = false);
  ~ServedModel();
};

// What a model takes in memory once loaded: what the memory budget counts.
struct ModelFootprint {
  uint64_t weight_bytes = 0, kv_bytes = 0;
  uint64_t total() const { return weight_bytes + kv_bytes; }
};
// The bytes of the KV block pool an engine with config `c` allocates for a model.
uint64_t kv_pool_bytes(const model::HParams& hp, const engine::EngineConfig& c);
// Reads the file's header (mapped: no weight is read) and computes the footprint of loading it
// with the spec's settings, before anything is allocated. Throws with a clear message.
ModelFootprint estimate_footprint(const ModelSpec& spec);

// How the registry loads models (tests substitute slow or failing loads).
struct ModelLoader {
  std::function<ModelFootprint(const ModelSpec&)> footprint = estimate_footprint;
  std::function<std::unique_ptr<ServedModel>(const ModelSpec&)> load = [](const ModelSpec& s) {
    return ServedModel::load(s.id, s.path, s.engine, s.copy_weights);
  };
};

enum class ModelState {
  Unloaded,   // configured, not in memory
  Loading,    // a load is queued or running
  Ready,      // serving
  Unloading,  // unloaded by the admin API; its last requests are finishing
  Failed,     // the last load failed (see error); the next request retries
};
const char* model_state_name(ModelState s);  // "unloaded", "loading", ...

// A request's hold on a loaded model. While any copy of `model` exists the instance stays
// alive, even if the model is unloaded, replaced or removed meanwhile.
struct ModelLease {
  std::shared_ptr<ServedModel> model;
  std::shared_ptr<const ModelSpec> spec;  // the configuration when acquired (defaults, names)
  explicit operator bool() const { return model != nullptr; }
  ServedModel* operator->() const { return model.get(); }
  ServedModel& operator*() const { return *model; }
};

// One configured model as the admin API shows it.
struct ModelStatus {
  std::string id, path;
  std::vector<std::string> aliases;
  LoadPolicy policy = LoadPolicy::Always;
  ModelState state = ModelState::Unloaded;
  std::string error;                 // why the last load failed (state Failed)
  uint64_t memory_bytes = 0;         // of its instances in memory (including ones draining)
  std::optional<int64_t> loaded_at;  // unix seconds, while loaded
  std::optional<int64_t> last_used;  // unix milliseconds of the last request, if any
  int64_t in_flight = 0;             // requests holding a lease on one of its instances
  size_t waiting = 0;                // requests waiting for it to load
  int64_t created = 0;               // unix seconds it was configured (the OpenAI "created")
  std::chrono::milliseconds idle_unload{0};
};

// What a reload did, by model id.
struct ReloadSummary {
  std::vector<std::string> added, replaced, updated, removed, unchanged;
};

// Engine gauges of a loaded model (for /metrics).
struct LoadedModelStats {
  std::string id;
  engine::EngineStats stats;
  uint64_t memory_bytes = 0;
};

class ModelRegistry {
 public:
  // Called exactly once with a lease, or with an error (lease empty).
  using Waiter = std::function<void(ModelLease lease, const ApiError* error)>;

  explicit ModelRegistry(ModelLoader loader = {});
  ~ModelRegistry();  // shutdown()
  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // Makes `config` the configuration: new models are added, removed ones disappear (their
  // instances unload once their last request ends), changed ones (file or engine settings) are
  // replaced, the rest keep serving untouched (names, defaults and policies update in place).
  // `always` models are queued for loading. Throws ModelsFileError for duplicate names (and then
  // changes nothing).
  ReloadSummary apply(const ModelsConfig& config);
  // Where reload() reads the configuration (e.g. the models file plus the -m models).
  void set_source(std::function<ModelsConfig()> source);
  // Reads the source and applies it. Throws (changing nothing) if it cannot be read.
  ReloadSummary reload();
  // An already loaded model as an `always` model (Api::add_model).
  void adopt(std::unique_ptr<ServedModel> model);

  // Blocks until every `always` model is loaded or failed; throws std::runtime_error naming
  // the failures (or a timeout). For startup.
  void wait_for_always(std::chrono::milliseconds timeout);

  // The configuration of the model called `name` (id or alias); null if none.
  std::shared_ptr<const ModelSpec> find(const std::string& name) const;
  // The id of the only configured model, if exactly one is configured.
  std::optional<std::string> only_model() const;

  // A lease on the model called `name` if it is ready. Otherwise starts loading it if needed,
  // queues `waiter` and returns an empty lease: the waiter is called later (on one of the
  // registry's threads, or on a thread calling apply(), unload() or shutdown()), never inside
  // this call. Throws
  // ApiError: 404 for an unknown name, 503 (with retry_after) when too many requests already
  // wait for this model or the registry is shutting down. `ticket` (if given) receives a
  // number for cancel_wait().
  ModelLease acquire(const std::string& name, Waiter waiter, uint64_t* ticket = nullptr);
  // Forgets a waiting request (its client went away); its waiter is not called.
  void cancel_wait(uint64_t ticket);

  // Unloads a model: it stops taking requests now and leaves memory once its requests in
  // flight have finished (state unloading meanwhile); the next request loads it again. Throws
  // ApiError 404 (unknown id) or 409 (an `always` model). Returns its state afterwards.
  ModelState unload(const std::string& id);

  std::vector<ModelStatus> status() const;  // in configuration order
  std::optional<ModelStatus> status(const std::string& id) const;
  bool ready() const;  // at least one model configured, and every `always` model loaded
  std::vector<LoadedModelStats> loaded_stats() const;
  size_t loaded_count() const;
  uint64_t memory_in_use() const;  // of every instance in memory
  uint64_t memory_budget() const;  // 0: none

  // Fails every waiting request (503), stops the loader thread, waits up to `drain` for
  // requests holding leases, then unloads everything. Idempotent.
  void shutdown(std::chrono::milliseconds drain = std::chrono::seconds(10));

  struct State;  // internal, shared with leases (which may outlive the registry)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace maas::server
