// The options every command that opens the store shares, worded once.
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

}  // namespace maas::cli
