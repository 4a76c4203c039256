// Jinja2 chat templates: a lexer, parser and evaluator that render a model's
// `tokenizer.chat_template` the way Python's jinja2 does under Hugging Face transformers' settings
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls, the `tojson` filter
// as json.dumps(ensure_ascii=False), and the `raise_exception` / `strftime_now` globals).
//
// Templates come from model files, so they are untrusted: parsing and rendering are bounded in
// nesting depth, loop iterations, work and output size, and every failure is an Error.
#pragma once

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace maas::tmpl {

// Parse errors read "template:LINE:COL: message"; render errors name the problem;
// raise_exception(msg) in a template gives an Error whose what() is msg.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Limits {
  size_t max_output_bytes = size_t{64} << 20;  // rendered text, and any one string or list
  size_t max_steps = 50'000'000;               // evaluated nodes plus bytes built / 16
  int max_depth = 200;                         // template nesting, macro calls, value nesting
};

namespace detail {
struct Node;
}

class Template {
 public:
  static Template parse(std::string_view source, const Limits& limits = {});  // throws Error
  // Context keys become template variables. An ordered_json context keeps object key order
  // (as Python dicts do, which `tojson` and `items()` show); nlohmann::json sorts keys.
  std::string render(const nlohmann::json& context) const;          // throws Error
  std::string render(const nlohmann::ordered_json& context) const;  // throws Error

  const Limits& limits() const { return limits_; }

 private:
  std::shared_ptr<const detail::Node> root_;
  Limits limits_;
};

// What transformers' apply_chat_template passes: messages, tools (None when absent),
// documents (None), add_generation_prompt, bos_token, eos_token, then the extra keyword
// arguments (e.g. enable_thinking), which override the others as Python's **kwargs do.
std::string render_chat(const Template& tmpl, const nlohmann::json& messages,
                        bool add_generation_prompt, std::string_view bos_token,
                        std::string_view eos_token, const nlohmann::json& tools = nullptr,
                        const nlohmann::json& extra = nlohmann::json::object());
std::string render_chat(const Template& tmpl, const nlohmann::ordered_json& messages,
                        bool add_generation_prompt, std::string_view bos_token,
                        std::string_view eos_token, const nlohmann::ordered_json& tools = nullptr,
                        const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());

}  // namespace maas::tmpl
