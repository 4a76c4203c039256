// Highway configuration shared by every translation unit of the tensor layer that includes
// Highway: include this first. SSSE3 and SSE4 are not compiled (CPUs without AVX2 run the scalar
// kernels), AVX3_DL (Ice Lake, Zen 4 and later: AVX-512 with VNNI, VBMI, ...) is.
#pragma once

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4)
#endif
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL 1
#endif
