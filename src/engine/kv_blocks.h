// Block bookkeeping for a paged KV cache (vLLM-style): which block ids are free, shared between
// sequences, or hold a reusable prefix ("automatic prefix caching").
//
// The KV memory is a pool of n_blocks blocks of block_size token positions each. The model layer
// stores K/V by block id and the engine keeps a block table (list of block ids) per sequence;
// BlockManager holds no KV data, only the ids' states. Every block is in exactly one state:
//
//   free        refcount 0, not published: on the free list, content meaningless.
//   referenced  refcount > 0: in use by that many sequences (published or not).
//   evictable   refcount 0, published: its KV is kept for future prefix hits, on an LRU list;
//               allocate() reclaims the least recently released one when no free block is left.
//
// Prefix cache. A full block is identified by a hash chain: chain_hash(parent, its tokens), where
// the first block's parent is root_hash(model id, cache salt). Equal chains mean equal token
// prefixes, hence equal KV, so a new sequence can reuse the blocks of an earlier one. Entries
// also store their parent hash and tokens, which lookup() compares: a collision of the map key is
// a miss, never wrong content. (A collision of two whole parent chains is not detectable from one
// block; root_hash mixes a per-process random secret so such collisions cannot be computed
// offline by a client crafting prompts, and are otherwise ~n^2/2^64 unlikely.)
//
// Contract: a published block is read-only. Its KV must have been computed completely for exactly
// (parent, tokens) before publish(), and nobody writes to it afterwards; a sequence that needs to
// write into a shared or published block copies it into a block of its own first (copy-on-write,
// decided by the engine with refcount() / is_published()).
//
// Every operation is O(1) or O(block_size) (hash map + intrusive LRU list), except
// clear_cache() (O(evictable blocks)) and check_invariants() (O(n_blocks), for tests). Memory is
// O(n_blocks * block_size). Not thread-safe: the engine is single-threaded.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace maas::engine {

class BlockManager {
 public:
  // Function computing the prefix-cache map key of (parent, tokens). The default is chain_hash;
  // tests pass a deliberately weak one to force key collisions.
  using KeyHashFn = uint64_t (*)(uint64_t parent, std::span<const int32_t> tokens);

  // All n_blocks blocks start free. Throws std::invalid_argument if n_blocks or block_size <= 0.
  BlockManager(int32_t n_blocks, int32_t block_size, KeyHashFn key_hash = nullptr);

  int32_t n_blocks() const { return n_blocks_; }
  int32_t block_size() const { return block_size_; }

  // Blocks allocate() can hand out now: free blocks plus evictable (cached, unreferenced) ones.
  int32_t n_free() const { return static_cast<int32_t>(free_list_.size()) + n_evictable_; }
  // Blocks with refcount > 0.
  int32_t n_referenced() const { return n_referenced_; }
  // Blocks holding a published prefix-cache entry, referenced or not.
  int32_t n_cached() const { return static_cast<int32_t>(entries_.size()); }
  // Unreferenced published blocks (the LRU list); a subset of both n_free() and n_cached().
  int32_t n_evictable() const { return n_evictable_; }

  // A block for exclusive writing, with refcount 1 and unpublished. Takes a free block first;
  // otherwise evicts the least recently released evictable block (dropping its cache entry,
  // counted in Stats::evictions). nullopt if every block is referenced.
  std::optional<int32_t> allocate();

  // Adds a reference to a referenced block (sequences sharing it, e.g. n > 1 forks of one
  // prompt). Throws std::logic_error if the id is invalid or the block is not referenced.
  void retain(int32_t block);

  // Drops a reference. At refcount 0 a published block becomes evictable (most recently used end
  // of the LRU list); an unpublished one returns to the free list. Throws std::logic_error if the
  // id is invalid or the block is not referenced (e.g. a double release).
  void release(int32_t block);

  // Current reference count (0 for free and evictable blocks). Throws std::logic_error on a bad id.
  int32_t refcount(int32_t block) const;

  // Start of a hash chain: identifies the model and the cache salt (tenant), so different models
  // or salts never share entries. Includes a random secret drawn once per process, so values are
  // stable within a process only (they are never persisted).
  static uint64_t root_hash(std::string_view model_id, std::string_view salt);

  // Identity of a block with these tokens following the prefix identified by parent; the result
  // is the parent of the next block. 64-bit multiply-xorshift mixing, sensitive to every token
  // and its position.
  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens);

  // The cached block for (parent, tokens), if any. On a hit takes a reference (an evictable block
  // leaves the LRU list) and counts a hit; otherwise counts a miss. The stored parent hash and
  // tokens must match exactly, so a key collision is a miss. Throws std::invalid_argument unless
  // tokens.size() == block_size.
  std::optional<int32_t> lookup(uint64_t parent, std::span<const int32_t> tokens);

  // Publishes a referenced block whose KV for (parent, tokens) has been fully computed; from now on
  // it is read-only and lookup() can return it. Returns false and does nothing if an entry for an
  // equal (parent, tokens) exists already, including this block's own (the block stays private and
  // is freed normally on release), or if a different entry occupies the same key (collision; never
  // with the default hash in practice). Throws std::logic_error if the block is not referenced or
  // is already published with different content; std::invalid_argument unless
  // tokens.size() == block_size.
  bool publish(int32_t block, uint64_t parent, std::span<const int32_t> tokens);

  // Whether the block holds a published entry. Throws std::logic_error on a bad id.
  bool is_published(int32_t block) const;

  struct Stats {
    uint64_t hits = 0;        // lookups that returned a block
    uint64_t misses = 0;      // lookups that did not
    uint64_t evictions = 0;   // cache entries dropped by allocate() to reuse their block
    uint64_t hit_tokens = 0;  // token positions served from the cache (hits * block_size)
  };
  Stats stats() const;

  // Drops the entries of all evictable blocks, which become free. Entries of referenced blocks
  // stay. For tests and administration; does not count evictions.
  void clear_cache();

  // Throws std::logic_error if counters, the free list, the LRU list and the entry map disagree.
  // O(n_blocks): for tests.
  void check_invariants() const;

 private:
  static constexpr int32_t kNone = -1;

  struct Block {
    int32_t refcount = 0;
    bool published = false;
    int32_t lru_prev = kNone;  // LRU links, valid while evictable
    int32_t lru_next = kNone;
    uint64_t key = 0;     // map key of the entry, valid while published
    uint64_t parent = 0;  // parent hash of the entry, valid while published
  };

  void check_id(int32_t block, const char* what) const;
  void check_tokens(std::span<const int32_t> tokens, const char* what) const;
  std::span<const int32_t> stored_tokens(int32_t block) const;
  bool entry_matches(int32_t block, uint64_t parent, std::span<const int32_t> tokens) const;
  void lru_push_back(int32_t block);
  void lru_unlink(int32_t block);
  void unpublish(int32_t block);

  int32_t n_blocks_;
  int32_t block_size_;
  KeyHashFn key_hash_;
  std::vector<Block> blocks_;
  std::vector<int32_t> tokens_;     // n_blocks * block_size: each published block's tokens
  std::vector<int32_t> free_list_;  // stack of free blocks; back is handed out next
  std::unordered_map<uint64_t, int32_t> entries_;  // key -> published block
  int32_t lru_head_ = kNone;                       // least recently released evictable block
  int32_t lru_tail_ = kNone;                       // most recently released
  int32_t n_evictable_ = 0;
  int32_t n_referenced_ = 0;
  Stats stats_;
};

}  // namespace maas::engine
