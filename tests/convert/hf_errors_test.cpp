// Broken Hugging Face inputs are refused with convert::Error and a message saying what is wrong:
// the safetensors header parser on hand-made buffers, then whole model directories.
#include <gtest/gtest.h>

#include <filesystem>

#include "convert/convert.h"
#include "convert/hf_test_util.h"
#include "convert/safetensors.h"
#include "support/test_util.h"

namespace maas::test {
namespace {

namespace st = convert::safetensors;
using hf::json;

std::span<const uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The message of the convert::Error that parsing `file` throws ("" if it does not throw).
std::string parse_error(const std::string& file) {
  try {
    st::parse_header(bytes_of(file), "test.safetensors");
  } catch (const convert::Error& e) {
    return e.what();
  }
  return "";
}

std::string with_header(const json& header, size_t data_bytes) {
  return hf::safetensors_prefix(header.dump()) + std::string(data_bytes, '\0');
}

json entry(const char* dtype, std::vector<uint64_t> shape, uint64_t begin, uint64_t end) {
  return {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}};
}

TEST(SafetensorsTest, ParsesAValidHeader) {
  std::vector<hf::StTensor> ts = {hf::make_tensor("b", "F16", {2, 3}, {1, 2, 3, 4, 5, 6}),
                                  hf::make_tensor("a", "F32", {4}, {0.5f, -1, 2, 3})};
  const std::string file = hf::safetensors_bytes(ts, {{"format", "pt"}});
  const st::Header h = st::parse_header(bytes_of(file));
  ASSERT_EQ(h.tensors.size(), 2u);
  const st::TensorEntry* b = h.find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, st::DType::F16);
  EXPECT_EQ(b->shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(b->begin, 0u);
  EXPECT_EQ(b->end, 12u);
  const st::TensorEntry* a = h.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->begin, 12u);
  EXPECT_EQ(a->end, 28u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  EXPECT_EQ(h.data_start, file.size() - 28);
  EXPECT_EQ(h.find("c"), nullptr);

  // And the values read back through a mapped file.
  const std::string path = scratch_dir() + "/ok.safetensors";
  write_file(path, file);
  auto f = st::File::open(path);
  EXPECT_EQ(f.to_f32(*f.header().find("b")), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(f.to_f32(*f.header().find("a")), (std::vector<float>{0.5f, -1, 2, 3}));
}

TEST(SafetensorsTest, RefusesBrokenHeaders) {
  const json ok = {{"w", entry("F32", {2, 2}, 0, 16)}};
  EXPECT_EQ(parse_error(with_header(ok, 16)), "");

  struct Case {
    std::string what;
    std::string file;
    std::string message;
  };
  std::string huge_len(8, '\xff');
  const std::vector<Case> cases = {
      {"empty", "", "too short"},
      {"truncated length", "\x10\0\0", "too short"},
      {"length past EOF", hf::safetensors_prefix("{}").substr(0, 8).replace(0, 1, "\x40") + "{}",
       "past the end"},
      {"length 2^64-1", huge_len + "{}", "past the end"},
      {"not an object", hf::safetensors_prefix("[1, 2]"), "not a JSON object"},
      {"malformed JSON", hf::safetensors_prefix("{\"w\": {\"dtype\": "), "not valid JSON"},
      {"trailing garbage", hf::safetensors_prefix("{} x"), "not valid JSON"},
      {"invalid UTF-8", hf::safetensors_prefix("{\"\xff\": 1}"), "not valid JSON"},
      {"entry not an object", with_header({{"w", 3}}, 0), "not a JSON object"},
      {"unknown dtype", with_header({{"w", entry("F12", {2}, 0, 8)}}, 8), "unknown dtype \"F12\""},
      {"missing dtype", with_header({{"w", {{"shape", {1}}, {"data_offsets", {0, 4}}}}}, 4),
       "\"dtype\""},
      {"negative dim",
       with_header({{"w", {{"dtype", "F32"}, {"shape", {-1}}, {"data_offsets", {0, 4}}}}}, 4),
       "non-negative"},
      {"float dim",
       with_header({{"w", {{"dtype", "F32"}, {"shape", {1.5}}, {"data_offsets", {0, 4}}}}}, 4),
       "non-negative"},
      {"shape overflow", with_header({{"w", entry("F32", {1ull << 40, 1ull << 40}, 0, 8)}}, 8),
       "overflows"},
      {"byte size overflow", with_header({{"w", entry("F32", {1ull << 62}, 0, 8)}}, 8),
       "overflows"},
      {"offsets past data", with_header({{"w", entry("F32", {2, 2}, 0, 16)}}, 8),
       "past the data section"},
      {"offsets far past data",
       with_header({{"w", entry("U8", {16}, 1ull << 63, (1ull << 63) + 16)}}, 8),
       "past the data section"},
      {"end before begin", with_header({{"w", entry("F32", {0}, 8, 4)}}, 8), "before begin"},
      {"wrong size", with_header({{"w", entry("F32", {2, 2}, 0, 12)}}, 16), "needs 16"},
      {"three offsets",
       with_header({{"w", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4, 8}}}}}, 8),
       "[begin, end]"},
      {"metadata not strings", with_header({{"__metadata__", {{"k", 1}}}}, 0), "not a string"},
      {"deep nesting",
       hf::safetensors_prefix("{\"a\":" + std::string(5000, '[') + std::string(5000, ']') + "}"),
       "nests too deeply"},
  };
  for (const auto& c : cases) {
    const std::string msg = parse_error(c.file);
    EXPECT_NE(msg.find(c.message), std::string::npos) << c.what << ": got \"" << msg << "\"";
    if (c.what != "empty" && c.what != "truncated length") {
      EXPECT_NE(msg.find("test.safetensors"), std::string::npos) << c.what << ": names the file";
    }
  }
}

TEST(SafetensorsTest, RefusesUnconvertibleDtypeWhenRead) {
  const std::string path = scratch_dir() + "/i8.safetensors";
  write_file(path, with_header({{"w", entry("I8", {4}, 0, 4)}}, 4));
  auto f = st::File::open(path);  // the header itself is fine
  try {
    f.to_f32(*f.header().find("w"));
    FAIL() << "I8 converted";
  } catch (const convert::Error& e) {
    EXPECT_NE(std::string(e.what()).find("dtype I8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(st::File::open(scratch_dir() + "/missing.safetensors"), convert::Error);
}

// --- whole model directories -------------------------------------------------------------------

std::string convert_error(const std::string& dir) {
  try {
    convert::hf_to_gguf(dir, dir + ".gguf", {});
  } catch (const convert::Error& e) {
    return e.what();
  }
  return "";
}

struct Broken {
  std::string dir;
  hf::TinyModel m;
};

Broken tiny(hf::Arch arch = hf::Arch::kLlama) {
  Broken b;
  b.dir = scratch_dir() + "/model";
  b.m = hf::write_tiny_model(b.dir, {.arch = arch});
  return b;
}

void edit_json(const std::string& path, const std::function<void(json&)>& edit) {
  json j = json::parse(read_file(path));
  edit(j);
  write_file(path, j.dump());
}

// Rewrites model.safetensors from the model's tensors, letting `edit` change the list.
void rewrite_weights(const Broken& b, const std::function<void(std::vector<hf::StTensor>&)>& edit) {
  std::vector<hf::StTensor> ts;
  for (const auto& name : b.m.names) {
    ts.push_back(
        hf::make_tensor(name, b.m.dtypes.at(name), b.m.shapes.at(name), b.m.values.at(name)));
  }
  edit(ts);
  write_file(b.dir + "/model.safetensors", hf::safetensors_bytes(ts));
}

#define EXPECT_REFUSED(dir, text)                                              \
  do {                                                                         \
    const std::string msg_ = convert_error(dir);                               \
    EXPECT_NE(msg_.find(text), std::string::npos) << "got \"" << msg_ << "\""; \
  } while (0)

TEST(HfErrorsTest, BrokenSafetensors) {
  {
    auto b = tiny();
    const std::string w = read_file(b.dir + "/model.safetensors");
    write_file(b.dir + "/model.safetensors", w.substr(0, w.size() - 100));
    EXPECT_REFUSED(b.dir, "past the data section");
  }
  {
    auto b = tiny();
    std::string w = read_file(b.dir + "/model.safetensors");
    w[5] = '\x01';  // header length ~2^40
    write_file(b.dir + "/model.safetensors", w);
    EXPECT_REFUSED(b.dir, "runs past the end of the file");
  }
  {
    auto b = tiny();
    write_file(b.dir + "/model.safetensors", "");
    EXPECT_REFUSED(b.dir, "too short");
  }
  {
    auto b = tiny();
    rewrite_weights(b, [](auto& ts) {
      for (auto& t : ts) {
        if (t.name == "model.norm.weight") t.dtype = "I32";  // same size as F32
      }
    });
    EXPECT_REFUSED(b.dir, "dtype I32");
  }
}

TEST(HfErrorsTest, TensorsThatDoNotFit) {
  {
    auto b = tiny();
    rewrite_weights(b, [](auto& ts) {
      ts.push_back(hf::make_tensor("model.layers.0.self_attn.o_proj.bias", "F32", {64},
                                   std::vector<float>(64)));
    });
    EXPECT_REFUSED(b.dir,
                   "does not know for LlamaForCausalLM: model.layers.0.self_attn.o_proj.bias");
  }
  {
    auto b = tiny();
    rewrite_weights(b, [](auto& ts) {
      std::erase_if(ts, [](auto& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
    });
    EXPECT_REFUSED(b.dir, "missing tensor(s): model.layers.1.mlp.up_proj.weight");
  }
  {
    auto b = tiny(hf::Arch::kQwen2);
    rewrite_weights(b, [](auto& ts) {
      std::erase_if(ts, [](auto& t) { return t.name.ends_with("k_proj.bias"); });
    });
    EXPECT_REFUSED(b.dir,
                   "missing tensor(s): model.layers.0.self_attn.k_proj.bias, "
                   "model.layers.1.self_attn.k_proj.bias");
  }
  {
    auto b = tiny();
    edit_json(b.dir + "/config.json", [](json& c) { c["intermediate_size"] = 96; });
    EXPECT_REFUSED(b.dir, "model.layers.0.mlp.gate_proj.weight is [80, 64], expected [96, 64]");
  }
  {
    auto b = tiny();
    std::filesystem::remove(b.dir + "/model.safetensors");
    EXPECT_REFUSED(b.dir, "no model.safetensors or model.safetensors.index.json");
  }
}

TEST(HfErrorsTest, BrokenShardIndex) {
  const std::string dir = scratch_dir() + "/sharded";
  hf::write_tiny_model(dir, {.shards = 2});
  const std::string index = dir + "/model.safetensors.index.json";
  const std::string original = read_file(index);
  edit_json(index,
            [](json& j) { j["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors"; });
  EXPECT_REFUSED(dir, "not a file in the model directory");
  write_file(index, original);
  edit_json(index, [](json& j) {
    const std::string other =
        j["weight_map"]["model.norm.weight"] == "model-00001-of-00002.safetensors"
            ? "model-00002-of-00002.safetensors"
            : "model-00001-of-00002.safetensors";
    j["weight_map"]["model.norm.weight"] = other;
  });
  EXPECT_REFUSED(dir, "tensor 'model.norm.weight' is mapped to");
  write_file(index, original);
  edit_json(index, [](json& j) {
    j["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors";
  });
  EXPECT_REFUSED(dir, "cannot open");
  write_file(index, "{\"weight_map\": 3}");
  EXPECT_REFUSED(dir, "no \"weight_map\" object");
}

TEST(HfErrorsTest, BadConfig) {
  struct Case {
    std::function<void(json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](json& c) { c.erase("hidden_size"); }, "config.json: missing \"hidden_size\""},
      {[](json& c) { c.erase("num_hidden_layers"); }, "missing \"num_hidden_layers\""},
      {[](json& c) { c.erase("vocab_size"); }, "missing \"vocab_size\""},
      {[](json& c) { c.erase("architectures"); }, "missing \"architectures\""},
      {[](json& c) { c["architectures"] = {"GPT2LMHeadModel"}; },
       "unsupported architecture 'GPT2LMHeadModel'"},
      {[](json& c) { c["hidden_size"] = -64; }, "\"hidden_size\" is -64"},
      {[](json& c) { c["hidden_size"] = "64"; }, "\"hidden_size\" is \"64\""},
      {[](json& c) { c["num_key_value_heads"] = 3; }, "not a multiple of num_key_value_heads 3"},
      {[](json& c) { c["rms_norm_eps"] = 0; }, "\"rms_norm_eps\" is 0"},
      {[](json& c) { c["hidden_act"] = "gelu"; }, "hidden_act \"gelu\" is not supported"},
      {[](json& c) {
         c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
       },
       "rope_scaling type 'yarn'"},
      {[](json& c) { c["tie_word_embeddings"] = "yes"; }, "tie_word_embeddings is not a boolean"},
  };
  for (const auto& c : cases) {
    auto b = tiny();
    edit_json(b.dir + "/config.json", c.edit);
    EXPECT_REFUSED(b.dir, c.message);
  }
  auto b = tiny();
  write_file(b.dir + "/config.json", "{\"architectures\": [\"LlamaForCausalLM\"],");
  EXPECT_REFUSED(b.dir, "config.json: invalid JSON");
  std::filesystem::remove(b.dir + "/config.json");
  EXPECT_REFUSED(b.dir, "config.json: no such file");
  EXPECT_REFUSED(b.dir + "/nonexistent", "not a directory");
}

TEST(HfErrorsTest, BadTokenizer) {
  struct Case {
    std::function<void(json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](json& t) { t["model"]["type"] = "WordPiece"; },
       "model type 'WordPiece' is not supported"},
      {[](json& t) { t["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+"; },
       "unknown pre-tokenizer regex \"\\\\w+\""},
      {[](json& t) {
         t["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "neither byte-level nor SentencePiece-style"},
      {[](json& t) {
         t["normalizer"] = {{"type", "Lowercase"}};
       },
       "normalizer 'Lowercase' is not supported"},
      {[](json& t) { t["model"]["merges"].push_back("x y z"); },
       "not two tokens separated by one space"},
      {[](json& t) { t["model"]["merges"].push_back("q QQQ"); },
       "uses a token missing from the vocabulary"},
      {[](json& t) { t["model"]["vocab"]["dup"] = 5; }, "id 5 is used by both"},
      {[](json& t) { t["model"]["vocab"]["neg"] = -1; }, "has id -1"},
      {[](json& t) {
         t["added_tokens"].push_back({{"id", 400}, {"content", "<x>"}, {"special", true}});
       },
       "the tokenizer has 401 tokens but config.json's vocab_size is 272"},
      {[](json& t) {
         t["added_tokens"].push_back({{"id", 1ull << 40}, {"content", "<x>"}});
       },
       "must be an integer in"},
  };
  for (const auto& c : cases) {
    auto b = tiny();
    edit_json(b.dir + "/tokenizer.json", c.edit);
    EXPECT_REFUSED(b.dir, c.message);
  }
  {
    auto b = tiny();
    edit_json(b.dir + "/tokenizer_config.json", [](json& c) { c["bos_token"] = "<nope>"; });
    EXPECT_REFUSED(b.dir, "bos_token \"<nope>\" is not in the vocabulary");
  }
  {
    auto b = tiny();
    edit_json(b.dir + "/tokenizer_config.json", [](json& c) {
      c["chat_template"] = json::array({{{"name", "x"}, {"template", "y"}}});
    });
    EXPECT_REFUSED(b.dir, "without a \"default\" template");
  }
  {
    auto b = tiny();
    std::filesystem::remove(b.dir + "/tokenizer.json");
    EXPECT_REFUSED(b.dir, "tokenizer.json: no such file");
  }
}

}  // namespace
}  // namespace maas::test
