// `maas run` and `maas tokenize`: load a GGUF model and generate from a prompt, or show its tokens.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <optional>
#include <stdexcept>

#include "cli/commands.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "tensor/thread_pool.h"
#include "tokenizer/tokenizer.h"

namespace maas::cli {

namespace {

void write_out(const std::string& s) {
  if (!s.empty()) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  }
}

struct RunOptions {
  RunOptions() {
    // Defaults for interactive use, as llama.cpp's; the API's defaults are OpenAI's.
    sampling.temperature = 0.8f;
    sampling.top_k = 40;
    sampling.top_p = 0.95f;
  }
  std::string model_path, prompt;
  int n_predict = 128;
  engine::SamplingParams sampling;
  uint64_t seed = 0;
  bool echo = false;
  bool stats = false;
  int threads = 0;
  int64_t n_ctx = 0;
  std::string kv_type = "f16";
  bool mmap = true;  // one-shot: a fast start matters more than decode speed
};

// Generation goes through the serving engine (one request, driven on this thread), the same
// path the server uses.
void run(const RunOptions& o) {
  auto file =
      gguf::File::open(o.model_path, o.mmap ? gguf::File::Load::Map : gguf::File::Load::Copy);
  auto tok = tokenizer::Tokenizer::from_gguf(file);
  auto model = model::Model::load_and_pack(file, nullptr);
  if (tok->n_vocab() != model->hparams().n_vocab) {
    throw std::runtime_error(
        fmt::format("{}: the tokenizer has {} tokens but the model's vocabulary has {}",
                    o.model_path, tok->n_vocab(), model->hparams().n_vocab));
  }
  engine::EngineConfig config;
  config.max_running = 1;
  config.max_context = o.n_ctx;
  config.threads = o.threads;
  config.kv_type = model::kv_type_from_name(o.kv_type);
  config.token_budget = 512;
  engine::Engine eng(*model, *tok, config);

  engine::Request req;
  req.prompt = tok->encode(o.prompt, /*add_special=*/true, /*parse_special=*/true);
  if (req.prompt.empty())
    throw std::runtime_error("the prompt is empty and the model adds no BOS token");
  const auto n_prompt = static_cast<int64_t>(req.prompt.size());
  if (n_prompt >= eng.max_context()) {
    throw std::runtime_error(
        fmt::format("the prompt has {} tokens; the context holds {}", n_prompt, eng.max_context()));
  }
  // Generation stops at the end of the context, as it always did for `run`.
  req.max_tokens = std::min<int64_t>(o.n_predict, eng.max_context() - n_prompt);
  req.sampling = o.sampling;
  req.seed = o.seed;
  if (o.echo) {
    tokenizer::StreamDecoder decoder(*tok);
    for (int32_t t : req.prompt) write_out(decoder.push(t));
    write_out(decoder.flush());
  }
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  auto handle = eng.submit(req);
  std::optional<Clock::time_point> t_first;
  std::vector<engine::Output> outs;
  while (!handle->finished()) {
    eng.step();
    outs.clear();
    handle->try_next(outs);
    for (const auto& out : outs) {
      if (!out.tokens.empty() && !t_first) t_first = Clock::now();
      write_out(out.text);
      if (out.finish == engine::FinishReason::Error) throw std::runtime_error(out.error);
    }
  }
  outs.clear();
  handle->try_next(outs);
  for (const auto& out : outs) write_out(out.text);
  write_out("\n");
  if (o.stats) {
    const auto t2 = Clock::now();
    const auto t1 = t_first.value_or(t2);
    const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
    const double decode_s = std::chrono::duration<double>(t2 - t1).count();
    const int64_t generated = handle->usage().completion_tokens;
    // The last sampled token is never evaluated, so decode ran generated - 1 forward passes.
    const int64_t decode_passes = std::max<int64_t>(0, generated - 1);
    std::fprintf(stderr,
                 "prompt: %lld tokens in %.1f ms (%.1f tok/s)\ndecode: %lld tokens in %.1f ms "
                 "(%.1f tok/s)\n",
                 static_cast<long long>(n_prompt), prefill_s * 1e3,
                 static_cast<double>(n_prompt) / prefill_s, static_cast<long long>(generated),
                 decode_s * 1e3, decode_passes > 0 ? decode_passes / decode_s : 0.0);
  }
}

}  // namespace

void add_run_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt and stream it to stdout");
  cmd->add_option("-m,--model", o->model_path, "GGUF model file")->required();
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text")->required();
  cmd->add_option("-n,--n-predict", o->n_predict, "Most tokens to generate")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--temp", o->sampling.temperature, "Temperature (0: greedy)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", o->sampling.top_k, "Keep the K most likely tokens (0: all)");
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling threshold")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-p", o->sampling.min_p, "Drop tokens below this fraction of the best")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--repeat-penalty", o->sampling.repetition_penalty,
                  "Penalty for tokens already in the prompt or output (1: off)");
  cmd->add_option("--seed", o->seed, "Random seed");
  cmd->add_option("-t,--threads", o->threads, "Threads (0: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-c,--ctx-size", o->n_ctx, "Context size (0: the model's)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--kv-type", o->kv_type, "KV cache storage: f16, q8_0 or f32");
  add_mmap_option(cmd, &o->mmap);
  cmd->add_flag("--echo", o->echo, "Print the prompt before the continuation");
  cmd->add_flag("--stats", o->stats, "Print prompt and decode speed to stderr at the end");
  cmd->callback([o, &exit_code] {
    run(*o);
    exit_code = 0;
  });
}

void add_tokenize_command(CLI::App& app, int& exit_code) {
  struct Opts {
    std::string model_path, text;
    bool no_bos = false, parse_special = false, from_stdin = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("-m,--model", o->model_path, "GGUF model or vocabulary file")->required();
  CLI::Option* text_opt = cmd->add_option("text", o->text, "Text to tokenize");
  cmd->add_flag("--no-bos", o->no_bos, "Do not add BOS/EOS tokens");
  cmd->add_flag("--parse-special", o->parse_special, "Turn special-token text into special tokens");
  cmd->add_flag("--stdin", o->from_stdin, "Read the text from standard input");
  cmd->callback([o, text_opt, &exit_code] {
    if (o->from_stdin == (text_opt->count() > 0))
      throw std::runtime_error("give either TEXT or --stdin");
    std::string text = o->text;
    if (o->from_stdin)
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    auto file = gguf::File::open(o->model_path);
    auto tok = tokenizer::Tokenizer::from_gguf(file);
    auto ids = tok->encode(text, !o->no_bos, o->parse_special);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    write_out(line + "\n");
    exit_code = 0;
  });
}

}  // namespace maas::cli
