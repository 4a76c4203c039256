// The OpenAI-compatible API over the serving engines: routing, authentication, the endpoint
// handlers and metrics. Transport-independent: it receives parsed HTTP requests and answers
// through a ResponseWriter (server/http_server.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/openai_schema.h"
#include "template/template.h"

namespace maas::server {

// Limits (none: unlimited): requests and tokens per minute, tokens per UTC day and month.
struct Limits {
  std::optional<int64_t> rpm, tpm, daily_tokens, monthly_tokens;
};

// Who is calling: the tenant (also the prefix-cache salt, so tenants never share cache entries,
// and the unit of fair scheduling), the key's model allow-list (empty: every model) and the
// limits of the key and of its tenant (a request must pass both).
struct Principal {
  std::string tenant = "default";
  std::string key_id;
  std::vector<std::string> models;
  Limits key_limits, tenant_limits;
  double tenant_weight = 1;  // the tenant's share of the engine when tenants compete
  bool allows(const std::string& model) const;
};

// One request as the usage ledger records it (wall-clock milliseconds since the epoch).
struct UsageRecord {
  std::string request_id, tenant, key_id, model;
  int64_t prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0;
  int status = 0;
  std::string finish_reason;
  int64_t queued_at = 0;
  std::optional<int64_t> first_token_at;
  int64_t ended_at = 0;
};

// Totals of one tenant, model and UTC day, for GET /v1/usage.
struct UsageSummary {
  std::string model, day;
  int64_t requests = 0, prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0;
};

class LedgerQueue;
class RateLimiter;

// The answer of an admin handler: an HTTP status and a JSON body.
struct AdminReply {
  int status = 200;
  nlohmann::ordered_json body;
};

// Handles /admin/ requests other than /admin/models (keys, tenants, usage): method, path,
// query string (without '?') and the parsed JSON body (null for GET/DELETE); none: unknown
// path. Throws ApiError for bad input.
using AdminHandler = std::function<std::optional<AdminReply>(
    const std::string& method, const std::string& path, const std::string& query,
    const nlohmann::ordered_json& body)>;

struct ApiConfig {
  std::vector<std::string> api_keys;  // static keys (tenant "default")
  // Looks up a bearer secret (e.g. in the platform store): a principal, or none if unknown,
  // revoked or expired. With neither static keys nor an authenticator, the API is open.
  std::function<std::optional<Principal>(std::string_view secret)> authenticate;
  // Whether the authenticator knows any key at all (asked per request, so the first key created
  // while the server runs closes it): none and no static keys means the API is open. Unset:
  // with an authenticator, a key is always required.
  std::function<bool()> keys_exist;
  // Writes a record durably (throws on failure). Set: every generation and embedding request is
  // recorded before the bytes carrying its usage are sent. Unset: no ledger.
  std::function<void(const UsageRecord&)> record_usage;
  // A tenant's usage by model and day over the last `days` days, for GET /v1/usage.
  std::function<std::vector<UsageSummary>(const std::string& tenant, int days)> usage_of;
  // Tokens (prompt + completion) a key (tenant = false) or a tenant has used since a wall-clock
  // time in milliseconds, for the daily and monthly quotas.
  std::function<int64_t(bool tenant, const std::string& id, int64_t since_ms)> tokens_used;
  // Secrets that open the admin API (/admin/...). None: the admin API is disabled (403).
  std::vector<std::string> admin_keys;
  AdminHandler admin;
  // How models are loaded (tests substitute slow or failing loads).
  ModelLoader model_loader;
};

class Api {
 public:
  explicit Api(ApiConfig config);
  ~Api();

  // An already loaded model, served as an `always` model.
  void add_model(std::unique_ptr<ServedModel> m);
  // The configured models: apply a models file, reload, wait for startup loads.
  ModelRegistry& models() { return *registry_; }
  // The request handler for HttpServer. Never blocks: generations are handed to the engines.
  void handle(HttpRequest&& req, std::shared_ptr<ResponseWriter> writer);
  // Cancels every request in flight (the end of a graceful shutdown's deadline).
  void cancel_all();
  size_t in_flight() const;
  Metrics& metrics() { return metrics_; }

  struct Job;  // one HTTP request's generations (internal)

 private:
  // The configuration of the model the body's "model" names (an id or alias), if the caller may
  // use it; others are 404 as if they did not exist. Absent "model": a 400, or with
  // `default_to_only`, the only model configured (/tokenize, /detokenize).
  std::shared_ptr<const ModelSpec> body_model(const nlohmann::ordered_json& body,
                                              const Principal& who, bool default_to_only = false);
  // Runs `work` with a lease on model `id`: now if it is loaded, else once it is (the request
  // waits, parked, never blocking an I/O thread; the loader thread runs `work`). A failed or
  // timed-out load is answered with its error.
  void with_model(const std::string& endpoint, const std::string& id,
                  const std::shared_ptr<ResponseWriter>& w,
                  std::function<void(const ModelLease&)> work);
  void send_error(const std::string& endpoint, const ApiError& e, ResponseWriter& w);
  void chat(const ChatRequest& cr, const ModelLease& m, std::shared_ptr<ResponseWriter> w,
            const Principal& who);
  void completions(const CompletionRequest& cr, const ModelLease& m,
                   std::shared_ptr<ResponseWriter> w, const Principal& who);
  void embeddings(const EmbeddingRequest& er, const ModelLease& m,
                  std::shared_ptr<ResponseWriter> w, const Principal& who);
  // /admin/models...: the model registry's admin API (api_models.cpp); false if not its path.
  bool admin_models(const HttpRequest& req, const std::shared_ptr<ResponseWriter>& w);
  // /admin/...: checks the admin key, then dispatches; false if the path is unknown.
  bool admin(const HttpRequest& req, const std::shared_ptr<ResponseWriter>& w,
             const std::function<void(int, const nlohmann::ordered_json&)>& reply_json);
  void start_job(std::shared_ptr<Job> job, std::vector<engine::Request> requests,
                 const Principal& who);
  // Refuses (429, naming the limit) a request over the caller's quotas or rates, else reserves
  // its tokens; returns the rate limiter's grant.
  uint64_t admit(const Principal& who, int64_t max_tokens_total);

  ApiConfig config_;
  // Declared before the models: destroyed after their engines stopped, so every request that
  // finishes during shutdown is still recorded.
  std::unique_ptr<LedgerQueue> ledger_;
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<ModelRegistry> registry_;
  Metrics metrics_;
  mutable std::mutex jobs_mu_;
  // Jobs in flight, owned here until they have answered (the engine and the transport hold only
  // weak references).
  std::unordered_map<Job*, std::shared_ptr<Job>> jobs_;
};

}  // namespace maas::server
