// The backend-independent parts of the platform store: time helpers, key state, validation and
// choosing a backend.
#include "platform/store.h"
#include "platform/store_rules.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include <fmt/format.h>

namespace maas::platform {
namespace {

using std::chrono::days;
using std::chrono::milliseconds;
using std::chrono::sys_days;

std::chrono::year_month_day civil_day(UnixMillis t) {
  auto tp = std::chrono::sys_time<milliseconds>(milliseconds(t));
  return std::chrono::year_month_day(std::chrono::floor<days>(tp));
}

UnixMillis to_millis(sys_days d) {
  return std::chrono::duration_cast<milliseconds>(d.time_since_epoch()).count();
}

}  // namespace

UnixMillis now_millis() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string utc_day(UnixMillis t) {
  auto ymd = civil_day(t);
  return fmt::format("{:04d}-{:02d}-{:02d}", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
}

UnixMillis utc_day_start(UnixMillis t) { return to_millis(sys_days(civil_day(t))); }

UnixMillis utc_month_start(UnixMillis t) {
  auto ymd = civil_day(t);
  return to_millis(sys_days(ymd.year() / ymd.month() / std::chrono::day(1)));
}

KeyState ApiKey::state(UnixMillis now) const {
  if (revoked_at) return KeyState::kRevoked;
  if (options.expires_at && now >= *options.expires_at) return KeyState::kExpired;
  return KeyState::kActive;
}

Tenant Store::ensure_tenant(const std::string& id, UnixMillis now) {
  if (auto t = find_tenant(id)) return *t;
  return put_tenant(id, 1.0, {}, now);
}

bool ApiKey::allows_model(std::string_view model) const {
  return options.models.empty() ||
         std::find(options.models.begin(), options.models.end(), model) != options.models.end();
}

std::string resolve_data_dir(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("MAAS_DATA_DIR"); env != nullptr && *env != '\0') return env;
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return std::string(home) + "/.local/share/maas";
  }
  throw StoreError("no data directory: give --data-dir, or set MAAS_DATA_DIR or HOME");
}

std::string resolve_database_url(const std::string& database_url_flag) {
  if (!database_url_flag.empty()) return database_url_flag;
  if (const char* env = std::getenv("MAAS_DATABASE_URL"); env != nullptr) return env;
  return "";
}

std::unique_ptr<Store> open_store(const std::string& data_dir_flag,
                                  const std::string& database_url_flag) {
  const std::string url = resolve_database_url(database_url_flag);
  if (url.empty()) return open_sqlite_store(resolve_data_dir(data_dir_flag));
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
    return open_postgres_store(url);
  }
  throw StoreError(fmt::format(
      "unsupported database URL '{}': use postgresql://[user[:password]@]host[:port]/dbname, or "
      "no URL for SQLite in the data directory",
      mask_database_url(url)));
}

namespace detail {

void check_tenant_id(const std::string& id) {
  const bool ok = !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
  if (!ok) {
    throw std::invalid_argument(
        fmt::format("invalid tenant id '{}': use 1-64 characters of A-Z a-z 0-9 . _ -", id));
  }
}

void check_non_negative(const std::optional<std::int64_t>& v, const char* name) {
  if (v && *v < 0) throw std::invalid_argument(fmt::format("{} must not be negative", name));
}

void check_tenant(const std::string& id, double weight, const TenantLimits& limits) {
  check_tenant_id(id);
  if (!(weight > 0) || weight > 1e6) {
    throw std::invalid_argument(fmt::format("tenant weight must be in (0, 1e6], got {}", weight));
  }
  check_non_negative(limits.rpm, "rpm");
  check_non_negative(limits.tpm, "tpm");
  check_non_negative(limits.daily_tokens, "daily_tokens");
  check_non_negative(limits.monthly_tokens, "monthly_tokens");
}

AuthResult auth_result(ApiKey key, UnixMillis now) {
  AuthResult result;
  result.key_id = key.id;
  switch (key.state(now)) {
    case KeyState::kRevoked:
      result.status = AuthStatus::kRevoked;
      break;
    case KeyState::kExpired:
      result.status = AuthStatus::kExpired;
      break;
    case KeyState::kActive:
      result.status = AuthStatus::kOk;
      result.key = std::move(key);
      break;
  }
  return result;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (plus_is_space && s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace detail

}  // namespace maas::platform
