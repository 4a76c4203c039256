// The admin API (/admin/...): guarded by its own keys, separate from the tenants' API keys, so
// that a tenant's key can never manage keys, tenants or models.
#include <fmt/format.h>

#include "server/api.h"
#include "server/openai_schema.h"

namespace maas::server {

bool Api::admin(const HttpRequest& req, const std::shared_ptr<ResponseWriter>& w,
                const std::function<void(int, const Json&)>& reply_json) {
  if (config_.admin_keys.empty()) {
    throw ApiError(403,
                   "The admin API is disabled: start the server with --admin-key or "
                   "MAAS_ADMIN_KEY",
                   {}, "invalid_request_error", "admin_disabled");
  }
  const std::string* auth = req.header("authorization");
  bool ok = false;
  if (auth != nullptr && auth->rfind("Bearer ", 0) == 0) {
    const std::string_view key = std::string_view(*auth).substr(7);
    for (const auto& k : config_.admin_keys) ok = same_secret(key, k) || ok;
  }
  if (!ok) {
    throw ApiError(401, "Incorrect or missing admin key: send 'Authorization: Bearer ADMIN_KEY'",
                   {}, "invalid_request_error", "invalid_api_key");
  }
  if (admin_models(req, w)) return true;  // the model registry's (api_models.cpp)
  if (!config_.admin) return false;
  Json body;  // null unless the request has a body
  if (!req.body.empty()) body = parse_body(req.body);
  const size_t q = req.target.find('?');
  const std::string query = q == std::string::npos ? std::string() : req.target.substr(q + 1);
  auto reply = config_.admin(req.method, req.path, query, body);
  if (!reply) return false;
  reply_json(reply->status, reply->body);
  return true;
}

}  // namespace maas::server
