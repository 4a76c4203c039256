// Subcommands of the maas binary. Each registers its options on the app and returns the exit
// code through the callback it installs.
#pragma once

#include <CLI/CLI.hpp>

namespace maas::cli {

void add_run_command(CLI::App& app, int& exit_code);
void add_tokenize_command(CLI::App& app, int& exit_code);
void add_info_command(CLI::App& app, int& exit_code);
void add_convert_command(CLI::App& app, int& exit_code);
void add_synth_command(CLI::App& app, int& exit_code);
void add_quantize_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);
void add_bench_serve_command(CLI::App& app, int& exit_code);
void add_serve_command(CLI::App& app, int& exit_code);
void add_keys_command(CLI::App& app, int& exit_code);
void add_tenants_command(CLI::App& app, int& exit_code);
void add_usage_command(CLI::App& app, int& exit_code);
void add_models_command(CLI::App& app, int& exit_code);

// --data-dir and --database on a command that opens the store (platform::open_store).
void add_store_options(CLI::App* cmd, std::string* data_dir, std::string* database);
// --fair-chunk and --fair-step-ms (engine::EngineConfig::fair_prompt_chunk, fair_step_ms).
void add_fair_options(CLI::App* cmd, int* fair_chunk, double* fair_step_ms);
// --mmap / --no-mmap: map the model file or read it into memory; *mmap holds the default
// (servers and benchmarks read, one-shot `maas run` maps).
void add_mmap_option(CLI::App* cmd, bool* mmap);

}  // namespace maas::cli
