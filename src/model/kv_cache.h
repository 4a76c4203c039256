// Paged KV cache storage: the keys and values of every layer, in fixed-size blocks addressed by
// block id. Which block belongs to which sequence is the engine's business (a block table per
// sequence); this class only stores and converts rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "model/model.h"

namespace maas::model {

// How K and V rows are stored. F32 is exact (the reference); F16 halves the memory, Q8_0 (one
// scale per 32 values) roughly quarters it.
enum class KvType { F32, F16, Q8_0 };

const char* kv_type_name(KvType t);
// Parses "f32", "f16" or "q8_0"; throws model::Error otherwise.
KvType kv_type_from_name(const std::string& name);

class KvCache {
 public:
  // Throws model::Error if the sizes are not positive or the model's head size does not fit the
  // type's blocks (Q8_0 needs head_dim % 32 == 0).
  KvCache(const HParams& hp, int32_t n_blocks, int32_t block_size, KvType type);

  // Bytes one block takes (all layers, K and V): what a memory budget divides by.
  static size_t bytes_per_block(const HParams& hp, int32_t block_size, KvType type);

  int32_t n_blocks() const { return n_blocks_; }
  int32_t block_size() const { return block_size_; }
  KvType type() const { return type_; }
  int64_t kv_dim() const { return kv_dim_; }

  // Stores one position's K and V rows (kv_dim floats each) of a layer into (block, slot).
  void write(int64_t layer, int32_t block, int32_t slot, const float* k, const float* v);
  // Converts the K (or V) rows of head `head` for slots [slot0, slot0 + n) of (layer, block) to
  // floats: out[i * head_dim + d]. Every row is converted the same way wherever it is read from.
  void read_k(int64_t layer, int32_t block, int64_t head, int32_t slot0, int32_t n,
              float* out) const;
  void read_v(int64_t layer, int32_t block, int64_t head, int32_t slot0, int32_t n,
              float* out) const;
  // Copies the first n slots of every layer of block src into block dst (forking a sequence
  // whose last block is only partly filled).
  void copy_block(int32_t dst, int32_t src, int32_t n);

 private:
  uint8_t* row(uint8_t* base, int64_t layer, int32_t block, int32_t slot) const;
  void read(const uint8_t* base, int64_t layer, int32_t block, int64_t head, int32_t slot0,
            int32_t n, float* out) const;

  int32_t n_blocks_, block_size_;
  KvType type_;
  int64_t n_layer_, kv_dim_, head_dim_;
  size_t row_bytes_, head_bytes_;
  std::unique_ptr<uint8_t[]> k_, v_;  // [layer][block][slot][row_bytes]
};

}  // namespace maas::model
