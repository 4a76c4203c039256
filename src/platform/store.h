// Durable platform state: tenants, API keys and the usage ledger.
//
// Store is an abstract interface with two backends: SQLite in the data directory (the embedded
// default, open_sqlite_store) and PostgreSQL (open_postgres_store), which many replicas share.
// open_store picks one from the flags. Every method is thread-safe. Every method throws
// StoreError (naming the database, never a password) when the backend fails, and
// std::invalid_argument when the caller passes a malformed value.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace maas::platform {

// Times are Unix epoch milliseconds (UTC) everywhere: plain integers store and compare the same
// way in SQLite and PostgreSQL, and callers pass "now" explicitly so tests control the clock.
using UnixMillis = std::int64_t;

UnixMillis now_millis();
// "YYYY-MM-DD" of the UTC day containing t.
std::string utc_day(UnixMillis t);
// Start of the UTC day / month containing t (for daily and monthly quota windows).
UnixMillis utc_day_start(UnixMillis t);
UnixMillis utc_month_start(UnixMillis t);

class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Limits shared by all of a tenant's keys; an empty optional means "no limit". A request must
// pass both its key's limits and its tenant's.
struct TenantLimits {
  std::optional<std::int64_t> rpm, tpm, daily_tokens, monthly_tokens;
  bool operator==(const TenantLimits&) const = default;
};

struct Tenant {
  std::string id;     // 1-64 chars of [A-Za-z0-9._-]
  double weight = 1;  // fair-share weight, in (0, 1e6]
  TenantLimits limits;
  UnixMillis created_at = 0;
  bool operator==(const Tenant&) const = default;
};

// Limits of one API key; an empty optional means "no limit".
struct KeyOptions {
  // Allow-list; empty: every model. Stored deduplicated; read back sorted.
  std::vector<std::string> models;
  std::optional<std::int64_t> rpm, tpm, daily_tokens, monthly_tokens;
  std::optional<UnixMillis> expires_at;  // the key stops working at this instant
};

enum class KeyState { kActive, kRevoked, kExpired };

struct ApiKey {
  std::string id;  // public id shown in listings: "key_" + 12 lowercase hex chars
  std::string tenant;
  KeyOptions options;
  UnixMillis created_at = 0;
  std::optional<UnixMillis> revoked_at;

  KeyState state(UnixMillis now) const;
  bool allows_model(std::string_view model) const;
};

// The result of create_key: the secret is returned this once and never stored.
// Format: "sk-maas-" + base64url without padding of 32 random bytes (43 characters).
struct CreatedKey {
  ApiKey key;
  std::string secret;
};

enum class AuthStatus { kOk, kUnknown, kRevoked, kExpired };

struct AuthResult {
  AuthStatus status = AuthStatus::kUnknown;
  std::optional<ApiKey> key;  // set only when status == kOk, so a usable key is never mistaken
  std::string key_id;         // set for kOk, kRevoked and kExpired (for logs)
  explicit operator bool() const { return status == AuthStatus::kOk; }
};

// One finished (or failed) request. cached_tokens is the part of prompt_tokens served from the
// prefix cache (OpenAI semantics), so the tokens a request used are prompt + completion.
struct LedgerEntry {
  std::string request_id;  // unique: the ledger holds at most one record per request
  std::string tenant;
  std::string key_id;  // may be empty (server running without keys)
  std::string model;
  std::int64_t prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0;
  int status = 0;  // HTTP status of the response
  std::string finish_reason;
  UnixMillis queued_at = 0;
  std::optional<UnixMillis> first_token_at;
  UnixMillis ended_at = 0;  // the ledger's time axis: windows and days use ended_at

  bool operator==(const LedgerEntry&) const = default;
};

enum class RecordOutcome { kRecorded, kDuplicate };

struct UsageRow {
  std::string tenant, model, day;  // day: UTC "YYYY-MM-DD" of ended_at
  std::int64_t requests = 0, prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0;
  bool operator==(const UsageRow&) const = default;
};

struct UsageTotals {
  std::int64_t requests = 0, prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0;
  std::int64_t total_tokens() const { return prompt_tokens + completion_tokens; }
  bool operator==(const UsageTotals&) const = default;
};

// Whose usage to sum: a tenant's or one key's.
struct UsageScope {
  enum class Kind { kTenant, kKey };
  Kind kind = Kind::kTenant;
  std::string id;
  static UsageScope tenant(std::string id) { return {Kind::kTenant, std::move(id)}; }
  static UsageScope key(std::string id) { return {Kind::kKey, std::move(id)}; }
};

class Store {
 public:
  virtual ~Store() = default;
  // Where the data lives, for logs and error messages (e.g. the database path).
  virtual std::string location() const = 0;

  // Creates the tenant, or replaces the weight and limits of an existing one (created_at is
  // kept).
  virtual Tenant put_tenant(const std::string& id, double weight, const TenantLimits& limits,
                            UnixMillis now) = 0;
  // The tenant, created with weight 1 and no limits if it does not exist yet.
  Tenant ensure_tenant(const std::string& id, UnixMillis now);
  virtual std::optional<Tenant> find_tenant(const std::string& id) = 0;
  virtual std::vector<Tenant> list_tenants() = 0;  // ordered by id

  // The tenant must exist. Returns the secret once; only its SHA-256 is stored.
  virtual CreatedKey create_key(const std::string& tenant, const KeyOptions& options,
                                UnixMillis now) = 0;
  virtual AuthResult authenticate(std::string_view secret, UnixMillis now) = 0;
  virtual std::vector<ApiKey> list_keys() = 0;  // ordered by creation time, then id
  // False if no key has this id. Revoking twice keeps the first revocation time.
  virtual bool revoke_key(const std::string& key_id, UnixMillis now) = 0;

  // Commits the entry durably before returning (it survives the process being killed).
  // A second entry with the same request_id is not stored and reports kDuplicate.
  virtual RecordOutcome record(const LedgerEntry& entry) = 0;
  virtual std::optional<LedgerEntry> find_record(const std::string& request_id) = 0;
  virtual std::int64_t count_records() = 0;
  // Entries with from <= ended_at < to, grouped by (tenant, model, UTC day), ordered by day,
  // tenant, model. No tenant: every tenant.
  virtual std::vector<UsageRow> usage_by_model_day(const std::optional<std::string>& tenant,
                                                   UnixMillis from, UnixMillis to) = 0;
  // Sum over the scope's entries with ended_at >= since (quota checks).
  virtual UsageTotals tokens_used(const UsageScope& scope, UnixMillis since) = 0;
};

// Opens (creating if missing, mode 0700) data_dir and the SQLite database data_dir/maas.db,
// applying schema migrations. Throws StoreError naming the path when the file is not a SQLite
// database, is damaged, is not a maas database, or has a newer schema than this build knows.
std::unique_ptr<Store> open_sqlite_store(const std::string& data_dir);
// The data directory: `flag` if given (--data-dir), else $MAAS_DATA_DIR, else
// $HOME/.local/share/maas. Throws StoreError if none can be determined.
std::string resolve_data_dir(const std::string& flag);

// The schema version this build migrates SQLite databases to.
int sqlite_schema_version();

// PostgreSQL, for several maas replicas sharing one database. Opens the database at url (a
// postgresql:// or postgres:// URI, or a libpq "key=value" string) and applies the same schema
// migrations as SQLite, under an advisory lock so that replicas starting together migrate once.
// Throws StoreError naming the URL (password masked) when the server cannot be reached (within
// connect_timeout: 10 s unless the URL sets it), refuses the login, or holds a database that is
// not a maas database or has a newer schema. When a connection is lost later (the server
// restarted), the next call reconnects once before failing with StoreError.
// PostgreSQL text holds no NUL bytes and only valid UTF-8: writing such a string throws
// std::invalid_argument, and looking one up finds nothing.
std::unique_ptr<Store> open_postgres_store(const std::string& url);
// The schema version this build migrates PostgreSQL databases to (the same as SQLite's).
int postgres_schema_version();

// The database URL: `flag` if given (--database), else $MAAS_DATABASE_URL, else "".
std::string resolve_database_url(const std::string& database_url_flag);
// The store the flags select: PostgreSQL when resolve_database_url(database_url_flag) is a
// postgresql:// or postgres:// URL, SQLite in resolve_data_dir(data_dir_flag) when it is empty.
// Throws StoreError for any other URL.
std::unique_ptr<Store> open_store(const std::string& data_dir_flag,
                                  const std::string& database_url_flag);
// The URL with its password (user:password@... or password=...) replaced by "***", for logs.
std::string mask_database_url(const std::string& url);

}  // namespace maas::platform
