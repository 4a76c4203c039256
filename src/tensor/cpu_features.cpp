#include "tensor/cpu_features.h"

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "tensor/kernels.h"
#include "tensor/ops.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define MAAS_X86 1
#else
#define MAAS_X86 0
#endif

namespace maas::tensor {
namespace {

#if MAAS_X86
struct Regs {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Regs cpuid(uint32_t leaf, uint32_t subleaf) {
  Regs r;
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
  return r;
}

// XCR0: which register state the OS saves on context switches. Only valid with OSXSAVE.
uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool bit(uint32_t word, int b) { return ((word >> b) & 1u) != 0; }

CpuFeatures detect() {
  CpuFeatures f;
  const Regs r0 = cpuid(0, 0);
  const uint32_t max_leaf = r0.eax;
  char vendor[13] = {};
  std::memcpy(vendor, &r0.ebx, 4);
  std::memcpy(vendor + 4, &r0.edx, 4);
  std::memcpy(vendor + 8, &r0.ecx, 4);
  f.vendor = vendor;

  if (cpuid(0x80000000u, 0).eax >= 0x80000004u) {
    char brand[49] = {};
    for (uint32_t i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002u + i, 0);
      std::memcpy(brand + 16 * i, &r.eax, 4);
      std::memcpy(brand + 16 * i + 4, &r.ebx, 4);
      std::memcpy(brand + 16 * i + 8, &r.ecx, 4);
      std::memcpy(brand + 16 * i + 12, &r.edx, 4);
    }
    std::string s = brand;
    const size_t first = s.find_first_not_of(' ');
    f.brand = first == std::string::npos ? "" : s.substr(first);
  }
  if (max_leaf < 1) return f;

  const Regs r1 = cpuid(1, 0);
  f.sse4_2 = bit(r1.ecx, 20);
  const bool osxsave = bit(r1.ecx, 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;          // SSE and AVX state
  const bool os_zmm = (xcr0 & 0xE6) == 0xE6;        // plus opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;  // XTILECFG and XTILEDATA

  f.avx = os_ymm && bit(r1.ecx, 28);
  f.fma = f.avx && bit(r1.ecx, 12);
  f.f16c = f.avx && bit(r1.ecx, 29);
  if (max_leaf < 7) return f;

  const Regs r7 = cpuid(7, 0);
  const Regs r7_1 = r7.eax >= 1 ? cpuid(7, 1) : Regs{};
  f.avx2 = f.avx && bit(r7.ebx, 5);
  f.bmi2 = bit(r7.ebx, 8);
  f.avx_vnni = f.avx2 && bit(r7_1.eax, 4);
  if (os_zmm) {
    f.avx512f = bit(r7.ebx, 16);
    f.avx512dq = bit(r7.ebx, 17);
    f.avx512cd = bit(r7.ebx, 28);
    f.avx512bw = bit(r7.ebx, 30);
    f.avx512vl = bit(r7.ebx, 31);
    f.avx512vbmi = bit(r7.ecx, 1);
    f.avx512vbmi2 = bit(r7.ecx, 6);
    f.avx512vnni = bit(r7.ecx, 11);
    f.avx512bitalg = bit(r7.ecx, 12);
    f.avx512vpopcntdq = bit(r7.ecx, 14);
    f.avx512fp16 = bit(r7.edx, 23);
    f.avx512bf16 = bit(r7_1.eax, 5);
  }
  f.gfni = bit(r7.ecx, 8);
  f.vaes = f.avx && bit(r7.ecx, 9);
  f.vpclmulqdq = f.avx && bit(r7.ecx, 10);
  if (os_amx) {
    f.amx_bf16 = bit(r7.edx, 22);
    f.amx_tile = bit(r7.edx, 24);
    f.amx_int8 = bit(r7.edx, 25);
  }
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

std::string cpu_report() {
  const CpuFeatures& f = cpu_features();
  const std::pair<const char*, bool> flags[] = {
      {"sse4.2", f.sse4_2},
      {"avx", f.avx},
      {"avx2", f.avx2},
      {"fma", f.fma},
      {"f16c", f.f16c},
      {"bmi2", f.bmi2},
      {"avx-vnni", f.avx_vnni},
      {"avx512f", f.avx512f},
      {"avx512bw", f.avx512bw},
      {"avx512dq", f.avx512dq},
      {"avx512vl", f.avx512vl},
      {"avx512cd", f.avx512cd},
      {"avx512vnni", f.avx512vnni},
      {"avx512bf16", f.avx512bf16},
      {"avx512fp16", f.avx512fp16},
      {"avx512vbmi", f.avx512vbmi},
      {"avx512vbmi2", f.avx512vbmi2},
      {"avx512bitalg", f.avx512bitalg},
      {"avx512vpopcntdq", f.avx512vpopcntdq},
      {"gfni", f.gfni},
      {"vaes", f.vaes},
      {"vpclmulqdq", f.vpclmulqdq},
      {"amx-tile", f.amx_tile},
      {"amx-int8", f.amx_int8},
      {"amx-bf16", f.amx_bf16},
  };
  std::string out = "cpu: " + (f.brand.empty() ? std::string("unknown") : f.brand);
  if (!f.vendor.empty()) out += " (" + f.vendor + ")";
  out += "\nfeatures:";
  for (const auto& [name, present] : flags) {
    if (present) out += std::string(" ") + name;
  }
  out += "\nhighway targets:";
  for (const std::string& t : kernels::highway_targets()) out += " " + t;
  out += "\nkernel targets:";
  for (const std::string& t : kernels::available_targets()) out += " " + t;
  out += "\nchosen: " + kernels::active_target_name() + "\n";
  // Weight types whose prompt tokens get kernels of their own (ops.h, TokenKind).
  std::string prompt;
  for (gguf::TensorType t : {gguf::TensorType::F16, gguf::TensorType::BF16}) {
    if (prompt_kernels_differ(t)) prompt += " " + std::string(gguf::type_name(t));
  }
  if (!prompt.empty()) out += "prompt tokens on the bf16 tile unit:" + prompt + "\n";
  return out;
}

}  // namespace maas::tensor
