// The admin API and tenant limits through `maas serve`: the admin key guards /admin, keys made
// there work at once, tenant limits bind all of a tenant's keys together, `maas tenants` sets
// them from the command line.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include "cli/serve_process.h"
#include "support/test_util.h"

namespace maas::test {
namespace {

using Json = nlohmann::json;

std::string with_auth(std::string raw, const std::string& key) {
  raw.insert(raw.find("\r\n") + 2, "authorization: Bearer " + key + "\r\n");
  return raw;
}

std::string admin_request(const std::string& method, const std::string& path,
                          const std::string& key, const std::string& body = "") {
  std::string raw = method + " " + path + " HTTP/1.1\r\nhost: x\r\n";
  if (!key.empty()) raw += "authorization: Bearer " + key + "\r\n";
  if (!body.empty()) {
    raw +=
        "content-type: application/json\r\ncontent-length: " + std::to_string(body.size()) + "\r\n";
  }
  return raw + "\r\n" + body;
}

std::string completion(const std::string& key, int max_tokens = 2) {
  return with_auth(post_json("/v1/completions",
                             R"({"model":"stories","prompt":"Once upon a time","max_tokens":)" +
                                 std::to_string(max_tokens) + "}"),
                   key);
}

TEST(AdminTest, AdminApiIsDisabledWithoutAnAdminKey) {
  ServeProcess s({});
  auto r = s.request(admin_request("GET", "/admin/keys", "anything"));
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("--admin-key"), std::string::npos);
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

TEST(AdminTest, KeysTenantsAndUsageThroughTheAdminApi) {
  const std::string admin = "admin-secret-0123456789";
  ServeProcess s({"--admin-key", admin});
  // Wrong or missing admin key: 401.
  EXPECT_EQ(s.request(admin_request("GET", "/admin/keys", "")).status, 401);
  EXPECT_EQ(s.request(admin_request("GET", "/admin/keys", "admin-secret-012345678")).status, 401);
  // A tenant with a shared rpm of 3, and two keys of it.
  auto r = s.request(admin_request("PUT", "/admin/tenants/acme", admin, R"({"rpm":3,"weight":2})"));
  ASSERT_EQ(r.status, 201) << r.body;
  std::vector<std::string> keys;
  for (int i = 0; i < 2; ++i) {
    r = s.request(admin_request("POST", "/admin/keys", admin, R"({"tenant":"acme"})"));
    ASSERT_EQ(r.status, 201) << r.body;
    keys.push_back(Json::parse(r.body)["secret"]);
  }
  // The server started open (no keys); the first key closed it.
  EXPECT_EQ(s.request(completion("not-a-key")).status, 401);
  // A tenant's key cannot use the admin API.
  EXPECT_EQ(s.request(admin_request("GET", "/admin/keys", keys[0])).status, 401);
  // Keys work at once; the tenant's rpm binds both keys together (2 + 1, then refused).
  EXPECT_EQ(s.request(completion(keys[0])).status, 200);
  EXPECT_EQ(s.request(completion(keys[0])).status, 200);
  EXPECT_EQ(s.request(completion(keys[1])).status, 200);
  r = s.request(completion(keys[1]));
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_EQ(Json::parse(r.body)["error"]["param"], "tenant_rpm") << r.body;
  EXPECT_NE(r.body.find("tenant"), std::string::npos);
  EXPECT_GE(std::stoi(r.header("retry-after")), 1);
  // Lifting the limit applies to the next request.
  ASSERT_EQ(s.request(admin_request("PUT", "/admin/tenants/acme", admin, R"({"rpm":null})")).status,
            200);
  EXPECT_EQ(s.request(completion(keys[1])).status, 200);
  // Usage: four requests of acme, as the ledger counts them.
  r = s.request(admin_request("GET", "/admin/usage?tenant=acme", admin));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json usage = Json::parse(r.body)["data"];
  ASSERT_EQ(usage.size(), 1u) << r.body;
  EXPECT_EQ(usage[0]["requests"], 4);
  EXPECT_EQ(usage[0]["completion_tokens"], 8);
  // Revocation through the admin API: the key stops working on its next request.
  r = s.request(admin_request("GET", "/admin/keys?tenant=acme", admin));
  const std::string id = Json::parse(r.body)["data"][0]["id"];
  EXPECT_EQ(s.request(admin_request("DELETE", "/admin/keys/" + id, admin)).status, 200);
  const auto revoked = s.request(completion(keys[0]));
  const auto other = s.request(completion(keys[1]));
  EXPECT_NE(revoked.status == 401, other.status == 401) << "exactly one key was revoked";
  EXPECT_EQ(s.request(admin_request("GET", "/admin/unknown", admin)).status, 404);
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

TEST(AdminTest, TenantQuotaFromTheCliBindsAllItsKeys) {
  const std::string data = scratch_dir() + "/tenant-quota";
  auto maas = [&](std::vector<std::string> args) {
    args.insert(args.begin(), maas_binary());
    args.insert(args.end(), {"--data-dir", data});
    auto r = run_command(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r;
  };
  const std::string a = maas({"keys", "create", "--tenant", "small"}).out;
  const std::string b = maas({"keys", "create", "--tenant", "small"}).out;
  maas({"tenants", "set", "small", "--daily-tokens", "12", "--weight", "0.5"});
  auto ls = maas({"tenants", "ls"});
  EXPECT_NE(ls.out.find("small"), std::string::npos);
  EXPECT_NE(ls.out.find("0.5"), std::string::npos);
  EXPECT_NE(ls.out.find("12"), std::string::npos);
  ServeProcess s({"--data-dir", data});
  // 5 prompt + 2 completion tokens each: the first key uses 7, the second 7 more, then the
  // tenant's 12 are gone for both keys.
  EXPECT_EQ(s.request(completion(a.substr(0, a.find('\n')))).status, 200);
  EXPECT_EQ(s.request(completion(b.substr(0, b.find('\n')))).status, 200);
  auto r = s.request(completion(a.substr(0, a.find('\n'))));
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_EQ(Json::parse(r.body)["error"]["param"], "tenant_daily_tokens") << r.body;
  // 0 removes the limit.
  maas({"tenants", "set", "small", "--daily-tokens", "0"});
  EXPECT_EQ(s.request(completion(b.substr(0, b.find('\n')))).status, 200);
  // Bad input is refused with a message.
  auto bad = run_command({maas_binary(), "tenants", "set", "a b", "--data-dir", data});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("tenant"), std::string::npos) << bad.err;
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace maas::test
