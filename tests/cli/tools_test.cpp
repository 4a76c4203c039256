// maas synth, quantize and bench through the command line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "support/test_util.h"

namespace maas::test {
namespace {

CommandResult maas(std::vector<std::string> args) {
  args.insert(args.begin(), maas_binary());
  return run_command(args);
}

TEST(ToolsTest, SynthQuantizeBench) {
  const std::string dir = scratch_dir();
  auto r = maas({"synth", "-o", dir + "/m.gguf", "--arch", "qwen2", "--embd", "128", "--layers",
                 "2", "--heads", "4", "--kv-heads", "2", "--ff", "256", "--vocab-from",
                 shared_dir() + "/models/stories260K/tok512.bin", "--type", "q8_0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = maas({"quantize", dir + "/m.gguf", dir + "/q.gguf", "q4_0", "--override", "ffn_down=q6_k"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  r = maas({"bench", "-m", dir + "/q.gguf", "-p", "16", "-n", "8", "-r", "2", "-t", "1", "--json",
            "--no-probe"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string last = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
  const auto j = nlohmann::json::parse(last);
  EXPECT_GT(j.at("pp_tok_s").get<double>(), 0);
  EXPECT_GT(j.at("tg_tok_s").get<double>(), 0);
  EXPECT_LE(j.at("tg_min").get<double>(), j.at("tg_tok_s").get<double>());
  EXPECT_EQ(j.at("n_prompt"), 16);
  // Bytes streamed per decoded token: every 2-D tensor but the (untied) embedding.
  auto f = gguf::File::open(dir + "/q.gguf");
  uint64_t bytes = 0;
  for (const auto& t : f.tensors()) {
    if (t.dims.size() == 2 && t.name != "token_embd.weight") bytes += t.n_bytes;
  }
  EXPECT_EQ(j.at("weight_bytes_per_token").get<uint64_t>(), bytes);
  EXPECT_EQ(f.tensor("blk.1.ffn_down.weight")->type, gguf::TensorType::Q6_K);
}

TEST(ToolsTest, BadArgumentsFailCleanly) {
  const std::string dir = scratch_dir();
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"quantize", dir + "/none.gguf", dir + "/o.gguf", "q4_0"},
           {"quantize", shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf", dir + "/o.gguf", "q4_0",
            "--override", "x"},
           {"synth", "-o", dir + "/o.gguf", "--vocab-from", dir + "/none.bin"},
           {"bench", "-m", shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf"},
       }) {
    auto r = maas(args);
    EXPECT_EQ(r.exit_code, 1) << args[0] << ": " << r.err;
    EXPECT_NE(r.err.find("error"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace maas::test
