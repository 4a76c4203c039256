// Runs tests/template/render_reference.py (Python's jinja2 with transformers' settings) over a
// batch of cases, so every expected output comes from the reference implementation at test time.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace maas::test {

struct ReferenceResult {
  bool ok = false;
  std::string out;    // rendered text when ok
  std::string error;  // "ExceptionType: message" otherwise
};

// cases: a JSON array of {"template", "context"} or {"template", "chat"} objects (see the script).
std::vector<ReferenceResult> python_render(const nlohmann::ordered_json& cases);

// Path of a file under tests/template/.
std::string template_test_file(const std::string& name);

}  // namespace maas::test
