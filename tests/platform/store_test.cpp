// Tests of the platform store that every backend must pass, run on SQLite and on PostgreSQL:
// tenants, API keys, the usage ledger (against brute-force sums), durability across SIGKILL,
// concurrent writers, and two stores on one database (two replicas).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "platform/keys.h"
#include "platform/store.h"
#include "store_test_support.h"
#include "support/test_util.h"

namespace maas::platform::testing {
namespace {

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

TEST_P(StoreBackend, TenantsAreCreatedUpdatedAndValidated) {
  auto store = open();
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

  // Weights read back exactly, and the listing is in byte order (as std::string compares), not
  // in a locale's dictionary order.
  for (double w : {0.1, 1.0 / 3, 1e-300, 123456.789012345, 1e6}) {
    EXPECT_EQ(store->put_tenant("w", w, {}, kT0).weight, w);
    EXPECT_EQ(store->find_tenant("w")->weight, w);
  }
  for (const char* id : {"B", "_x", "-y", "Zed", "a.b"}) store->put_tenant(id, 1, {}, kT0);
  std::vector<std::string> ids, sorted;
  for (const auto& t : store->list_tenants()) ids.push_back(t.id);
  sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(ids, sorted);
  EXPECT_EQ(ids.size(), 9u);
}

TEST_P(StoreBackend, KeysAuthenticateRevokeAndExpire) {
  auto store = open();
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

TEST_P(StoreBackend, SecretsAreNotStoredOnlyTheirHash) {
  auto store = open();
  store->put_tenant("acme", 1, {}, kT0);
  std::vector<CreatedKey> created;
  for (int i = 0; i < 5; ++i) created.push_back(store->create_key("acme", {}, kT0));
  // Look at what is stored while the store is open (SQLite: the rows may sit in the WAL) and
  // after close.
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) store.reset();
    std::string bytes = stored_bytes();
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

TEST_P(StoreBackend, ThousandKeysHaveDistinctSecretsAndIds) {
  auto store = open();
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

TEST_P(StoreBackend, LedgerRoundTripsAndRefusesDuplicates) {
  auto store = open();
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

TEST_P(StoreBackend, UsageAggregatesMatchBruteForce) {
  auto store = open();
  // Mixed case and non-ASCII names: the order must be byte order whatever the collation.
  const std::vector<std::string> tenants = {"acme", "Globex", "initech"};
  const std::vector<std::string> models = {"llama", "Qwen",
                                           "\xc3\xbc"
                                           "ber-7b"};
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
TEST_P(StoreBackend, RecordsSurviveSigkill) {
  constexpr int kRecorded = 37;
  open()->put_tenant("acme", 1, {}, kT0);  // closed again before fork
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    try {
      auto store = open();
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
  auto store = open();
  EXPECT_EQ(store->count_records(), kRecorded);
  for (int i = 0; i < kRecorded; ++i) {
    EXPECT_TRUE(store->find_record(std::string("req-") + std::to_string(i))) << i;
  }
  EXPECT_EQ(store->tokens_used(UsageScope::tenant("acme"), 0).prompt_tokens, 10 * kRecorded);
}

TEST_P(StoreBackend, ConcurrentWritersAndReaders) {
  auto store = open();
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
        count(store->record(entry(numbered("t", t) + std::string("-") + std::to_string(i), "acme",
                                  "llama", kT0 + i, t + 1, 1)));
        count(store->record(
            entry(numbered("t", (t + 1) % kThreads) + std::string("-") + std::to_string(i), "acme",
                  "llama", kT0 + i, t + 1, 1)));
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
      ASSERT_TRUE(store->find_record(numbered("t", t) + std::string("-") + std::to_string(i)));
    }
  }
  UsageTotals totals = store->tokens_used(UsageScope::tenant("acme"), 0);
  EXPECT_EQ(totals.requests, kThreads * kPerThread);
  EXPECT_EQ(totals.completion_tokens, kThreads * kPerThread);
}

// Two stores on one database, as two maas replicas (or processes) have: their writes do not fail
// each other (SQLite: the busy timeout serialises them), a request id offered by both at once is
// recorded once, and what one writes the other reads at once.
TEST_P(StoreBackend, TwoStoresShareOneDatabase) {
  auto first = open();
  auto second = open();
  constexpr int kIds = 200;
  std::atomic<int> recorded{0}, duplicates{0};
  // Both replicas offer every id, in the same order, so most ids are contended.
  auto writer = [&](Store& store) {
    for (int i = 0; i < kIds; ++i) {
      auto outcome = store.record(entry(numbered("req-", i), "acme", "llama", kT0 + i));
      (outcome == RecordOutcome::kRecorded ? recorded : duplicates)++;
    }
  };
  std::thread a(writer, std::ref(*first));
  std::thread b(writer, std::ref(*second));
  a.join();
  b.join();
  EXPECT_EQ(recorded.load(), kIds);
  EXPECT_EQ(duplicates.load(), kIds);
  EXPECT_EQ(first->count_records(), kIds);
  EXPECT_EQ(second->count_records(), kIds);
  EXPECT_EQ(second->record(entry("req-7", "acme", "qwen", kT0)), RecordOutcome::kDuplicate);
  EXPECT_EQ(first->find_record("req-7")->model, "llama");
  // Quota checks on one replica count the other's requests.
  EXPECT_EQ(first->tokens_used(UsageScope::tenant("acme"), 0).requests, kIds);

  first->put_tenant("acme", 2, TenantLimits{5, {}, {}, {}}, kT0);
  ASSERT_TRUE(second->find_tenant("acme"));
  EXPECT_EQ(second->find_tenant("acme")->weight, 2);
  EXPECT_EQ(second->find_tenant("acme")->limits.rpm, 5);
  KeyOptions options;
  options.models = {"m2", "m1"};
  CreatedKey key = second->create_key("acme", options, kT0);
  AuthResult seen = first->authenticate(key.secret, kT0 + 1);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen.key->options.models, (std::vector<std::string>{"m1", "m2"}));
  EXPECT_TRUE(first->revoke_key(key.key.id, kT0 + 2));
  EXPECT_EQ(second->authenticate(key.secret, kT0 + 3).status, AuthStatus::kRevoked);
  EXPECT_EQ(second->list_keys().at(0).revoked_at, kT0 + 2);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreBackend,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres), backend_name);

}  // namespace
}  // namespace maas::platform::testing
