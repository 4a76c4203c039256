// Model::load_and_pack: a copied file's Q8_0 matrices rearranged into 16-row panels give the same
// logits, bit for bit, as the file mapped in the row layout (prompt tokens, which reach the tile
// unit's kernels on CPUs with AMX, and generated ones, 1 and 2 threads); a mapped file is left
// alone; a rearranged file cannot be loaded a second time.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/random_model.h"
#include "support/test_util.h"
#include "tensor/thread_pool.h"

namespace maas::test {
namespace {

using tensor::WeightLayout;

std::string write_model(const RandomModel& rm, const std::string& name) {
  gguf::Writer w;
  rm.write(w, gguf::TensorType::Q8_0);
  const std::string path = scratch_dir() + "/" + name;
  w.write(path);
  return path;
}

// Logits of a 20-token prompt (kPrompt) and 4 generated tokens after it.
std::vector<float> logits(const model::Model& m, tensor::ThreadPool* pool) {
  model::Session s(m, 0, pool);
  std::vector<int32_t> prompt(20);
  std::iota(prompt.begin(), prompt.end(), 3);
  std::vector<float> all;
  s.eval(prompt, &all, tensor::TokenKind::kPrompt);
  for (int32_t tok : {7, 1, 60, 42}) {
    const std::span<const float> last = s.eval(std::span<const int32_t>(&tok, 1));
    all.insert(all.end(), last.begin(), last.end());
  }
  return all;
}

TEST(PackedWeightsTest, SameLogitsAsTheRowLayout) {
  tensor::ThreadPool two(2);
  for (bool tied : {false, true}) {
    RandomModelSpec spec;  // vocab 61: 3 panels and 13 rows after them
    spec.ff = 64;
    spec.tied = tied;
    const RandomModel rm = make_random_model(spec);
    const std::string path = write_model(rm, tied ? "tied.gguf" : "untied.gguf");
    const gguf::File mapped = gguf::File::open(path);
    const auto rows = model::Model::load(mapped);
    gguf::File copied = gguf::File::open(path, gguf::File::Load::Copy);
    const auto packed = model::Model::load_and_pack(copied, &two);
    EXPECT_EQ(rows->layers()[0].wq.layout, WeightLayout::kRows);
    for (const auto& L : packed->layers()) {
      for (const auto* w : L.matrices()) {
        EXPECT_EQ(w->layout, WeightLayout::kPanels16);
      }
    }
    EXPECT_EQ(packed->output().layout, WeightLayout::kPanels16);
    EXPECT_EQ(packed->token_embd().layout, WeightLayout::kPanels16);
    EXPECT_EQ(packed->tied_output(), tied);
    for (tensor::ThreadPool* pool : {static_cast<tensor::ThreadPool*>(nullptr), &two}) {
      const std::vector<float> want = logits(*rows, pool);
      const std::vector<float> got = logits(*packed, pool);
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), sizeof(float) * got.size()))
          << (tied ? "tied" : "untied") << ", " << (pool ? 2 : 1) << " threads";
    }
    EXPECT_THROW(model::Model::load(copied), model::Error);
    EXPECT_THROW(model::Model::load_and_pack(copied, nullptr), model::Error);
  }
}

TEST(PackedWeightsTest, AMappedFileKeepsItsRows) {
  RandomModelSpec spec;
  spec.ff = 64;
  const std::string path = write_model(make_random_model(spec), "mapped.gguf");
  gguf::File mapped = gguf::File::open(path);
  const auto m = model::Model::load_and_pack(mapped, nullptr);
  EXPECT_EQ(m->layers()[0].wq.layout, WeightLayout::kRows);
  EXPECT_FALSE(mapped.rewritten());
  EXPECT_NO_THROW(model::Model::load(mapped));
}

}  // namespace
}  // namespace maas::test
