// `maas serve --models-file`: models loaded on demand by real requests (which wait for the load),
// eviction under a memory budget, reloads on SIGHUP while a stream is in flight, the
// /admin/models API and the `maas models` command.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/serve_process.h"
#include "support/test_util.h"

namespace maas::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

const std::string kAdmin = "admin-secret";

// Two model files with the same weights: on_demand models of their own.
struct Models {
  std::string dir = scratch_dir();
  std::string one = dir + "/one.gguf", two = dir + "/two.gguf", file = dir + "/models.yaml";
  Models() {
    std::filesystem::copy_file(stories_model(), one);
    std::filesystem::copy_file(stories_model(), two);
  }
  void write(const std::string& yaml) const { write_file(file, yaml); }
  // What one loaded model with kv_memory 6M takes, roughly: the file plus 6 MiB of KV blocks
  // (enough for a stream of 16 choices of 480 tokens).
  uint64_t approx_bytes() const { return std::filesystem::file_size(one) + (6u << 20); }
};

http::Response call(const ServeProcess& s, const std::string& method, const std::string& path,
                    const std::string& key = kAdmin, std::chrono::milliseconds timeout = 10s) {
  std::string raw = method + " " + path + " HTTP/1.1\r\nhost: x\r\n";
  if (!key.empty()) raw += "authorization: Bearer " + key + "\r\n";
  raw += method == "POST" ? "content-length: 0\r\n\r\n" : "\r\n";
  return s.request(raw, timeout);
}

Json admin_models(const ServeProcess& s) {
  auto r = call(s, "GET", "/admin/models");
  EXPECT_EQ(r.status, 200) << r.body;
  return r.status == 200 ? Json::parse(r.body) : Json::object();
}

// The admin view of one model (null if it is not configured).
Json model(const ServeProcess& s, const std::string& id) {
  const Json list = admin_models(s);
  for (const Json& m : list.value("data", Json::array())) {
    if (m["id"] == id) return m;
  }
  return nullptr;
}

std::string state(const ServeProcess& s, const std::string& id) {
  const Json m = model(s, id);
  return m.is_null() ? "absent" : m["state"].get<std::string>();
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 10s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

http::Response complete(const ServeProcess& s, const std::string& body,
                        std::chrono::milliseconds timeout = 20s) {
  return s.request(post_json("/v1/completions", body), timeout);
}

std::string text_of(const http::Response& r) {
  const Json j = Json::parse(r.body);
  return j["choices"][0]["text"].get<std::string>();
}

// A request for an on_demand model loads it; requests that arrive during the load wait for it
// and succeed; the model's request defaults apply to fields a request leaves out.
TEST(ModelsTest, OnDemandModelsLoadOnARequestWhichWaits) {
  Models m;
  m.write(R"(models:
  - id: alpha
    path: one.gguf
    load: on_demand
    aliases: [a1]
    kv_memory: 1M
    defaults:
      temperature: 0
      max_tokens: 5
  - id: beta
    path: two.gguf
    load: on_demand
)");
  ServeProcess s({"--models-file", m.file, "--admin-key", kAdmin},
                 {.serve_stories = false, .env = {{"MAAS_TEST_LOAD_DELAY_MS", "700"}}});
  // Both are listed before either is loaded; nothing is in memory yet.
  auto models = s.request("GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n");
  ASSERT_EQ(models.status, 200);
  const Json listed = Json::parse(models.body);
  ASSERT_EQ(listed["data"].size(), 2u);
  EXPECT_EQ(listed["data"][0]["id"], "alpha");
  EXPECT_EQ(listed["data"][0]["aliases"], Json::array({"a1"}));
  EXPECT_EQ(listed["data"][1]["id"], "beta");
  EXPECT_EQ(admin_models(s)["memory_in_use"], 0);
  EXPECT_EQ(state(s, "alpha"), "unloaded");
  EXPECT_EQ(s.request("GET /ready HTTP/1.1\r\nhost: x\r\n\r\n").status, 200);

  // The first request (by alias) starts the load and waits; a second arrives while it loads.
  const auto t0 = std::chrono::steady_clock::now();
  auto first = std::async(std::launch::async,
                          [&] { return complete(s, R"({"model":"a1","prompt":"Once upon"})"); });
  ASSERT_TRUE(eventually([&] { return state(s, "alpha") == "loading"; }));
  auto second = std::async(
      std::launch::async, [&] { return complete(s, R"({"model":"alpha","prompt":"Once upon"})"); });
  ASSERT_TRUE(eventually([&] { return model(s, "alpha")["waiting"] == 2; }))
      << model(s, "alpha").dump();
  EXPECT_EQ(state(s, "alpha"), "loading");
  const http::Response r1 = first.get(), r2 = second.get();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 650ms);  // they waited for the load
  ASSERT_EQ(r1.status, 200) << r1.body;
  ASSERT_EQ(r2.status, 200) << r2.body;
  EXPECT_EQ(Json::parse(r1.body)["model"], "alpha");
  // Defaults: greedy (both the same) and 5 tokens instead of the completions API's 16.
  EXPECT_EQ(text_of(r1), text_of(r2));
  EXPECT_EQ(Json::parse(r1.body)["usage"]["completion_tokens"], 5);
  // A request's own fields win over the defaults.
  auto own = complete(s, R"({"model":"alpha","prompt":"Once upon","max_tokens":2})");
  EXPECT_EQ(Json::parse(own.body)["usage"]["completion_tokens"], 2);
  EXPECT_EQ(state(s, "alpha"), "ready");
  EXPECT_EQ(state(s, "beta"), "unloaded");
  EXPECT_GT(model(s, "alpha")["memory_bytes"].get<uint64_t>(), 0u);
  // One load served both waiters.
  const std::string log = s.log();
  EXPECT_EQ(log.find("loading 'alpha'"), log.rfind("loading 'alpha'")) << log;

  // Metrics: engine gauges for loaded models only, and the registry's gauges.
  const std::string metrics = s.request("GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").body;
  EXPECT_NE(metrics.find("maas_kv_blocks_free{model=\"alpha\"}"), std::string::npos);
  EXPECT_EQ(metrics.find("model=\"beta\""), std::string::npos);
  EXPECT_NE(metrics.find("\nmaas_models_loaded 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\nmaas_models_memory_bytes " +
                         std::to_string(model(s, "alpha")["memory_bytes"].get<uint64_t>()) + "\n"),
            std::string::npos);
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

// With a budget that fits one model, using the other evicts the idle one; a model that is busy
// cannot be evicted, so a load that needs its room is refused with 503 and Retry-After.
TEST(ModelsTest, ABudgetForOneModelEvictsTheIdleOne) {
  Models m;
  const uint64_t budget = m.approx_bytes() * 3 / 2;
  m.write("memory_budget: " + std::to_string(budget) + R"(
models:
  - {id: alpha, path: one.gguf, load: on_demand, kv_memory: 6M, threads: 1}
  - {id: beta, path: two.gguf, load: on_demand, kv_memory: 6M, threads: 1}
)");
  ServeProcess s({"--models-file", m.file, "--admin-key", kAdmin}, {.serve_stories = false});
  const std::string body = R"(","prompt":"Once","max_tokens":3})";
  ASSERT_EQ(complete(s, R"({"model":"alpha)" + body).status, 200);
  EXPECT_EQ(state(s, "alpha"), "ready");
  ASSERT_EQ(complete(s, R"({"model":"beta)" + body).status, 200);
  EXPECT_EQ(state(s, "alpha"), "unloaded");
  EXPECT_EQ(state(s, "beta"), "ready");
  const Json list = admin_models(s);
  EXPECT_LE(list["memory_in_use"].get<uint64_t>(), budget);
  EXPECT_EQ(list["memory_budget"].get<uint64_t>(), budget);
  ASSERT_EQ(complete(s, R"({"model":"alpha)" + body).status, 200);
  EXPECT_EQ(state(s, "beta"), "unloaded");

  // A long stream keeps alpha busy: beta cannot have its room.
  http::Client c(s.port());
  c.send(post_json("/v1/completions",
                   R"({"model":"alpha","prompt":"Once","max_tokens":480,"ignore_eos":true,)"
                   R"("stream":true,"n":16})"));
  auto head = c.read_head();
  ASSERT_TRUE(head);
  ASSERT_EQ(head->status, 200);
  ASSERT_TRUE(c.read_chunk());
  auto refused = complete(s, R"({"model":"beta)" + body);
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(refused.body.find("memory budget"), std::string::npos) << refused.body;
  EXPECT_NE(refused.body.find("insufficient_memory"), std::string::npos);
  EXPECT_FALSE(refused.header("retry-after").empty());
  std::string rest;
  while (auto chunk = c.read_chunk(20s)) {
    if (chunk->empty()) break;
    rest += *chunk;
  }
  EXPECT_NE(rest.find("data: [DONE]"), std::string::npos);
  // Once alpha is idle, beta loads (evicting it).
  EXPECT_TRUE(eventually([&] { return model(s, "alpha")["in_flight"] == 0; }));
  EXPECT_EQ(complete(s, R"({"model":"beta)" + body).status, 200);
  EXPECT_EQ(state(s, "alpha"), "unloaded");
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

// SIGHUP re-reads the file while a stream runs on a model that did not change: the stream
// completes as if nothing happened, removed models disappear, changed ones are replaced, new
// ones appear; a bad file changes nothing.
TEST(ModelsTest, SighupReloadsWhileAStreamRunsOnAnUnchangedModel) {
  Models m;
  const std::string keep = "  - {id: keep, path: one.gguf, kv_memory: 6M, threads: 1}\n";
  m.write("models:\n" + keep + R"(  - {id: change, path: two.gguf, kv_memory: 1M, load: on_demand}
  - {id: remove, path: two.gguf, load: on_demand}
)");
  ServeProcess s({"--models-file", m.file, "--admin-key", kAdmin}, {.serve_stories = false});
  const std::string quick = R"(","prompt":"Once","max_tokens":3,"temperature":0})";
  ASSERT_EQ(complete(s, R"({"model":"change)" + quick).status, 200);
  const uint64_t change_bytes = model(s, "change")["memory_bytes"].get<uint64_t>();

  http::Client c(s.port());
  const std::string stream_body =
      R"({"model":"keep","prompt":"Once","max_tokens":480,"ignore_eos":true,"temperature":0,)"
      R"("n":16,"stream":true})";
  c.send(post_json("/v1/completions", stream_body));
  auto head = c.read_head();
  ASSERT_TRUE(head);
  ASSERT_EQ(head->status, 200);
  std::string streamed;
  auto first = c.read_chunk();
  ASSERT_TRUE(first);
  streamed += *first;

  m.write("models:\n" + keep + R"(  - {id: change, path: two.gguf, kv_memory: 2M, load: on_demand}
  - {id: added, path: two.gguf, kv_memory: 1M}
)");
  ASSERT_EQ(::kill(s.pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] { return state(s, "added") == "ready"; })) << s.log();
  // The stream is still running on the untouched instance.
  EXPECT_EQ(model(s, "keep")["in_flight"], 1) << "the stream ended before the reload";
  EXPECT_EQ(state(s, "keep"), "ready");
  EXPECT_EQ(state(s, "remove"), "absent");
  auto gone = complete(s, R"({"model":"remove)" + quick);
  EXPECT_EQ(gone.status, 404);
  EXPECT_NE(gone.body.find("model_not_found"), std::string::npos);
  EXPECT_EQ(s.request("GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n").body.find("\"remove\""),
            std::string::npos);
  // Changed: the old instance went (it was idle); the next request loads the new settings.
  EXPECT_EQ(state(s, "change"), "unloaded");
  ASSERT_EQ(complete(s, R"({"model":"change)" + quick).status, 200);
  EXPECT_GT(model(s, "change")["memory_bytes"].get<uint64_t>(), change_bytes);
  EXPECT_EQ(complete(s, R"({"model":"added)" + quick).status, 200);

  // The stream finishes whole: every choice as long as asked, the same as without a reload.
  while (auto chunk = c.read_chunk(20s)) {
    if (chunk->empty()) break;
    streamed += *chunk;
  }
  EXPECT_NE(streamed.find("data: [DONE]"), std::string::npos);
  std::string choice0;
  size_t finished = 0;
  for (size_t at = 0; (at = streamed.find("data: {", at)) != std::string::npos;) {
    const size_t end = streamed.find("\n\n", at);
    const Json chunk = Json::parse(streamed.substr(at + 6, end - at - 6));
    for (const Json& ch : chunk["choices"]) {
      if (ch["index"] == 0) choice0 += ch["text"].get<std::string>();
      if (ch["finish_reason"] == "length") ++finished;
    }
    at = end;
  }
  EXPECT_EQ(finished, 16u);
  auto alone = complete(s, R"({"model":"keep","prompt":"Once","max_tokens":480,)"
                           R"("ignore_eos":true,"temperature":0})");
  ASSERT_EQ(alone.status, 200);
  EXPECT_EQ(choice0, text_of(alone));

  // A bad file: refused, logged, nothing changes; the admin reload answers 400 with the error.
  m.write("models:\n  - {id: keep, path: one.gguf, kv_memroy: 1M}\n");
  ASSERT_EQ(::kill(s.pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] { return s.log().find("reload refused") != std::string::npos; }));
  EXPECT_NE(s.log().find("models.yaml:2:"), std::string::npos) << s.log();
  EXPECT_EQ(state(s, "added"), "ready");
  EXPECT_EQ(state(s, "change"), "ready");
  auto bad = call(s, "POST", "/admin/models/reload");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("kv_memroy"), std::string::npos) << bad.body;
  EXPECT_NE(bad.body.find("\"error\""), std::string::npos);
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

// The admin API and `maas models`: the admin key is required, load/unload/reload work, errors
// are OpenAI error objects (HTTP) and messages with a non-zero exit (CLI).
TEST(ModelsTest, AdminApiAndCliManageModels) {
  Models m;
  m.write(R"(models:
  - {id: alpha, path: one.gguf, load: on_demand, aliases: [a1]}
  - {id: beta, path: two.gguf, load: on_demand}
)");
  {
    // Without an admin key the admin API is disabled.
    ServeProcess closed({"--models-file", m.file}, {.serve_stories = false});
    EXPECT_EQ(call(closed, "GET", "/admin/models", "").status, 403);
    EXPECT_EQ(call(closed, "GET", "/admin/models").status, 403);
  }
  ServeProcess s({"--models-file", m.file, "--admin-key", kAdmin, "--api-key", "tenant-key"},
                 {.serve_stories = false, .env = {{"MAAS_TEST_LOAD_DELAY_MS", "300"}}});
  EXPECT_EQ(call(s, "GET", "/admin/models", "").status, 401);
  EXPECT_EQ(call(s, "GET", "/admin/models", "wrong").status, 401);
  EXPECT_EQ(call(s, "POST", "/admin/models/alpha/load", "tenant-key").status, 401);
  EXPECT_EQ(state(s, "alpha"), "unloaded");

  // load answers once the model is ready.
  auto loaded = call(s, "POST", "/admin/models/alpha/load");
  ASSERT_EQ(loaded.status, 200) << loaded.body;
  EXPECT_EQ(Json::parse(loaded.body)["state"], "ready");
  auto one = call(s, "GET", "/admin/models/alpha");
  ASSERT_EQ(one.status, 200);
  const Json a = Json::parse(one.body);
  EXPECT_EQ(a["load"], "on_demand");
  EXPECT_EQ(a["aliases"], Json::array({"a1"}));
  EXPECT_EQ(a["path"], m.one);
  EXPECT_TRUE(a["loaded_at"].is_number());
  EXPECT_EQ(a["in_flight"], 0);
  // Bad input: OpenAI-style errors.
  struct Case {
    std::string method, path;
    int status;
  };
  for (const Case& c : std::vector<Case>{{"POST", "/admin/models/nope/load", 404},
                                         {"GET", "/admin/models/nope", 404},
                                         {"GET", "/admin/models/alpha/load", 405},
                                         {"POST", "/admin/models", 405},
                                         {"GET", "/admin/models/reload", 405},
                                         {"POST", "/admin/models/al%zzpha/load", 400}}) {
    auto r = call(s, c.method, c.path);
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.path << ": " << r.body;
    EXPECT_NE(r.body.find("\"error\""), std::string::npos) << r.body;
  }

  const std::string url = "--url=" + s.base();
  auto maas = [&](std::vector<std::string> args, bool with_key = true) {
    args.insert(args.begin(), {maas_binary(), "models"});
    args.push_back(url);
    if (with_key) args.push_back("--admin-key=" + kAdmin);
    return run_command(args);
  };
  auto ls = maas({"ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_NE(ls.out.find("alpha"), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("ready"), std::string::npos);
  EXPECT_NE(ls.out.find("a1"), std::string::npos);
  auto json = maas({"ls", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const Json listed = Json::parse(json.out);
  EXPECT_EQ(listed["data"][0]["state"], "ready");
  EXPECT_EQ(listed["data"][1]["state"], "unloaded");

  auto load = maas({"load", "beta"});
  EXPECT_EQ(load.exit_code, 0) << load.err;
  EXPECT_NE(load.out.find("beta: ready"), std::string::npos) << load.out;
  EXPECT_EQ(state(s, "beta"), "ready");
  auto unload = maas({"unload", "beta"});
  EXPECT_EQ(unload.exit_code, 0) << unload.err;
  EXPECT_NE(unload.out.find("beta: unloaded"), std::string::npos) << unload.out;
  EXPECT_EQ(model(s, "beta")["memory_bytes"], 0);

  auto missing = maas({"load", "nope"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("404"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("nope"), std::string::npos);
  auto keyless = maas({"ls"}, false);
  EXPECT_NE(keyless.exit_code, 0);
  EXPECT_NE(keyless.err.find("admin key"), std::string::npos) << keyless.err;
  auto wrong_key = run_command({maas_binary(), "models", "ls", url, "--admin-key=nah"});
  EXPECT_NE(wrong_key.exit_code, 0);
  EXPECT_NE(wrong_key.err.find("401"), std::string::npos) << wrong_key.err;
  auto nobody = run_command(
      {maas_binary(), "models", "ls", "--url=http://127.0.0.1:1", "--admin-key=" + kAdmin});
  EXPECT_NE(nobody.exit_code, 0);
  EXPECT_NE(nobody.err.find("cannot connect"), std::string::npos) << nobody.err;

  // reload through the CLI: a new model appears.
  m.write(R"(models:
  - {id: alpha, path: one.gguf, load: on_demand, aliases: [a1]}
  - {id: beta, path: two.gguf, load: on_demand}
  - {id: gamma, path: two.gguf, load: on_demand}
)");
  auto reload = maas({"reload"});
  EXPECT_EQ(reload.exit_code, 0) << reload.err;
  EXPECT_NE(reload.out.find("added     gamma"), std::string::npos) << reload.out;
  EXPECT_NE(reload.out.find("unchanged alpha, beta"), std::string::npos) << reload.out;
  EXPECT_EQ(state(s, "gamma"), "unloaded");
  // The tenant API sees gamma at once (it loads when asked for).
  auto tenant =
      s.request("GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer tenant-key\r\n\r\n");
  EXPECT_NE(tenant.body.find("\"gamma\""), std::string::npos) << tenant.body;
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

// -m models join the file's as `always` models; mistakes stop `maas serve` at start with a
// message naming the file, line and key.
TEST(ModelsTest, StartupCombinesFlagsAndFileAndRefusesBadFiles) {
  Models m;
  m.write("models:\n  - {id: alpha, path: one.gguf, load: on_demand}\n");
  {
    ServeProcess s({"--models-file", m.file, "--admin-key", kAdmin});
    EXPECT_EQ(state(s, "stories"), "ready");
    EXPECT_EQ(model(s, "stories")["load"], "always");
    EXPECT_EQ(state(s, "alpha"), "unloaded");
    EXPECT_EQ(s.request("GET /ready HTTP/1.1\r\nhost: x\r\n\r\n").status, 200);
    // An always model cannot be unloaded.
    auto pinned = call(s, "POST", "/admin/models/stories/unload");
    EXPECT_EQ(pinned.status, 409);
    EXPECT_NE(pinned.body.find("always"), std::string::npos);
  }
  struct Case {
    std::string yaml, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"models:\n  - {id: stories, path: one.gguf}\n", "the name 'stories'"},
           {"models:\n  - {id: x, path: one.gguf, threads: lots}\n",
            "models.yaml:2:38: models[0].threads: must be an integer"},
           {"models:\n  - {id: x, path: nowhere.gguf}\n", "nowhere.gguf does not exist"},
       }) {
    m.write(c.yaml);
    // (timeout: a server that wrongly accepts the file would otherwise run forever)
    auto r = run_command({"timeout", "20", maas_binary(), "serve", "-m",
                          "stories=" + stories_model(), "--models-file", m.file, "--port",
                          std::to_string(free_port()), "--data-dir", scratch_dir() + "/data"});
    EXPECT_NE(r.exit_code, 0) << c.yaml;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
  }
  auto none =
      run_command({"timeout", "20", maas_binary(), "serve", "--data-dir", scratch_dir() + "/data"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("no model to serve"), std::string::npos) << none.err;
}

}  // namespace
}  // namespace maas::test
