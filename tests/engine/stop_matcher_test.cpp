// StopMatcher against brute force: for every split of a text into deltas, the emitted text must be
// the text up to the earliest-starting stop occurrence, and after every delta exactly the part that
// can no longer belong to a stop must have been released.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "engine/stop_matcher.h"

namespace maas::engine {
namespace {

// ---- Brute force ----

size_t first_stop(const std::string& text, const std::vector<std::string>& stops) {
  size_t first = std::string::npos;
  for (const auto& s : stops) {
    if (!s.empty()) first = std::min(first, text.find(s));
  }
  return first;
}

// Whether a stop string could start at `i` of the text received so far: one occurs there, or the
// rest of the text is the beginning of one.
bool may_start_at(const std::string& text, size_t i, const std::vector<std::string>& stops) {
  const std::string rest = text.substr(i);
  for (const auto& s : stops) {
    if (s.empty()) continue;
    if (rest.compare(0, s.size(), s) == 0) return true;
    if (rest.size() < s.size() && s.compare(0, rest.size(), rest) == 0) return true;
  }
  return false;
}

// The state after receiving `text`: stopped (the earliest completed stop can no longer be beaten
// by an earlier one) and how much may have been emitted.
struct Expected {
  bool stopped;
  std::string emitted;
};

Expected expected_after(const std::string& text, const std::vector<std::string>& stops) {
  size_t live = text.size();
  for (size_t i = 0; i < text.size(); ++i) {
    if (may_start_at(text, i, stops)) {
      live = i;
      break;
    }
  }
  const size_t complete = first_stop(text, stops);
  if (complete != std::string::npos && live == complete) return {true, text.substr(0, complete)};
  return {false, text.substr(0, live)};
}

bool is_whole_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80         ? 1
                       : (c >> 5) == 6  ? 2
                       : (c >> 4) == 14 ? 3
                       : (c >> 3) == 30 ? 4
                                        : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

// Feeds the deltas, checking the state after each against brute force, and returns the output.
std::string feed(const std::vector<std::string>& stops, const std::vector<std::string>& deltas) {
  StopMatcher m(stops);
  std::string received, emitted;
  bool stopped = false;
  for (const auto& d : deltas) {
    const auto r = m.push(d);
    EXPECT_TRUE(is_whole_utf8(r.text)) << "chunk '" << r.text << "'";
    emitted += r.text;
    if (stopped) {
      EXPECT_EQ(r.text, "");
      EXPECT_TRUE(r.stopped);
      continue;
    }
    received += d;
    const Expected e = expected_after(received, stops);
    EXPECT_EQ(r.stopped, e.stopped) << "after '" << received << "'";
    EXPECT_EQ(emitted, e.emitted) << "after '" << received << "'";
    stopped = r.stopped;
  }
  const std::string rest = m.flush();
  EXPECT_TRUE(is_whole_utf8(rest));
  emitted += rest;
  EXPECT_EQ(m.flush(), "");
  EXPECT_EQ(m.push("more").text, "");
  EXPECT_EQ(m.stopped(), first_stop(received, stops) != std::string::npos);
  return emitted;
}

std::string brute_output(const std::string& text, const std::vector<std::string>& stops) {
  return text.substr(0, first_stop(text, stops));
}

// ---- Tests ----

TEST(StopMatcher, EveryDeltaSplitMatchesBruteForce) {
  // Characters of 1 to 4 bytes, some sharing lead bytes (é/è, €/₤) to trap byte-level mistakes.
  const std::vector<std::string> alphabet = {
      "a", "b", "\xC3\xA9", "\xC3\xA8", "\xE2\x82\xAC", "\xE2\x82\xA4", "\xF0\x9F\x98\x80", " "};
  std::mt19937_64 rng(2024);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  int texts = 0, splits = 0, stopped = 0;
  for (int trial = 0; trial < 400; ++trial) {
    // Small alphabets make overlaps and repeats common.
    const size_t letters = 2 + pick(alphabet.size() - 1);
    std::vector<std::string> stops;
    const size_t n_stops = 1 + pick(3);
    for (size_t s = 0; s < n_stops; ++s) {
      std::string stop;
      for (size_t k = 1 + pick(4); k > 0; --k) stop += alphabet[pick(letters)];
      stops.push_back(stop);
    }
    if (trial % 10 == 0) stops.push_back("");  // ignored
    std::vector<std::string> chars;            // the text, one character each
    for (size_t k = pick(12); k > 0; --k) {
      if (pick(5) == 0) {  // plant (the beginning of) a stop
        const std::string& s = stops[pick(stops.size())];
        size_t i = 0;
        const size_t cut = pick(2) == 0 ? s.size() : pick(s.size() + 1);
        while (i < cut) {
          const auto c = static_cast<unsigned char>(s[i]);
          const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
          chars.push_back(s.substr(i, len));
          i += len;
        }
      } else {
        chars.push_back(alphabet[pick(letters)]);
      }
    }
    std::string text;
    for (const auto& c : chars) text += c;
    const std::string expected = brute_output(text, stops);
    stopped += expected.size() < text.size();
    ++texts;
    // Every split at character boundaries when there are few, else random ones.
    const size_t gaps = chars.empty() ? 0 : chars.size() - 1;
    const bool exhaustive = gaps <= 9;
    const uint64_t n_splits = exhaustive ? (uint64_t{1} << gaps) : 300;
    for (uint64_t mask = 0; mask < n_splits; ++mask) {
      const uint64_t cuts = exhaustive ? mask : rng();
      std::vector<std::string> deltas(1);
      for (size_t i = 0; i < chars.size(); ++i) {
        deltas.back() += chars[i];
        if (i < gaps && (cuts >> i & 1)) deltas.emplace_back();
      }
      if (mask % 7 == 3) deltas.insert(deltas.begin() + 1, "");  // empty deltas are harmless
      ASSERT_EQ(feed(stops, deltas), expected) << "text '" << text << "'";
      ++splits;
      if (HasFailure()) return;
    }
  }
  EXPECT_GT(stopped, 100);  // the generator does produce stops (and texts without)
  EXPECT_LT(stopped, texts);
  EXPECT_GT(splits, 20000);
}

std::vector<std::string> bytes_of(const std::string& s) {
  std::vector<std::string> out;
  for (char c : s) out.emplace_back(1, c);
  return out;
}

TEST(StopMatcher, SelfOverlappingStops) {
  EXPECT_EQ(feed({"aab"}, bytes_of("aaab")), "a");
  EXPECT_EQ(feed({"aab"}, {"aaab"}), "a");
  EXPECT_EQ(feed({"abab"}, bytes_of("abaababx")), "aba");
  EXPECT_EQ(feed({"aaa"}, bytes_of("aa aaaa")), "aa ");
}

TEST(StopMatcher, StopThatIsAPrefixOfAnother) {
  // Same start: the shorter one ends the stream at once.
  StopMatcher m({"abc", "ab"});
  EXPECT_EQ(m.push("xa").text, "x");
  const auto r = m.push("b");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(feed({"ab", "abc"}, bytes_of("xabcd")), "x");
}

TEST(StopMatcher, EarlierStartBeatsEarlierEnd) {
  // "bc" completes first, but "abcd" started earlier: wait until it fails or completes.
  StopMatcher m({"bc", "abcd"});
  EXPECT_EQ(m.push("ab").text, "");
  auto r = m.push("c");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.text, "");
  r = m.push("x");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "a");
  EXPECT_EQ(feed({"bc", "abcd"}, bytes_of("abcd")), "");
  // The stream ends while the completed "bc" is pending: flush applies it.
  StopMatcher ending({"bc", "abcd"});
  EXPECT_EQ(ending.push("zabc").text, "z");
  EXPECT_FALSE(ending.stopped());
  EXPECT_EQ(ending.flush(), "a");
  EXPECT_TRUE(ending.stopped());
}

TEST(StopMatcher, FlushReleasesHeldTextWithoutStopping) {
  StopMatcher m({"</s>"});
  EXPECT_EQ(m.push("hello <").text, "hello ");
  EXPECT_EQ(m.push("/").text, "");
  EXPECT_EQ(m.push("x <").text, "</x ");
  EXPECT_EQ(m.flush(), "<");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.push("</s>").text, "");  // the stream is over
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, NoStopsPassEverythingThrough) {
  StopMatcher none({});
  EXPECT_EQ(none.push("abc").text, "abc");
  StopMatcher empty({"", ""});
  EXPECT_EQ(empty.push("abc").text, "abc");
  EXPECT_EQ(empty.flush(), "");
}

TEST(StopMatcher, NeverSplitsACharacter) {
  // A delta that ends inside a character (the contract says it should not) is completed first.
  StopMatcher m({});
  EXPECT_EQ(m.push("caf\xC3").text, "caf");
  EXPECT_EQ(m.push("\xA9!").text, "\xC3\xA9!");
  StopMatcher cut({});
  EXPECT_EQ(cut.push("x\xE2\x82").text, "x");
  EXPECT_EQ(cut.flush(), "\xE2\x82");  // end of stream: the bytes as they came
  // A malformed stop starting inside a character stops at that character's start.
  StopMatcher inside({"\xA9!"});
  const auto r = inside.push("caf\xC3\xA9!");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "caf");
  // Stops sharing lead bytes with the text's characters.
  EXPECT_EQ(feed({"\xC3\xA8"}, {"\xC3\xA9\xC3", "\xA8", "x"}), "\xC3\xA9");
}

TEST(StopMatcher, LongStopsStayLinear) {
  // A stop of 5000 'a's then 'b' over 200000 'a's, one byte per delta: quadratic matching would
  // take ~10^9 steps; a held-back window of 5000 bytes is all that is kept.
  StopMatcher m({std::string(5000, 'a') + "b"});
  size_t emitted = 0;
  for (int i = 0; i < 200000; ++i) emitted += m.push("a").text.size();
  EXPECT_EQ(emitted, 200000u - 5000u);
  const auto r = m.push("b");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");  // the stop starts where the emitted text ends
}

}  // namespace
}  // namespace maas::engine
