#include "engine/kv_blocks.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

namespace maas::engine {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;  // 2^64 / golden ratio, odd

// The 64-bit finalizer of SplitMix64 (Stafford's "Mix13"): a bijection with full avalanche.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// One absorption step. Adding the constant before mixing keeps an all-zero state and input from
// being a fixed point; mixing after every word makes the result depend on word order.
uint64_t absorb(uint64_t state, uint64_t word) { return mix64((state + kGolden) ^ word); }

uint64_t absorb_bytes(uint64_t state, std::string_view bytes) {
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    state = absorb(state, word);
  }
  uint64_t tail = 0;
  if (i < bytes.size()) std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  // The length makes the encoding prefix-free, so ("ab", "c") and ("a", "bc") differ.
  return absorb(absorb(state, tail), bytes.size());
}

// Drawn once per process so that chain values are not computable by clients (see header).
uint64_t process_secret() {
  static const uint64_t secret = [] {
    std::random_device device;
    return (uint64_t{device()} << 32) ^ uint64_t { device() };
  }();
  return secret;
}

}  // namespace

BlockManager::BlockManager(int32_t n_blocks, int32_t block_size, KeyHashFn key_hash)
    : n_blocks_(n_blocks), block_size_(block_size), key_hash_(key_hash ? key_hash : &chain_hash) {
  if (n_blocks <= 0 || block_size <= 0) {
    throw std::invalid_argument("BlockManager: n_blocks and block_size must be positive, got " +
                                std::to_string(n_blocks) + " and " + std::to_string(block_size));
  }
  blocks_.resize(static_cast<size_t>(n_blocks));
  tokens_.resize(static_cast<size_t>(n_blocks) * static_cast<size_t>(block_size));
  free_list_.reserve(static_cast<size_t>(n_blocks));
  // Reversed, so that a fresh manager hands out blocks 0, 1, 2, ...
  for (int32_t b = n_blocks - 1; b >= 0; --b) free_list_.push_back(b);
  entries_.reserve(static_cast<size_t>(n_blocks));
}

std::optional<int32_t> BlockManager::allocate() {
  int32_t block;
  if (!free_list_.empty()) {
    block = free_list_.back();
    free_list_.pop_back();
  } else if (lru_head_ != kNone) {
    block = lru_head_;
    lru_unlink(block);
    unpublish(block);
    ++stats_.evictions;
  } else {
    return std::nullopt;
  }
  blocks_[static_cast<size_t>(block)].refcount = 1;
  ++n_referenced_;
  return block;
}

void BlockManager::retain(int32_t block) {
  check_id(block, "retain");
  Block& b = blocks_[static_cast<size_t>(block)];
  if (b.refcount <= 0) {
    throw std::logic_error("BlockManager::retain: block " + std::to_string(block) +
                           " is not referenced");
  }
  if (b.refcount == std::numeric_limits<int32_t>::max()) {
    throw std::logic_error("BlockManager::retain: refcount overflow on block " +
                           std::to_string(block));
  }
  ++b.refcount;
}

void BlockManager::release(int32_t block) {
  check_id(block, "release");
  Block& b = blocks_[static_cast<size_t>(block)];
  if (b.refcount <= 0) {
    throw std::logic_error("BlockManager::release: block " + std::to_string(block) +
                           " is not referenced (double release?)");
  }
  if (--b.refcount > 0) return;
  --n_referenced_;
  if (b.published) {
    lru_push_back(block);
  } else {
    free_list_.push_back(block);
  }
}

int32_t BlockManager::refcount(int32_t block) const {
  check_id(block, "refcount");
  return blocks_[static_cast<size_t>(block)].refcount;
}

uint64_t BlockManager::root_hash(std::string_view model_id, std::string_view salt) {
  uint64_t state = absorb(process_secret(), 0x6d6f64656c726f6full);  // domain tag "modelroo"
  state = absorb_bytes(state, model_id);
  return absorb_bytes(state, salt);
}

uint64_t BlockManager::chain_hash(uint64_t parent, std::span<const int32_t> tokens) {
  // Diffuse the parent before tokens are combined into it, so no input bit of one meets a bit of
  // the other linearly.
  uint64_t state = mix64(parent ^ 0x636861696e686173ull);  // domain tag "chainhas"
  size_t i = 0;
  for (; i + 2 <= tokens.size(); i += 2) {
    state = absorb(state, uint64_t{static_cast<uint32_t>(tokens[i])} |
                              (uint64_t{static_cast<uint32_t>(tokens[i + 1])} << 32));
  }
  if (i < tokens.size()) state = absorb(state, uint64_t{static_cast<uint32_t>(tokens[i])});
  return absorb(state, tokens.size());
}

std::optional<int32_t> BlockManager::lookup(uint64_t parent, std::span<const int32_t> tokens) {
  check_tokens(tokens, "lookup");
  auto it = entries_.find(key_hash_(parent, tokens));
  if (it == entries_.end() || !entry_matches(it->second, parent, tokens)) {
    ++stats_.misses;
    return std::nullopt;
  }
  const int32_t block = it->second;
  Block& b = blocks_[static_cast<size_t>(block)];
  if (b.refcount == 0) {
    lru_unlink(block);
    ++n_referenced_;
  } else if (b.refcount == std::numeric_limits<int32_t>::max()) {
    throw std::logic_error("BlockManager::lookup: refcount overflow on block " +
                           std::to_string(block));
  }
  ++b.refcount;
  ++stats_.hits;
  stats_.hit_tokens += static_cast<uint64_t>(block_size_);
  return block;
}

bool BlockManager::publish(int32_t block, uint64_t parent, std::span<const int32_t> tokens) {
  check_id(block, "publish");
  check_tokens(tokens, "publish");
  Block& b = blocks_[static_cast<size_t>(block)];
  if (b.refcount <= 0) {
    throw std::logic_error("BlockManager::publish: block " + std::to_string(block) +
                           " is not referenced");
  }
  if (b.published) {
    if (entry_matches(block, parent, tokens)) return false;
    throw std::logic_error("BlockManager::publish: block " + std::to_string(block) +
                           " is already published with different content (published blocks are "
                           "read-only)");
  }
  const uint64_t key = key_hash_(parent, tokens);
  if (!entries_.emplace(key, block).second) return false;  // equal entry, or a key collision
  b.published = true;
  b.key = key;
  b.parent = parent;
  std::copy(tokens.begin(), tokens.end(),
            tokens_.begin() + static_cast<ptrdiff_t>(block) * block_size_);
  return true;
}

bool BlockManager::is_published(int32_t block) const {
  check_id(block, "is_published");
  return blocks_[static_cast<size_t>(block)].published;
}

BlockManager::Stats BlockManager::stats() const { return stats_; }

void BlockManager::clear_cache() {
  while (lru_head_ != kNone) {
    const int32_t block = lru_head_;
    lru_unlink(block);
    unpublish(block);
    free_list_.push_back(block);
  }
}

void BlockManager::check_id(int32_t block, const char* what) const {
  if (block < 0 || block >= n_blocks_) {
    throw std::logic_error(std::string("BlockManager::") + what + ": block id " +
                           std::to_string(block) + " is outside [0, " + std::to_string(n_blocks_) +
                           ")");
  }
}

void BlockManager::check_tokens(std::span<const int32_t> tokens, const char* what) const {
  if (tokens.size() != static_cast<size_t>(block_size_)) {
    throw std::invalid_argument(std::string("BlockManager::") + what + ": got " +
                                std::to_string(tokens.size()) + " tokens, a block holds " +
                                std::to_string(block_size_));
  }
}

std::span<const int32_t> BlockManager::stored_tokens(int32_t block) const {
  return std::span<const int32_t>(tokens_).subspan(
      static_cast<size_t>(block) * static_cast<size_t>(block_size_),
      static_cast<size_t>(block_size_));
}

bool BlockManager::entry_matches(int32_t block, uint64_t parent,
                                 std::span<const int32_t> tokens) const {
  const std::span<const int32_t> stored = stored_tokens(block);
  return blocks_[static_cast<size_t>(block)].parent == parent &&
         std::equal(stored.begin(), stored.end(), tokens.begin(), tokens.end());
}

void BlockManager::lru_push_back(int32_t block) {
  Block& b = blocks_[static_cast<size_t>(block)];
  b.lru_prev = lru_tail_;
  b.lru_next = kNone;
  if (lru_tail_ != kNone) {
    blocks_[static_cast<size_t>(lru_tail_)].lru_next = block;
  } else {
    lru_head_ = block;
  }
  lru_tail_ = block;
  ++n_evictable_;
}

void BlockManager::lru_unlink(int32_t block) {
  Block& b = blocks_[static_cast<size_t>(block)];
  if (b.lru_prev != kNone) {
    blocks_[static_cast<size_t>(b.lru_prev)].lru_next = b.lru_next;
  } else {
    lru_head_ = b.lru_next;
  }
  if (b.lru_next != kNone) {
    blocks_[static_cast<size_t>(b.lru_next)].lru_prev = b.lru_prev;
  } else {
    lru_tail_ = b.lru_prev;
  }
  b.lru_prev = b.lru_next = kNone;
  --n_evictable_;
}

void BlockManager::unpublish(int32_t block) {
  Block& b = blocks_[static_cast<size_t>(block)];
  entries_.erase(b.key);
  b.published = false;
}

void BlockManager::check_invariants() const {
  auto fail = [](const std::string& message) {
    throw std::logic_error("BlockManager invariant violated: " + message);
  };
  const size_t n = static_cast<size_t>(n_blocks_);
  enum : uint8_t { kUnseen, kOnFreeList, kOnLru };
  std::vector<uint8_t> seen(n, kUnseen);

  for (int32_t block : free_list_) {
    if (block < 0 || block >= n_blocks_) fail("free list holds bad id " + std::to_string(block));
    const Block& b = blocks_[static_cast<size_t>(block)];
    if (seen[static_cast<size_t>(block)] != kUnseen) fail("block on the free list twice");
    seen[static_cast<size_t>(block)] = kOnFreeList;
    if (b.refcount != 0 || b.published) {
      fail("free block " + std::to_string(block) + " is referenced or published");
    }
  }

  int32_t lru_count = 0;
  int32_t prev = kNone;
  for (int32_t block = lru_head_; block != kNone;) {
    if (block < 0 || block >= n_blocks_) fail("LRU list holds bad id " + std::to_string(block));
    const Block& b = blocks_[static_cast<size_t>(block)];
    if (seen[static_cast<size_t>(block)] != kUnseen) fail("LRU list has a cycle or a free block");
    seen[static_cast<size_t>(block)] = kOnLru;
    if (b.lru_prev != prev) fail("LRU back link of block " + std::to_string(block) + " is wrong");
    if (b.refcount != 0 || !b.published) {
      fail("LRU block " + std::to_string(block) + " is referenced or unpublished");
    }
    ++lru_count;
    prev = block;
    block = b.lru_next;
  }
  if (prev != lru_tail_) fail("LRU tail is wrong");
  if (lru_count != n_evictable_) fail("n_evictable disagrees with the LRU list");

  int32_t referenced = 0;
  size_t published = 0;
  for (size_t i = 0; i < n; ++i) {
    const Block& b = blocks_[i];
    if (b.refcount < 0) fail("negative refcount on block " + std::to_string(i));
    if (b.refcount > 0) ++referenced;
    if (b.refcount == 0 && seen[i] == kUnseen) fail("block " + std::to_string(i) + " leaked");
    if (seen[i] != kOnLru && (b.lru_prev != kNone || b.lru_next != kNone)) {
      fail("block " + std::to_string(i) + " off the LRU list has LRU links");
    }
    if (b.published) {
      ++published;
      auto it = entries_.find(b.key);
      if (it == entries_.end() || it->second != static_cast<int32_t>(i)) {
        fail("published block " + std::to_string(i) + " has no map entry");
      }
      if (key_hash_(b.parent, stored_tokens(static_cast<int32_t>(i))) != b.key) {
        fail("map key of block " + std::to_string(i) + " does not match its content");
      }
    }
  }
  if (referenced != n_referenced_) fail("n_referenced disagrees with the refcounts");
  if (published != entries_.size()) fail("map size disagrees with the published blocks");
  if (static_cast<int32_t>(free_list_.size()) + n_evictable_ + n_referenced_ != n_blocks_) {
    fail("free + evictable + referenced != n_blocks");
  }
}

}  // namespace maas::engine
