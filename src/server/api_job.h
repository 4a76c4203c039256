// One HTTP request's generations in flight: the engine handles it submitted, what each choice
// produced so far, and how to answer (a whole JSON body, or a stream of server-sent events).
// Internal to the server layer.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/api.h"
#include "server/openai_schema.h"

namespace maas::server {

// The rate-limiter windows of a request: its key's, then its tenant's.
inline std::vector<std::string> limit_scope_ids(const std::string& tenant,
                                                const std::string& key_id) {
  return {"key:" + key_id, "tenant:" + tenant};
}

struct Api::Job : std::enable_shared_from_this<Api::Job> {
  enum class Kind { Chat, Completion, Embedding };
  Kind kind = Kind::Chat;
  // The lease on the model: keeps its engine and tokenizer alive until the job is gone, even if
  // the model is unloaded, replaced or removed meanwhile.
  std::shared_ptr<ServedModel> model;
  std::string endpoint, id, model_id;
  int64_t created = 0;
  std::shared_ptr<ResponseWriter> writer;
  Metrics* metrics = nullptr;
  const tokenizer::Tokenizer* tok = nullptr;
  bool stream = false, include_usage = false, echo = false, base64 = false;
  int32_t n = 1;          // choices per prompt
  int32_t logprobs = -1;  // -1: none; else the number of top alternatives
  std::vector<std::vector<int32_t>> prompts;

  struct Choice {
    std::string text;
    std::vector<engine::TokenOutput> tokens;
    engine::FinishReason finish = engine::FinishReason::None;
    std::string error;
    std::vector<float> embedding;
    engine::Clock::time_point last_token{};
  };

  std::mutex mu;
  std::vector<std::shared_ptr<engine::RequestHandle>> handles;
  std::vector<Choice> choices;  // prompts.size() * n, choice p * n + i
  std::vector<bool> handle_done;
  bool responded = false;
  std::function<void()> on_done;  // called once, without locks held, after the answer
  // Usage ledger (null: none) and what it records about the caller.
  LedgerQueue* ledger = nullptr;
  RateLimiter* limiter = nullptr;
  uint64_t grant = 0;  // the rate limiter's reservation
  std::string request_id, tenant, key_id;

  // Takes every output the handles have, streams or stores it, and answers when all are done.
  // Called from the engine thread (notify) and once by the handler after submitting.
  void pump();
  void cancel();

 private:
  void pump_locked();
  void stream_output(size_t choice, const engine::Output& out);
  void finish_response();
  void settle(int status, const std::string& finish, std::function<void()> deliver);
  Json usage_json() const;
  Json chat_logprobs(const std::vector<engine::TokenOutput>& tokens) const;
  Json completion_logprobs(size_t choice, const std::vector<engine::TokenOutput>& tokens,
                           bool with_prompt, size_t text_offset) const;
  std::string chunk_header() const;
};

}  // namespace maas::server
