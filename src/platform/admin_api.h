// The platform half of the admin API: tenants, API keys and usage over the Store, as JSON in and
// out. The server layer authenticates the admin key and routes /admin/tenants, /admin/keys and
// /admin/usage here; this file knows nothing of HTTP beyond status codes.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "platform/store.h"

namespace maas::platform {

struct AdminResult {
  int status = 200;
  nlohmann::ordered_json body;  // on 4xx: an OpenAI-style {"error": {...}} object
};

class AdminApi {
 public:
  explicit AdminApi(std::shared_ptr<Store> store);

  // GET    /admin/tenants                  every tenant
  // GET    /admin/tenants/{id}             one tenant
  // PUT    /admin/tenants/{id}             create or update: {"weight", "rpm", "tpm",
  //                                        "daily_tokens", "monthly_tokens"}; absent fields keep
  //                                        their value, null removes a limit
  // GET    /admin/keys[?tenant=T]          keys (never secrets)
  // POST   /admin/keys                     {"tenant", "models", "rpm", "tpm", "daily_tokens",
  //                                        "monthly_tokens", "expires_at"} -> 201 with "secret"
  // DELETE /admin/keys/{id}                revoke
  // GET    /admin/usage[?tenant=T&from=YYYY-MM-DD&to=YYYY-MM-DD]   totals by tenant, model, day
  // None: the path is not one of these. Store failures are 500s with the store's message.
  std::optional<AdminResult> handle(const std::string& method, const std::string& path,
                                    const std::string& query, const nlohmann::ordered_json& body,
                                    UnixMillis now);

 private:
  std::shared_ptr<Store> store_;
};

// "YYYY-MM-DD" (UTC midnight) or "YYYY-MM-DDTHH:MM:SSZ" -> Unix milliseconds; throws
// std::invalid_argument otherwise.
UnixMillis parse_utc_time(const std::string& s);
// Unix milliseconds -> "YYYY-MM-DDTHH:MM:SSZ".
std::string format_utc_time(UnixMillis t);

}  // namespace maas::platform
