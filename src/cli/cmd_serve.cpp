// `maas serve`: the OpenAI-compatible HTTP server over one engine per model.
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "cli/commands.h"
#include "model/kv_cache.h"
#include "platform/admin_api.h"
#include "platform/store.h"
#include "server/api.h"
#include "server/http_server.h"
#include "server/models_file.h"

namespace maas::cli {

namespace {

struct ServeOptions {
  std::vector<std::string> models;  // [ID=]PATH
  std::string models_file;          // YAML (server/models_file.h)
  std::string host = "127.0.0.1";
  int port = 8080;
  int threads = 0, io_threads = 2;
  std::string kv_memory = "0", kv_type = "f16";
  std::vector<std::string> api_keys, admin_keys;
  int max_running = 32, token_budget = 256;
  int64_t ctx_size = 0;
  size_t max_waiting = 256;
  int fair_chunk = engine::EngineConfig{}.fair_prompt_chunk;
  double fair_step_ms = engine::EngineConfig{}.fair_step_ms;
  double shutdown_timeout = 30;
  bool no_prefix_cache = false;
  bool mmap = false;
  std::string data_dir, database;
};

// The models to serve: those of -m (load: always, the command line's settings) and of the
// models file, whose names must not clash. Read at start and again on every reload.
server::ModelsConfig models_config(const ServeOptions& o, const server::ModelSpec& base) {
  server::ModelsConfig config;
  if (!o.models_file.empty()) config = server::read_models_file(o.models_file, base);
  std::vector<server::ModelSpec> flags;
  for (const std::string& arg : o.models) {
    server::ModelSpec m = base;
    m.path = arg;
    if (auto eq = arg.find('='); eq != std::string::npos && !std::filesystem::exists(arg)) {
      m.id = arg.substr(0, eq);
      m.path = arg.substr(eq + 1);
    } else {
      m.id = std::filesystem::path(arg).stem().string();
    }
    m.origin = "-m " + arg;
    try {
      m.stamp_file();
    } catch (const server::ModelsFileError& e) {
      throw server::ModelsFileError(fmt::format("-m {}: {}", arg, e.what()));
    }
    flags.push_back(std::move(m));
  }
  config.models.insert(config.models.begin(), flags.begin(), flags.end());
  server::check_unique_names(config.models);
  return config;
}

int serve(const ServeOptions& o) {
  engine::EngineConfig ec;
  ec.max_running = o.max_running;
  ec.token_budget = o.token_budget;
  ec.max_context = o.ctx_size;
  ec.kv_memory = server::parse_size(o.kv_memory);
  ec.kv_type = model::kv_type_from_name(o.kv_type);
  ec.prefix_cache = !o.no_prefix_cache;
  ec.max_waiting = o.max_waiting;
  ec.fair_prompt_chunk = o.fair_chunk;
  ec.fair_step_ms = o.fair_step_ms;
  ec.threads = o.threads;

  server::ApiConfig ac;
  ac.api_keys = o.api_keys;
  ac.admin_keys = o.admin_keys;
  if (const char* env = std::getenv("MAAS_ADMIN_KEY"); env != nullptr && *env != '\0') {
    ac.admin_keys.emplace_back(env);
  }
  // Keys created with `maas keys` live in the data directory's store. With keys there (or
  // --api-key), every API call needs one; with none, the API is open.
  std::shared_ptr<platform::Store> store = platform::open_store(o.data_dir, o.database);
  const size_t stored_keys = store->list_keys().size();
  std::fprintf(stderr, "maas: state in %s (%zu API key(s))\n", store->location().c_str(),
               stored_keys);
  auto keys_known = std::make_shared<std::atomic<bool>>(stored_keys > 0);
  {
    // Whether any key exists, re-read at most once a second (keys made by `maas keys` in another
    // process) and at once when this server's admin API makes one.
    auto checked = std::make_shared<std::atomic<int64_t>>(platform::now_millis());
    ac.keys_exist = [store, known = keys_known, checked] {
      if (known->load()) return true;
      const int64_t now = platform::now_millis();
      if (now - checked->load() >= 1000) {
        checked->store(now);
        known->store(!store->list_keys().empty());
      }
      return known->load();
    };
    ac.authenticate = [store](std::string_view secret) -> std::optional<server::Principal> {
      auto r = store->authenticate(secret, platform::now_millis());
      if (!r) return std::nullopt;
      const auto& o = r.key->options;
      server::Principal p;
      p.tenant = r.key->tenant;
      p.key_id = r.key->id;
      p.models = o.models;
      p.key_limits = {o.rpm, o.tpm, o.daily_tokens, o.monthly_tokens};
      // Read per request, so a tenant's new weight or limits apply at once.
      if (auto t = store->find_tenant(r.key->tenant)) {
        p.tenant_limits = {t->limits.rpm, t->limits.tpm, t->limits.daily_tokens,
                           t->limits.monthly_tokens};
        p.tenant_weight = t->weight;
      }
      return p;
    };
  }
  ac.record_usage = [store](const server::UsageRecord& u) {
    platform::LedgerEntry e;
    e.request_id = u.request_id;
    e.tenant = u.tenant;
    e.key_id = u.key_id;
    e.model = u.model;
    e.prompt_tokens = u.prompt_tokens;
    e.cached_tokens = u.cached_tokens;
    e.completion_tokens = u.completion_tokens;
    e.status = u.status;
    e.finish_reason = u.finish_reason;
    e.queued_at = u.queued_at;
    e.first_token_at = u.first_token_at;
    e.ended_at = u.ended_at;
    // Completion ids are 128 random bits, so kDuplicate means the record is already there (a
    // PostgreSQL commit that landed before its connection broke, then retried): stored once.
    store->record(e);
  };
  ac.tokens_used = [store](bool tenant, const std::string& id, int64_t since_ms) {
    const auto scope = tenant ? platform::UsageScope::tenant(id) : platform::UsageScope::key(id);
    return store->tokens_used(scope, since_ms).total_tokens();
  };
  ac.usage_of = [store](const std::string& tenant, int days) {
    const auto now = platform::now_millis();
    const auto from = platform::utc_day_start(now) - int64_t{days - 1} * 86400000;
    std::vector<server::UsageSummary> out;
    for (const auto& r : store->usage_by_model_day(tenant, from, now + 1)) {
      out.push_back(
          {r.model, r.day, r.requests, r.prompt_tokens, r.cached_tokens, r.completion_tokens});
    }
    return out;
  };
  auto admin = std::make_shared<platform::AdminApi>(store);
  ac.admin = [admin, keys_known](
                 const std::string& method, const std::string& path, const std::string& query,
                 const nlohmann::ordered_json& body) -> std::optional<server::AdminReply> {
    auto r = admin->handle(method, path, query, body, platform::now_millis());
    if (!r) return std::nullopt;
    if (r->status == 201 && path == "/admin/keys") keys_known->store(true);  // closes an open API
    return server::AdminReply{r->status, std::move(r->body)};
  };
  if (const char* delay = std::getenv("MAAS_TEST_LOAD_DELAY_MS"); delay != nullptr) {
    // For tests: every model load takes this much longer, so requests can arrive mid-load.
    const auto ms = std::chrono::milliseconds(std::atoll(delay));
    ac.model_loader.load = [ms, load = ac.model_loader.load](const server::ModelSpec& s) {
      std::this_thread::sleep_for(ms);
      return load(s);
    };
  }
  server::Api api(ac);
  // Models: `always` ones load now (a failure ends the server), on_demand ones when asked for.
  if (o.models.empty() && o.models_file.empty()) {
    throw std::runtime_error("no model to serve: give -m MODEL.gguf or --models-file FILE");
  }
  server::ModelSpec base;
  base.engine = ec;
  base.copy_weights = !o.mmap;
  api.models().set_source([o, base] { return models_config(o, base); });
  api.models().apply(models_config(o, base));
  api.models().wait_for_always(std::chrono::hours(24));
  if (o.api_keys.empty() && stored_keys == 0) {
    std::fprintf(stderr,
                 "maas: no API key configured: the API is open to anyone who can connect "
                 "until a key is created\n");
  }
  server::HttpConfig hc;
  hc.host = o.host;
  hc.port = static_cast<uint16_t>(o.port);
  hc.io_threads = o.io_threads;
  server::HttpServer http(
      hc, [&api](server::HttpRequest&& req, std::shared_ptr<server::ResponseWriter> w) {
        api.handle(std::move(req), std::move(w));
      });
  http.start();
  std::fprintf(stderr, "maas: listening on http://%s:%u\n", o.host.c_str(),
               static_cast<unsigned>(http.port()));
  // SIGHUP re-reads the models file (as POST /admin/models/reload does); a bad file changes
  // nothing.
  const int sig = http.wait_for_shutdown_signal([&api] {
    try {
      const auto sum = api.models().reload();
      std::fprintf(stderr,
                   "maas: SIGHUP: reloaded the models: %zu added, %zu replaced, %zu updated, "
                   "%zu removed, %zu unchanged\n",
                   sum.added.size(), sum.replaced.size(), sum.updated.size(), sum.removed.size(),
                   sum.unchanged.size());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "maas: SIGHUP: reload refused, the configuration is unchanged: %s\n",
                   e.what());
    }
  });
  std::fprintf(stderr, "maas: signal %d: finishing %zu request(s) in flight (up to %.0f s)\n", sig,
               api.in_flight(), o.shutdown_timeout);
  http.shutdown(std::chrono::milliseconds(static_cast<int64_t>(o.shutdown_timeout * 1000)));
  api.cancel_all();
  std::fprintf(stderr, "maas: stopped\n");
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve models over an OpenAI-compatible HTTP API");
  cmd->add_option("-m,--model", o->models,
                  "[ID=]MODEL.gguf (repeatable; loaded at start); ID: file name");
  cmd->add_option("--models-file", o->models_file,
                  "YAML file of models: names, settings, on-demand loading, memory budget "
                  "(docs/MODELS.md); SIGHUP re-reads it");
  cmd->add_option("--host", o->host, "Address to listen on");
  cmd->add_option("--port", o->port, "TCP port (0: any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("-t,--threads", o->threads, "Compute threads per model (0: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--io-threads", o->io_threads, "HTTP I/O threads")->check(CLI::Range(1, 64));
  cmd->add_option("--kv-memory", o->kv_memory, "KV cache memory per model (e.g. 2G; 0: auto)");
  cmd->add_option("--kv-type", o->kv_type, "KV cache storage: f16, q8_0 or f32");
  cmd->add_option("--api-key", o->api_keys, "Accepted API key (repeatable; none: open)");
  cmd->add_option("--admin-key", o->admin_keys,
                  "Key for the admin API, /admin/... (repeatable; also $MAAS_ADMIN_KEY; none: "
                  "the admin API is disabled)");
  cmd->add_option("--max-running", o->max_running, "Sequences per batch")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--token-budget", o->token_budget, "Tokens per engine step")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-c,--ctx-size", o->ctx_size, "Context size (0: the model's)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-waiting", o->max_waiting, "Queued requests before 429 (0: unbounded)");
  add_fair_options(cmd, &o->fair_chunk, &o->fair_step_ms);
  cmd->add_option("--shutdown-timeout", o->shutdown_timeout,
                  "Seconds in-flight requests get to finish on SIGTERM")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-prefix-cache", o->no_prefix_cache, "Disable prefix caching");
  add_store_options(cmd, &o->data_dir, &o->database);
  add_mmap_option(cmd, &o->mmap);
  cmd->callback([o, &exit_code] { exit_code = serve(*o); });
}

}  // namespace maas::cli
