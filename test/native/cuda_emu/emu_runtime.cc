// The parts of cuda/runtime.cuh the kernel files call, for the host emulation: "device"
// memory is exact-size host memory (so AddressSanitizer sees every overrun), the stream
// is a dummy, launches are checked by the emulator itself.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "../../../cuda/runtime.cuh"

namespace mstar::cuda {

void raise_cuda_error(cudaError_t err, const char* what, const char*, int) {
  fail(ErrorCode::Cuda, std::string("emulated CUDA call failed: ") + what + " (" + std::to_string(err) + ")");
}

void check_launch(const char*) {}
int device_count() noexcept { return 1; }
void ensure_ready() {}
cudaStream_t stream() { return nullptr; }
void synchronize() {}

namespace {
std::mutex g_mutex;
std::unordered_map<void*, size_t> g_live;
}  // namespace

void* device_malloc(size_t bytes) {
  void* ptr = std::malloc(bytes == 0 ? 1 : bytes);
  MSTAR_CHECK(ptr != nullptr, CudaOom, "emulated device out of memory");
  std::lock_guard<std::mutex> lock(g_mutex);
  g_live[ptr] = bytes;
  return ptr;
}

void device_free(void* ptr) noexcept {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_live.erase(ptr) != 0) std::free(ptr);
}

// Copies are plain memcpy: the emulated stream runs every launch to completion.
void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes != 0) std::memcpy(dst, src, bytes);
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes != 0) std::memcpy(dst, src, bytes);
}

// Live emulated allocations, for leak checks in the driver.
size_t emulated_live_allocations() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_live.size();
}

}  // namespace mstar::cuda
