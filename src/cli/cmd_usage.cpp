// `maas usage`: the usage ledger by tenant, model and UTC day.
#include <fmt/format.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "platform/admin_api.h"
#include "platform/store.h"

namespace maas::cli {

namespace {

// A UTC day: the platform's date parser, without a time of day.
platform::UnixMillis parse_day(const std::string& s) {
  if (s.size() != 10) {
    throw std::runtime_error(fmt::format("'{}' is not a day (YYYY-MM-DD, UTC)", s));
  }
  return platform::parse_utc_time(s);
}

}  // namespace

void add_usage_command(CLI::App& app, int& exit_code) {
  struct Opts {
    std::string data_dir, database, tenant, from, to;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("usage", "Show the usage ledger by tenant, model and day");
  add_store_options(cmd, &o->data_dir, &o->database);
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
