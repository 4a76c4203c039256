// `maas synth` and `maas quantize`: model files for benchmarks and smaller weight types.
#include <fmt/format.h>

#include "cli/commands.h"
#include "convert/convert.h"

namespace maas::cli {

void add_synth_command(CLI::App& app, int& exit_code) {
  struct Opts {
    convert::SynthSpec spec;
    std::string out, type = "f32";
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd =
      app.add_subcommand("synth", "Write a random-weight model of a real shape (for benchmarks)");
  cmd->add_option("-o,--output", o->out, "Output GGUF file")->required();
  cmd->add_option("--arch", o->spec.arch, "llama, qwen2 or qwen3");
  cmd->add_option("--embd", o->spec.embd, "Embedding size");
  cmd->add_option("--layers", o->spec.layers, "Number of layers");
  cmd->add_option("--heads", o->spec.heads, "Attention heads");
  cmd->add_option("--kv-heads", o->spec.kv_heads, "Key/value heads");
  cmd->add_option("--ff", o->spec.ff, "Feed-forward size");
  cmd->add_option("--head-dim", o->spec.head_dim, "Head size (default embd / heads)");
  cmd->add_option("--ctx", o->spec.ctx, "Context length");
  cmd->add_option("--vocab-from", o->spec.vocab_from,
                  "GGUF file or llama2.c tokenizer.bin to take the vocabulary from")
      ->required();
  cmd->add_option("--type", o->type, "Weight type of the matrices");
  cmd->add_option("--seed", o->spec.seed, "Random seed");
  cmd->add_flag("--tied", o->spec.tied, "Share the output matrix with the token embedding");
  cmd->callback([o, &exit_code] {
    auto type = gguf::type_from_name(o->type);
    if (!type) throw convert::Error(fmt::format("unknown tensor type '{}'", o->type));
    convert::synth_model(o->spec, o->out, {*type});
    exit_code = 0;
  });
}

void add_quantize_command(CLI::App& app, int& exit_code) {
  struct Opts {
    std::string in, out;
    convert::QuantizeOptions q;
    std::vector<std::string> overrides;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd =
      app.add_subcommand("quantize", "Re-encode a GGUF model's weights into another type or mix");
  cmd->add_option("input", o->in, "Input GGUF")->required();
  cmd->add_option("output", o->out, "Output GGUF")->required();
  cmd->add_option("type", o->q.type,
                  "q4_0, q4_1, q5_0, q5_1, q8_0, q2_k..q6_k, f16, bf16, f32, or q4_k_m, q4_k_s, "
                  "q5_k_m, q5_k_s, q3_k_m")
      ->required();
  cmd->add_option("--override", o->overrides,
                  "NAME=TYPE: tensors whose name contains NAME get TYPE (repeatable)");
  cmd->callback([o, &exit_code] {
    for (const auto& ov : o->overrides) {
      const size_t eq = ov.rfind('=');
      auto type = eq == std::string::npos ? std::nullopt : gguf::type_from_name(ov.substr(eq + 1));
      if (!type || eq == 0)
        throw convert::Error(fmt::format("bad --override '{}': expected NAME=TYPE", ov));
      o->q.overrides.emplace_back(ov.substr(0, eq), *type);
    }
    convert::quantize_model(o->in, o->out, o->q);
    exit_code = 0;
  });
}

}  // namespace maas::cli
