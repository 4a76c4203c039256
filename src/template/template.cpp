// Public entry points: parse, render, and the chat-message convenience used by the server.
#include "template/template.h"

#include "template/ast.h"
#include "template/interp.h"

namespace maas::tmpl {

namespace {

template <typename Json>
std::string render_json(const detail::Node& root, const Limits& limits, const Json& context) {
  if (!context.is_object()) throw Error("template context must be a JSON object");
  detail::Frame globals;
  for (auto it = context.begin(); it != context.end(); ++it) {
    globals.set(it.key(), detail::from_json(it.value()));
  }
  std::string out;
  detail::Interp interp(limits, out);
  interp.run(root, globals);
  return out;
}

template <typename Json>
std::string chat(const Template& tmpl, const Json& messages, bool add_generation_prompt,
                 std::string_view bos_token, std::string_view eos_token, const Json& tools,
                 const Json& extra) {
  if (!messages.is_array()) throw Error("messages must be a JSON array");
  if (!tools.is_null() && !tools.is_array()) throw Error("tools must be a JSON array or null");
  if (!extra.is_null() && !extra.is_object()) throw Error("extra must be a JSON object");
  Json context = Json::object();
  context["messages"] = messages;
  context["tools"] = tools;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = std::string(bos_token);
  context["eos_token"] = std::string(eos_token);
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it) context[it.key()] = it.value();
  }
  return tmpl.render(context);
}

}  // namespace

Template Template::parse(std::string_view source, const Limits& limits) {
  Template t;
  t.limits_ = limits;
  t.root_ = detail::parse_tokens(detail::lex(source), limits.max_depth);
  return t;
}

std::string Template::render(const nlohmann::json& context) const {
  if (!root_) throw Error("template was not parsed");
  return render_json(*root_, limits_, context);
}

std::string Template::render(const nlohmann::ordered_json& context) const {
  if (!root_) throw Error("template was not parsed");
  return render_json(*root_, limits_, context);
}

std::string render_chat(const Template& tmpl, const nlohmann::json& messages,
                        bool add_generation_prompt, std::string_view bos_token,
                        std::string_view eos_token, const nlohmann::json& tools,
                        const nlohmann::json& extra) {
  return chat(tmpl, messages, add_generation_prompt, bos_token, eos_token, tools, extra);
}

std::string render_chat(const Template& tmpl, const nlohmann::ordered_json& messages,
                        bool add_generation_prompt, std::string_view bos_token,
                        std::string_view eos_token, const nlohmann::ordered_json& tools,
                        const nlohmann::ordered_json& extra) {
  return chat(tmpl, messages, add_generation_prompt, bos_token, eos_token, tools, extra);
}

}  // namespace maas::tmpl
