// The model registry's admin API: /admin/models (list), /admin/models/{id} (one),
// /admin/models/{id}/load, /admin/models/{id}/unload and /admin/models/reload. The admin key was
// checked by Api::admin. docs/MODELS.md describes the routes.
#include <fmt/format.h>

#include <cstdio>

#include "server/api.h"
#include "server/openai_schema.h"

namespace maas::server {

namespace {

const std::string kPrefix = "/admin/models";

Json status_json(const ModelStatus& s) {
  auto optional = [](const std::optional<int64_t>& v) { return v ? Json(*v) : Json(nullptr); };
  return {{"id", s.id},
          {"aliases", s.aliases},
          {"path", s.path},
          {"state", model_state_name(s.state)},
          {"load", load_policy_name(s.policy)},
          {"idle_unload_seconds", s.idle_unload.count() / 1000.0},
          {"memory_bytes", s.memory_bytes},
          {"loaded_at", optional(s.loaded_at)},
          {"last_used", s.last_used ? Json(*s.last_used / 1000) : Json(nullptr)},
          {"in_flight", s.in_flight},
          {"waiting", s.waiting},
          {"error", s.error.empty() ? Json(nullptr) : Json(s.error)}};
}

Json list_json(const ModelRegistry& registry) {
  Json data = Json::array();
  for (const ModelStatus& s : registry.status()) data.push_back(status_json(s));
  return {{"object", "list"},
          {"data", data},
          {"memory_in_use", registry.memory_in_use()},
          {"memory_budget", registry.memory_budget()}};
}

// %XX escapes in a path segment (a model id may hold '/' or ':').
std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    auto hex = [&](size_t j) -> int {
      if (j >= s.size()) return -1;
      const char c = s[j];
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int hi = hex(i + 1), lo = hex(i + 2);
    if (hi < 0 || lo < 0) throw ApiError(400, "the URL has a malformed %-escape");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

ApiError unknown_model(const std::string& id) {
  return ApiError(404, fmt::format("The model '{}' does not exist", id), "model",
                  "invalid_request_error", "model_not_found");
}

}  // namespace

bool Api::admin_models(const HttpRequest& req, const std::shared_ptr<ResponseWriter>& w) {
  const std::string& path = req.path;
  if (path != kPrefix && path.rfind(kPrefix + "/", 0) != 0) return false;
  const std::string endpoint = "/admin";
  const bool get = req.method == "GET" || req.method == "HEAD";
  const bool post = req.method == "POST";
  auto reply = [this, endpoint, w](int status, const Json& body) {
    metrics_.count_request(endpoint, status);
    w->send(status, "application/json", body.dump(-1, ' ', false, Json::error_handler_t::replace));
  };
  auto method_not_allowed = [&](const char* allowed) {
    return ApiError(
        405, fmt::format("Method {} is not allowed for {} (use {})", req.method, path, allowed));
  };
  ModelRegistry& registry = *registry_;
  if (path == kPrefix) {
    if (!get) throw method_not_allowed("GET");
    reply(200, list_json(registry));
    return true;
  }
  if (path == kPrefix + "/reload") {
    if (!post) throw method_not_allowed("POST");
    ReloadSummary sum;
    try {
      sum = registry.reload();
    } catch (const std::exception& e) {
      // The old configuration stays.
      std::fprintf(stderr, "maas: reload refused: %s\n", e.what());
      throw ApiError(400,
                     fmt::format("reload refused, the configuration is unchanged: {}", e.what()),
                     {}, "invalid_request_error", "invalid_models_file");
    }
    std::fprintf(stderr,
                 "maas: reloaded the models: %zu added, %zu replaced, %zu updated, %zu removed, "
                 "%zu unchanged\n",
                 sum.added.size(), sum.replaced.size(), sum.updated.size(), sum.removed.size(),
                 sum.unchanged.size());
    reply(200, {{"added", sum.added},
                {"replaced", sum.replaced},
                {"updated", sum.updated},
                {"removed", sum.removed},
                {"unchanged", sum.unchanged}});
    return true;
  }
  // /admin/models/{id}[/load|/unload]; an id may itself hold '/', so the action is the suffix.
  std::string rest = path.substr(kPrefix.size() + 1);
  std::string action;
  for (const char* suffix : {"/load", "/unload"}) {
    const std::string s = suffix;
    if (rest.size() > s.size() && rest.compare(rest.size() - s.size(), s.size(), s) == 0) {
      action = s.substr(1);
      rest.resize(rest.size() - s.size());
      break;
    }
  }
  const std::string id = percent_decode(rest);
  if (!registry.status(id)) throw unknown_model(id);
  if (action.empty()) {
    if (!get) throw method_not_allowed("GET");
    reply(200, status_json(*registry.status(id)));
    return true;
  }
  if (!post) throw method_not_allowed("POST");
  if (action == "unload") {
    registry.unload(id);
    const auto s = registry.status(id);
    if (!s) throw unknown_model(id);
    reply(200, status_json(*s));
    return true;
  }
  // load: answered once the model is loaded (the request waits like a generation would).
  auto answer = [this, id, reply, endpoint, w](ModelLease lease, const ApiError* error) {
    if (error != nullptr) return send_error(endpoint, *error, *w);
    lease = {};  // the admin holds no lease: the model is as idle as before
    const auto s = registry_->status(id);
    if (!s) return send_error(endpoint, unknown_model(id), *w);
    reply(200, status_json(*s));
  };
  auto ticket = std::make_shared<std::atomic<uint64_t>>(0);
  w->on_close([registry = registry_.get(), ticket] {
    if (const uint64_t t = ticket->load()) registry->cancel_wait(t);
  });
  uint64_t parked = 0;
  if (ModelLease lease = registry.acquire(id, answer, &parked)) {
    answer(std::move(lease), nullptr);
  } else {
    ticket->store(parked);
  }
  return true;
}

}  // namespace maas::server
