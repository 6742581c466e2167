#include "memory.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "error.h"

namespace mstar {
namespace {
std::atomic<int64_t> g_in_use{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_total{0};

void raise_peak(int64_t now) {
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}
}  // namespace

void* host_alloc(size_t bytes, bool zero) {
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded < bytes) fail(ErrorCode::OutOfMemory, "allocation size overflows");
  if (rounded == 0) rounded = kAlignment;
  void* ptr = std::aligned_alloc(kAlignment, rounded);
  MSTAR_CHECK(ptr != nullptr, OutOfMemory, "out of host memory allocating " << bytes << " bytes");
  if (zero) std::memset(ptr, 0, rounded);
  raise_peak(g_in_use.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes));
  g_live.fetch_add(1);
  g_total.fetch_add(1);
  return ptr;
}

void host_free(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  std::free(ptr);
  g_in_use.fetch_sub(static_cast<int64_t>(bytes));
  g_live.fetch_sub(1);
}

MemoryStats memory_stats() {
  return {g_in_use.load(), g_peak.load(), g_live.load(), g_total.load()};
}

void reset_peak_bytes() { g_peak.store(g_in_use.load()); }

}  // namespace mstar
