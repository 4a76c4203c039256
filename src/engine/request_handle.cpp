// The caller's side of a request: outputs handed from the engine thread to the caller's.
#include "engine/engine.h"

#include <algorithm>
#include <iterator>

namespace maas::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None:
      return "none";
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
    case FinishReason::Cancelled:
      return "cancelled";
    case FinishReason::Error:
      return "error";
  }
  return "?";
}

// ---- RequestHandle -------------------------------------------------------------------------

bool RequestHandle::next(std::vector<Output>& out) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !pending_.empty() || done_; });
  if (pending_.empty()) return false;
  std::move(pending_.begin(), pending_.end(), std::back_inserter(out));
  pending_.clear();
  return true;
}

bool RequestHandle::try_next(std::vector<Output>& out) {
  std::lock_guard lock(mu_);
  if (pending_.empty()) return false;
  std::move(pending_.begin(), pending_.end(), std::back_inserter(out));
  pending_.clear();
  return true;
}

bool RequestHandle::finished() const {
  std::lock_guard lock(mu_);
  return done_;
}

Usage RequestHandle::usage() const {
  std::lock_guard lock(mu_);
  return usage_;
}

std::vector<TokenOutput> RequestHandle::prompt_logprobs() const {
  std::lock_guard lock(mu_);
  return prompt_logprobs_;
}

void RequestHandle::set_notify(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  notify_ = std::move(fn);
}

std::optional<Clock::time_point> RequestHandle::first_token_at() const {
  std::lock_guard lock(mu_);
  return first_token_;
}

std::optional<Clock::time_point> RequestHandle::scheduled_at() const {
  std::lock_guard lock(mu_);
  return scheduled_;
}

void RequestHandle::push(Output o, bool final) {
  std::function<void()> notify;
  {
    std::lock_guard lock(mu_);
    if (!o.tokens.empty() && !first_token_) first_token_ = Clock::now();
    pending_.push_back(std::move(o));
    if (final) done_ = true;
    notify = notify_;
  }
  cv_.notify_all();
  if (notify) notify();
}

}  // namespace maas::engine
