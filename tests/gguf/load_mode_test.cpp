// File::Load::Copy reads the same file as the default mapping: identical metadata and tensor
// bytes, data in private memory, and the same errors for broken files.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "gguf/gguf.h"
#include "support/test_util.h"

namespace maas::gguf {
namespace {

TEST(LoadModeTest, CopyReadsWhatTheMappingReads) {
  Writer w;
  w.set_string("general.name", "copy test");
  w.set_u32("answer", 42);
  std::vector<float> a(1000), b(37);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.5f - 7;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i * i);
  w.add_tensor_f32("a", {100, 10}, a);
  w.add_tensor_f32("b", {37}, b);
  const std::string path = test::scratch_dir() + "/copy.gguf";
  w.write(path);

  const File mapped = File::open(path);
  const File copied = File::open(path, File::Load::Copy);
  EXPECT_EQ(copied.get_string("general.name"), "copy test");
  EXPECT_EQ(copied.get_uint("answer"), 42u);
  ASSERT_EQ(copied.tensors().size(), mapped.tensors().size());
  for (size_t i = 0; i < mapped.tensors().size(); ++i) {
    const TensorInfo& m = mapped.tensors()[i];
    const TensorInfo& c = copied.tensors()[i];
    EXPECT_EQ(c.name, m.name);
    EXPECT_EQ(c.dims, m.dims);
    ASSERT_EQ(c.n_bytes, m.n_bytes);
    EXPECT_NE(c.data, m.data);  // its own memory
    EXPECT_EQ(0, std::memcmp(c.data, m.data, c.n_bytes));
  }
  EXPECT_EQ(0, std::memcmp(copied.tensor("b")->data, b.data(), b.size() * sizeof(float)));

  // The copy is private memory: rewriting the file in place changes what the mapping shows
  // (Linux shares unmodified page-cache pages with MAP_PRIVATE mappings) but not the copy.
  {
    const std::string bytes = test::read_file(path);
    const std::string b_bytes(reinterpret_cast<const char*>(b.data()), b.size() * sizeof(float));
    const size_t at = bytes.find(b_bytes);
    ASSERT_NE(at, std::string::npos);
    FILE* f = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    const std::vector<uint8_t> junk(b_bytes.size(), 0xAB);
    std::fseek(f, static_cast<long>(at), SEEK_SET);
    std::fwrite(junk.data(), 1, junk.size(), f);
    std::fclose(f);
  }
  EXPECT_EQ(0, std::memcmp(copied.tensor("b")->data, b.data(), b.size() * sizeof(float)));
  EXPECT_EQ(mapped.tensor("b")->data[0], 0xAB) << "the mapping should see the rewrite";

  // Broken files fail the same way in both modes.
  const std::string truncated = test::scratch_dir() + "/truncated.gguf";
  const std::string bytes = test::read_file(path);
  test::write_file(truncated, bytes.substr(0, bytes.size() - 100));
  EXPECT_THROW(File::open(truncated), Error);
  EXPECT_THROW(File::open(truncated, File::Load::Copy), Error);
  EXPECT_THROW(File::open(test::scratch_dir() + "/missing.gguf", File::Load::Copy), Error);
}

// Files of several huge pages are read by several threads over equal ranges (one per core, up
// to 8): every byte must land where the mapping has it, the ranges' seams included.
TEST(LoadModeTest, ALargeCopyEqualsTheMapping) {
  Writer w;
  std::vector<float> big((size_t{23} << 20) / sizeof(float) + 12345);  // ~23 MiB, odd length
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 1000003) - 0.25f;
  w.add_tensor_f32("big", {big.size()}, big);
  const std::string path = test::scratch_dir() + "/big.gguf";
  w.write(path);
  const File mapped = File::open(path);
  const File copied = File::open(path, File::Load::Copy);
  const TensorInfo* m = mapped.tensor("big");
  const TensorInfo* c = copied.tensor("big");
  ASSERT_NE(m, nullptr);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->n_bytes, m->n_bytes);
  EXPECT_EQ(0, std::memcmp(c->data, m->data, c->n_bytes));
  EXPECT_EQ(0, std::memcmp(c->data, big.data(), c->n_bytes));
}

// File::rewrite hands out the copy's tensor data writable for one call, once; a mapped file is
// never written.
TEST(LoadModeTest, RewriteChangesOnlyACopyOnce) {
  Writer w;
  std::vector<float> a(3000, 1.5f);
  w.add_tensor_f32("a", {a.size()}, a);
  const std::string path = test::scratch_dir() + "/rewrite.gguf";
  w.write(path);
  File mapped = File::open(path);
  bool called = false;
  EXPECT_FALSE(mapped.rewrite([&](const File::WritableData&) { called = true; }));
  EXPECT_FALSE(called);
  EXPECT_FALSE(mapped.rewritten());

  File copied = File::open(path, File::Load::Copy);
  const TensorInfo& t = *copied.tensor("a");
  const uint8_t* a_outside = reinterpret_cast<const uint8_t*>(a.data());  // not the file's
  EXPECT_TRUE(copied.rewrite([&](const File::WritableData& writable) {
    uint8_t* data = writable(t.data);
    EXPECT_EQ(data, t.data);
    EXPECT_THROW(writable(a_outside), Error);
    const float two = 2.0f;
    std::memcpy(data + 4 * 2999, &two, sizeof two);
  }));
  EXPECT_TRUE(copied.rewritten());
  float last;
  std::memcpy(&last, t.data + 4 * 2999, sizeof last);
  EXPECT_EQ(last, 2.0f);
  EXPECT_FALSE(copied.rewrite([&](const File::WritableData&) { called = true; }));
  EXPECT_FALSE(called);
  EXPECT_EQ(0, std::memcmp(mapped.tensor("a")->data, a.data(), a.size() * sizeof(float)));
  // Read-only again afterwards.
  EXPECT_DEATH(const_cast<uint8_t*>(t.data)[0] = 0, "");
}

}  // namespace
}  // namespace maas::gguf
