// `maas serve`: the OpenAI-compatible HTTP server over one engine per model.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "cli/commands.h"
#include "model/kv_cache.h"
#include "platform/store.h"
#include "server/api.h"
#include "server/http_server.h"

namespace maas::cli {

namespace {

struct ServeOptions {
  std::vector<std::string> models;  // [ID=]PATH
  std::string host = "127.0.0.1";
  int port = 8080;
  int threads = 0, io_threads = 2;
  std::string kv_memory = "0", kv_type = "f16";
  std::vector<std::string> api_keys, admin_keys;
  int max_running = 32, token_budget = 256;
  int64_t ctx_size = 0;
  size_t max_waiting = 256;
  double shutdown_timeout = 30;
  bool no_prefix_cache = false;
  bool no_mmap = false;
  std::string data_dir;
};

// "2G", "512MiB", "1000000" -> bytes.
size_t parse_size(const std::string& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    throw std::runtime_error(fmt::format("'{}' is not a size (examples: 2G, 512M, 1000000)", s));
  }
  std::string unit = s.substr(used);
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double mult = 1;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    mult = 1024;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    mult = 1024.0 * 1024;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    mult = 1024.0 * 1024 * 1024;
  } else {
    throw std::runtime_error(fmt::format("'{}' has an unknown size unit", s));
  }
  if (!(v >= 0) || v * mult > 1e15)
    throw std::runtime_error(fmt::format("'{}' is out of range", s));
  return static_cast<size_t>(v * mult);
}

int serve(const ServeOptions& o) {
  engine::EngineConfig ec;
  ec.max_running = o.max_running;
  ec.token_budget = o.token_budget;
  ec.max_context = o.ctx_size;
  ec.kv_memory = parse_size(o.kv_memory);
  ec.kv_type = model::kv_type_from_name(o.kv_type);
  ec.prefix_cache = !o.no_prefix_cache;
  ec.max_waiting = o.max_waiting;
  ec.threads = o.threads;

  server::ApiConfig ac;
  ac.api_keys = o.api_keys;
  ac.admin_keys = o.admin_keys;
  if (const char* env = std::getenv("MAAS_ADMIN_KEY"); env != nullptr && *env != '\0') {
    ac.admin_keys.emplace_back(env);
  }
  // Keys created with `maas keys` live in the data directory's store. With keys there (or
  // --api-key), every API call needs one; with none, the API is open.
  const std::string data_dir = platform::resolve_data_dir(o.data_dir);
  std::shared_ptr<platform::Store> store = platform::open_sqlite_store(data_dir);
  const size_t stored_keys = store->list_keys().size();
  std::fprintf(stderr, "maas: data directory %s (%zu API key(s))\n", data_dir.c_str(), stored_keys);
  if (stored_keys > 0) {
    ac.authenticate = [store](std::string_view secret) -> std::optional<server::Principal> {
      auto r = store->authenticate(secret, platform::now_millis());
      if (!r) return std::nullopt;
      const auto& o = r.key->options;
      return server::Principal{r.key->tenant, r.key->id,      o.models,        o.rpm,
                               o.tpm,         o.daily_tokens, o.monthly_tokens};
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
    store->record(e);  // kDuplicate cannot happen: completion ids are unique per server
  };
  ac.tokens_used = [store](const std::string& key_id, int64_t since_ms) {
    return store->tokens_used(platform::UsageScope::key(key_id), since_ms).total_tokens();
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
  server::Api api(ac);
  for (const std::string& spec : o.models) {
    std::string id, path = spec;
    if (auto eq = spec.find('='); eq != std::string::npos && !std::filesystem::exists(spec)) {
      id = spec.substr(0, eq);
      path = spec.substr(eq + 1);
    } else {
      id = std::filesystem::path(spec).stem().string();
    }
    std::fprintf(stderr, "maas: loading %s as '%s'\n", path.c_str(), id.c_str());
    api.add_model(server::ServedModel::load(id, path, ec, o.no_mmap));
  }
  if (o.api_keys.empty() && stored_keys == 0) {
    std::fprintf(stderr,
                 "maas: no API key configured: the API is open to anyone who can connect\n");
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
  const int sig = http.wait_for_shutdown_signal();
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
  cmd->add_option("-m,--model", o->models, "[ID=]MODEL.gguf (repeatable); ID: file name")
      ->required();
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
  cmd->add_option("--shutdown-timeout", o->shutdown_timeout,
                  "Seconds in-flight requests get to finish on SIGTERM")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-prefix-cache", o->no_prefix_cache, "Disable prefix caching");
  cmd->add_option("--data-dir", o->data_dir,
                  "State directory (default: $MAAS_DATA_DIR, else ~/.local/share/maas)");
  cmd->add_flag("--no-mmap", o->no_mmap,
                "Read the weights into memory instead of mapping the file");
  cmd->callback([o, &exit_code] { exit_code = serve(*o); });
}

}  // namespace maas::cli
