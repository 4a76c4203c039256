// Pieces shared by the AMX kernels (kernels_amx.cpp: int8 tiles for the 32-element block types;
// kernels_amx_float.cpp: bf16 tiles for F16 and BF16 weights). Internal to src/tensor.
#pragma once

#include <cstdint>

namespace maas::tensor::kernels::amx {

// LDTILECFG's 64-byte operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

// Counts a product that ran on the tile unit (amx_product_count()).
void count_product();

}  // namespace maas::tensor::kernels::amx

// Code between MAAS_AMX_BEGIN("features") and MAAS_AMX_END is compiled for those ISA extensions
// (Highway has no AMX) and may run only after dispatch checked the CPU.
#define MAAS_PRAGMA(...) _Pragma(#__VA_ARGS__)
#if defined(__clang__)
#define MAAS_AMX_BEGIN(features) \
  MAAS_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define MAAS_AMX_END MAAS_PRAGMA(clang attribute pop)
#else
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which it then reports.
#define MAAS_AMX_BEGIN(features)                                     \
  MAAS_PRAGMA(GCC push_options)                                      \
  MAAS_PRAGMA(GCC target(features)) MAAS_PRAGMA(GCC diagnostic push) \
      MAAS_PRAGMA(GCC diagnostic ignored "-Wmaybe-uninitialized")
#define MAAS_AMX_END MAAS_PRAGMA(GCC diagnostic pop) MAAS_PRAGMA(GCC pop_options)
#endif

// Tile loads and stores as asm statements that name the memory they read or write (GCC's
// intrinsics do not, and a plain "memory" clobber would force the accumulators out of
// registers). Every tile here covers `bytes` contiguous bytes.
#define MAAS_TILE_LOAD(tmm, ptr, stride, bytes)                                       \
  __asm__ __volatile__("tileloadd (%1,%2,1), %%tmm" #tmm                              \
                       :                                                              \
                       : "m"(*reinterpret_cast<const char(*)[bytes]>(ptr)), "r"(ptr), \
                         "r"(static_cast<long>(stride)))
#define MAAS_TILE_STORE(tmm, ptr, stride, bytes)                      \
  __asm__ __volatile__("tilestored %%tmm" #tmm ", (%1,%2,1)"          \
                       : "=m"(*reinterpret_cast<char(*)[bytes]>(ptr)) \
                       : "r"(ptr), "r"(static_cast<long>(stride)))
