// Errors and limits: syntax errors carry line:column, raise_exception passes its message through,
// and hostile templates (deep nesting, runaway loops, recursion, huge values, cycles) end in an
// Error instead of a crash or a hang. Expected positions are counted by hand.
#include <string>

#include <gtest/gtest.h>

#include "template/template.h"

namespace {

using maas::tmpl::Error;
using maas::tmpl::Limits;
using maas::tmpl::Template;
using nlohmann::json;
using nlohmann::ordered_json;

std::string parse_error(const std::string& src) {
  try {
    Template::parse(src);
  } catch (const Error& e) {
    return e.what();
  }
  return "(parsed)";
}

std::string render_error(const std::string& src, const Limits& limits = {},
                         const json& context = json::object()) {
  try {
    Template::parse(src, limits).render(context);
  } catch (const Error& e) {
    return e.what();
  }
  return "(rendered)";
}

TEST(TemplateErrors, SyntaxErrorsCarryLineAndColumn) {
  // "{{ 1 + }}": the "}}" that ends the expression too early is at column 8.
  EXPECT_EQ(parse_error("{{ 1 + }}").rfind("template:1:8: ", 0), 0u) << parse_error("{{ 1 + }}");
  // Third line, "{{ y | }}": a filter name is expected at column 8.
  const std::string e2 = parse_error("line one\n{% if x %}\n{{ y | }}{% endif %}");
  EXPECT_EQ(e2.rfind("template:3:8: ", 0), 0u) << e2;
  // An unknown tag is reported where its name starts: line 2, column 4.
  const std::string e3 = parse_error("ok\n{% frobnicate %}");
  EXPECT_EQ(e3.rfind("template:2:4: ", 0), 0u) << e3;
  EXPECT_NE(e3.find("frobnicate"), std::string::npos);
  // Unknown filters are found when parsing, as jinja2's compiler does: column 6.
  const std::string e4 = parse_error("{{ x|nofilter }}");
  EXPECT_EQ(e4.rfind("template:1:6: ", 0), 0u) << e4;
  // An unterminated string reports its opening quote: line 1, column 4.
  const std::string e5 = parse_error("{{ 'abc }}");
  EXPECT_EQ(e5.rfind("template:1:4: ", 0), 0u) << e5;
  EXPECT_NE(parse_error("{% for x in y %}no end").find("endfor"), std::string::npos);
}

TEST(TemplateErrors, RaiseExceptionMessageIsTheError) {
  EXPECT_EQ(render_error("a{{ raise_exception('Roles must alternate!') }}b"),
            "Roles must alternate!");
}

TEST(TemplateErrors, UndefinedMisuseNamesTheVariable) {
  EXPECT_NE(render_error("{{ nothing.here }}").find("'nothing' is undefined"), std::string::npos);
}

TEST(TemplateErrors, RunawayLoopsHitTheStepLimit) {
  Limits limits;
  limits.max_steps = 200'000;
  const std::string e = render_error(
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", limits);
  EXPECT_NE(e.find("step limit"), std::string::npos) << e;
}

TEST(TemplateErrors, OutputAndValueSizeAreBounded) {
  Limits limits;
  limits.max_output_bytes = 1 << 16;
  EXPECT_NE(render_error("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}", limits)
                .find("size limit"),
            std::string::npos);
  EXPECT_NE(render_error("{{ 'x' * 100000000000 }}").find("too large"), std::string::npos);
  EXPECT_NE(render_error("{{ [1] * 100000000000 }}").find("too large"), std::string::npos);
  EXPECT_NE(render_error("{{ range(1000000) | length }}").find("Range too big"), std::string::npos);
}

TEST(TemplateErrors, RecursionAndNestingAreBounded) {
  EXPECT_NE(render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
                .find("recursion depth"),
            std::string::npos);
  EXPECT_NE(parse_error("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}")
                .find("too deep"),
            std::string::npos);
  std::string chain = "{{ 1";
  for (int k = 0; k < 50000; ++k) chain += " + 1";
  EXPECT_NE(parse_error(chain + " }}").find("too deeply nested"), std::string::npos);
  std::string ifs;
  for (int k = 0; k < 5000; ++k) ifs += "{% if true %}";
  EXPECT_NE(parse_error(ifs).find("too deep"), std::string::npos);
  EXPECT_NE(render_error("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}"
                         "{% set ns.x = [ns.x] %}{% endfor %}")
                .find("too deep"),
            std::string::npos);
  json deep = json::array();
  for (int k = 0; k < 2000; ++k) deep = json::array({deep});
  EXPECT_NE(render_error("{{ x | length }}", {}, json{{"x", deep}}).find("too deep"),
            std::string::npos);
}

TEST(TemplateErrors, NamespaceCyclesAreRefused) {
  EXPECT_NE(render_error("{% set ns = namespace() %}{% set ns.me = ns %}").find("namespace"),
            std::string::npos);
  EXPECT_NE(render_error("{% set ns = namespace() %}{% set ns.l = [ns] %}").find("namespace"),
            std::string::npos);
  // A macro kept in a namespace could outlive the scope it reads from.
  EXPECT_NE(render_error("{% macro m() %}{% endmacro %}{% set ns = namespace(x=[m]) %}")
                .find("namespace"),
            std::string::npos);
}

TEST(TemplateApi, ContextKeyOrderFollowsTheJsonType) {
  const Template t = Template::parse("{{ d | tojson }} {% for k in d %}{{ k }}{% endfor %}");
  // nlohmann::json keeps objects sorted; ordered_json keeps insertion order like Python dicts.
  EXPECT_EQ(t.render(json::parse(R"({"d": {"b": 1, "a": 2}})")), R"({"a": 2, "b": 1} ab)");
  EXPECT_EQ(t.render(ordered_json::parse(R"({"d": {"b": 1, "a": 2}})")), R"({"b": 1, "a": 2} ba)");
  EXPECT_THROW(t.render(json::array()), Error);
}

TEST(TemplateApi, RenderChatPassesTheTransformersVariables) {
  const Template t = Template::parse(
      "{{ bos_token }}{% for m in messages %}<{{ m.role }}:{{ m.content }}>{% endfor %}"
      "{{ tools is none }}|{{ documents is none }}|{{ add_generation_prompt }}|{{ eos_token }}"
      "|{{ enable_thinking | default('unset') }}");
  const json messages = json::parse(R"([{"role": "user", "content": "hi"}])");
  EXPECT_EQ(maas::tmpl::render_chat(t, messages, true, "<s>", "</s>"),
            "<s><user:hi>True|True|True|</s>|unset");
  EXPECT_EQ(maas::tmpl::render_chat(t, messages, false, "", "E", json::array({1}),
                                    json{{"enable_thinking", false}}),
            "<user:hi>False|True|False|E|False");
  EXPECT_THROW(maas::tmpl::render_chat(t, json::object(), false, "", ""), Error);
}

}  // namespace
