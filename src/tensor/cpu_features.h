// What the CPU we run on can do, read with CPUID (and XGETBV for what the OS saves), and a
// human-readable report of it and of the kernel target chosen (`maas info --cpu`).
#pragma once

#include <string>

namespace maas::tensor {

struct CpuFeatures {
  std::string vendor;
  std::string brand;
  bool sse4_2 = false;
  bool avx = false;  // AVX usable: the CPU has it and the OS saves YMM state
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool bmi2 = false;
  bool avx_vnni = false;  // VEX-encoded int8 dot products on 256-bit vectors
  // AVX-512 (only set when the OS saves ZMM and mask state).
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512cd = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;
  bool avx512fp16 = false;
  bool avx512vbmi = false;
  bool avx512vbmi2 = false;
  bool avx512bitalg = false;
  bool avx512vpopcntdq = false;
  bool gfni = false;
  bool vaes = false;
  bool vpclmulqdq = false;
  bool amx_tile = false;
  bool amx_int8 = false;
  bool amx_bf16 = false;
};

// Detected once, then cached.
const CpuFeatures& cpu_features();

// Multi-line report: CPU name, the SIMD features found, the kernel targets this build can run
// here (best first) and the one in use.
std::string cpu_report();

}  // namespace maas::tensor
