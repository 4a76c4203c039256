// llama2.c checkpoint conversion: tensors land under GGUF names with the right shapes and bytes,
// and broken checkpoints or tokenizers are refused with a clear message.
#include <gtest/gtest.h>

#include <cstring>

#include "convert/convert.h"
#include "support/test_util.h"

namespace maas::test {
namespace {

const std::string kStories = shared_dir() + "/models/stories260K";

std::string convert_error(const std::string& ckpt, const std::string& tok) {
  try {
    convert::llama2c_to_gguf(ckpt, tok, scratch_dir() + "/out.gguf", {});
  } catch (const convert::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Llama2cTest, StoriesTensorsAndMetadata) {
  const std::string out = scratch_dir() + "/stories.gguf";
  convert::llama2c_to_gguf(kStories + "/stories260K.bin", kStories + "/tok512.bin", out, {});
  auto f = gguf::File::open(out);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("llama.embedding_length"), 64u);
  EXPECT_EQ(f.get_uint("llama.feed_forward_length"), 172u);
  EXPECT_EQ(f.get_uint("llama.block_count"), 5u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count"), 8u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(f.get_uint("llama.context_length"), 512u);
  auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens);
  ASSERT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ((*tokens)[3], "<0x00>");
  EXPECT_EQ((*tokens)[259], "\xE2\x96\x81t");  // " t" in llama2.c's file is "▁t" in SentencePiece
  EXPECT_EQ(f.tensor("output.weight"), nullptr);  // the classifier is shared with the embedding

  // Bytes: wq of layer 2 sits after the embedding (512*64), 5 attention norms (5*64) and two
  // layers of wq (2*64*64) in the checkpoint; compare it with the GGUF tensor directly.
  const std::string raw = read_file(kStories + "/stories260K.bin");
  const size_t off = 28 + 4 * (512 * 64 + 5 * 64 + 2 * 64 * 64);
  const gguf::TensorInfo* wq2 = f.tensor("blk.2.attn_q.weight");
  ASSERT_NE(wq2, nullptr);
  EXPECT_EQ(wq2->dims, (std::vector<uint64_t>{64, 64}));
  EXPECT_EQ(std::memcmp(wq2->data, raw.data() + off, 64 * 64 * 4), 0);
  const gguf::TensorInfo* w2 = f.tensor("blk.4.ffn_down.weight");
  ASSERT_NE(w2, nullptr);
  EXPECT_EQ(w2->dims, (std::vector<uint64_t>{172, 64}));
}

TEST(Llama2cTest, QuantizedTypeFallsBackForRowsThatDoNotFit) {
  const std::string out = scratch_dir() + "/stories-q8.gguf";
  convert::llama2c_to_gguf(kStories + "/stories260K.bin", kStories + "/tok512.bin", out,
                           {gguf::TensorType::Q8_0});
  auto f = gguf::File::open(out);
  EXPECT_EQ(f.tensor("blk.0.attn_q.weight")->type, gguf::TensorType::Q8_0);
  EXPECT_EQ(f.tensor("blk.0.ffn_down.weight")->type, gguf::TensorType::F16);  // rows of 172
  EXPECT_EQ(f.tensor("blk.0.attn_norm.weight")->type, gguf::TensorType::F32);
}

TEST(Llama2cTest, BrokenCheckpointsAreRefused) {
  const std::string dir = scratch_dir();
  const std::string good = read_file(kStories + "/stories260K.bin");
  const std::string tok = kStories + "/tok512.bin";
  auto with = [&](const std::string& name, const std::string& bytes) {
    write_file(dir + "/" + name, bytes);
    return dir + "/" + name;
  };
  EXPECT_NE(convert_error(with("empty.bin", ""), tok).find("too short"), std::string::npos);
  EXPECT_NE(
      convert_error(with("short.bin", good.substr(0, good.size() - 4)), tok).find("does not match"),
      std::string::npos);
  EXPECT_NE(convert_error(with("long.bin", good + "x"), tok).find("does not match"),
            std::string::npos);
  std::string bad = good;
  const int32_t huge = 1 << 30;
  std::memcpy(bad.data(), &huge, 4);  // dim
  EXPECT_NE(convert_error(with("dim.bin", bad), tok).find("implausible header"), std::string::npos);
  bad = good;
  const int32_t three = 3;
  std::memcpy(bad.data() + 16, &three, 4);  // 8 heads cannot share 3 kv heads
  EXPECT_NE(convert_error(with("kv.bin", bad), tok).find("implausible header"), std::string::npos);
  EXPECT_NE(convert_error(dir + "/nope.bin", tok).find("cannot open"), std::string::npos);
}

TEST(Llama2cTest, BrokenTokenizersAreRefused) {
  const std::string dir = scratch_dir();
  const std::string ckpt = kStories + "/stories260K.bin";
  const std::string good = read_file(kStories + "/tok512.bin");
  auto with = [&](const std::string& name, const std::string& bytes) {
    write_file(dir + "/" + name, bytes);
    return dir + "/" + name;
  };
  EXPECT_NE(convert_error(ckpt, with("t1", good.substr(0, 100))).find("truncated"),
            std::string::npos);
  std::string bad = good;
  const int32_t len = 1 << 28;
  std::memcpy(bad.data() + 4 + 4, &len, 4);  // first token's length
  EXPECT_NE(convert_error(ckpt, with("t2", bad)).find("bad length"), std::string::npos);
  EXPECT_NE(convert_error(ckpt, with("t3", good + "zz")).find("unexpected bytes"),
            std::string::npos);
}

}  // namespace
}  // namespace maas::test
