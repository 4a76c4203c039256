// The models file: YAML parsed with yaml-cpp into ModelsConfig, every key checked.
#include "server/models_file.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "model/kv_cache.h"
#include "server/openai_schema.h"

namespace maas::server {

const char* load_policy_name(LoadPolicy p) {
  return p == LoadPolicy::Always ? "always" : "on_demand";
}

bool ModelSpec::same_instance(const ModelSpec& o) const {
  const engine::EngineConfig& a = engine;
  const engine::EngineConfig& b = o.engine;
  return path == o.path && file_size == o.file_size && file_mtime_ns == o.file_mtime_ns &&
         copy_weights == o.copy_weights && a.max_running == b.max_running &&
         a.token_budget == b.token_budget && a.max_context == b.max_context &&
         a.kv_memory == b.kv_memory && a.block_size == b.block_size && a.kv_type == b.kv_type &&
         a.prefix_cache == b.prefix_cache && a.max_waiting == b.max_waiting &&
         a.threads == b.threads && a.fair_prompt_chunk == b.fair_prompt_chunk &&
         a.fair_step_ms == b.fair_step_ms;
}

void ModelSpec::stamp_file() {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw ModelsFileError(fmt::format("{} does not exist", path));
  }
  if (!S_ISREG(st.st_mode)) throw ModelsFileError(fmt::format("{} is not a file", path));
  if (::access(path.c_str(), R_OK) != 0) {
    throw ModelsFileError(fmt::format("{} is not readable", path));
  }
  file_size = static_cast<uint64_t>(st.st_size);
  file_mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

size_t parse_size(std::string_view text) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || text.empty()) {
    throw std::invalid_argument(
        fmt::format("'{}' is not a size (examples: 8G, 512M, 1000000)", text));
  }
  std::string unit(end, text.data() + text.size());
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double mult = 0;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    mult = 1024.0;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    mult = 1024.0 * 1024;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    mult = 1024.0 * 1024 * 1024;
  } else if (unit == "t" || unit == "tb" || unit == "tib") {
    mult = 1024.0 * 1024 * 1024 * 1024;
  } else {
    throw std::invalid_argument(fmt::format("'{}' has an unknown size unit (B, K, M, G, T)", text));
  }
  if (!(v >= 0) || v * mult > 1e15)
    throw std::invalid_argument(fmt::format("'{}' is out of range", text));
  return static_cast<size_t>(v * mult);
}

std::chrono::milliseconds parse_duration(std::string_view text) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || text.empty()) {
    throw std::invalid_argument(
        fmt::format("'{}' is not a duration (examples: 10m, 30s, 1h, 500ms)", text));
  }
  const std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  double ms_per = 0;
  if (unit.empty() || unit == "s") {
    ms_per = 1000;
  } else if (unit == "ms") {
    ms_per = 1;
  } else if (unit == "m") {
    ms_per = 60000;
  } else if (unit == "h") {
    ms_per = 3600000;
  } else if (unit == "d") {
    ms_per = 86400000;
  } else {
    throw std::invalid_argument(
        fmt::format("'{}' has an unknown duration unit (ms, s, m, h, d)", text));
  }
  const double ms = v * ms_per;
  if (!(ms >= 0) || ms > 366.0 * 86400000) {
    throw std::invalid_argument(fmt::format("'{}' is out of range (0 to 366d)", text));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

namespace {

// Reads YAML nodes with errors that name the file, the line and the key.
class Reader {
 public:
  explicit Reader(std::string name) : name_(std::move(name)) {}

  std::string where(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    if (m.line < 0) return name_;
    return fmt::format("{}:{}:{}", name_, m.line + 1, m.column + 1);
  }
  std::string line_of(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    return m.line < 0 ? name_ : fmt::format("{}:{}", name_, m.line + 1);
  }
  [[noreturn]] void fail(const YAML::Node& n, const std::string& key,
                         const std::string& message) const {
    throw ModelsFileError(fmt::format("{}: {}: {}", where(n), key, message));
  }

  std::string string(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) fail(n, key, "must be a string");
    return n.Scalar();
  }
  int64_t integer(const YAML::Node& n, const std::string& key, int64_t lo, int64_t hi) const {
    if (!n.IsScalar()) fail(n, key, "must be an integer");
    const std::string& s = n.Scalar();
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
      fail(n, key, fmt::format("must be an integer, not '{}'", s));
    }
    if (v < lo || v > hi) fail(n, key, fmt::format("must be between {} and {}", lo, hi));
    return v;
  }
  double number(const YAML::Node& n, const std::string& key, double lo, double hi) const {
    if (!n.IsScalar()) fail(n, key, "must be a number");
    const std::string& s = n.Scalar();
    double v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || s.empty() || !std::isfinite(v)) {
      fail(n, key, fmt::format("must be a number, not '{}'", s));
    }
    if (v < lo || v > hi) fail(n, key, fmt::format("must be between {} and {}", lo, hi));
    return v;
  }
  bool boolean(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) fail(n, key, "must be true or false");
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True" || s == "yes") return true;
    if (s == "false" || s == "False" || s == "no") return false;
    fail(n, key, fmt::format("must be true or false, not '{}'", s));
  }
  size_t size(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) fail(n, key, "must be a size such as 8G or 512M");
    try {
      return parse_size(n.Scalar());
    } catch (const std::invalid_argument& e) {
      fail(n, key, e.what());
    }
  }
  std::chrono::milliseconds duration(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) fail(n, key, "must be a duration such as 10m or 30s");
    if (n.Scalar() == "never") return std::chrono::milliseconds(0);
    try {
      return parse_duration(n.Scalar());
    } catch (const std::invalid_argument& e) {
      fail(n, key, e.what());
    }
  }
  // The pairs of a mapping, refusing a key given twice.
  std::vector<std::pair<std::string, std::pair<YAML::Node, YAML::Node>>> entries(
      const YAML::Node& map, const std::string& what) const {
    std::vector<std::pair<std::string, std::pair<YAML::Node, YAML::Node>>> out;
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      const YAML::Node key = it->first;
      if (!key.IsScalar()) fail(key, what, "keys must be strings");
      const std::string& k = key.Scalar();
      if (!seen.insert(k).second) fail(key, join(what, k), "is given twice");
      out.push_back({k, {key, it->second}});
    }
    return out;
  }
  static std::string join(const std::string& prefix, const std::string& key) {
    return prefix.empty() ? key : prefix + "." + key;
  }

  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("._-:/@+", c) != nullptr;
  });
}

// A YAML scalar or sequence of scalars as JSON: plain scalars that read as numbers, booleans or
// null become those; quoted ones stay strings.
nlohmann::ordered_json to_json(const Reader& r, const YAML::Node& n, const std::string& key) {
  if (n.IsSequence()) {
    auto a = nlohmann::ordered_json::array();
    for (const auto& item : n) {
      if (!item.IsScalar()) r.fail(item, key, "must hold plain values");
      a.push_back(to_json(r, item, key));
    }
    return a;
  }
  if (n.IsNull()) return nullptr;
  if (!n.IsScalar()) r.fail(n, key, "must be a value or a list of values");
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted
  int64_t i = 0;
  if (auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), i);
      ec == std::errc() && end == s.data() + s.size() && !s.empty()) {
    return i;
  }
  double d = 0;
  if (auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
      ec == std::errc() && end == s.data() + s.size() && !s.empty() && std::isfinite(d)) {
    return d;
  }
  if (s == "true" || s == "false") return s == "true";
  return s;
}

const std::vector<std::string> kDefaultKeys = {"temperature",
                                               "top_p",
                                               "top_k",
                                               "min_p",
                                               "typical_p",
                                               "repetition_penalty",
                                               "presence_penalty",
                                               "frequency_penalty",
                                               "max_tokens",
                                               "stop",
                                               "seed"};

void parse_defaults(const Reader& r, const YAML::Node& node, const std::string& prefix,
                    ModelSpec& spec) {
  if (!node.IsMap()) r.fail(node, prefix, "must be a mapping of request fields to values");
  std::map<std::string, YAML::Node> nodes;
  for (const auto& [k, kv] : r.entries(node, prefix)) {
    const std::string key = Reader::join(prefix, k);
    if (std::find(kDefaultKeys.begin(), kDefaultKeys.end(), k) == kDefaultKeys.end()) {
      r.fail(kv.first, key,
             fmt::format("is not a request default (known: {})", fmt::join(kDefaultKeys, ", ")));
    }
    spec.defaults[k] = to_json(r, kv.second, key);
    nodes.emplace(k, kv.second);
  }
  // The request parsers check the values, so a default is valid exactly when a request with
  // that field would be.
  Json chat = spec.defaults;
  chat["model"] = spec.id.empty() ? "m" : spec.id;
  chat["messages"] = Json::array({{{"role", "user"}, {"content", "x"}}});
  Json completion = spec.defaults;
  completion["model"] = chat["model"];
  completion["prompt"] = "x";
  try {
    parse_chat_request(chat);
    parse_completion_request(completion);
  } catch (const ApiError& e) {
    auto it = nodes.find(e.param);
    const YAML::Node& at = it != nodes.end() ? it->second : node;
    r.fail(at, it != nodes.end() ? Reader::join(prefix, e.param) : prefix, e.what());
  }
}

ModelSpec parse_model(const Reader& r, const YAML::Node& node, size_t index,
                      const std::string& base_dir, const ModelSpec& base) {
  const std::string prefix = fmt::format("models[{}]", index);
  if (!node.IsMap()) r.fail(node, prefix, "must be a mapping with at least id and path");
  ModelSpec spec = base;
  spec.id.clear();
  spec.path.clear();
  spec.aliases.clear();
  spec.defaults = Json::object();
  spec.policy = LoadPolicy::Always;
  spec.idle_unload = std::chrono::milliseconds(0);
  spec.origin = r.line_of(node);
  const auto entries = r.entries(node, prefix);
  // (A default YAML::Node is a null node, and its operator= assigns the referenced node's
  // content: optionals say "absent" and emplace rebinds.)
  std::optional<YAML::Node> path_node, idle_node, defaults_node;
  for (const auto& [k, kv] : entries) {
    const std::string key = Reader::join(prefix, k);
    const YAML::Node& v = kv.second;
    if (k == "id") {
      spec.id = r.string(v, key);
      if (!valid_name(spec.id)) {
        r.fail(v, key,
               fmt::format("'{}' is not a valid model name (1 to 128 letters, digits and ._-:/@+)",
                           spec.id));
      }
    } else if (k == "path") {
      spec.path = r.string(v, key);
      if (spec.path.empty()) r.fail(v, key, "must not be empty");
      path_node.emplace(v);
    } else if (k == "aliases") {
      if (!v.IsSequence()) r.fail(v, key, "must be a list of names");
      for (const auto& a : v) {
        const std::string alias = r.string(a, key);
        if (!valid_name(alias)) {
          r.fail(a, key, fmt::format("'{}' is not a valid model name", alias));
        }
        spec.aliases.push_back(alias);
      }
    } else if (k == "load") {
      const std::string p = r.string(v, key);
      if (p == "always") {
        spec.policy = LoadPolicy::Always;
      } else if (p == "on_demand") {
        spec.policy = LoadPolicy::OnDemand;
      } else {
        r.fail(v, key, fmt::format("must be always or on_demand, not '{}'", p));
      }
    } else if (k == "idle_unload") {
      spec.idle_unload = r.duration(v, key);
      idle_node.emplace(v);
    } else if (k == "context_size") {
      spec.engine.max_context = r.integer(v, key, 1, int64_t{1} << 24);
    } else if (k == "threads") {
      spec.engine.threads = static_cast<int>(r.integer(v, key, 0, 1024));
    } else if (k == "kv_memory") {
      spec.engine.kv_memory = r.size(v, key);
    } else if (k == "kv_type") {
      const std::string t = r.string(v, key);
      try {
        spec.engine.kv_type = model::kv_type_from_name(t);
      } catch (const std::exception&) {
        r.fail(v, key, fmt::format("must be f16, q8_0 or f32, not '{}'", t));
      }
    } else if (k == "max_running") {
      spec.engine.max_running = static_cast<int32_t>(r.integer(v, key, 1, 4096));
    } else if (k == "token_budget") {
      spec.engine.token_budget = static_cast<int32_t>(r.integer(v, key, 1, 1 << 20));
    } else if (k == "max_waiting") {
      spec.engine.max_waiting = static_cast<size_t>(r.integer(v, key, 0, 10000000));
    } else if (k == "prefix_cache") {
      spec.engine.prefix_cache = r.boolean(v, key);
    } else if (k == "fair_prompt_chunk") {
      spec.engine.fair_prompt_chunk = static_cast<int32_t>(r.integer(v, key, 0, 1 << 20));
    } else if (k == "fair_step_ms") {
      spec.engine.fair_step_ms = r.number(v, key, 0.0, 1e6);
    } else if (k == "mmap") {
      spec.copy_weights = !r.boolean(v, key);
    } else if (k == "defaults") {
      defaults_node.emplace(v);
    } else {
      r.fail(kv.first, key,
             "is not a model setting (known: id, path, aliases, load, idle_unload, "
             "context_size, threads, kv_memory, kv_type, max_running, token_budget, "
             "max_waiting, prefix_cache, fair_prompt_chunk, fair_step_ms, mmap, defaults)");
    }
  }
  if (spec.id.empty()) r.fail(node, prefix + ".id", "is required");
  if (spec.path.empty()) r.fail(node, prefix + ".path", "is required");
  if (defaults_node) parse_defaults(r, *defaults_node, prefix + ".defaults", spec);
  if (idle_node && spec.policy == LoadPolicy::Always && spec.idle_unload.count() > 0) {
    r.fail(*idle_node, prefix + ".idle_unload",
           "applies to on_demand models only (models with load: always stay loaded)");
  }
  if (std::filesystem::path(spec.path).is_relative() && !base_dir.empty()) {
    spec.path = (std::filesystem::path(base_dir) / spec.path).lexically_normal().string();
  }
  try {
    spec.stamp_file();
  } catch (const ModelsFileError& e) {
    r.fail(path_node ? *path_node : node, prefix + ".path", e.what());
  }
  return spec;
}

}  // namespace

ModelsConfig parse_models_yaml(std::string_view text, const std::string& name,
                               const std::string& base_dir, const ModelSpec& base) {
  const Reader r(name);
  YAML::Node root;
  try {
    root.reset(YAML::Load(std::string(text)));
  } catch (const YAML::Exception& e) {
    if (e.mark.line >= 0) {
      throw ModelsFileError(fmt::format("{}:{}:{}: not valid YAML: {}", name, e.mark.line + 1,
                                        e.mark.column + 1, e.msg));
    }
    throw ModelsFileError(fmt::format("{}: not valid YAML: {}", name, e.msg));
  }
  if (!root || root.IsNull()) {
    throw ModelsFileError(fmt::format("{}: the file is empty: it needs a 'models' list", name));
  }
  if (!root.IsMap()) r.fail(root, "(top level)", "must be a mapping with a 'models' list");
  ModelsConfig config;
  bool have_models = false;
  try {
    for (const auto& [k, kv] : r.entries(root, "")) {
      const YAML::Node& v = kv.second;
      if (k == "models") {
        have_models = true;
        if (v.IsNull()) continue;  // "models:" with nothing: no models
        if (!v.IsSequence()) r.fail(v, k, "must be a list of models");
        for (size_t i = 0; i < v.size(); ++i) {
          config.models.push_back(parse_model(r, v[i], i, base_dir, base));
        }
      } else if (k == "memory_budget") {
        config.memory_budget = r.size(v, k);
      } else if (k == "max_load_waiters") {
        config.max_load_waiters = static_cast<size_t>(r.integer(v, k, 1, 1000000));
      } else if (k == "load_wait_timeout") {
        config.load_wait_timeout = r.duration(v, k);
        if (config.load_wait_timeout.count() <= 0) r.fail(v, k, "must be longer than 0");
      } else {
        r.fail(kv.first, k,
               "is not a setting (known: models, memory_budget, max_load_waiters, "
               "load_wait_timeout)");
      }
    }
  } catch (const YAML::Exception& e) {
    // Conversions of malformed nodes: reported where they are.
    throw ModelsFileError(fmt::format("{}:{}: {}", name, e.mark.line + 1, e.msg));
  }
  if (!have_models) throw ModelsFileError(fmt::format("{}: 'models' is required", name));
  check_unique_names(config.models);
  return config;
}

ModelsConfig read_models_file(const std::string& path, const ModelSpec& base) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelsFileError(fmt::format("{}: cannot read the models file", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > (size_t{16} << 20)) {
    throw ModelsFileError(fmt::format("{}: the models file is larger than 16 MiB", path));
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return parse_models_yaml(text.str(), path, dir.empty() ? "." : dir, base);
}

void check_unique_names(const std::vector<ModelSpec>& models) {
  std::map<std::string, const ModelSpec*> owner;
  for (const ModelSpec& m : models) {
    std::vector<std::string> names = {m.id};
    names.insert(names.end(), m.aliases.begin(), m.aliases.end());
    for (const std::string& n : names) {
      auto [it, fresh] = owner.emplace(n, &m);
      if (fresh) continue;
      if (it->second == &m) {
        throw ModelsFileError(fmt::format(
            "{}: model '{}' names '{}' twice (id and aliases must differ)", m.origin, m.id, n));
      }
      throw ModelsFileError(
          fmt::format("{}: the name '{}' of model '{}' is already used by "
                      "model '{}' ({})",
                      m.origin, n, m.id, it->second->id, it->second->origin));
    }
  }
}

}  // namespace maas::server
