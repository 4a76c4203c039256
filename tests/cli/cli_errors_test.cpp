// The CLI's commands on good and bad input: clear messages on stderr and a non-zero exit.
#include <gtest/gtest.h>

#include "support/test_util.h"

namespace maas::test {
namespace {

CommandResult maas(std::vector<std::string> args, const std::string& in = "") {
  args.insert(args.begin(), maas_binary());
  return run_command(args, in);
}

TEST(CliTest, InfoShowsMetadataAndTensors) {
  auto r = maas({"info", shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tokenizer.ggml.model"), std::string::npos);
  EXPECT_NE(r.out.find("\"llama\""), std::string::npos);
  EXPECT_NE(r.out.find("GGUF version: 3"), std::string::npos) << r.out.substr(0, 200);
}

TEST(CliTest, TokenizeFromArgumentAndStdin) {
  const std::string vocab = shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf";
  auto a = maas({"tokenize", "-m", vocab, "Hello world"});
  auto b = maas({"tokenize", "-m", vocab, "--stdin"}, "Hello world");
  auto c = maas({"tokenize", "-m", vocab, "--no-bos", "Hello world"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  // Llama 2: BOS 1, then "▁Hello" 15043, "▁world" 3186 (as in the shared test vectors).
  EXPECT_EQ(a.out, "1 15043 3186\n");
  EXPECT_EQ(c.out, "15043 3186\n");
}

TEST(CliTest, ErrorsAreClearAndNonZero) {
  const std::string dir = scratch_dir();
  write_file(dir + "/garbage.gguf", "this is not a gguf file at all");
  struct Case {
    std::vector<std::string> args;
    std::string expect;  // part of stderr
  };
  const std::vector<Case> cases = {
      {{"info", dir + "/missing.gguf"}, "missing.gguf"},
      {{"info", dir + "/garbage.gguf"}, "garbage.gguf"},
      {{"info", dir}, ""},
      {{"run", "-m", dir + "/garbage.gguf", "-p", "hi"}, "garbage.gguf"},
      {{"run", "-p", "hi"}, "model"},
      {{"tokenize", "-m", shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf"}, "TEXT or --stdin"},
      {{"convert", "llama2c", dir + "/garbage.gguf", dir + "/garbage.gguf", "-o", dir + "/o.gguf"},
       "garbage.gguf"},
      {{"convert", "llama2c", "a", "b", "-o", dir + "/o.gguf", "--type", "q9_9"}, "q9_9"},
      {{"nonsense-command"}, ""},
      {{"serve", "--fair-chunk", "-1"}, "fair-chunk"},
      {{"serve", "--fair-step-ms", "soon"}, "fair-step-ms"},
      // Days only: a time of day, a missing Z or an impossible month is refused.
      {{"usage", "--data-dir", dir + "/state", "--from", "2026-01-01T00:00:00Z"}, "not a day"},
      {{"usage", "--data-dir", dir + "/state", "--to", "2026-13-01"}, "2026-13-01"},
      {{"usage", "--data-dir", dir + "/state", "--from", "2026-1-1x"}, "2026-1-1x"},
  };
  for (const auto& c : cases) {
    auto r = maas(c.args);
    std::string cmd;
    for (const auto& a : c.args) cmd += a + " ";
    EXPECT_NE(r.exit_code, 0) << cmd;
    EXPECT_LT(r.exit_code, 128) << "crashed: " << cmd << "\n" << r.err;
    EXPECT_FALSE(r.err.empty()) << cmd;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << cmd << "\n" << r.err;
  }
}

TEST(CliTest, RunRefusesAVocabularyWithoutWeights) {
  auto r = maas({"run", "-m", shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf", "-p", "hi"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("token_embd.weight"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace maas::test

namespace maas::test {
namespace {

TEST(CliTest, InfoCpuNamesTheChosenTarget) {
  auto r = run_command({maas_binary(), "info", "--cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("chosen: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kernel targets: "), std::string::npos) << r.out;
  // With AMX-BF16 the amx target runs F16 and BF16 prompts on the tile unit, and says so.
  const bool bf16_tiles = r.out.find(" amx-bf16") != std::string::npos &&
                          r.out.find("chosen: amx") != std::string::npos;
  EXPECT_EQ(bf16_tiles,
            r.out.find("prompt tokens on the bf16 tile unit: f16 bf16") != std::string::npos)
      << r.out;
  auto none = run_command({maas_binary(), "info"});
  EXPECT_EQ(none.exit_code, 1);
}

}  // namespace
}  // namespace maas::test
