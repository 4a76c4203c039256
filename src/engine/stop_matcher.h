// Stop strings over a stream of text deltas (one per generated token), matched across delta
// boundaries.
//
// Semantics: the stream stops at the occurrence of a stop string that STARTS earliest in the
// stream (several stops starting at the same place end it the same way). The text before that
// position is emitted, the stop string and everything after it never are. Equivalently: the
// concatenation of everything returned is text.substr(0, min over stops of text.find(stop)), or the
// whole text if no stop occurs, whatever the split into deltas.
//
// Hence text is held back while it could still be the beginning of a stop, and a stop that has
// completed is only reported once no stop that started earlier can still complete (stops "bc" and
// "abcd": after "abc" nothing is emitted; "abcx" stops with "a", "abcd" with ""). If the stream
// ends while such a completed stop is pending, flush() applies it and stopped() turns true.
//
// Emitted text never ends inside a UTF-8 character, even for malformed stops or deltas (the bytes
// are held back until the character completes or the stream ends). Matching is on bytes, over the
// whole stream once (Aho-Corasick), so cost is linear in the text whatever the stops.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace maas::engine {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);  // empty strings are ignored

  struct Result {
    std::string text;  // safe to emit now
    bool stopped = false;
  };
  // After a stop (or flush) further pushes return no text, with `stopped` as it stands.
  Result push(std::string_view delta);
  // End of the stream: the held-back text, cut at a completed stop if one was pending (then
  // stopped() is true). Further calls return "".
  std::string flush();

  bool stopped() const { return stopped_; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t fail = 0;   // the node of the longest proper suffix that is also a stop prefix
    int32_t depth = 0;  // length of the prefix this node stands for
    int32_t match = 0;  // length of the longest stop that is a suffix of it (0: none)
  };
  int32_t child(int32_t node, unsigned char c) const;
  int32_t step(int32_t node, unsigned char c) const;
  // Emits the held text up to stream position `end` (less if that would split a character).
  std::string release(uint64_t end);

  std::vector<Node> nodes_;  // a trie of the stops; node 0 is the root
  int32_t state_ = 0;        // the longest suffix of the stream that is a prefix of a stop
  // Stream positions are absolute byte offsets. pending_ holds the bytes from base_ on, of which
  // those before emitted_ were released already (dropped from the front in batches, not per delta).
  std::string pending_;
  uint64_t base_ = 0;
  uint64_t emitted_ = 0;
  std::optional<uint64_t> match_start_;  // earliest start of a completed stop
  bool stopped_ = false;
  bool finished_ = false;
};

}  // namespace maas::engine
