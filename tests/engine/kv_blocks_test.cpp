// The block allocator and prefix cache against hand-worked scenarios and, under random operations
// of simulated sequences, against a brute-force model of the documented semantics (a plain vector
// of per-block states, scanned linearly).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

#include "engine/kv_blocks.h"

namespace maas::engine {
namespace {

using Tokens = std::vector<int32_t>;

// Weak map keys that force collisions: the first ignores the tokens, the second the parent.
uint64_t key_ignoring_tokens(uint64_t parent, std::span<const int32_t>) { return parent; }
uint64_t key_ignoring_parent(uint64_t, std::span<const int32_t> tokens) {
  return static_cast<uint64_t>(tokens[0]);
}
// Collides whenever the parent and the first token agree (frequent with a small alphabet).
uint64_t key_parent_and_first_token(uint64_t parent, std::span<const int32_t> tokens) {
  return parent ^ static_cast<uint64_t>(tokens[0]);
}

// Allocates and publishes one block with these tokens under parent; returns its id.
int32_t publish_new(BlockManager& m, uint64_t parent, const Tokens& tokens) {
  const std::optional<int32_t> b = m.allocate();
  EXPECT_TRUE(b.has_value());
  EXPECT_TRUE(m.publish(*b, parent, tokens));
  return *b;
}

TEST(BlockManagerTest, RejectsNonPositiveSizes) {
  EXPECT_THROW(BlockManager(0, 16), std::invalid_argument);
  EXPECT_THROW(BlockManager(8, 0), std::invalid_argument);
  EXPECT_THROW(BlockManager(-1, 16), std::invalid_argument);
  EXPECT_THROW(BlockManager(8, -3), std::invalid_argument);
}

TEST(BlockManagerTest, AllocatesEveryBlockOnceThenRunsOut) {
  BlockManager m(5, 4);
  EXPECT_EQ(m.n_blocks(), 5);
  EXPECT_EQ(m.block_size(), 4);
  EXPECT_EQ(m.n_free(), 5);
  std::set<int32_t> ids;
  for (int i = 0; i < 5; ++i) {
    const std::optional<int32_t> b = m.allocate();
    ASSERT_TRUE(b.has_value());
    EXPECT_GE(*b, 0);
    EXPECT_LT(*b, 5);
    EXPECT_EQ(m.refcount(*b), 1);
    ids.insert(*b);
    EXPECT_EQ(m.n_free(), 4 - i);
    EXPECT_EQ(m.n_referenced(), i + 1);
  }
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_FALSE(m.allocate().has_value());
  m.release(3);
  EXPECT_EQ(m.n_free(), 1);
  EXPECT_EQ(m.allocate(), std::optional<int32_t>(3));
  EXPECT_FALSE(m.allocate().has_value());
  for (int32_t b : ids) m.release(b);
  EXPECT_EQ(m.n_free(), 5);
  EXPECT_EQ(m.n_referenced(), 0);
  EXPECT_EQ(m.stats().evictions, 0u);
  m.check_invariants();
}

TEST(BlockManagerTest, EvictsInReleaseOrderAfterFreeBlocksRunOut) {
  BlockManager m(4, 2);
  const uint64_t root = BlockManager::root_hash("m", "");
  std::vector<int32_t> blocks;
  for (int32_t i = 0; i < 4; ++i) blocks.push_back(publish_new(m, root, {i, i}));
  for (int32_t i : {2, 0, 3, 1}) m.release(blocks[static_cast<size_t>(i)]);
  EXPECT_EQ(m.n_free(), 4);
  EXPECT_EQ(m.n_cached(), 4);
  EXPECT_EQ(m.n_evictable(), 4);
  uint64_t evictions = 0;
  for (int32_t i : {2, 0, 3, 1}) {
    EXPECT_EQ(m.allocate(), std::optional<int32_t>(blocks[static_cast<size_t>(i)]));
    EXPECT_EQ(m.stats().evictions, ++evictions);
    EXPECT_FALSE(m.is_published(blocks[static_cast<size_t>(i)]));
    EXPECT_EQ(m.n_cached(), 4 - static_cast<int32_t>(evictions));
    m.check_invariants();
  }
  // The evicted entries are gone: every lookup misses.
  for (int32_t i = 0; i < 4; ++i) EXPECT_FALSE(m.lookup(root, Tokens{i, i}).has_value());
  EXPECT_EQ(m.stats().misses, 4u);
}

TEST(BlockManagerTest, PrefersFreeBlocksOverCachedOnes) {
  BlockManager m(3, 2);
  const uint64_t root = BlockManager::root_hash("m", "");
  const int32_t cached = publish_new(m, root, {1, 2});
  const int32_t plain = *m.allocate();
  const int32_t busy = *m.allocate();
  m.release(cached);
  m.release(plain);
  EXPECT_EQ(m.n_free(), 2);
  EXPECT_EQ(m.allocate(), std::optional<int32_t>(plain));
  EXPECT_TRUE(m.is_published(cached));
  EXPECT_EQ(m.allocate(), std::optional<int32_t>(cached));
  EXPECT_EQ(m.stats().evictions, 1u);
  EXPECT_FALSE(m.allocate().has_value());
  (void)busy;
  m.check_invariants();
}

TEST(BlockManagerTest, LookupRevivesAnEvictableBlockAndRequeuesItOnRelease) {
  BlockManager m(4, 3);
  const uint64_t root = BlockManager::root_hash("m", "");
  const Tokens ta = {5, 6, 7}, tb = {8, 9, 10};
  const int32_t a = publish_new(m, root, ta);
  const int32_t b = publish_new(m, BlockManager::chain_hash(root, ta), tb);
  m.release(a);
  m.release(b);  // LRU order: a, b
  EXPECT_EQ(m.n_evictable(), 2);

  EXPECT_EQ(m.lookup(root, ta), std::optional<int32_t>(a));
  EXPECT_EQ(m.refcount(a), 1);
  EXPECT_EQ(m.n_evictable(), 1);
  EXPECT_EQ(m.n_free(), 3);
  EXPECT_EQ(m.n_referenced(), 1);
  m.check_invariants();
  m.release(a);  // now the most recently used: LRU order b, a

  const int32_t f1 = *m.allocate(), f2 = *m.allocate();
  EXPECT_NE(f1, a);
  EXPECT_NE(f2, b);
  EXPECT_EQ(m.allocate(), std::optional<int32_t>(b));        // b is evicted before a
  EXPECT_EQ(m.lookup(root, ta), std::optional<int32_t>(a));  // a survived
  EXPECT_FALSE(m.allocate().has_value());                    // a is referenced, not evictable
  EXPECT_EQ(m.stats().hits, 2u);
  EXPECT_EQ(m.stats().hit_tokens, 6u);
  m.check_invariants();
}

TEST(BlockManagerTest, SharedPublishedBlockIsNeverEvicted) {
  BlockManager m(2, 2);
  const uint64_t root = BlockManager::root_hash("m", "");
  const int32_t shared = publish_new(m, root, {1, 1});
  EXPECT_EQ(m.lookup(root, Tokens{1, 1}), std::optional<int32_t>(shared));
  m.retain(shared);
  EXPECT_EQ(m.refcount(shared), 3);
  m.release(shared);
  m.release(shared);
  EXPECT_EQ(m.n_referenced(), 1);
  const int32_t other = *m.allocate();
  EXPECT_NE(other, shared);
  EXPECT_FALSE(m.allocate().has_value());
  EXPECT_TRUE(m.is_published(shared));
  m.release(shared);
  EXPECT_EQ(m.allocate(), std::optional<int32_t>(shared));  // only now evictable
  m.check_invariants();
}

TEST(BlockManagerTest, DuplicatePublishLeavesTheSecondBlockPrivate) {
  BlockManager m(3, 2);
  const uint64_t root = BlockManager::root_hash("m", "");
  const Tokens t = {4, 2};
  const int32_t first = publish_new(m, root, t);
  const int32_t second = *m.allocate();
  EXPECT_FALSE(m.publish(second, root, t));
  EXPECT_FALSE(m.is_published(second));
  EXPECT_FALSE(m.publish(first, root, t));  // republishing the same content is a no-op
  EXPECT_THROW(m.publish(first, root, Tokens{4, 3}), std::logic_error);  // read-only
  EXPECT_EQ(m.n_cached(), 1);
  m.release(second);  // unpublished: back to the free list, not the LRU list
  EXPECT_EQ(m.n_evictable(), 0);
  EXPECT_EQ(m.lookup(root, t), std::optional<int32_t>(first));
  m.check_invariants();
}

TEST(BlockManagerTest, DifferentModelsAndSaltsNeverShare) {
  const uint64_t r11 = BlockManager::root_hash("llama", "tenant-a");
  const uint64_t r12 = BlockManager::root_hash("llama", "tenant-b");
  const uint64_t r21 = BlockManager::root_hash("qwen", "tenant-a");
  const uint64_t r00 = BlockManager::root_hash("", "");
  EXPECT_EQ(r11, BlockManager::root_hash("llama", "tenant-a"));  // stable within the process
  EXPECT_EQ(std::set<uint64_t>({r11, r12, r21, r00}).size(), 4u);
  // The concatenation is unambiguous.
  EXPECT_NE(BlockManager::root_hash("ab", "c"), BlockManager::root_hash("a", "bc"));
  EXPECT_NE(BlockManager::root_hash("abcdefgh", ""), BlockManager::root_hash("abcdefg", "h"));
  EXPECT_NE(BlockManager::root_hash("x", std::string_view("\0", 1)),
            BlockManager::root_hash("x", ""));

  BlockManager m(4, 2);
  const Tokens t = {7, 7};
  const int32_t b = publish_new(m, r11, t);
  EXPECT_FALSE(m.lookup(r12, t).has_value());
  EXPECT_FALSE(m.lookup(r21, t).has_value());
  EXPECT_EQ(m.lookup(r11, t), std::optional<int32_t>(b));
  EXPECT_EQ(m.stats().misses, 2u);
  EXPECT_EQ(m.stats().hits, 1u);
}

TEST(BlockManagerTest, KeyCollisionIsAMissNotWrongContent) {
  {
    BlockManager m(4, 2, &key_ignoring_tokens);
    const int32_t a = publish_new(m, 42, {1, 2});
    EXPECT_FALSE(m.lookup(42, Tokens{1, 3}).has_value());  // same key, other tokens
    const int32_t b = *m.allocate();
    EXPECT_FALSE(m.publish(b, 42, Tokens{1, 3}));  // the key is taken: stays private
    EXPECT_FALSE(m.is_published(b));
    EXPECT_EQ(m.lookup(42, Tokens{1, 2}), std::optional<int32_t>(a));
    EXPECT_EQ(m.stats().misses, 1u);
    m.check_invariants();
  }
  {
    BlockManager m(4, 2, &key_ignoring_parent);
    const int32_t a = publish_new(m, 42, {1, 2});
    EXPECT_FALSE(m.lookup(43, Tokens{1, 2}).has_value());  // same key and tokens, other parent
    EXPECT_EQ(m.lookup(42, Tokens{1, 2}), std::optional<int32_t>(a));
    m.check_invariants();
  }
  {
    BlockManager m(4, 2);  // real hash: different tokens under one parent is a plain miss
    publish_new(m, 42, {1, 2});
    EXPECT_FALSE(m.lookup(42, Tokens{1, 3}).has_value());
    EXPECT_FALSE(m.lookup(42, Tokens{2, 1}).has_value());
  }
}

TEST(BlockManagerTest, ClearCacheDropsOnlyUnreferencedEntries) {
  BlockManager m(4, 1);
  const int32_t kept = publish_new(m, 1, {1});
  const int32_t dropped = publish_new(m, 1, {2});
  m.release(dropped);
  m.clear_cache();
  EXPECT_EQ(m.n_cached(), 1);
  EXPECT_TRUE(m.is_published(kept));
  EXPECT_FALSE(m.is_published(dropped));
  EXPECT_EQ(m.n_free(), 3);
  EXPECT_EQ(m.n_evictable(), 0);
  EXPECT_FALSE(m.lookup(1, Tokens{2}).has_value());
  EXPECT_EQ(m.stats().evictions, 0u);
  m.check_invariants();
}

TEST(BlockManagerTest, MisuseThrowsAndLeavesTheStateIntact) {
  BlockManager m(3, 2);
  const int32_t a = *m.allocate();
  const int32_t cached = publish_new(m, 9, {1, 2});
  m.release(cached);  // evictable, refcount 0
  for (int32_t bad : {-1, 3, 1 << 30}) {
    EXPECT_THROW(m.release(bad), std::logic_error);
    EXPECT_THROW(m.retain(bad), std::logic_error);
    EXPECT_THROW(m.publish(bad, 9, Tokens{1, 1}), std::logic_error);
    EXPECT_THROW(m.is_published(bad), std::logic_error);
    EXPECT_THROW(m.refcount(bad), std::logic_error);
  }
  EXPECT_THROW(m.release(2), std::logic_error);       // free block
  EXPECT_THROW(m.release(cached), std::logic_error);  // evictable block
  EXPECT_THROW(m.retain(2), std::logic_error);
  EXPECT_THROW(m.retain(cached), std::logic_error);  // revive through lookup, not retain
  EXPECT_THROW(m.publish(2, 9, Tokens{3, 3}), std::logic_error);
  EXPECT_THROW(m.lookup(9, Tokens{1}), std::invalid_argument);
  EXPECT_THROW(m.lookup(9, Tokens{1, 2, 3}), std::invalid_argument);
  EXPECT_THROW(m.publish(a, 9, Tokens{}), std::invalid_argument);
  m.release(a);
  EXPECT_THROW(m.release(a), std::logic_error);  // double release
  m.check_invariants();
  EXPECT_EQ(m.n_free(), 3);
  EXPECT_EQ(m.n_referenced(), 0);
  EXPECT_EQ(m.n_cached(), 1);
  EXPECT_EQ(m.stats().misses, 0u);  // rejected lookups count nothing
}

TEST(ChainHashTest, DependsOnEveryTokenTheParentAndTheLength) {
  const Tokens base = {3, 1, 4, 1, 5, 9, 2};
  const uint64_t h = BlockManager::chain_hash(77, base);
  EXPECT_EQ(h, BlockManager::chain_hash(77, base));
  EXPECT_NE(h, BlockManager::chain_hash(78, base));
  for (size_t i = 0; i < base.size(); ++i) {
    Tokens t = base;
    t[i] += 1;
    EXPECT_NE(h, BlockManager::chain_hash(77, t)) << i;
    t[i] = -1;  // negative ids are hashed like any other
    EXPECT_NE(h, BlockManager::chain_hash(77, t)) << i;
  }
  Tokens swapped = base;
  std::swap(swapped[0], swapped[1]);
  EXPECT_NE(h, BlockManager::chain_hash(77, swapped));
  Tokens longer = base;
  longer.push_back(0);
  EXPECT_NE(h, BlockManager::chain_hash(77, longer));
  EXPECT_NE(BlockManager::chain_hash(0, Tokens{0, 0}), 0u);  // no all-zero fixed point
  EXPECT_NE(BlockManager::chain_hash(0, Tokens{0, 0}), BlockManager::chain_hash(0, Tokens{0}));
}

TEST(ChainHashTest, AvalancheFlipsHalfTheBits) {
  // Flipping one input bit should flip each output bit with probability 1/2.
  std::mt19937_64 rng(1234);
  constexpr int kTrials = 4000;
  std::vector<int> flips_per_bit(64, 0);
  double total_flips = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    Tokens t(16);
    for (int32_t& x : t) x = static_cast<int32_t>(rng() % 32000);  // realistic small ids
    uint64_t parent = rng();
    const uint64_t before = BlockManager::chain_hash(parent, t);
    const size_t bit = rng() % (64 + 32 * t.size());
    if (bit < 64) {
      parent ^= uint64_t{1} << bit;
    } else {
      const size_t token_bit = bit - 64;
      t[token_bit / 32] ^= static_cast<int32_t>(uint32_t{1} << (token_bit % 32));
    }
    const uint64_t diff = before ^ BlockManager::chain_hash(parent, t);
    total_flips += std::popcount(diff);
    for (int b = 0; b < 64; ++b) flips_per_bit[static_cast<size_t>(b)] += (diff >> b) & 1;
  }
  EXPECT_NEAR(total_flips / kTrials, 32.0, 0.5);
  for (int b = 0; b < 64; ++b) {
    // Binomial(4000, 0.5) has standard deviation ~32 (0.8%); allow 6 sigma.
    EXPECT_NEAR(flips_per_bit[static_cast<size_t>(b)] / double{kTrials}, 0.5, 0.048) << b;
  }
}

// ---------------------------------------------------------------------------------------------
// Randomized comparison with a brute-force model.

// What the documentation promises, written as linear scans over a vector of block states.
class ReferenceModel {
 public:
  ReferenceModel(int32_t n_blocks, BlockManager::KeyHashFn key) : blocks_(n_blocks), key_(key) {}

  struct Block {
    int32_t refcount = 0;
    bool published = false;
    uint64_t parent = 0;
    Tokens tokens;
    uint64_t released_at = 0;  // when it last became evictable
  };

  // Checks the manager's choice; returns whether it was allowed.
  void allocate(std::optional<int32_t> got) {
    bool any_plain = false;
    int32_t oldest = -1;
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const Block& b = blocks_[i];
      if (b.refcount != 0) continue;
      if (!b.published) any_plain = true;
      if (b.published && (oldest < 0 || b.released_at < blocks_[oldest].released_at)) {
        oldest = static_cast<int32_t>(i);
      }
    }
    if (any_plain) {
      ASSERT_TRUE(got.has_value());
      ASSERT_EQ(blocks_[*got].refcount, 0);
      ASSERT_FALSE(blocks_[*got].published) << "evicted while a free block was left";
    } else if (oldest >= 0) {
      ASSERT_EQ(got, std::optional<int32_t>(oldest)) << "not the least recently released";
      blocks_[*got] = Block{};
      ++stats.evictions;
    } else {
      ASSERT_FALSE(got.has_value());
      return;
    }
    blocks_[*got].refcount = 1;
  }

  std::optional<int32_t> lookup(uint64_t parent, const Tokens& tokens) {
    const uint64_t key = key_(parent, tokens);
    for (size_t i = 0; i < blocks_.size(); ++i) {
      Block& b = blocks_[i];
      if (b.published && key_(b.parent, b.tokens) == key && b.parent == parent &&
          b.tokens == tokens) {
        ++b.refcount;
        ++stats.hits;
        stats.hit_tokens += tokens.size();
        return static_cast<int32_t>(i);
      }
    }
    ++stats.misses;
    return std::nullopt;
  }

  bool publish(int32_t block, uint64_t parent, const Tokens& tokens) {
    const uint64_t key = key_(parent, tokens);
    for (const Block& b : blocks_) {
      if (b.published && key_(b.parent, b.tokens) == key) return false;
    }
    Block& b = blocks_[block];
    b.published = true;
    b.parent = parent;
    b.tokens = tokens;
    return true;
  }

  void retain(int32_t block) { ++blocks_[block].refcount; }
  void release(int32_t block) {
    if (--blocks_[block].refcount == 0) blocks_[block].released_at = ++clock_;
  }
  void clear_cache() {
    for (Block& b : blocks_) {
      if (b.refcount == 0) b = Block{};
    }
  }

  void expect_matches(const BlockManager& m) const {
    int32_t free = 0, referenced = 0, cached = 0, evictable = 0;
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const Block& b = blocks_[i];
      free += b.refcount == 0;
      referenced += b.refcount > 0;
      cached += b.published;
      evictable += b.refcount == 0 && b.published;
      ASSERT_EQ(m.refcount(static_cast<int32_t>(i)), b.refcount) << "block " << i;
      ASSERT_EQ(m.is_published(static_cast<int32_t>(i)), b.published) << "block " << i;
    }
    ASSERT_EQ(m.n_free(), free);
    ASSERT_EQ(m.n_referenced(), referenced);
    ASSERT_EQ(m.n_cached(), cached);
    ASSERT_EQ(m.n_evictable(), evictable);
    const BlockManager::Stats s = m.stats();
    ASSERT_EQ(s.hits, stats.hits);
    ASSERT_EQ(s.misses, stats.misses);
    ASSERT_EQ(s.evictions, stats.evictions);
    ASSERT_EQ(s.hit_tokens, stats.hit_tokens);
    m.check_invariants();
  }

  BlockManager::Stats stats;

 private:
  std::vector<Block> blocks_;
  BlockManager::KeyHashFn key_;
  uint64_t clock_ = 0;
};

// One simulated request: its tokens, block table and the chain hash of each full block.
struct Sequence {
  uint64_t root = 0;
  Tokens tokens;
  std::vector<int32_t> blocks;
  std::vector<uint64_t> chain;

  uint64_t parent_of(size_t block_index) const {
    return block_index == 0 ? root : chain[block_index - 1];
  }
};

struct StressCounts {
  int publish_refused = 0;
  int allocation_failures = 0;
  int forks = 0;
};

// Thousands of random operations from several sequences, the manager checked against the model
// after every step.
StressCounts run_stress(BlockManager::KeyHashFn key, uint64_t seed) {
  constexpr int32_t kBlocks = 24, kBlockSize = 3, kSteps = 5000;
  BlockManager m(kBlocks, kBlockSize, key);
  ReferenceModel ref(kBlocks, key ? key : &BlockManager::chain_hash);
  std::mt19937_64 rng(seed);
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::vector<uint64_t> roots = {BlockManager::root_hash("llama", ""),
                                       BlockManager::root_hash("llama", "tenant"),
                                       BlockManager::root_hash("qwen", "")};
  const std::vector<Tokens> system_prompts = {{0, 1, 2, 0, 1, 2, 0, 1, 2},
                                              {2, 2, 2, 1, 1, 1, 0, 0, 0, 1}};
  std::vector<Sequence> seqs;
  StressCounts counts;

  auto release_all = [&](Sequence& s, bool reverse) {
    if (reverse) std::reverse(s.blocks.begin(), s.blocks.end());
    for (int32_t b : s.blocks) {
      m.release(b);
      ref.release(b);
    }
    s.blocks.clear();
  };
  auto allocate = [&]() -> std::optional<int32_t> {
    const std::optional<int32_t> b = m.allocate();
    ref.allocate(b);
    if (!b) ++counts.allocation_failures;
    return b;
  };
  // After computing the KV of block i (now full), maybe publish it and extend the chain.
  auto block_filled = [&](Sequence& s, size_t i) {
    const Tokens t(s.tokens.begin() + static_cast<ptrdiff_t>(i * kBlockSize),
                   s.tokens.begin() + static_cast<ptrdiff_t>((i + 1) * kBlockSize));
    s.chain.push_back(BlockManager::chain_hash(s.parent_of(i), t));
    if (!chance(0.8)) return;  // e.g. the engine chose not to cache this block
    const bool published = m.publish(s.blocks[i], s.parent_of(i), t);
    EXPECT_EQ(published, ref.publish(s.blocks[i], s.parent_of(i), t));
    counts.publish_refused += !published;
  };

  for (int step = 0; step < kSteps && !::testing::Test::HasFailure(); ++step) {
    const double op = std::uniform_real_distribution<double>(0, 1)(rng);
    if (op < 0.2 && seqs.size() < 8) {
      // New request: reuse the cached prefix, then allocate and compute the rest.
      Sequence s;
      s.root = roots[pick(roots.size())];
      if (chance(0.7)) {
        const Tokens& sys = system_prompts[pick(system_prompts.size())];
        s.tokens.assign(sys.begin(), sys.begin() + static_cast<ptrdiff_t>(pick(sys.size() + 1)));
      }
      for (size_t n = 1 + pick(6); n > 0; --n) s.tokens.push_back(static_cast<int32_t>(pick(3)));
      const size_t full = s.tokens.size() / kBlockSize;
      size_t i = 0;
      for (; i < full; ++i) {
        const Tokens t(s.tokens.begin() + static_cast<ptrdiff_t>(i * kBlockSize),
                       s.tokens.begin() + static_cast<ptrdiff_t>((i + 1) * kBlockSize));
        const std::optional<int32_t> hit = m.lookup(s.parent_of(i), t);
        EXPECT_EQ(hit, ref.lookup(s.parent_of(i), t));
        if (!hit) break;
        s.blocks.push_back(*hit);
        s.chain.push_back(BlockManager::chain_hash(s.parent_of(i), t));
      }
      const size_t needed = (s.tokens.size() + kBlockSize - 1) / kBlockSize;
      bool ok = true;
      while (ok && s.blocks.size() < needed) {
        const std::optional<int32_t> b = allocate();
        if (b) s.blocks.push_back(*b);
        ok = b.has_value();
      }
      if (!ok) {
        release_all(s, chance(0.5));  // could not be admitted
      } else {
        for (; i < full; ++i) block_filled(s, i);
        seqs.push_back(std::move(s));
      }
    } else if (op < 0.55 && !seqs.empty()) {
      // Decode one token; a new block when the last is full, publish when one fills up.
      const size_t si = pick(seqs.size());
      Sequence& s = seqs[si];
      if (s.tokens.size() % kBlockSize == 0) {
        const std::optional<int32_t> b = allocate();
        if (!b) {  // preempted
          release_all(s, chance(0.5));
          seqs.erase(seqs.begin() + static_cast<ptrdiff_t>(si));
          continue;
        }
        s.blocks.push_back(*b);
      }
      s.tokens.push_back(static_cast<int32_t>(pick(3)));
      if (s.tokens.size() % kBlockSize == 0) block_filled(s, s.tokens.size() / kBlockSize - 1);
    } else if (op < 0.65 && !seqs.empty() && seqs.size() < 8) {
      // Fork (n > 1): share the full blocks, copy the partial last block into a new one.
      Sequence fork = seqs[pick(seqs.size())];
      const size_t full = fork.tokens.size() / kBlockSize;
      for (size_t i = 0; i < full; ++i) {
        m.retain(fork.blocks[i]);
        ref.retain(fork.blocks[i]);
      }
      fork.blocks.resize(full);
      bool ok = true;
      if (fork.tokens.size() % kBlockSize != 0) {
        const std::optional<int32_t> b = allocate();
        if (b) fork.blocks.push_back(*b);
        ok = b.has_value();
      }
      if (ok) {
        seqs.push_back(std::move(fork));
        ++counts.forks;
      } else {
        release_all(fork, false);
      }
    } else if (op < 0.9 && !seqs.empty()) {
      const size_t si = pick(seqs.size());
      release_all(seqs[si], chance(0.7));
      seqs.erase(seqs.begin() + static_cast<ptrdiff_t>(si));
    } else if (op < 0.92) {
      m.clear_cache();
      ref.clear_cache();
    } else {
      // A stray lookup (e.g. a request that is dropped right after), possibly reviving a block.
      const uint64_t parent = roots[pick(roots.size())];
      Tokens t(kBlockSize);
      for (int32_t& x : t) x = static_cast<int32_t>(pick(3));
      const std::optional<int32_t> hit = m.lookup(parent, t);
      EXPECT_EQ(hit, ref.lookup(parent, t));
      if (hit) {
        m.release(*hit);
        ref.release(*hit);
      }
    }
    ref.expect_matches(m);
  }

  for (Sequence& s : seqs) release_all(s, true);
  ref.expect_matches(m);
  EXPECT_EQ(m.n_free(), kBlocks);  // no leak
  EXPECT_EQ(m.n_referenced(), 0);
  m.clear_cache();
  EXPECT_EQ(m.n_cached(), 0);
  m.check_invariants();
  const BlockManager::Stats s = m.stats();
  // The run must have exercised the interesting paths.
  EXPECT_GT(s.hits, 50u);
  EXPECT_GT(s.misses, 50u);
  EXPECT_GT(s.evictions, 20u);
  EXPECT_GT(counts.allocation_failures, 5);
  EXPECT_GT(counts.forks, 20);
  return counts;
}

TEST(BlockManagerStressTest, MatchesBruteForceModel) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    const StressCounts counts = run_stress(nullptr, seed);
    EXPECT_GT(counts.publish_refused, 10);  // duplicates computed by concurrent sequences
  }
}

TEST(BlockManagerStressTest, MatchesBruteForceModelWithCollidingKeys) {
  for (uint64_t seed : {4u, 5u}) {
    SCOPED_TRACE(seed);
    run_stress(&key_parent_and_first_token, seed);
  }
}

}  // namespace
}  // namespace maas::engine
