// Microbenchmarks of tensor::matmul on realistic shapes (Google Benchmark).
//
// Decode (1 token) streams the weights once, so it is reported as GB/s of weight bytes; the
// matrices rotate through a 1 GiB arena so that they come from memory, not from the last-level
// cache. Prefill (128 prompt tokens: TokenKind::kPrompt) is reported as GFLOP/s (2 * rows * cols
// * tokens per product).
// A read-bandwidth probe gives the machine's roofline for comparison.
//
//   matmul_bench [--threads=N] [--target=NAME] [--hot] [--huge] [google benchmark flags]
//   matmul_bench --model=FILE [--layout=mmap|anon|anon_huge] [--panels] [--tokens=N]
//                [--threads=N]
// e.g. --benchmark_repetitions=5 --benchmark_report_aggregates_only=true for medians.
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/tensor_type.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/thread_pool.h"

namespace {

using maas::gguf::TensorType;
namespace tensor = maas::tensor;

constexpr size_t kArenaBytes = size_t{1} << 30;
int g_threads = 2;
bool g_hot = false;     // reuse one matrix (cache-resident) instead of rotating through the arena
bool g_huge = false;    // back the arena with transparent huge pages
bool g_panels = false;  // --model with an anon layout: Q8_0 matrices in 16-row panels

// A 1 GiB buffer of valid weights of one type: random quants with sane fp16 scales.
struct Arena {
  TensorType type;
  bool panels = false;
  std::unique_ptr<uint8_t, decltype(&std::free)> data{nullptr, &std::free};
};

std::vector<int> half_fields(TensorType t) {
  switch (t) {
    case TensorType::Q4_0:
    case TensorType::Q5_0:
    case TensorType::Q8_0:
      return {0};
    case TensorType::Q4_1:
    case TensorType::Q5_1:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
      return {0, 2};
    case TensorType::Q2_K:
      return {80, 82};
    case TensorType::Q3_K:
      return {108};
    case TensorType::Q6_K:
      return {208};
    default:
      return {};
  }
}

// panels: Q8_0 in WeightLayout::kPanels16, whose 544-byte block columns start with 16 scales
// (every matrix shape's panels are whole block columns, so one arena serves all shapes).
const uint8_t* arena(TensorType t, bool panels = false) {
  static std::vector<Arena> arenas;
  for (const Arena& a : arenas) {
    if (a.type == t && a.panels == panels) return a.data.get();
  }
  Arena a{t, panels};
  a.data.reset(static_cast<uint8_t*>(std::aligned_alloc(2 << 20, kArenaBytes)));
  uint8_t* p = a.data.get();
  if (g_huge) madvise(p, kArenaBytes, MADV_HUGEPAGE);
  std::mt19937_64 rng(42);
  for (size_t i = 0; i < kArenaBytes; i += 8) {
    const uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
  const auto* traits = maas::gguf::type_traits(t);
  if (t == TensorType::F16 || t == TensorType::BF16 || t == TensorType::F32) {
    // Normal numbers of magnitude about 0.1 (denormals would time microcode assists instead):
    // fix the sign-and-exponent byte, keeping a random sign.
    const size_t elem = t == TensorType::F32 ? 4 : 2;
    const uint8_t top = t == TensorType::F16 ? 0x30 : 0x3E;
    for (size_t i = 0; i + elem <= kArenaBytes; i += elem) {
      p[i + elem - 1] = static_cast<uint8_t>(top | (p[i + elem - 1] & 0x80));
    }
  } else if (panels) {
    const uint16_t h = tensor::fp32_to_fp16(0.01f);
    for (size_t b = 0; b + 544 <= kArenaBytes; b += 544) {
      for (int i = 0; i < 16; ++i) std::memcpy(p + b + 2 * i, &h, 2);
    }
  } else {
    const uint16_t h = tensor::fp32_to_fp16(0.01f);
    const std::vector<int> fields = half_fields(t);
    for (size_t b = 0; b + traits->block_bytes <= kArenaBytes; b += traits->block_bytes) {
      for (int off : fields) std::memcpy(p + b + off, &h, 2);
    }
  }
  arenas.push_back(std::move(a));
  return arenas.back().data.get();
}

tensor::ThreadPool& pool() {
  static tensor::ThreadPool p(g_threads);
  return p;
}

void BM_Matmul(benchmark::State& state, TensorType type, int64_t rows, int64_t cols,
               int64_t n_tokens, bool panels) {
  const size_t row_bytes = *maas::gguf::bytes_for(type, static_cast<uint64_t>(cols));
  const size_t matrix_bytes = row_bytes * static_cast<size_t>(rows);
  const size_t n_matrices = std::max<size_t>(1, kArenaBytes / matrix_bytes);
  const uint8_t* base = arena(type, panels);
  std::vector<float> x(static_cast<size_t>(n_tokens * cols)),
      y(static_cast<size_t>(n_tokens * rows));
  std::mt19937 rng(1);
  std::normal_distribution<float> gauss;
  for (float& v : x) v = gauss(rng);
  size_t next = 0;
  for (auto _ : state) {
    const tensor::MatrixView w{
        type,      base + next * matrix_bytes,
        cols,      rows,
        row_bytes, panels ? tensor::WeightLayout::kPanels16 : tensor::WeightLayout::kRows};
    tensor::matmul(w, x.data(), n_tokens, y.data(), &pool(),
                   n_tokens > 1 ? tensor::TokenKind::kPrompt : tensor::TokenKind::kGenerated);
    benchmark::DoNotOptimize(y.data());
    if (!g_hot) next = (next + 1) % n_matrices;
  }
  const double iters = static_cast<double>(state.iterations());
  if (n_tokens == 1) {
    state.counters["GB/s"] = benchmark::Counter(iters * static_cast<double>(matrix_bytes) / 1e9,
                                                benchmark::Counter::kIsRate);
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      iters * 2.0 * static_cast<double>(rows * cols * n_tokens) / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(tensor::kernels::active_target_name());
}

// Sums the arena with every thread of the pool: the memory read roofline.
void BM_MemoryRead(benchmark::State& state) {
  const auto* p = reinterpret_cast<const uint64_t*>(arena(TensorType::Q4_0));
  const int64_t n = static_cast<int64_t>(kArenaBytes / sizeof(uint64_t));
  std::vector<uint64_t> sums(64);
  for (auto _ : state) {
    pool().parallel_for(n / 8, [&](int64_t begin, int64_t end) {
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
      for (int64_t i = begin * 8; i < end * 8; i += 8) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
        s4 += p[i + 4];
        s5 += p[i + 5];
        s6 += p[i + 6];
        s7 += p[i + 7];
      }
      sums[static_cast<size_t>(begin % 64)] = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.counters["GB/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(kArenaBytes) / 1e9,
      benchmark::Counter::kIsRate);
}

void register_all() {
  benchmark::RegisterBenchmark("MemoryRead", BM_MemoryRead)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  const TensorType types[] = {
      TensorType::Q4_0, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q6_K, TensorType::F16,
      TensorType::BF16, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q2_K,
      TensorType::Q3_K, TensorType::Q5_K, TensorType::F32};
  const int64_t shapes[][2] = {{2048, 2048}, {8192, 2048}, {2048, 8192}, {256, 2048}};
  for (TensorType t : types) {
    for (bool panels : {false, true}) {
      if (panels && t != TensorType::Q8_0) continue;
      for (int64_t n_tokens : {1, 128}) {
        for (const auto& s : shapes) {
          const std::string name = std::string(maas::gguf::type_name(t)) + (panels ? "p" : "") +
                                   "/" + std::to_string(s[0]) + "x" + std::to_string(s[1]) +
                                   "/tokens:" + std::to_string(n_tokens);
          benchmark::RegisterBenchmark(name.c_str(), BM_Matmul, t, s[0], s[1], n_tokens, panels)
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }
}

// --model=FILE: replays the matrix products of decoding one token with a llama-shaped GGUF model
// (every layer's q, k, v, o, gate, up, down, then the output matrix), --tokens times, and prints
// the time per token and per kind of matrix: the kernels alone, without the rest of the forward
// pass. --layout=mmap reads the weights from the file mapping, anon copies them into anonymous
// memory, anon_huge into anonymous memory advised for transparent huge pages.
int replay_model(const std::string& path, const std::string& layout, int n_tokens) {
  maas::gguf::File file = maas::gguf::File::open(path);
  const auto& infos = file.tensors();
  const uint8_t* lo = nullptr;
  const uint8_t* hi = nullptr;
  for (const auto& t : infos) {
    if (lo == nullptr || t.data < lo) lo = t.data;
    if (hi == nullptr || t.data + t.n_bytes > hi) hi = t.data + t.n_bytes;
  }
  const size_t span = static_cast<size_t>(hi - lo);
  const uint8_t* base = lo;
  if (layout == "anon" || layout == "anon_huge") {
    void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    if (layout == "anon_huge") madvise(p, span, MADV_HUGEPAGE);
    std::memcpy(p, lo, span);
    base = static_cast<const uint8_t*>(p);
  }
  struct Step {
    std::string kind;
    tensor::MatrixView w;
  };
  std::vector<Step> steps;
  auto add = [&](const std::string& name, const std::string& kind) {
    const maas::gguf::TensorInfo* t = file.tensor(name);
    if (t == nullptr) return false;
    const int64_t cols = static_cast<int64_t>(t->dims[0]);
    const int64_t rows = static_cast<int64_t>(t->rows());
    steps.push_back({kind,
                     {t->type, base + (t->data - lo), cols, rows,
                      *maas::gguf::bytes_for(t->type, static_cast<uint64_t>(cols))}});
    return true;
  };
  for (int l = 0;; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    if (!add(b + "attn_q.weight", "q")) break;
    add(b + "attn_k.weight", "k");
    add(b + "attn_v.weight", "v");
    add(b + "attn_output.weight", "o");
    add(b + "ffn_gate.weight", "gate");
    add(b + "ffn_up.weight", "up");
    add(b + "ffn_down.weight", "down");
  }
  if (!add("output.weight", "output")) add("token_embd.weight", "output");
  if (g_panels && base != lo) {
    for (Step& s : steps) tensor::pack_panels(&s.w, const_cast<uint8_t*>(s.w.data), &pool());
  }
  int64_t max_dim = 0;
  for (const Step& s : steps) max_dim = std::max({max_dim, s.w.rows, s.w.cols});
  std::vector<float> x(static_cast<size_t>(max_dim), 0.01f), y(static_cast<size_t>(max_dim));
  std::map<std::string, double> seconds;
  std::map<std::string, double> bytes;
  std::vector<double> per_token;
  using Clock = std::chrono::steady_clock;
  for (int t = -1; t < n_tokens; ++t) {  // token -1 warms up
    const auto t0 = Clock::now();
    for (const Step& s : steps) {
      const auto s0 = Clock::now();
      tensor::matmul(s.w, x.data(), 1, y.data(), &pool());
      if (t >= 0) {
        seconds[s.kind] += std::chrono::duration<double>(Clock::now() - s0).count();
        bytes[s.kind] += static_cast<double>(s.w.row_bytes) * static_cast<double>(s.w.rows);
      }
    }
    if (t >= 0) per_token.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(per_token.begin(), per_token.end());
  double total_bytes = 0;
  for (const auto& [k, v] : bytes) total_bytes += v;
  const double med = per_token[per_token.size() / 2];
  std::printf("%s layout=%s%s: %.2f ms/token median (min %.2f), %.2f tok/s, %.1f GB/s\n",
              path.c_str(), layout.c_str(), g_panels ? " panels" : "", med * 1e3,
              per_token.front() * 1e3, 1 / med, total_bytes / n_tokens / med / 1e9);
  for (const auto& [k, v] : seconds) {
    std::printf("  %-7s %7.2f ms/token %6.1f GB/s\n", k.c_str(), v / n_tokens * 1e3,
                bytes[k] / v / 1e9);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  std::string model, layout = "mmap";
  int replay_tokens = 16;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--threads=", 0) == 0) {
      g_threads = std::max(1, std::atoi(arg.c_str() + 10));
    } else if (arg.rfind("--model=", 0) == 0) {
      model = arg.substr(8);
    } else if (arg.rfind("--layout=", 0) == 0) {
      layout = arg.substr(9);
    } else if (arg.rfind("--tokens=", 0) == 0) {
      replay_tokens = std::max(1, std::atoi(arg.c_str() + 9));
    } else if (arg == "--huge") {
      g_huge = true;
    } else if (arg == "--panels") {
      g_panels = true;
    } else if (arg == "--hot") {
      g_hot = true;
    } else if (arg.rfind("--target=", 0) == 0) {
      maas::tensor::kernels::force_target(arg.substr(9));
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (!model.empty()) return replay_model(model, layout, replay_tokens);
  int rest_argc = static_cast<int>(rest.size());
  register_all();
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
