// `maas keys` and `maas usage` against PostgreSQL (--database and $MAAS_DATABASE_URL): keys made
// by the CLI authenticate through the store, `keys ls` and `keys revoke` see the same database,
// and `maas usage` sums the ledger as a brute-force reference does.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "platform/store.h"
#include "support/postgres_server.h"
#include "support/test_util.h"

namespace maas::test {
namespace {

constexpr platform::UnixMillis kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
constexpr platform::UnixMillis kHour = 3'600'000;

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// The line of `keys ls` output describing key_id ("" if none).
std::string listing_of(const std::string& listing, const std::string& key_id) {
  std::istringstream in(listing);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(key_id + " ")) return line;
  }
  return "";
}

TEST(PostgresCli, KeysCreateListRevokeAgainstPostgres) {
  auto& pg = PostgresServer::shared();
  const std::string url = pg.url(pg.create_database());
  const std::string maas = maas_binary();

  auto created = run_command({maas, "keys", "create", "--tenant", "acme", "--models", "qwen,llama",
                              "--rpm", "60", "--database", url});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string secret = first_line(created.out);
  ASSERT_TRUE(secret.starts_with("sk-maas-")) << created.out;
  const std::size_t at = created.err.find("key_");
  ASSERT_NE(at, std::string::npos) << created.err;
  const std::string key_id = created.err.substr(at, 16);

  // The URL from the environment, and --database before the subcommand.
  auto second =
      run_shell("MAAS_DATABASE_URL='" + url + "' " + maas + " keys create --tenant globex");
  ASSERT_EQ(second.exit_code, 0) << second.err;
  auto listed = run_command({maas, "keys", "--database", url, "ls"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const std::string line = listing_of(listed.out, key_id);
  EXPECT_NE(line.find(" acme "), std::string::npos) << listed.out;
  EXPECT_NE(line.find(" active "), std::string::npos) << line;
  EXPECT_NE(line.find(" 60 "), std::string::npos) << line;
  EXPECT_NE(line.find("llama,qwen"), std::string::npos) << line;
  EXPECT_NE(listed.out.find(" globex "), std::string::npos) << listed.out;
  EXPECT_EQ(listed.out.find("sk-maas-"), std::string::npos) << "a listing shows no secret";

  // The store (as maas serve opens it) accepts the secret the CLI printed.
  auto store = platform::open_postgres_store(url);
  auto auth = store->authenticate(secret, platform::now_millis());
  ASSERT_TRUE(auth);
  EXPECT_EQ(auth.key->id, key_id);
  EXPECT_EQ(auth.key->tenant, "acme");
  EXPECT_EQ(auth.key->options.models, (std::vector<std::string>{"llama", "qwen"}));
  EXPECT_EQ(auth.key->options.rpm, 60);
  EXPECT_EQ(store->list_keys().size(), 2u);

  auto revoked = run_command({maas, "keys", "revoke", key_id, "--database", url});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.err;
  EXPECT_EQ(store->authenticate(secret, platform::now_millis()).status,
            platform::AuthStatus::kRevoked);
  auto after = run_command({maas, "keys", "ls", "--database", url});
  EXPECT_NE(listing_of(after.out, key_id).find(" revoked "), std::string::npos) << after.out;
  EXPECT_NE(run_command({maas, "keys", "revoke", "key_ffffffffffff", "--database", url}).exit_code,
            0);

  // Without a URL the CLI uses SQLite in the data directory, which holds none of these keys.
  auto sqlite = run_shell("MAAS_DATABASE_URL= " + maas + " keys ls --data-dir " + scratch_dir());
  ASSERT_EQ(sqlite.exit_code, 0) << sqlite.err;
  EXPECT_EQ(sqlite.out.find("key_"), std::string::npos) << sqlite.out;
}

TEST(PostgresCli, UsageReadsTheLedger) {
  auto& pg = PostgresServer::shared();
  const std::string url = pg.url(pg.create_database());
  auto store = platform::open_postgres_store(url);
  // Three days from 2026-01-01, two tenants, two models; and one entry outside the range.
  std::vector<platform::LedgerEntry> entries;
  for (int i = 0; i < 60; ++i) {
    platform::LedgerEntry e;
    e.request_id = "req-";
    e.request_id += std::to_string(i);
    e.tenant = i % 3 ? "acme" : "globex";
    e.model = i % 4 ? "llama" : "qwen";
    e.prompt_tokens = 10 + i;
    e.cached_tokens = i % 7;
    e.completion_tokens = 3 * i;
    e.status = 200;
    e.finish_reason = "stop";
    e.ended_at = kT0 + (i * 71 % 72) * kHour;  // 0..71 hours: days 01, 02, 03
    e.queued_at = e.ended_at - 100;
    entries.push_back(e);
    ASSERT_EQ(store->record(e), platform::RecordOutcome::kRecorded);
  }
  platform::LedgerEntry late = entries[0];
  late.request_id = "late";
  late.ended_at = kT0 + 80 * kHour;  // 2026-01-04
  store->record(late);

  auto usage_of = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {maas_binary(), "usage", "--database", url,     "--from",
                                     "2026-01-01",  "--to",  "2026-01-03", "--json"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = run_command(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<nlohmann::json> rows;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
    return rows;
  };
  auto expected = [&](const std::string& only_tenant) {
    std::map<std::tuple<std::string, std::string, std::string>, std::vector<std::int64_t>> sums;
    const char* days[] = {"2026-01-01", "2026-01-02", "2026-01-03"};
    for (const auto& e : entries) {
      if (!only_tenant.empty() && e.tenant != only_tenant) continue;
      auto& s = sums[{days[(e.ended_at - kT0) / (24 * kHour)], e.tenant, e.model}];
      s.resize(4);
      s[0] += 1;
      s[1] += e.prompt_tokens;
      s[2] += e.cached_tokens;
      s[3] += e.completion_tokens;
    }
    std::vector<nlohmann::json> rows;
    for (const auto& [k, s] : sums) {
      rows.push_back({{"day", std::get<0>(k)},
                      {"tenant", std::get<1>(k)},
                      {"model", std::get<2>(k)},
                      {"requests", s[0]},
                      {"prompt_tokens", s[1]},
                      {"cached_tokens", s[2]},
                      {"completion_tokens", s[3]}});
    }
    return rows;
  };
  const auto all = usage_of({});
  EXPECT_EQ(all.size(), 12u);
  EXPECT_EQ(all, expected(""));
  EXPECT_EQ(usage_of({"--tenant", "globex"}), expected("globex"));

  // The table form has a header and the same rows.
  auto table = run_command(
      {maas_binary(), "usage", "--database", url, "--from", "2026-01-01", "--to", "2026-01-04"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_TRUE(table.out.starts_with("DAY")) << table.out;
  EXPECT_NE(table.out.find("2026-01-04"), std::string::npos) << table.out;
}

TEST(PostgresCli, UnreachableDatabaseIsAClearErrorWithoutThePassword) {
  auto r = run_command({maas_binary(), "keys", "ls", "--database",
                        "postgresql://maas:hunter2222@/maas?host=/nonexistent-maas-dir"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("maas: error: database postgresql://maas:***@/maas"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("cannot connect"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("hunter2222"), std::string::npos) << r.err;
  auto bad = run_command({maas_binary(), "usage", "--database", "mysql://root:pw@db/maas"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("unsupported database URL 'mysql://root:***@db/maas'"), std::string::npos)
      << bad.err;
}

}  // namespace
}  // namespace maas::test
