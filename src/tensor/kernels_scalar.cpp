// The scalar kernels: the reference statement of every kernel's arithmetic (see kernels.h), one
// row and one token at a time. The vector targets compute the same operations lane by lane and
// must give bit-identical results; the tests hold them to that.
//
// Float rules that keep the targets identical: every product that feeds a sum is an explicit
// fused multiply-add (std::fma), never `a * b + c`, which the compiler may or may not contract
// depending on the target it compiles for.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensor/kernels.h"
#include "tensor/panels.h"
#include "tensor/quant.h"
#include "tensor/quant_internal.h"

namespace maas::tensor::kernels::scalar {
namespace {

using detail::load_u16;
using detail::load_u32;

// ---------------------------------------------------------------------------------------------
// Float weights: 16 partial sums, column i feeding sum i % 16 by a fused multiply-add, folded
// by a fixed pairwise tree.

float load_f32_weight(const uint8_t* row, int64_t i) { return detail::load_f32(row + 4 * i); }
float load_f16_weight(const uint8_t* row, int64_t i) { return fp16_to_fp32(load_u16(row + 2 * i)); }
float load_bf16_weight(const uint8_t* row, int64_t i) {
  return bf16_to_fp32(load_u16(row + 2 * i));
}

template <float (*kLoad)(const uint8_t*, int64_t)>
void gemm_float(const GemmArgs& a) {
  for (int64_t r = a.row_begin; r < a.row_end; ++r) {
    const uint8_t* row = a.w + static_cast<size_t>(r) * a.row_bytes;
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const float* x = a.x + t * a.cols;
      float s[16] = {};
      for (int64_t i = 0; i < a.cols; ++i) s[i % 16] = std::fma(kLoad(row, i), x[i], s[i % 16]);
      for (int half = 8; half >= 1; half /= 2) {
        for (int j = 0; j < half; ++j) s[j] = s[j] + s[j + half];
      }
      a.y[t * a.ldy + r] = s[0];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Quantized weights. Each type's block function adds one weight block's contribution to acc,
// given the token's activation quants for the block (qa), their scale (da) and partial sums.

// Activations of one token for one weight block.
struct ActBlock {
  const int8_t* q;
  float d;
  const int16_t* sums;
};

// 32-element blocks: element j < 16 in the low nibble of qs[j], j >= 16 in the high nibble of
// qs[j - 16]; Q5 types keep bit 4 of element j in bit j of the 32-bit qh.
int nibble32(const uint8_t* qs, int j) { return j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4); }

float block_q4_0(const uint8_t* blk, const ActBlock& x, float acc) {
  const float d = fp16_to_fp32(load_u16(blk));
  int32_t dot = 0;
  for (int j = 0; j < 32; ++j) dot += (nibble32(blk + 2, j) - 8) * x.q[j];
  return std::fma(static_cast<float>(dot), d * x.d, acc);
}

float block_q4_1(const uint8_t* blk, const ActBlock& x, float acc) {
  const float d = fp16_to_fp32(load_u16(blk));
  const float m = fp16_to_fp32(load_u16(blk + 2));
  int32_t dot = 0;
  for (int j = 0; j < 32; ++j) dot += nibble32(blk + 4, j) * x.q[j];
  acc = std::fma(static_cast<float>(dot), d * x.d, acc);
  return std::fma(static_cast<float>(x.sums[0]), m * x.d, acc);
}

float block_q5_0(const uint8_t* blk, const ActBlock& x, float acc) {
  const float d = fp16_to_fp32(load_u16(blk));
  const uint32_t qh = load_u32(blk + 2);
  int32_t dot = 0;
  for (int j = 0; j < 32; ++j) {
    dot += ((nibble32(blk + 6, j) | static_cast<int>(((qh >> j) & 1u) << 4)) - 16) * x.q[j];
  }
  return std::fma(static_cast<float>(dot), d * x.d, acc);
}

float block_q5_1(const uint8_t* blk, const ActBlock& x, float acc) {
  const float d = fp16_to_fp32(load_u16(blk));
  const float m = fp16_to_fp32(load_u16(blk + 2));
  const uint32_t qh = load_u32(blk + 4);
  int32_t dot = 0;
  for (int j = 0; j < 32; ++j) {
    dot += (nibble32(blk + 8, j) | static_cast<int>(((qh >> j) & 1u) << 4)) * x.q[j];
  }
  acc = std::fma(static_cast<float>(dot), d * x.d, acc);
  return std::fma(static_cast<float>(x.sums[0]), m * x.d, acc);
}

float block_q8_0(const uint8_t* blk, const ActBlock& x, float acc) {
  const float d = fp16_to_fp32(load_u16(blk));
  int32_t dot = 0;
  for (int j = 0; j < 32; ++j) dot += static_cast<int8_t>(blk[2 + j]) * x.q[j];
  return std::fma(static_cast<float>(dot), d * x.d, acc);
}

// k-quants (256-element super-blocks; layouts in quant_k.cpp). I is the sum over sub-blocks of
// scale * dot(quants, activation quants), M the sum of min * activation partial sum.

// Q2_K/Q3_K low bits: element e sits in qs[32 * (e / 128) + e % 32] at shift 2 * ((e % 128) / 32).
int crumb(const uint8_t* qs, int e) {
  return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}
// Q4_K/Q5_K low nibbles: 64-element chunks share 32 bytes, low nibbles first.
int nibble256(const uint8_t* qs, int e) {
  return (qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 0x0F;
}

float finish_k(int32_t i_sum, int32_t m_sum, float d, float dmin, float da, float acc) {
  acc = std::fma(static_cast<float>(i_sum), d * da, acc);
  return std::fma(static_cast<float>(-m_sum), dmin * da, acc);
}

float block_q2_k(const uint8_t* blk, const ActBlock& x, float acc) {
  const uint8_t* scales = blk;
  const uint8_t* qs = blk + 16;
  int32_t i_sum = 0, m_sum = 0;
  for (int j = 0; j < 16; ++j) {
    int32_t dot = 0;
    for (int e = 16 * j; e < 16 * j + 16; ++e) dot += crumb(qs, e) * x.q[e];
    i_sum += (scales[j] & 0x0F) * dot;
    m_sum += (scales[j] >> 4) * x.sums[j];
  }
  return finish_k(i_sum, m_sum, fp16_to_fp32(load_u16(blk + 80)), fp16_to_fp32(load_u16(blk + 82)),
                  x.d, acc);
}

float block_q3_k(const uint8_t* blk, const ActBlock& x, float acc) {
  const uint8_t* hmask = blk;
  const uint8_t* qs = blk + 32;
  const uint8_t* packed = blk + 96;
  int32_t i_sum = 0;
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? (packed[j] & 0x0F) : (packed[j - 8] >> 4);
    const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
    const int scale = (low | (high << 4)) - 32;
    int32_t dot = 0;
    for (int e = 16 * j; e < 16 * j + 16; ++e) {
      const int hbit = (hmask[e % 32] >> (e / 32)) & 1;
      dot += (crumb(qs, e) + 4 * hbit - 4) * x.q[e];
    }
    i_sum += scale * dot;
  }
  return std::fma(static_cast<float>(i_sum), fp16_to_fp32(load_u16(blk + 108)) * x.d, acc);
}

template <bool kFifthBit>
float block_q45_k(const uint8_t* blk, const ActBlock& x, float acc) {
  const uint8_t* packed = blk + 4;
  const uint8_t* qh = blk + 16;
  const uint8_t* qs = kFifthBit ? blk + 48 : blk + 16;
  int32_t i_sum = 0, m_sum = 0;
  for (int j = 0; j < 8; ++j) {
    int scale, min;
    detail::unpack_scale_min(packed, j, scale, min);
    int32_t dot = 0;
    for (int e = 32 * j; e < 32 * j + 32; ++e) {
      int u = nibble256(qs, e);
      if (kFifthBit) u |= ((qh[e % 32] >> j) & 1) << 4;
      dot += u * x.q[e];
    }
    i_sum += scale * dot;
    m_sum += min * x.sums[j];
  }
  return finish_k(i_sum, m_sum, fp16_to_fp32(load_u16(blk)), fp16_to_fp32(load_u16(blk + 2)), x.d,
                  acc);
}

float block_q6_k(const uint8_t* blk, const ActBlock& x, float acc) {
  const uint8_t* ql = blk;
  const uint8_t* qh = blk + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(blk + 192);
  int32_t i_sum = 0;
  for (int j = 0; j < 16; ++j) {
    int32_t dot = 0;
    for (int e = 16 * j; e < 16 * j + 16; ++e) {
      const int low_byte = 64 * (e / 128) + 32 * ((e % 128 / 32) % 2) + e % 32;
      const int low = (ql[low_byte] >> (4 * ((e % 128) / 64))) & 0x0F;
      const int high = (qh[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      dot += ((low | (high << 4)) - 32) * x.q[e];
    }
    i_sum += scales[j] * dot;
  }
  return std::fma(static_cast<float>(i_sum), fp16_to_fp32(load_u16(blk + 208)) * x.d, acc);
}

using BlockFn = float (*)(const uint8_t*, const ActBlock&, float);

// The scalar kernels read quantized activations in the plain layout (tile 1), where a token's
// quants and partial sums are contiguous.
template <BlockFn kBlock, int kBlockElems, int kBlockBytes, int kSub>
void gemm_quant(const GemmArgs& a) {
  const Activations& qa = *a.act;
  const int64_t n_blocks = a.cols / kBlockElems;
  for (int64_t r = a.row_begin; r < a.row_end; ++r) {
    const uint8_t* row = a.w + static_cast<size_t>(r) * a.row_bytes;
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      float acc = 0.0f;
      for (int64_t b = 0; b < n_blocks; ++b) {
        const ActBlock x{qa.q + qa.q_index(t, b * kBlockElems), qa.d[qa.d_index(t, b)],
                         qa.sums + qa.sum_index(t, b * (kBlockElems / kSub))};
        acc = kBlock(row + b * kBlockBytes, x, acc);
      }
      a.y[t * a.ldy + r] = acc;
    }
  }
}

}  // namespace

void q8_0_panel_rows(const GemmArgs& a, int64_t begin, int64_t end) {
  const Activations& qa = *a.act;
  const int64_t n_blocks = a.cols / panels::kBlock;
  uint8_t blk[panels::kBlockBytes];
  int8_t q[panels::kBlock];
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* panel =
        a.w + static_cast<size_t>(r / panels::kRows * panels::kRows) * a.row_bytes;
    const uint8_t* row = a.w + static_cast<size_t>(r) * a.row_bytes;
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      float acc = 0.0f;
      for (int64_t b = 0; b < n_blocks; ++b) {
        if (r < a.packed_rows) {
          panels::read_block(panel, r % panels::kRows, b, blk);
        } else {
          std::memcpy(blk, row + b * panels::kBlockBytes, panels::kBlockBytes);
        }
        for (int j = 0; j < panels::kBlock; ++j) q[j] = qa.q[qa.q_index(t, b * panels::kBlock + j)];
        acc = block_q8_0(blk, ActBlock{q, qa.d[qa.d_index(t, b)], nullptr}, acc);
      }
      a.y[t * a.ldy + r] = acc;
    }
  }
}

void prepare_acts(const float* x, int64_t cols, int64_t t_begin, int64_t t_end,
                  const ActFormat& format, const Activations& out) {
  if (format.block == 0) {  // f32 in the interleaved layout
    for (int64_t t = t_begin; t < t_end; ++t) {
      for (int64_t i = 0; i < cols; ++i) out.x[out.x_index(t, i)] = x[t * cols + i];
    }
    return;
  }
  std::vector<int8_t> q(static_cast<size_t>(cols));
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* xr = x + t * cols;
    for (int64_t b = 0; b < out.n_blocks; ++b) {
      const float* xb = xr + b * format.block;
      // The largest magnitude, compared as bit patterns (a NaN compares above every number).
      uint32_t amax_bits = 0;
      for (int i = 0; i < format.block; ++i) {
        uint32_t bits;
        std::memcpy(&bits, &xb[i], sizeof bits);
        amax_bits = std::max(amax_bits, bits & 0x7FFFFFFFu);
      }
      float amax;
      std::memcpy(&amax, &amax_bits, sizeof amax);
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      out.d[out.d_index(t, b)] = d;
      for (int i = 0; i < format.block; ++i) {
        const float v = xb[i] * id;
        // |v| <= 127 for finite inputs; NaN (an infinite or NaN input) maps to -127.
        const int qi =
            v == v ? static_cast<int>(std::nearbyint(std::clamp(v, -127.0f, 127.0f))) : -127;
        q[static_cast<size_t>(b * format.block + i)] = static_cast<int8_t>(qi);
      }
    }
    for (int64_t i = 0; i < cols; ++i) out.q[out.q_index(t, i)] = q[static_cast<size_t>(i)];
    for (int64_t s = 0; s < out.n_sums; ++s) {
      int sum = 0;
      for (int i = 0; i < format.sub; ++i) sum += q[static_cast<size_t>(s * format.sub + i)];
      out.sums[out.sum_index(t, s)] = static_cast<int16_t>(sum);
      out.init[out.init_index(t, s)] = -format.bias * sum;
    }
  }
}

void fill_table(KernelTable* table) {
  table->name = "scalar";
  table->prepare_acts = prepare_acts;
  auto set = [&](Slot slot, GemmFn fn, ActFormat act) {
    table->types[static_cast<int>(slot)] = TypeKernel{fn, act, 1};
  };
  const ActFormat f32{0, 0, 0}, b32{32, 32, 0}, k32{256, 32, 0}, k16{256, 16, 0};
  set(Slot::F32, gemm_float<load_f32_weight>, f32);
  set(Slot::F16, gemm_float<load_f16_weight>, f32);
  set(Slot::BF16, gemm_float<load_bf16_weight>, f32);
  set(Slot::Q4_0, gemm_quant<block_q4_0, 32, 18, 32>, b32);
  set(Slot::Q4_1, gemm_quant<block_q4_1, 32, 20, 32>, b32);
  set(Slot::Q5_0, gemm_quant<block_q5_0, 32, 22, 32>, b32);
  set(Slot::Q5_1, gemm_quant<block_q5_1, 32, 24, 32>, b32);
  set(Slot::Q8_0, gemm_quant<block_q8_0, 32, 34, 32>, b32);
  set(Slot::Q2_K, gemm_quant<block_q2_k, 256, 84, 16>, k16);
  set(Slot::Q3_K, gemm_quant<block_q3_k, 256, 110, 16>, k16);
  set(Slot::Q4_K, gemm_quant<block_q45_k<false>, 256, 144, 32>, k32);
  set(Slot::Q5_K, gemm_quant<block_q45_k<true>, 256, 176, 32>, k32);
  set(Slot::Q6_K, gemm_quant<block_q6_k, 256, 210, 16>, k16);
  table->types[static_cast<int>(Slot::Q8_0_Panels)] =
      TypeKernel{[](const GemmArgs& a) { q8_0_panel_rows(a, a.row_begin, a.row_end); }, b32, 16};
}

}  // namespace maas::tensor::kernels::scalar
