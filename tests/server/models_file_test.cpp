// The models file: every setting parsed as documented, and every mistake refused with a message
// naming the file, the line and the key.
#include "server/models_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "support/test_util.h"

namespace maas::server {
namespace {

using namespace std::chrono_literals;

// A directory with two (fake) model files: the parser checks files exist, not their content.
struct Dir {
  std::string path = test::scratch_dir();
  Dir() {
    test::write_file(path + "/one.gguf", "1");
    test::write_file(path + "/two.gguf", "22");
    std::filesystem::create_directories(path + "/sub");
  }
};

ModelSpec base() {
  ModelSpec b;
  b.engine.max_running = 7;
  b.engine.kv_memory = 12345;
  b.engine.threads = 3;
  return b;
}

ModelsConfig parse(const Dir& d, const std::string& yaml) {
  return parse_models_yaml(yaml, "m.yaml", d.path, base());
}

TEST(ModelsFile, ParsesEverySetting) {
  Dir d;
  const std::string yaml = R"(# models
memory_budget: 8G
max_load_waiters: 9
load_wait_timeout: 2m
models:
  - id: llama-3/8b:q8
    path: one.gguf
    aliases: [gpt-4, "gpt-4o"]
    load: on_demand
    idle_unload: 10m
    context_size: 2048
    threads: 2
    kv_memory: 512M
    kv_type: q8_0
    max_running: 16
    token_budget: 512
    max_waiting: 100
    prefix_cache: false
    fair_prompt_chunk: 48
    fair_step_ms: 62.5
    mmap: false
    defaults:
      temperature: 0.7
      top_p: 0.9
      top_k: 40
      max_tokens: 256
      presence_penalty: -0.5
      frequency_penalty: 1
      stop: ["\n\n", "END"]
      seed: 42
  - id: small
    path: sub/../two.gguf
)";
  const ModelsConfig c = parse(d, yaml);
  EXPECT_EQ(c.memory_budget, size_t{8} << 30);
  EXPECT_EQ(c.max_load_waiters, 9u);
  EXPECT_EQ(c.load_wait_timeout, 120s);
  ASSERT_EQ(c.models.size(), 2u);
  const ModelSpec& m = c.models[0];
  EXPECT_EQ(m.id, "llama-3/8b:q8");
  EXPECT_EQ(m.path, d.path + "/one.gguf");
  EXPECT_EQ(m.aliases, (std::vector<std::string>{"gpt-4", "gpt-4o"}));
  EXPECT_EQ(m.policy, LoadPolicy::OnDemand);
  EXPECT_EQ(m.idle_unload, 600s);
  EXPECT_EQ(m.engine.max_context, 2048);
  EXPECT_EQ(m.engine.threads, 2);
  EXPECT_EQ(m.engine.kv_memory, size_t{512} << 20);
  EXPECT_EQ(m.engine.kv_type, model::KvType::Q8_0);
  EXPECT_EQ(m.engine.max_running, 16);
  EXPECT_EQ(m.engine.token_budget, 512);
  EXPECT_EQ(m.engine.max_waiting, 100u);
  EXPECT_FALSE(m.engine.prefix_cache);
  EXPECT_EQ(m.engine.fair_prompt_chunk, 48);
  EXPECT_EQ(m.engine.fair_step_ms, 62.5);
  EXPECT_TRUE(m.copy_weights);
  EXPECT_EQ(m.origin, "m.yaml:6");
  EXPECT_EQ(m.file_size, 1u);
  const auto expected_defaults = nlohmann::ordered_json::parse(
      R"({"temperature":0.7,"top_p":0.9,"top_k":40,"max_tokens":256,"presence_penalty":-0.5,
          "frequency_penalty":1,"stop":["\n\n","END"],"seed":42})");
  EXPECT_EQ(m.defaults, expected_defaults) << m.defaults.dump();
  // Settings a model leaves out come from the command line's; policy defaults to always.
  const ModelSpec& s = c.models[1];
  EXPECT_EQ(s.path, d.path + "/two.gguf");
  EXPECT_EQ(s.policy, LoadPolicy::Always);
  EXPECT_EQ(s.engine.max_running, 7);
  EXPECT_EQ(s.engine.kv_memory, 12345u);
  EXPECT_EQ(s.engine.threads, 3);
  EXPECT_TRUE(s.defaults.empty());
  EXPECT_TRUE(s.aliases.empty());
  EXPECT_EQ(s.idle_unload, 0ms);
  EXPECT_EQ(s.file_size, 2u);
  EXPECT_EQ(s.origin, "m.yaml:31");
}

TEST(ModelsFile, ReadsAFileWithPathsRelativeToIt) {
  Dir d;
  test::write_file(d.path + "/sub/models.yaml", "models:\n  - id: x\n    path: ../one.gguf\n");
  const ModelsConfig c = read_models_file(d.path + "/sub/models.yaml", base());
  ASSERT_EQ(c.models.size(), 1u);
  EXPECT_EQ(c.models[0].path, d.path + "/one.gguf");
  EXPECT_EQ(c.memory_budget, 0u);  // no budget unless given
  try {
    read_models_file(d.path + "/nope.yaml", base());
    ADD_FAILURE();
  } catch (const ModelsFileError& e) {
    EXPECT_NE(std::string(e.what()).find("nope.yaml"), std::string::npos) << e.what();
  }
}

// Each bad file: the message must carry this location ("m.yaml:LINE:COLUMN" or "m.yaml:LINE")
// and this text (usually the key).
TEST(ModelsFile, EveryMistakeNamesTheFileLineAndKey) {
  Dir d;
  const std::string m0 = "models:\n  - id: a\n    path: one.gguf\n";  // a valid first model
  struct Case {
    std::string yaml, where, what;
  };
  const std::vector<Case> cases = {
      {"models: [", "m.yaml:1:", "not valid YAML"},
      {"", "m.yaml", "empty"},
      {"- a\n- b\n", "m.yaml:1:1", "must be a mapping"},
      {"memory_budgt: 8G\n" + m0, "m.yaml:1:1", "memory_budgt: is not a setting"},
      {"memory_budget: 8G\n", "m.yaml", "'models' is required"},
      {"models: 5\n", "m.yaml:1:9", "models: must be a list"},
      {"models:\n  - just-a-name\n", "m.yaml:2:5", "models[0]: must be a mapping"},
      {"models:\n  - path: one.gguf\n", "m.yaml:2:5", "models[0].id: is required"},
      {"models:\n  - id: a\n", "m.yaml:2:5", "models[0].path: is required"},
      {"models:\n  - id: a\n    path: missing.gguf\n", "m.yaml:3:11",
       "models[0].path: " + d.path + "/missing.gguf does not exist"},
      {"models:\n  - id: a\n    path: sub\n", "m.yaml:3:11",
       "models[0].path: " + d.path + "/sub is not a file"},
      {m0 + "    temprature: 1\n", "m.yaml:4:5", "models[0].temprature: is not a model setting"},
      {m0 + "    max_running: many\n", "m.yaml:4:18", "models[0].max_running: must be an integer"},
      {m0 + "    max_running: 0\n", "m.yaml:4:18", "models[0].max_running: must be between 1"},
      {m0 + "    fair_step_ms: -1\n", "m.yaml:4:19", "models[0].fair_step_ms: must be between 0"},
      {m0 + "    fair_step_ms: fast\n", "m.yaml:4:19", "models[0].fair_step_ms: must be a number"},
      {m0 + "    fair_prompt_chunk: 1.5\n", "m.yaml:4:24",
       "models[0].fair_prompt_chunk: must be an integer"},
      {m0 + "    threads: 1.5\n", "m.yaml:4:14", "models[0].threads: must be an integer"},
      {m0 + "    context_size: -1\n", "m.yaml:4:19", "models[0].context_size: must be between"},
      {m0 + "    kv_memory: 12X\n", "m.yaml:4:16",
       "models[0].kv_memory: '12X' has an unknown size unit"},
      {m0 + "    kv_memory: [1]\n", "m.yaml:4:16", "models[0].kv_memory: must be a size"},
      {m0 + "    kv_type: q4\n", "m.yaml:4:14", "models[0].kv_type: must be f16, q8_0 or f32"},
      {m0 + "    prefix_cache: maybe\n", "m.yaml:4:19",
       "models[0].prefix_cache: must be true or false"},
      {m0 + "    load: sometimes\n", "m.yaml:4:11", "models[0].load: must be always or on_demand"},
      {m0 + "    load: on_demand\n    idle_unload: soon\n", "m.yaml:5:18",
       "models[0].idle_unload: 'soon' is not a duration"},
      {m0 + "    idle_unload: 10m\n", "m.yaml:4:18", "models[0].idle_unload: applies to on_demand"},
      {m0 + "    aliases: gpt-4\n", "m.yaml:4:14", "models[0].aliases: must be a list"},
      {m0 + "    aliases: [\"a b\"]\n", "m.yaml:4:15", "models[0].aliases: 'a b' is not a valid"},
      {"models:\n  - id: \"has space\"\n    path: one.gguf\n", "m.yaml:2:9",
       "models[0].id: 'has space' is not a valid model name"},
      {m0 + "    id: b\n", "m.yaml:4:5", "models[0].id: is given twice"},
      {m0 + "  - id: a\n    path: two.gguf\n", "m.yaml:4",
       "the name 'a' of model 'a' is already used by model 'a' (m.yaml:2)"},
      {m0 + "  - id: b\n    path: two.gguf\n    aliases: [a]\n", "m.yaml:4",
       "the name 'a' of model 'b' is already used by model 'a' (m.yaml:2)"},
      {m0 + "    aliases: [a]\n", "m.yaml:2", "model 'a' names 'a' twice"},
      {m0 + "    defaults: 5\n", "m.yaml:4:15", "models[0].defaults: must be a mapping"},
      {m0 + "    defaults:\n      logit_bias: 1\n", "m.yaml:5:7",
       "models[0].defaults.logit_bias: is not a request default"},
      {m0 + "    defaults:\n      top_k: 3\n      temperature: 3\n", "m.yaml:6:20",
       "models[0].defaults.temperature:"},
      {m0 + "    defaults:\n      stop: {a: 1}\n", "m.yaml:5:13", "models[0].defaults.stop:"},
      {m0 + "    defaults:\n      max_tokens: -5\n", "m.yaml:5:19",
       "models[0].defaults.max_tokens:"},
      {"memory_budget: lots\n" + m0, "m.yaml:1:16", "memory_budget: 'lots' is not a size"},
      {"load_wait_timeout: 0\n" + m0, "m.yaml:1:20", "load_wait_timeout: must be longer than 0"},
      {"max_load_waiters: 0\n" + m0, "m.yaml:1:19", "max_load_waiters: must be between 1"},
      {"models: []\nmodels: []\n", "m.yaml:2:1", "models: is given twice"},
  };
  for (const Case& c : cases) {
    try {
      parse(d, c.yaml);
      ADD_FAILURE() << "accepted:\n" << c.yaml;
    } catch (const ModelsFileError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(c.where, 0), 0u) << "message: " << msg << "\nwanted at: " << c.where;
      EXPECT_NE(msg.find(c.what), std::string::npos)
          << "message: " << msg << "\nwanted: " << c.what;
    }
  }
}

TEST(ModelsFile, AnEmptyModelListIsAllowed) {
  Dir d;
  EXPECT_TRUE(parse(d, "models: []\n").models.empty());
  EXPECT_TRUE(parse(d, "models:\n").models.empty());
}

TEST(ModelsFile, SizesAndDurations) {
  EXPECT_EQ(parse_size("8G"), 8589934592u);
  EXPECT_EQ(parse_size("512M"), 536870912u);
  EXPECT_EQ(parse_size("512MiB"), 536870912u);
  EXPECT_EQ(parse_size("1.5k"), 1536u);
  EXPECT_EQ(parse_size("2T"), 2199023255552u);
  EXPECT_EQ(parse_size("100"), 100u);
  EXPECT_EQ(parse_size("0"), 0u);
  for (const char* bad : {"", "G", "abc", "5X", "-1", "1e20", "nan"}) {
    EXPECT_THROW(parse_size(bad), std::invalid_argument) << bad;
  }
  EXPECT_EQ(parse_duration("10m"), 600000ms);
  EXPECT_EQ(parse_duration("30s"), 30000ms);
  EXPECT_EQ(parse_duration("90"), 90000ms);
  EXPECT_EQ(parse_duration("500ms"), 500ms);
  EXPECT_EQ(parse_duration("1.5h"), 5400000ms);
  EXPECT_EQ(parse_duration("2d"), 172800000ms);
  for (const char* bad : {"", "soon", "5w", "-1s", "400d"}) {
    EXPECT_THROW(parse_duration(bad), std::invalid_argument) << bad;
  }
}

TEST(ModelsFile, WhatCountsAsAChangedInstance) {
  Dir d;
  const ModelsConfig c = parse(d, "models:\n  - id: a\n    path: one.gguf\n");
  const ModelSpec& a = c.models[0];
  // Names, defaults and policies do not need a new instance...
  ModelSpec same = a;
  same.aliases = {"x"};
  same.defaults = {{"temperature", 0}};
  same.policy = LoadPolicy::OnDemand;
  same.idle_unload = 5s;
  EXPECT_TRUE(a.same_instance(same));
  // ...the file or an engine setting does.
  auto changed = [&](auto edit) {
    ModelSpec s = a;
    edit(s);
    return !a.same_instance(s);
  };
  EXPECT_TRUE(changed([&](ModelSpec& s) { s.path = d.path + "/two.gguf"; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.kv_memory += 1; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.max_context = 64; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.threads = 1; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.max_running = 1; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.token_budget = 1; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.kv_type = model::KvType::F32; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.prefix_cache = false; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.max_waiting = 1; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.fair_prompt_chunk = 1; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.engine.fair_step_ms = 1; }));
  EXPECT_TRUE(changed([](ModelSpec& s) { s.copy_weights = true; }));
  // Rewriting the file in place (another size) counts as a change once re-read.
  test::write_file(d.path + "/one.gguf", "rewritten");
  ModelSpec rewritten = a;
  rewritten.stamp_file();
  EXPECT_FALSE(a.same_instance(rewritten));
}

}  // namespace
}  // namespace maas::server
