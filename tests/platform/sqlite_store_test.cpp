// Tests of what only the SQLite store has: the data directory and file modes, schema migrations
// and refusing foreign, garbage and damaged files.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <filesystem>
#include <random>

#include "platform/store.h"
#include "store_test_support.h"
#include "support/test_util.h"

namespace maas::platform::testing {
namespace {

using test::read_file;
using test::scratch_dir;
using test::write_file;

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

TEST(SqliteStore, MigrationsCreateSchemaAndReopenIsIdempotent) {
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

TEST(SqliteStore, NewerSchemaIsRefused) {
  std::string dir = scratch_dir();
  open_sqlite_store(dir);
  raw_sql(dir + "/maas.db", std::string("UPDATE schema_version SET version = ") +
                                std::to_string(sqlite_schema_version() + 1));
  expect_open_refused(dir, "newer");
}

TEST(SqliteStore, GarbageAndForeignFilesAreRefused) {
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
TEST(SqliteStore, DamagedFilesNeverCrash) {
  std::string dir = scratch_dir();
  {
    auto store = open_sqlite_store(dir);
    store->put_tenant("t", 1, {}, kT0);
    KeyOptions two_models;
    two_models.models = {"m1", "m2"};
    store->create_key("t", two_models, kT0);
    for (int i = 0; i < 200; ++i) {
      store->record(entry(numbered("r", i), "t", numbered("m", i % 3), kT0 + i));
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

// A database written by the first schema (tenants without limits) is migrated in place and keeps
// its rows. The old schema is recreated from the current one with SQLite's own DROP COLUMN.
TEST(SqliteStore, VersionOneDatabaseIsMigrated) {
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

}  // namespace
}  // namespace maas::platform::testing
