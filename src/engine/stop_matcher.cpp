#include "engine/stop_matcher.h"

#include <deque>

namespace maas::engine {

namespace {

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// The largest end <= m such that s[0, end) does not stop inside a UTF-8 character that s[0, m)
// has started; m itself when the bytes are not UTF-8 to begin with.
size_t utf8_safe_end(const std::string& s, size_t m) {
  size_t j = m;
  int continuations = 0;
  while (j > 0 && continuations < 3 && is_continuation(static_cast<unsigned char>(s[j - 1]))) {
    --j;
    ++continuations;
  }
  if (j == 0) return m;
  const auto lead = static_cast<unsigned char>(s[j - 1]);
  const size_t need = (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 1;
  return m - (j - 1) >= need ? m : j - 1;
}

}  // namespace

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  nodes_.emplace_back();
  for (const std::string& stop : stops) {
    int32_t node = 0;
    for (char ch : stop) {
      const auto c = static_cast<unsigned char>(ch);
      int32_t next = child(node, c);
      if (next == 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_.back().depth = nodes_[static_cast<size_t>(node)].depth + 1;
        nodes_[static_cast<size_t>(node)].children.emplace_back(c, next);
      }
      node = next;
    }
    if (node != 0)
      nodes_[static_cast<size_t>(node)].match = nodes_[static_cast<size_t>(node)].depth;
  }
  // Failure links breadth first, so a node's link (always shallower) is final before its own.
  std::deque<int32_t> queue;
  for (const auto& [c, next] : nodes_[0].children) queue.push_back(next);
  while (!queue.empty()) {
    const int32_t node = queue.front();
    queue.pop_front();
    Node& n = nodes_[static_cast<size_t>(node)];
    const Node& fail = nodes_[static_cast<size_t>(n.fail)];
    if (n.match == 0) n.match = fail.match;
    for (const auto& [c, next] : n.children) {
      nodes_[static_cast<size_t>(next)].fail = node == 0 ? 0 : step(n.fail, c);
      queue.push_back(next);
    }
  }
}

int32_t StopMatcher::child(int32_t node, unsigned char c) const {
  for (const auto& [label, next] : nodes_[static_cast<size_t>(node)].children) {
    if (label == c) return next;
  }
  return 0;
}

int32_t StopMatcher::step(int32_t node, unsigned char c) const {
  while (true) {
    const int32_t next = child(node, c);
    if (next != 0 || node == 0) return next;
    node = nodes_[static_cast<size_t>(node)].fail;
  }
}

StopMatcher::Result StopMatcher::push(std::string_view delta) {
  if (stopped_ || finished_) return {"", stopped_};
  for (char ch : delta) {
    state_ = step(state_, static_cast<unsigned char>(ch));
    pending_.push_back(ch);
    const uint64_t pos = base_ + pending_.size();
    const Node& node = nodes_[static_cast<size_t>(state_)];
    // The longest stop ending here is the one that starts earliest.
    if (node.match > 0 &&
        (!match_start_ || pos - static_cast<uint64_t>(node.match) < *match_start_))
      match_start_ = pos - static_cast<uint64_t>(node.match);
    // Where the earliest stop that may still complete starts.
    const uint64_t live = pos - static_cast<uint64_t>(node.depth);
    if (match_start_ && live >= *match_start_) {
      stopped_ = true;
      return {release(*match_start_), true};
    }
  }
  // Nothing before `live` can belong to a stop any more (and a completed stop starts after it).
  const uint64_t live =
      base_ + pending_.size() - static_cast<uint64_t>(nodes_[static_cast<size_t>(state_)].depth);
  std::string text = release(live);
  // Drop released bytes from the front once they are a good part of the buffer.
  const size_t released = static_cast<size_t>(emitted_ - base_);
  if (released >= 256 && released * 2 >= pending_.size()) {
    pending_.erase(0, released);
    base_ = emitted_;
  }
  return {std::move(text), false};
}

std::string StopMatcher::release(uint64_t end) {
  const size_t from = static_cast<size_t>(emitted_ - base_);
  const size_t to = std::max(from, utf8_safe_end(pending_, static_cast<size_t>(end - base_)));
  emitted_ = base_ + to;
  return pending_.substr(from, to - from);
}

std::string StopMatcher::flush() {
  if (stopped_ || finished_) {
    finished_ = true;
    return "";
  }
  finished_ = true;
  std::string text;
  if (match_start_) {
    stopped_ = true;
    text = release(*match_start_);
  } else {
    text = pending_.substr(static_cast<size_t>(emitted_ - base_));
  }
  pending_.clear();
  return text;
}

}  // namespace maas::engine
