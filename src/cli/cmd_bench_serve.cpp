// `maas bench-serve`: many concurrent clients against the serving engine, in process. Reports
// aggregate generated tokens/s and time to first token (TTFT) percentiles.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "cli/commands.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace maas::cli {

namespace {

struct BenchServeOptions {
  std::string model_path;
  int clients = 16, prompt_words = 100, tokens = 64, requests_per_client = 1, threads = 0;
  int shared_prefix = 0;  // percent of each prompt's words that all prompts share
  int max_running = 32, token_budget = 256;
  std::string kv_type = "f16";
  bool no_prefix_cache = false, json = false, no_mmap = false;
};

// Everyday words, so that prompts tokenize like text (several tokens per word at times).
constexpr const char* kWords[] = {
    "the",     "little",   "girl",   "walked", "to",       "park",  "with",    "her",
    "dog",     "and",      "saw",    "a",      "big",      "red",   "ball",    "under",
    "tree",    "she",      "wanted", "play",   "but",      "it",    "was",     "too",
    "high",    "so",       "asked",  "mother", "for",      "help",  "they",    "laughed",
    "ran",     "home",     "happy",  "sun",    "bright",   "warm",  "morning", "friends",
    "garden",  "flowers",  "bird",   "sang",   "song",     "river", "boat",    "fish",
    "jumped",  "over",     "water",  "cold",   "cat",      "slept", "on",      "mat",
    "kitchen", "cake",     "sweet",  "shared", "everyone", "night", "stars",   "moon",
    "dreamed", "castle",   "king",   "queen",  "forest",   "path",  "stone",   "window",
    "rain",    "umbrella", "yellow", "green",  "blue",     "train", "station", "ticket",
    "city",    "market",   "bread",  "apple",  "orange"};

std::string random_words(std::mt19937& rng, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    if (i > 0) s += ' ';
    s += kWords[rng() % std::size(kWords)];
  }
  return s;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(rank);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

void bench_serve(const BenchServeOptions& o) {
  auto file =
      gguf::File::open(o.model_path, o.no_mmap ? gguf::File::Load::Copy : gguf::File::Load::Map);
  auto tok = tokenizer::Tokenizer::from_gguf(file);
  auto model = model::Model::load(file);
  engine::EngineConfig config;
  config.max_running = o.max_running;
  config.token_budget = o.token_budget;
  config.threads = o.threads;
  config.kv_type = model::kv_type_from_name(o.kv_type);
  config.prefix_cache = !o.no_prefix_cache;
  config.max_context = std::min<int64_t>(model->hparams().n_ctx_train, 4096);
  engine::Engine eng(*model, *tok, config);

  // Prompts: the shared part is the same for every request, the rest unique per request.
  const int shared_words = o.prompt_words * o.shared_prefix / 100;
  std::mt19937 shared_rng(12345);
  const std::string shared = random_words(shared_rng, shared_words);
  auto prompt_for = [&](int client, int round) {
    std::mt19937 rng(static_cast<uint32_t>(1000 + client * 7919 + round * 104729));
    std::string p = shared;
    const std::string rest = random_words(rng, o.prompt_words - shared_words);
    if (!p.empty() && !rest.empty()) p += ' ';
    return p + rest;
  };

  struct Sample {
    double ttft = 0, e2e = 0;
    int64_t prompt = 0, cached = 0, generated = 0;
  };
  std::vector<std::vector<Sample>> samples(static_cast<size_t>(o.clients));
  eng.start();
  const auto t0 = engine::Clock::now();
  std::vector<std::thread> clients;
  std::string failure;
  std::mutex failure_mu;
  for (int c = 0; c < o.clients; ++c) {
    clients.emplace_back([&, c] {
      for (int r = 0; r < o.requests_per_client; ++r) {
        engine::Request req;
        req.prompt = tok->encode(prompt_for(c, r), true, false);
        req.max_tokens = o.tokens;
        req.ignore_eos = true;  // every request generates exactly `tokens`
        req.sampling.temperature = 0;
        try {
          auto h = eng.submit(req);
          std::vector<engine::Output> outs;
          while (h->next(outs)) outs.clear();
          const auto done = engine::Clock::now();
          Sample s;
          const auto first = h->first_token_at().value_or(done);
          s.ttft = std::chrono::duration<double>(first - h->submitted_at()).count();
          s.e2e = std::chrono::duration<double>(done - h->submitted_at()).count();
          const auto u = h->usage();
          s.prompt = u.prompt_tokens;
          s.cached = u.cached_tokens;
          s.generated = u.completion_tokens;
          samples[static_cast<size_t>(c)].push_back(s);
        } catch (const std::exception& e) {
          std::lock_guard lock(failure_mu);
          failure = e.what();
          return;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  const double wall = std::chrono::duration<double>(engine::Clock::now() - t0).count();
  eng.stop();
  if (!failure.empty()) throw std::runtime_error("bench-serve: a request failed: " + failure);

  std::vector<double> ttft, e2e;
  int64_t prompt = 0, cached = 0, generated = 0;
  for (const auto& cs : samples) {
    for (const Sample& s : cs) {
      ttft.push_back(s.ttft);
      e2e.push_back(s.e2e);
      prompt += s.prompt;
      cached += s.cached;
      generated += s.generated;
    }
  }
  const auto st = eng.stats();
  const double tps = static_cast<double>(generated) / wall;
  fmt::print(
      "{} clients x {} request(s): {}-word prompts ({} % shared), {} tokens each, {} threads\n",
      o.clients, o.requests_per_client, o.prompt_words, o.shared_prefix, o.tokens, config.threads);
  fmt::print("prompt tokens {} (cached {}), generated {} in {:.2f} s: {:.1f} tok/s\n", prompt,
             cached, generated, wall, tps);
  fmt::print("TTFT p50 {:.3f} s, p95 {:.3f} s; end-to-end p50 {:.3f} s; {} steps, {} preemptions\n",
             percentile(ttft, 50), percentile(ttft, 95), percentile(e2e, 50), st.steps,
             st.preemptions);
  if (o.json) {
    fmt::print(
        "{{\"clients\":{},\"requests\":{},\"prompt_words\":{},\"shared_prefix\":{},\"tokens\":{},"
        "\"prompt_tokens\":{},\"cached_tokens\":{},\"generated_tokens\":{},\"seconds\":{:.4f},"
        "\"generated_tok_s\":{:.3f},\"ttft_p50_s\":{:.4f},\"ttft_p95_s\":{:.4f},"
        "\"e2e_p50_s\":{:.4f},\"steps\":{},\"preemptions\":{}}}\n",
        o.clients, o.clients * o.requests_per_client, o.prompt_words, o.shared_prefix, o.tokens,
        prompt, cached, generated, wall, tps, percentile(ttft, 50), percentile(ttft, 95),
        percentile(e2e, 50), st.steps, st.preemptions);
  }
}

}  // namespace

void add_bench_serve_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<BenchServeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench-serve", "Concurrent clients against the serving engine: throughput and TTFT");
  cmd->add_option("-m,--model", o->model_path, "GGUF model file")->required();
  cmd->add_option("--clients", o->clients, "Concurrent clients")->check(CLI::Range(1, 4096));
  cmd->add_option("--prompt-words", o->prompt_words, "Words per prompt")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--tokens", o->tokens, "Tokens to generate per request")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--requests", o->requests_per_client, "Requests per client, one after another")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--shared-prefix", o->shared_prefix, "Percent of prompt words all share")
      ->check(CLI::Range(0, 100));
  cmd->add_option("-t,--threads", o->threads, "Compute threads (0: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-running", o->max_running, "Most sequences per batch")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--token-budget", o->token_budget, "Tokens per engine step")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--kv-type", o->kv_type, "KV cache storage: f16, q8_0 or f32");
  cmd->add_flag("--no-prefix-cache", o->no_prefix_cache, "Disable prefix caching");
  cmd->add_flag("--no-mmap", o->no_mmap,
                "Read the weights into memory instead of mapping the file");
  cmd->add_flag("--json", o->json, "Also print one JSON object on the last line");
  cmd->callback([o, &exit_code] {
    bench_serve(*o);
    exit_code = 0;
  });
}

}  // namespace maas::cli
