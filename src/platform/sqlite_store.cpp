// The SQLite backend of the platform store.
//
// One connection guarded by one mutex: every public method locks it, so the store is safe to
// call from any thread, and SQLite itself runs in its no-mutex mode. Writes are short (one row or
// one key), so serialising them costs little next to the fsync each ledger commit pays anyway.
// Other processes may open the same file: WAL mode lets readers run beside the writer, and the
// busy timeout waits for another process's write lock instead of failing at once.
//
// Durability: WAL with synchronous=FULL fsyncs the log on every commit, so a record() that has
// returned survives the process being killed (and the machine losing power).
//
// The file may be untrusted or damaged: defensive mode and trusted_schema=OFF keep a crafted
// schema from running functions, cell_size_check catches more corruption early, all statements
// are prepared at open (so missing tables or columns fail there, naming the file), and every
// column read tolerates NULL and wrong types.
//
// SQL is kept portable to PostgreSQL where it costs nothing: TEXT/BIGINT/DOUBLE PRECISION types,
// INSERT ... ON CONFLICT DO NOTHING, UTC days computed in C++ rather than with date functions.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include <fmt/format.h>

#include "platform/keys.h"
#include "platform/store.h"
#include "platform/store_rules.h"

namespace maas::platform {
namespace {

using detail::kLatestVersion;
using detail::kMigrations;
using detail::Migration;

// Waits this long for another process's write lock before failing.
constexpr int kBusyTimeoutMs = 5000;

class Connection {
 public:
  explicit Connection(std::string path) : path_(std::move(path)) {
    int rc =
        sqlite3_open_v2(path_.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close(db_);
      db_ = nullptr;
      throw StoreError(fmt::format("cannot open database {}: {}", path_, msg));
    }
  }
  ~Connection() { sqlite3_close(db_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }

  [[noreturn]] void fail(std::string_view what) const {
    throw StoreError(fmt::format("database {}: {}: {}", path_, what, sqlite3_errmsg(db_)));
  }

  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      throw StoreError(fmt::format("database {}: {}", path_, msg));
    }
  }

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
};

class Statement {
 public:
  Statement(Connection& conn, const char* sql) : conn_(conn) {
    if (sqlite3_prepare_v3(conn_.handle(), sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) !=
        SQLITE_OK) {
      conn_.fail("the schema is damaged or not a maas schema");
    }
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Resets the statement when a use ends, even by exception, so it never holds a read lock.
  class Use {
   public:
    explicit Use(Statement& s) : s_(s) {}
    ~Use() {
      sqlite3_reset(s_.stmt_);
      sqlite3_clear_bindings(s_.stmt_);
    }
    Use& bind(int i, std::int64_t v) { return check(sqlite3_bind_int64(s_.stmt_, i, v)); }
    Use& bind(int i, double v) { return check(sqlite3_bind_double(s_.stmt_, i, v)); }
    Use& bind(int i, std::string_view v) {
      return check(
          sqlite3_bind_text64(s_.stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
    }
    Use& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
    Use& bind(int i, const std::optional<std::int64_t>& v) {
      return v ? bind(i, *v) : check(sqlite3_bind_null(s_.stmt_, i));
    }
    Use& bind(int i, const std::optional<std::string>& v) {
      return v ? bind(i, std::string_view(*v)) : check(sqlite3_bind_null(s_.stmt_, i));
    }
    // True while there is a row to read.
    bool step() {
      int rc = sqlite3_step(s_.stmt_);
      if (rc == SQLITE_ROW) return true;
      if (rc == SQLITE_DONE) return false;
      s_.conn_.fail("query failed");
    }
    void run() {
      while (step()) {
      }
    }
    std::int64_t int64(int col) { return sqlite3_column_int64(s_.stmt_, col); }
    double real(int col) { return sqlite3_column_double(s_.stmt_, col); }
    std::optional<std::int64_t> opt_int64(int col) {
      if (sqlite3_column_type(s_.stmt_, col) == SQLITE_NULL) return std::nullopt;
      return int64(col);
    }
    std::string text(int col) {
      const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_.stmt_, col));
      if (!p) return {};
      return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_.stmt_, col)));
    }

   private:
    Use& check(int rc) {
      if (rc != SQLITE_OK) s_.conn_.fail("binding a parameter failed");
      return *this;
    }
    Statement& s_;
  };

 private:
  Connection& conn_;
  sqlite3_stmt* stmt_ = nullptr;
};

// A write transaction; rolls back unless committed. IMMEDIATE takes the write lock up front so
// read-then-write sequences cannot race another process.
class Transaction {
 public:
  explicit Transaction(Connection& conn) : conn_(conn) { conn_.exec("BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (!done_) sqlite3_exec(conn_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    conn_.exec("COMMIT");
    done_ = true;
  }

 private:
  Connection& conn_;
  bool done_ = false;
};

std::string prepare_data_dir(const std::string& data_dir) {
  if (data_dir.empty()) throw std::invalid_argument("the data directory must not be empty");
  std::filesystem::path dir = std::filesystem::path(data_dir).lexically_normal();
  if (dir.filename().empty() && dir.has_parent_path()) dir = dir.parent_path();
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    if (dir.has_parent_path()) std::filesystem::create_directories(dir.parent_path(), ec);
    // Keys' metadata and usage are private to the operator: only the owner may enter.
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      throw StoreError(
          fmt::format("cannot create data directory {}: {}", dir.string(), std::strerror(errno)));
    }
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    throw StoreError(fmt::format("data directory {} is not a directory", dir.string()));
  }
  std::string path = (dir / "maas.db").string();
  // Create the file ourselves so it (and the -wal/-shm files SQLite derives from it) is 0600.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    throw StoreError(fmt::format("cannot open database {}: {}", path, std::strerror(errno)));
  }
  ::close(fd);
  return path;
}

using detail::check_non_negative;
using detail::check_tenant;
using detail::check_tenant_id;

// Column lists shared by several statements (string literals, so they concatenate).
#define KEY_COLUMNS                                                                    \
  "id, tenant_id, secret_sha256, rpm, tpm, daily_tokens, monthly_tokens, expires_at, " \
  "created_at, revoked_at"
#define TENANT_COLUMNS "id, weight, created_at, rpm, tpm, daily_tokens, monthly_tokens"
#define TOTALS_COLUMNS                                                           \
  "COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(cached_tokens), 0), " \
  "COALESCE(SUM(completion_tokens), 0)"

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(const std::string& data_dir)
      : conn_(prepare_data_dir(data_dir)),
        setup_(configure(conn_)),
        insert_tenant_(conn_,
                       "INSERT INTO tenants (id, weight, rpm, tpm, daily_tokens, monthly_tokens, "
                       "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                       "ON CONFLICT (id) DO UPDATE SET weight = excluded.weight, "
                       "rpm = excluded.rpm, tpm = excluded.tpm, "
                       "daily_tokens = excluded.daily_tokens, "
                       "monthly_tokens = excluded.monthly_tokens"),
        select_tenant_(conn_, "SELECT " TENANT_COLUMNS " FROM tenants WHERE id = ?1"),
        select_tenants_(conn_, "SELECT " TENANT_COLUMNS " FROM tenants ORDER BY id"),
        key_id_exists_(conn_, "SELECT 1 FROM api_keys WHERE id = ?1"),
        insert_key_(conn_,
                    "INSERT INTO api_keys (id, tenant_id, secret_sha256, rpm, tpm, daily_tokens, "
                    "monthly_tokens, expires_at, created_at) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        insert_key_model_(conn_,
                          "INSERT INTO api_key_models (key_id, model) VALUES (?1, ?2) "
                          "ON CONFLICT DO NOTHING"),
        select_key_by_hash_(conn_, "SELECT " KEY_COLUMNS " FROM api_keys WHERE secret_sha256 = ?1"),
        select_keys_(conn_, "SELECT " KEY_COLUMNS " FROM api_keys ORDER BY created_at, id"),
        select_key_models_(conn_,
                           "SELECT model FROM api_key_models WHERE key_id = ?1 ORDER BY model"),
        select_all_key_models_(conn_,
                               "SELECT key_id, model FROM api_key_models ORDER BY key_id, model"),
        revoke_key_(conn_,
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1"),
        insert_record_(conn_,
                       "INSERT INTO usage_ledger (request_id, tenant_id, key_id, model, "
                       "prompt_tokens, cached_tokens, completion_tokens, status, finish_reason, "
                       "queued_at, first_token_at, ended_at, day) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) "
                       "ON CONFLICT (request_id) DO NOTHING"),
        select_record_(conn_,
                       "SELECT request_id, tenant_id, key_id, model, prompt_tokens, cached_tokens, "
                       "completion_tokens, status, finish_reason, queued_at, first_token_at, "
                       "ended_at FROM usage_ledger WHERE request_id = ?1"),
        count_records_(conn_, "SELECT COUNT(*) FROM usage_ledger"),
        usage_by_day_(conn_,
                      "SELECT tenant_id, model, day, COUNT(*), SUM(prompt_tokens), "
                      "SUM(cached_tokens), SUM(completion_tokens) FROM usage_ledger "
                      "WHERE ended_at >= ?1 AND ended_at < ?2 AND (?3 IS NULL OR tenant_id = ?3) "
                      "GROUP BY tenant_id, model, day ORDER BY day, tenant_id, model"),
        tenant_totals_(conn_, "SELECT " TOTALS_COLUMNS
                              " FROM usage_ledger WHERE tenant_id = ?1 AND ended_at >= ?2"),
        key_totals_(conn_, "SELECT " TOTALS_COLUMNS
                           " FROM usage_ledger WHERE key_id = ?1 AND ended_at >= ?2") {}

  std::string location() const override { return conn_.path(); }

  Tenant put_tenant(const std::string& id, double weight, const TenantLimits& limits,
                    UnixMillis now) override {
    check_tenant(id, weight, limits);
    std::lock_guard lock(mu_);
    Transaction tx(conn_);
    Statement::Use(insert_tenant_)
        .bind(1, id)
        .bind(2, weight)
        .bind(3, limits.rpm)
        .bind(4, limits.tpm)
        .bind(5, limits.daily_tokens)
        .bind(6, limits.monthly_tokens)
        .bind(7, std::int64_t{now})
        .run();
    auto tenant = find_tenant_locked(id);
    tx.commit();
    if (!tenant) throw StoreError(fmt::format("database {}: tenant {} vanished", location(), id));
    return *tenant;
  }

  std::optional<Tenant> find_tenant(const std::string& id) override {
    std::lock_guard lock(mu_);
    return find_tenant_locked(id);
  }

  std::vector<Tenant> list_tenants() override {
    std::lock_guard lock(mu_);
    std::vector<Tenant> out;
    Statement::Use q(select_tenants_);
    while (q.step()) out.push_back(read_tenant(q));
    return out;
  }

  CreatedKey create_key(const std::string& tenant, const KeyOptions& options,
                        UnixMillis now) override {
    check_non_negative(options.rpm, "rpm");
    check_non_negative(options.tpm, "tpm");
    check_non_negative(options.daily_tokens, "daily_tokens");
    check_non_negative(options.monthly_tokens, "monthly_tokens");
    for (const auto& m : options.models) {
      if (m.empty()) throw std::invalid_argument("a key's model allow-list has an empty name");
    }
    std::lock_guard lock(mu_);
    Transaction tx(conn_);
    if (!find_tenant_locked(tenant)) {
      throw std::invalid_argument(fmt::format("unknown tenant '{}'", tenant));
    }
    CreatedKey created;
    created.secret = keys::generate_secret();
    // 48-bit ids: a clash is rare but possible across millions of keys, so draw again.
    for (int attempt = 0;; ++attempt) {
      created.key.id = keys::generate_key_id();
      Statement::Use q(key_id_exists_);
      q.bind(1, created.key.id);
      if (!q.step()) break;
      if (attempt == 8) throw StoreError("cannot draw an unused key id");
    }
    Statement::Use(insert_key_)
        .bind(1, created.key.id)
        .bind(2, tenant)
        .bind(3, keys::to_hex(keys::sha256(created.secret)))
        .bind(4, options.rpm)
        .bind(5, options.tpm)
        .bind(6, options.daily_tokens)
        .bind(7, options.monthly_tokens)
        .bind(8, options.expires_at)
        .bind(9, std::int64_t{now})
        .run();
    std::set<std::string> models(options.models.begin(), options.models.end());
    for (const auto& m : models) {
      Statement::Use(insert_key_model_).bind(1, created.key.id).bind(2, m).run();
    }
    tx.commit();
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
    // Timing: the lookup compares SHA-256 digests, never secrets. How long the index search
    // takes depends on how the caller's digest orders against stored digests, and learning that
    // gives no way to build a secret with a chosen digest prefix (that would need SHA-256
    // preimages), so it leaks nothing useful about valid keys. The constant-time comparison of
    // the found digest below keeps the final check free of early exits all the same.
    std::lock_guard lock(mu_);
    std::optional<ApiKey> key;
    {
      Statement::Use q(select_key_by_hash_);
      q.bind(1, keys::to_hex(digest));
      if (!q.step()) return result;
      keys::Digest stored{};
      if (!keys::digest_from_hex(q.text(2), stored) || !keys::digests_equal(stored, digest)) {
        return result;
      }
      key = read_key(q);
    }
    key->options.models = models_of(key->id);
    return detail::auth_result(std::move(*key), now);
  }

  std::vector<ApiKey> list_keys() override {
    std::lock_guard lock(mu_);
    std::map<std::string, std::vector<std::string>> models;
    {
      Statement::Use q(select_all_key_models_);
      while (q.step()) models[q.text(0)].push_back(q.text(1));
    }
    std::vector<ApiKey> out;
    Statement::Use q(select_keys_);
    while (q.step()) {
      out.push_back(read_key(q));
      if (auto it = models.find(out.back().id); it != models.end()) {
        out.back().options.models = it->second;
      }
    }
    return out;
  }

  bool revoke_key(const std::string& key_id, UnixMillis now) override {
    std::lock_guard lock(mu_);
    Statement::Use(revoke_key_).bind(1, key_id).bind(2, std::int64_t{now}).run();
    return sqlite3_changes(conn_.handle()) > 0;
  }

  RecordOutcome record(const LedgerEntry& e) override {
    if (e.request_id.empty()) throw std::invalid_argument("a ledger entry needs a request id");
    if (e.tenant.empty()) throw std::invalid_argument("a ledger entry needs a tenant");
    if (e.prompt_tokens < 0 || e.cached_tokens < 0 || e.completion_tokens < 0) {
      throw std::invalid_argument("ledger token counts must not be negative");
    }
    std::string day = utc_day(e.ended_at);
    std::lock_guard lock(mu_);
    Statement::Use(insert_record_)
        .bind(1, e.request_id)
        .bind(2, e.tenant)
        .bind(3, e.key_id)
        .bind(4, e.model)
        .bind(5, e.prompt_tokens)
        .bind(6, e.cached_tokens)
        .bind(7, e.completion_tokens)
        .bind(8, std::int64_t{e.status})
        .bind(9, e.finish_reason)
        .bind(10, std::int64_t{e.queued_at})
        .bind(11, e.first_token_at)
        .bind(12, std::int64_t{e.ended_at})
        .bind(13, day)
        .run();
    return sqlite3_changes(conn_.handle()) > 0 ? RecordOutcome::kRecorded
                                               : RecordOutcome::kDuplicate;
  }

  std::optional<LedgerEntry> find_record(const std::string& request_id) override {
    std::lock_guard lock(mu_);
    Statement::Use q(select_record_);
    q.bind(1, request_id);
    if (!q.step()) return std::nullopt;
    LedgerEntry e;
    e.request_id = q.text(0);
    e.tenant = q.text(1);
    e.key_id = q.text(2);
    e.model = q.text(3);
    e.prompt_tokens = q.int64(4);
    e.cached_tokens = q.int64(5);
    e.completion_tokens = q.int64(6);
    e.status = static_cast<int>(q.int64(7));
    e.finish_reason = q.text(8);
    e.queued_at = q.int64(9);
    e.first_token_at = q.opt_int64(10);
    e.ended_at = q.int64(11);
    return e;
  }

  std::int64_t count_records() override {
    std::lock_guard lock(mu_);
    Statement::Use q(count_records_);
    return q.step() ? q.int64(0) : 0;
  }

  std::vector<UsageRow> usage_by_model_day(const std::optional<std::string>& tenant,
                                           UnixMillis from, UnixMillis to) override {
    std::lock_guard lock(mu_);
    std::vector<UsageRow> out;
    Statement::Use q(usage_by_day_);
    q.bind(1, std::int64_t{from}).bind(2, std::int64_t{to}).bind(3, tenant);
    while (q.step()) {
      out.push_back(UsageRow{q.text(0), q.text(1), q.text(2), q.int64(3), q.int64(4), q.int64(5),
                             q.int64(6)});
    }
    return out;
  }

  UsageTotals tokens_used(const UsageScope& scope, UnixMillis since) override {
    std::lock_guard lock(mu_);
    Statement::Use q(scope.kind == UsageScope::Kind::kTenant ? tenant_totals_ : key_totals_);
    q.bind(1, scope.id).bind(2, std::int64_t{since});
    UsageTotals t;
    if (q.step()) t = UsageTotals{q.int64(0), q.int64(1), q.int64(2), q.int64(3)};
    return t;
  }

 private:
  // Connection settings and migrations; runs before any statement is prepared.
  static bool configure(Connection& conn) {
    sqlite3* db = conn.handle();
    sqlite3_extended_result_codes(db, 1);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
    sqlite3_busy_timeout(db, kBusyTimeoutMs);
    // The first read of the file: a file that is not a database fails here.
    conn.exec("SELECT COUNT(*) FROM sqlite_master");
    {
      Statement journal(conn, "PRAGMA journal_mode = WAL");
      Statement::Use q(journal);
      if (!q.step() || q.text(0) != "wal") {
        throw StoreError(
            fmt::format("database {}: cannot switch to WAL journal mode", conn.path()));
      }
    }
    conn.exec("PRAGMA synchronous = FULL");
    conn.exec("PRAGMA foreign_keys = ON");
    conn.exec("PRAGMA cell_size_check = ON");
    migrate(conn);
    return true;
  }

  // The version recorded in the file; 0 for a fresh file. Call inside a transaction.
  static int read_version(Connection& conn, bool& has_table) {
    {
      Statement s(conn,
                  "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
                  "name = 'schema_version'");
      Statement::Use q(s);
      has_table = q.step() && q.int64(0) > 0;
    }
    if (!has_table) {
      Statement s(conn, "SELECT COUNT(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'");
      Statement::Use q(s);
      if (q.step() && q.int64(0) > 0) {
        throw StoreError(
            fmt::format("database {} is not a maas database (it has tables but no schema_version)",
                        conn.path()));
      }
      return 0;
    }
    Statement s(conn, "SELECT version, typeof(version) FROM schema_version");
    Statement::Use q(s);
    std::int64_t version = -1;
    int rows = 0;
    while (q.step()) {
      if (++rows > 1 || q.text(1) != "integer") break;
      version = q.int64(0);
    }
    if (rows != 1 || version < 0 || version > 1'000'000) {
      throw StoreError(fmt::format("database {} has a damaged schema_version table", conn.path()));
    }
    return static_cast<int>(version);
  }

  static void migrate(Connection& conn) {
    for (;;) {
      Transaction tx(conn);
      bool has_table = false;
      int version = read_version(conn, has_table);
      if (version > kLatestVersion) {
        throw StoreError(fmt::format(
            "database {} has schema version {}, newer than the {} this maas build knows; "
            "use a newer maas or another data directory",
            conn.path(), version, kLatestVersion));
      }
      if (version == kLatestVersion) {
        tx.commit();
        return;
      }
      if (!has_table) {
        conn.exec(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);"
            "INSERT INTO schema_version (version) VALUES (0)");
      }
      const Migration& m = kMigrations[version];
      conn.exec(m.sql);
      conn.exec(fmt::format("UPDATE schema_version SET version = {}", m.version).c_str());
      tx.commit();
    }
  }

  static Tenant read_tenant(Statement::Use& q) {
    Tenant t;
    t.id = q.text(0);
    t.weight = q.real(1);
    t.created_at = q.int64(2);
    t.limits = {q.opt_int64(3), q.opt_int64(4), q.opt_int64(5), q.opt_int64(6)};
    return t;
  }

  static ApiKey read_key(Statement::Use& q) {
    ApiKey k;
    k.id = q.text(0);
    k.tenant = q.text(1);
    k.options.rpm = q.opt_int64(3);
    k.options.tpm = q.opt_int64(4);
    k.options.daily_tokens = q.opt_int64(5);
    k.options.monthly_tokens = q.opt_int64(6);
    k.options.expires_at = q.opt_int64(7);
    k.created_at = q.int64(8);
    k.revoked_at = q.opt_int64(9);
    return k;
  }

  std::optional<Tenant> find_tenant_locked(const std::string& id) {
    Statement::Use q(select_tenant_);
    q.bind(1, id);
    if (!q.step()) return std::nullopt;
    return read_tenant(q);
  }

  std::vector<std::string> models_of(const std::string& key_id) {
    std::vector<std::string> out;
    Statement::Use q(select_key_models_);
    q.bind(1, key_id);
    while (q.step()) out.push_back(q.text(0));
    return out;
  }

  std::mutex mu_;
  Connection conn_;
  bool setup_;
  Statement insert_tenant_, select_tenant_, select_tenants_;
  Statement key_id_exists_, insert_key_, insert_key_model_, select_key_by_hash_, select_keys_,
      select_key_models_, select_all_key_models_, revoke_key_;
  Statement insert_record_, select_record_, count_records_, usage_by_day_, tenant_totals_,
      key_totals_;
};

#undef KEY_COLUMNS
#undef TOTALS_COLUMNS
#undef TENANT_COLUMNS

}  // namespace

std::unique_ptr<Store> open_sqlite_store(const std::string& data_dir) {
  return std::make_unique<SqliteStore>(data_dir);
}

int sqlite_schema_version() { return kLatestVersion; }

}  // namespace maas::platform
