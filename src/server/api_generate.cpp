// The generation endpoints: /v1/chat/completions, /v1/completions and /v1/embeddings. Each
// HTTP request becomes a Job: engine requests are submitted, outputs arrive on the engine thread
// through the handles' notify callback, and the answer is streamed (SSE) or sent whole.
#include <fmt/format.h>

#include <ctime>
#include <random>

#include "server/api.h"
#include "server/api_job.h"
#include "server/ledger_queue.h"
#include "server/openai_schema.h"
#include "server/rate_limiter.h"

namespace maas::server {

namespace {

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string sse(const Json& j) { return "data: " + dump(j) + "\n\n"; }

const char* finish_name(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::Stop:
      return "stop";
    case engine::FinishReason::Length:
      return "length";
    default:
      return nullptr;
  }
}

Json finish_json(engine::FinishReason r) {
  const char* name = finish_name(r);
  return name ? Json(name) : Json(nullptr);
}

Json bytes_of(const std::string& s) {
  Json a = Json::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

std::string encode_base64(const std::vector<float>& v) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  const size_t n = v.size() * sizeof(float);
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t b = (static_cast<uint32_t>(p[i]) << 16) |
                       (i + 1 < n ? static_cast<uint32_t>(p[i + 1]) << 8 : 0) |
                       (i + 2 < n ? static_cast<uint32_t>(p[i + 2]) : 0);
    out += kAlphabet[(b >> 18) & 63];
    out += kAlphabet[(b >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(b >> 6) & 63] : '=';
    out += i + 2 < n ? kAlphabet[b & 63] : '=';
  }
  return out;
}

double seconds(engine::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// A completion id unique to this server (the ledger keys records by it), independent of any
// x-request-id a client sends.
std::string new_completion_id(const char* prefix) {
  // Ids are the ledger's keys, unique across replicas sharing one database: seed each thread's
  // generator with 256 bits from the OS, not one 32-bit draw (threads of many replicas would
  // collide at about n^2 / 2^33).
  thread_local std::mt19937_64 rng = [] {
    std::random_device dev;
    std::seed_seq seq{dev(), dev(), dev(), dev(), dev(), dev(), dev(), dev()};
    return std::mt19937_64(seq);
  }();
  return fmt::format("{}{:016x}{:016x}", prefix, rng(), rng());
}

}  // namespace

// ---- Job -----------------------------------------------------------------------------------

void Api::Job::cancel() {
  std::lock_guard lock(mu);
  for (auto& h : handles) h->cancel();
}

Json Api::Job::usage_json() const {
  int64_t prompt = 0, cached = 0, completion = 0;
  for (const auto& h : handles) {
    const auto u = h->usage();
    prompt += u.prompt_tokens;
    cached += u.cached_tokens;
    completion += u.completion_tokens;
  }
  Json u = {{"prompt_tokens", prompt}, {"total_tokens", prompt + completion}};
  if (kind != Kind::Embedding) {
    u["completion_tokens"] = completion;
    u["prompt_tokens_details"] = {{"cached_tokens", cached}};
  }
  return u;
}

Json Api::Job::chat_logprobs(const std::vector<engine::TokenOutput>& tokens) const {
  Json content = Json::array();
  for (const auto& t : tokens) {
    const std::string piece = tok->token_to_piece(t.token);
    Json top = Json::array();
    for (const auto& alt : t.top) {
      const std::string p = tok->token_to_piece(alt.token);
      top.push_back({{"token", p}, {"logprob", alt.logprob}, {"bytes", bytes_of(p)}});
    }
    content.push_back({{"token", piece},
                       {"logprob", t.logprob},
                       {"bytes", bytes_of(piece)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

// The legacy completions format: parallel arrays, top_logprobs as {token: logprob} maps. With
// echo, the prompt's tokens come first (the first has no logprob).
Json Api::Job::completion_logprobs(size_t choice, const std::vector<engine::TokenOutput>& tokens,
                                   bool with_prompt, size_t text_offset) const {
  Json toks = Json::array(), lps = Json::array(), tops = Json::array(), offsets = Json::array();
  auto add = [&](int32_t id, Json lp, const std::vector<engine::TokenLogprob>& top) {
    const std::string piece = tok->token_to_piece(id);
    toks.push_back(piece);
    lps.push_back(std::move(lp));
    if (top.empty() && lps.back().is_null()) {
      tops.push_back(nullptr);
    } else {
      Json m = Json::object();
      for (const auto& alt : top) m[tok->token_to_piece(alt.token)] = alt.logprob;
      tops.push_back(m);
    }
    offsets.push_back(text_offset);
    text_offset += piece.size();
  };
  if (with_prompt) {
    const auto& prompt = prompts[choice / static_cast<size_t>(n)];
    const auto plp = handles[choice / static_cast<size_t>(n)]->prompt_logprobs();
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (i == 0 || i - 1 >= plp.size()) {
        add(prompt[i], nullptr, {});
      } else {
        add(prompt[i], plp[i - 1].logprob, plp[i - 1].top);
      }
    }
  }
  for (const auto& t : tokens) add(t.token, t.logprob, t.top);
  return {
      {"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

void Api::Job::stream_output(size_t choice, const engine::Output& out) {
  const bool has_logprobs = logprobs >= 0 && !out.tokens.empty();
  if (out.text.empty() && !has_logprobs && out.finish == engine::FinishReason::None) return;
  Json c = {{"index", choice}};
  if (kind == Kind::Chat) {
    Json delta = Json::object();
    if (!out.text.empty()) delta["content"] = out.text;
    c["delta"] = delta;
    c["logprobs"] = has_logprobs ? chat_logprobs(out.tokens) : Json(nullptr);
  } else {
    c["text"] = out.text;
    c["logprobs"] =
        has_logprobs ? completion_logprobs(choice, out.tokens, false, 0) : Json(nullptr);
  }
  c["finish_reason"] = finish_json(out.finish);
  Json chunk = {{"id", id},
                {"object", kind == Kind::Chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model_id},
                {"choices", Json::array({c})}};
  if (include_usage) chunk["usage"] = nullptr;
  writer->write(sse(chunk));
}

void Api::Job::pump() {
  std::function<void()> done;
  {
    std::lock_guard lock(mu);
    if (responded) return;
    pump_locked();
    if (responded) done = std::move(on_done);
  }
  if (done) done();
}

void Api::Job::pump_locked() {
  const auto now = engine::Clock::now();
  for (size_t p = 0; p < handles.size(); ++p) {
    if (handle_done[p]) continue;
    std::vector<engine::Output> outs;
    handles[p]->try_next(outs);
    for (auto& out : outs) {
      const size_t ci = p * static_cast<size_t>(n) + static_cast<size_t>(out.index);
      Choice& c = choices[ci];
      if (!out.tokens.empty()) {
        if (c.last_token != engine::Clock::time_point{}) {
          metrics->observe_inter_token(seconds(now - c.last_token));
        }
        c.last_token = now;
      }
      c.text += out.text;
      if (kind == Kind::Embedding) c.embedding = out.embedding;
      for (const auto& t : out.tokens) c.tokens.push_back(t);
      if (out.finish != engine::FinishReason::None) {
        c.finish = out.finish;
        c.error = out.error;
      }
      if (stream && !writer->closed() && out.finish != engine::FinishReason::Cancelled) {
        if (out.finish == engine::FinishReason::Error) {
          writer->write(sse(Json::parse(error_json(ApiError(500, out.error, {}, "server_error")))));
        } else {
          stream_output(ci, out);
        }
      }
    }
    if (handles[p]->finished()) {
      // The handle is done once its final output was taken; take anything left.
      std::vector<engine::Output> rest;
      if (handles[p]->try_next(rest)) {
        // Cannot happen after finished() with outputs drained above, but stay safe: re-pump.
        for (auto& out : rest) {
          const size_t ci = p * static_cast<size_t>(n) + static_cast<size_t>(out.index);
          choices[ci].text += out.text;
          if (out.finish != engine::FinishReason::None) choices[ci].finish = out.finish;
          if (stream && !writer->closed()) stream_output(ci, out);
        }
      }
      handle_done[p] = true;
      const auto& h = *handles[p];
      if (auto s = h.scheduled_at()) metrics->observe_queue_time(seconds(*s - h.submitted_at()));
      if (auto f = h.first_token_at()) metrics->observe_ttft(seconds(*f - h.submitted_at()));
      metrics->observe_e2e(seconds(now - h.submitted_at()));
      const auto u = h.usage();
      metrics->add_tokens(u.prompt_tokens, u.cached_tokens, u.completion_tokens);
    }
  }
  for (bool d : handle_done) {
    if (!d) return;
  }
  finish_response();
}

void Api::Job::finish_response() {
  responded = true;
  bool cancelled = false;
  std::string error;
  for (const Choice& c : choices) {
    cancelled = cancelled || c.finish == engine::FinishReason::Cancelled;
    if (c.finish == engine::FinishReason::Error) error = c.error;
  }
  auto self = shared_from_this();
  if (cancelled || writer->closed()) {
    // The client went away (status 499, nginx's convention); what it used is still billed.
    settle(499, "cancelled", [self] {
      if (self->stream) self->writer->end_stream();
    });
    return;
  }
  const std::string finish =
      choices.empty() ? "stop"
                      : (finish_name(choices[0].finish) ? finish_name(choices[0].finish) : "stop");
  if (stream) {
    std::string tail;
    if (include_usage) {
      tail += sse({{"id", id},
                   {"object", kind == Kind::Chat ? "chat.completion.chunk" : "text_completion"},
                   {"created", created},
                   {"model", model_id},
                   {"choices", Json::array()},
                   {"usage", usage_json()}});
    }
    tail += "data: [DONE]\n\n";
    settle(200, finish, [self, tail = std::move(tail)] {
      self->writer->write(tail);
      self->writer->end_stream();
    });
    return;
  }
  if (!error.empty()) {
    settle(500, "error", [self, error] {
      self->writer->send(500, "application/json",
                         error_json(ApiError(500, error, {}, "server_error")));
    });
    return;
  }
  Json body;
  if (kind == Kind::Embedding) {
    Json data = Json::array();
    for (size_t i = 0; i < choices.size(); ++i) {
      data.push_back({{"object", "embedding"},
                      {"index", i},
                      {"embedding", base64 ? Json(encode_base64(choices[i].embedding))
                                           : Json(choices[i].embedding)}});
    }
    body = {{"object", "list"}, {"data", data}, {"model", model_id}, {"usage", usage_json()}};
  } else {
    Json out = Json::array();
    for (size_t i = 0; i < choices.size(); ++i) {
      const Choice& c = choices[i];
      Json choice = {{"index", i}};
      if (kind == Kind::Chat) {
        choice["message"] = {{"role", "assistant"}, {"content", c.text}};
        choice["logprobs"] = logprobs >= 0 ? chat_logprobs(c.tokens) : Json(nullptr);
      } else {
        const auto& prompt = prompts[i / static_cast<size_t>(n)];
        const std::string prompt_text = echo ? tok->decode(prompt) : "";
        choice["text"] = prompt_text + c.text;
        choice["logprobs"] =
            logprobs >= 0 ? completion_logprobs(i, c.tokens, echo, 0) : Json(nullptr);
      }
      choice["finish_reason"] = finish_json(c.finish);
      out.push_back(std::move(choice));
    }
    body = {{"id", id},
            {"object", kind == Kind::Chat ? "chat.completion" : "text_completion"},
            {"created", created},
            {"model", model_id},
            {"choices", out},
            {"usage", usage_json()}};
  }
  settle(200, finish,
         [self, text = dump(body)] { self->writer->send(200, "application/json", text); });
}

// Counts the request, then records it in the usage ledger and only afterwards sends the bytes
// that carry its usage (`deliver`): what is billed is never less than what a client saw. The
// ledger commits to disk, so this runs on the ledger's thread, not the engine's. If the record
// cannot be written the client gets an error instead of the usage.
void Api::Job::settle(int status, const std::string& finish, std::function<void()> deliver) {
  // Every output is in: the model is no longer needed. Its lease ends before the final bytes go
  // out, so a client's next request already finds the model idle (evictable, unloadable).
  model.reset();
  tok = nullptr;
  metrics->count_request(endpoint, status);
  UsageRecord rec;
  rec.request_id = request_id;
  rec.tenant = tenant;
  rec.key_id = key_id;
  rec.model = model_id;
  for (const auto& h : handles) {
    const auto u = h->usage();
    rec.prompt_tokens += u.prompt_tokens;
    rec.cached_tokens += u.cached_tokens;
    rec.completion_tokens += u.completion_tokens;
  }
  // The rate limiter's reservation becomes what was used.
  if (limiter != nullptr) {
    limiter->settle(limit_scope_ids(tenant, key_id), grant,
                    rec.prompt_tokens + rec.completion_tokens);
  }
  if (ledger == nullptr) {
    deliver();
    return;
  }
  rec.status = status;
  rec.finish_reason = finish;
  // Engine times are steady-clock; the ledger wants wall-clock milliseconds.
  const auto wall_now = std::chrono::system_clock::now();
  const auto steady_now = engine::Clock::now();
  auto wall_ms = [&](engine::Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               (wall_now - (steady_now - t)).time_since_epoch())
        .count();
  };
  rec.ended_at = wall_ms(steady_now);
  rec.queued_at = rec.ended_at;
  for (const auto& h : handles) {
    rec.queued_at = std::min(rec.queued_at, wall_ms(h->submitted_at()));
    if (auto f = h->first_token_at()) {
      const int64_t ms = wall_ms(*f);
      rec.first_token_at = rec.first_token_at ? std::min(*rec.first_token_at, ms) : ms;
    }
  }
  auto self = shared_from_this();
  ledger->push(std::move(rec), std::move(deliver), [self](const std::string& why) {
    const ApiError e(500, "the usage of this request could not be recorded: " + why, {},
                     "server_error");
    if (self->stream) {
      self->writer->write(sse(Json::parse(error_json(e))));
      self->writer->end_stream();
    } else {
      self->writer->send(500, "application/json", error_json(e));
    }
  });
}

// ---- Endpoints -----------------------------------------------------------------------------

namespace {

std::vector<RateLimiter::Scope> limit_scopes(const Principal& who) {
  const auto ids = limit_scope_ids(who.tenant, who.key_id);
  return {{ids[0], "", who.key_limits.rpm, who.key_limits.tpm},
          {ids[1], "tenant_", who.tenant_limits.rpm, who.tenant_limits.tpm}};
}

}  // namespace

uint64_t Api::admit(const Principal& who, int64_t max_tokens_total) {
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  const int64_t day_ms = 86400000;
  const int64_t day_start = now_ms - now_ms % day_ms;
  auto month_start = [&] {
    const std::time_t secs = static_cast<std::time_t>(now_ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    return static_cast<int64_t>(timegm(&tm)) * 1000;
  };
  // Quotas count what the ledger holds, for the key and for its tenant.
  auto check_quotas = [&](const Limits& limits, bool tenant, const std::string& id) {
    if (!config_.tokens_used) return;
    const std::string prefix = tenant ? "tenant_" : "";
    const std::string whose = tenant ? "the tenant's " : "";
    if (limits.daily_tokens && config_.tokens_used(tenant, id, day_start) >= *limits.daily_tokens) {
      ApiError e(
          429,
          fmt::format("Quota exceeded: {}daily tokens (limit {})", whose, *limits.daily_tokens),
          prefix + "daily_tokens", "rate_limit_exceeded", "quota_exceeded");
      e.retry_after = static_cast<int>((day_start + day_ms - now_ms) / 1000) + 1;
      throw e;
    }
    if (limits.monthly_tokens &&
        config_.tokens_used(tenant, id, month_start()) >= *limits.monthly_tokens) {
      ApiError e(
          429,
          fmt::format("Quota exceeded: {}monthly tokens (limit {})", whose, *limits.monthly_tokens),
          prefix + "monthly_tokens", "rate_limit_exceeded", "quota_exceeded");
      e.retry_after = 3600;
      throw e;
    }
  };
  check_quotas(who.key_limits, false, who.key_id);
  check_quotas(who.tenant_limits, true, who.tenant);
  uint64_t grant = 0;
  if (auto refusal =
          limiter_->admit(limit_scopes(who), max_tokens_total, RateLimiter::Clock::now(), &grant)) {
    ApiError e(429, refusal->message, refusal->limit, "rate_limit_exceeded", "rate_limit_exceeded");
    e.retry_after = refusal->retry_after;
    throw e;
  }
  return grant;
}

void Api::start_job(std::shared_ptr<Job> job, std::vector<engine::Request> requests,
                    const Principal& who) {
  ServedModel& m = *job->model;
  // The most tokens these requests can use: what the rate limiter reserves.
  int64_t most = 0;
  for (const auto& r : requests) {
    const auto prompt = static_cast<int64_t>(r.prompt.size());
    const int64_t gen =
        r.max_tokens >= 0 ? r.max_tokens : std::max<int64_t>(0, m.engine->max_context() - prompt);
    most += prompt + gen * std::max(1, r.n);
  }
  job->limiter = limiter_.get();
  job->grant = admit(who, most);
  job->metrics = &metrics_;
  job->ledger = ledger_.get();
  job->tok = m.tok.get();
  job->created = static_cast<int64_t>(std::time(nullptr));
  for (const auto& r : requests) job->prompts.push_back(r.prompt);
  job->choices.resize(requests.size() * static_cast<size_t>(job->n));
  {
    std::lock_guard lock(job->mu);
    try {
      for (auto& r : requests) job->handles.push_back(m.engine->submit(std::move(r)));
    } catch (const engine::InvalidRequest& e) {
      for (auto& h : job->handles) h->cancel();
      limiter_->settle(limit_scope_ids(who.tenant, who.key_id), job->grant, 0);
      throw ApiError(400, e.what());
    } catch (const engine::QueueFull& e) {
      for (auto& h : job->handles) h->cancel();
      limiter_->settle(limit_scope_ids(who.tenant, who.key_id), job->grant, 0);
      throw ApiError(429, e.what(), {}, "rate_limit_exceeded", "server_busy");
    }
    job->handle_done.assign(job->handles.size(), false);
    if (job->stream) {
      job->writer->start_stream(200, "text/event-stream", {{"cache-control", "no-cache"}});
      if (job->kind == Job::Kind::Chat) {
        for (size_t i = 0; i < job->choices.size(); ++i) {
          Json chunk = {
              {"id", job->id},
              {"object", "chat.completion.chunk"},
              {"created", job->created},
              {"model", job->model_id},
              {"choices", Json::array({{{"index", i},
                                        {"delta", {{"role", "assistant"}, {"content", ""}}},
                                        {"logprobs", nullptr},
                                        {"finish_reason", nullptr}}})}};
          if (job->include_usage) chunk["usage"] = nullptr;
          job->writer->write(sse(chunk));
        }
      } else if (job->echo) {
        for (size_t i = 0; i < job->choices.size(); ++i) {
          Json chunk = {
              {"id", job->id},
              {"object", "text_completion"},
              {"created", job->created},
              {"model", job->model_id},
              {"choices",
               Json::array({{{"index", i},
                             {"text", m.tok->decode(job->prompts[i / static_cast<size_t>(job->n)])},
                             {"logprobs", nullptr},
                             {"finish_reason", nullptr}}})}};
          job->writer->write(sse(chunk));
        }
      }
    }
  }
  std::weak_ptr<Job> weak = job;
  {
    std::lock_guard lock(jobs_mu_);
    jobs_[job.get()] = job;
  }
  job->on_done = [this, raw = job.get()] {
    std::lock_guard lock(jobs_mu_);
    jobs_.erase(raw);
  };
  job->writer->on_close([weak] {
    if (auto j = weak.lock()) j->cancel();
  });
  for (auto& h : job->handles) {
    h->set_notify([weak] {
      if (auto j = weak.lock()) j->pump();
    });
  }
  job->pump();  // outputs that arrived before the callbacks were set
}

namespace {

// A job for one HTTP request: its kind, a server-unique completion id (also the ledger's key),
// the model's lease, the caller and the writer (a copy: if submission fails the caller answers
// through its own).
std::shared_ptr<Api::Job> new_job(Api::Job::Kind kind, const char* endpoint, const char* prefix,
                                  const ModelLease& m, const std::shared_ptr<ResponseWriter>& w,
                                  const Principal& who) {
  auto job = std::make_shared<Api::Job>();
  job->kind = kind;
  job->endpoint = endpoint;
  job->id = new_completion_id(prefix);
  job->model = m.model;
  job->model_id = m->id;
  job->request_id = job->id;
  job->tenant = who.tenant;
  job->key_id = who.key_id;
  job->writer = w;
  return job;
}

// A prompt given as text (tokenized with the model's BOS, special tokens parsed) or as ids.
std::vector<int32_t> prompt_tokens(const PromptInput& p, const tokenizer::Tokenizer& tok) {
  if (const auto* text = std::get_if<std::string>(&p)) return tok.encode(*text, true, true);
  return std::get<std::vector<int32_t>>(p);
}

engine::Request base_request(const GenerationParams& p, const Principal& who) {
  engine::Request r;
  r.cache_salt = who.tenant;  // tenants never share prefix-cache entries
  r.tenant = who.tenant;      // and share the engine by weight
  r.tenant_weight = who.tenant_weight;
  r.priority = p.priority;
  r.sampling = p.sampling;
  r.seed = p.seed;
  r.max_tokens = p.max_tokens;
  r.stop = p.stop;
  r.stop_token_ids = p.stop_token_ids;
  r.ignore_eos = p.ignore_eos;
  r.n = p.n;
  return r;
}

}  // namespace

void Api::chat(const ChatRequest& cr, const ModelLease& lease, std::shared_ptr<ResponseWriter> w,
               const Principal& who) {
  ServedModel& m = *lease;
  std::string text;
  bool from_template = false;
  if (m.chat_template) {
    const auto piece = [&](int32_t id) { return id >= 0 ? m.tok->piece(id) : std::string(); };
    try {
      text =
          tmpl::render_chat(*m.chat_template, cr.messages, cr.add_generation_prompt,
                            piece(m.tok->bos()), piece(m.tok->eos()), cr.tools, cr.template_kwargs);
    } catch (const tmpl::Error& e) {
      throw ApiError(400,
                     fmt::format("the model's chat template refused the messages: {}", e.what()),
                     "messages");
    }
    from_template = true;
  } else {
    // No template (a base model): the contents, one message per line.
    for (size_t i = 0; i < cr.messages.size(); ++i) {
      if (i > 0) text += '\n';
      if (cr.messages[i]["content"].is_string())
        text += cr.messages[i]["content"].get<std::string>();
    }
  }
  engine::Request r = base_request(cr, who);
  // A template writes BOS itself where the model wants one.
  r.prompt = m.tok->encode(text, /*add_special=*/!from_template, /*parse_special=*/true);
  r.logprobs = cr.logprobs ? cr.top_logprobs : -1;
  auto job = new_job(Job::Kind::Chat, "/v1/chat/completions", "chatcmpl-", lease, w, who);
  job->stream = cr.stream;
  job->include_usage = cr.stream && cr.include_usage;
  job->n = cr.n;
  job->logprobs = r.logprobs;
  std::vector<engine::Request> reqs;
  reqs.push_back(std::move(r));
  start_job(job, std::move(reqs), who);
}

void Api::completions(const CompletionRequest& cr, const ModelLease& lease,
                      std::shared_ptr<ResponseWriter> w, const Principal& who) {
  ServedModel& m = *lease;
  std::vector<engine::Request> reqs;
  for (const PromptInput& p : cr.prompts) {
    engine::Request r = base_request(cr, who);
    r.prompt = prompt_tokens(p, *m.tok);
    r.logprobs = cr.logprobs;
    r.prompt_logprobs = cr.echo && cr.logprobs >= 0;
    reqs.push_back(std::move(r));
  }
  auto job = new_job(Job::Kind::Completion, "/v1/completions", "cmpl-", lease, w, who);
  job->stream = cr.stream;
  job->include_usage = cr.stream && cr.include_usage;
  job->n = cr.n;
  job->echo = cr.echo;
  job->logprobs = cr.logprobs;
  start_job(job, std::move(reqs), who);
}

void Api::embeddings(const EmbeddingRequest& er, const ModelLease& lease,
                     std::shared_ptr<ResponseWriter> w, const Principal& who) {
  ServedModel& m = *lease;
  std::vector<engine::Request> reqs;
  for (const PromptInput& p : er.inputs) {
    engine::Request r;
    r.prompt = prompt_tokens(p, *m.tok);
    r.embedding = true;
    r.cache_salt = who.tenant;
    r.tenant = who.tenant;
    r.tenant_weight = who.tenant_weight;
    reqs.push_back(std::move(r));
  }
  auto job = new_job(Job::Kind::Embedding, "/v1/embeddings", "embd-", lease, w, who);
  job->base64 = er.base64;
  start_job(job, std::move(reqs), who);
}

}  // namespace maas::server
