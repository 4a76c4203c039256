// Conversions between f32 and every GGUF weight type the engine reads.
// Block layouts are bit-exact with ggml's (the GGUF files of llama.cpp and others).
#pragma once

#include <cstddef>
#include <cstdint>

#include "gguf/tensor_type.h"

namespace maas::tensor {

using gguf::TensorType;

// IEEE half and bfloat16 <-> float. Round-to-nearest-even on the way down; NaN stays NaN.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);
// n halves to floats, exactly fp16_to_fp32 of each (with the F16C instruction where the CPU has
// it): for hot readers of half rows such as the F16 KV cache.
void fp16_to_fp32_row(const uint16_t* src, float* dst, int64_t n);

// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (and Q8_K).
bool can_dequantize(TensorType t);
// At least F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K (see the .cpp for the full
// set).
bool can_quantize(TensorType t);

// Converts n elements (a multiple of the type's block size) starting at src into dst.
// Throws std::invalid_argument for an unsupported type or a bad n.
void dequantize_row(TensorType t, const void* src, float* dst, int64_t n);
// Converts n floats (a multiple of the block size) into blocks at dst (bytes_for(t, n) bytes).
void quantize_row(TensorType t, const float* src, void* dst, int64_t n);

}  // namespace maas::tensor
