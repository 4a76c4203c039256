// Kernel target selection: one KernelTable per target this CPU can run, built once with
// Highway's dynamic dispatch (each Highway unit fills the slots it implements for the target
// Highway picks), the best one active unless MAAS_KERNEL_TARGET or force_target() says otherwise.
#include "tensor/hwy_config.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "hwy/highway.h"
#include "hwy/targets.h"
#include "tensor/cpu_features.h"
#include "tensor/kernels.h"

namespace maas::tensor::kernels {

int slot_of(gguf::TensorType t) {
  using gguf::TensorType;
  switch (t) {
    case TensorType::F32:
      return static_cast<int>(Slot::F32);
    case TensorType::F16:
      return static_cast<int>(Slot::F16);
    case TensorType::BF16:
      return static_cast<int>(Slot::BF16);
    case TensorType::Q4_0:
      return static_cast<int>(Slot::Q4_0);
    case TensorType::Q4_1:
      return static_cast<int>(Slot::Q4_1);
    case TensorType::Q5_0:
      return static_cast<int>(Slot::Q5_0);
    case TensorType::Q5_1:
      return static_cast<int>(Slot::Q5_1);
    case TensorType::Q8_0:
      return static_cast<int>(Slot::Q8_0);
    case TensorType::Q2_K:
      return static_cast<int>(Slot::Q2_K);
    case TensorType::Q3_K:
      return static_cast<int>(Slot::Q3_K);
    case TensorType::Q4_K:
      return static_cast<int>(Slot::Q4_K);
    case TensorType::Q5_K:
      return static_cast<int>(Slot::Q5_K);
    case TensorType::Q6_K:
      return static_cast<int>(Slot::Q6_K);
    default:
      return -1;
  }
}

void* thread_scratch(ScratchId id, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[kScratchCount];
  Buffer& b = buffers[id];
  if (b.size < bytes || b.data == nullptr) {
    const size_t size = (std::max(bytes, 2 * b.size) + 63) / 64 * 64 + 64;
    void* data = std::aligned_alloc(64, size);
    if (data == nullptr) throw std::bad_alloc();
    std::free(b.data);
    b.data = data;
    b.size = size;
  }
  return b.data;
}

namespace {

struct Registry {
  std::vector<KernelTable> tables;  // best first, scalar last
  std::atomic<const KernelTable*> active{nullptr};
};

KernelTable build_scalar() {
  KernelTable t;
  scalar::fill_table(&t);
  return t;
}

// Fills a table with the code of one Highway target: Highway dispatches to the best target it
// believes supported, so it is made to believe only `target` is.
KernelTable build_for(int64_t target, const char* name, bool avx_vnni) {
  KernelTable t = build_scalar();
  t.name = name;
  hwy::SetSupportedTargetsForTest(target);
  auto check = [&](const char* unit) {
    if (t.hwy_target != target) {
      hwy::SetSupportedTargetsForTest(0);
      throw std::logic_error(std::string("kernel dispatch: ") + unit + " filled " +
                             hwy::TargetName(t.hwy_target) + " kernels for target " + name);
    }
    t.hwy_target = 0;
  };
  fill_quant32_kernels(&t, avx_vnni);
  check("kernels_q32");
  fill_kquant_kernels(&t, avx_vnni);
  check("kernels_qk");
  fill_float_kernels(&t);
  check("kernels_float");
  t.hwy_target = target;
  hwy::SetSupportedTargetsForTest(0);
  return t;
}

Registry* build_registry() {
  auto* r = new Registry;
  const CpuFeatures& f = cpu_features();
  const int64_t supported = hwy::SupportedTargets();
  const bool avx2 = f.avx2 && f.fma && f.f16c && f.bmi2;
  const bool avx3 = avx2 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl;
  struct Candidate {
    int64_t target;
    const char* name;
    bool avx_vnni;
    bool cpu_ok;
  };
  const Candidate candidates[] = {
      {HWY_AVX3_DL, "avx3_dl", false, avx3 && f.avx512vnni && f.avx512vbmi && f.avx512vbmi2},
      {HWY_AVX3, "avx3", false, avx3},
      {HWY_AVX2, "avx2_vnni", true, avx2 && f.avx_vnni},
      {HWY_AVX2, "avx2", false, avx2},
  };
  for (const Candidate& c : candidates) {
    if ((HWY_TARGETS & c.target) != 0 && (supported & c.target) != 0 && c.cpu_ok) {
      r->tables.push_back(build_for(c.target, c.name, c.avx_vnni));
    }
  }
  // AMX extends the AVX3_DL kernels, which keep products of few tokens (decode).
  if (!r->tables.empty() && r->tables.front().name == "avx3_dl" && f.amx_tile && f.amx_int8 &&
      amx_usable()) {
    KernelTable amx = r->tables.front();
    amx.name = "amx";
    std::copy(std::begin(amx.types), std::end(amx.types), std::begin(amx.few_tokens));
    amx.few_tokens_below = amx_min_tokens();
    fill_amx_kernels(&amx);
    if (f.amx_bf16 && f.avx512bf16) fill_amx_float_kernels(&amx);
    r->tables.insert(r->tables.begin(), std::move(amx));
  }
  r->tables.push_back(build_scalar());
  const KernelTable* chosen = &r->tables.front();
  if (const char* env = std::getenv("MAAS_KERNEL_TARGET"); env != nullptr && *env != '\0') {
    for (const KernelTable& t : r->tables) {
      if (t.name == env) chosen = &t;
    }
  }
  r->active.store(chosen);
  return r;
}

Registry& registry() {
  static Registry* r = build_registry();  // never destroyed: kernels may run during exit
  return *r;
}

}  // namespace

const KernelTable& active() { return *registry().active.load(std::memory_order_acquire); }

const KernelTable& scalar_table() { return registry().tables.back(); }

std::string active_target_name() { return active().name; }

std::vector<std::string> available_targets() {
  std::vector<std::string> names;
  for (const KernelTable& t : registry().tables) names.push_back(t.name);
  return names;
}

std::vector<std::string> highway_targets() {
  std::vector<std::string> names;
  const uint64_t supported = static_cast<uint64_t>(hwy::SupportedTargets());
  for (int b = 0; b < 64; ++b) {  // Highway's better targets have lower bits: best first
    const uint64_t bit = uint64_t{1} << b;
    if ((supported & bit) != 0) names.emplace_back(hwy::TargetName(static_cast<int64_t>(bit)));
  }
  return names;
}

void force_target(const std::string& name) {
  Registry& r = registry();
  if (name.empty() || name == "auto") {
    r.active.store(&r.tables.front(), std::memory_order_release);
    return;
  }
  for (const KernelTable& t : r.tables) {
    if (t.name == name) {
      r.active.store(&t, std::memory_order_release);
      return;
    }
  }
  std::string known;
  for (const KernelTable& t : r.tables) known += " " + t.name;
  throw std::invalid_argument("kernel target '" + name + "' cannot run here (available:" + known +
                              ")");
}

}  // namespace maas::tensor::kernels
