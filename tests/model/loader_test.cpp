// Model::load refuses unknown architectures and missing or misshapen tensors, naming each.
#include <gtest/gtest.h>

#include "model/model.h"
#include "model/random_model.h"
#include "support/test_util.h"

namespace maas::test {
namespace {

std::string load_error(const RandomModel& rm, const std::string& arch_override = "") {
  gguf::Writer w;
  rm.write(w);
  if (!arch_override.empty()) w.set_string("general.architecture", arch_override);
  const std::string path = scratch_dir() + "/model.gguf";
  w.write(path);
  auto file = gguf::File::open(path);
  try {
    model::Model::load(file);
  } catch (const model::Error& e) {
    return e.what();
  }
  return "";
}

TEST(LoaderTest, UnknownArchitecture) {
  const std::string msg = load_error(make_random_model({}), "mamba");
  EXPECT_NE(msg.find("unsupported architecture 'mamba'"), std::string::npos) << msg;
}

TEST(LoaderTest, ListsEveryMissingAndMisshapenTensor) {
  RandomModel rm = make_random_model({});
  rm.tensors.erase("blk.0.attn_k.weight");
  rm.tensors.erase("blk.1.ffn_up.weight");
  rm.tensors["blk.1.attn_q.weight"].first = {32, 31};  // wrong output size
  rm.tensors["blk.1.attn_q.weight"].second.resize(32 * 31);
  const std::string msg = load_error(rm);
  EXPECT_NE(msg.find("3 problems"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing tensor 'blk.0.attn_k.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing tensor 'blk.1.ffn_up.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'blk.1.attn_q.weight' has shape [32, 31], expected [32, 32]"),
            std::string::npos)
      << msg;
}

TEST(LoaderTest, QwenNeedsItsExtraTensors) {
  RandomModelSpec q2;
  q2.arch = "qwen2";
  RandomModel rm = make_random_model(q2);
  rm.tensors.erase("blk.0.attn_v.bias");
  EXPECT_NE(load_error(rm).find("attn_v.bias"), std::string::npos);
  RandomModelSpec q3;
  q3.arch = "qwen3";
  RandomModel rm3 = make_random_model(q3);
  rm3.tensors.erase("blk.1.attn_k_norm.weight");
  EXPECT_NE(load_error(rm3).find("attn_k_norm"), std::string::npos);
}

TEST(LoaderTest, BadHyperParameters) {
  RandomModelSpec s;
  s.kv_heads = 3;  // 4 heads cannot be grouped into 3
  RandomModel rm = make_random_model({});
  rm.spec.kv_heads = 3;
  const std::string msg = load_error(rm);
  EXPECT_NE(msg.find("not a multiple of head_count_kv 3"), std::string::npos) << msg;
}

}  // namespace
}  // namespace maas::test
