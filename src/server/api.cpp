// Routing, authentication, models, tokenize/detokenize, health, readiness and metrics. The
// generation endpoints live in api_generate.cpp.
#include "server/api.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "server/api_job.h"
#include "server/ledger_queue.h"
#include "server/openai_schema.h"
#include "server/rate_limiter.h"

namespace maas::server {

Api::Api(ApiConfig config) : config_(std::move(config)) {
  if (config_.record_usage) ledger_ = std::make_unique<LedgerQueue>(config_.record_usage);
  limiter_ = std::make_unique<RateLimiter>();
  registry_ = std::make_unique<ModelRegistry>(config_.model_loader);
}

Api::~Api() {
  cancel_all();
  // Before any member goes: requests waiting for a load are answered, requests in flight get to
  // finish (their leases), and the engines stop while the ledger still records.
  registry_->shutdown();
}

void Api::add_model(std::unique_ptr<ServedModel> m) { registry_->adopt(std::move(m)); }

bool Principal::allows(const std::string& model) const {
  return models.empty() || std::find(models.begin(), models.end(), model) != models.end();
}

namespace {

// A key's allow-list may name a model by its id or by any of its names.
bool may_use(const Principal& who, const std::string& id, const std::string& asked,
             const std::vector<std::string>& aliases) {
  if (who.allows(id) || who.allows(asked)) return true;
  return std::any_of(aliases.begin(), aliases.end(),
                     [&](const std::string& a) { return who.allows(a); });
}

// The OpenAI model object, plus the names the model also answers to.
Json model_object(const ModelStatus& m) {
  return {{"id", m.id},
          {"object", "model"},
          {"created", m.created},
          {"owned_by", "maas"},
          {"aliases", m.aliases}};
}

// The model's request defaults, for the fields the request leaves out.
void apply_defaults(Json& body, const ModelSpec& spec, bool chat) {
  for (const auto& [key, value] : spec.defaults.items()) {
    if (key == "max_tokens" && chat && body.contains("max_completion_tokens") &&
        !body["max_completion_tokens"].is_null()) {
      continue;
    }
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) body[key] = value;
  }
}

void send_json(Metrics& metrics, const std::string& endpoint, int status, const Json& body,
               ResponseWriter& w) {
  metrics.count_request(endpoint, status);
  w.send(status, "application/json", body.dump(-1, ' ', false, Json::error_handler_t::replace));
}

// The registry's gauges in the Prometheus text format.
std::string registry_metrics(const ModelRegistry& registry) {
  return fmt::format(
      "# HELP maas_models_loaded Models loaded and serving.\n"
      "# TYPE maas_models_loaded gauge\n"
      "maas_models_loaded {}\n"
      "# HELP maas_models_memory_bytes Weights and KV pools of the models in memory.\n"
      "# TYPE maas_models_memory_bytes gauge\n"
      "maas_models_memory_bytes {}\n"
      "# HELP maas_models_memory_budget_bytes The models' memory budget (0: none).\n"
      "# TYPE maas_models_memory_budget_bytes gauge\n"
      "maas_models_memory_budget_bytes {}\n",
      registry.loaded_count(), registry.memory_in_use(), registry.memory_budget());
}

}  // namespace

std::shared_ptr<const ModelSpec> Api::body_model(const Json& body, const Principal& who,
                                                 bool default_to_only) {
  std::string name;
  auto it = body.find("model");
  if (it != body.end() && !it->is_null()) {
    if (!it->is_string()) throw ApiError(400, "'model' must be a string", "model");
    name = it->get<std::string>();
  } else if (auto only = default_to_only ? registry_->only_model() : std::nullopt) {
    name = *only;
  } else {
    throw ApiError(400, "'model' is required", "model");
  }
  auto spec = registry_->find(name);
  if (spec == nullptr || !may_use(who, spec->id, name, spec->aliases)) {
    throw ApiError(404, fmt::format("The model '{}' does not exist", name), "model",
                   "invalid_request_error", "model_not_found");
  }
  return spec;
}

void Api::send_error(const std::string& endpoint, const ApiError& e, ResponseWriter& w) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (e.status == 429 || e.status == 503) {
    headers.emplace_back("retry-after", std::to_string(e.retry_after));
  }
  metrics_.count_request(endpoint, e.status);
  w.send(e.status, "application/json", error_json(e), std::move(headers));
}

void Api::with_model(const std::string& endpoint, const std::string& id,
                     const std::shared_ptr<ResponseWriter>& w,
                     std::function<void(const ModelLease&)> work) {
  auto waiter = [this, endpoint, w, work](ModelLease lease, const ApiError* error) {
    try {
      if (error != nullptr) throw *error;
      if (w->closed()) return;
      work(lease);
    } catch (const ApiError& e) {
      send_error(endpoint, e, *w);
    } catch (const std::exception& e) {
      send_error(endpoint,
                 ApiError(500, fmt::format("internal error: {}", e.what()), {}, "server_error"),
                 *w);
    }
  };
  // A client that leaves while its request is parked stops waiting. Set before acquiring: the
  // loader may run `work` (which sets its own on_close) before acquire() returns.
  auto ticket = std::make_shared<std::atomic<uint64_t>>(0);
  w->on_close([registry = registry_.get(), ticket] {
    if (const uint64_t t = ticket->load()) registry->cancel_wait(t);
  });
  uint64_t parked = 0;
  ModelLease lease = registry_->acquire(id, std::move(waiter), &parked);
  if (lease) {
    work(lease);
    return;
  }
  ticket->store(parked);
}

void Api::cancel_all() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard lock(jobs_mu_);
    for (auto& [ptr, job] : jobs_) jobs.push_back(job);
  }
  for (auto& job : jobs) job->cancel();  // outside jobs_mu_: a job may finish meanwhile
}

size_t Api::in_flight() const {
  std::lock_guard lock(jobs_mu_);
  return jobs_.size();
}

namespace {

std::string endpoint_label(const std::string& path) {
  for (const char* known :
       {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/usage",
        "/tokenize", "/detokenize", "/health", "/ready", "/metrics"}) {
    if (path == known) return known;
  }
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  if (path.rfind("/admin/", 0) == 0) return "/admin";
  return "other";
}

}  // namespace

void Api::handle(HttpRequest&& req, std::shared_ptr<ResponseWriter> w) {
  const std::string endpoint = endpoint_label(req.path);
  auto reply_json = [&](int status, const Json& body,
                        std::vector<std::pair<std::string, std::string>> headers = {}) {
    metrics_.count_request(endpoint, status);
    w->send(status, "application/json", body.dump(-1, ' ', false, Json::error_handler_t::replace),
            std::move(headers));
  };
  try {
    const std::string& path = req.path;
    if (path == "/health") {
      reply_json(200, {{"status", "ok"}});
      return;
    }
    if (path == "/ready") {
      // Ready once every `always` model is loaded (on_demand ones load when asked for).
      if (!registry_->ready()) {
        throw ApiError(503,
                       "not ready: no model is configured, or one with load: always is not loaded",
                       {}, "server_error");
      }
      reply_json(200, {{"status", "ready"}});
      return;
    }
    if (path == "/metrics") {
      std::vector<Metrics::EngineGauges> gauges;
      for (const auto& [id, st, bytes] : registry_->loaded_stats()) {
        gauges.push_back({id, st.running, st.waiting, st.kv_blocks_used, st.kv_blocks_free,
                          st.prefix_hits, st.prefix_misses, st.preemptions});
      }
      metrics_.count_request(endpoint, 200);
      w->send(200, "text/plain; version=0.0.4",
              metrics_.render(gauges) + registry_metrics(*registry_));
      return;
    }
    if (path.rfind("/admin/", 0) == 0) {
      if (admin(req, w, [&](int status, const Json& body) { reply_json(status, body); })) return;
      throw ApiError(404, fmt::format("Unknown admin URL: {} {}", req.method, path), {},
                     "invalid_request_error", "unknown_url");
    }
    Principal who;
    if (!config_.api_keys.empty() ||
        (config_.authenticate && (!config_.keys_exist || config_.keys_exist()))) {
      const std::string* auth = req.header("authorization");
      bool ok = false;
      if (auth != nullptr && auth->rfind("Bearer ", 0) == 0) {
        const std::string_view key = std::string_view(*auth).substr(7);
        for (const auto& k : config_.api_keys) ok = same_secret(key, k) || ok;
        if (!ok && config_.authenticate) {
          if (auto p = config_.authenticate(key)) {
            who = std::move(*p);
            ok = true;
          }
        }
      }
      if (!ok) {
        throw ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'", {},
                       "invalid_request_error", "invalid_api_key");
      }
    }
    const bool get = req.method == "GET" || req.method == "HEAD";
    const bool post = req.method == "POST";
    if (path == "/v1/models" && get) {
      // Every model the key may use, loaded or not (one that is not loads when asked for).
      Json data = Json::array();
      for (const ModelStatus& m : registry_->status()) {
        if (!may_use(who, m.id, m.id, m.aliases)) continue;
        data.push_back(model_object(m));
      }
      reply_json(200, {{"object", "list"}, {"data", data}});
      return;
    }
    if (path.rfind("/v1/models/", 0) == 0 && get) {
      const auto spec = body_model(Json{{"model", path.substr(11)}}, who);
      const auto m = registry_->status(spec->id);
      if (!m)
        throw ApiError(404, "The model does not exist", "model", "invalid_request_error",
                       "model_not_found");
      reply_json(200, model_object(*m));
      return;
    }
    if (path == "/v1/usage" && get) {
      if (!config_.usage_of) throw ApiError(404, "this server keeps no usage ledger");
      Json data = Json::array();
      for (const UsageSummary& u : config_.usage_of(who.tenant, 31)) {
        data.push_back({{"model", u.model},
                        {"day", u.day},
                        {"requests", u.requests},
                        {"prompt_tokens", u.prompt_tokens},
                        {"cached_tokens", u.cached_tokens},
                        {"completion_tokens", u.completion_tokens},
                        {"total_tokens", u.prompt_tokens + u.completion_tokens}});
      }
      reply_json(200, {{"object", "list"}, {"tenant", who.tenant}, {"data", data}});
      return;
    }
    // Generation and tokenizer endpoints: the request is checked completely first, then runs
    // once its model is loaded (which an on_demand model may not be yet).
    if (path == "/v1/chat/completions" && post) {
      Json body = parse_body(req.body);
      const auto spec = body_model(body, who);
      apply_defaults(body, *spec, true);
      auto cr = std::make_shared<const ChatRequest>(parse_chat_request(body));
      return with_model(endpoint, spec->id, w,
                        [this, cr, w, who](const ModelLease& m) { chat(*cr, m, w, who); });
    }
    if (path == "/v1/completions" && post) {
      Json body = parse_body(req.body);
      const auto spec = body_model(body, who);
      apply_defaults(body, *spec, false);
      auto cr = std::make_shared<const CompletionRequest>(parse_completion_request(body));
      return with_model(endpoint, spec->id, w,
                        [this, cr, w, who](const ModelLease& m) { completions(*cr, m, w, who); });
    }
    if (path == "/v1/embeddings" && post) {
      const Json body = parse_body(req.body);
      const auto spec = body_model(body, who);
      auto er = std::make_shared<const EmbeddingRequest>(parse_embedding_request(body));
      return with_model(endpoint, spec->id, w,
                        [this, er, w, who](const ModelLease& m) { embeddings(*er, m, w, who); });
    }
    if (path == "/tokenize" && post) {
      const Json body = parse_body(req.body);
      const auto spec = body_model(body, who, true);
      if (!body.contains("content") || !body["content"].is_string()) {
        throw ApiError(400, "'content' must be a string", "content");
      }
      bool add_special = true;
      if (body.contains("add_special")) {
        if (!body["add_special"].is_boolean()) {
          throw ApiError(400, "'add_special' must be a boolean", "add_special");
        }
        add_special = body["add_special"].get<bool>();
      }
      return with_model(
          endpoint, spec->id, w,
          [this, endpoint, w, add_special,
           content = body["content"].get<std::string>()](const ModelLease& m) {
            const auto ids = m->tok->encode(content, add_special, true);
            send_json(metrics_, endpoint, 200, {{"tokens", ids}, {"model", m->id}}, *w);
          });
    }
    if (path == "/detokenize" && post) {
      const Json body = parse_body(req.body);
      const auto spec = body_model(body, who, true);
      if (!body.contains("tokens") || !body["tokens"].is_array()) {
        throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
      }
      for (const Json& t : body["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
          throw ApiError(400, "'tokens' must hold token ids", "tokens");
        }
      }
      return with_model(
          endpoint, spec->id, w, [this, endpoint, w, tokens = body["tokens"]](const ModelLease& m) {
            std::vector<int32_t> ids;
            for (const Json& t : tokens) {
              if (t.get<int64_t>() >= m->tok->n_vocab()) {
                throw ApiError(
                    400, fmt::format("'tokens' must hold token ids below {}", m->tok->n_vocab()),
                    "tokens");
              }
              ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
            }
            send_json(metrics_, endpoint, 200, {{"content", m->tok->decode(ids)}, {"model", m->id}},
                      *w);
          });
    }
    const bool known = endpoint != "other";
    if (known) {
      throw ApiError(405, fmt::format("Method {} is not allowed for {}", req.method, path));
    }
    throw ApiError(404, fmt::format("Unknown request URL: {} {}", req.method, path), {},
                   "invalid_request_error", "unknown_url");
  } catch (const ApiError& e) {
    send_error(endpoint, e, *w);
  } catch (const std::exception& e) {
    metrics_.count_request(endpoint, 500);
    w->send(
        500, "application/json",
        error_json(ApiError(500, fmt::format("internal error: {}", e.what()), {}, "server_error")));
  }
}

}  // namespace maas::server
