// Host memory for tensors and kernel workspaces: 64-byte aligned, counted, so
// `memoryStats()` can prove that a training step returns to its baseline.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace mstar {

struct MemoryStats {
  int64_t bytes_in_use;      // tensor storages + live workspaces
  int64_t peak_bytes;        // high-water mark since start or last reset
  int64_t live_allocations;  // number of live blocks
  int64_t total_allocations; // blocks ever allocated
  int64_t cached_bytes;      // freed large blocks kept for reuse (not in bytes_in_use)
};

constexpr size_t kAlignment = 64;

// Throws Error(OutOfMemory) on failure; never returns nullptr (size 0 gives a valid block).
void* host_alloc(size_t bytes, bool zero);
void host_free(void* ptr, size_t bytes);
MemoryStats memory_stats();
void reset_peak_bytes();
// Large blocks (>= 256 KiB) are mapped directly (>= 4 MiB: with transparent huge pages),
// and up to a limit of freed ones are cached for reuse (default 1 GiB, or MSTAR_HOST_CACHE_MB). Sets the
// limit, unmapping cached blocks beyond it (0 empties the cache); returns the old one.
size_t set_host_cache_limit(size_t bytes);

// RAII workspace for kernels (scratch panels, per-thread buffers).
template <typename T>
class Workspace {
 public:
  explicit Workspace(size_t count, bool zero = false)
      : count_(count), data_(static_cast<T*>(host_alloc(count * sizeof(T), zero))) {}
  ~Workspace() { host_free(data_, count_ * sizeof(T)); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  T* data() { return data_; }
  size_t size() const { return count_; }
  T& operator[](size_t i) { return data_[i]; }

 private:
  size_t count_;
  T* data_;
};

}  // namespace mstar
