#include "server/metrics.h"

#include <fmt/format.h>

namespace maas::server {

namespace {

std::vector<double> latency_bounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120};
}

}  // namespace

void Metrics::Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  ++counts[i];
  sum += v;
  ++count;
}

Metrics::Metrics() {
  for (Histogram* h : {&queue_, &ttft_, &itl_, &e2e_}) {
    h->bounds = latency_bounds();
    h->counts.assign(h->bounds.size() + 1, 0);
  }
}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::observe_queue_time(double s) {
  std::lock_guard lock(mu_);
  queue_.observe(s);
}

void Metrics::observe_ttft(double s) {
  std::lock_guard lock(mu_);
  ttft_.observe(s);
}

void Metrics::observe_inter_token(double s) {
  std::lock_guard lock(mu_);
  itl_.observe(s);
}

void Metrics::observe_e2e(double s) {
  std::lock_guard lock(mu_);
  e2e_.observe(s);
}

void Metrics::add_tokens(int64_t prompt, int64_t cached, int64_t generated) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += static_cast<uint64_t>(prompt);
  cached_tokens_ += static_cast<uint64_t>(cached);
  generated_tokens_ += static_cast<uint64_t>(generated);
}

void Metrics::render_histogram(std::string& out, const std::string& name, const std::string& help,
                               const Histogram& h) const {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cum = 0;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    cum += h.counts[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], cum);
  }
  cum += h.counts.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cum, name,
                     h.sum, name, h.count);
}

std::string Metrics::render(const std::vector<EngineGauges>& engines) const {
  std::lock_guard lock(mu_);
  std::string out;
  out += "# HELP maas_requests_total HTTP requests by endpoint and status.\n";
  out += "# TYPE maas_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    out += fmt::format("maas_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first,
                       key.second, n);
  }
  render_histogram(out, "maas_queue_time_seconds", "Time from arrival to first scheduling.",
                   queue_);
  render_histogram(out, "maas_time_to_first_token_seconds", "Time from arrival to first token.",
                   ttft_);
  render_histogram(out, "maas_inter_token_latency_seconds", "Time between streamed tokens.", itl_);
  render_histogram(out, "maas_e2e_request_latency_seconds", "Time from arrival to completion.",
                   e2e_);
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, v);
  };
  counter("maas_prompt_tokens_total", "Prompt tokens of finished requests.", prompt_tokens_);
  counter("maas_cached_prompt_tokens_total", "Prompt tokens served from the prefix cache.",
          cached_tokens_);
  counter("maas_generation_tokens_total", "Generated tokens.", generated_tokens_);
  auto gauge_family = [&](const char* name, const char* help, const char* type, auto get) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    for (const EngineGauges& g : engines) {
      out += fmt::format("{}{{model=\"{}\"}} {}\n", name, g.model, get(g));
    }
  };
  gauge_family("maas_running_sequences", "Sequences in the running batch.", "gauge",
               [](const EngineGauges& g) { return g.running; });
  gauge_family("maas_waiting_sequences", "Sequences waiting to be scheduled.", "gauge",
               [](const EngineGauges& g) { return g.waiting; });
  gauge_family("maas_kv_blocks_used", "KV cache blocks referenced by sequences.", "gauge",
               [](const EngineGauges& g) { return g.kv_used; });
  gauge_family("maas_kv_blocks_free", "KV cache blocks free or evictable.", "gauge",
               [](const EngineGauges& g) { return g.kv_free; });
  gauge_family("maas_prefix_cache_hits_total", "Prefix cache block lookups that hit.", "counter",
               [](const EngineGauges& g) { return g.prefix_hits; });
  gauge_family("maas_prefix_cache_misses_total", "Prefix cache block lookups that missed.",
               "counter", [](const EngineGauges& g) { return g.prefix_misses; });
  gauge_family("maas_prefix_cache_hit_ratio", "Hits over lookups of the prefix cache.", "gauge",
               [](const EngineGauges& g) {
                 const uint64_t n = g.prefix_hits + g.prefix_misses;
                 return n == 0 ? 0.0 : static_cast<double>(g.prefix_hits) / static_cast<double>(n);
               });
  gauge_family("maas_preemptions_total", "Sequences preempted for KV memory.", "counter",
               [](const EngineGauges& g) { return g.preemptions; });
  return out;
}

}  // namespace maas::server
