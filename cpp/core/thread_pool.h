// A process-wide pool of worker threads. All cores by default; MSTAR_NUM_THREADS
// overrides at start-up and set_num_threads() at run time. The calling thread
// takes part as thread 0, so one thread means no worker at all.
#pragma once
#include <cstdint>
#include <functional>

namespace mstar {

int num_threads();
void set_num_threads(int n);

// Runs fn(thread_index, thread_count) once on each of min(max_threads, num_threads())
// threads (max_threads <= 0: all) and waits for all of them. A call made from inside a
// running task runs inline with thread_count 1. The first exception thrown by any
// thread is rethrown here after all threads finished.
void parallel_run(const std::function<void(int, int)>& fn, int max_threads = 0);

// Splits [0, n) into at most num_threads() contiguous chunks of at least `grain`
// items and runs fn(begin, end) on each.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace mstar
