// The admin API's JSON over a real (SQLite) store: tenants, keys and usage, and its refusals.
#include "platform/admin_api.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <tuple>

#include "support/test_util.h"

namespace maas::platform {
namespace {

using Json = nlohmann::ordered_json;
using test::scratch_dir;

constexpr UnixMillis kT0 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
constexpr UnixMillis kDay = 86'400'000;

struct Fixture {
  std::shared_ptr<Store> store = open_sqlite_store(scratch_dir());
  AdminApi api{store};
  AdminResult call(const std::string& method, const std::string& path, const Json& body = nullptr,
                   const std::string& query = "", UnixMillis now = kT0) {
    auto r = api.handle(method, path, query, body, now);
    EXPECT_TRUE(r) << method << " " << path << " not handled";
    return r ? *r : AdminResult{0, nullptr};
  }
};

TEST(AdminApi, TenantsAreCreatedAndPartiallyUpdated) {
  Fixture f;
  auto r = f.call("PUT", "/admin/tenants/acme", {{"weight", 3}, {"rpm", 10}});
  ASSERT_EQ(r.status, 201) << r.body.dump();
  EXPECT_EQ(r.body["weight"], 3.0);
  EXPECT_EQ(r.body["rpm"], 10);
  EXPECT_TRUE(r.body["tpm"].is_null());
  EXPECT_EQ(r.body["created_at"], "2026-01-01T00:00:00Z");
  // Absent fields keep their value; null removes a limit.
  r = f.call("PUT", "/admin/tenants/acme", {{"tpm", 500}, {"rpm", nullptr}}, "", kT0 + kDay);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["weight"], 3.0);
  EXPECT_TRUE(r.body["rpm"].is_null());
  EXPECT_EQ(r.body["tpm"], 500);
  EXPECT_EQ(r.body["created_at"], "2026-01-01T00:00:00Z");
  const auto stored = f.store->find_tenant("acme");
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->limits, (TenantLimits{std::nullopt, 500, std::nullopt, std::nullopt}));
  EXPECT_EQ(f.call("GET", "/admin/tenants/acme").body, r.body);
  // Changing only the weight keeps every limit.
  r = f.call("PUT", "/admin/tenants/acme", {{"weight", 5}});
  EXPECT_EQ(r.body["tpm"], 500);
  EXPECT_TRUE(r.body["rpm"].is_null());
  EXPECT_EQ(f.call("PUT", "/admin/tenants/acme", {{"weight", 3}}).body["weight"], 3.0);
  r = f.call("GET", "/admin/tenants");
  ASSERT_EQ(r.body["data"].size(), 1u);
  EXPECT_EQ(r.body["data"][0]["id"], "acme");
  // Refusals name what is wrong.
  for (const auto& [body, param] :
       std::vector<std::pair<Json, std::string>>{{{{"weight", 0}}, "weight"},
                                                 {{{"weight", "2"}}, "weight"},
                                                 {{{"rpm", -1}}, "rpm"},
                                                 {{{"tpm", 1.5}}, "tpm"},
                                                 {{{"colour", 1}}, "colour"}}) {
    r = f.call("PUT", "/admin/tenants/acme", body);
    EXPECT_EQ(r.status, 400) << body.dump();
    EXPECT_EQ(r.body["error"]["param"], param) << r.body.dump();
  }
  EXPECT_EQ(f.call("PUT", "/admin/tenants/acme", Json::array()).status, 400);
  EXPECT_EQ(f.call("PUT", "/admin/tenants/a%20b", Json::object()).status, 400);
  EXPECT_EQ(f.call("GET", "/admin/tenants/nobody").status, 404);
  EXPECT_EQ(f.call("DELETE", "/admin/tenants").status, 405);
  EXPECT_EQ(f.store->find_tenant("acme")->limits.tpm, 500);  // unchanged by the refusals
}

TEST(AdminApi, KeysAreCreatedListedAndRevoked) {
  Fixture f;
  auto r = f.call(
      "POST", "/admin/keys",
      {{"tenant", "acme"}, {"models", {"stories"}}, {"rpm", 5}, {"expires_at", "2026-02-01"}});
  ASSERT_EQ(r.status, 201) << r.body.dump();
  const std::string secret = r.body["secret"];
  const std::string id = r.body["id"];
  EXPECT_EQ(r.body["tenant"], "acme");
  EXPECT_EQ(r.body["state"], "active");
  EXPECT_EQ(r.body["expires_at"], "2026-02-01T00:00:00Z");
  // The secret works against the store, for the tenant that was created on the way.
  auto auth = f.store->authenticate(secret, kT0);
  ASSERT_TRUE(auth);
  EXPECT_EQ(auth.key->id, id);
  EXPECT_EQ(auth.key->options.rpm, 5);
  EXPECT_EQ(auth.key->options.models, std::vector<std::string>{"stories"});
  EXPECT_TRUE(f.store->find_tenant("acme"));
  // Expiry is the instant given.
  EXPECT_EQ(f.store->authenticate(secret, parse_utc_time("2026-02-01")).status,
            AuthStatus::kExpired);
  ASSERT_EQ(f.call("POST", "/admin/keys", {{"tenant", "other"}}).status, 201);
  // Listing never shows a secret; the tenant filter filters.
  r = f.call("GET", "/admin/keys");
  ASSERT_EQ(r.body["data"].size(), 2u);
  EXPECT_EQ(r.body.dump().find("sk-maas-"), std::string::npos);
  r = f.call("GET", "/admin/keys", nullptr, "tenant=acme");
  ASSERT_EQ(r.body["data"].size(), 1u);
  EXPECT_EQ(r.body["data"][0]["id"], id);
  // Revocation takes effect on the next authentication.
  r = f.call("DELETE", "/admin/keys/" + id, nullptr, "", kT0 + 1000);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["state"], "revoked");
  EXPECT_EQ(f.store->authenticate(secret, kT0 + 2000).status, AuthStatus::kRevoked);
  EXPECT_EQ(f.call("DELETE", "/admin/keys/key_000000000000").status, 404);
  // Refusals.
  EXPECT_EQ(f.call("POST", "/admin/keys", Json::object()).body["error"]["param"], "tenant");
  EXPECT_EQ(f.call("POST", "/admin/keys", {{"tenant", "bad tenant"}}).status, 400);
  EXPECT_EQ(f.call("POST", "/admin/keys", {{"tenant", "a"}, {"models", "x"}}).status, 400);
  EXPECT_EQ(f.call("POST", "/admin/keys", {{"tenant", "a"}, {"expires_at", "soon"}})
                .body["error"]["param"],
            "expires_at");
  EXPECT_EQ(f.call("POST", "/admin/keys", {{"tenant", "a"}, {"secret", "mine"}}).status, 400);
  EXPECT_EQ(f.call("PUT", "/admin/keys").status, 405);
  EXPECT_FALSE(f.api.handle("GET", "/admin/nothing", "", nullptr, kT0));
  EXPECT_EQ(f.store->list_keys().size(), 2u);  // no refused request created a key
}

TEST(AdminApi, UsageMatchesBruteForceOverTheLedger) {
  Fixture f;
  std::mt19937 rng(3);
  struct Sum {
    int64_t requests = 0, prompt = 0, completion = 0;
  };
  std::map<std::tuple<std::string, std::string, std::string>, Sum> expected;  // day, tenant, model
  const UnixMillis now = kT0 + 40 * kDay;
  int64_t in_default_window = 0;
  for (int i = 0; i < 400; ++i) {
    LedgerEntry e;
    e.request_id = "req-" + std::to_string(i);
    e.tenant = rng() % 2 ? "acme" : "globex";
    e.model = rng() % 2 ? "m1" : "m2";
    e.prompt_tokens = rng() % 100;
    e.completion_tokens = rng() % 50;
    e.status = 200;
    e.finish_reason = "stop";
    e.ended_at = kT0 + static_cast<UnixMillis>(rng() % (41 * kDay));
    e.queued_at = e.ended_at - 10;
    f.store->record(e);
    in_default_window += e.ended_at >= kT0 + 11 * kDay;  // days 11..40
    // The query: acme, 2026-01-20 .. 2026-02-05 inclusive.
    if (e.tenant == "acme" && e.ended_at >= kT0 + 19 * kDay && e.ended_at < kT0 + 36 * kDay) {
      auto& s = expected[{utc_day(e.ended_at), e.tenant, e.model}];
      ++s.requests;
      s.prompt += e.prompt_tokens;
      s.completion += e.completion_tokens;
    }
  }
  auto r = f.call("GET", "/admin/usage", nullptr, "tenant=acme&from=2026-01-20&to=2026-02-05", now);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  ASSERT_EQ(r.body["data"].size(), expected.size());
  size_t i = 0;
  for (const auto& [k, s] : expected) {
    const Json& row = r.body["data"][i++];
    EXPECT_EQ(row["day"], std::get<0>(k));
    EXPECT_EQ(row["tenant"], "acme");
    EXPECT_EQ(row["model"], std::get<2>(k));
    EXPECT_EQ(row["requests"], s.requests);
    EXPECT_EQ(row["prompt_tokens"], s.prompt);
    EXPECT_EQ(row["total_tokens"], s.prompt + s.completion);
  }
  // The default window is the last 30 days including today; all tenants.
  r = f.call("GET", "/admin/usage", nullptr, "", now);
  int64_t n = 0;
  for (const Json& row : r.body["data"]) n += row["requests"].get<int64_t>();
  EXPECT_EQ(n, in_default_window);
  EXPECT_EQ(f.call("GET", "/admin/usage", nullptr, "from=2026-13-01").status, 400);
  EXPECT_EQ(f.call("GET", "/admin/usage", nullptr, "from=2026-02-02&to=2026-02-01").status, 400);
}

TEST(AdminApi, UtcTimesRoundTrip) {
  EXPECT_EQ(parse_utc_time("2026-01-01"), kT0);
  EXPECT_EQ(parse_utc_time("2026-01-02T03:04:05Z"), kT0 + kDay + (3 * 3600 + 4 * 60 + 5) * 1000);
  EXPECT_EQ(format_utc_time(kT0 + kDay + 1000), "2026-01-02T00:00:01Z");
  for (const char* bad : {"", "2026-1-1", "2026-01-01T00:00:00", "tomorrow", "2026-01-01x"}) {
    EXPECT_THROW(parse_utc_time(bad), std::invalid_argument) << bad;
  }
}

}  // namespace
}  // namespace maas::platform
