// Storage and runtime: native buffers handed to JS as external ArrayBuffers,
// released deterministically by `free` (detach + free) or, as a safety net, by
// the GC finalizer; counters; threads; SIMD level; build facts.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "../core/cpu_features.h"
#include "../core/memory.h"
#include "../core/thread_pool.h"
#include "args.h"
#include "registry.h"

namespace {

// Live blocks by data pointer, so `free` can release memory at once and the GC
// finalizer (which always runs eventually) knows not to release it again.
struct Block {
  void* data;
  size_t bytes;
  bool released;
  bool file_mapping;  // from mapFile: munmap, not host_free
};

std::mutex g_blocks_mutex;
std::unordered_map<void*, Block*> g_blocks;

void release(Block* block) {
  if (block->released) return;
  block->released = true;
  if (block->file_mapping) munmap(block->data, block->bytes);
  else mstar::host_free(block->data, block->bytes);
}

void finalize_block(Napi::Env, void*, Block* block) {
  std::lock_guard<std::mutex> lock(g_blocks_mutex);
  release(block);
  // free() may have released this block already and a later alloc() may have
  // reused its address: only drop the entry if it is still ours.
  auto it = g_blocks.find(block->data);
  if (it != g_blocks.end() && it->second == block) g_blocks.erase(it);
  delete block;
}

// Hands `data` to JS as an external ArrayBuffer, tracked so free() can release it.
Napi::ArrayBuffer track_block(Napi::Env env, void* data, size_t bytes, bool file_mapping) {
  Block* block = new Block{data, bytes, false, file_mapping};
  {
    std::lock_guard<std::mutex> lock(g_blocks_mutex);
    g_blocks[data] = block;
  }
  return Napi::ArrayBuffer::New(env, data, bytes, finalize_block, block);
}

}  // namespace

using namespace mstar::binding;

// alloc(bytes: number, zero: boolean) -> ArrayBuffer backed by native memory
MSTAR_BINDING(alloc) {
  Napi::Env env = info.Env();
  int64_t bytes = arg_size(info, 0, "bytes");
  bool zero = arg_bool(info, 1, "zero");
  if (bytes > (int64_t{1} << 46)) throw_js(env, "ERR_OOM", "bytes: " + std::to_string(bytes) + " is too large", true);
  if (bytes == 0) return Napi::ArrayBuffer::New(env, 0);
  void* data = mstar::host_alloc(static_cast<size_t>(bytes), zero);
  return track_block(env, data, static_cast<size_t>(bytes), false);
}

// mapFile(path: string) -> ArrayBuffer over a private (copy-on-write) mapping of the
// whole file, populated up front: the file's pages come straight from the page cache,
// with no fresh memory to fault in and no copy. Released by free() or the GC.
// The file must not shrink while mapped (reading past its new end raises SIGBUS).
MSTAR_BINDING(mapFile) {
  Napi::Env env = info.Env();
  std::string path = arg_string(info, 0, "path");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int error = errno;
    throw_js(env, error == ENOENT ? "ERR_NOT_FOUND" : "ERR_IO", path + ": " + std::strerror(error));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    int error = errno;
    close(fd);
    throw_js(env, "ERR_IO", path + ": " + (S_ISREG(st.st_mode) ? (st.st_size <= 0 ? "empty file" : std::strerror(error)) : "not a regular file"));
  }
  size_t bytes = static_cast<size_t>(st.st_size);
  // Populated read-only (a writable private mapping would be populated by write faults,
  // copying every page), then made writable: a write copies just the page it touches.
  void* data = mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  int error = errno;
  close(fd);
  if (data == MAP_FAILED) throw_js(env, "ERR_IO", path + ": mmap failed: " + std::strerror(error));
  if (mprotect(data, bytes, PROT_READ | PROT_WRITE) != 0) {
    error = errno;
    munmap(data, bytes);
    throw_js(env, "ERR_IO", path + ": mprotect failed: " + std::strerror(error));
  }
  return track_block(env, data, bytes, true);
}

// free(buffer: ArrayBuffer) -> returns the memory now and detaches the buffer, so
// every JS view of it becomes empty and nothing can touch freed memory. Freeing a
// detached buffer is a no-op: double release is harmless.
MSTAR_BINDING(free) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) throw_js(env, "ERR_ARGUMENT", "buffer must be an ArrayBuffer");
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  bool detached = false;
  napi_is_detached_arraybuffer(env, buffer, &detached);
  if (detached) return env.Undefined();
  void* data = buffer.ByteLength() == 0 ? nullptr : buffer.Data();
  {
    std::lock_guard<std::mutex> lock(g_blocks_mutex);
    auto it = data == nullptr ? g_blocks.end() : g_blocks.find(data);
    if (data != nullptr && it == g_blocks.end()) {
      throw_js(env, "ERR_ARGUMENT", "buffer was not allocated by mstar (alloc)");
    }
    if (it != g_blocks.end()) {
      release(it->second);
      g_blocks.erase(it);  // the Block itself is deleted by the finalizer
    }
  }
  if (napi_detach_arraybuffer(env, buffer) != napi_ok) {
    throw_js(env, "ERR_INTERNAL", "buffer could not be detached");
  }
  return env.Undefined();
}

// releasePages(buffer, byteOffset, byteLength): for a buffer from mapFile, drops the
// whole pages inside the range from this process (madvise MADV_DONTNEED). The bytes stay
// readable: touching them again reads them back from the file. Other buffers: no-op.
MSTAR_BINDING(releasePages) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) throw_js(env, "ERR_ARGUMENT", "buffer must be an ArrayBuffer");
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  const int64_t offset = arg_size(info, 1, "byteOffset");
  const int64_t length = arg_size(info, 2, "byteLength");
  bool detached = false;
  napi_is_detached_arraybuffer(env, buffer, &detached);
  if (detached || buffer.ByteLength() == 0) return env.Undefined();
  if (offset + length > static_cast<int64_t>(buffer.ByteLength())) {
    throw_js(env, "ERR_RANGE", "releasePages: range [" + std::to_string(offset) + ", " + std::to_string(offset + length) +
                                   ") is outside the buffer of " + std::to_string(buffer.ByteLength()) + " bytes", true);
  }
  std::lock_guard<std::mutex> lock(g_blocks_mutex);
  auto it = g_blocks.find(buffer.Data());
  if (it == g_blocks.end() || !it->second->file_mapping || it->second->released) return env.Undefined();
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t start = reinterpret_cast<uintptr_t>(buffer.Data()) + static_cast<uintptr_t>(offset);
  const uintptr_t first = (start + page - 1) / page * page;
  const uintptr_t last = (start + static_cast<uintptr_t>(length)) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return env.Undefined();
}

MSTAR_BINDING(memoryStats) {
  Napi::Env env = info.Env();
  mstar::MemoryStats s = mstar::memory_stats();
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytesInUse", Napi::Number::New(env, static_cast<double>(s.bytes_in_use)));
  out.Set("peakBytes", Napi::Number::New(env, static_cast<double>(s.peak_bytes)));
  out.Set("liveAllocations", Napi::Number::New(env, static_cast<double>(s.live_allocations)));
  out.Set("totalAllocations", Napi::Number::New(env, static_cast<double>(s.total_allocations)));
  out.Set("cachedBytes", Napi::Number::New(env, static_cast<double>(s.cached_bytes)));
  return out;
}

// setHostCacheLimit(bytes) -> the previous limit; 0 empties the large-block cache.
MSTAR_BINDING(setHostCacheLimit) {
  int64_t bytes = arg_size(info, 0, "bytes");
  return Napi::Number::New(info.Env(), static_cast<double>(mstar::set_host_cache_limit(static_cast<size_t>(bytes))));
}

MSTAR_BINDING(resetPeakBytes) {
  mstar::reset_peak_bytes();
  return info.Env().Undefined();
}

MSTAR_BINDING(setNumThreads) {
  int64_t n = arg_size(info, 0, "threads");
  if (n < 1 || n > 1024) throw_js(info.Env(), "ERR_ARGUMENT", "threads must be in [1, 1024]", true);
  mstar::set_num_threads(static_cast<int>(n));
  return info.Env().Undefined();
}

MSTAR_BINDING(setSimdLevel) {
  std::string level = arg_string(info, 0, "level");
  mstar::SimdLevel cap;
  if (level == "portable") cap = mstar::SimdLevel::Portable;
  else if (level == "avx2") cap = mstar::SimdLevel::Avx2;
  else if (level == "avx512") cap = mstar::SimdLevel::Avx512;
  else throw_js(info.Env(), "ERR_ARGUMENT", "level must be 'portable', 'avx2' or 'avx512', got '" + level + "'");
  mstar::set_simd_level(cap);
  return Napi::String::New(info.Env(), mstar::simd_level_name(mstar::simd_level()));
}

MSTAR_BINDING(runtimeInfo) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("threads", Napi::Number::New(env, mstar::num_threads()));
  out.Set("simd", Napi::String::New(env, mstar::simd_level_name(mstar::simd_level())));
  out.Set("cpuFeatures", Napi::String::New(env, mstar::cpu_feature_list()));
#ifdef MSTAR_WITH_CUDA
  out.Set("cudaBuilt", Napi::Boolean::New(env, true));
#else
  out.Set("cudaBuilt", Napi::Boolean::New(env, false));
#endif
#ifdef MSTAR_WITH_OPENSLIDE
  out.Set("openslideBuilt", Napi::Boolean::New(env, true));
#else
  out.Set("openslideBuilt", Napi::Boolean::New(env, false));
#endif
  return out;
}
