// Fuzz target: tmpl::Template::parse and render on arbitrary template text. An Error is the
// expected way to refuse input; any other exception escaping, a sanitizer report or a broken
// invariant (checked with abort) is a bug. Limits are kept small so that every input finishes
// quickly; rendering twice must give the same result (templates are deterministic apart from
// strftime_now).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "template/template.h"

namespace {

using maas::tmpl::Error;
using maas::tmpl::Limits;
using maas::tmpl::Template;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_template: invariant broken: %s\n", what);
    std::abort();
  }
}

const nlohmann::ordered_json& chat_context() {
  static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "sys"},
      {"role": "user", "content": "hi {{ x }} é"},
      {"role": "assistant", "content": "<think>r</think>ok", "tool_calls": [
        {"id": "abc123XYZ", "type": "function",
         "function": {"name": "f", "arguments": {"a": 1, "b": [true, null, 2.5]}}}]},
      {"role": "tool", "content": "42"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    "n": 3, "s": "text", "d": {"k": "v"}
  })");
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  Limits limits;
  limits.max_steps = 200'000;
  limits.max_output_bytes = 1 << 20;
  limits.max_depth = 64;
  std::optional<Template> tmpl;
  try {
    tmpl.emplace(Template::parse(source, limits));
  } catch (const Error& e) {
    const std::string_view msg = e.what();
    check(msg.rfind("template:", 0) == 0, "parse errors start with 'template:LINE:COL: '");
    return 0;
  }
  std::optional<std::string> first;
  try {
    first = tmpl->render(chat_context());
  } catch (const Error&) {
  }
  check(!first || first->size() <= limits.max_output_bytes, "output within the limit");
  if (source.find("strftime_now") == std::string_view::npos) {
    std::optional<std::string> second;
    try {
      second = tmpl->render(chat_context());
    } catch (const Error&) {
    }
    check(first.has_value() == second.has_value() && (!first || *first == *second),
          "rendering is deterministic");
  }
  return 0;
}
