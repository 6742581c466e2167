#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace mstar {
namespace {

thread_local bool t_inside_task = false;

class ThreadPool {
 public:
  ThreadPool() { resize(default_threads()); }
  ~ThreadPool() { stop_workers(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    n = std::max(1, std::min(n, 1024));
    if (n == size()) return;
    stop_workers();
    stopping_ = false;
    uint64_t current;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      current = generation_;
    }
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i, current] { worker_loop(i, current); });
  }

  void run(const std::function<void(int, int)>& fn, int threads) {
    std::lock_guard<std::mutex> serialize(run_mutex_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &fn;
      task_threads_ = threads;
      pending_ = threads - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    execute(fn, 0, threads);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static int default_threads() {
    if (const char* env = std::getenv("MSTAR_NUM_THREADS")) {
      int n = std::atoi(env);
      if (n > 0) return n;
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }

  void execute(const std::function<void(int, int)>& fn, int index, int threads) {
    t_inside_task = true;
    try {
      fn(index, threads);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    t_inside_task = false;
  }

  // `seen` is the generation current when resize() created the worker: it must
  // neither replay the last finished task nor miss one started before it runs.
  void worker_loop(int index, uint64_t seen) {
    for (;;) {
      const std::function<void(int, int)>* task;
      int threads;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        task = task_;
        threads = task_threads_;
      }
      if (index >= threads) continue;
      execute(*task, index, threads);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int, int)>* task_ = nullptr;
  int task_threads_ = 1;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

ThreadPool& pool() {
  static ThreadPool instance;
  return instance;
}

}  // namespace

int num_threads() { return pool().size(); }

void set_num_threads(int n) { pool().resize(n); }

void parallel_run(const std::function<void(int, int)>& fn, int max_threads) {
  int threads = num_threads();
  if (max_threads > 0) threads = std::min(threads, max_threads);
  if (threads <= 1 || t_inside_task) {
    bool was_inside = t_inside_task;
    t_inside_task = true;
    try {
      fn(0, 1);
    } catch (...) {
      t_inside_task = was_inside;
      throw;
    }
    t_inside_task = was_inside;
    return;
  }
  pool().run(fn, threads);
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (chunks <= 1 || t_inside_task) {
    fn(0, n);
    return;
  }
  parallel_run(
      [&](int t, int nt) {
        int64_t begin = n * t / nt, end = n * (t + 1) / nt;
        if (begin < end) fn(begin, end);
      },
      static_cast<int>(chunks));
}

}  // namespace mstar
