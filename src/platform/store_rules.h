// Rules both store backends share: the schema migrations (SQL that SQLite and PostgreSQL both
// accept) and the validation of what callers store, so both refuse the same values. Internal
// to the platform layer.
#pragma once

#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

#include "platform/store.h"

namespace maas::platform::detail {

struct Migration {
  int version;
  const char* sql;
};

// Each migration is applied in its own transaction together with the version bump, so a crash
// leaves the database at one version or the next, never in between. Append only: never edit a
// migration that has shipped.
inline constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE tenants (
  id TEXT PRIMARY KEY,
  weight DOUBLE PRECISION NOT NULL DEFAULT 1,
  created_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  secret_sha256 TEXT NOT NULL UNIQUE,
  rpm BIGINT,
  tpm BIGINT,
  daily_tokens BIGINT,
  monthly_tokens BIGINT,
  expires_at BIGINT,
  created_at BIGINT NOT NULL,
  revoked_at BIGINT
);
CREATE TABLE api_key_models (
  key_id TEXT NOT NULL REFERENCES api_keys(id),
  model TEXT NOT NULL,
  PRIMARY KEY (key_id, model)
);
CREATE TABLE usage_ledger (
  request_id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  key_id TEXT NOT NULL,
  model TEXT NOT NULL,
  prompt_tokens BIGINT NOT NULL,
  cached_tokens BIGINT NOT NULL,
  completion_tokens BIGINT NOT NULL,
  status INTEGER NOT NULL,
  finish_reason TEXT NOT NULL,
  queued_at BIGINT NOT NULL,
  first_token_at BIGINT,
  ended_at BIGINT NOT NULL,
  day TEXT NOT NULL
);
CREATE INDEX usage_ledger_ended ON usage_ledger (ended_at);
CREATE INDEX usage_ledger_tenant_ended ON usage_ledger (tenant_id, ended_at);
CREATE INDEX usage_ledger_key_ended ON usage_ledger (key_id, ended_at);
)sql"},
    {2, R"sql(
ALTER TABLE tenants ADD COLUMN rpm BIGINT;
ALTER TABLE tenants ADD COLUMN tpm BIGINT;
ALTER TABLE tenants ADD COLUMN daily_tokens BIGINT;
ALTER TABLE tenants ADD COLUMN monthly_tokens BIGINT;
)sql"},
};

inline constexpr int kLatestVersion = static_cast<int>(std::size(kMigrations));

// Tenant ids appear in logs, metrics labels and URLs: 1-64 characters of [A-Za-z0-9._-].
void check_tenant_id(const std::string& id);
// Weight in (0, 1e6], limits not negative.
void check_tenant(const std::string& id, double weight, const TenantLimits& limits);
void check_non_negative(const std::optional<std::int64_t>& v, const char* name);

// The answer to an authentication whose secret matched `key`: ok, revoked or expired at `now`.
AuthResult auth_result(ApiKey key, UnixMillis now);

// The value of a hexadecimal digit (either case), or -1.
int hex_value(char c);

// %XX escapes decoded (malformed ones kept as written); '+' becomes a space when plus_is_space
// (query strings), not in URIs' other parts.
std::string percent_decode(std::string_view s, bool plus_is_space);

}  // namespace maas::platform::detail
