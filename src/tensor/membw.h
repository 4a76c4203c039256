// A memory read-bandwidth probe, so that benchmarks can state decode speed as a fraction of the
// machine's roofline (decoding one stream is bound by how fast the weights stream from memory).
#pragma once

#include <cstddef>

namespace maas::tensor {

class ThreadPool;

// Best-of-reps read bandwidth in GB/s (1e9 bytes/s) over a buffer of `bytes` (much larger than
// the caches), read by every thread of the pool in contiguous shares.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t{1} << 30, int reps = 5);

}  // namespace maas::tensor
