// The PostgreSQL backend of the platform store, for several maas replicas sharing one database.
//
// Connections: a pool of up to kPoolSize, opened on demand. One connection behind a mutex would
// make every call wait for the network round trip of the one before it, and a ledger commit
// waits for the server's WAL flush too: API-key lookups and quota checks of new requests would
// queue behind other requests' ledger writes. With a few connections they run side by side and
// concurrent commits share the server's flushes. The pool stays small because every replica
// holds its own connections against the server's max_connections (100 by default).
//
// Lost connections: when the server restarts, every pooled connection dies, which shows only
// when one is next used. The call that finds out drops all idle connections and runs once more
// on a fresh one; a second failure is reported. Running a call twice is safe: upserts and
// revocations are idempotent, a ledger insert whose first commit did land reports kDuplicate (the
// entry is stored once), and a key whose creation is retried leaves at most an unused key row
// whose secret nobody ever saw.
//
// Schema: the same versions as SQLite (kMigrations in sqlite_store.cpp), each applied in its own
// transaction with the version bump, holding a transaction-scoped advisory lock so that replicas
// starting at once take turns: the second finds the work done. Text ordering uses COLLATE "C"
// (byte order, as SQLite's BINARY) whatever the database's default collation is.
//
// Durability: commits are synchronous (the session turns synchronous_commit back on if the
// server or role turned it off), so a record() that returned survives a server crash.
#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "platform/keys.h"
#include "platform/pg_connection.h"
#include "platform/store.h"
#include "platform/store_rules.h"

namespace maas::platform {
namespace {

using pg::Connection;
using pg::Param;
using pg::param;
using pg::PgError;
using pg::Result;

using detail::kLatestVersion;
using detail::kMigrations;
using detail::Migration;
constexpr std::size_t kPoolSize = 4;
// pg_advisory_xact_lock key serialising migrations ("maas_sch" in ASCII). Advisory locks are
// per database, which is exactly the scope replicas share.
constexpr std::int64_t kMigrationLock = 0x6d6161735f736368;

// Prepared on every connection: a missing table or column fails at open, naming it.
enum Sql : int {
  kUpsertTenant,
  kSelectTenant,
  kSelectTenants,
  kTenantExists,
  kInsertKey,
  kInsertKeyModel,
  kSelectKeyByHash,
  kSelectKeys,
  kRevokeKey,
  kInsertRecord,
  kSelectRecord,
  kCountRecords,
  kUsageAll,
  kUsageTenant,
  kTenantTotals,
  kKeyTotals,
  kSqlCount
};

#define TENANT_COLUMNS "id, weight, created_at, rpm, tpm, daily_tokens, monthly_tokens"
// Each key once per model in its allow-list (model NULL when the list is empty).
#define KEY_WITH_MODELS                                                                         \
  "SELECT k.id, k.tenant_id, k.secret_sha256, k.rpm, k.tpm, k.daily_tokens, k.monthly_tokens, " \
  "k.expires_at, k.created_at, k.revoked_at, m.model "                                          \
  "FROM api_keys k LEFT JOIN api_key_models m ON m.key_id = k.id "
#define USAGE_COLUMNS                                                                \
  "SELECT tenant_id, model, day, COUNT(*), SUM(prompt_tokens), SUM(cached_tokens), " \
  "SUM(completion_tokens) FROM usage_ledger WHERE ended_at >= $1 AND ended_at < $2 "
#define USAGE_ORDER                                                                       \
  " GROUP BY tenant_id, model, day ORDER BY day COLLATE \"C\", tenant_id COLLATE \"C\", " \
  "model COLLATE \"C\""
#define TOTALS_COLUMNS                                                                  \
  "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(cached_tokens), 0), " \
  "COALESCE(SUM(completion_tokens), 0) FROM usage_ledger "

constexpr const char* kStatements[kSqlCount] = {
    // kUpsertTenant
    "INSERT INTO tenants (id, weight, rpm, tpm, daily_tokens, monthly_tokens, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) "
    "ON CONFLICT (id) DO UPDATE SET weight = excluded.weight, rpm = excluded.rpm, "
    "tpm = excluded.tpm, daily_tokens = excluded.daily_tokens, "
    "monthly_tokens = excluded.monthly_tokens RETURNING " TENANT_COLUMNS,
    // kSelectTenant
    "SELECT " TENANT_COLUMNS " FROM tenants WHERE id = $1",
    // kSelectTenants
    "SELECT " TENANT_COLUMNS " FROM tenants ORDER BY id COLLATE \"C\"",
    // kTenantExists
    "SELECT 1 FROM tenants WHERE id = $1",
    // kInsertKey: an id drawn twice inserts nothing, and create_key draws again.
    "INSERT INTO api_keys (id, tenant_id, secret_sha256, rpm, tpm, daily_tokens, "
    "monthly_tokens, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
    "ON CONFLICT (id) DO NOTHING",
    // kInsertKeyModel
    "INSERT INTO api_key_models (key_id, model) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    // kSelectKeyByHash
    KEY_WITH_MODELS "WHERE k.secret_sha256 = $1 ORDER BY m.model COLLATE \"C\"",
    // kSelectKeys: one statement, so a key is never seen without its models.
    KEY_WITH_MODELS "ORDER BY k.created_at, k.id COLLATE \"C\", m.model COLLATE \"C\"",
    // kRevokeKey
    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
    // kInsertRecord
    "INSERT INTO usage_ledger (request_id, tenant_id, key_id, model, prompt_tokens, "
    "cached_tokens, completion_tokens, status, finish_reason, queued_at, first_token_at, "
    "ended_at, day) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
    "ON CONFLICT (request_id) DO NOTHING",
    // kSelectRecord
    "SELECT request_id, tenant_id, key_id, model, prompt_tokens, cached_tokens, "
    "completion_tokens, status, finish_reason, queued_at, first_token_at, ended_at "
    "FROM usage_ledger WHERE request_id = $1",
    // kCountRecords
    "SELECT COUNT(*) FROM usage_ledger",
    // kUsageAll
    USAGE_COLUMNS USAGE_ORDER,
    // kUsageTenant
    USAGE_COLUMNS "AND tenant_id = $3" USAGE_ORDER,
    // kTenantTotals
    TOTALS_COLUMNS "WHERE tenant_id = $1 AND ended_at >= $2",
    // kKeyTotals
    TOTALS_COLUMNS "WHERE key_id = $1 AND ended_at >= $2",
};

#undef TENANT_COLUMNS
#undef KEY_WITH_MODELS
#undef USAGE_COLUMNS
#undef USAGE_ORDER
#undef TOTALS_COLUMNS

std::string statement_name(Sql s) { return fmt::format("maas_{}", static_cast<int>(s)); }

// Whether PostgreSQL text can hold s: no NUL byte, and well-formed UTF-8 (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), which is what the server accepts.
bool storable(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (n - i < len || p[i + 1] < lo || p[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    }
    i += len;
  }
  return true;
}

void require_storable(std::string_view s, const char* what) {
  if (!storable(s)) {
    throw std::invalid_argument(
        fmt::format("{} has a NUL byte or invalid UTF-8, which PostgreSQL cannot store", what));
  }
}

using detail::check_non_negative;
using detail::check_tenant;
using detail::check_tenant_id;

Tenant read_tenant(const Result& r, int row) {
  Tenant t;
  t.id = r.text(row, 0);
  t.weight = r.real(row, 1);
  t.created_at = r.int64(row, 2);
  t.limits = {r.opt_int64(row, 3), r.opt_int64(row, 4), r.opt_int64(row, 5), r.opt_int64(row, 6)};
  return t;
}

// Rows of KEY_WITH_MODELS, one key's rows adjacent: the keys with their allow-lists.
std::vector<ApiKey> read_keys(const Result& r) {
  std::vector<ApiKey> out;
  for (int row = 0; row < r.rows(); ++row) {
    std::string id = r.text(row, 0);
    if (out.empty() || out.back().id != id) {
      ApiKey k;
      k.id = std::move(id);
      k.tenant = r.text(row, 1);
      k.options.rpm = r.opt_int64(row, 3);
      k.options.tpm = r.opt_int64(row, 4);
      k.options.daily_tokens = r.opt_int64(row, 5);
      k.options.monthly_tokens = r.opt_int64(row, 6);
      k.options.expires_at = r.opt_int64(row, 7);
      k.created_at = r.int64(row, 8);
      k.revoked_at = r.opt_int64(row, 9);
      out.push_back(std::move(k));
    }
    if (!r.is_null(row, 10)) out.back().options.models.push_back(r.text(row, 10));
  }
  return out;
}

class PostgresStore final : public Store {
 public:
  explicit PostgresStore(const std::string& url)
      : url_(url), where_(url), pool_(kPoolSize, [this] { return open_connection(); }) {
    if (url.empty()) throw std::invalid_argument("the database URL must not be empty");
    auto first = std::make_unique<Connection>(url_, where_);
    migrate(*first);
    prepare_statements(*first);
    pool_.adopt(std::move(first));
  }

  std::string location() const override { return where_.location(); }

  Tenant put_tenant(const std::string& id, double weight, const TenantLimits& limits,
                    UnixMillis now) override {
    check_tenant(id, weight, limits);
    // "{}" prints the shortest text that reads back as the same double.
    const std::vector<Param> params = {id,
                                       fmt::format("{}", weight),
                                       param(limits.rpm),
                                       param(limits.tpm),
                                       param(limits.daily_tokens),
                                       param(limits.monthly_tokens),
                                       param(now)};
    return with_connection([&](Connection& c) {
      Result r = c.run(statement_name(kUpsertTenant), params);
      if (r.rows() != 1) throw StoreError(where_.describe("put_tenant", "no row returned"));
      return read_tenant(r, 0);
    });
  }

  std::optional<Tenant> find_tenant(const std::string& id) override {
    if (!storable(id)) return std::nullopt;
    return with_connection([&](Connection& c) -> std::optional<Tenant> {
      Result r = c.run(statement_name(kSelectTenant), {id});
      if (r.rows() == 0) return std::nullopt;
      return read_tenant(r, 0);
    });
  }

  std::vector<Tenant> list_tenants() override {
    return with_connection([&](Connection& c) {
      Result r = c.run(statement_name(kSelectTenants), {});
      std::vector<Tenant> out;
      for (int row = 0; row < r.rows(); ++row) out.push_back(read_tenant(r, row));
      return out;
    });
  }

  CreatedKey create_key(const std::string& tenant, const KeyOptions& options,
                        UnixMillis now) override {
    check_non_negative(options.rpm, "rpm");
    check_non_negative(options.tpm, "tpm");
    check_non_negative(options.daily_tokens, "daily_tokens");
    check_non_negative(options.monthly_tokens, "monthly_tokens");
    for (const auto& m : options.models) {
      if (m.empty()) throw std::invalid_argument("a key's model allow-list has an empty name");
      require_storable(m, "a model name in the key's allow-list");
    }
    if (!storable(tenant)) throw std::invalid_argument(fmt::format("unknown tenant '{}'", tenant));
    const std::set<std::string> models(options.models.begin(), options.models.end());
    CreatedKey created = with_connection([&](Connection& c) {
      pg::Transaction tx(c);
      if (c.run(statement_name(kTenantExists), {tenant}).rows() == 0) {
        throw std::invalid_argument(fmt::format("unknown tenant '{}'", tenant));
      }
      CreatedKey k;
      k.secret = keys::generate_secret();
      const std::string digest = keys::to_hex(keys::sha256(k.secret));
      // 48-bit ids: a clash is rare but possible across millions of keys, so draw again.
      for (int attempt = 0;; ++attempt) {
        if (attempt == 8) throw StoreError(where_.describe("create_key", "no unused key id"));
        k.key.id = keys::generate_key_id();
        Result r = c.run(statement_name(kInsertKey),
                         {k.key.id, tenant, digest, param(options.rpm), param(options.tpm),
                          param(options.daily_tokens), param(options.monthly_tokens),
                          param(options.expires_at), param(now)});
        if (r.affected() == 1) break;
      }
      for (const auto& m : models) c.run(statement_name(kInsertKeyModel), {k.key.id, m});
      tx.commit();
      return k;
    });
    created.key.tenant = tenant;
    created.key.options = options;
    created.key.options.models.assign(models.begin(), models.end());
    created.key.created_at = now;
    return created;
  }

  AuthResult authenticate(std::string_view secret, UnixMillis now) override {
    AuthResult result;
    if (!keys::looks_like_secret(secret)) return result;
    const keys::Digest digest = keys::sha256(secret);
    // Timing: as in the SQLite backend, the lookup compares SHA-256 digests, never secrets, so
    // how long the index search takes tells nothing useful about valid keys; the constant-time
    // comparison of the digest found keeps the final check free of early exits all the same.
    std::vector<ApiKey> found;
    std::string stored_hex;
    with_connection([&](Connection& c) {
      Result r = c.run(statement_name(kSelectKeyByHash), {keys::to_hex(digest)});
      found = read_keys(r);
      stored_hex = r.rows() > 0 ? r.text(0, 2) : "";
    });
    if (found.size() != 1) return result;
    keys::Digest stored{};
    if (!keys::digest_from_hex(stored_hex, stored) || !keys::digests_equal(stored, digest)) {
      return result;
    }
    ApiKey& key = found.front();
    return detail::auth_result(std::move(key), now);
  }

  std::vector<ApiKey> list_keys() override {
    return with_connection(
        [&](Connection& c) { return read_keys(c.run(statement_name(kSelectKeys), {})); });
  }

  bool revoke_key(const std::string& key_id, UnixMillis now) override {
    if (!storable(key_id)) return false;
    return with_connection([&](Connection& c) {
      return c.run(statement_name(kRevokeKey), {key_id, param(now)}).affected() > 0;
    });
  }

  RecordOutcome record(const LedgerEntry& e) override {
    if (e.request_id.empty()) throw std::invalid_argument("a ledger entry needs a request id");
    if (e.tenant.empty()) throw std::invalid_argument("a ledger entry needs a tenant");
    if (e.prompt_tokens < 0 || e.cached_tokens < 0 || e.completion_tokens < 0) {
      throw std::invalid_argument("ledger token counts must not be negative");
    }
    require_storable(e.request_id, "the ledger entry's request id");
    require_storable(e.tenant, "the ledger entry's tenant");
    require_storable(e.key_id, "the ledger entry's key id");
    require_storable(e.model, "the ledger entry's model");
    require_storable(e.finish_reason, "the ledger entry's finish reason");
    const std::vector<Param> params = {e.request_id,
                                       e.tenant,
                                       e.key_id,
                                       e.model,
                                       param(e.prompt_tokens),
                                       param(e.cached_tokens),
                                       param(e.completion_tokens),
                                       param(std::int64_t{e.status}),
                                       e.finish_reason,
                                       param(e.queued_at),
                                       param(e.first_token_at),
                                       param(e.ended_at),
                                       utc_day(e.ended_at)};
    return with_connection([&](Connection& c) {
      return c.run(statement_name(kInsertRecord), params).affected() > 0
                 ? RecordOutcome::kRecorded
                 : RecordOutcome::kDuplicate;
    });
  }

  std::optional<LedgerEntry> find_record(const std::string& request_id) override {
    if (!storable(request_id)) return std::nullopt;
    return with_connection([&](Connection& c) -> std::optional<LedgerEntry> {
      Result r = c.run(statement_name(kSelectRecord), {request_id});
      if (r.rows() == 0) return std::nullopt;
      LedgerEntry e;
      e.request_id = r.text(0, 0);
      e.tenant = r.text(0, 1);
      e.key_id = r.text(0, 2);
      e.model = r.text(0, 3);
      e.prompt_tokens = r.int64(0, 4);
      e.cached_tokens = r.int64(0, 5);
      e.completion_tokens = r.int64(0, 6);
      e.status = static_cast<int>(r.int64(0, 7));
      e.finish_reason = r.text(0, 8);
      e.queued_at = r.int64(0, 9);
      e.first_token_at = r.opt_int64(0, 10);
      e.ended_at = r.int64(0, 11);
      return e;
    });
  }

  std::int64_t count_records() override {
    return with_connection([&](Connection& c) {
      Result r = c.run(statement_name(kCountRecords), {});
      return r.rows() > 0 ? r.int64(0, 0) : 0;
    });
  }

  std::vector<UsageRow> usage_by_model_day(const std::optional<std::string>& tenant,
                                           UnixMillis from, UnixMillis to) override {
    if (tenant && !storable(*tenant)) return {};
    std::vector<Param> params = {param(from), param(to)};
    if (tenant) params.push_back(*tenant);
    return with_connection([&](Connection& c) {
      Result r = c.run(statement_name(tenant ? kUsageTenant : kUsageAll), params);
      std::vector<UsageRow> out;
      for (int row = 0; row < r.rows(); ++row) {
        out.push_back(UsageRow{r.text(row, 0), r.text(row, 1), r.text(row, 2), r.int64(row, 3),
                               r.int64(row, 4), r.int64(row, 5), r.int64(row, 6)});
      }
      return out;
    });
  }

  UsageTotals tokens_used(const UsageScope& scope, UnixMillis since) override {
    if (!storable(scope.id)) return {};
    const Sql sql = scope.kind == UsageScope::Kind::kTenant ? kTenantTotals : kKeyTotals;
    return with_connection([&](Connection& c) {
      Result r = c.run(statement_name(sql), {scope.id, param(since)});
      UsageTotals t;
      if (r.rows() > 0) t = UsageTotals{r.int64(0, 0), r.int64(0, 1), r.int64(0, 2), r.int64(0, 3)};
      return t;
    });
  }

 private:
  std::unique_ptr<Connection> open_connection() {
    auto conn = std::make_unique<Connection>(url_, where_);
    prepare_statements(*conn);
    return conn;
  }

  static void prepare_statements(Connection& conn) {
    for (int s = 0; s < kSqlCount; ++s) {
      conn.prepare(statement_name(static_cast<Sql>(s)), kStatements[s]);
    }
  }

  // Runs f on a pooled connection; when the connection turns out to be lost, once more on a
  // fresh one (see the top of the file).
  template <typename F>
  auto with_connection(F&& f) -> decltype(f(std::declval<Connection&>())) {
    for (int attempt = 0;; ++attempt) {
      auto lease = pool_.acquire();
      try {
        return f(*lease);
      } catch (const PgError& e) {
        if (!e.lost_connection() || attempt > 0) throw;
        lease.discard();
        pool_.drop_idle();
      }
    }
  }

  // The version in the database; 0 for a database without maas tables. Call inside the
  // migration transaction.
  int read_version(Connection& conn, bool& has_table) const {
    // Only the schema maas creates its tables in (the first of the search path) counts.
    has_table = conn.exec(
                        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = "
                        "current_schema() AND tablename = 'schema_version'",
                        "reading the schema version failed")
                    .rows() > 0;
    if (!has_table) {
      Result others =
          conn.exec("SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
                    "reading the schema version failed");
      if (others.int64(0, 0) > 0) {
        throw StoreError(where_.describe(
            "not a maas database", "it has tables but no schema_version; use another database"));
      }
      return 0;
    }
    Result r = conn.exec("SELECT version FROM schema_version", "damaged schema_version table");
    std::int64_t version = -1;
    try {
      if (r.rows() == 1 && !r.is_null(0, 0)) version = r.int64(0, 0);
    } catch (const StoreError&) {
    }
    if (version < 0 || version > 1'000'000) {
      throw StoreError(where_.describe("damaged schema_version table",
                                       "it must hold exactly one row with a version number"));
    }
    return static_cast<int>(version);
  }

  void migrate(Connection& conn) const {
    for (;;) {
      pg::Transaction tx(conn);
      conn.exec(fmt::format("SELECT pg_advisory_xact_lock({})", kMigrationLock),
                "waiting for the migration lock failed");
      bool has_table = false;
      const int version = read_version(conn, has_table);
      if (version > kLatestVersion) {
        throw StoreError(where_.describe(
            "newer schema",
            fmt::format("the database has schema version {}, newer than the {} this maas build "
                        "knows; use a newer maas or another database",
                        version, kLatestVersion)));
      }
      if (version == kLatestVersion) {
        tx.commit();
        return;
      }
      if (!has_table) {
        conn.exec(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);"
            "INSERT INTO schema_version (version) VALUES (0)",
            "creating schema_version failed");
      }
      const Migration& m = kMigrations[version];
      conn.exec(m.sql, fmt::format("migration to schema version {} failed", m.version));
      conn.exec(fmt::format("UPDATE schema_version SET version = {}", m.version),
                "updating schema_version failed");
      tx.commit();
    }
  }

  const std::string url_;
  const pg::Where where_;
  pg::Pool pool_;  // last: its connections refer to where_
};

}  // namespace

std::unique_ptr<Store> open_postgres_store(const std::string& url) {
  return std::make_unique<PostgresStore>(url);
}

int postgres_schema_version() { return kLatestVersion; }

}  // namespace maas::platform
