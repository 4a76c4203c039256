// Routing, authentication, models, tokenize/detokenize, health, readiness and metrics. The
// generation endpoints live in api_generate.cpp.
#include "server/api.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "gguf/gguf.h"
#include "server/api_job.h"
#include "server/ledger_queue.h"
#include "server/openai_schema.h"
#include "server/rate_limiter.h"

namespace maas::server {

ServedModel::~ServedModel() {
  if (engine) engine->stop();
}

std::unique_ptr<ServedModel> ServedModel::load(const std::string& id, const std::string& path,
                                               const engine::EngineConfig& config,
                                               bool copy_weights) {
  auto m = std::make_unique<ServedModel>();
  m->id = id;
  m->path = path;
  m->file = std::make_unique<gguf::File>(
      gguf::File::open(path, copy_weights ? gguf::File::Load::Copy : gguf::File::Load::Map));
  m->model = model::Model::load(*m->file);
  m->tok = tokenizer::Tokenizer::from_gguf(*m->file);
  if (m->tok->n_vocab() != m->model->hparams().n_vocab) {
    throw std::runtime_error(fmt::format("{}: the tokenizer has {} tokens, the model {}", path,
                                         m->tok->n_vocab(), m->model->hparams().n_vocab));
  }
  if (auto src = m->file->get_string("tokenizer.chat_template")) {
    try {
      m->chat_template = tmpl::Template::parse(*src);
    } catch (const tmpl::Error& e) {
      throw std::runtime_error(
          fmt::format("{}: its chat template does not parse: {}", path, e.what()));
    }
  }
  engine::EngineConfig c = config;
  c.model_id = id;
  m->engine = std::make_unique<engine::Engine>(*m->model, *m->tok, c);
  m->engine->start();
  m->created = static_cast<int64_t>(std::time(nullptr));
  return m;
}

Api::Api(ApiConfig config) : config_(std::move(config)) {
  if (config_.record_usage) ledger_ = std::make_unique<LedgerQueue>(config_.record_usage);
  limiter_ = std::make_unique<RateLimiter>();
}

Api::~Api() { cancel_all(); }

void Api::add_model(std::unique_ptr<ServedModel> m) { models_.push_back(std::move(m)); }

ServedModel& Api::find_model(const std::string& id) {
  for (auto& m : models_) {
    if (m->id == id) return *m;
  }
  throw ApiError(404, fmt::format("The model '{}' does not exist", id), "model",
                 "invalid_request_error", "model_not_found");
}

bool Principal::allows(const std::string& model) const {
  return models.empty() || std::find(models.begin(), models.end(), model) != models.end();
}

ServedModel& Api::visible_model(const std::string& id, const Principal& who) {
  if (!who.allows(id)) {
    throw ApiError(404, fmt::format("The model '{}' does not exist", id), "model",
                   "invalid_request_error", "model_not_found");
  }
  return find_model(id);
}

ServedModel& Api::optional_model(const Json& body, const Principal& who) {
  auto it = body.find("model");
  if (it != body.end() && !it->is_null()) {
    if (!it->is_string()) throw ApiError(400, "'model' must be a string", "model");
    return visible_model(it->get<std::string>(), who);
  }
  if (models_.size() != 1) throw ApiError(400, "'model' is required", "model");
  return visible_model(models_.front()->id, who);
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
      if (models_.empty()) throw ApiError(503, "no model is loaded", {}, "server_error");
      reply_json(200, {{"status", "ready"}});
      return;
    }
    if (path == "/metrics") {
      std::vector<Metrics::EngineGauges> gauges;
      for (const auto& m : models_) {
        const auto st = m->engine->stats();
        gauges.push_back({m->id, st.running, st.waiting, st.kv_blocks_used, st.kv_blocks_free,
                          st.prefix_hits, st.prefix_misses, st.preemptions});
      }
      metrics_.count_request(endpoint, 200);
      w->send(200, "text/plain; version=0.0.4", metrics_.render(gauges));
      return;
    }
    if (path.rfind("/admin/", 0) == 0) {
      if (admin(req, w, [&](int status, const Json& body) { reply_json(status, body); })) return;
      throw ApiError(404, fmt::format("Unknown admin URL: {} {}", req.method, path), {},
                     "invalid_request_error", "unknown_url");
    }
    Principal who;
    if (!config_.api_keys.empty() || config_.authenticate) {
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
      Json data = Json::array();
      for (const auto& m : models_) {
        if (!who.allows(m->id)) continue;
        data.push_back(
            {{"id", m->id}, {"object", "model"}, {"created", m->created}, {"owned_by", "maas"}});
      }
      reply_json(200, {{"object", "list"}, {"data", data}});
      return;
    }
    if (path.rfind("/v1/models/", 0) == 0 && get) {
      ServedModel& m = visible_model(path.substr(11), who);
      reply_json(200,
                 {{"id", m.id}, {"object", "model"}, {"created", m.created}, {"owned_by", "maas"}});
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
    if (path == "/v1/chat/completions" && post) return chat(req, w, who);
    if (path == "/v1/completions" && post) return completions(req, w, who);
    if (path == "/v1/embeddings" && post) return embeddings(req, w, who);
    if (path == "/tokenize" && post) {
      const Json body = parse_body(req.body);
      ServedModel& m = optional_model(body, who);
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
      const auto ids = m.tok->encode(body["content"].get<std::string>(), add_special, true);
      reply_json(200, {{"tokens", ids}, {"model", m.id}});
      return;
    }
    if (path == "/detokenize" && post) {
      const Json body = parse_body(req.body);
      ServedModel& m = optional_model(body, who);
      if (!body.contains("tokens") || !body["tokens"].is_array()) {
        throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
      }
      std::vector<int32_t> ids;
      for (const Json& t : body["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
            t.get<int64_t>() >= m.tok->n_vocab()) {
          throw ApiError(400,
                         fmt::format("'tokens' must hold token ids below {}", m.tok->n_vocab()),
                         "tokens");
        }
        ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
      }
      reply_json(200, {{"content", m.tok->decode(ids)}, {"model", m.id}});
      return;
    }
    const bool known = endpoint != "other";
    if (known) {
      throw ApiError(405, fmt::format("Method {} is not allowed for {}", req.method, path));
    }
    throw ApiError(404, fmt::format("Unknown request URL: {} {}", req.method, path), {},
                   "invalid_request_error", "unknown_url");
  } catch (const ApiError& e) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (e.status == 429 || e.status == 503) {
      headers.emplace_back("retry-after", std::to_string(e.retry_after));
    }
    metrics_.count_request(endpoint, e.status);
    w->send(e.status, "application/json", error_json(e), std::move(headers));
  } catch (const std::exception& e) {
    metrics_.count_request(endpoint, 500);
    w->send(
        500, "application/json",
        error_json(ApiError(500, fmt::format("internal error: {}", e.what()), {}, "server_error")));
  }
}

}  // namespace maas::server
