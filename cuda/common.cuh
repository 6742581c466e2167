// Device-side helpers shared by the kernels: bfloat16 storage and conversions,
// warp/row-group reductions, and the size arithmetic the entry points use to check
// that every element a kernel touches lies inside its buffer.
//
// The kernels stay plain CUDA C++ on top of the primitives in ptx.cuh (inline PTX,
// dynamic shared memory, launch). test/native/cuda_emu replaces exactly those
// primitives to run the same kernel sources on the host, which is how the kernels
// are checked on machines without a GPU.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <sstream>
#include <utility>
#include <vector>

#include "runtime.cuh"
#ifndef MSTAR_CUDA_EMULATION
#include "ptx.cuh"  // on the host, test/native/cuda_emu/emu.h provides the same names
#endif

namespace mstar::cuda {

// ---- bfloat16 storage --------------------------------------------------------------

// Raw bfloat16 bits. A struct of our own (not __nv_bfloat16) so that host code and
// the host emulation see the same type, and conversions are bit-exact everywhere.
struct bfloat16 {
  uint16_t bits;
};

__host__ __device__ __forceinline__ float bits_to_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

__host__ __device__ __forceinline__ uint32_t float_to_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

__host__ __device__ __forceinline__ float to_float(float v) { return v; }
__host__ __device__ __forceinline__ float to_float(bfloat16 v) { return bits_to_float(uint32_t{v.bits} << 16); }

// Round to nearest even, NaN stays a (quiet) NaN: the rounding torch and the CPU
// conversion (cpp/ops/copy) use.
__host__ __device__ __forceinline__ bfloat16 float_to_bfloat16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bfloat16{static_cast<uint16_t>(u >> 16)};
}

template <typename T>
__host__ __device__ __forceinline__ T from_float(float v);
template <>
__host__ __device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__host__ __device__ __forceinline__ bfloat16 from_float<bfloat16>(float v) {
  return float_to_bfloat16(v);
}

// ---- reductions --------------------------------------------------------------------

constexpr unsigned kFullMask = 0xffffffffu;

struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// A pair reduced together (layer-norm backward needs two sums per row).
struct Float2 {
  float x, y;
};
struct Sum2Op {
  __device__ Float2 operator()(Float2 a, Float2 b) const { return {a.x + b.x, a.y + b.y}; }
};

// Double sums, for reductions that must not lose the small difference of large terms.
struct SumDoubleOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};

__device__ __forceinline__ float shuffle_xor(float v, int mask) { return __shfl_xor_sync(kFullMask, v, mask); }
__device__ __forceinline__ double shuffle_xor(double v, int mask) { return __shfl_xor_sync(kFullMask, v, mask); }
__device__ __forceinline__ Float2 shuffle_xor(Float2 v, int mask) {
  return {__shfl_xor_sync(kFullMask, v.x, mask), __shfl_xor_sync(kFullMask, v.y, mask)};
}

// Butterfly reduction: every lane ends with the same result.
template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) v = op(v, shuffle_xor(v, mask));
  return v;
}

// Row kernels give each row a group of kGroup threads: one warp (kGroup = 32, several
// rows per block) for short rows, the whole block (kGroup = kRowBlock) for long ones.
constexpr int kRowBlock = 256;
constexpr int kRowLongThreshold = 1024;  // columns above which a row gets a whole block

// Reduction over the kGroup threads of a row; every thread of the group gets the same
// value (warps combine in a fixed order, so the result does not depend on timing).
// With kGroup == kRowBlock all threads of the block must call it.
template <int kGroup, typename T, typename Op>
__device__ __forceinline__ T group_reduce(T v, Op op) {
  static_assert(kGroup == 32 || kGroup == kRowBlock, "a row is reduced by one warp or one block");
  v = warp_reduce(v, op);
  if constexpr (kGroup == 32) {
    return v;
  } else {
    constexpr int kWarps = kGroup / 32;
    __shared__ T partial[kWarps];
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    T total = partial[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) total = op(total, partial[w]);
    __syncthreads();  // `partial` may be reused by the next reduction
    return total;
  }
}

// Which rows a thread works on. All threads of a group share the row, so they run the
// same number of iterations, which is what group_reduce needs.
template <int kGroup>
struct RowWalk {
  static constexpr int kRowsPerBlock = kRowBlock / kGroup;
  __device__ int64_t first_row() const { return int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kGroup; }
  __device__ int64_t row_step() const { return int64_t{gridDim.x} * kRowsPerBlock; }
  __device__ int lane() const { return static_cast<int>(threadIdx.x % kGroup); }
};

// Column sums in blocks of dim3(kSumCols, kSumLanes): thread (x, y) holds a partial sum
// for column x of the block's tile; the kSumLanes row lanes are added in a fixed order.
// All threads of the block must call it; the total is valid in row lane 0 (threadIdx.y == 0).
constexpr int kSumCols = 32;
constexpr int kSumLanes = 8;

__device__ __forceinline__ float sum_over_lanes(float v) {
  __shared__ float lanes[kSumLanes][kSumCols + 1];
  lanes[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  float total = 0.0f;
  if (threadIdx.y == 0) {
#pragma unroll
    for (int lane = 0; lane < kSumLanes; ++lane) total += lanes[lane][threadIdx.x];
  }
  __syncthreads();  // `lanes` may be reused by the next call
  return total;
}

// ---- online softmax ----------------------------------------------------------------

// Running maximum and Σ exp(x − max) of the values seen so far (Milakov & Gimelshein,
// "Online normalizer calculation for softmax", 2018); softmax and bag pooling use it.
struct MaxSum {
  float max, sum;
};

__device__ __forceinline__ MaxSum shuffle_xor(MaxSum v, int mask) {
  return {__shfl_xor_sync(kFullMask, v.max, mask), __shfl_xor_sync(kFullMask, v.sum, mask)};
}

// A value of -Infinity contributes nothing and never becomes the reference point
// (exp(-inf - -inf) would be NaN). NaN inputs poison the sum, so the row comes out NaN.
__device__ __forceinline__ MaxSum online_add(MaxSum s, float x) {
  if (x > s.max) {
    s.sum = s.sum * expf(s.max - x) + 1.0f;
    s.max = x;
  } else if (x != -INFINITY) {
    s.sum += expf(x - s.max);
  }
  return s;
}

struct MaxSumMerge {
  __device__ MaxSum operator()(MaxSum a, MaxSum b) const {
    if (a.max < b.max) {
      const MaxSum t = a;
      a = b;
      b = t;
    }
    if (b.max == -INFINITY) return a;  // b saw nothing but -Infinity
    a.sum += b.sum * expf(b.max - a.max);
    return a;
  }
};

// ---- host-side size arithmetic -----------------------------------------------------

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// a * b and a + b for sizes, ERR_SHAPE on overflow (sizes come from JS, up to 2^53).
inline int64_t mul_size(int64_t a, int64_t b, const char* what) {
  int64_t out;
  MSTAR_CHECK(!__builtin_mul_overflow(a, b, &out), Shape, what << ": size overflows");
  return out;
}
inline int64_t add_size(int64_t a, int64_t b, const char* what) {
  int64_t out;
  MSTAR_CHECK(!__builtin_add_overflow(a, b, &out), Shape, what << ": size overflows");
  return out;
}

// Checks that a span holds `needed` elements and, when it must be read or written,
// that it is present.
inline void require_span(const DeviceSpan& span, int64_t needed, const char* name) {
  if (needed <= 0) return;
  MSTAR_CHECK(span.data != nullptr, Argument, name << " is required");
  MSTAR_CHECK(span.elems >= needed, Shape, name << ": needs " << needed << " elements, the buffer holds " << span.elems);
}

// Elements spanned by a strided [outer × rows × cols] access: the largest offset + 1
// (0 when any extent is 0). Strides must be non-negative.
inline int64_t strided_extent(std::initializer_list<std::pair<int64_t, int64_t>> extent_stride, const char* what) {
  int64_t last = 0;
  for (auto [extent, stride] : extent_stride) {
    if (extent == 0) return 0;
    MSTAR_CHECK(stride >= 0, Argument, what << ": strides must be >= 0, got " << stride);
    last = add_size(last, mul_size(extent - 1, stride, what), what);
  }
  return add_size(last, 1, what);
}

// Launch size for grid-stride loops over n elements.
inline unsigned grid_for(int64_t n, int threads) {
  constexpr int64_t kMaxBlocks = int64_t{1} << 16;  // the loop covers the rest
  int64_t blocks = ceil_div(n, threads);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

// Blocks for a row kernel (RowWalk strides over whatever the grid does not cover).
inline unsigned row_grid(int64_t rows, int rows_per_block) {
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;
  int64_t blocks = ceil_div(rows, rows_per_block);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

// ---- scratch memory ----------------------------------------------------------------

// Device scratch for one entry point, back to the allocator cache at scope exit.
// Releasing it before the queued kernels ran is safe: every later user of the block
// queues its work on the same stream, behind them.
class DeviceScratch {
 public:
  explicit DeviceScratch(size_t bytes) : ptr_(device_malloc(bytes)) {}
  ~DeviceScratch() { device_free(ptr_); }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_;
};

}  // namespace mstar::cuda
