#include "memory.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

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

// ---- large blocks ----
// Blocks of at least kLargeBlockBytes are mapped directly and, once freed, kept in a
// bounded cache and handed out again to requests of nearly the same size, so
// steady-state inference and training fault nothing in (malloc would map and unmap
// them on every call: on virtual machines a 4 KiB fault can cost microseconds, and a
// fresh 60 MB activation cost ~250 ms). Blocks of kHugeBlockBytes and more are 2 MiB
// aligned and marked MADV_HUGEPAGE, so the kernel backs them with transparent huge
// pages: one fault per 2 MiB instead of one per 4 KiB.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kLargeBlockBytes = size_t{256} << 10;
constexpr size_t kHugeBlockBytes = size_t{4} << 20;
constexpr size_t kLargeGranule = size_t{64} << 10;

size_t round_up(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

// The mapped size of a large block holding `bytes`.
size_t mapped_size(size_t bytes) { return round_up(bytes, bytes >= kHugeBlockBytes ? kHugePage : kLargeGranule); }

void* map_large(size_t mapped) {
  if (mapped < kHugeBlockBytes) {
    void* ptr = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return ptr == MAP_FAILED ? nullptr : ptr;
  }
  // Over-map by one huge page, then trim to a 2 MiB-aligned range of `mapped` bytes.
  size_t span = mapped + kHugePage;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  uintptr_t aligned = round_up(start, kHugePage);
  if (aligned > start) munmap(raw, aligned - start);
  size_t tail = start + span - (aligned + mapped);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + mapped), tail);
  void* ptr = reinterpret_cast<void*>(aligned);
#ifdef MADV_HUGEPAGE
  madvise(ptr, mapped, MADV_HUGEPAGE);
#endif
  return ptr;
}

size_t cache_limit_from_env() {
  const char* env = std::getenv("MSTAR_HOST_CACHE_MB");
  if (env == nullptr || *env == '\0') return size_t{1} << 30;  // 1 GiB
  char* end = nullptr;
  unsigned long long mb = std::strtoull(env, &end, 10);
  if (end == env || *end != '\0') return size_t{1} << 30;
  return static_cast<size_t>(mb) << 20;
}

// Large blocks: the mapped size of each live or cached block (a block served from the
// cache may be up to 1/8 larger than asked), and the cache of free ones by size.
std::mutex g_large_mutex;
std::map<void*, size_t> g_large_sizes;
std::multimap<size_t, void*> g_cache;
size_t g_cached_bytes = 0;
size_t g_cache_limit = cache_limit_from_env();

// Unmaps the largest cached blocks until at most `limit` bytes stay cached.
void trim_cache_locked(size_t limit) {
  while (g_cached_bytes > limit) {
    auto largest = std::prev(g_cache.end());
    munmap(largest->second, largest->first);
    g_large_sizes.erase(largest->second);
    g_cached_bytes -= largest->first;
    g_cache.erase(largest);
  }
}

// Sets *fresh when the block is newly mapped (and so already zero).
void* alloc_large(size_t bytes, bool* fresh) {
  size_t mapped = mapped_size(bytes);
  std::unique_lock<std::mutex> lock(g_large_mutex);
  auto hit = g_cache.lower_bound(mapped);
  if (hit != g_cache.end() && hit->first <= mapped + mapped / 8) {
    void* ptr = hit->second;
    g_cached_bytes -= hit->first;
    g_cache.erase(hit);
    *fresh = false;
    return ptr;
  }
  lock.unlock();
  void* ptr = map_large(mapped);
  lock.lock();
  if (ptr == nullptr) {
    // Out of memory or address space: give the cache back and try once more.
    trim_cache_locked(0);
    ptr = map_large(mapped);
    if (ptr == nullptr) return nullptr;
  }
  g_large_sizes[ptr] = mapped;
  *fresh = true;
  return ptr;
}

void free_large(void* ptr) {
  std::lock_guard<std::mutex> lock(g_large_mutex);
  size_t mapped = g_large_sizes.at(ptr);
  if (mapped > g_cache_limit) {
    munmap(ptr, mapped);
    g_large_sizes.erase(ptr);
    return;
  }
  trim_cache_locked(g_cache_limit - mapped);
  g_cache.emplace(mapped, ptr);
  g_cached_bytes += mapped;
}
}  // namespace

void* host_alloc(size_t bytes, bool zero) {
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded < bytes) fail(ErrorCode::OutOfMemory, "allocation size overflows");
  if (rounded == 0) rounded = kAlignment;
  bool fresh = false;
  void* ptr = rounded >= kLargeBlockBytes ? alloc_large(rounded, &fresh) : std::aligned_alloc(kAlignment, rounded);
  MSTAR_CHECK(ptr != nullptr, OutOfMemory, "out of host memory allocating " << bytes << " bytes");
  if (zero && !fresh) std::memset(ptr, 0, rounded);
  raise_peak(g_in_use.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes));
  g_live.fetch_add(1);
  g_total.fetch_add(1);
  return ptr;
}

void host_free(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded >= kLargeBlockBytes) free_large(ptr);
  else std::free(ptr);
  g_in_use.fetch_sub(static_cast<int64_t>(bytes));
  g_live.fetch_sub(1);
}

MemoryStats memory_stats() {
  int64_t cached;
  {
    std::lock_guard<std::mutex> lock(g_large_mutex);
    cached = static_cast<int64_t>(g_cached_bytes);
  }
  return {g_in_use.load(), g_peak.load(), g_live.load(), g_total.load(), cached};
}

void reset_peak_bytes() { g_peak.store(g_in_use.load()); }

size_t set_host_cache_limit(size_t bytes) {
  std::lock_guard<std::mutex> lock(g_large_mutex);
  size_t previous = g_cache_limit;
  g_cache_limit = bytes;
  trim_cache_locked(bytes);
  return previous;
}

}  // namespace mstar
