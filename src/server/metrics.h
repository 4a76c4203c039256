// Service metrics in the Prometheus text exposition format: counters, gauges and histograms,
// thread-safe, rendered by GET /metrics.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace maas::server {

class Metrics {
 public:
  Metrics();

  void count_request(const std::string& endpoint, int status);
  void observe_queue_time(double seconds);
  void observe_ttft(double seconds);
  void observe_inter_token(double seconds);
  void observe_e2e(double seconds);
  void add_tokens(int64_t prompt, int64_t cached, int64_t generated);

  // Engine gauges, read at render time through this callback's snapshot.
  struct EngineGauges {
    std::string model;
    int64_t running = 0, waiting = 0, kv_used = 0, kv_free = 0;
    uint64_t prefix_hits = 0, prefix_misses = 0, preemptions = 0;
  };
  std::string render(const std::vector<EngineGauges>& engines) const;

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;  // one per bound, plus +Inf
    double sum = 0;
    uint64_t count = 0;
    void observe(double v);
  };
  void render_histogram(std::string& out, const std::string& name, const std::string& help,
                        const Histogram& h) const;

  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  Histogram queue_, ttft_, itl_, e2e_;
  uint64_t prompt_tokens_ = 0, cached_tokens_ = 0, generated_tokens_ = 0;
};

}  // namespace maas::server
