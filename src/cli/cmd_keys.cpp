// `maas keys create|ls|revoke`: tenants' API keys in the store (SQLite in the data directory, or
// PostgreSQL with --database / $MAAS_DATABASE_URL).
#include <fmt/format.h>

#include <cstdio>
#include <sstream>

#include "cli/commands.h"
#include "platform/admin_api.h"
#include "platform/store.h"

namespace maas::cli {

namespace {

std::string limit(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : "-"; }

}  // namespace

void add_keys_command(CLI::App& app, int& exit_code) {
  CLI::App* keys = app.add_subcommand("keys", "Create, list and revoke tenants' API keys");
  keys->require_subcommand(1);
  auto data_dir = std::make_shared<std::string>();
  auto database = std::make_shared<std::string>();
  add_store_options(keys, data_dir.get(), database.get());

  struct CreateOpts {
    std::string tenant, models, expires;
    std::optional<int64_t> rpm, tpm, daily, monthly;
  };
  auto c = std::make_shared<CreateOpts>();
  CLI::App* create = keys->add_subcommand("create", "Create a key (its secret is shown once)");
  create->fallthrough();  // --data-dir and --database may come after the subcommand
  create->add_option("--tenant", c->tenant, "Tenant the key belongs to (created if new)")
      ->required();
  create->add_option("--models", c->models,
                     "Comma-separated models the key may use (default: all)");
  create->add_option("--rpm", c->rpm, "Requests per minute")->check(CLI::PositiveNumber);
  create->add_option("--tpm", c->tpm, "Tokens per minute")->check(CLI::PositiveNumber);
  create->add_option("--daily-tokens", c->daily, "Tokens per UTC day")->check(CLI::PositiveNumber);
  create->add_option("--monthly-tokens", c->monthly, "Tokens per UTC month")
      ->check(CLI::PositiveNumber);
  create->add_option("--expires", c->expires, "Expiry: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)");
  create->callback([c, data_dir, database, &exit_code] {
    auto store = platform::open_store(*data_dir, *database);
    const auto now = platform::now_millis();
    platform::KeyOptions opt;
    std::stringstream ms(c->models);
    for (std::string m; std::getline(ms, m, ',');) {
      if (!m.empty()) opt.models.push_back(m);
    }
    opt.rpm = c->rpm;
    opt.tpm = c->tpm;
    opt.daily_tokens = c->daily;
    opt.monthly_tokens = c->monthly;
    if (!c->expires.empty()) opt.expires_at = platform::parse_utc_time(c->expires);
    store->ensure_tenant(c->tenant, now);
    const auto created = store->create_key(c->tenant, opt, now);
    std::printf("%s\n", created.secret.c_str());
    std::fprintf(stderr, "key %s for tenant %s: the secret above is shown only once\n",
                 created.key.id.c_str(), created.key.tenant.c_str());
    exit_code = 0;
  });

  CLI::App* ls = keys->add_subcommand("ls", "List keys (never their secrets)");
  ls->fallthrough();
  ls->callback([data_dir, database, &exit_code] {
    auto store = platform::open_store(*data_dir, *database);
    const auto now = platform::now_millis();
    std::printf("%-16s %-16s %-8s %-20s %-6s %-8s %-10s %-10s %s\n", "ID", "TENANT", "STATE",
                "CREATED", "RPM", "TPM", "DAILY", "MONTHLY", "MODELS");
    for (const auto& k : store->list_keys()) {
      const char* state = k.state(now) == platform::KeyState::kActive    ? "active"
                          : k.state(now) == platform::KeyState::kRevoked ? "revoked"
                                                                         : "expired";
      std::string models;
      for (const auto& m : k.options.models) models += (models.empty() ? "" : ",") + m;
      std::printf("%-16s %-16s %-8s %-20s %-6s %-8s %-10s %-10s %s\n", k.id.c_str(),
                  k.tenant.c_str(), state, platform::format_utc_time(k.created_at).c_str(),
                  limit(k.options.rpm).c_str(), limit(k.options.tpm).c_str(),
                  limit(k.options.daily_tokens).c_str(), limit(k.options.monthly_tokens).c_str(),
                  models.empty() ? "*" : models.c_str());
    }
    exit_code = 0;
  });

  auto revoke_id = std::make_shared<std::string>();
  CLI::App* revoke = keys->add_subcommand("revoke", "Revoke a key by its id");
  revoke->fallthrough();
  revoke->add_option("id", *revoke_id, "Key id (key_...)")->required();
  revoke->callback([data_dir, database, revoke_id, &exit_code] {
    auto store = platform::open_store(*data_dir, *database);
    if (!store->revoke_key(*revoke_id, platform::now_millis())) {
      throw std::runtime_error(fmt::format("no key has the id '{}'", *revoke_id));
    }
    std::fprintf(stderr, "key %s revoked\n", revoke_id->c_str());
    exit_code = 0;
  });
}

}  // namespace maas::cli
