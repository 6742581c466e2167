// The CUDA device runtime (see runtime.cuh for the contract): error translation and
// the sticky "device lost" state, device discovery, the engine stream, the caching
// allocator and the staged host<->device copies.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "runtime.cuh"

namespace mstar::cuda {
namespace {

// Errors after which the CUDA context is unusable for the rest of the process.
bool is_sticky(cudaError_t err) {
  switch (err) {
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case cudaErrorContained:
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorContextIsDestroyed:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorTensorMemoryLeak:
    case cudaErrorUnknown:
      return true;
    default:
      return false;
  }
}

std::string format_bytes(size_t bytes) {
  std::ostringstream os;
  if (bytes >= (size_t{1} << 30)) os << static_cast<double>(bytes) / (1 << 30) << " GiB";
  else if (bytes >= (size_t{1} << 20)) os << static_cast<double>(bytes) / (1 << 20) << " MiB";
  else os << bytes << " bytes";
  return os.str();
}

// Process-wide device state. Deliberately leaked: the CUDA runtime tears itself down
// at exit, and destructors that free device memory after that would fail.
struct DeviceState {
  std::mutex init_mutex;  // guards ready/device/stream
  bool ready = false;
  int device = 0;
  cudaStream_t stream = nullptr;
  // A separate mutex: a CUDA call that fails during initialization marks the device
  // lost while init_mutex is held.
  std::mutex lost_mutex;
  std::atomic<bool> lost{false};
  std::string lost_reason;  // guarded by lost_mutex; written once, before `lost` is set
};

DeviceState& device_state() {
  static DeviceState* state = new DeviceState;
  return *state;
}

[[noreturn]] void throw_lost() {
  DeviceState& s = device_state();
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(s.lost_mutex);
    reason = s.lost_reason;
  }
  fail(ErrorCode::Cuda, "CUDA device lost: " + reason +
                            ". The CUDA context cannot recover; restart the process "
                            "(MSTAR_DEVICE=cpu runs on the CPU).");
}

void mark_lost(const std::string& reason) {
  DeviceState& s = device_state();
  std::lock_guard<std::mutex> lock(s.lost_mutex);
  if (!s.lost.load()) {
    s.lost_reason = reason;
    s.lost.store(true);
  }
}

struct Probe {
  int count = 0;
  std::string why_none;  // set when count == 0
};

// Counts devices of compute capability 8.0+ (what this build has code for: sm_80,
// sm_90 and PTX for newer); anything else would load and then fail on every kernel.
Probe probe_devices() {
  Probe probe;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // not sticky; leave no trace for later checks
    probe.why_none = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    return probe;
  }
  std::string skipped;
  for (int i = 0; i < count; ++i) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    if (major >= 8) {
      ++probe.count;
    } else {
      skipped += " device " + std::to_string(i) + " has compute capability " + std::to_string(major) + ".x;";
    }
  }
  if (probe.count == 0) {
    probe.why_none = count == 0 ? "no CUDA device found"
                                : "no device of compute capability 8.0 or newer:" + skipped;
  }
  return probe;
}

// Devices are numbered among the usable ones, which is also what CUDA does unless
// an older GPU sits in front; MSTAR_CUDA_DEVICE picks one.
int requested_device() {
  const char* env = std::getenv("MSTAR_CUDA_DEVICE");
  if (env == nullptr || *env == '\0') return 0;
  char* end = nullptr;
  long value = std::strtol(env, &end, 10);
  MSTAR_CHECK(*end == '\0' && value >= 0 && value < 1024, Argument,
              "MSTAR_CUDA_DEVICE must be a device index, got '" << env << "'");
  return static_cast<int>(value);
}

}  // namespace

// ---- checks ---------------------------------------------------------------------

void raise_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  std::ostringstream where;
  where << cudaGetErrorName(err) << ": " << cudaGetErrorString(err) << " (in " << what << " at " << file << ":"
        << line << ")";
  if (is_sticky(err)) {
    mark_lost(where.str());
    throw_lost();
  }
  // Non-sticky errors are also recorded as the thread's "last error"; clear it so
  // the next check_launch() does not report this failure a second time.
  cudaGetLastError();
  if (err == cudaErrorMemoryAllocation) fail(ErrorCode::CudaOom, "CUDA out of memory: " + where.str());
  fail(ErrorCode::Cuda, "CUDA error " + where.str());
}

void check_launch(const char* kernel_name) {
  static const bool sync_each = [] {
    const char* env = std::getenv("MSTAR_CUDA_SYNC");
    return env != nullptr && std::strcmp(env, "1") == 0;
  }();
  check(cudaGetLastError(), kernel_name, __FILE__, __LINE__);
  if (sync_each) check(cudaStreamSynchronize(stream()), kernel_name, __FILE__, __LINE__);
}

// ---- device ---------------------------------------------------------------------

int device_count() noexcept {
  try {
    return probe_devices().count;
  } catch (...) {
    return 0;
  }
}

DeviceInfo device_info(int index) {
  cudaDeviceProp prop;
  MSTAR_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  DeviceInfo info;
  info.index = index;
  info.name = prop.name;
  info.major = prop.major;
  info.minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.total_memory = prop.totalGlobalMem;
  info.shared_memory_per_block_optin = prop.sharedMemPerBlockOptin;
  return info;
}

namespace {
// A version number from `query`, or 0 (with the error cleared) when it fails.
int version_or_zero(cudaError_t (*query)(int*)) noexcept {
  int v = 0;
  if (query(&v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return v;
}
}  // namespace

int runtime_version() noexcept { return version_or_zero(cudaRuntimeGetVersion); }

int driver_version() noexcept { return version_or_zero(cudaDriverGetVersion); }

bool device_lost() { return device_state().lost.load(); }

std::string device_lost_reason() {
  DeviceState& s = device_state();
  std::lock_guard<std::mutex> lock(s.lost_mutex);
  return s.lost_reason;
}

void ensure_ready() {
  DeviceState& s = device_state();
  if (s.lost.load()) throw_lost();
  int device;
  {
    std::lock_guard<std::mutex> lock(s.init_mutex);
    if (!s.ready) {
      Probe probe = probe_devices();
      if (probe.count == 0) {
        fail(ErrorCode::Unsupported, "CUDA is not available: " + probe.why_none +
                                         ". Use the CPU backend (MSTAR_DEVICE=cpu) or run on a machine with an "
                                         "NVIDIA GPU and driver.");
      }
      int wanted = requested_device();
      MSTAR_CHECK(wanted < probe.count, Argument,
                  "MSTAR_CUDA_DEVICE=" << wanted << " but only " << probe.count << " usable device(s)");
      MSTAR_CUDA_CHECK(cudaSetDevice(wanted));
      MSTAR_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
      s.device = wanted;
      s.ready = true;
    }
    device = s.device;
  }
  // The current device is per host thread: bind every thread that calls in.
  thread_local int bound_device = -1;
  if (bound_device != device) {
    MSTAR_CUDA_CHECK(cudaSetDevice(device));
    bound_device = device;
  }
}

int current_device() {
  ensure_ready();
  return device_state().device;
}

cudaStream_t stream() {
  ensure_ready();
  return device_state().stream;
}

void synchronize() { MSTAR_CUDA_CHECK(cudaStreamSynchronize(stream())); }

namespace {
__global__ void write_through_null_kernel(int* never_valid) { *never_valid = 1; }
}  // namespace

void trigger_device_fault_for_test() {
  write_through_null_kernel<<<1, 1, 0, stream()>>>(nullptr);
  check_launch("write_through_null_kernel");
}

// ---- allocator ------------------------------------------------------------------

size_t bucket_size(size_t bytes) {
  constexpr size_t kMin = 512;
  if (bytes <= kMin) return kMin;
  // Largest power of two <= bytes; steps of 1/8 of it keep waste under 12.5% while
  // the number of distinct sizes (and so of free lists) stays small.
  size_t power = size_t{1} << (63 - __builtin_clzll(static_cast<unsigned long long>(bytes)));
  size_t step = std::max(kMin, power / 8);
  return (bytes + step - 1) / step * step;
}

namespace {

// MSTAR_CUDA_CACHING=0: every buffer is its own exact-size cudaMalloc, freed at once, so
// compute-sanitizer sees overruns that a rounded-up cached block would hide.
bool caching_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("MSTAR_CUDA_CACHING");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return enabled;
}

struct AllocatorState {
  std::mutex mutex;
  std::unordered_map<void*, size_t> live;                  // pointer -> bucket bytes
  std::unordered_map<size_t, std::vector<void*>> cached;  // bucket bytes -> free blocks
  AllocatorStats stats;
};

AllocatorState& allocator() {
  static AllocatorState* state = new AllocatorState;  // leaked, like DeviceState
  return *state;
}

void release_cache_locked(AllocatorState& a) {
  for (auto& [size, blocks] : a.cached) {
    for (void* ptr : blocks) {
      MSTAR_CUDA_CHECK(cudaFree(ptr));
      a.stats.bytes_cached -= static_cast<int64_t>(size);
      a.stats.bytes_reserved -= static_cast<int64_t>(size);
    }
  }
  a.cached.clear();
}

std::string usage_locked(const AllocatorState& a) {
  std::ostringstream os;
  os << "in use " << format_bytes(a.stats.bytes_in_use) << ", cached " << format_bytes(a.stats.bytes_cached);
  if (a.stats.budget > 0) os << ", budget " << format_bytes(a.stats.budget);
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
    os << ", device free " << format_bytes(free_bytes) << " of " << format_bytes(total_bytes);
  } else {
    cudaGetLastError();
  }
  return os.str();
}

bool within_budget_locked(const AllocatorState& a, size_t bucket) {
  return a.stats.budget == 0 || a.stats.bytes_reserved + static_cast<int64_t>(bucket) <= a.stats.budget;
}

// cudaMalloc that reports out-of-memory as nullptr and everything else as an exception.
void* try_cuda_malloc(size_t bytes) {
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return nullptr;
  }
  MSTAR_CUDA_CHECK(err);
  return ptr;
}

}  // namespace

void* device_malloc(size_t bytes) {
  // Also keeps the bucket arithmetic far from overflow.
  MSTAR_CHECK(bytes <= (size_t{1} << 48), CudaOom, "CUDA allocation of " << bytes << " bytes is too large");
  ensure_ready();
  const size_t bucket = caching_enabled() ? bucket_size(bytes) : std::max<size_t>(bytes, 1);
  AllocatorState& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  void* ptr = nullptr;
  auto it = a.cached.find(bucket);
  if (it != a.cached.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    a.stats.bytes_cached -= static_cast<int64_t>(bucket);
    ++a.stats.cache_hits;
  } else {
    bool retried = false;
    if (!within_budget_locked(a, bucket)) {
      release_cache_locked(a);
      ++a.stats.oom_retries;
      retried = true;
      MSTAR_CHECK(within_budget_locked(a, bucket), CudaOom,
                  "CUDA memory budget exceeded allocating " << format_bytes(bytes) << " (" << usage_locked(a)
                                                            << "); free device buffers or raise the budget "
                                                               "(setCudaMemoryBudget)");
    }
    ptr = try_cuda_malloc(bucket);
    if (ptr == nullptr && !retried) {
      // Cached blocks of other sizes may be what stands in the way.
      release_cache_locked(a);
      ++a.stats.oom_retries;
      ptr = try_cuda_malloc(bucket);
    }
    MSTAR_CHECK(ptr != nullptr, CudaOom,
                "CUDA out of memory allocating " << format_bytes(bytes) << " (" << usage_locked(a)
                                                 << "); free device buffers or use smaller batches");
    ++a.stats.device_mallocs;
    a.stats.bytes_reserved += static_cast<int64_t>(bucket);
  }
  a.live[ptr] = bucket;
  a.stats.bytes_in_use += static_cast<int64_t>(bucket);
  a.stats.peak_bytes_in_use = std::max(a.stats.peak_bytes_in_use, a.stats.bytes_in_use);
  ++a.stats.live_allocations;
  ++a.stats.allocations;
  return ptr;
}

void device_free(void* ptr) noexcept {
  if (ptr == nullptr) return;
  AllocatorState& a = allocator();
  try {
    std::lock_guard<std::mutex> lock(a.mutex);
    auto it = a.live.find(ptr);
    if (it == a.live.end()) return;
    const size_t bucket = it->second;
    a.live.erase(it);
    a.stats.bytes_in_use -= static_cast<int64_t>(bucket);
    --a.stats.live_allocations;
    if (caching_enabled()) {
      a.cached[bucket].push_back(ptr);
      a.stats.bytes_cached += static_cast<int64_t>(bucket);
    } else {
      if (cudaFree(ptr) != cudaSuccess) cudaGetLastError();  // a lost device surfaces at the next checked call
      a.stats.bytes_reserved -= static_cast<int64_t>(bucket);
    }
  } catch (...) {
    // Only std::bad_alloc from the free list can get here; the block is then
    // simply not reused, which is a leak but never a crash in a finalizer.
  }
}

AllocatorStats allocator_stats() {
  AllocatorState& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  return a.stats;
}

void reset_peak_bytes_in_use() {
  AllocatorState& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  a.stats.peak_bytes_in_use = a.stats.bytes_in_use;
}

void set_memory_budget(size_t bytes) {
  AllocatorState& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  a.stats.budget = static_cast<int64_t>(bytes);
  // Cached blocks over the new budget are released now rather than at the next miss.
  if (a.stats.budget > 0 && a.stats.bytes_reserved > a.stats.budget && !a.cached.empty()) {
    ensure_ready();
    release_cache_locked(a);
  }
}

void empty_cache() {
  AllocatorState& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  if (a.cached.empty()) return;
  ensure_ready();
  release_cache_locked(a);
}

// ---- buffers --------------------------------------------------------------------

struct DeviceBuffer::Allocation {
  void* ptr = nullptr;
  size_t bytes = 0;
  std::atomic<bool> released{false};
  ~Allocation() {
    if (!released.exchange(true)) device_free(ptr);
  }
};

DeviceBuffer DeviceBuffer::allocate(size_t bytes) {
  auto allocation = std::make_shared<Allocation>();
  allocation->ptr = device_malloc(bytes);
  allocation->bytes = bytes;
  DeviceBuffer buffer;
  buffer.allocation_ = std::move(allocation);
  buffer.bytes_ = bytes;
  return buffer;
}

DeviceBuffer DeviceBuffer::view(size_t offset, size_t bytes) const {
  MSTAR_CHECK(offset <= bytes_ && bytes <= bytes_ - offset, Range,
              "device view [" << offset << ", " << offset << " + " << bytes << ") is outside the buffer of "
                              << bytes_ << " bytes");
  DeviceBuffer out = *this;
  out.offset_ = offset_ + offset;
  out.bytes_ = bytes;
  return out;
}

bool DeviceBuffer::released() const { return !allocation_ || allocation_->released.load(); }

void* DeviceBuffer::data() const {
  MSTAR_CHECK(allocation_, Detached, "device buffer is empty");
  MSTAR_CHECK(!allocation_->released.load(), Detached, "device buffer was freed");
  return static_cast<char*>(allocation_->ptr) + offset_;
}

void DeviceBuffer::release() {
  if (allocation_ && !allocation_->released.exchange(true)) device_free(allocation_->ptr);
}

DeviceSpan DeviceBuffer::span(Dtype dtype) const {
  return DeviceSpan{data(), static_cast<int64_t>(bytes_ / dtype_size(dtype))};
}

// ---- copies ---------------------------------------------------------------------

namespace {

// Two pinned chunks: while the DMA engine copies one, the CPU fills or drains the other.
constexpr size_t kStagingChunk = size_t{4} << 20;

struct Staging {
  std::mutex mutex;
  bool initialized = false;
  bool pinned = false;  // false when pinned memory could not be had: plain cudaMemcpy
  void* chunk[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
};

Staging& staging() {
  static Staging* s = new Staging;  // leaked, like DeviceState
  return *s;
}

void init_staging_locked(Staging& s) {
  if (s.initialized) return;
  s.initialized = true;
  for (int i = 0; i < 2; ++i) {
    if (cudaHostAlloc(&s.chunk[i], kStagingChunk, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();  // pinned memory is a limited resource; fall back, do not fail
      return;
    }
    MSTAR_CUDA_CHECK(cudaEventCreateWithFlags(&s.done[i], cudaEventDisableTiming));
  }
  s.pinned = true;
}

}  // namespace

void copy_to_device(void* dst, const void* src, size_t bytes) {
  cudaStream_t st = stream();
  if (bytes == 0) return;
  Staging& s = staging();
  std::lock_guard<std::mutex> lock(s.mutex);
  init_staging_locked(s);
  if (!s.pinned) {
    MSTAR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st));
    MSTAR_CUDA_CHECK(cudaStreamSynchronize(st));
    return;
  }
  size_t index = 0;
  for (size_t offset = 0; offset < bytes; offset += kStagingChunk, ++index) {
    const int slot = static_cast<int>(index & 1);
    const size_t n = std::min(kStagingChunk, bytes - offset);
    // The copy that last used this chunk (in this call or an earlier one) must be done.
    MSTAR_CUDA_CHECK(cudaEventSynchronize(s.done[slot]));
    std::memcpy(s.chunk[slot], static_cast<const char*>(src) + offset, n);
    MSTAR_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + offset, s.chunk[slot], n, cudaMemcpyHostToDevice, st));
    MSTAR_CUDA_CHECK(cudaEventRecord(s.done[slot], st));
  }
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  cudaStream_t st = stream();
  if (bytes == 0) return;
  Staging& s = staging();
  std::lock_guard<std::mutex> lock(s.mutex);
  init_staging_locked(s);
  if (!s.pinned) {
    MSTAR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st));
    MSTAR_CUDA_CHECK(cudaStreamSynchronize(st));
    return;
  }
  // Chunk i is queued before chunk i-1 is drained, so the transfer of one overlaps
  // the host memcpy of the other. A chunk is reused two iterations later, after it
  // was drained.
  auto drain = [&](size_t chunk_index) {
    const int slot = static_cast<int>(chunk_index & 1);
    const size_t offset = chunk_index * kStagingChunk;
    const size_t n = std::min(kStagingChunk, bytes - offset);
    MSTAR_CUDA_CHECK(cudaEventSynchronize(s.done[slot]));
    std::memcpy(static_cast<char*>(dst) + offset, s.chunk[slot], n);
  };
  const size_t chunks = (bytes + kStagingChunk - 1) / kStagingChunk;
  for (size_t index = 0; index < chunks; ++index) {
    const int slot = static_cast<int>(index & 1);
    const size_t offset = index * kStagingChunk;
    const size_t n = std::min(kStagingChunk, bytes - offset);
    const char* from = static_cast<const char*>(src) + offset;
    MSTAR_CUDA_CHECK(cudaMemcpyAsync(s.chunk[slot], from, n, cudaMemcpyDeviceToHost, st));
    MSTAR_CUDA_CHECK(cudaEventRecord(s.done[slot], st));
    if (index > 0) drain(index - 1);
  }
  drain(chunks - 1);
}

void copy_device(void* dst, const void* src, size_t bytes) {
  cudaStream_t st = stream();
  if (bytes == 0) return;
  MSTAR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st));
}

void fill_zero(void* dst, size_t bytes) {
  cudaStream_t st = stream();
  if (bytes == 0) return;
  MSTAR_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, st));
}

}  // namespace mstar::cuda
