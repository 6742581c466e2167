// Block- and warp-level building blocks shared by the tensor-core kernels (gemm.cu,
// attention.cu): copying a tile of a row-major matrix into shared memory, and loading
// mma.m16n8k16 fragments from it with ldmatrix.
//
// Shared tiles keep the global orientation of their matrix: row r, column c at
// tile[r · stride + c]. For an mma operand that is either "K-major" (k runs along a tile
// row: A = [m][k], B = [n][k]) or "MN-major" (m or n along a row: A = [k][m], B = [k][n]).
// Row strides are chosen by the callers so that the 8 rows of one ldmatrix phase fall in
// 8 different 16-byte bank groups (an odd multiple of 16 bytes does that).
#pragma once
#include "common.cuh"

namespace mstar::cuda {

// Copies rows [row0, row0 + kRows) × columns [col0, col0 + kCols) of a row-major matrix
// (extent rows × cols, leading dimension ld) into `tile` (row stride `stride` elements),
// using all kThreads threads of the block. What lies outside the matrix becomes zero.
// `vectorized` (16-byte cp.async) needs: g, ld and col0 multiples of 16 bytes and cols a
// multiple of the vector, so a vector lies wholly inside or outside; otherwise each
// element is loaded on its own (same result, no overlap with computation).
template <int kRows, int kCols, int kThreads, typename T>
__device__ __forceinline__ void load_tile(T* tile, int stride, const T* g, int64_t ld, int row0, int col0, int rows,
                                          int cols, bool vectorized) {
  if (vectorized) {
    constexpr int kVector = 16 / static_cast<int>(sizeof(T));
    constexpr int kVectorsPerRow = kCols / kVector;
    constexpr int kVectors = kRows * kVectorsPerRow;
    static_assert(kCols % kVector == 0 && kVectors % kThreads == 0, "every thread copies the same number of vectors");
#pragma unroll
    for (int i = 0; i < kVectors / kThreads; ++i) {
      const int v = static_cast<int>(threadIdx.x) + i * kThreads;
      const int r = v / kVectorsPerRow;
      const int c = (v % kVectorsPerRow) * kVector;
      const bool valid = row0 + r < rows && col0 + c < cols;
      const T* src = valid ? g + (row0 + r) * ld + (col0 + c) : g;
      cp_async_16(tile + r * stride + c, src, valid);
    }
  } else {
    constexpr int kElems = kRows * kCols;
    static_assert(kElems % kThreads == 0, "every thread copies the same number of elements");
#pragma unroll 4
    for (int i = 0; i < kElems / kThreads; ++i) {
      const int e = static_cast<int>(threadIdx.x) + i * kThreads;
      const int r = e / kCols;
      const int c = e % kCols;  // consecutive threads read consecutive addresses
      const bool valid = row0 + r < rows && col0 + c < cols;
      tile[r * stride + c] = valid ? g[(row0 + r) * ld + (col0 + c)] : T{};
    }
  }
}

// ldmatrix.x4 of the 16(mn) × 16(k) block at (mn0, k0) of a bfloat16 tile. The four 8×8
// matrices come in A-fragment order (kAOrder: mn half fastest, giving a0..a3 of
// mma.m16n8k16) or in B order (k half fastest: b0, b1 of the n8 tile at mn0, then b0, b1
// of the one at mn0 + 8). MN-major tiles are transposed on the way (ldmatrix .trans).
template <bool kKMajor, bool kAOrder>
__device__ __forceinline__ void load_fragment_x4(uint32_t (&r)[4], const bfloat16* tile, int stride, int mn0,
                                                 int k0) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int matrix = lane / 8;
  const int row = lane % 8;
  const int mn_half = kAOrder ? matrix % 2 : matrix / 2;
  const int k_half = kAOrder ? matrix / 2 : matrix % 2;
  if constexpr (kKMajor) {
    ldmatrix_x4(r, tile + (mn0 + 8 * mn_half + row) * stride + k0 + 8 * k_half);
  } else {
    ldmatrix_x4_trans(r, tile + (k0 + 8 * k_half + row) * stride + mn0 + 8 * mn_half);
  }
}

// Two floats as packed bfloat16 (lower column in the low half), as mma operands want them.
__device__ __forceinline__ uint32_t pack_bfloat16(float lo, float hi) {
  return uint32_t{float_to_bfloat16(lo).bits} | (uint32_t{float_to_bfloat16(hi).bits} << 16);
}

}  // namespace mstar::cuda
