// The reader against files whose bytes are known independently of our writer: one assembled by
// hand from the spec, and real vocabulary files written by llama.cpp's converter.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "gguf/byte_builder.h"
#include "gguf/gguf.h"
#include "support/test_util.h"

namespace maas::gguf {
namespace {

using test::ByteBuilder;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(KnownAnswer, HandBuiltFile) {
  ByteBuilder b;
  b.header(/*n_tensors=*/2, /*n_kv=*/7);
  b.key("general.architecture", 8).str("llama");
  b.key("general.alignment", 4).u32(64);
  b.key("x.f32", 6).f32(1.5f);
  b.key("x.i8", 1).u8(0xfd);  // -3
  b.key("x.arr", 9).u32(5).u64(3).u32(1).u32(0xfffffffe).u32(3);
  b.key("x.nested", 9).u32(9).u64(2);
  b.u32(2).u64(2).u16(1).u16(2);  // [1, 2] of uint16
  b.u32(2).u64(0);                // [] of uint16
  b.key("x.bool", 7).u8(1);
  b.tensor_info("a", {2, 3}, /*F32*/ 0, 0);
  b.tensor_info("b", {32}, /*Q8_0*/ 8, 64);
  const size_t header_end = b.size();
  b.pad_to(64);
  const size_t data_start = b.size();
  b.fill(24, 0x40).pad_to(64).fill(34, 0x80);

  const File f = File::parse(b.span());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_GT(data_start, header_end);
  EXPECT_EQ(f.data_offset(), data_start);
  EXPECT_EQ(f.file_size(), data_start + 64 + 34);

  ASSERT_EQ(f.metadata().size(), 7u);
  const char* keys[] = {
      "general.architecture", "general.alignment", "x.f32", "x.i8", "x.arr", "x.nested", "x.bool"};
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(f.metadata()[i].first, keys[i]);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.find("general.alignment")->type(), ValueType::UINT32);
  EXPECT_EQ(f.get_uint("general.alignment"), 64u);
  EXPECT_EQ(f.find("x.f32")->type(), ValueType::FLOAT32);
  EXPECT_EQ(f.get_float("x.f32"), 1.5);
  EXPECT_EQ(f.find("x.i8")->type(), ValueType::INT8);
  EXPECT_EQ(f.get_int("x.i8"), -3);
  EXPECT_EQ(f.get_int_array("x.arr"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.find("x.arr")->as_array().elem_type, ValueType::INT32);
  const Array& nested = f.find("x.nested")->as_array();
  EXPECT_EQ(nested.elem_type, ValueType::ARRAY);
  ASSERT_EQ(nested.items.size(), 2u);
  EXPECT_EQ(nested.items[0].as_array().elem_type, ValueType::UINT16);
  EXPECT_EQ(nested.items[0].to_string(), "[1, 2]");
  EXPECT_TRUE(nested.items[1].as_array().items.empty());
  EXPECT_EQ(f.get_bool("x.bool"), true);
  EXPECT_EQ(f.find("absent"), nullptr);
  EXPECT_EQ(f.get_uint("absent"), std::nullopt);
  EXPECT_EQ(f.get_string_array("absent"), std::nullopt);

  ASSERT_EQ(f.tensors().size(), 2u);
  const TensorInfo& a = f.tensors()[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.dims, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(a.type, TensorType::F32);
  EXPECT_EQ(a.n_elements, 6u);
  EXPECT_EQ(a.rows(), 3u);
  EXPECT_EQ(a.n_bytes, 24u);
  EXPECT_EQ(a.data, b.b.data() + data_start);
  EXPECT_EQ(a.data[0], 0x40);
  EXPECT_EQ(a.data[23], 0x40 + 23);
  const TensorInfo* q = f.tensor("b");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, TensorType::Q8_0);
  EXPECT_EQ(q->offset, 64u);
  EXPECT_EQ(q->n_bytes, 34u);
  EXPECT_EQ(q->rows(), 1u);
  EXPECT_EQ(q->data, b.b.data() + data_start + 64);
  EXPECT_EQ(q->data[33], 0x80 + 33);
}

TEST(KnownAnswer, TypedGettersNameTheKeyOnTypeMismatch) {
  ByteBuilder b;
  b.header(0, 5);
  b.key("s", 8).str("text");
  b.key("neg", 5).u32(0xffffffff);  // int32 -1
  b.key("ints", 9).u32(4).u64(1).u32(5);
  b.key("huge", 10).u64(uint64_t{1} << 63);
  b.key("strs", 9).u32(8).u64(1).str("t");
  const File f = File::parse(b.span());
  std::string e = error_of([&] { (void)f.get_uint("s"); });
  EXPECT_NE(e.find("key 's'"), std::string::npos) << e;
  EXPECT_NE(e.find("string"), std::string::npos) << e;
  e = error_of([&] { (void)f.get_uint("neg"); });
  EXPECT_NE(e.find("key 'neg'"), std::string::npos) << e;
  EXPECT_EQ(f.get_int("neg"), -1);
  EXPECT_EQ(f.get_float("neg"), -1.0);
  e = error_of([&] { (void)f.get_int("huge"); });
  EXPECT_NE(e.find("key 'huge'"), std::string::npos) << e;
  e = error_of([&] { (void)f.get_string_array("ints"); });
  EXPECT_NE(e.find("array of strings"), std::string::npos) << e;
  EXPECT_NE(e.find("uint32"), std::string::npos) << e;
  EXPECT_EQ(f.get_float_array("ints"), std::vector<float>{5.0f});
  e = error_of([&] { (void)f.get_int_array("strs"); });
  EXPECT_NE(e.find("key 'strs'"), std::string::npos) << e;
  e = error_of([&] { (void)f.get_bool("s"); });
  EXPECT_NE(e.find("key 's'"), std::string::npos) << e;
  EXPECT_THROW((void)f.get_string("neg"), Error);
  EXPECT_THROW((void)f.get_float("s"), Error);
}

TEST(KnownAnswer, VersionTwoAndNoTrailingPadding) {
  // A vocabulary-only file may end right after its metadata, before the aligned data section.
  ByteBuilder b;
  b.header(0, 1, /*version=*/2).key("k", 0).u8(9);
  const File f = File::parse(b.span());
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.get_uint("k"), 9u);
  EXPECT_EQ(f.data_offset(), 64u);  // header 24 + key 8+1+4+1 = 38, rounded up to 32
  EXPECT_EQ(f.file_size(), b.size());
  // The smallest file: a header and nothing else.
  ByteBuilder empty;
  empty.header(0, 0);
  EXPECT_EQ(File::parse(empty.span()).metadata().size(), 0u);
}

TEST(RealFile, LlamaSpmVocabulary) {
  const std::string path = maas::test::shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf";
  const File f = File::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.file_size(), std::filesystem::file_size(path));
  EXPECT_EQ(f.metadata().size(), 22u);  // the header's kv count, read off the file with xxd
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.metadata()[0].first, "general.architecture");
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.has_value());
  ASSERT_EQ(tokens->size(), 32000u);
  EXPECT_EQ((*tokens)[0], "<unk>");
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ((*tokens)[2], "</s>");
  EXPECT_EQ((*tokens)[3], "<0x00>");
  EXPECT_EQ((*tokens)[259], "\xe2\x96\x81\xe2\x96\x81");  // "▁▁", the first merge
  EXPECT_EQ(f.get_float_array("tokenizer.ggml.scores")->size(), 32000u);
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type")->size(), 32000u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(f.get_bool("tokenizer.ggml.add_eos_token"), false);  // the file's last key
  EXPECT_EQ(f.metadata().back().first, "tokenizer.ggml.add_eos_token");
  const std::string shown = f.find("tokenizer.ggml.tokens")->to_string(3);
  EXPECT_EQ(shown, R"(["<unk>", "<s>", "</s>", ... (32000 items)])");
}

TEST(RealFile, Gpt2Vocabulary) {
  const File f = File::open(maas::test::shared_dir() + "/vocab/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens")->size(), 50257u);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.merges")->size(), 50000u);
}

TEST(OpenErrors, NameThePathAndTheProblem) {
  const std::string dir = maas::test::scratch_dir();
  std::string e = error_of([&] { File::open(dir + "/missing.gguf"); });
  EXPECT_EQ(e.rfind("gguf: " + dir + "/missing.gguf: ", 0), 0u) << e;
  EXPECT_NE(e.find("No such file"), std::string::npos) << e;

  e = error_of([&] { File::open(dir); });
  EXPECT_NE(e.find(dir), std::string::npos) << e;
  EXPECT_NE(e.find("directory"), std::string::npos) << e;

  maas::test::write_file(dir + "/empty.gguf", "");
  e = error_of([&] { File::open(dir + "/empty.gguf"); });
  EXPECT_NE(e.find("empty.gguf"), std::string::npos) << e;
  EXPECT_NE(e.find("empty"), std::string::npos) << e;

  const std::string real =
      maas::test::read_file(maas::test::shared_dir() + "/vocab/ggml-vocab-llama-spm.gguf");
  maas::test::write_file(dir + "/cut.gguf", real.substr(0, 5000));
  e = error_of([&] { File::open(dir + "/cut.gguf"); });
  EXPECT_EQ(e.rfind("gguf: " + dir + "/cut.gguf: key 'tokenizer.ggml.tokens': truncated", 0), 0u)
      << e;

  maas::test::write_file(dir + "/text.gguf", "hello world, not a model\n");
  e = error_of([&] { File::open(dir + "/text.gguf"); });
  EXPECT_NE(e.find("magic"), std::string::npos) << e;

  e = error_of([&] { File::open("/dev/null"); });
  EXPECT_NE(e.find("regular file"), std::string::npos) << e;

  // A FIFO with no writer: refused at once instead of blocking in open().
  ASSERT_EQ(::mkfifo((dir + "/fifo").c_str(), 0600), 0);
  e = error_of([&] { File::open(dir + "/fifo"); });
  EXPECT_NE(e.find("regular file"), std::string::npos) << e;
}

}  // namespace
}  // namespace maas::gguf
