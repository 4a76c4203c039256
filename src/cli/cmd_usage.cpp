// `maas usage`: the usage ledger by tenant, model and UTC day.
#include <fmt/format.h>

#include <cstdio>
#include <ctime>
#include <iomanip>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "platform/store.h"

namespace maas::cli {

namespace {

platform::UnixMillis parse_day(const std::string& s) {
  std::tm tm{};
  std::istringstream in(s);
  in >> std::get_time(&tm, "%Y-%m-%d");
  if (in.fail() || in.peek() != EOF) {
    throw std::runtime_error(fmt::format("'{}' is not a day (YYYY-MM-DD, UTC)", s));
  }
  return static_cast<platform::UnixMillis>(timegm(&tm)) * 1000;
}

}  // namespace

void add_usage_command(CLI::App& app, int& exit_code) {
  struct Opts {
    std::string data_dir, database, tenant, from, to;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("usage", "Show the usage ledger by tenant, model and day");
  cmd->add_option("--data-dir", o->data_dir,
                  "State directory (default: $MAAS_DATA_DIR, else ~/.local/share/maas)");
  cmd->add_option("--database", o->database,
                  "PostgreSQL URL, postgresql://user:password@host/db (default: "
                  "$MAAS_DATABASE_URL; none: SQLite in the state directory)");
  cmd->add_option("--tenant", o->tenant, "Only this tenant");
  cmd->add_option("--from", o->from, "First UTC day, YYYY-MM-DD (default: 30 days ago)");
  cmd->add_option("--to", o->to, "Last UTC day, YYYY-MM-DD (default: today)");
  cmd->add_flag("--json", o->json, "One JSON object per line");
  cmd->callback([o, &exit_code] {
    auto store = platform::open_store(o->data_dir, o->database);
    const auto now = platform::now_millis();
    const auto day = int64_t{86400000};
    const auto to = o->to.empty() ? platform::utc_day_start(now) + day : parse_day(o->to) + day;
    const auto from =
        o->from.empty() ? platform::utc_day_start(now) - 29 * day : parse_day(o->from);
    if (from >= to) throw std::runtime_error("--from is after --to");
    std::optional<std::string> tenant;
    if (!o->tenant.empty()) tenant = o->tenant;
    const auto rows = store->usage_by_model_day(tenant, from, to);
    if (!o->json) {
      std::printf("%-10s %-16s %-24s %9s %12s %12s %12s\n", "DAY", "TENANT", "MODEL", "REQUESTS",
                  "PROMPT", "CACHED", "COMPLETION");
    }
    for (const auto& r : rows) {
      if (o->json) {
        const nlohmann::json j = {{"day", r.day},
                                  {"tenant", r.tenant},
                                  {"model", r.model},
                                  {"requests", r.requests},
                                  {"prompt_tokens", r.prompt_tokens},
                                  {"cached_tokens", r.cached_tokens},
                                  {"completion_tokens", r.completion_tokens}};
        std::printf("%s\n",
                    j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      } else {
        std::printf("%-10s %-16s %-24s %9lld %12lld %12lld %12lld\n", r.day.c_str(),
                    r.tenant.c_str(), r.model.c_str(), static_cast<long long>(r.requests),
                    static_cast<long long>(r.prompt_tokens),
                    static_cast<long long>(r.cached_tokens),
                    static_cast<long long>(r.completion_tokens));
      }
    }
    exit_code = 0;
  });
}

}  // namespace maas::cli
