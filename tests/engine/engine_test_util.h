// Shared by the engine tests: the stories260K model converted once, and helpers that run
// requests to completion and collect what they produced.
#pragma once

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "convert/convert.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "support/test_util.h"

namespace maas::test {

struct StoriesModel {
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<tokenizer::Tokenizer> tok;
};

// stories260K from ../shared, converted to GGUF in the scratch directory of the test that first
// asks, its matrices re-encoded as `type` unless empty (F32 as converted).
inline StoriesModel load_stories(const std::string& type) {
  const std::string dir = shared_dir() + "/models/stories260K";
  std::string path = scratch_dir() + "/stories260K.gguf";
  convert::llama2c_to_gguf(dir + "/stories260K.bin", dir + "/tok512.bin", path, {});
  if (!type.empty()) {
    const std::string in = path;
    path = scratch_dir() + "/stories260K-" + type + ".gguf";
    convert::QuantizeOptions q;
    q.type = type;
    convert::quantize_model(in, path, q);
  }
  StoriesModel s;
  s.file = std::make_unique<gguf::File>(gguf::File::open(path));
  s.model = model::Model::load(*s.file);
  s.tok = tokenizer::Tokenizer::from_gguf(*s.file);
  return s;
}

// Once per test binary.
inline const StoriesModel& stories() {
  static const StoriesModel m = load_stories("");
  return m;
}

// The same model with F16 matrices: on CPUs with AMX-BF16 its prompt tokens get the tile
// unit's arithmetic, its generated tokens the 16-chain one (tensor::TokenKind).
inline const StoriesModel& stories_f16() {
  static const StoriesModel m = load_stories("f16");
  return m;
}

// 32 prompts of different lengths, from a few words to a few hundred tokens.
inline std::vector<std::string> prompts() {
  const std::vector<std::string> starts = {
      "Once upon a time",
      "Lily and Tom went to the park",
      "The big dog",
      "One day",
      "There was a little bird who",
      "Sam had a red ball",
      "The sun was hot",
      "Mom said",
  };
  std::vector<std::string> out;
  std::mt19937 rng(3);
  for (int i = 0; i < 32; ++i) {
    std::string p = starts[static_cast<size_t>(i) % starts.size()];
    const int extra = static_cast<int>(rng() % 4) * (i % 5 == 0 ? 30 : 3);
    for (int w = 0; w < extra; ++w) p += w % 7 == 6 ? ". They" : " played and";
    out.push_back(p);
  }
  return out;
}

// Request i of a test: 20 to 69 tokens, greedy or sampled with its own seed.
inline engine::Request make_request(const StoriesModel& m, const std::string& prompt, int i,
                                    bool seeded) {
  engine::Request r;
  r.prompt = m.tok->encode(prompt, true, false);
  r.max_tokens = 20 + (i * 7) % 50;
  if (seeded) {
    r.sampling.temperature = 0.9f;
    r.sampling.top_p = 0.95f;
    r.seed = 1000 + static_cast<uint64_t>(i);
  } else {
    r.sampling.temperature = 0;
  }
  return r;
}

struct Result {
  std::vector<int32_t> tokens;
  std::vector<engine::TokenOutput> outputs;
  std::string text;
  engine::FinishReason finish = engine::FinishReason::None;
  engine::Usage usage;
  std::vector<engine::TokenOutput> prompt_logprobs;
};

// Moves whatever the handle has into res (choice 0 only).
inline void drain(engine::RequestHandle& h, Result& res) {
  std::vector<engine::Output> outs;
  h.try_next(outs);
  for (auto& o : outs) {
    for (auto& t : o.tokens) {
      res.tokens.push_back(t.token);
      res.outputs.push_back(t);
    }
    res.text += o.text;
    if (o.finish != engine::FinishReason::None) res.finish = o.finish;
  }
  if (h.finished()) {
    res.usage = h.usage();
    res.prompt_logprobs = h.prompt_logprobs();
  }
}

// Submits one request to an engine driven on this thread and steps until it is done.
inline Result run_alone(engine::Engine& e, const engine::Request& r) {
  auto h = e.submit(r);
  Result res;
  while (!h->finished()) {
    e.step();
    drain(*h, res);
  }
  drain(*h, res);
  return res;
}

}  // namespace maas::test
