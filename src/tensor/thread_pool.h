// A persistent pool of worker threads for data-parallel loops: no thread is created per call.
//
// Between loops the workers spin for a short while (about kSpinMicros) before sleeping: a
// forward pass issues hundreds of short loops per token, and waking a sleeping thread costs tens
// of microseconds on virtual machines (the idle CPU halts), more than a small matrix product.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace maas::tensor {

class ThreadPool {
 public:
  // n_threads counts the calling thread, which takes a share of every loop; 0 means all cores.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // How long an idle worker keeps spinning before it sleeps.
  static constexpr int kSpinMicros = 200;

  // Calls fn(begin, end) on disjoint ranges covering [0, n), in contiguous equal shares, one per
  // thread, and returns when all are done. Not reentrant.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;  // guards sleeping and waking (the condition variables)
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  std::atomic<uint64_t> generation_{0};  // bumped (under mu_) to publish a job
  std::atomic<int> pending_{0};          // workers still running the current job
  std::atomic<bool> stop_{false};
};

}  // namespace maas::tensor
