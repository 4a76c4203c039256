// The OpenAI request bodies maas accepts, parsed and checked: field names and shapes as the
// OpenAI API reference gives them, plus the common extensions of vLLM and llama.cpp (top_k,
// min_p, typical_p, repetition_penalty, ignore_eos, stop_token_ids, chat_template_kwargs).
// Unknown fields are ignored; a known field of the wrong type or out of range is an ApiError
// naming it; a field maas cannot honour (suffix, best_of, images, json response formats) is
// refused rather than silently ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sampler.h"

namespace maas::server {

using Json = nlohmann::ordered_json;

// An error with its HTTP status and the fields of an OpenAI error object.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string param = {},
           std::string type = "invalid_request_error", std::string code = {});
  int status;
  std::string param, type, code;
  int retry_after = 1;  // seconds, sent with 429 and 503
};

// Constant-time comparison of secrets: the time taken does not depend on where they differ.
bool same_secret(std::string_view a, std::string_view b);

// {"error": {"message", "type", "param", "code"}}
std::string error_json(const ApiError& e);

// The body as a JSON object; malformed JSON, invalid UTF-8 or a non-object is a 400.
Json parse_body(std::string_view body);

// A prompt or input given as text or as token ids.
using PromptInput = std::variant<std::string, std::vector<int32_t>>;

struct GenerationParams {
  std::string model;
  engine::SamplingParams sampling;
  std::optional<uint64_t> seed;
  int64_t max_tokens = -1;  // -1: until the context is full
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // Priority class from OpenAI's service_tier: "auto", "default" and "priority" are interactive
  // (kInteractive), "flex" is batch (kBatch: runs when no interactive work waits).
  int32_t priority = 0;
  static constexpr int32_t kInteractive = 0, kBatch = -1;
};

struct ChatRequest : GenerationParams {
  Json messages;  // each with a string "content" (text parts joined); other keys kept
  Json tools;     // null when absent
  Json template_kwargs = Json::object();
  bool add_generation_prompt = true;
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

struct CompletionRequest : GenerationParams {
  std::vector<PromptInput> prompts;
  bool echo = false;
  int32_t logprobs = -1;  // -1: none
};

struct EmbeddingRequest {
  std::string model;
  std::vector<PromptInput> inputs;
  bool base64 = false;  // encoding_format
};

ChatRequest parse_chat_request(const Json& body);
CompletionRequest parse_completion_request(const Json& body);
EmbeddingRequest parse_embedding_request(const Json& body);

}  // namespace maas::server
