// `maas tenants ls|set`: tenants' fair-share weights and limits in the data directory's store.
#include <fmt/format.h>

#include <cstdio>

#include "cli/commands.h"
#include "platform/admin_api.h"
#include "platform/store.h"

namespace maas::cli {

namespace {

std::string limit(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : "-"; }

}  // namespace

void add_tenants_command(CLI::App& app, int& exit_code) {
  CLI::App* tenants =
      app.add_subcommand("tenants", "List tenants, set their fair-share weights and limits");
  tenants->require_subcommand(1);
  auto data_dir = std::make_shared<std::string>();
  auto database = std::make_shared<std::string>();
  add_store_options(tenants, data_dir.get(), database.get());

  CLI::App* ls = tenants->add_subcommand("ls", "List tenants");
  ls->fallthrough();
  ls->callback([data_dir, database, &exit_code] {
    auto store = platform::open_store(*data_dir, *database);
    std::printf("%-24s %-8s %-8s %-10s %-12s %-12s %s\n", "TENANT", "WEIGHT", "RPM", "TPM", "DAILY",
                "MONTHLY", "CREATED");
    for (const auto& t : store->list_tenants()) {
      std::printf("%-24s %-8g %-8s %-10s %-12s %-12s %s\n", t.id.c_str(), t.weight,
                  limit(t.limits.rpm).c_str(), limit(t.limits.tpm).c_str(),
                  limit(t.limits.daily_tokens).c_str(), limit(t.limits.monthly_tokens).c_str(),
                  platform::format_utc_time(t.created_at).c_str());
    }
    exit_code = 0;
  });

  // Each limit: a positive number sets it, 0 removes it, absent keeps it.
  struct SetOpts {
    std::string tenant;
    std::optional<double> weight;
    std::optional<int64_t> rpm, tpm, daily, monthly;
  };
  auto o = std::make_shared<SetOpts>();
  CLI::App* set = tenants->add_subcommand(
      "set", "Create a tenant or change its weight and limits (0 removes a limit)");
  set->fallthrough();
  set->add_option("tenant", o->tenant, "Tenant id")->required();
  set->add_option("--weight", o->weight, "Fair-share weight (default 1)")
      ->check(CLI::Range(1e-6, 1e6));
  set->add_option("--rpm", o->rpm, "Requests per minute, all keys together")
      ->check(CLI::NonNegativeNumber);
  set->add_option("--tpm", o->tpm, "Tokens per minute")->check(CLI::NonNegativeNumber);
  set->add_option("--daily-tokens", o->daily, "Tokens per UTC day")->check(CLI::NonNegativeNumber);
  set->add_option("--monthly-tokens", o->monthly, "Tokens per UTC month")
      ->check(CLI::NonNegativeNumber);
  set->callback([o, data_dir, database, &exit_code] {
    auto store = platform::open_store(*data_dir, *database);
    const auto now = platform::now_millis();
    const platform::Tenant current = store->ensure_tenant(o->tenant, now);
    auto merge = [](const std::optional<int64_t>& flag, const std::optional<int64_t>& old) {
      if (!flag) return old;
      return *flag == 0 ? std::nullopt : flag;
    };
    platform::TenantLimits limits{merge(o->rpm, current.limits.rpm),
                                  merge(o->tpm, current.limits.tpm),
                                  merge(o->daily, current.limits.daily_tokens),
                                  merge(o->monthly, current.limits.monthly_tokens)};
    const auto t = store->put_tenant(o->tenant, o->weight.value_or(current.weight), limits, now);
    std::fprintf(stderr,
                 "tenant %s: weight %g, rpm %s, tpm %s, daily %s, monthly %s (a running server "
                 "applies it to the next request)\n",
                 t.id.c_str(), t.weight, limit(t.limits.rpm).c_str(), limit(t.limits.tpm).c_str(),
                 limit(t.limits.daily_tokens).c_str(), limit(t.limits.monthly_tokens).c_str());
    exit_code = 0;
  });
}

}  // namespace maas::cli
