// `maas models ls|load|unload|reload`: the model registry of a running `maas serve`, through its
// admin API (/admin/models, docs/MODELS.md).
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "server/http_client.h"

namespace maas::cli {

namespace {

using Json = nlohmann::ordered_json;

struct ModelsOptions {
  std::string url = "http://127.0.0.1:8080";
  std::string admin_key;
  bool json = false;
  std::string id;
  double timeout = 300;  // seconds
};

std::string percent_encode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

// One admin API call; the parsed JSON answer, or an exception with the server's message.
Json call(const ModelsOptions& o, const std::string& method, const std::string& path) {
  std::string key = o.admin_key;
  if (key.empty()) {
    if (const char* env = std::getenv("MAAS_ADMIN_KEY"); env != nullptr) key = env;
  }
  if (key.empty()) {
    throw std::runtime_error("an admin key is needed: --admin-key KEY or $MAAS_ADMIN_KEY");
  }
  std::string base = o.url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout * 1000) + 5000);
  const auto res = server::http_request(method, base + path, {{"authorization", "Bearer " + key}},
                                        method == "POST" ? "{}" : "", timeout);
  Json body;
  try {
    body = Json::parse(res.body);
  } catch (const std::exception&) {
    throw std::runtime_error(
        fmt::format("{} {}: HTTP {} without a JSON answer", method, path, res.status));
  }
  if (res.status / 100 != 2) {
    std::string message = res.body;
    if (body.is_object() && body.contains("error") && body["error"].is_object() &&
        body["error"].contains("message") && body["error"]["message"].is_string()) {
      message = body["error"]["message"].get<std::string>();
    }
    throw std::runtime_error(fmt::format("HTTP {}: {}", res.status, message));
  }
  return body;
}

std::string bytes_text(uint64_t b) {
  if (b == 0) return "-";
  if (b >= (uint64_t{1} << 30)) return fmt::format("{:.1f} GiB", b / 1073741824.0);
  return fmt::format("{:.1f} MiB", b / 1048576.0);
}

std::string ago(const Json& unix_seconds) {
  if (!unix_seconds.is_number_integer()) return "-";
  const int64_t d = static_cast<int64_t>(std::time(nullptr)) - unix_seconds.get<int64_t>();
  if (d < 60) return fmt::format("{}s ago", std::max<int64_t>(d, 0));
  if (d < 3600) return fmt::format("{}m ago", d / 60);
  if (d < 86400) return fmt::format("{}h ago", d / 3600);
  return fmt::format("{}d ago", d / 86400);
}

template <typename T>
T field(const Json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const std::exception&) {
    return fallback;
  }
}

void print_table(const Json& list) {
  std::printf("%-24s %-10s %-10s %10s %9s %9s  %s\n", "ID", "STATE", "LOAD", "MEMORY", "IN-FLIGHT",
              "USED", "ALIASES");
  const Json& data = list.contains("data") ? list["data"] : Json::array();
  for (const Json& m : data) {
    std::string aliases;
    for (const Json& a : field(m, "aliases", Json::array())) {
      if (!aliases.empty()) aliases += ",";
      aliases += a.is_string() ? a.get<std::string>() : "?";
    }
    std::printf("%-24s %-10s %-10s %10s %9lld %9s  %s\n", field<std::string>(m, "id", "?").c_str(),
                field<std::string>(m, "state", "?").c_str(),
                field<std::string>(m, "load", "?").c_str(),
                bytes_text(field<uint64_t>(m, "memory_bytes", 0)).c_str(),
                static_cast<long long>(field<int64_t>(m, "in_flight", 0)),
                ago(m.contains("last_used") ? m["last_used"] : Json()).c_str(),
                aliases.empty() ? "-" : aliases.c_str());
    const std::string error = field<std::string>(m, "error", "");
    if (!error.empty()) std::printf("  error: %s\n", error.c_str());
  }
  const uint64_t budget = field<uint64_t>(list, "memory_budget", 0);
  std::printf("memory in use: %s%s\n",
              bytes_text(field<uint64_t>(list, "memory_in_use", 0)).c_str(),
              budget > 0 ? fmt::format(" of a {} budget", bytes_text(budget)).c_str() : "");
}

void print_model(const ModelsOptions& o, const Json& m) {
  if (o.json) {
    std::printf("%s\n", m.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    return;
  }
  std::printf("%s: %s (%s)\n", field<std::string>(m, "id", "?").c_str(),
              field<std::string>(m, "state", "?").c_str(),
              bytes_text(field<uint64_t>(m, "memory_bytes", 0)).c_str());
}

}  // namespace

void add_models_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ModelsOptions>();
  CLI::App* cmd = app.add_subcommand(
      "models", "List, load, unload and reload the models of a running server (its admin API)");
  cmd->require_subcommand(1);
  cmd->fallthrough();
  cmd->add_option("--url", o->url, "The server (default http://127.0.0.1:8080)");
  cmd->add_option("--admin-key", o->admin_key, "Admin key (default: $MAAS_ADMIN_KEY)");
  cmd->add_flag("--json", o->json, "Print the server's JSON");
  cmd->add_option("--timeout", o->timeout, "Seconds to wait for a load or unload")
      ->check(CLI::PositiveNumber);

  CLI::App* ls = cmd->add_subcommand("ls", "Every configured model: state, memory, use");
  ls->callback([o, &exit_code] {
    const Json list = call(*o, "GET", "/admin/models");
    if (o->json) {
      std::printf("%s\n", list.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
    } else {
      print_table(list);
    }
    exit_code = 0;
  });

  CLI::App* load = cmd->add_subcommand("load", "Load a model now (returns once it is ready)");
  load->add_option("id", o->id, "Model id")->required();
  load->callback([o, &exit_code] {
    print_model(*o, call(*o, "POST", "/admin/models/" + percent_encode(o->id) + "/load"));
    exit_code = 0;
  });

  CLI::App* unload = cmd->add_subcommand(
      "unload", "Unload a model (returns once its requests in flight finished and it is gone)");
  unload->add_option("id", o->id, "Model id")->required();
  unload->callback([o, &exit_code] {
    const std::string path = "/admin/models/" + percent_encode(o->id);
    Json m = call(*o, "POST", path + "/unload");
    const auto end =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(o->timeout * 1000));
    while (field<std::string>(m, "state", "") == "unloading") {
      if (std::chrono::steady_clock::now() > end) {
        throw std::runtime_error(
            fmt::format("model '{}' is still unloading: {} request(s) in flight", o->id,
                        field<int64_t>(m, "in_flight", 0)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      m = call(*o, "GET", path);
    }
    print_model(*o, m);
    exit_code = 0;
  });

  CLI::App* reload = cmd->add_subcommand("reload", "Re-read the server's models file");
  reload->callback([o, &exit_code] {
    const Json sum = call(*o, "POST", "/admin/models/reload");
    if (o->json) {
      std::printf("%s\n", sum.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    } else {
      for (const char* what : {"added", "replaced", "updated", "removed", "unchanged"}) {
        std::string ids;
        for (const Json& id : field(sum, what, Json::array())) {
          if (!ids.empty()) ids += ", ";
          ids += id.is_string() ? id.get<std::string>() : "?";
        }
        std::printf("%-9s %s\n", what, ids.empty() ? "-" : ids.c_str());
      }
    }
    exit_code = 0;
  });
}

}  // namespace maas::cli
