// Options several commands share, worded once.
#include "cli/commands.h"

namespace maas::cli {

void add_store_options(CLI::App* cmd, std::string* data_dir, std::string* database) {
  cmd->add_option("--data-dir", *data_dir,
                  "State directory (default: $MAAS_DATA_DIR, else ~/.local/share/maas)");
  cmd->add_option("--database", *database,
                  "PostgreSQL URL for keys, tenants and the ledger, shared by replicas, "
                  "postgresql://user:password@host/db (default: $MAAS_DATABASE_URL; none: "
                  "SQLite in the state directory)");
}

void add_fair_options(CLI::App* cmd, int* fair_chunk, double* fair_step_ms) {
  cmd->add_option("--fair-chunk", *fair_chunk,
                  "Fewest prompt tokens of a short step (led by a tenant ahead of another or "
                  "flooding the engine; 0: no short steps)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--fair-step-ms", *fair_step_ms,
                  "Target duration of a short step (0: --fair-chunk tokens exactly)")
      ->check(CLI::Range(0.0, 1e6));
}

void add_mmap_option(CLI::App* cmd, bool* mmap) {
  cmd->add_flag("--mmap,!--no-mmap", *mmap,
                "Map the file's pages (starts faster, shares the page cache) or read the weights "
                "into memory (huge pages, Q8_0 matrices rearranged into panels: decodes 5-25% "
                "faster)");
}

}  // namespace maas::cli
