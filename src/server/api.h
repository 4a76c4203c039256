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

  // Loads the file, builds the engine and starts its thread. Throws with a clear message.
  static std::unique_ptr<ServedModel> load(const std::string& id, const std::string& path,
                                           const engine::EngineConfig& config,
                                           bool copy_weights = false);
  ~ServedModel();
};

// Who is calling: the tenant (also the prefix-cache salt, so tenants never share cache entries)
// and the key's model allow-list (empty: every model).
struct Principal {
  std::string tenant = "default";
  std::string key_id;
  std::vector<std::string> models;
  // Limits (none: unlimited): requests and tokens per minute, tokens per UTC day and month.
  std::optional<int64_t> rpm, tpm, daily_tokens, monthly_tokens;
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
  // Writes a record durably (throws on failure). Set: every generation and embedding request is
  // recorded before the bytes carrying its usage are sent. Unset: no ledger.
  std::function<void(const UsageRecord&)> record_usage;
  // A tenant's usage by model and day over the last `days` days, for GET /v1/usage.
  std::function<std::vector<UsageSummary>(const std::string& tenant, int days)> usage_of;
  // Tokens (prompt + completion) a key has used since a wall-clock time in milliseconds, for
  // the daily and monthly quotas.
  std::function<int64_t(const std::string& key_id, int64_t since_ms)> tokens_used;
  // Secrets that open the admin API (/admin/...). None: the admin API is disabled (403).
  std::vector<std::string> admin_keys;
  AdminHandler admin;
};

class Api {
 public:
  explicit Api(ApiConfig config);
  ~Api();

  void add_model(std::unique_ptr<ServedModel> m);
  // The request handler for HttpServer. Never blocks: generations are handed to the engines.
  void handle(HttpRequest&& req, std::shared_ptr<ResponseWriter> writer);
  // Cancels every request in flight (the end of a graceful shutdown's deadline).
  void cancel_all();
  size_t in_flight() const;
  Metrics& metrics() { return metrics_; }

  struct Job;  // one HTTP request's generations (internal)

 private:
  ServedModel& find_model(const std::string& id);
  // A model the caller may use; others are 404 as if they did not exist.
  ServedModel& visible_model(const std::string& id, const Principal& who);
  // The body's optional "model" (/tokenize, /detokenize); absent: the only model loaded.
  ServedModel& optional_model(const nlohmann::ordered_json& body, const Principal& who);
  void chat(const HttpRequest& req, std::shared_ptr<ResponseWriter> w, const Principal& who);
  void completions(const HttpRequest& req, std::shared_ptr<ResponseWriter> w, const Principal& who);
  void embeddings(const HttpRequest& req, std::shared_ptr<ResponseWriter> w, const Principal& who);
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
  std::vector<std::unique_ptr<ServedModel>> models_;
  Metrics metrics_;
  mutable std::mutex jobs_mu_;
  // Jobs in flight, owned here until they have answered (the engine and the transport hold only
  // weak references).
  std::unordered_map<Job*, std::shared_ptr<Job>> jobs_;
};

}  // namespace maas::server
