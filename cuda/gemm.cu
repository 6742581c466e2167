// Batched GEMM on tensor cores: C_b = act(alpha · op(A_b) · op(B_b) + beta · C_b + bias),
// row-major, the contract of cpp/ops/gemm (see gemm.cuh). No cuBLAS: this is ours.
//
// Structure (the classic Ampere mma.sync design, cf. CUTLASS's sm80 multistage GEMM):
//   - a 128×128 block tile per 128-thread block, four warps of 64×64 each;
//   - K advances in stages of 64 bytes (32 bfloat16 / 16 float) through a 3-stage
//     shared-memory ring filled with cp.async, so loads of stage k+2 overlap the
//     tensor-core work on stage k;
//   - operands keep their global orientation in shared memory: "K-major" (k contiguous:
//     A without transA, B with transB) or "MN-major" (A with transA, B without transB).
//     bfloat16 fragments come from ldmatrix (.trans for MN-major), float32 fragments from
//     plain 32-bit shared loads; both read conflict-free thanks to the row padding;
//   - bfloat16 uses mma.m16n8k16; float32 uses mma.m16n8k8.tf32, once (GemmMath::Tf32) or
//     three times on a head/remainder split (GemmMath::Fp32, float32-level accuracy);
//   - the epilogue applies alpha, beta·C, bias and the activation in float32 and stores
//     with bounds checks, so any m, n, k works.
// Global loads use 16-byte cp.async when the operand's base, leading dimension, batch
// stride and contiguous extent allow whole 16-byte vectors; otherwise a scalar path
// (same shared layout, no overlap) handles odd shapes such as k = 3 or lda = 65.
// Hopper wgmma/TMA would be faster on sm_90; this kernel runs on both sm_80 and sm_90.
#include "gemm.cuh"
#include "mma.cuh"

namespace mstar::cuda {
namespace {

constexpr int kBlockM = 128;
constexpr int kBlockN = 128;
constexpr int kWarpM = 64;
constexpr int kWarpN = 64;
constexpr int kWarpsM = kBlockM / kWarpM;
constexpr int kWarpsN = kBlockN / kWarpN;
constexpr int kThreads = 32 * kWarpsM * kWarpsN;
constexpr int kStages = 3;
constexpr int kStageKBytes = 64;  // K extent of one stage, in bytes of the storage type
constexpr int kMmaTilesM = kWarpM / 16;  // m16 tiles per warp
constexpr int kMmaTilesN = kWarpN / 8;   // n8 tiles per warp

// One operand's tile for one stage in shared memory. K-major tiles are stored [mn][k],
// MN-major ones [k][mn], i.e. rows of the tile are rows of the operand in global memory,
// which is what lets cp.async copy them unchanged. The padding makes the eight rows
// touched by one ldmatrix phase (16-bit types) or by one fragment load (float32) hit
// eight different bank groups:
//   bf16 K-major: 40 elements = 80 B per row   (5 × 16 B: rows map to distinct 16 B slots mod 128 B)
//   bf16 MN-major: 136 elements = 272 B        (17 × 16 B)
//   f32 K-major: 20 words per row              (rows land on banks 0,20,8,28,16,4,24,12 + t)
//   f32 MN-major: 136 words per row            (136 ≡ 8 mod 32: k rows t = 0..3 on banks 0,8,16,24 + g)
// All row strides are multiples of 16 bytes, as cp.async and ldmatrix need.
template <typename T, int kMN, bool kKMajorLayout>
struct SmemTile {
  static constexpr bool kKMajor = kKMajorLayout;
  static constexpr int kK = kStageKBytes / static_cast<int>(sizeof(T));
  static constexpr int kRows = kKMajor ? kMN : kK;
  static constexpr int kCols = kKMajor ? kK : kMN;  // the contiguous extent, in global memory too
  static constexpr int kPad = kKMajor ? 16 / static_cast<int>(sizeof(T)) : 8;
  static constexpr int kStride = kCols + kPad;
  static constexpr int kElems = kRows * kStride;
  static_assert(kStride * sizeof(T) % 16 == 0, "rows must stay 16-byte aligned");
  static_assert(kElems * sizeof(T) % 128 == 0, "stages must stay 128-byte aligned");

  __device__ static __forceinline__ int offset(int mn, int k) { return kKMajor ? mn * kStride + k : k * kStride + mn; }
};

template <typename T>
struct GemmArgs {
  const T* a;
  const T* b;
  T* c;
  const T* bias;  // nullptr: none
  int m, n, k, batch;
  int64_t lda, ldb, ldc;
  int64_t stride_a, stride_b, stride_c;
  float alpha, beta;
  Activation activation;
  bool vector_a, vector_b;  // whole 16-byte vectors can be copied (see can_vectorize)
};

// ---- warp-level products on one stage ------------------------------------------------

template <typename TileA, typename TileB>
__device__ __forceinline__ void warp_mma_stage(float (&acc)[kMmaTilesM][kMmaTilesN][4], const bfloat16* sa,
                                               const bfloat16* sb, int warp_m0, int warp_n0) {
#pragma unroll
  for (int kk = 0; kk < TileA::kK; kk += 16) {
    uint32_t a[kMmaTilesM][4];
    uint32_t b[kMmaTilesN][2];
#pragma unroll
    for (int i = 0; i < kMmaTilesM; ++i) {
      load_fragment_x4<TileA::kKMajor, true>(a[i], sa, TileA::kStride, warp_m0 + 16 * i, kk);
    }
#pragma unroll
    for (int p = 0; p < kMmaTilesN / 2; ++p) {
      uint32_t r[4];
      load_fragment_x4<TileB::kKMajor, false>(r, sb, TileB::kStride, warp_n0 + 16 * p, kk);
      b[2 * p][0] = r[0];
      b[2 * p][1] = r[1];
      b[2 * p + 1][0] = r[2];
      b[2 * p + 1][1] = r[3];
    }
#pragma unroll
    for (int i = 0; i < kMmaTilesM; ++i) {
#pragma unroll
      for (int j = 0; j < kMmaTilesN; ++j) mma_bf16_16816(acc[i][j], a[i], b[j]);
    }
  }
}

// x = head + remainder with both parts exactly representable in tf32.
struct Tf32Split {
  uint32_t head, tail;
};
__device__ __forceinline__ Tf32Split split_tf32(float x) {
  const uint32_t head = to_tf32(x);
  return {head, to_tf32(x - bits_to_float(head))};
}

template <typename TileA, typename TileB, GemmMath kMath>
__device__ __forceinline__ void warp_mma_stage(float (&acc)[kMmaTilesM][kMmaTilesN][4], const float* sa,
                                               const float* sb, int warp_m0, int warp_n0) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4;
  const int t = lane % 4;
#pragma unroll
  for (int kk = 0; kk < TileA::kK; kk += 8) {
    // B fragments for all n8 tiles first (reused by every m16 tile), A one tile at a time.
    uint32_t b_head[kMmaTilesN][2], b_tail[kMmaTilesN][2];
#pragma unroll
    for (int j = 0; j < kMmaTilesN; ++j) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const Tf32Split s = split_tf32(sb[TileB::offset(warp_n0 + 8 * j + g, kk + t + 4 * h)]);
        b_head[j][h] = s.head;
        b_tail[j][h] = s.tail;
      }
    }
#pragma unroll
    for (int i = 0; i < kMmaTilesM; ++i) {
      uint32_t a_head[4], a_tail[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        // a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
        const Tf32Split s = split_tf32(sa[TileA::offset(warp_m0 + 16 * i + g + 8 * (q % 2), kk + t + 4 * (q / 2))]);
        a_head[q] = s.head;
        a_tail[q] = s.tail;
      }
#pragma unroll
      for (int j = 0; j < kMmaTilesN; ++j) {
        if constexpr (kMath == GemmMath::Fp32) {
          // Small terms first, so they are not lost against the large one.
          mma_tf32_1688(acc[i][j], a_tail, b_head[j]);
          mma_tf32_1688(acc[i][j], a_head, b_tail[j]);
        }
        mma_tf32_1688(acc[i][j], a_head, b_head[j]);
      }
    }
  }
}

__device__ __forceinline__ float activate(float x, Activation activation) {
  switch (activation) {
    case Activation::Relu: return x > 0.0f ? x : 0.0f;
    case Activation::Gelu: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    default: return x;
  }
}

// ---- the kernel ------------------------------------------------------------------------

template <typename T, bool kAKMajor, bool kBKMajor, GemmMath kMath>
__global__ void __launch_bounds__(kThreads) gemm_kernel(GemmArgs<T> args) {
  using TileA = SmemTile<T, kBlockM, kAKMajor>;
  using TileB = SmemTile<T, kBlockN, kBKMajor>;
  constexpr int kTileK = TileA::kK;

  T* const smem_a = dynamic_smem<T>();                   // [kStages][TileA::kElems]
  T* const smem_b = smem_a + kStages * TileA::kElems;    // [kStages][TileB::kElems]

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int warp_m0 = (warp % kWarpsM) * kWarpM;
  const int warp_n0 = (warp / kWarpsM) * kWarpN;
  const int m0 = static_cast<int>(blockIdx.x) * kBlockM;
  const int n0 = static_cast<int>(blockIdx.y) * kBlockN;
  const int k_tiles = (args.k + kTileK - 1) / kTileK;

  for (int64_t batch = blockIdx.z; batch < args.batch; batch += gridDim.z) {
    const T* const a = args.a + batch * args.stride_a;
    const T* const b = args.b + batch * args.stride_b;
    T* const c = args.c + batch * args.stride_c;

    auto load_stage = [&](int stage, int k_tile) {
      const int k0 = k_tile * kTileK;
      T* const ta = smem_a + stage * TileA::kElems;
      T* const tb = smem_b + stage * TileB::kElems;
      // Rows of a K-major tile are m (or n) and its columns k; MN-major the other way round.
      constexpr int kAR = TileA::kRows, kAC = TileA::kCols, kAS = TileA::kStride;
      constexpr int kBR = TileB::kRows, kBC = TileB::kCols, kBS = TileB::kStride;
      if constexpr (kAKMajor) load_tile<kAR, kAC, kThreads>(ta, kAS, a, args.lda, m0, k0, args.m, args.k, args.vector_a);
      else load_tile<kAR, kAC, kThreads>(ta, kAS, a, args.lda, k0, m0, args.k, args.m, args.vector_a);
      if constexpr (kBKMajor) load_tile<kBR, kBC, kThreads>(tb, kBS, b, args.ldb, n0, k0, args.n, args.k, args.vector_b);
      else load_tile<kBR, kBC, kThreads>(tb, kBS, b, args.ldb, k0, n0, args.k, args.n, args.vector_b);
    };

    float acc[kMmaTilesM][kMmaTilesN][4];
#pragma unroll
    for (int i = 0; i < kMmaTilesM; ++i) {
#pragma unroll
      for (int j = 0; j < kMmaTilesN; ++j) {
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[i][j][v] = 0.0f;
      }
    }

    // Prologue: stages 0 .. kStages-2 in flight. One commit per stage, even when empty,
    // keeps the group count in step with the tile index for cp_async_wait below.
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < k_tiles) load_stage(s, s);
      cp_async_commit();
    }
    for (int k_tile = 0; k_tile < k_tiles; ++k_tile) {
      // Groups committed so far: (kStages - 1) + k_tile. Allowing kStages - 2 pending
      // means groups 0 .. k_tile have landed; the barrier makes every thread's copies
      // (and scalar stores) visible, and guarantees that all warps are done with the
      // stage consumed in the previous iteration, which is the one refilled next.
      cp_async_wait<kStages - 2>();
      __syncthreads();
      const int next = k_tile + kStages - 1;
      if (next < k_tiles) load_stage(next % kStages, next);
      cp_async_commit();
      const int stage = k_tile % kStages;
      if constexpr (sizeof(T) == 2) {
        warp_mma_stage<TileA, TileB>(acc, smem_a + stage * TileA::kElems, smem_b + stage * TileB::kElems, warp_m0,
                                     warp_n0);
      } else {
        warp_mma_stage<TileA, TileB, kMath>(acc, smem_a + stage * TileA::kElems, smem_b + stage * TileB::kElems,
                                            warp_m0, warp_n0);
      }
    }
    // The next batch item refills the ring: no copy may be in flight (only empty groups
    // remain) and no warp may still be reading.
    cp_async_wait<0>();
    __syncthreads();

    // Epilogue, element by element from the accumulator fragments (d0..d3 of each
    // m16n8 tile sit at (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)).
    const int lane = static_cast<int>(threadIdx.x) % 32;
    const int g = lane / 4;
    const int t = lane % 4;
#pragma unroll
    for (int i = 0; i < kMmaTilesM; ++i) {
#pragma unroll
      for (int j = 0; j < kMmaTilesN; ++j) {
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const int row = m0 + warp_m0 + 16 * i + g + 8 * (v / 2);
          const int col = n0 + warp_n0 + 8 * j + 2 * t + v % 2;
          if (row < args.m && col < args.n) {
            T* const out = c + row * args.ldc + col;
            float x = args.alpha * acc[i][j][v];
            if (args.beta != 0.0f) x += args.beta * to_float(*out);
            if (args.bias != nullptr) x += to_float(args.bias[col]);
            *out = from_float<T>(activate(x, args.activation));
          }
        }
      }
    }
  }
}

// ---- host side -----------------------------------------------------------------------

template <typename T, bool kAKMajor, bool kBKMajor, GemmMath kMath>
void launch_gemm(const GemmArgs<T>& args, dim3 grid) {
  using TileA = SmemTile<T, kBlockM, kAKMajor>;
  using TileB = SmemTile<T, kBlockN, kBKMajor>;
  constexpr size_t kSmemBytes = kStages * (TileA::kElems + TileB::kElems) * sizeof(T);
  launch("gemm", gemm_kernel<T, kAKMajor, kBKMajor, kMath>, grid, dim3(kThreads), kSmemBytes, args);
}

template <typename T, GemmMath kMath>
void launch_gemm_layout(const GemmArgs<T>& args, dim3 grid, bool trans_a, bool trans_b) {
  // A is K-major unless transposed; B is K-major when transposed (stored [n×k]).
  if (!trans_a && trans_b) launch_gemm<T, true, true, kMath>(args, grid);
  else if (!trans_a && !trans_b) launch_gemm<T, true, false, kMath>(args, grid);
  else if (trans_a && trans_b) launch_gemm<T, false, true, kMath>(args, grid);
  else launch_gemm<T, false, false, kMath>(args, grid);
}

// Whole 16-byte vectors can be copied when every vector the tiles ask for starts on a
// 16-byte boundary and lies wholly inside or outside the operand.
bool can_vectorize(const void* base, size_t element_bytes, int64_t ld, int64_t stride, int64_t batch,
                   int64_t contiguous_extent) {
  const int64_t vector = 16 / static_cast<int64_t>(element_bytes);
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && ld % vector == 0 && (batch <= 1 || stride % vector == 0) &&
         contiguous_extent % vector == 0;
}

// Elements of a row-major [rows × cols] operand with leading dimension ld, batched.
int64_t operand_extent(int64_t batch, int64_t stride, int64_t rows, int64_t cols, int64_t ld, const char* what) {
  return strided_extent({{batch, stride}, {rows, ld}, {cols, 1}}, what);
}

bool overlaps(const DeviceSpan& x, int64_t x_elems, const DeviceSpan& y, int64_t y_elems, size_t element_bytes) {
  if (x.data == nullptr || y.data == nullptr || x_elems == 0 || y_elems == 0) return false;
  const auto x0 = reinterpret_cast<uintptr_t>(x.data), y0 = reinterpret_cast<uintptr_t>(y.data);
  return x0 < y0 + y_elems * element_bytes && y0 < x0 + x_elems * element_bytes;
}

template <typename T>
void run_gemm(const GemmParams& p, int64_t a_elems, int64_t b_elems) {
  GemmArgs<T> args;
  args.a = static_cast<const T*>(p.a.data);
  args.b = static_cast<const T*>(p.b.data);
  args.c = static_cast<T*>(p.c.data);
  args.bias = static_cast<const T*>(p.bias.data);
  args.m = static_cast<int>(p.m);
  args.n = static_cast<int>(p.n);
  args.k = static_cast<int>(p.k);
  args.batch = static_cast<int>(p.batch);
  args.lda = p.lda;
  args.ldb = p.ldb;
  args.ldc = p.ldc;
  args.stride_a = p.stride_a;
  args.stride_b = p.stride_b;
  args.stride_c = p.stride_c;
  args.alpha = p.alpha;
  args.beta = p.beta;
  args.activation = p.activation;
  // k == 0 leaves A and B unread (their pointers may be null).
  const int64_t a_contiguous = p.trans_a ? p.m : p.k, b_contiguous = p.trans_b ? p.k : p.n;
  args.vector_a = a_elems > 0 && can_vectorize(p.a.data, sizeof(T), p.lda, p.stride_a, p.batch, a_contiguous);
  args.vector_b = b_elems > 0 && can_vectorize(p.b.data, sizeof(T), p.ldb, p.stride_b, p.batch, b_contiguous);

  constexpr int64_t kMaxGridY = 65535;
  const int64_t tiles_n = ceil_div(p.n, kBlockN);
  MSTAR_CHECK(tiles_n <= kMaxGridY, Unsupported, "gemm: n = " << p.n << " is too large for the CUDA kernel");
  const dim3 grid(static_cast<unsigned>(ceil_div(p.m, kBlockM)), static_cast<unsigned>(tiles_n),
                  static_cast<unsigned>(p.batch < 65535 ? p.batch : 65535));
  if constexpr (sizeof(T) == 2) {
    launch_gemm_layout<T, GemmMath::Fp32>(args, grid, p.trans_a, p.trans_b);  // math does not apply to bf16
  } else if (p.math == GemmMath::Tf32) {
    launch_gemm_layout<T, GemmMath::Tf32>(args, grid, p.trans_a, p.trans_b);
  } else {
    launch_gemm_layout<T, GemmMath::Fp32>(args, grid, p.trans_a, p.trans_b);
  }
}

}  // namespace

void gemm(const GemmParams& p) {
  MSTAR_CHECK(p.dtype == Dtype::F32 || p.dtype == Dtype::BF16, Unsupported,
              "gemm: CUDA supports float32 and bfloat16, not " << dtype_name(p.dtype));
  MSTAR_CHECK(p.math == GemmMath::Fp32 || p.math == GemmMath::Tf32, Argument, "gemm: unknown math mode");
  MSTAR_CHECK(p.activation == Activation::None || p.activation == Activation::Relu ||
                  p.activation == Activation::Gelu,
              Argument, "gemm: unknown activation " << static_cast<int>(p.activation));
  MSTAR_CHECK(p.batch >= 0 && p.m >= 0 && p.n >= 0 && p.k >= 0, Argument, "gemm: sizes must be >= 0");
  // Indices inside a matrix are 32-bit in the kernel (offsets are 64-bit).
  constexpr int64_t kMaxDim = (int64_t{1} << 31) - kBlockM;
  MSTAR_CHECK(p.m <= kMaxDim && p.n <= kMaxDim && p.k <= kMaxDim && p.batch <= kMaxDim, Unsupported,
              "gemm: sizes above 2^31 are not supported on CUDA");
  const int64_t a_rows = p.trans_a ? p.k : p.m, a_cols = p.trans_a ? p.m : p.k;
  const int64_t b_rows = p.trans_b ? p.n : p.k, b_cols = p.trans_b ? p.k : p.n;
  MSTAR_CHECK(p.lda >= a_cols && p.lda >= 1, Shape, "gemm: lda = " << p.lda << " < " << a_cols);
  MSTAR_CHECK(p.ldb >= b_cols && p.ldb >= 1, Shape, "gemm: ldb = " << p.ldb << " < " << b_cols);
  MSTAR_CHECK(p.ldc >= p.n && p.ldc >= 1, Shape, "gemm: ldc = " << p.ldc << " < " << p.n);
  MSTAR_CHECK(p.stride_a >= 0 && p.stride_b >= 0 && p.stride_c >= 0, Argument, "gemm: batch strides must be >= 0");

  const int64_t a_elems = operand_extent(p.batch, p.stride_a, p.m == 0 || p.n == 0 ? 0 : a_rows, a_cols, p.lda, "gemm a");
  const int64_t b_elems = operand_extent(p.batch, p.stride_b, p.m == 0 || p.n == 0 ? 0 : b_rows, b_cols, p.ldb, "gemm b");
  const int64_t c_elems = operand_extent(p.batch, p.stride_c, p.m, p.n, p.ldc, "gemm c");
  const int64_t bias_elems = p.bias.data != nullptr && c_elems > 0 ? p.n : 0;
  require_span(p.a, a_elems, "gemm: a");
  require_span(p.b, b_elems, "gemm: b");
  require_span(p.c, c_elems, "gemm: c");
  require_span(p.bias, bias_elems, "gemm: bias");
  const size_t element = dtype_size(p.dtype);
  MSTAR_CHECK(!overlaps(p.c, c_elems, p.a, a_elems, element) && !overlaps(p.c, c_elems, p.b, b_elems, element) &&
                  !overlaps(p.c, c_elems, p.bias, bias_elems, element),
              Argument, "gemm: c must not overlap a, b or bias");
  // Several batch items writing one C would race.
  MSTAR_CHECK(p.batch <= 1 || c_elems == 0 || p.stride_c >= operand_extent(1, 0, p.m, p.n, p.ldc, "gemm c"), Argument,
              "gemm: stride_c = " << p.stride_c << " makes batch items of c overlap");
  if (c_elems == 0) return;

  if (p.dtype == Dtype::BF16) run_gemm<bfloat16>(p, a_elems, b_elems);
  else run_gemm<float>(p, a_elems, b_elems);
}

}  // namespace mstar::cuda
