// Helpers shared by the platform store tests: a clock, independent references (C library days,
// a base64url decoder, Python), ledger entries, and a fixture running a test on every backend.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <ctime>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>

#include "platform/store.h"

namespace maas::platform::testing {

inline constexpr UnixMillis kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
inline constexpr UnixMillis kDay = 86'400'000;

// The test's own UTC day, from the C library rather than the store's chrono code.
std::string reference_day(UnixMillis t);
// Independent base64url decoder for the secret body.
std::string base64url_decode(std::string_view s);
// Runs Python code with /usr/bin/python3 and returns its output without the final newline.
std::string python(const std::string& code);

// prefix + decimal n (appending, which avoids a false -Wrestrict warning of GCC 12 on
// "literal" + std::to_string(n)).
std::string numbered(std::string prefix, long long n);

LedgerEntry entry(std::string id, std::string tenant, std::string model, UnixMillis ended,
                  std::int64_t prompt = 10, std::int64_t completion = 5);

enum class Backend { kSqlite, kPostgres };

// A test run once per backend, each time on a fresh database: a new data directory for SQLite,
// a new database on the test process's PostgreSQL server for PostgreSQL.
class StoreBackend : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override;
  // A store on this test's database; every call opens another (as another replica would).
  std::unique_ptr<Store> open() const;
  // Everything the backend keeps on disk, as bytes: the files of the data directory (SQLite)
  // or a pg_dump of the database (PostgreSQL).
  std::string stored_bytes() const;

  std::string location_;  // the data directory or the database URL
  std::string database_;  // PostgreSQL: the database name
};

// Names the backend in gtest's messages.
inline void PrintTo(Backend b, std::ostream* os) {
  *os << (b == Backend::kSqlite ? "sqlite" : "postgres");
}

std::string backend_name(const ::testing::TestParamInfo<Backend>& info);

}  // namespace maas::platform::testing
