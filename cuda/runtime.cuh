// The CUDA device runtime: checked calls, device discovery, one stream, a caching
// allocator with a memory budget, device buffers with explicit host<->device copies
// through pinned staging, and sticky-error ("device lost") detection.
//
// Error policy. Every CUDA call goes through MSTAR_CUDA_CHECK and every launch
// through check_launch(). Recoverable failures (out of memory, bad launch
// configuration) throw mstar::Error (CudaOom / Cuda) and leave the process usable.
// Sticky failures (illegal address, launch failure, ...) corrupt the CUDA context
// for the rest of the process: the device is marked lost, and every later call
// throws ERR_CUDA "device lost" instead of returning garbage.
//
// Threading. The engine uses one device (MSTAR_CUDA_DEVICE, default 0) and one
// non-blocking stream; all kernels and copies are ordered on it. That ordering is
// what lets the allocator hand a freed block out again at once: any kernel still
// reading it was queued before the new owner's work. State is mutex-protected, so
// calls from worker threads are safe.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "../cpp/core/error.h"
#include "types.cuh"

namespace mstar::cuda {

// ---- checks ---------------------------------------------------------------------

// Turns a failed CUDA call into mstar::Error; marks the device lost on sticky errors.
[[noreturn]] void raise_cuda_error(cudaError_t err, const char* what, const char* file, int line);

inline void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) raise_cuda_error(err, what, file, line);
}

#define MSTAR_CUDA_CHECK(call) ::mstar::cuda::check((call), #call, __FILE__, __LINE__)

// After every launch: reports configuration errors at once. With MSTAR_CUDA_SYNC=1
// it also waits for the kernel, so an asynchronous fault names the kernel that made
// it (slow; for debugging and compute-sanitizer runs).
void check_launch(const char* kernel_name);

// ---- device ---------------------------------------------------------------------

// Number of usable devices; 0 (never an exception) without a driver or a GPU, so
// the loader can probe a CUDA build on any machine.
int device_count() noexcept;

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0;
  int minor = 0;
  int multiprocessors = 0;
  size_t total_memory = 0;
  size_t shared_memory_per_block_optin = 0;
};

DeviceInfo device_info(int index);
int runtime_version() noexcept;  // e.g. 13000; 0 if unknown
int driver_version() noexcept;   // 0 without a driver

// The device the engine uses (MSTAR_CUDA_DEVICE, default 0).
int current_device();

// Initializes the device and stream on first use. Throws ERR_UNSUPPORTED when there
// is no device, ERR_CUDA when the device was lost earlier.
void ensure_ready();
cudaStream_t stream();

bool device_lost();
std::string device_lost_reason();

// Waits for all queued work; surfaces asynchronous errors.
void synchronize();

// Test hook: queues a kernel that writes through a null pointer, so tests can check
// the device-lost path (run it in a child process: the GPU is unusable afterwards).
void trigger_device_fault_for_test();

// ---- allocator ------------------------------------------------------------------

struct AllocatorStats {
  int64_t bytes_in_use = 0;       // handed out (rounded to buckets)
  int64_t bytes_cached = 0;       // freed, kept for reuse
  int64_t bytes_reserved = 0;     // in use + cached = what cudaMalloc holds
  int64_t peak_bytes_in_use = 0;
  int64_t budget = 0;             // 0 = no budget
  int64_t live_allocations = 0;
  int64_t allocations = 0;        // requests served
  int64_t cache_hits = 0;         // requests served from the cache
  int64_t device_mallocs = 0;     // cudaMalloc calls
  int64_t oom_retries = 0;        // times the cache was emptied to satisfy a request
};

// Caching allocation: sizes are rounded up to buckets (at most 1/8 waste), freed
// blocks go to a per-bucket free list. On cudaErrorMemoryAllocation, or when the
// budget would be exceeded, the cache is released and the request retried once;
// then ERR_CUDA_OOM. Returns a 256-byte aligned pointer; bytes == 0 gives a valid block.
// MSTAR_CUDA_CACHING=0 turns caching off (exact sizes, for compute-sanitizer).
void* device_malloc(size_t bytes);
// Returns a block to the cache. Never throws (called from GC finalizers); a pointer
// the allocator does not know is ignored.
void device_free(void* ptr) noexcept;
AllocatorStats allocator_stats();
void reset_peak_bytes_in_use();
// Caps what the allocator may hold from the device (in use + cached); 0 removes the cap.
void set_memory_budget(size_t bytes);
// Gives every cached block back to the driver.
void empty_cache();

// Rounding rule, exposed for tests: 512-byte minimum, then 8 sizes per power of two.
size_t bucket_size(size_t bytes);

// ---- buffers --------------------------------------------------------------------

// An owned device allocation. Copies of a DeviceBuffer are views: they share the
// allocation (kept alive by whichever view lives longest) and cover [offset, offset +
// bytes) of it. release() returns the memory at once; every view of a released
// allocation then throws ERR_DETACHED instead of touching freed memory.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static DeviceBuffer allocate(size_t bytes);

  // A sub-range of this buffer (offset and bytes relative to it), sharing the allocation.
  DeviceBuffer view(size_t offset, size_t bytes) const;

  void* data() const;  // throws ERR_DETACHED once released
  size_t bytes() const { return bytes_; }
  bool released() const;
  void release();      // idempotent; releases the whole allocation

  // Typed span over the whole view (elems = bytes / dtype_size).
  DeviceSpan span(Dtype dtype) const;

 private:
  struct Allocation;
  std::shared_ptr<Allocation> allocation_;
  size_t offset_ = 0;
  size_t bytes_ = 0;
};

// ---- copies ---------------------------------------------------------------------

// Host -> device through pinned staging buffers (double-buffered, so the host-side
// memcpy of one chunk overlaps the transfer of the previous one). Returns when `src`
// may be reused.
void copy_to_device(void* dst, const void* src, size_t bytes);
// Device -> host; waits for all earlier work on the stream, then fills `dst`.
void copy_to_host(void* dst, const void* src, size_t bytes);
// Device -> device, queued on the stream.
void copy_device(void* dst, const void* src, size_t bytes);
// Zero-fills, queued on the stream.
void fill_zero(void* dst, size_t bytes);

}  // namespace mstar::cuda
