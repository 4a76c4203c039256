// `maas bench-serve`: many concurrent clients against the serving engine, in process. Reports
// aggregate generated tokens/s and time to first token (TTFT) percentiles. With --fairness, the
// TTFT of a light tenant alone and while another tenant floods the engine.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
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
  int fair_chunk = engine::EngineConfig{}.fair_prompt_chunk;
  double fair_step_ms = engine::EngineConfig{}.fair_step_ms;
  std::string kv_type = "f16";
  bool no_prefix_cache = false, json = false, mmap = false;
  // --fairness: tenant b's `fair_clients` closed-loop clients send `requests_per_client` each,
  // alone and then while tenant a keeps `load_requests` in flight.
  bool fairness = false, no_fair_share = false;
  int fair_clients = 2, load_requests = 64;
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

// Prompts: the shared part is the same for every request, the rest unique per (client, round).
class Prompts {
 public:
  explicit Prompts(const BenchServeOptions& o)
      : words_(o.prompt_words), shared_words_(o.prompt_words * o.shared_prefix / 100) {
    std::mt19937 shared_rng(12345);
    shared_ = random_words(shared_rng, shared_words_);
  }
  std::string operator()(int client, int round) const {
    std::mt19937 rng(static_cast<uint32_t>(1000 + client * 7919 + round * 104729));
    std::string p = shared_;
    const std::string rest = random_words(rng, words_ - shared_words_);
    if (!p.empty() && !rest.empty()) p += ' ';
    return p + rest;
  }

 private:
  int words_, shared_words_;
  std::string shared_;
};

engine::Request bench_request(const tokenizer::Tokenizer& tok, const std::string& prompt,
                              int tokens) {
  engine::Request req;
  req.prompt = tok.encode(prompt, true, false);
  req.max_tokens = tokens;
  req.ignore_eos = true;  // every request generates exactly `tokens`
  req.sampling.temperature = 0;
  return req;
}

double seconds(engine::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void bench_clients(const BenchServeOptions& o, engine::Engine& eng,
                   const tokenizer::Tokenizer& tok) {
  const engine::EngineConfig& config = eng.config();
  const Prompts prompt_for(o);

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
        const engine::Request req = bench_request(tok, prompt_for(c, r), o.tokens);
        try {
          auto h = eng.submit(req);
          std::vector<engine::Output> outs;
          while (h->next(outs)) outs.clear();
          const auto done = engine::Clock::now();
          Sample s;
          const auto first = h->first_token_at().value_or(done);
          s.ttft = seconds(first - h->submitted_at());
          s.e2e = seconds(done - h->submitted_at());
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
  const double wall = seconds(engine::Clock::now() - t0);
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

// What one tenant's clients measured.
struct Flow {
  std::mutex mu;
  std::vector<double> ttft;  // of requests that ran to the end
  std::atomic<int64_t> generated{0};
  std::string failure;
};

// A closed-loop client of a tenant: `rounds` requests one after another, or until `stop`, when
// it cancels the request in flight.
void run_client(engine::Engine& eng, const tokenizer::Tokenizer& tok, const Prompts& prompts,
                const BenchServeOptions& o, const std::string& tenant, int client, int rounds,
                const std::atomic<bool>& stop, Flow& flow) {
  for (int r = 0; r < rounds && !stop.load(); ++r) {
    engine::Request req = bench_request(tok, prompts(client, r), o.tokens);
    req.tenant = tenant;
    req.cache_salt = tenant;
    try {
      auto h = eng.submit(req);
      std::vector<engine::Output> outs;
      bool cancelled = false;
      while (h->next(outs)) {
        for (const auto& out : outs) flow.generated += static_cast<int64_t>(out.tokens.size());
        outs.clear();
        if (stop.load() && !cancelled) {
          h->cancel();
          cancelled = true;
        }
      }
      const auto first = h->first_token_at();
      if (first && !cancelled) {
        std::lock_guard lock(flow.mu);
        flow.ttft.push_back(seconds(*first - h->submitted_at()));
      }
    } catch (const std::exception& e) {
      std::lock_guard lock(flow.mu);
      flow.failure = e.what();
      return;
    }
  }
}

// Runs `clients` closed-loop clients (numbered from `first_client`) of a tenant to the end.
void run_tenant(engine::Engine& eng, const tokenizer::Tokenizer& tok, const Prompts& prompts,
                const BenchServeOptions& o, const std::string& tenant, int first_client,
                int clients, int rounds, const std::atomic<bool>& stop, Flow& flow,
                std::vector<std::thread>& threads) {
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&eng, &tok, &prompts, &o, &stop, &flow, tenant, first_client, rounds, c] {
      run_client(eng, tok, prompts, o, tenant, first_client + c, rounds, stop, flow);
    });
  }
}

// Tenant b's TTFT alone, then while tenant a keeps `load_requests` requests in flight.
void bench_fairness(const BenchServeOptions& o, engine::Engine& eng,
                    const tokenizer::Tokenizer& tok) {
  const engine::EngineConfig& config = eng.config();
  const Prompts prompts(o);
  const std::atomic<bool> never{false};
  std::atomic<bool> stop_a{false};
  eng.start();
  auto run_b = [&](int first_client, Flow& flow) {
    std::vector<std::thread> threads;
    run_tenant(eng, tok, prompts, o, "b", first_client, o.fair_clients, o.requests_per_client,
               never, flow, threads);
    for (auto& t : threads) t.join();
  };
  Flow warm, alone, loaded, flood;
  {  // one request first, unmeasured: the weights are paged in, the thread pool is warm
    std::vector<std::thread> threads;
    run_tenant(eng, tok, prompts, o, "warm", 900000, 1, 1, never, warm, threads);
    threads[0].join();
  }
  auto t0 = engine::Clock::now();
  run_b(1000, alone);
  const double alone_s = seconds(engine::Clock::now() - t0);

  std::vector<std::thread> a_threads;
  run_tenant(eng, tok, prompts, o, "a", 100000, o.load_requests, 1 << 30, stop_a, flood, a_threads);
  // Measure once a's requests are all in and its first batch decodes (its prompts are done).
  const int32_t a_running = std::min(o.load_requests, config.max_running);
  while (true) {
    const auto st = eng.stats();
    if (st.running + st.waiting >= o.load_requests && flood.generated.load() >= a_running) break;
    {
      std::lock_guard lock(flood.mu);
      if (!flood.failure.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int64_t a_before = flood.generated.load();
  t0 = engine::Clock::now();
  run_b(2000, loaded);
  const double loaded_s = seconds(engine::Clock::now() - t0);
  const int64_t a_tokens = flood.generated.load() - a_before;
  stop_a = true;
  for (auto& t : a_threads) t.join();
  eng.stop();
  for (Flow* f : {&warm, &alone, &loaded, &flood}) {
    if (!f->failure.empty())
      throw std::runtime_error("bench-serve: a request failed: " + f->failure);
  }

  const auto st = eng.stats();
  const double p50_alone = percentile(alone.ttft, 50), p95_alone = percentile(alone.ttft, 95);
  const double p50_loaded = percentile(loaded.ttft, 50), p95_loaded = percentile(loaded.ttft, 95);
  const double ratio = p95_alone > 0 ? p95_loaded / p95_alone : 0;
  const double a_tps = static_cast<double>(a_tokens) / loaded_s;
  const double b_tps_alone = static_cast<double>(alone.generated.load()) / alone_s;
  const double b_tps_loaded = static_cast<double>(loaded.generated.load()) / loaded_s;
  fmt::print(
      "fairness, fair share {}: tenant b {} clients x {} requests, tenant a {} in flight; "
      "{}-word prompts, {} tokens each, max running {}, token budget {}, short steps {} ms / {} "
      "prompt tokens, {} threads\n",
      config.fair_share ? "on" : "off", o.fair_clients, o.requests_per_client, o.load_requests,
      o.prompt_words, o.tokens, config.max_running, config.token_budget, config.fair_step_ms,
      config.fair_prompt_chunk, config.threads);
  fmt::print("b alone:      TTFT p50 {:.3f} s, p95 {:.3f} s; b {:.1f} tok/s\n", p50_alone,
             p95_alone, b_tps_alone);
  // a's tokens alone say little: b takes more of the engine when it gets its turns sooner, so
  // the sum shows whether the engine as a whole lost speed.
  fmt::print(
      "b under load: TTFT p50 {:.3f} s, p95 {:.3f} s; b {:.1f} tok/s, a {:.1f} tok/s, a + b "
      "{:.1f} tok/s\n",
      p50_loaded, p95_loaded, b_tps_loaded, a_tps, a_tps + b_tps_loaded);
  auto list = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    std::string s;
    for (double x : v) s += fmt::format(" {:.2f}", x);
    return s;
  };
  fmt::print("b's TTFTs (s) alone:{}; under load:{}\n", list(alone.ttft), list(loaded.ttft));
  fmt::print(
      "b's TTFT under load / alone: p95 {:.2f} (target <= 2), p50 {:.2f}; {} preemptions ({} for "
      "fair share, {} for priority)\n",
      ratio, p50_alone > 0 ? p50_loaded / p50_alone : 0, st.preemptions, st.fair_preemptions,
      st.priority_preemptions);
  if (o.json) {
    fmt::print(
        "{{\"fair_share\":{},\"fair_prompt_chunk\":{},\"fair_step_ms\":{},"
        "\"b_clients\":{},\"b_requests\":{},\"a_in_flight\":{},\"prompt_words\":{},"
        "\"tokens\":{},\"b_ttft_p50_alone_s\":{:.4f},\"b_ttft_p95_alone_s\":{:.4f},"
        "\"b_ttft_p50_loaded_s\":{:.4f},\"b_ttft_p95_loaded_s\":{:.4f},"
        "\"ttft_p95_ratio\":{:.3f},\"a_tok_s\":{:.3f},\"b_tok_s_alone\":{:.3f},"
        "\"b_tok_s_loaded\":{:.3f},\"total_tok_s_loaded\":{:.3f},"
        "\"preemptions\":{},\"fair_preemptions\":{}}}\n",
        config.fair_share, config.fair_prompt_chunk, config.fair_step_ms, o.fair_clients,
        o.fair_clients * o.requests_per_client, o.load_requests, o.prompt_words, o.tokens,
        p50_alone, p95_alone, p50_loaded, p95_loaded, ratio, a_tps, b_tps_alone, b_tps_loaded,
        a_tps + b_tps_loaded, st.preemptions, st.fair_preemptions);
  }
}

void bench_serve(const BenchServeOptions& o) {
  auto file =
      gguf::File::open(o.model_path, o.mmap ? gguf::File::Load::Map : gguf::File::Load::Copy);
  auto tok = tokenizer::Tokenizer::from_gguf(file);
  auto model = model::Model::load(file);
  engine::EngineConfig config;
  config.max_running = o.max_running;
  config.token_budget = o.token_budget;
  config.threads = o.threads;
  config.kv_type = model::kv_type_from_name(o.kv_type);
  config.prefix_cache = !o.no_prefix_cache;
  config.max_context = std::min<int64_t>(model->hparams().n_ctx_train, 4096);
  config.fair_share = !o.no_fair_share;
  config.fair_prompt_chunk = o.fair_chunk;
  config.fair_step_ms = o.fair_step_ms;
  engine::Engine eng(*model, *tok, config);
  if (o.fairness) {
    bench_fairness(o, eng, *tok);
  } else {
    bench_clients(o, eng, *tok);
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
  add_mmap_option(cmd, &o->mmap);
  cmd->add_flag("--json", o->json, "Also print one JSON object on the last line");
  cmd->add_flag("--fairness", o->fairness,
                "Tenant b's TTFT alone and while tenant a floods the engine (--requests per b "
                "client)");
  cmd->add_option("--fair-clients", o->fair_clients, "--fairness: tenant b's closed-loop clients")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--load-requests", o->load_requests,
                  "--fairness: requests tenant a keeps in flight")
      ->check(CLI::Range(1, 100000));
  add_fair_options(cmd, &o->fair_chunk, &o->fair_step_ms);
  cmd->add_flag("--no-fair-share", o->no_fair_share,
                "Schedule by priority, then first come first served, ignoring tenants");
  cmd->callback([o, &exit_code] {
    bench_serve(*o);
    exit_code = 0;
  });
}

}  // namespace maas::cli
