#include "server/openai_schema.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace maas::server {

ApiError::ApiError(int status_, const std::string& message, std::string param_, std::string type_,
                   std::string code_)
    : std::runtime_error(message),
      status(status_),
      param(std::move(param_)),
      type(std::move(type_)),
      code(std::move(code_)) {}

bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

std::string error_json(const ApiError& e) {
  Json err = {{"message", e.what()}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return Json{{"error", err}}.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json parse_body(std::string_view body) {
  Json j;
  try {
    j = Json::parse(body);
  } catch (const Json::exception& e) {
    // nlohmann's messages name the byte offset and the problem (including invalid UTF-8).
    throw ApiError(400, fmt::format("the request body is not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return j;
}

namespace {

// Typed access to optional fields; a present field of the wrong type is a 400 naming it. null
// counts as absent, as the OpenAI API treats it.
class Fields {
 public:
  explicit Fields(const Json& j) : j_(j) {}

  const Json* get(const char* name) const {
    auto it = j_.find(name);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  [[noreturn]] static void bad(const char* name, const char* want) {
    throw ApiError(400, fmt::format("'{}' must be {}", name, want), name);
  }
  std::optional<std::string> str(const char* name) const {
    const Json* v = get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) bad(name, "a string");
    return v->get<std::string>();
  }
  std::optional<bool> boolean(const char* name) const {
    const Json* v = get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) bad(name, "a boolean");
    return v->get<bool>();
  }
  std::optional<double> number(const char* name, double lo, double hi) const {
    const Json* v = get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) bad(name, "a number");
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi)) {
      throw ApiError(400, fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, x),
                     name);
    }
    return x;
  }
  std::optional<int64_t> integer(const char* name, int64_t lo, int64_t hi) const {
    const Json* v = get(name);
    if (v == nullptr) return std::nullopt;
    int64_t x = 0;
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
        bad(name, "an integer in range");
      }
      x = v->get<int64_t>();
    } else if (v->is_number_float() && std::nearbyint(v->get<double>()) == v->get<double>() &&
               std::abs(v->get<double>()) < 9e15) {
      x = static_cast<int64_t>(v->get<double>());  // 2.0 is an integer in JSON Schema terms
    } else {
      bad(name, "an integer");
    }
    if (x < lo || x > hi) {
      throw ApiError(400, fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, x),
                     name);
    }
    return x;
  }

 private:
  const Json& j_;
};

std::vector<int32_t> token_array(const Json& a, const char* name) {
  std::vector<int32_t> out;
  for (const Json& t : a) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
      Fields::bad(name, "a string, an array of strings, or an array (or arrays) of token ids");
    }
    out.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return out;
}

// string | [string] | [int] | [[int]]
std::vector<PromptInput> prompt_inputs(const Json& v, const char* name) {
  const char* want = "a string, an array of strings, or an array (or arrays) of token ids";
  std::vector<PromptInput> out;
  if (v.is_string()) {
    out.emplace_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.empty()) throw ApiError(400, fmt::format("'{}' must not be empty", name), name);
    if (v[0].is_number()) {
      out.emplace_back(token_array(v, name));
    } else {
      for (const Json& item : v) {
        if (item.is_string()) {
          out.emplace_back(item.get<std::string>());
        } else if (item.is_array()) {
          if (item.empty()) throw ApiError(400, fmt::format("'{}' has an empty item", name), name);
          out.emplace_back(token_array(item, name));
        } else {
          Fields::bad(name, want);
        }
      }
    }
  } else {
    Fields::bad(name, want);
  }
  if (out.size() > 1024)
    throw ApiError(400, fmt::format("'{}' has more than 1024 items", name), name);
  return out;
}

void parse_generation(const Json& j, GenerationParams& p, bool chat) {
  Fields f(j);
  auto model = f.str("model");
  if (!model) throw ApiError(400, "'model' is required", "model");
  p.model = *model;
  engine::SamplingParams& s = p.sampling;
  if (auto v = f.number("temperature", 0, 2)) s.temperature = static_cast<float>(*v);
  if (auto v = f.number("top_p", 0, 1)) s.top_p = static_cast<float>(*v);
  if (auto v = f.integer("top_k", -1, INT32_MAX)) s.top_k = static_cast<int32_t>(*v);
  if (auto v = f.number("min_p", 0, 1)) s.min_p = static_cast<float>(*v);
  if (auto v = f.number("typical_p", 0, 1)) s.typical_p = static_cast<float>(*v);
  if (auto v = f.number("repetition_penalty", 0, 100))
    s.repetition_penalty = static_cast<float>(*v);
  if (auto v = f.number("presence_penalty", -2, 2)) s.presence_penalty = static_cast<float>(*v);
  if (auto v = f.number("frequency_penalty", -2, 2)) s.frequency_penalty = static_cast<float>(*v);
  if (const Json* lb = f.get("logit_bias")) {
    if (!lb->is_object()) Fields::bad("logit_bias", "an object mapping token ids to biases");
    for (const auto& [key, val] : lb->items()) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0 || id > INT32_MAX || !val.is_number()) {
        Fields::bad("logit_bias", "an object mapping token ids to numbers");
      }
      s.logit_bias.emplace_back(static_cast<int32_t>(id), val.get<float>());
    }
  }
  if (auto v = f.integer("seed", INT64_MIN, INT64_MAX)) p.seed = static_cast<uint64_t>(*v);
  if (auto v = f.integer("max_tokens", 0, INT32_MAX)) p.max_tokens = *v;
  if (chat) {
    if (auto v = f.integer("max_completion_tokens", 0, INT32_MAX)) p.max_tokens = *v;
  } else if (!f.get("max_tokens")) {
    p.max_tokens = 16;  // the completions API's default
  }
  if (auto v = f.integer("n", 1, 128)) p.n = static_cast<int32_t>(*v);
  if (const Json* stop = f.get("stop")) {
    if (stop->is_string()) {
      p.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const Json& x : *stop) {
        if (!x.is_string()) Fields::bad("stop", "a string or an array of strings");
        p.stop.push_back(x.get<std::string>());
      }
    } else {
      Fields::bad("stop", "a string or an array of strings");
    }
    if (p.stop.size() > 16) throw ApiError(400, "'stop' takes at most 16 strings", "stop");
  }
  if (const Json* ids = f.get("stop_token_ids")) {
    if (!ids->is_array()) Fields::bad("stop_token_ids", "an array of token ids");
    p.stop_token_ids = token_array(*ids, "stop_token_ids");
  }
  if (auto v = f.boolean("ignore_eos")) p.ignore_eos = *v;
  if (auto v = f.boolean("stream")) p.stream = *v;
  if (const Json* so = f.get("stream_options")) {
    if (!so->is_object()) Fields::bad("stream_options", "an object");
    if (auto v = Fields(*so).boolean("include_usage")) p.include_usage = *v;
  }
  if (f.get("user") && !f.get("user")->is_string()) Fields::bad("user", "a string");
  if (auto tier = f.str("service_tier")) {
    if (*tier == "flex") {
      p.priority = GenerationParams::kBatch;
    } else if (*tier == "auto" || *tier == "default" || *tier == "priority") {
      p.priority = GenerationParams::kInteractive;
    } else {
      Fields::bad("service_tier", "one of \"auto\", \"default\", \"priority\" or \"flex\"");
    }
  }
}

// Message content as text: a string, or an array of text parts joined.
std::string content_text(const Json& content, size_t index) {
  const std::string name = fmt::format("messages[{}].content", index);
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    throw ApiError(400, fmt::format("'{}' must be a string or an array of content parts", name),
                   name);
  }
  std::string text;
  for (const Json& part : content) {
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      throw ApiError(400, fmt::format("'{}' has a part without a type", name), name);
    }
    const std::string type = part["type"].get<std::string>();
    if (type != "text") {
      throw ApiError(
          400, fmt::format("'{}': content parts of type '{}' are not supported", name, type), name);
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      throw ApiError(400, fmt::format("'{}' has a text part without text", name), name);
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

}  // namespace

ChatRequest parse_chat_request(const Json& j) {
  ChatRequest r;
  parse_generation(j, r, true);
  Fields f(j);
  const Json* messages = f.get("messages");
  if (messages == nullptr) throw ApiError(400, "'messages' is required", "messages");
  if (!messages->is_array() || messages->empty()) {
    Fields::bad("messages", "a non-empty array of messages");
  }
  r.messages = Json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    const std::string name = fmt::format("messages[{}]", i);
    if (!m.is_object()) throw ApiError(400, fmt::format("'{}' must be an object", name), name);
    auto role_it = m.find("role");
    if (role_it == m.end() || !role_it->is_string()) {
      throw ApiError(400, fmt::format("'{}.role' is required and must be a string", name),
                     name + ".role");
    }
    std::string role = role_it->get<std::string>();
    if (role != "system" && role != "developer" && role != "user" && role != "assistant" &&
        role != "tool") {
      throw ApiError(
          400, fmt::format("'{}.role' must be system, developer, user, assistant or tool", name),
          name + ".role");
    }
    Json out = m;
    if (role == "developer") out["role"] = "system";  // templates know "system"
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (role != "assistant") {
        throw ApiError(400, fmt::format("'{}.content' is required", name), name + ".content");
      }
      out["content"] = nullptr;  // an assistant turn with tool_calls only
    } else {
      out["content"] = content_text(*content, i);
    }
    r.messages.push_back(std::move(out));
  }
  if (const Json* tools = f.get("tools")) {
    if (!tools->is_array()) Fields::bad("tools", "an array");
    r.tools = *tools;
  }
  if (const Json* kw = f.get("chat_template_kwargs")) {
    if (!kw->is_object()) Fields::bad("chat_template_kwargs", "an object");
    r.template_kwargs = *kw;
  }
  if (auto v = f.boolean("add_generation_prompt")) r.add_generation_prompt = *v;
  if (auto v = f.boolean("logprobs")) r.logprobs = *v;
  if (auto v = f.integer("top_logprobs", 0, 20)) {
    r.top_logprobs = static_cast<int32_t>(*v);
    if (!r.logprobs && *v > 0) {
      throw ApiError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
    }
  }
  if (const Json* rf = f.get("response_format")) {
    if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string()) {
      Fields::bad("response_format", "an object with a type");
    }
    if ((*rf)["type"] != "text") {
      throw ApiError(400, "only response_format {\"type\": \"text\"} is supported",
                     "response_format");
    }
  }
  return r;
}

CompletionRequest parse_completion_request(const Json& j) {
  CompletionRequest r;
  parse_generation(j, r, false);
  Fields f(j);
  const Json* prompt = f.get("prompt");
  if (prompt == nullptr) throw ApiError(400, "'prompt' is required", "prompt");
  r.prompts = prompt_inputs(*prompt, "prompt");
  if (auto suffix = f.str("suffix"); suffix && !suffix->empty()) {
    throw ApiError(400, "'suffix' is not supported", "suffix");
  }
  if (auto v = f.integer("best_of", 1, 128); v && *v != r.n) {
    throw ApiError(400, "'best_of' other than n is not supported", "best_of");
  }
  if (auto v = f.boolean("echo")) r.echo = *v;
  if (auto v = f.integer("logprobs", 0, 20)) r.logprobs = static_cast<int32_t>(*v);
  return r;
}

EmbeddingRequest parse_embedding_request(const Json& j) {
  EmbeddingRequest r;
  Fields f(j);
  auto model = f.str("model");
  if (!model) throw ApiError(400, "'model' is required", "model");
  r.model = *model;
  const Json* input = f.get("input");
  if (input == nullptr) throw ApiError(400, "'input' is required", "input");
  r.inputs = prompt_inputs(*input, "input");
  if (auto fmt_ = f.str("encoding_format")) {
    if (*fmt_ != "float" && *fmt_ != "base64") {
      throw ApiError(400, "'encoding_format' must be float or base64", "encoding_format");
    }
    r.base64 = *fmt_ == "base64";
  }
  if (f.get("dimensions")) {
    throw ApiError(400, "'dimensions' is not supported: embeddings have the model's size",
                   "dimensions");
  }
  return r;
}

}  // namespace maas::server
