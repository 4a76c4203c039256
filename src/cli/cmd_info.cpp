// `maas info` and `maas convert`.
#include <fmt/format.h>

#include <cstdio>
#include <stdexcept>

#include "cli/commands.h"
#include "convert/convert.h"
#include "gguf/gguf.h"
#include "tensor/cpu_features.h"

namespace maas::cli {

namespace {

std::string dims_str(const std::vector<uint64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s;
}

void print_info(const std::string& path) {
  auto f = gguf::File::open(path);
  std::string out = fmt::format("file: {}\nGGUF version: {}\nsize: {} bytes\nalignment: {}\n", path,
                                f.version(), f.file_size(), f.alignment());
  out += fmt::format("\nmetadata ({} keys):\n", f.metadata().size());
  for (const auto& [key, value] : f.metadata()) {
    out += fmt::format("  {} ({}) = {}\n", key, gguf::value_type_name(value.type()),
                       value.to_string());
  }
  uint64_t total = 0;
  out += fmt::format("\ntensors ({}):\n", f.tensors().size());
  out += fmt::format("  {:<40} {:<8} {:<24} {:>14} {:>14}\n", "name", "type", "dims", "offset",
                     "bytes");
  for (const auto& t : f.tensors()) {
    out += fmt::format("  {:<40} {:<8} {:<24} {:>14} {:>14}\n", t.name, gguf::type_name(t.type),
                       dims_str(t.dims), t.offset, t.n_bytes);
    total += t.n_bytes;
  }
  out += fmt::format("\ntotal tensor data: {} bytes\n", total);
  std::fwrite(out.data(), 1, out.size(), stdout);
}

gguf::TensorType parse_type(const std::string& name) {
  auto t = gguf::type_from_name(name);
  if (!t) throw convert::Error(fmt::format("unknown tensor type '{}'", name));
  return *t;
}

}  // namespace

void add_info_command(CLI::App& app, int& exit_code) {
  auto path = std::make_shared<std::string>();
  auto cpu = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("info", "Print a GGUF file's metadata and tensor table");
  cmd->add_option("model", *path, "GGUF file");
  cmd->add_flag("--cpu", *cpu, "Print the CPU features found and the kernel target chosen");
  cmd->callback([path, cpu, &exit_code] {
    if (*cpu) {
      const std::string report = tensor::cpu_report();
      std::fwrite(report.data(), 1, report.size(), stdout);
      if (report.empty() || report.back() != '\n') std::fputc('\n', stdout);
    }
    if (!path->empty()) print_info(*path);
    if (!*cpu && path->empty()) throw std::runtime_error("give a GGUF file, or --cpu");
    exit_code = 0;
  });
}

void add_convert_command(CLI::App& app, int& exit_code) {
  CLI::App* cmd = app.add_subcommand("convert", "Convert a checkpoint into GGUF");
  cmd->require_subcommand(1);

  struct Opts {
    std::string checkpoint, tokenizer, dir, out, type = "f32";
  };
  auto o = std::make_shared<Opts>();
  CLI::App* l2c = cmd->add_subcommand("llama2c", "llama2.c checkpoint + tokenizer.bin");
  l2c->add_option("checkpoint", o->checkpoint, "llama2.c model .bin")->required();
  l2c->add_option("tokenizer", o->tokenizer, "llama2.c tokenizer .bin")->required();
  l2c->add_option("-o,--output", o->out, "Output GGUF file")->required();
  l2c->add_option("--type", o->type, "Weight type: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, ...");
  l2c->callback([o, &exit_code] {
    convert::llama2c_to_gguf(o->checkpoint, o->tokenizer, o->out, {parse_type(o->type)});
    exit_code = 0;
  });

  CLI::App* hf = cmd->add_subcommand("hf", "Hugging Face model directory (safetensors)");
  hf->add_option("dir", o->dir, "Directory with config.json, *.safetensors, tokenizer.json")
      ->required();
  hf->add_option("-o,--output", o->out, "Output GGUF file")->required();
  hf->add_option("--type", o->type, "Weight type: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, ...");
  hf->callback([o, &exit_code] {
    convert::hf_to_gguf(o->dir, o->out, {parse_type(o->type)});
    exit_code = 0;
  });
}

}  // namespace maas::cli
