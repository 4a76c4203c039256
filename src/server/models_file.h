// The models file of `maas serve --models-file` (YAML): which models the server offers, under
// which names, with which engine settings and request defaults, when each is loaded and unloaded,
// and the memory budget they share. docs/MODELS.md describes the format.
//
// The file is untrusted input: every key is checked (unknown keys, wrong types, out-of-range
// values, duplicate keys, ids or aliases, missing model files), and every error is a
// ModelsFileError whose message names the file, the line and the key.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace maas::server {

class ModelsFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class LoadPolicy {
  Always,    // loaded at start (or when configured) and never evicted
  OnDemand,  // loaded by the first request for it; evictable when idle
};
const char* load_policy_name(LoadPolicy p);  // "always", "on_demand"

// One configured model.
struct ModelSpec {
  std::string id;    // the name in requests, responses, the ledger and the admin API
  std::string path;  // the GGUF file
  std::vector<std::string> aliases;  // other names accepted in requests
  // Request fields (OpenAI names: temperature, top_p, max_tokens, stop, ...) applied to
  // completions and chat completions that leave them out.
  nlohmann::ordered_json defaults = nlohmann::ordered_json::object();
  engine::EngineConfig engine;  // model_id is set to `id` when loaded
  bool copy_weights = false;    // read the weights into memory instead of mapping the file
  LoadPolicy policy = LoadPolicy::Always;
  std::chrono::milliseconds idle_unload{0};  // on_demand: unload after this long unused; 0: never
  std::string origin;                        // where it was configured, for messages ("m.yaml:12")
  // The file as it was when configured: rewriting it in place counts as a change on reload.
  uint64_t file_size = 0;
  int64_t file_mtime_ns = 0;

  // Whether an instance loaded for `other` serves this spec unchanged: the same file (path and
  // identity), weight loading and engine settings. Names, defaults and policies may differ.
  bool same_instance(const ModelSpec& other) const;
  // Fills file_size and file_mtime_ns; throws ModelsFileError if `path` is not a readable file.
  void stamp_file();
};

struct ModelsConfig {
  size_t memory_budget = 0;      // bytes for weights + KV pools of loaded models; 0: no limit
  size_t max_load_waiters = 64;  // requests that may wait for one model to load; beyond: 503
  std::chrono::milliseconds load_wait_timeout{std::chrono::seconds(120)};  // beyond: 503
  std::vector<ModelSpec> models;
};

// Parses a models file's text. `name` is used in messages, relative model paths are resolved
// against `base_dir`, and settings a model does not give come from `base` (the command line's).
ModelsConfig parse_models_yaml(std::string_view text, const std::string& name,
                               const std::string& base_dir, const ModelSpec& base);
// Reads and parses a models file (paths relative to its directory).
ModelsConfig read_models_file(const std::string& path, const ModelSpec& base);

// Throws ModelsFileError if two models share an id or alias (naming both origins).
void check_unique_names(const std::vector<ModelSpec>& models);

// "8G", "512MiB", "1.5g", "1000000" (bytes; K/M/G/T are powers of 1024). Throws
// std::invalid_argument with a message naming the text.
size_t parse_size(std::string_view text);
// "10m", "30s", "1h", "500ms", "2d", "90" (seconds). Throws std::invalid_argument.
std::chrono::milliseconds parse_duration(std::string_view text);

}  // namespace maas::server
