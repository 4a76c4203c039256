// The broken-file suite: truncations, absurd counts, bad offsets, unknown ids and bad header fields
// must each fail with a gguf::Error that names the problem, never crash or allocate wildly.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "gguf/byte_builder.h"
#include "gguf/gguf.h"

namespace maas::gguf {
namespace {

using test::ByteBuilder;

constexpr uint64_t kHuge = uint64_t{1} << 62;

// Parses bytes expecting failure; the message must start with "gguf: " and contain every needle.
void expect_error(std::span<const uint8_t> bytes, std::initializer_list<std::string_view> needles) {
  try {
    (void)File::parse(bytes);
    ADD_FAILURE() << "parsed without error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("gguf: ", 0), 0u) << msg;
    for (std::string_view n : needles) {
      EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    }
  }
}

// A valid file with several kinds of metadata and three tensors, written by the writer.
std::vector<uint8_t> valid_file() {
  Writer w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set("tokenizer.ggml.tokens", Value::strings({"<unk>", "a", "bc"}));
  w.set("nested", Value(Array{ValueType::ARRAY, {Value::int32s({1, 2})}}));
  w.set_bool("flag", true);
  std::vector<uint8_t> q(2 * 18, 0x11), f(4 * 3, 0x22), k(144, 0x33);
  w.add_tensor("blk.0.attn_q.weight", TensorType::Q4_0, {32, 2}, q);
  w.add_tensor("output_norm.weight", TensorType::F32, {3}, f);
  w.add_tensor("blk.1.ffn_down.weight", TensorType::Q4_K, {256}, k);
  return w.to_bytes();
}

TEST(BrokenFile, BaselineIsValid) {
  const std::vector<uint8_t> bytes = valid_file();
  const File f = File::parse(bytes);
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().size(), 6u);
}

TEST(BrokenFile, EveryTruncationFailsWithAMessage) {
  const std::vector<uint8_t> bytes = valid_file();
  const File whole = File::parse(bytes);
  const uint64_t data_offset = whole.data_offset();
  std::vector<size_t> cuts;
  for (size_t n = 0; n < data_offset; ++n) cuts.push_back(n);
  // Inside each tensor's data: at its start, one byte in, and one byte short of its end.
  for (const TensorInfo& t : whole.tensors()) {
    const size_t start = data_offset + t.offset;
    for (size_t n : {start, start + 1, start + t.n_bytes - 1}) cuts.push_back(n);
  }
  for (size_t n : cuts) {
    SCOPED_TRACE(n);
    // An exactly sized heap copy, so that the sanitizers catch any read past the end.
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    cut.shrink_to_fit();
    try {
      (void)File::parse(cut);
      ADD_FAILURE() << "truncated file parsed";
    } catch (const Error& e) {
      const std::string msg = e.what();
      if (n == 0) {
        EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
      } else if (n >= data_offset) {
        // The header is whole; a tensor's data is missing.
        EXPECT_NE(msg.find("extends past end of file"), std::string::npos) << msg;
        EXPECT_NE(msg.find("tensor '"), std::string::npos) << msg;
      } else {
        const bool truncated = msg.find("truncated") != std::string::npos;
        const bool past_end = msg.find("extends past end of file") != std::string::npos;
        EXPECT_TRUE(truncated || past_end) << msg;
      }
    }
  }
}

TEST(BrokenFile, SingleByteCorruptionsNeverCrash) {
  const std::vector<uint8_t> bytes = valid_file();
  const uint64_t data_offset = File::parse(bytes).data_offset();
  size_t failures = 0;
  for (size_t i = 0; i < data_offset; ++i) {
    for (uint8_t x : {uint8_t{0x00}, uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      std::vector<uint8_t> bad = bytes;
      bad[i] = x;
      try {
        const File f = File::parse(bad);
        for (const auto& kv : f.metadata()) (void)kv.second.to_string();
      } catch (const Error& e) {
        ++failures;
        EXPECT_GT(std::string(e.what()).size(), 6u);
      }
    }
  }
  EXPECT_GT(failures, data_offset);  // most corruptions are caught, none crashed
}

TEST(BrokenFile, AbsurdCountsFailFastWithoutAllocating) {
  const auto start = std::chrono::steady_clock::now();
  {
    ByteBuilder b;
    b.header(0, kHuge).key("a", 0).u8(1);
    expect_error(b.span(), {"truncated", "metadata count 4611686018427387904"});
  }
  {
    ByteBuilder b;
    b.header(kHuge, 0);
    expect_error(b.span(), {"truncated", "tensor count"});
  }
  {
    ByteBuilder b;
    b.header(0, 1).u64(uint64_t{1} << 63).raw("abc").fill(8, 0);
    expect_error(b.span(), {"metadata #0", "truncated", "key of length 9223372036854775808"});
  }
  {
    ByteBuilder b;
    b.header(0, 1).key("general.name", 8).u64(uint64_t{1} << 63).raw("abc");
    expect_error(b.span(), {"key 'general.name'", "truncated", "string"});
  }
  {
    ByteBuilder b;
    b.header(0, 1).key("general.name", 8).u64(5).raw("abc");  // 2 bytes short
    expect_error(b.span(), {"key 'general.name'", "truncated", "needs 5 bytes"});
  }
  for (uint32_t elem : {0u, 6u, 8u, 9u, 12u}) {
    SCOPED_TRACE(elem);
    ByteBuilder b;
    b.header(0, 1).key("tokenizer.ggml.tokens", 9).u32(elem).u64(uint64_t{1} << 60).u64(0);
    expect_error(b.span(), {"key 'tokenizer.ggml.tokens'", "truncated", "array count"});
  }
  {
    // An array of a million uint8 in a file of 100 bytes.
    ByteBuilder b;
    b.header(0, 1).key("x", 9).u32(0).u64(1000000).fill(60, 0);
    expect_error(b.span(), {"key 'x'", "array count 1000000"});
  }
  {
    // Nested: the outer count fits, an inner one does not.
    ByteBuilder b;
    b.header(0, 1).key("x", 9).u32(9).u64(1).u32(10).u64(kHuge);
    expect_error(b.span(), {"key 'x'", "array count"});
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(BrokenFile, TotalArrayItemsAreCapped) {
  // 2^24 + 1 one-byte items fit in the file but would decode to hundreds of megabytes of Values.
  const uint64_t n = (uint64_t{1} << 24) + 1;
  ByteBuilder b;
  b.header(0, 1).key("big", 9).u32(0).u64(n);
  b.b.resize(b.b.size() + n, 0);
  expect_error(b.span(), {"key 'big'", "exceeds the limit of 16777216 array items"});
}

// One tensor after a valid metadata entry; alignment 32.
std::vector<uint8_t> one_tensor(const std::vector<uint64_t>& dims, uint32_t type, uint64_t offset,
                                size_t data_bytes = 64) {
  ByteBuilder b;
  b.header(1, 1).key("general.architecture", 8).str("llama");
  b.tensor_info("blk.0.attn_q.weight", dims, type, offset);
  b.pad_to(32).fill(data_bytes, 1);
  return b.b;
}

TEST(BrokenFile, BadTensorInfos) {
  EXPECT_NO_THROW(File::parse(one_tensor({16}, 0, 0)));
  expect_error(one_tensor({}, 0, 0), {"tensor 'blk.0.attn_q.weight'", "n_dims 0"});
  expect_error(one_tensor({1, 1, 1, 1, 1}, 0, 0), {"tensor 'blk.0.attn_q.weight'", "n_dims 5"});
  expect_error(one_tensor({4, 0}, 0, 0), {"tensor 'blk.0.attn_q.weight'", "dimension 1 is 0"});
  expect_error(one_tensor({0}, 0, 0), {"dimension 0 is 0"});
  expect_error(one_tensor({uint64_t{1} << 32, uint64_t{1} << 32, 2}, 0, 0),
               {"tensor 'blk.0.attn_q.weight'", "4294967296 x 4294967296 x 2", "overflow"});
  // 2^62 f32 elements fit a uint64 count but not a byte size.
  expect_error(one_tensor({kHuge}, 0, 0), {"size in bytes", "overflows"});
  // A huge but representable size is simply past the end.
  expect_error(one_tensor({uint64_t{1} << 40, 4}, 0, 0), {"extends past end of file"});
  expect_error(one_tensor({33}, 2, 0),
               {"tensor 'blk.0.attn_q.weight'", "row length 33", "q4_0 block size 32"});
  expect_error(one_tensor({128, 2}, 12, 0), {"row length 128", "q4_k block size 256"});
  // The n_dims field itself absurd: caught before reading dims.
  {
    ByteBuilder b;
    b.header(1, 0).str("t").u32(0xffffffff).u64(1).u64(1).fill(16, 0);
    expect_error(b.span(), {"tensor 't'", "n_dims 4294967295"});
  }
  // A tensor name length past the end.
  {
    ByteBuilder b;
    b.header(1, 0).u64(uint64_t{1} << 63);
    b.fill(40, 0);
    expect_error(b.span(), {"tensor #0", "truncated", "tensor name"});
  }
}

TEST(BrokenFile, BadTensorOffsets) {
  // Data section is 64 bytes; the tensor is 16 f32 = 64 bytes.
  expect_error(one_tensor({16}, 0, 32),
               {"tensor 'blk.0.attn_q.weight'", "extends past end of file", "64 bytes", "(size "});
  expect_error(one_tensor({16}, 0, 1),
               {"tensor 'blk.0.attn_q.weight'", "offset 1", "not a multiple of the alignment 32"});
  expect_error(one_tensor({16}, 0, 48), {"not a multiple of the alignment 32"});
  // Offsets near 2^64 must not wrap around into the file.
  expect_error(one_tensor({16}, 0, ~uint64_t{31}), {"extends past end of file"});
  expect_error(one_tensor({16}, 0, ~uint64_t{31} - 1024), {"extends past end of file"});
  // The message gives the absolute offset, the size and the file size.
  try {
    (void)File::parse(one_tensor({16}, 0, 0, 63));
    ADD_FAILURE();
  } catch (const Error& e) {
    const std::string msg = e.what();
    const std::vector<uint8_t> ok = one_tensor({16}, 0, 0);
    const uint64_t start = File::parse(ok).data_offset();
    EXPECT_EQ(msg, "gguf: tensor 'blk.0.attn_q.weight': data [offset " + std::to_string(start) +
                       ", 64 bytes] extends past end of file (size " + std::to_string(start + 63) +
                       ")");
  }
}

TEST(BrokenFile, OverlappingAndDuplicateTensorsAreRefused) {
  ByteBuilder b;
  b.header(2, 0);
  b.tensor_info("a", {16}, 0, 0).tensor_info("b", {8}, 0, 32);  // a covers [0, 64)
  b.pad_to(32).fill(128, 0);
  expect_error(b.span(), {"tensor 'b'", "overlaps tensor 'a'"});

  ByteBuilder same;
  same.header(2, 0);
  same.tensor_info("a", {8}, 0, 0).tensor_info("b", {8}, 0, 0);
  same.pad_to(32).fill(64, 0);
  expect_error(same.span(), {"overlaps"});

  ByteBuilder dup;
  dup.header(2, 0);
  dup.tensor_info("w", {8}, 0, 0).tensor_info("w", {8}, 0, 32);
  dup.pad_to(32).fill(64, 0);
  expect_error(dup.span(), {"duplicate tensor name 'w'"});

  ByteBuilder adjacent;  // touching but not overlapping is fine
  adjacent.header(2, 0);
  adjacent.tensor_info("a", {8}, 0, 32).tensor_info("b", {8}, 0, 0);
  adjacent.pad_to(32).fill(64, 0);
  EXPECT_EQ(File::parse(adjacent.span()).tensor("a")->offset, 32u);
}

TEST(BrokenFile, UnknownIds) {
  for (uint32_t t : {13u, 100u, 0xffffffffu}) {
    ByteBuilder b;
    b.header(0, 1).key("general.name", t).u64(0);
    expect_error(b.span(), {"key 'general.name'", "unknown value type " + std::to_string(t)});
  }
  {
    ByteBuilder b;
    b.header(0, 1).key("arr", 9).u32(13).u64(1).u64(0);
    expect_error(b.span(), {"key 'arr'", "unknown array element type 13"});
  }
  for (uint32_t t : {4u, 5u, 31u, 36u, 1000u}) {
    expect_error(one_tensor({32}, t, 0),
                 {"tensor 'blk.0.attn_q.weight'", "unknown tensor type id " + std::to_string(t)});
  }
  {
    ByteBuilder b;
    b.header(0, 1).key("flag", 7).u8(2);
    expect_error(b.span(), {"key 'flag'", "invalid bool value 2"});
  }
}

TEST(BrokenFile, DuplicateKeysAndDeepNesting) {
  ByteBuilder dup;
  dup.header(0, 3).key("a", 4).u32(1).key("b", 4).u32(2).key("a", 5).u32(3);
  expect_error(dup.span(), {"duplicate key 'a'"});

  auto nested = [](int depth) {
    ByteBuilder b;
    b.header(0, 1).key("deep", 9);
    for (int i = 1; i < depth; ++i) b.u32(9).u64(1);  // an array holding one array
    b.u32(0).u64(0);                                  // the innermost: empty uint8 array
    return b;
  };
  EXPECT_EQ(File::parse(nested(8).span()).find("deep")->to_string(), "[[[[[[[[]]]]]]]]");
  expect_error(nested(9).span(), {"key 'deep'", "nested more than 8 levels"});
  expect_error(nested(100000).span(), {"key 'deep'", "nested"});
}

TEST(BrokenFile, BadHeaderFields) {
  {
    ByteBuilder b;
    b.raw("GGUG").u32(3).u64(0).u64(0);
    expect_error(b.span(), {"bad magic", "47 47 55 47"});
  }
  expect_error(ByteBuilder().raw("GG").span(), {"truncated", "magic"});
  expect_error(ByteBuilder().raw("GGUF").u16(3).span(), {"truncated", "version"});
  expect_error(ByteBuilder().header(0, 0, 1).span(), {"version 1 is not supported"});
  expect_error(ByteBuilder().header(0, 0, 0).span(), {"unsupported GGUF version 0"});
  expect_error(ByteBuilder().header(0, 0, 4).span(), {"unsupported GGUF version 4"});
  expect_error(ByteBuilder().header(0, 0, 0x03000000).span(), {"big-endian"});
  expect_error(ByteBuilder().raw("GGUF").u32(3).u64(0).span(), {"truncated", "metadata count"});

  for (uint32_t a : {0u, 3u, 48u, 0x80000001u, 1u << 21, 1u << 31}) {
    ByteBuilder b;
    b.header(0, 1).key("general.alignment", 4).u32(a);
    expect_error(b.span(), {"general.alignment", "not a nonzero power of two"});
  }
  {
    ByteBuilder b;
    b.header(0, 1).key("general.alignment", 10).u64(64);
    expect_error(b.span(), {"general.alignment", "must be uint32", "uint64"});
  }
  {
    ByteBuilder b;
    b.header(0, 1).key("general.alignment", 8).str("32");
    expect_error(b.span(), {"general.alignment", "must be uint32", "string"});
  }
  {
    // A valid unusual alignment moves the data section accordingly.
    ByteBuilder b;
    b.header(1, 1).key("general.alignment", 4).u32(256).tensor_info("t", {4}, 0, 0);
    b.pad_to(256).fill(16, 0);
    const File f = File::parse(b.span());
    EXPECT_EQ(f.alignment(), 256u);
    EXPECT_EQ(f.data_offset(), 256u);
  }
}

TEST(BrokenFile, HostileNamesAreEscapedInMessages) {
  ByteBuilder b;
  const std::string name = "evil\x1b[2J\n" + std::string(300, 'x');
  b.header(0, 1).key(name, 13).u64(0);
  try {
    (void)File::parse(b.span());
    ADD_FAILURE();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\x1b'), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_NE(msg.find("evil\\x1b[2J\\x0a"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(309 bytes)"), std::string::npos) << msg;
    EXPECT_LT(msg.size(), 250u) << msg;
  }
}

}  // namespace
}  // namespace maas::gguf
