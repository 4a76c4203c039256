#include "reference.h"

#include <stdexcept>

#include "support/test_util.h"

namespace maas::test {

std::string template_test_file(const std::string& name) {
  return std::string(MAAS_SOURCE_DIR) + "/tests/template/" + name;
}

std::vector<ReferenceResult> python_render(const nlohmann::ordered_json& cases) {
  const CommandResult r =
      run_command({"/usr/bin/python3", template_test_file("render_reference.py")}, cases.dump());
  if (r.exit_code != 0) {
    throw std::runtime_error("render_reference.py failed: " + r.err);
  }
  const nlohmann::json results = nlohmann::json::parse(r.out);
  std::vector<ReferenceResult> out;
  for (const auto& item : results) {
    ReferenceResult res;
    res.ok = item.at("ok").get<bool>();
    if (res.ok) {
      res.out = item.at("out").get<std::string>();
    } else {
      res.error = item.at("error").get<std::string>();
    }
    out.push_back(std::move(res));
  }
  if (out.size() != cases.size()) throw std::runtime_error("reference returned a wrong count");
  return out;
}

}  // namespace maas::test
