// Host emulation of the CUDA execution model, so the kernels in cuda/*.cu can be run
// and checked on a machine without a GPU (see run.sh). It is force-included (-include)
// before a kernel file compiled as C++ with MSTAR_CUDA_EMULATION, and stands in for
// cuda/ptx.cuh: same names, same semantics.
//
// Model: every CUDA thread of a block is an OS thread; the blocks of a grid run one after
// another on the same threads.
// __shared__ variables become function statics (one copy per block, since blocks are
// sequential); dynamic shared memory is a fresh buffer per block, filled with 0xff bytes
// (NaN as float or bfloat16) so reading shared memory before writing it shows in the
// results. __syncthreads is a block barrier; warp collectives (shuffles, ldmatrix, mma)
// exchange values through a per-warp slot array between two warp barriers.
// cp.async is emulated as lazily as the PTX rules allow: nothing is copied until
// cp.async.wait_group retires the group, so a missing wait reads stale shared memory.
// Built with -fsanitize=address, out-of-bounds global or shared accesses are reported.
// The mma and ldmatrix layouts below are written from the PTX ISA independently of the
// kernels (which is the point: the kernels' fragment arithmetic is checked against them).
#pragma once
#ifndef MSTAR_CUDA_EMULATION
#define MSTAR_CUDA_EMULATION 1
#endif
#define __shared__ static
#include <cuda_runtime_api.h>  // dim3, uint3, cudaStream_t; __host__/__device__ become no-ops
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

#include <array>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace emu {

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "cuda_emu: %s\n", what);
  std::abort();
}

// A blocking barrier (mutex + condition variable). std::barrier spins before it sleeps,
// which with 128 emulated threads per block on a few cores burns the machine for nothing.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      released_.notify_all();
      return;
    }
    released_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  const int count_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

constexpr int kWarpSize = 32;
constexpr size_t kSlotBytes = 64;

struct Warp {
  explicit Warp(int lanes) : barrier(lanes) {}
  Barrier barrier;
  alignas(16) unsigned char slot[kWarpSize][kSlotBytes];
};

struct Block {
  dim3 grid_dim, block_dim, block_idx;
  std::unique_ptr<Barrier> barrier;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<unsigned char> dynamic_smem;  // exact size: ASan catches overruns
};

struct PendingCopy {
  void* dst;
  const void* src;
  bool valid;
};

struct Thread {
  uint3 thread_idx;
  int linear = 0;
  Block* block = nullptr;
  std::vector<PendingCopy> open_group;
  std::deque<std::vector<PendingCopy>> committed;
};

inline Thread& self() {
  thread_local Thread t;
  return t;
}
inline int lane() { return self().linear % kWarpSize; }
inline Warp& warp() { return *self().block->warps[self().linear / kWarpSize]; }

// All lanes' values of `mine`, in lane order.
template <typename T>
std::array<T, kWarpSize> warp_share(const T& mine) {
  static_assert(sizeof(T) <= kSlotBytes, "slot too small");
  Warp& w = warp();
  std::memcpy(w.slot[lane()], &mine, sizeof(T));
  w.barrier.arrive_and_wait();
  std::array<T, kWarpSize> all;
  for (int i = 0; i < kWarpSize; ++i) std::memcpy(&all[i], w.slot[i], sizeof(T));
  w.barrier.arrive_and_wait();  // nobody overwrites a slot before everyone has read it
  return all;
}

inline void run_grid(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads <= 0 || threads > 1024) die("block size out of range");
  if (threads % kWarpSize != 0) die("block size is not a multiple of 32 (not needed by our kernels)");
  if (grid.y > 65535 || grid.z > 65535) die("grid.y / grid.z above 65535");
  const uint64_t blocks = uint64_t{grid.x} * grid.y * grid.z;
  Block b;
  b.grid_dim = grid;
  b.block_dim = block;
  b.barrier = std::make_unique<Barrier>(threads);
  for (int w = 0; w < threads / kWarpSize; ++w) b.warps.push_back(std::make_unique<Warp>(kWarpSize));
  // One set of threads runs the blocks one after another (creating threads per block
  // would dominate the run time); thread 0 sets each block up between two barriers.
  Barrier between_blocks(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      Thread& t = self();
      t = Thread{};
      t.linear = i;
      t.thread_idx.x = i % block.x;
      t.thread_idx.y = (i / block.x) % block.y;
      t.thread_idx.z = i / (block.x * block.y);
      t.block = &b;
      for (uint64_t id = 0; id < blocks; ++id) {
        if (i == 0) {
          b.block_idx = dim3(static_cast<unsigned>(id % grid.x), static_cast<unsigned>(id / grid.x % grid.y),
                             static_cast<unsigned>(id / (uint64_t{grid.x} * grid.y)));
          b.dynamic_smem.assign(smem_bytes, 0xff);
        }
        between_blocks.arrive_and_wait();
        t.open_group.clear();
        t.committed.clear();
        body();
        between_blocks.arrive_and_wait();  // all done before thread 0 resets the block
      }
    });
  }
  for (auto& th : pool) th.join();
}

}  // namespace emu

#define threadIdx (::emu::self().thread_idx)
#define blockIdx (::emu::self().block->block_idx)
#define blockDim (::emu::self().block->block_dim)
#define gridDim (::emu::self().block->grid_dim)

inline void __syncthreads() { ::emu::self().block->barrier->arrive_and_wait(); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  if (mask != 0xffffffffu || width != 32) ::emu::die("partial-warp shuffles are not emulated");
  return ::emu::warp_share(v)[::emu::lane() ^ lane_mask];
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  if (mask != 0xffffffffu || width != 32) ::emu::die("partial-warp shuffles are not emulated");
  return ::emu::warp_share(v)[src_lane % 32];
}

namespace mstar::cuda {

// ---- the cuda/ptx.cuh primitives ---------------------------------------------------

cudaStream_t stream();
void check_launch(const char* kernel_name);

template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args... args) {
  ::emu::run_grid(grid, block, smem, [&] { kernel(static_cast<Params>(args)...); });
  check_launch(name);
}

template <typename T>
inline T* dynamic_smem() {
  return reinterpret_cast<T*>(::emu::self().block->dynamic_smem.data());
}

inline void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
  if (reinterpret_cast<uintptr_t>(smem_dst) % 16 != 0) ::emu::die("cp.async: shared address not 16-byte aligned");
  if (reinterpret_cast<uintptr_t>(gmem_src) % 16 != 0) ::emu::die("cp.async: global address not 16-byte aligned");
  ::emu::self().open_group.push_back({smem_dst, gmem_src, valid});
}

inline void cp_async_commit() {
  ::emu::Thread& t = ::emu::self();
  t.committed.push_back(std::move(t.open_group));
  t.open_group.clear();
}

template <int kPending>
inline void cp_async_wait() {
  ::emu::Thread& t = ::emu::self();
  while (static_cast<int>(t.committed.size()) > kPending) {
    for (const ::emu::PendingCopy& c : t.committed.front()) {
      if (c.valid) std::memcpy(c.dst, c.src, 16);
      else std::memset(c.dst, 0, 16);
    }
    t.committed.pop_front();
  }
}

inline void ldmatrix_check(const void* row) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) ::emu::die("ldmatrix: row address not 16-byte aligned");
}

// Register j of lane t: row t/4 of matrix j, elements 2(t%4) (low half) and 2(t%4)+1.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  ldmatrix_check(smem_row);
  const auto rows = ::emu::warp_share(smem_row);
  const int t = ::emu::lane();
  for (int j = 0; j < 4; ++j) {
    const auto* row = static_cast<const uint16_t*>(rows[8 * j + t / 4]);
    r[j] = uint32_t{row[2 * (t % 4)]} | (uint32_t{row[2 * (t % 4) + 1]} << 16);
  }
}

// Transposed: register j of lane t holds stored elements (2(t%4), t/4) and (2(t%4)+1, t/4).
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  ldmatrix_check(smem_row);
  const auto rows = ::emu::warp_share(smem_row);
  const int t = ::emu::lane();
  for (int j = 0; j < 4; ++j) {
    const auto* r0 = static_cast<const uint16_t*>(rows[8 * j + 2 * (t % 4)]);
    const auto* r1 = static_cast<const uint16_t*>(rows[8 * j + 2 * (t % 4) + 1]);
    r[j] = uint32_t{r0[t / 4]} | (uint32_t{r1[t / 4]} << 16);
  }
}

namespace emu_detail {
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float bf16_float(uint16_t b) { return bits_float(uint32_t{b} << 16); }
inline float tf32_float(uint32_t u) { return bits_float(u & 0xffffe000u); }  // the unit ignores the low 13 bits
struct MmaOperands {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};

// Every lane's mma operands (this lane's a, b and accumulator d), exchanged across the warp.
inline auto share_mma_operands(const float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  MmaOperands mine;
  std::memcpy(mine.a, a, sizeof mine.a);
  std::memcpy(mine.b, b, sizeof mine.b);
  std::memcpy(mine.c, d, sizeof mine.c);
  return ::emu::warp_share(mine);
}

// C/D fragment of lane (g, t): (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
inline void place_accumulator(float (&C)[16][8], int g, int t, const MmaOperands& o) {
  C[g][2 * t] = o.c[0];
  C[g][2 * t + 1] = o.c[1];
  C[g + 8][2 * t] = o.c[2];
  C[g + 8][2 * t + 1] = o.c[3];
}

// This lane's four outputs of D = A·B + C (A [16×K], B [K×8]), summed in k order.
template <int K>
inline void multiply_accumulate(float (&d)[4], const float (&A)[16][K], const float (&B)[K][8], const float (&C)[16][8]) {
  const int g = ::emu::lane() / 4, t = ::emu::lane() % 4;
  for (int v = 0; v < 4; ++v) {
    const int row = g + 8 * (v / 2), col = 2 * t + v % 2;
    float sum = C[row][col];
    for (int k = 0; k < K; ++k) sum += A[row][k] * B[k][col];
    d[v] = sum;
  }
}
}  // namespace emu_detail

// PTX ISA m16n8k16 (.bf16): with g = lane/4, t = lane%4,
// A: a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
// B: b0 = (k 2t..2t+1, n g), b1 = (k 2t+8..2t+9, n g)
// C/D: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  using namespace emu_detail;
  const auto all = share_mma_operands(d, a, b);
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const MmaOperands& o = all[l];
    for (int h = 0; h < 2; ++h) {
      const int shift = 16 * h;
      A[g][2 * t + h] = bf16_float(static_cast<uint16_t>(o.a[0] >> shift));
      A[g + 8][2 * t + h] = bf16_float(static_cast<uint16_t>(o.a[1] >> shift));
      A[g][2 * t + 8 + h] = bf16_float(static_cast<uint16_t>(o.a[2] >> shift));
      A[g + 8][2 * t + 8 + h] = bf16_float(static_cast<uint16_t>(o.a[3] >> shift));
      B[2 * t + h][g] = bf16_float(static_cast<uint16_t>(o.b[0] >> shift));
      B[2 * t + 8 + h][g] = bf16_float(static_cast<uint16_t>(o.b[1] >> shift));
    }
    place_accumulator(C, g, t, o);
  }
  multiply_accumulate(d, A, B, C);
}

// PTX ISA m16n8k8 (.tf32): A: a0 = (g, t), a1 = (g+8, t), a2 = (g, t+4), a3 = (g+8, t+4);
// B: b0 = (k t, n g), b1 = (k t+4, n g); C/D as above.
inline void mma_tf32_1688(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  using namespace emu_detail;
  const auto all = share_mma_operands(d, a, b);
  float A[16][8], B[8][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const MmaOperands& o = all[l];
    A[g][t] = tf32_float(o.a[0]);
    A[g + 8][t] = tf32_float(o.a[1]);
    A[g][t + 4] = tf32_float(o.a[2]);
    A[g + 8][t + 4] = tf32_float(o.a[3]);
    B[t][g] = tf32_float(o.b[0]);
    B[t + 4][g] = tf32_float(o.b[1]);
    place_accumulator(C, g, t, o);
  }
  multiply_accumulate(d, A, B, C);
}

// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits.
inline uint32_t to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) ? 0x7fffe000u : u;  // NaN, ±Inf
  return (u + 0x1000u) & 0xffffe000u;
}

}  // namespace mstar::cuda
