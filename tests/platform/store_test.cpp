// Tests of the SQLite platform store: schema migrations, refusing bad files, API keys, the usage
// ledger (against brute-force sums), durability across SIGKILL and concurrent writers.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "platform/keys.h"
#include "platform/store.h"
#include "support/test_util.h"

namespace maas::platform {
namespace {

using test::read_file;
using test::scratch_dir;
using test::write_file;

constexpr UnixMillis kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
constexpr UnixMillis kDay = 86'400'000;

// The test's own UTC day, from the C library rather than the store's chrono code.
std::string reference_day(UnixMillis t) {
  std::time_t secs = static_cast<std::time_t>(t >= 0 ? t / 1000 : -((-t + 999) / 1000));
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

// Runs SQL on the raw database file, to tamper with it the way a damaged or foreign file would.
void raw_sql(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << msg;
}

// The first column of the first row of a query on the raw file, as text ("" if no row).
std::string raw_text(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), SQLITE_OK) << sql;
  std::string v;
  if (sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char* p = sqlite3_column_text(st, 0);
    if (p) v = reinterpret_cast<const char*>(p);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

std::int64_t raw_int(const std::string& db_path, const std::string& sql) {
  return std::stoll(raw_text(db_path, sql));
}

// Expects opening data_dir to throw StoreError mentioning the database path and `needle`.
void expect_open_refused(const std::string& dir, const std::string& needle) {
  try {
    open_sqlite_store(dir);
    FAIL() << "opening " << dir << " should have failed";
  } catch (const StoreError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(dir + "/maas.db"), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

// Independent base64url decoder for the secret body.
std::string base64url_decode(std::string_view s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
  };
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (char c : s) {
    int v = value(c);
    EXPECT_GE(v, 0) << "bad base64url char " << c;
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  return out;
}

std::string python(const std::string& code) {
  auto r = test::run_command({"/usr/bin/python3", "-c", code});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == '\r')) r.out.pop_back();
  return r.out;
}

std::string dir_bytes(const std::string& dir) {
  std::string all;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    all += read_file(entry.path().string());
  }
  return all;
}

LedgerEntry entry(std::string id, std::string tenant, std::string model, UnixMillis ended,
                  std::int64_t prompt = 10, std::int64_t completion = 5) {
  LedgerEntry e;
  e.request_id = std::move(id);
  e.tenant = std::move(tenant);
  e.key_id = "key_000000000000";
  e.model = std::move(model);
  e.prompt_tokens = prompt;
  e.cached_tokens = prompt / 2;
  e.completion_tokens = completion;
  e.status = 200;
  e.finish_reason = "stop";
  e.queued_at = ended - 300;
  e.first_token_at = ended - 200;
  e.ended_at = ended;
  return e;
}

TEST(PlatformKeys, Sha256AndBase64urlMatchReferences) {
  // FIPS 180-2 known answer for "abc".
  EXPECT_EQ(keys::to_hex(keys::sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string bytes;
  std::mt19937 rng(7);
  for (int i = 0; i < 34; ++i) bytes += static_cast<char>(rng() & 0xff);
  std::string hex = keys::to_hex(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  // Every length 0..34 against Python's urlsafe_b64encode with the padding stripped.
  std::string expected =
      python("import base64\nb=bytes.fromhex('" + hex +
             "')\nprint(' '.join(base64.urlsafe_b64encode(b[:n]).decode().rstrip('=') or '.' "
             "for n in range(len(b)+1)))");
  std::string got;
  for (std::size_t n = 0; n <= bytes.size(); ++n) {
    std::string enc =
        keys::base64url_encode(reinterpret_cast<const std::uint8_t*>(bytes.data()), n);
    if (n) got += ' ';
    got += enc.empty() ? std::string(".") : enc;
  }
  EXPECT_EQ(got, expected);
}

TEST(PlatformTime, UtcDayAndWindowsMatchTheCLibrary) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 2000; ++i) {
    UnixMillis t = static_cast<UnixMillis>(rng() % (200ull * 365 * kDay));  // 1970..2169
    ASSERT_EQ(utc_day(t), reference_day(t)) << t;
    UnixMillis day_start = utc_day_start(t);
    ASSERT_EQ(reference_day(day_start), reference_day(t));
    ASSERT_NE(reference_day(day_start - 1), reference_day(t));
    ASSERT_EQ(day_start % kDay, 0);
    UnixMillis month_start = utc_month_start(t);
    ASSERT_EQ(reference_day(month_start).substr(0, 7), reference_day(t).substr(0, 7));
    ASSERT_EQ(reference_day(month_start).substr(8), "01");
    ASSERT_EQ(month_start % kDay, 0);
  }
}

TEST(PlatformStore, MigrationsCreateSchemaAndReopenIsIdempotent) {
  std::string dir = scratch_dir() + "/data/nested";
  {
    auto store = open_sqlite_store(dir);
    EXPECT_EQ(store->location(), dir + "/maas.db");
    store->put_tenant("acme", 2.5, {}, kT0);
  }
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir + "/maas.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u) << "database readable by others";
  const std::string db = dir + "/maas.db";
  EXPECT_EQ(raw_int(db, "SELECT version FROM schema_version"), sqlite_schema_version());
  for (const char* table : {"tenants", "api_keys", "api_key_models", "usage_ledger"}) {
    EXPECT_EQ(
        raw_int(db, std::string("SELECT COUNT(*) FROM sqlite_master WHERE name='") + table + "'"),
        1)
        << table;
  }
  EXPECT_EQ(raw_text(db, "PRAGMA journal_mode"), "wal");
  for (int i = 0; i < 2; ++i) {
    auto store = open_sqlite_store(dir);
    auto t = store->find_tenant("acme");
    ASSERT_TRUE(t);
    EXPECT_EQ(t->weight, 2.5);
    EXPECT_EQ(t->created_at, kT0);
  }
  EXPECT_EQ(raw_int(db, "SELECT COUNT(*) FROM schema_version"), 1);
  EXPECT_EQ(raw_int(db, "SELECT version FROM schema_version"), sqlite_schema_version());
}

TEST(PlatformStore, NewerSchemaIsRefused) {
  std::string dir = scratch_dir();
  open_sqlite_store(dir);
  raw_sql(dir + "/maas.db", std::string("UPDATE schema_version SET version = ") +
                                std::to_string(sqlite_schema_version() + 1));
  expect_open_refused(dir, "newer");
}

TEST(PlatformStore, GarbageAndForeignFilesAreRefused) {
  std::string dir = scratch_dir();
  std::string garbage;
  std::mt19937 rng(3);
  for (int i = 0; i < 8192; ++i) garbage += static_cast<char>(rng() & 0xff);
  write_file(dir + "/maas.db", garbage);
  expect_open_refused(dir, "not a database");

  write_file(dir + "/maas.db", "SQLite format 3 but not really, just text\n");
  expect_open_refused(dir, "maas.db");

  std::string foreign = scratch_dir();
  raw_sql(foreign + "/maas.db", "CREATE TABLE photos (id INTEGER)");
  expect_open_refused(foreign, "not a maas database");

  std::string broken = scratch_dir();
  open_sqlite_store(broken);
  raw_sql(broken + "/maas.db", "DROP TABLE api_key_models");
  expect_open_refused(broken, "api_key_models");

  std::string bad_version = scratch_dir();
  open_sqlite_store(bad_version);
  raw_sql(bad_version + "/maas.db", "UPDATE schema_version SET version = 'one'");
  expect_open_refused(bad_version, "schema_version");

  std::string not_dir = scratch_dir() + "/file";
  write_file(not_dir, "x");
  EXPECT_THROW(open_sqlite_store(not_dir), StoreError);
}

// Randomly damaged files must give exceptions (or work), never crash: ASan runs this too.
TEST(PlatformStore, DamagedFilesNeverCrash) {
  std::string dir = scratch_dir();
  {
    auto store = open_sqlite_store(dir);
    store->put_tenant("t", 1, {}, kT0);
    KeyOptions two_models;
    two_models.models = {"m1", "m2"};
    store->create_key("t", two_models, kT0);
    for (int i = 0; i < 200; ++i) {
      store->record(entry(std::string("r") + std::to_string(i), "t",
                          std::string("m") + std::to_string(i % 3), kT0 + i));
    }
  }
  const std::string good = read_file(dir + "/maas.db");
  ASSERT_GT(good.size(), 4096u);
  std::mt19937 rng(5);
  int refused = 0;
  for (int trial = 0; trial < 40; ++trial) {
    std::string bad = good;
    if (trial % 4 == 0) {
      bad.resize(rng() % bad.size());
    } else {
      for (int k = 0; k < 20; ++k) bad[rng() % bad.size()] = static_cast<char>(rng() & 0xff);
    }
    std::string d = scratch_dir();
    write_file(d + "/maas.db", bad);
    try {
      auto store = open_sqlite_store(d);
      store->count_records();
      store->list_keys();
      store->list_tenants();
      store->usage_by_model_day(std::nullopt, 0, kT0 + kDay);
      store->tokens_used(UsageScope::tenant("t"), 0);
      store->record(entry("new", "t", "m", kT0));
    } catch (const StoreError&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
}

TEST(PlatformStore, TenantsAreCreatedUpdatedAndValidated) {
  auto store = open_sqlite_store(scratch_dir());
  store->put_tenant("b", 1, {}, kT0);
  store->put_tenant("a", 3, {}, kT0 + 5);
  Tenant b = store->put_tenant("b", 4, {}, kT0 + 9);
  EXPECT_EQ(b.weight, 4);
  EXPECT_EQ(b.created_at, kT0);
  auto all = store->list_tenants();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, "a");
  EXPECT_EQ(all[1].id, "b");
  EXPECT_FALSE(store->find_tenant("c"));
  EXPECT_THROW(store->put_tenant("", 1, {}, kT0), std::invalid_argument);
  EXPECT_THROW(store->put_tenant("a b", 1, {}, kT0), std::invalid_argument);
  EXPECT_THROW(store->put_tenant("a", 0, {}, kT0), std::invalid_argument);
  EXPECT_THROW(store->create_key("nobody", {}, kT0), std::invalid_argument);

  // Limits round-trip and are replaced as a whole; ensure_tenant keeps what exists.
  TenantLimits limits{60, std::nullopt, 5000, 0};
  Tenant a = store->put_tenant("a", 2, limits, kT0 + 20);
  EXPECT_EQ(a.limits, limits);
  EXPECT_EQ(a.created_at, kT0 + 5);
  EXPECT_EQ(store->ensure_tenant("a", kT0 + 30), a);
  EXPECT_EQ(store->find_tenant("a")->limits, limits);
  EXPECT_EQ(store->put_tenant("a", 2, {}, kT0 + 40).limits, TenantLimits{});
  Tenant c = store->ensure_tenant("c", kT0 + 50);
  EXPECT_EQ(c.weight, 1);
  EXPECT_EQ(c.created_at, kT0 + 50);
  EXPECT_THROW(store->put_tenant("a", 1, TenantLimits{-1, {}, {}, {}}, kT0), std::invalid_argument);
}

// A database written by the first schema (tenants without limits) is migrated in place and keeps
// its rows. The old schema is recreated from the current one with SQLite's own DROP COLUMN.
TEST(PlatformStore, VersionOneDatabaseIsMigrated) {
  const std::string dir = scratch_dir();
  {
    auto store = open_sqlite_store(dir);
    store->put_tenant("acme", 3, {}, kT0);
    store->create_key("acme", {}, kT0);
  }
  const std::string db = dir + "/maas.db";
  raw_sql(db,
          "ALTER TABLE tenants DROP COLUMN rpm; ALTER TABLE tenants DROP COLUMN tpm; "
          "ALTER TABLE tenants DROP COLUMN daily_tokens; "
          "ALTER TABLE tenants DROP COLUMN monthly_tokens; UPDATE schema_version SET version = 1");
  auto store = open_sqlite_store(dir);
  EXPECT_EQ(raw_int(db, "SELECT version FROM schema_version"), sqlite_schema_version());
  auto t = store->find_tenant("acme");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->weight, 3);
  EXPECT_EQ(t->limits, TenantLimits{});
  EXPECT_EQ(store->list_keys().size(), 1u);
  EXPECT_EQ(store->put_tenant("acme", 3, TenantLimits{1, 2, 3, 4}, kT0).limits,
            (TenantLimits{1, 2, 3, 4}));
}

TEST(PlatformStore, KeysAuthenticateRevokeAndExpire) {
  auto store = open_sqlite_store(scratch_dir());
  store->put_tenant("acme", 1, {}, kT0);
  store->put_tenant("other", 1, {}, kT0);
  KeyOptions opts;
  opts.models = {"llama", "qwen"};
  opts.rpm = 60;
  opts.tpm = 1000;
  opts.daily_tokens = 50'000;
  opts.monthly_tokens = 1'000'000;
  CreatedKey k = store->create_key("acme", opts, kT0);
  EXPECT_TRUE(k.secret.starts_with("sk-maas-"));
  EXPECT_EQ(k.secret.size(), 8u + 43u);
  EXPECT_EQ(base64url_decode(k.secret.substr(8)).size(), 32u);
  ASSERT_EQ(k.key.id.size(), 16u);
  EXPECT_TRUE(k.key.id.starts_with("key_"));
  EXPECT_EQ(k.key.id.find_first_not_of("0123456789abcdef", 4), std::string::npos);

  AuthResult ok = store->authenticate(k.secret, kT0 + 1);
  ASSERT_TRUE(ok);
  ASSERT_TRUE(ok.key);
  EXPECT_EQ(ok.key->id, k.key.id);
  EXPECT_EQ(ok.key->tenant, "acme");
  EXPECT_EQ(ok.key->options.models, (std::vector<std::string>{"llama", "qwen"}));
  EXPECT_EQ(ok.key->options.rpm, 60);
  EXPECT_EQ(ok.key->options.tpm, 1000);
  EXPECT_EQ(ok.key->options.daily_tokens, 50'000);
  EXPECT_EQ(ok.key->options.monthly_tokens, 1'000'000);
  EXPECT_FALSE(ok.key->options.expires_at);
  EXPECT_TRUE(ok.key->allows_model("qwen"));
  EXPECT_FALSE(ok.key->allows_model("mistral"));

  // Wrong secrets: each character changed, truncated, extended, empty, another store's key.
  for (std::size_t i = 0; i < k.secret.size(); i += 5) {
    std::string bad = k.secret;
    bad[i] = bad[i] == 'A' ? 'B' : 'A';
    EXPECT_EQ(store->authenticate(bad, kT0).status, AuthStatus::kUnknown) << bad;
  }
  EXPECT_FALSE(store->authenticate(k.secret.substr(0, k.secret.size() - 1), kT0));
  EXPECT_FALSE(store->authenticate(k.secret + "A", kT0));
  EXPECT_FALSE(store->authenticate("", kT0));
  EXPECT_FALSE(store->authenticate(std::string(1000, '\0'), kT0));
  EXPECT_FALSE(store->authenticate(keys::generate_secret(), kT0));

  // Expiry is checked against the "now" passed in.
  KeyOptions expiring_options;
  expiring_options.expires_at = kT0 + 1000;
  CreatedKey expiring = store->create_key("other", expiring_options, kT0 + 1);
  EXPECT_TRUE(store->authenticate(expiring.secret, kT0 + 999));
  AuthResult expired = store->authenticate(expiring.secret, kT0 + 1000);
  EXPECT_EQ(expired.status, AuthStatus::kExpired);
  EXPECT_FALSE(expired);
  EXPECT_FALSE(expired.key);
  EXPECT_EQ(expired.key_id, expiring.key.id);

  // Revocation affects only that key.
  CreatedKey second = store->create_key("acme", {}, kT0 + 2);
  EXPECT_TRUE(store->revoke_key(k.key.id, kT0 + 10));
  EXPECT_TRUE(store->revoke_key(k.key.id, kT0 + 20));
  EXPECT_FALSE(store->revoke_key("key_ffffffffffff", kT0));
  AuthResult revoked = store->authenticate(k.secret, kT0 + 11);
  EXPECT_EQ(revoked.status, AuthStatus::kRevoked);
  EXPECT_FALSE(revoked.key);
  AuthResult still = store->authenticate(second.secret, kT0 + 11);
  ASSERT_TRUE(still);
  EXPECT_TRUE(still.key->allows_model("anything"));
  EXPECT_FALSE(still.key->options.rpm);

  auto listed = store->list_keys();
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[0].id, k.key.id);
  EXPECT_EQ(listed[0].revoked_at, kT0 + 10);
  EXPECT_EQ(listed[0].state(kT0 + 11), KeyState::kRevoked);
  EXPECT_EQ(listed[0].options.models, (std::vector<std::string>{"llama", "qwen"}));
  EXPECT_EQ(listed[1].id, expiring.key.id);
  EXPECT_EQ(listed[1].state(kT0 + 5000), KeyState::kExpired);
  EXPECT_EQ(listed[2].id, second.key.id);
  EXPECT_EQ(listed[2].state(kT0 + 5000), KeyState::kActive);
  KeyOptions negative;
  negative.rpm = -1;
  EXPECT_THROW(store->create_key("acme", negative, kT0), std::invalid_argument);
}

TEST(PlatformStore, SecretsAreNotStoredOnlyTheirHash) {
  std::string dir = scratch_dir();
  auto store = open_sqlite_store(dir);
  store->put_tenant("acme", 1, {}, kT0);
  std::vector<CreatedKey> created;
  for (int i = 0; i < 5; ++i) created.push_back(store->create_key("acme", {}, kT0));
  // Look at the files while the store is open (the key rows may sit in the WAL) and after close.
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) store.reset();
    std::string bytes = dir_bytes(dir);
    for (const auto& k : created) {
      std::string body = k.secret.substr(8);
      std::string raw = base64url_decode(body);
      std::string raw_hex =
          keys::to_hex(reinterpret_cast<const std::uint8_t*>(raw.data()), raw.size());
      EXPECT_EQ(bytes.find(k.secret), std::string::npos);
      EXPECT_EQ(bytes.find(body), std::string::npos);
      EXPECT_EQ(bytes.find(body.substr(0, 16)), std::string::npos);
      EXPECT_EQ(bytes.find(raw), std::string::npos);
      EXPECT_EQ(bytes.find(raw.substr(0, 12)), std::string::npos);
      EXPECT_EQ(bytes.find(raw_hex.substr(0, 24)), std::string::npos);
      // Positive controls: the public id and the SHA-256 (from Python) are in the files.
      EXPECT_NE(bytes.find(k.key.id), std::string::npos);
      std::string digest =
          python("import hashlib;print(hashlib.sha256(b'" + k.secret + "').hexdigest())");
      EXPECT_NE(bytes.find(digest), std::string::npos);
    }
  }
}

TEST(PlatformStore, ThousandKeysHaveDistinctSecretsAndIds) {
  auto store = open_sqlite_store(scratch_dir());
  store->put_tenant("acme", 1, {}, kT0);
  std::set<std::string> secrets, ids;
  std::vector<CreatedKey> created;
  for (int i = 0; i < 1000; ++i) {
    created.push_back(store->create_key("acme", {}, kT0 + i));
    ASSERT_TRUE(keys::looks_like_secret(created.back().secret));
    secrets.insert(created.back().secret);
    ids.insert(created.back().key.id);
  }
  EXPECT_EQ(secrets.size(), 1000u);
  EXPECT_EQ(ids.size(), 1000u);
  EXPECT_EQ(store->list_keys().size(), 1000u);
  for (int i = 0; i < 1000; i += 97) {
    auto r = store->authenticate(created[i].secret, kT0 + 5000);
    ASSERT_TRUE(r);
    EXPECT_EQ(r.key->id, created[i].key.id);
  }
}

TEST(PlatformStore, LedgerRoundTripsAndRefusesDuplicates) {
  auto store = open_sqlite_store(scratch_dir());
  LedgerEntry e = entry("req-1", "acme", "llama", kT0 + 12345, 120, 33);
  e.status = 429;
  e.finish_reason = "length";
  EXPECT_EQ(store->record(e), RecordOutcome::kRecorded);
  EXPECT_EQ(store->find_record("req-1"), e);
  LedgerEntry again = entry("req-1", "acme", "qwen", kT0 + 99999, 1, 1);
  EXPECT_EQ(store->record(again), RecordOutcome::kDuplicate);
  EXPECT_EQ(store->find_record("req-1"), e);
  EXPECT_EQ(store->count_records(), 1);

  LedgerEntry no_first_token = entry("req-2", "acme", "llama", kT0);
  no_first_token.first_token_at.reset();
  no_first_token.key_id = "";
  EXPECT_EQ(store->record(no_first_token), RecordOutcome::kRecorded);
  EXPECT_EQ(store->find_record("req-2"), no_first_token);
  EXPECT_FALSE(store->find_record("req-3"));
  EXPECT_THROW(store->record(entry("", "acme", "llama", kT0)), std::invalid_argument);
  EXPECT_THROW(store->record(entry("r", "acme", "llama", kT0, -1)), std::invalid_argument);
  EXPECT_EQ(store->count_records(), 2);
}

TEST(PlatformStore, UsageAggregatesMatchBruteForce) {
  auto store = open_sqlite_store(scratch_dir());
  const std::vector<std::string> tenants = {"acme", "globex", "initech"};
  const std::vector<std::string> models = {"llama", "qwen", "mistral"};
  const std::vector<std::string> key_ids = {"key_aaaaaaaaaaaa", "key_bbbbbbbbbbbb"};
  std::mt19937_64 rng(42);
  std::vector<LedgerEntry> entries;
  for (int i = 0; i < 300; ++i) {
    // Times over ten days, with a share landing within a second of midnight on either side.
    UnixMillis t = kT0 + static_cast<UnixMillis>(rng() % (10 * kDay));
    if (i % 5 == 0) t = utc_day_start(t) + static_cast<UnixMillis>(rng() % 2000) - 1000;
    LedgerEntry e =
        entry(std::string("req-") + std::to_string(i), tenants[rng() % 3], models[rng() % 3], t,
              static_cast<std::int64_t>(rng() % 5000), static_cast<std::int64_t>(rng() % 800));
    e.cached_tokens = e.prompt_tokens ? static_cast<std::int64_t>(rng() % e.prompt_tokens) : 0;
    e.key_id = key_ids[rng() % 2];
    entries.push_back(e);
    ASSERT_EQ(store->record(e), RecordOutcome::kRecorded);
  }

  auto brute_usage = [&](const std::optional<std::string>& tenant, UnixMillis from, UnixMillis to) {
    // Keyed (day, tenant, model): the store's documented order.
    std::map<std::tuple<std::string, std::string, std::string>, UsageRow> rows;
    for (const auto& e : entries) {
      if (e.ended_at < from || e.ended_at >= to || (tenant && e.tenant != *tenant)) continue;
      std::string day = reference_day(e.ended_at);
      UsageRow& r = rows[{day, e.tenant, e.model}];
      r.tenant = e.tenant;
      r.model = e.model;
      r.day = day;
      r.requests += 1;
      r.prompt_tokens += e.prompt_tokens;
      r.cached_tokens += e.cached_tokens;
      r.completion_tokens += e.completion_tokens;
    }
    std::vector<UsageRow> out;
    for (auto& [k, r] : rows) out.push_back(r);
    return out;
  };
  auto all = store->usage_by_model_day(std::nullopt, kT0 - kDay, kT0 + 11 * kDay);
  EXPECT_EQ(all, brute_usage(std::nullopt, kT0 - kDay, kT0 + 11 * kDay));
  EXPECT_GT(all.size(), 60u);
  for (int trial = 0; trial < 20; ++trial) {
    UnixMillis a = kT0 + static_cast<UnixMillis>(rng() % (10 * kDay));
    UnixMillis b = kT0 + static_cast<UnixMillis>(rng() % (10 * kDay));
    if (a > b) std::swap(a, b);
    std::optional<std::string> tenant;
    if (trial % 2) tenant = tenants[trial % 3];
    ASSERT_EQ(store->usage_by_model_day(tenant, a, b), brute_usage(tenant, a, b)) << trial;
  }
  EXPECT_TRUE(store->usage_by_model_day("nobody", 0, kT0 * 2).empty());

  for (int trial = 0; trial < 30; ++trial) {
    UnixMillis since = kT0 + static_cast<UnixMillis>(rng() % (11 * kDay)) - kDay / 2;
    UsageScope scope =
        trial % 2 ? UsageScope::tenant(tenants[trial % 3]) : UsageScope::key(key_ids[trial % 2]);
    UsageTotals want;
    for (const auto& e : entries) {
      const std::string& who = scope.kind == UsageScope::Kind::kTenant ? e.tenant : e.key_id;
      if (who != scope.id || e.ended_at < since) continue;
      want.requests += 1;
      want.prompt_tokens += e.prompt_tokens;
      want.cached_tokens += e.cached_tokens;
      want.completion_tokens += e.completion_tokens;
    }
    ASSERT_EQ(store->tokens_used(scope, since), want) << trial;
  }
  EXPECT_EQ(store->tokens_used(UsageScope::tenant("nobody"), 0), UsageTotals{});
}

// A record() that returned survives SIGKILL: the child kills itself right after the Nth returns.
TEST(PlatformStore, RecordsSurviveSigkill) {
  std::string dir = scratch_dir();
  constexpr int kRecorded = 37;
  open_sqlite_store(dir)->put_tenant("acme", 1, {}, kT0);  // closed again before fork
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    try {
      auto store = open_sqlite_store(dir);
      for (int i = 0;; ++i) {
        store->record(entry(std::string("req-") + std::to_string(i), "acme", "llama", kT0 + i));
        if (i + 1 == kRecorded) ::kill(::getpid(), SIGKILL);
      }
    } catch (...) {
    }
    _exit(3);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  auto store = open_sqlite_store(dir);
  EXPECT_EQ(store->count_records(), kRecorded);
  for (int i = 0; i < kRecorded; ++i) {
    EXPECT_TRUE(store->find_record(std::string("req-") + std::to_string(i))) << i;
  }
  EXPECT_EQ(store->tokens_used(UsageScope::tenant("acme"), 0).prompt_tokens, 10 * kRecorded);
}

TEST(PlatformStore, ConcurrentWritersAndReaders) {
  auto store = open_sqlite_store(scratch_dir());
  store->put_tenant("acme", 1, {}, kT0);
  constexpr int kThreads = 4, kPerThread = 50;
  std::vector<std::thread> threads;
  std::atomic<int> recorded{0}, duplicates{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto count = [&](RecordOutcome o) {
        (o == RecordOutcome::kRecorded ? recorded : duplicates)++;
      };
      for (int i = 0; i < kPerThread; ++i) {
        // Thread t also offers thread (t+1)'s ids: each id must still land exactly once.
        count(store->record(
            entry(std::string("t") + std::to_string(t) + std::string("-") + std::to_string(i),
                  "acme", "llama", kT0 + i, t + 1, 1)));
        count(store->record(entry(std::string("t") + std::to_string((t + 1) % kThreads) +
                                      std::string("-") + std::to_string(i),
                                  "acme", "llama", kT0 + i, t + 1, 1)));
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 50; ++i) {
      store->usage_by_model_day(std::nullopt, 0, kT0 * 2);
      store->create_key("acme", {}, kT0);
    }
  });
  for (auto& th : threads) th.join();
  EXPECT_EQ(store->count_records(), kThreads * kPerThread);
  EXPECT_EQ(recorded.load(), kThreads * kPerThread);
  EXPECT_EQ(duplicates.load(), kThreads * kPerThread);
  EXPECT_EQ(store->list_keys().size(), 50u);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      ASSERT_TRUE(store->find_record(std::string("t") + std::to_string(t) + std::string("-") +
                                     std::to_string(i)));
    }
  }
  UsageTotals totals = store->tokens_used(UsageScope::tenant("acme"), 0);
  EXPECT_EQ(totals.requests, kThreads * kPerThread);
  EXPECT_EQ(totals.completion_tokens, kThreads * kPerThread);
}

// Two connections to one file (as two processes would have): the busy timeout serialises their
// writes instead of failing, and each sees the other's records.
TEST(PlatformStore, TwoConnectionsShareOneDatabase) {
  std::string dir = scratch_dir();
  auto first = open_sqlite_store(dir);
  auto second = open_sqlite_store(dir);
  constexpr int kEach = 100;
  auto writer = [&](Store& store, const std::string& prefix) {
    for (int i = 0; i < kEach; ++i) {
      ASSERT_EQ(store.record(entry(prefix + std::to_string(i), "acme", "llama", kT0 + i)),
                RecordOutcome::kRecorded);
    }
  };
  std::thread a(writer, std::ref(*first), "a-");
  std::thread b(writer, std::ref(*second), "b-");
  a.join();
  b.join();
  EXPECT_EQ(first->count_records(), 2 * kEach);
  EXPECT_EQ(second->count_records(), 2 * kEach);
  EXPECT_EQ(second->record(entry("a-7", "acme", "llama", kT0)), RecordOutcome::kDuplicate);
}

}  // namespace
}  // namespace maas::platform
