#include "model/kv_cache.h"

#include <fmt/format.h>

#include <cstring>

#include "tensor/quant.h"

namespace maas::model {

namespace {

gguf::TensorType storage_type(KvType t) {
  switch (t) {
    case KvType::F32:
      return gguf::TensorType::F32;
    case KvType::F16:
      return gguf::TensorType::F16;
    case KvType::Q8_0:
      return gguf::TensorType::Q8_0;
  }
  return gguf::TensorType::F32;
}

}  // namespace

const char* kv_type_name(KvType t) {
  switch (t) {
    case KvType::F32:
      return "f32";
    case KvType::F16:
      return "f16";
    case KvType::Q8_0:
      return "q8_0";
  }
  return "?";
}

KvType kv_type_from_name(const std::string& name) {
  for (KvType t : {KvType::F32, KvType::F16, KvType::Q8_0}) {
    if (name == kv_type_name(t)) return t;
  }
  throw Error(fmt::format("unknown KV cache type '{}' (expected f32, f16 or q8_0)", name));
}

size_t KvCache::bytes_per_block(const HParams& hp, int32_t block_size, KvType type) {
  const size_t row =
      gguf::bytes_for(storage_type(type), static_cast<uint64_t>(hp.n_head_kv * hp.head_dim))
          .value_or(0);
  return 2 * row * static_cast<size_t>(block_size) * static_cast<size_t>(hp.n_layer);
}

KvCache::KvCache(const HParams& hp, int32_t n_blocks, int32_t block_size, KvType type)
    : n_blocks_(n_blocks),
      block_size_(block_size),
      type_(type),
      n_layer_(hp.n_layer),
      kv_dim_(hp.n_head_kv * hp.head_dim),
      head_dim_(hp.head_dim) {
  if (n_blocks <= 0 || block_size <= 0) {
    throw Error(fmt::format("KV cache: {} blocks of {} positions: both must be positive", n_blocks,
                            block_size));
  }
  const auto st = storage_type(type);
  const int64_t type_block = gguf::type_traits(st)->block_size;
  if (head_dim_ % type_block != 0) {
    throw Error(fmt::format("KV cache: type {} needs a head size divisible by {}, the model has {}",
                            kv_type_name(type), type_block, head_dim_));
  }
  row_bytes_ = *gguf::bytes_for(st, static_cast<uint64_t>(kv_dim_));
  head_bytes_ = *gguf::bytes_for(st, static_cast<uint64_t>(head_dim_));
  const size_t total = row_bytes_ * static_cast<size_t>(block_size) *
                       static_cast<size_t>(n_blocks) * static_cast<size_t>(n_layer_);
  // Not zeroed: a slot is always written before it is read, and zeroing would commit every page
  // of a large pool at start.
  k_ = std::make_unique_for_overwrite<uint8_t[]>(total);
  v_ = std::make_unique_for_overwrite<uint8_t[]>(total);
}

uint8_t* KvCache::row(uint8_t* base, int64_t layer, int32_t block, int32_t slot) const {
  const size_t index =
      (static_cast<size_t>(layer) * static_cast<size_t>(n_blocks_) + static_cast<size_t>(block)) *
          static_cast<size_t>(block_size_) +
      static_cast<size_t>(slot);
  return base + index * row_bytes_;
}

void KvCache::write(int64_t layer, int32_t block, int32_t slot, const float* k, const float* v) {
  const auto st = storage_type(type_);
  tensor::quantize_row(st, k, row(k_.get(), layer, block, slot), kv_dim_);
  tensor::quantize_row(st, v, row(v_.get(), layer, block, slot), kv_dim_);
}

void KvCache::read(const uint8_t* base, int64_t layer, int32_t block, int64_t head, int32_t slot0,
                   int32_t n, float* out) const {
  const auto st = storage_type(type_);
  for (int32_t s = 0; s < n; ++s) {
    const uint8_t* src =
        row(const_cast<uint8_t*>(base), layer, block, s) + static_cast<size_t>(head) * head_bytes_;
    if (type_ == KvType::F32) {
      std::memcpy(out + s * head_dim_, src, head_bytes_);
    } else if (type_ == KvType::F16) {  // the hot case: straight to the conversion
      tensor::fp16_to_fp32_row(reinterpret_cast<const uint16_t*>(src), out + s * head_dim_,
                               head_dim_);
    } else {
      tensor::dequantize_row(st, src, out + s * head_dim_, head_dim_);
    }
  }
}

void KvCache::read_k(int64_t layer, int32_t block, int64_t head, int32_t slot0, int32_t n,
                     float* out) const {
  read(k_.get(), layer, block, head, slot0, n, out);
}

void KvCache::read_v(int64_t layer, int32_t block, int64_t head, int32_t slot0, int32_t n,
                     float* out) const {
  read(v_.get(), layer, block, head, slot0, n, out);
}

void KvCache::copy_block(int32_t dst, int32_t src, int32_t n) {
  for (int64_t l = 0; l < n_layer_; ++l) {
    std::memcpy(row(k_.get(), l, dst, 0), row(k_.get(), l, src, 0),
                row_bytes_ * static_cast<size_t>(n));
    std::memcpy(row(v_.get(), l, dst, 0), row(v_.get(), l, src, 0),
                row_bytes_ * static_cast<size_t>(n));
  }
}

}  // namespace maas::model
