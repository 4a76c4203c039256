#include "platform/admin_api.h"

#include "platform/store_rules.h"

#include <fmt/format.h>

#include <ctime>
#include <iomanip>
#include <map>
#include <sstream>

namespace maas::platform {

namespace {

using Json = nlohmann::ordered_json;

// A request the admin API refuses: becomes an OpenAI-style error object.
struct Refusal {
  int status;
  std::string message, param;
};

AdminResult error_result(int status, const std::string& message, const std::string& param) {
  Json err = {{"message", message},
              {"type", status >= 500 ? "server_error" : "invalid_request_error"},
              {"param", param.empty() ? Json(nullptr) : Json(param)},
              {"code", nullptr}};
  return {status, {{"error", err}}};
}

std::string percent_decode(std::string_view s) { return detail::percent_decode(s, true); }

std::map<std::string, std::string> parse_query(const std::string& query) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start <= query.size()) {
    size_t end = query.find('&', start);
    if (end == std::string::npos) end = query.size();
    const std::string_view part(query.data() + start, end - start);
    if (!part.empty()) {
      const size_t eq = part.find('=');
      const std::string key = percent_decode(part.substr(0, eq));
      const std::string value =
          eq == std::string_view::npos ? "" : percent_decode(part.substr(eq + 1));
      out[key] = value;
    }
    start = end + 1;
  }
  return out;
}

Json opt_json(const std::optional<std::int64_t>& v) { return v ? Json(*v) : Json(nullptr); }

Json tenant_json(const Tenant& t) {
  return {{"id", t.id},
          {"weight", t.weight},
          {"rpm", opt_json(t.limits.rpm)},
          {"tpm", opt_json(t.limits.tpm)},
          {"daily_tokens", opt_json(t.limits.daily_tokens)},
          {"monthly_tokens", opt_json(t.limits.monthly_tokens)},
          {"created_at", format_utc_time(t.created_at)}};
}

const char* state_name(KeyState s) {
  switch (s) {
    case KeyState::kActive:
      return "active";
    case KeyState::kRevoked:
      return "revoked";
    case KeyState::kExpired:
      return "expired";
  }
  return "unknown";
}

Json key_json(const ApiKey& k, UnixMillis now) {
  const auto& o = k.options;
  return {{"id", k.id},
          {"tenant", k.tenant},
          {"state", state_name(k.state(now))},
          {"models", o.models},
          {"rpm", opt_json(o.rpm)},
          {"tpm", opt_json(o.tpm)},
          {"daily_tokens", opt_json(o.daily_tokens)},
          {"monthly_tokens", opt_json(o.monthly_tokens)},
          {"expires_at", o.expires_at ? Json(format_utc_time(*o.expires_at)) : Json(nullptr)},
          {"created_at", format_utc_time(k.created_at)},
          {"revoked_at", k.revoked_at ? Json(format_utc_time(*k.revoked_at)) : Json(nullptr)}};
}

void require_object(const Json& body) {
  if (!body.is_object()) throw Refusal{400, "the request body must be a JSON object", ""};
}

// A limit field: absent keeps `current`, null removes it, else a positive integer.
std::optional<std::int64_t> limit_field(const Json& body, const char* name,
                                        std::optional<std::int64_t> current) {
  auto it = body.find(name);
  if (it == body.end()) return current;
  if (it->is_null()) return std::nullopt;
  if (!it->is_number_integer() || it->get<std::int64_t>() <= 0) {
    throw Refusal{400, fmt::format("'{}' must be a positive integer or null", name), name};
  }
  return it->get<std::int64_t>();
}

void check_known_fields(const Json& body, std::initializer_list<const char*> known) {
  for (const auto& item : body.items()) {
    const std::string& k = item.key();  // not a structured binding: clang 14 cannot capture one
    if (std::find_if(known.begin(), known.end(), [&](const char* n) { return k == n; }) ==
        known.end()) {
      throw Refusal{400, fmt::format("unknown field '{}'", k), k};
    }
  }
}

}  // namespace

UnixMillis parse_utc_time(const std::string& s) {
  std::tm tm{};
  std::istringstream in(s);
  if (s.size() == 10) {
    in >> std::get_time(&tm, "%Y-%m-%d");
  } else {
    in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  }
  // std::get_time accepts a missing trailing literal at the end of input: check the shape too.
  const bool shape = s.size() == 10 || (s.size() == 20 && s[10] == 'T' && s[19] == 'Z');
  if (!shape || in.fail() || in.peek() != EOF) {
    throw std::invalid_argument(
        fmt::format("'{}' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC)", s));
  }
  return static_cast<UnixMillis>(timegm(&tm)) * 1000;
}

std::string format_utc_time(UnixMillis t) {
  const std::time_t secs = static_cast<std::time_t>(t / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

AdminApi::AdminApi(std::shared_ptr<Store> store) : store_(std::move(store)) {}

std::optional<AdminResult> AdminApi::handle(const std::string& method, const std::string& path,
                                            const std::string& query, const Json& body,
                                            UnixMillis now) {
  auto method_not_allowed = [&] {
    return error_result(405, fmt::format("Method {} is not allowed for {}", method, path), "");
  };
  try {
    const auto params = parse_query(query);
    auto param = [&](const char* name) -> std::optional<std::string> {
      auto it = params.find(name);
      if (it == params.end() || it->second.empty()) return std::nullopt;
      return it->second;
    };

    if (path == "/admin/tenants") {
      if (method != "GET") return method_not_allowed();
      Json data = Json::array();
      for (const Tenant& t : store_->list_tenants()) data.push_back(tenant_json(t));
      return AdminResult{200, {{"object", "list"}, {"data", data}}};
    }
    if (path.rfind("/admin/tenants/", 0) == 0) {
      const std::string id = percent_decode(path.substr(15));
      if (method == "GET") {
        auto t = store_->find_tenant(id);
        if (!t) throw Refusal{404, fmt::format("no tenant '{}'", id), ""};
        return AdminResult{200, tenant_json(*t)};
      }
      if (method != "PUT") return method_not_allowed();
      require_object(body);
      check_known_fields(body, {"weight", "rpm", "tpm", "daily_tokens", "monthly_tokens"});
      const std::optional<Tenant> current = store_->find_tenant(id);
      double weight = current ? current->weight : 1.0;
      if (auto it = body.find("weight"); it != body.end()) {
        if (!it->is_number() || !(it->get<double>() > 0) || it->get<double>() > 1e6) {
          throw Refusal{400, "'weight' must be a number in (0, 1e6]", "weight"};
        }
        weight = it->get<double>();
      }
      const TenantLimits old = current ? current->limits : TenantLimits{};
      TenantLimits limits{limit_field(body, "rpm", old.rpm), limit_field(body, "tpm", old.tpm),
                          limit_field(body, "daily_tokens", old.daily_tokens),
                          limit_field(body, "monthly_tokens", old.monthly_tokens)};
      const Tenant t = store_->put_tenant(id, weight, limits, now);
      return AdminResult{current ? 200 : 201, tenant_json(t)};
    }
    if (path == "/admin/keys") {
      if (method == "GET") {
        const auto tenant = param("tenant");
        Json data = Json::array();
        for (const ApiKey& k : store_->list_keys()) {
          if (!tenant || k.tenant == *tenant) data.push_back(key_json(k, now));
        }
        return AdminResult{200, {{"object", "list"}, {"data", data}}};
      }
      if (method != "POST") return method_not_allowed();
      require_object(body);
      check_known_fields(
          body, {"tenant", "models", "rpm", "tpm", "daily_tokens", "monthly_tokens", "expires_at"});
      auto tenant = body.find("tenant");
      if (tenant == body.end() || !tenant->is_string()) {
        throw Refusal{400, "'tenant' must be a string", "tenant"};
      }
      KeyOptions opt;
      if (auto it = body.find("models"); it != body.end() && !it->is_null()) {
        if (!it->is_array()) throw Refusal{400, "'models' must be an array of strings", "models"};
        for (const Json& m : *it) {
          if (!m.is_string() || m.get<std::string>().empty()) {
            throw Refusal{400, "'models' must be an array of strings", "models"};
          }
          opt.models.push_back(m.get<std::string>());
        }
      }
      opt.rpm = limit_field(body, "rpm", std::nullopt);
      opt.tpm = limit_field(body, "tpm", std::nullopt);
      opt.daily_tokens = limit_field(body, "daily_tokens", std::nullopt);
      opt.monthly_tokens = limit_field(body, "monthly_tokens", std::nullopt);
      if (auto it = body.find("expires_at"); it != body.end() && !it->is_null()) {
        if (!it->is_string()) throw Refusal{400, "'expires_at' must be a date", "expires_at"};
        try {
          opt.expires_at = parse_utc_time(it->get<std::string>());
        } catch (const std::invalid_argument& e) {
          throw Refusal{400, e.what(), "expires_at"};
        }
      }
      const std::string tenant_id = tenant->get<std::string>();
      try {
        store_->ensure_tenant(tenant_id, now);
      } catch (const std::invalid_argument& e) {
        throw Refusal{400, e.what(), "tenant"};
      }
      const CreatedKey created = store_->create_key(tenant_id, opt, now);
      Json out = key_json(created.key, now);
      out["secret"] = created.secret;  // shown this once
      return AdminResult{201, out};
    }
    if (path.rfind("/admin/keys/", 0) == 0) {
      if (method != "DELETE") return method_not_allowed();
      const std::string id = percent_decode(path.substr(12));
      if (!store_->revoke_key(id, now)) throw Refusal{404, fmt::format("no key '{}'", id), ""};
      for (const ApiKey& k : store_->list_keys()) {
        if (k.id == id) return AdminResult{200, key_json(k, now)};
      }
      throw Refusal{404, fmt::format("no key '{}'", id), ""};
    }
    if (path == "/admin/usage") {
      if (method != "GET") return method_not_allowed();
      constexpr std::int64_t kDay = 86400000;
      auto day_param = [&](const char* name, UnixMillis fallback) {
        const auto v = param(name);
        if (!v) return fallback;
        if (v->size() != 10) throw Refusal{400, fmt::format("'{}' must be YYYY-MM-DD", name), name};
        try {
          return parse_utc_time(*v);
        } catch (const std::invalid_argument& e) {
          throw Refusal{400, e.what(), name};
        }
      };
      const UnixMillis to = day_param("to", utc_day_start(now)) + kDay;
      const UnixMillis from = day_param("from", utc_day_start(now) - 29 * kDay);
      if (from >= to) throw Refusal{400, "'from' is after 'to'", "from"};
      Json data = Json::array();
      for (const UsageRow& r : store_->usage_by_model_day(param("tenant"), from, to)) {
        data.push_back({{"day", r.day},
                        {"tenant", r.tenant},
                        {"model", r.model},
                        {"requests", r.requests},
                        {"prompt_tokens", r.prompt_tokens},
                        {"cached_tokens", r.cached_tokens},
                        {"completion_tokens", r.completion_tokens},
                        {"total_tokens", r.prompt_tokens + r.completion_tokens}});
      }
      return AdminResult{200, {{"object", "list"}, {"data", data}}};
    }
    return std::nullopt;
  } catch (const Refusal& r) {
    return error_result(r.status, r.message, r.param);
  } catch (const std::invalid_argument& e) {
    return error_result(400, e.what(), "");
  } catch (const StoreError& e) {
    return error_result(500, e.what(), "");
  }
}

}  // namespace maas::platform
