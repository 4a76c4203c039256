#include <cstdio>
#include <exception>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"maas: Model-as-a-Service: runs GGUF language models on the CPU"};
  app.require_subcommand(1);
  int exit_code = 0;
  maas::cli::add_run_command(app, exit_code);
  maas::cli::add_tokenize_command(app, exit_code);
  maas::cli::add_info_command(app, exit_code);
  maas::cli::add_convert_command(app, exit_code);
  maas::cli::add_synth_command(app, exit_code);
  maas::cli::add_quantize_command(app, exit_code);
  maas::cli::add_bench_command(app, exit_code);
  maas::cli::add_bench_serve_command(app, exit_code);
  maas::cli::add_serve_command(app, exit_code);
  maas::cli::add_keys_command(app, exit_code);
  maas::cli::add_tenants_command(app, exit_code);
  maas::cli::add_usage_command(app, exit_code);
  maas::cli::add_models_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "maas: error: %s\n", e.what());
    return 1;
  }
  return exit_code;
}
