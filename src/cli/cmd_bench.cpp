// `maas bench`: prefill and decode speed of a model, and decode as a fraction of the machine's
// memory bandwidth (the roofline of single-stream decoding).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "cli/commands.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "tensor/membw.h"
#include "tensor/thread_pool.h"

namespace maas::cli {

namespace {

struct BenchOptions {
  std::string model_path;
  int n_prompt = 512, n_gen = 128, threads = 0, reps = 3;
  bool json = false, no_probe = false, mmap = false;
};

struct Stats {
  double median = 0, min = 0, max = 0;
};

Stats summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  Stats s;
  s.min = v.front();
  s.max = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void bench(const BenchOptions& o) {
  const auto load_start = std::chrono::steady_clock::now();
  auto file =
      gguf::File::open(o.model_path, o.mmap ? gguf::File::Load::Map : gguf::File::Load::Copy);
  tensor::ThreadPool pool(o.threads);
  auto model = model::Model::load_and_pack(file, &pool);
  const double load_seconds = seconds_since(load_start);
  int panel_matrices = 0;
  for (const auto& L : model->layers()) {
    for (const auto* m : L.matrices()) {
      panel_matrices += m->layout == tensor::WeightLayout::kPanels16 ? 1 : 0;
    }
  }
  panel_matrices += model->output().layout == tensor::WeightLayout::kPanels16 ? 1 : 0;
  const auto& hp = model->hparams();

  // Bytes of weights one decoded token reads: every layer matrix and the output matrix (the
  // embedding contributes one row).
  uint64_t weight_bytes = 0, params = 0;
  auto add = [&](const tensor::MatrixView& m) {
    weight_bytes += m.row_bytes * static_cast<uint64_t>(m.rows);
    params += static_cast<uint64_t>(m.rows * m.cols);
  };
  for (const auto& L : model->layers()) {
    for (const auto* m : L.matrices()) add(*m);
  }
  add(model->output());
  if (!model->tied_output())
    params += static_cast<uint64_t>(model->token_embd().rows * model->token_embd().cols);

  std::mt19937 rng(1234);
  auto random_tokens = [&](int n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(hp.n_vocab));
    return t;
  };
  const int64_t n_ctx = std::max<int64_t>(o.n_prompt, o.n_gen) + 1;
  {  // warm-up: page the weights in, start the threads
    model::Session warm(*model, n_ctx, &pool);
    warm.eval(random_tokens(std::min(o.n_prompt > 0 ? o.n_prompt : 1, 8)), nullptr,
              tensor::TokenKind::kPrompt);
  }
  std::vector<double> pp, tg;
  for (int r = 0; r < o.reps; ++r) {
    if (o.n_prompt > 0) {
      model::Session s(*model, n_ctx, &pool);
      const auto tokens = random_tokens(o.n_prompt);
      const auto t0 = std::chrono::steady_clock::now();
      s.eval(tokens, nullptr, tensor::TokenKind::kPrompt);
      pp.push_back(o.n_prompt / seconds_since(t0));
    }
    if (o.n_gen > 0) {
      model::Session s(*model, n_ctx, &pool);
      const auto tokens = random_tokens(o.n_gen);
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < o.n_gen; ++i)
        s.eval(std::span<const int32_t>(&tokens[static_cast<size_t>(i)], 1));
      tg.push_back(o.n_gen / seconds_since(t0));
    }
  }
  const double bw = o.no_probe ? 0.0 : tensor::measure_read_bandwidth(pool);
  const Stats pps = pp.empty() ? Stats{} : summarize(pp),
              tgs = tg.empty() ? Stats{} : summarize(tg);
  const double decode_gbps = tgs.median * static_cast<double>(weight_bytes) / 1e9;

  std::string out = fmt::format(
      "model: {} ({}, {:.3f}B matrix parameters, {:.1f} MiB streamed per decoded token)\n",
      o.model_path, hp.arch_name, static_cast<double>(params) / 1e9,
      static_cast<double>(weight_bytes) / (1 << 20));
  out += fmt::format("threads: {}, reps: {}, weights: {} in {:.2f} s", pool.size(), o.reps,
                     o.mmap ? "mapped (--mmap)" : "read into memory", load_seconds);
  if (panel_matrices > 0) out += fmt::format(", {} Q8_0 matrices in 16-row panels", panel_matrices);
  out += "\n";
  if (!pp.empty()) {
    out += fmt::format("pp{}: {:.1f} tok/s (min {:.1f}, max {:.1f})\n", o.n_prompt, pps.median,
                       pps.min, pps.max);
  }
  if (!tg.empty()) {
    out += fmt::format("tg{}: {:.2f} tok/s (min {:.2f}, max {:.2f})\n", o.n_gen, tgs.median,
                       tgs.min, tgs.max);
    out += fmt::format("decode streams {:.1f} GB/s of weights", decode_gbps);
    if (bw > 0)
      out += fmt::format(" = {:.0f}% of the measured read bandwidth ({:.1f} GB/s)",
                         100 * decode_gbps / bw, bw);
    out += "\n";
  }
  if (o.json) {
    out += fmt::format(
        "{{\"model\":\"{}\",\"arch\":\"{}\",\"mmap\":{},\"threads\":{},\"reps\":{},\"n_prompt\":{},"
        "\"n_gen\":{}"
        ","
        "\"pp_tok_s\":{:.3f},\"pp_min\":{:.3f},\"pp_max\":{:.3f},\"tg_tok_s\":{:.3f},\"tg_min\":{:."
        "3f},"
        "\"tg_max\":{:.3f},\"weight_bytes_per_token\":{},\"decode_gb_s\":{:.3f},\"mem_read_gb_s\":{"
        ":.3f},"
        "\"decode_fraction_of_bandwidth\":{:.4f}}}\n",
        o.model_path, hp.arch_name, o.mmap, pool.size(), o.reps, o.n_prompt, o.n_gen, pps.median,
        pps.min, pps.max, tgs.median, tgs.min, tgs.max, weight_bytes, decode_gbps, bw,
        bw > 0 ? decode_gbps / bw : 0.0);
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode speed of a model");
  cmd->add_option("-m,--model", o->model_path, "GGUF model")->required();
  cmd->add_option("-p,--n-prompt", o->n_prompt, "Prompt tokens for the prefill test (0: skip)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-n,--n-gen", o->n_gen, "Tokens for the decode test (0: skip)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", o->threads, "Threads (0: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-r,--reps", o->reps, "Repetitions")->check(CLI::PositiveNumber);
  add_mmap_option(cmd, &o->mmap);
  cmd->add_flag("--json", o->json, "Also print one JSON object on the last line");
  cmd->add_flag("--no-probe", o->no_probe, "Skip the memory bandwidth probe");
  cmd->callback([o, &exit_code] {
    bench(*o);
    exit_code = 0;
  });
}

}  // namespace maas::cli
