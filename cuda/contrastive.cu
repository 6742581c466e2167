// Tiled symmetric InfoNCE on CUDA (contracts in contrastive.cuh), the structure of
// cpp/ops/contrastive.cc on the device:
//   forward:  per row tile, S_tile = scale · a[r0:r0+rows] bᵀ by the tensor-core GEMM
//             (gemm.cu, 3xTF32: float32 accuracy); a row kernel (a warp per row up to 1024
//             columns, else a block) finishes lse_rows and the diagonal with an online
//             max-and-sum; a column kernel (32 columns × 8 row lanes per block) merges the
//             tile's column max-and-sums into running ones, lanes and tiles in a fixed
//             order; a one-block kernel then writes lse_cols and sums the loss in double;
//   backward: per row tile, S_tile again, turned into G in place by a row kernel that also
//             writes Σ_j G_ij S_ij per row (double); then grad_a[tile] = scale · G b and
//             grad_b (+)= scale · Gᵀ a[tile] by two GEMMs, grad_b accumulating over the
//             tiles in order; a one-block kernel sums the row dots in double.
// No atomics anywhere, so results are deterministic. Device scratch: the S tile
// (tile_rows·n floats) plus O(n) statistics.
#include <algorithm>
#include <cmath>
#include <string>

#include "common.cuh"
#include "contrastive.cuh"
#include "gemm.cuh"

namespace mstar::cuda {
namespace {

constexpr int64_t kTileElements = int64_t{16} << 20;  // 64 MB of float S per tile, as on the CPU
constexpr int kFinishThreads = 256;
// The GEMM puts output columns on grid.y (at most 65535 tiles of 128): n and d must fit.
constexpr int64_t kMaxGemmColumns = int64_t{65535} * 128;

int64_t tile_rows_for(const ContrastiveParams& p) {
  if (p.tile_rows > 0) return std::min(p.tile_rows, p.n);
  return std::clamp<int64_t>(kTileElements / std::max<int64_t>(p.n, 1), 1, p.n);
}

// Sum over the block in a fixed tree order; every thread gets the total. All threads of
// the block (kThreads of them, one dimension) must call it.
template <int kThreads>
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double partial[kThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
#pragma unroll 1
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = partial[0];
  __syncthreads();
  return total;
}

// ---- forward -------------------------------------------------------------------------

// For the tile's rows i: lse_rows[r0 + i] = lse_j s[i, j] and diagonal[r0 + i] = s[i, r0 + i].
template <int kGroup>
__global__ void __launch_bounds__(kRowBlock)
    row_stats_kernel(const float* s, int64_t rows, int64_t n, int64_t r0, float* lse_rows, float* diagonal) {
  const RowWalk<kGroup> walk;
  for (int64_t i = walk.first_row(); i < rows; i += walk.row_step()) {
    const float* row = s + i * n;
    MaxSum acc{-INFINITY, 0.0f};
    for (int64_t j = walk.lane(); j < n; j += kGroup) acc = online_add(acc, row[j]);
    acc = group_reduce<kGroup>(acc, MaxSumMerge{});
    if (walk.lane() == 0) {
      lse_rows[r0 + i] = acc.max + logf(acc.sum);
      diagonal[r0 + i] = row[r0 + i];
    }
  }
}

// Column j of the tile (rows × n): its max-and-sum over the rows, merged into state[j]
// (state is reset by the first tile). Block (kSumCols, kSumLanes): lane y takes rows
// y, y + kSumLanes, ...; lane 0 merges the lanes in order, then the running state.
__global__ void __launch_bounds__(kSumCols* kSumLanes)
    column_stats_kernel(const float* s, int64_t rows, int64_t n, MaxSum* state, bool first) {
  const int64_t j = int64_t{blockIdx.x} * kSumCols + threadIdx.x;
  MaxSum acc{-INFINITY, 0.0f};
  if (j < n) {
    for (int64_t i = threadIdx.y; i < rows; i += kSumLanes) acc = online_add(acc, s[i * n + j]);
  }
  __shared__ MaxSum lanes[kSumLanes][kSumCols + 1];
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < n) {
    MaxSum total = first ? MaxSum{-INFINITY, 0.0f} : state[j];
    const MaxSumMerge merge;
    for (int lane = 0; lane < kSumLanes; ++lane) total = merge(total, lanes[lane][threadIdx.x]);
    state[j] = total;
  }
}

// One block: lse_cols[j] = max + log(sum) of column j, and
// loss = Σ_j (lse_rows[j] + lse_cols[j] − 2·S_jj) / (2n), summed in double in a fixed order.
__global__ void __launch_bounds__(kFinishThreads)
    forward_finish_kernel(const MaxSum* state, const float* lse_rows, const float* diagonal, float* lse_cols, int64_t n,
                          double* loss) {
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < n; j += kFinishThreads) {
    const float lse_col = state[j].max + logf(state[j].sum);
    lse_cols[j] = lse_col;
    sum += static_cast<double>(lse_rows[j]) + static_cast<double>(lse_col) - 2.0 * static_cast<double>(diagonal[j]);
  }
  sum = block_sum<kFinishThreads>(sum);
  if (threadIdx.x == 0) *loss = sum / (2.0 * static_cast<double>(n));
}

// ---- backward ------------------------------------------------------------------------

// Tile rows i of S → G in place: G_ij = c·(exp(S_ij − lse_rows[r0 + i]) + exp(S_ij − lse_cols[j]))
// − 2c·[j = r0 + i]; row_dot[r0 + i] = Σ_j G_ij S_ij (double).
template <int kGroup>
__global__ void __launch_bounds__(kRowBlock)
    gradient_rows_kernel(float* s, int64_t rows, int64_t n, int64_t r0, const float* lse_rows, const float* lse_cols,
                         float coefficient, double* row_dot) {
  const RowWalk<kGroup> walk;
  for (int64_t i = walk.first_row(); i < rows; i += walk.row_step()) {
    float* row = s + i * n;
    const int64_t diagonal = r0 + i;
    const float lse_row = lse_rows[diagonal];
    double dot = 0.0;
    for (int64_t j = walk.lane(); j < n; j += kGroup) {
      const float v = row[j];
      float g = coefficient * (expf(v - lse_row) + expf(v - lse_cols[j]));
      if (j == diagonal) g -= 2.0f * coefficient;
      row[j] = g;
      dot += static_cast<double>(g) * static_cast<double>(v);
    }
    dot = group_reduce<kGroup>(dot, SumDoubleOp{});
    if (walk.lane() == 0) row_dot[diagonal] = dot;
  }
}

// One block: *out = Σ_i row_dot[i] in a fixed order.
__global__ void __launch_bounds__(kFinishThreads) sum_kernel(const double* values, int64_t n, double* out) {
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kFinishThreads) sum += values[i];
  sum = block_sum<kFinishThreads>(sum);
  if (threadIdx.x == 0) *out = sum;
}

// ---- host side -----------------------------------------------------------------------

// Row kernels over `rows` rows of n columns: a warp per row up to kRowLongThreshold columns.
template <typename WarpKernel, typename BlockKernel, typename... Args>
void launch_rows(const char* name, WarpKernel warp_kernel, BlockKernel block_kernel, int64_t rows, int64_t n,
                 Args... args) {
  if (n <= kRowLongThreshold) {
    launch(name, warp_kernel, dim3(row_grid(rows, RowWalk<32>::kRowsPerBlock)), dim3(kRowBlock), 0, args...);
  } else {
    launch(name, block_kernel, dim3(row_grid(rows, RowWalk<kRowBlock>::kRowsPerBlock)), dim3(kRowBlock), 0, args...);
  }
}

// c [m×n] = alpha · op(a) · op(b) + beta · c over dense row-major device operands:
// a [m×k] (or [k×m] when trans_a), b [k×n] (or [n×k] when trans_b).
void dense_gemm(const float* a, bool trans_a, const float* b, bool trans_b, float* c, int64_t m, int64_t n, int64_t k,
                float alpha, float beta = 0.0f) {
  GemmParams g;
  g.a = DeviceSpan{const_cast<float*>(a), m * k}, g.b = DeviceSpan{const_cast<float*>(b), k * n}, g.c = DeviceSpan{c, m * n};
  g.m = m, g.n = n, g.k = k;
  g.trans_a = trans_a, g.trans_b = trans_b;
  g.lda = trans_a ? m : k, g.ldb = trans_b ? k : n, g.ldc = n;
  g.alpha = alpha, g.beta = beta;
  gemm(g);
}

// s [rows, n] = scale · a[r0 : r0 + rows] · bᵀ
void similarity_tile(const ContrastiveParams& p, int64_t r0, int64_t rows, float* s) {
  dense_gemm(static_cast<const float*>(p.a.data) + r0 * p.d, false, static_cast<const float*>(p.b.data), true, s, rows,
             p.n, p.d, p.scale);
}

bool overlaps(const DeviceSpan& x, int64_t x_elems, const DeviceSpan& y, int64_t y_elems) {
  if (x.data == nullptr || y.data == nullptr || x_elems == 0 || y_elems == 0) return false;
  const auto x0 = reinterpret_cast<uintptr_t>(x.data), y0 = reinterpret_cast<uintptr_t>(y.data);
  return x0 < y0 + static_cast<uintptr_t>(y_elems) * sizeof(float) &&
         y0 < x0 + static_cast<uintptr_t>(x_elems) * sizeof(float);
}

struct Operand {
  const char* name;
  DeviceSpan span;
  int64_t elems;
  bool written;
};

// No written operand overlaps another operand.
void check_disjoint(const char* op, std::initializer_list<Operand> operands) {
  for (auto x = operands.begin(); x != operands.end(); ++x) {
    for (auto y = x + 1; y != operands.end(); ++y) {
      if (!x->written && !y->written) continue;
      MSTAR_CHECK(!overlaps(x->span, x->elems, y->span, y->elems), Argument,
                  op << ": " << x->name << " and " << y->name << " overlap");
    }
  }
}

// The checks of cpp/ops/contrastive.cc (same codes), the GEMM's size limit, extents and aliasing.
void check_params(const char* op, const ContrastiveParams& p, bool backward) {
  MSTAR_CHECK(p.n >= 1 && p.d >= 1, Shape, op << ": n and d must be positive, got n=" << p.n << ", d=" << p.d);
  MSTAR_CHECK(p.n <= (int64_t{1} << 31) && p.d <= (int64_t{1} << 31) && p.n * p.d <= (int64_t{1} << 46), Shape,
              op << ": n=" << p.n << ", d=" << p.d << " is too large");
  MSTAR_CHECK(p.n <= kMaxGemmColumns && p.d <= kMaxGemmColumns, Unsupported,
              op << ": n and d above " << kMaxGemmColumns << " are not supported on CUDA (use the CPU kernel)");
  MSTAR_CHECK(std::isfinite(p.scale) && p.scale > 0, Argument, op << ": scale must be finite and > 0, got " << p.scale);
  MSTAR_CHECK(p.tile_rows >= 0, Argument, op << ": tile_rows must be >= 0");
  const int64_t nd = p.n * p.d;
  const std::string o(op);
  require_span(p.a, nd, (o + ": a").c_str());
  require_span(p.b, nd, (o + ": b").c_str());
  require_span(p.lse_rows, p.n, (o + ": lseRows").c_str());
  require_span(p.lse_cols, p.n, (o + ": lseCols").c_str());
  if (!backward) {
    check_disjoint(op, {{"a", p.a, nd, false},
                        {"b", p.b, nd, false},
                        {"lseRows", p.lse_rows, p.n, true},
                        {"lseCols", p.lse_cols, p.n, true}});
    return;
  }
  MSTAR_CHECK(std::isfinite(p.g_loss), Argument, op << ": gLoss must be finite, got " << p.g_loss);
  require_span(p.grad_a, nd, (o + ": gradA").c_str());
  require_span(p.grad_b, nd, (o + ": gradB").c_str());
  check_disjoint(op, {{"a", p.a, nd, false},
                      {"b", p.b, nd, false},
                      {"lseRows", p.lse_rows, p.n, false},
                      {"lseCols", p.lse_cols, p.n, false},
                      {"gradA", p.grad_a, nd, true},
                      {"gradB", p.grad_b, nd, true}});
}

double download_double(const DeviceScratch& value) {
  double out = 0.0;
  copy_to_host(&out, value.as<void>(), sizeof out);
  return out;
}

}  // namespace

double contrastive_forward(const ContrastiveParams& p) {
  check_params("contrastiveForward", p, false);
  const int64_t n = p.n, tile = tile_rows_for(p);
  DeviceScratch s(static_cast<size_t>(tile * n) * sizeof(float));
  DeviceScratch state(static_cast<size_t>(n) * sizeof(MaxSum));
  DeviceScratch diagonal(static_cast<size_t>(n) * sizeof(float));
  DeviceScratch loss(sizeof(double));
  auto* lse_rows = static_cast<float*>(p.lse_rows.data);
  for (int64_t r0 = 0; r0 < n; r0 += tile) {
    const int64_t rows = std::min(tile, n - r0);
    similarity_tile(p, r0, rows, s.as<float>());
    launch_rows("contrastive_row_stats", row_stats_kernel<32>, row_stats_kernel<kRowBlock>, rows, n,
                static_cast<const float*>(s.as<float>()), rows, n, r0, lse_rows, diagonal.as<float>());
    launch("contrastive_column_stats", column_stats_kernel, dim3(static_cast<unsigned>(ceil_div(n, kSumCols))),
           dim3(kSumCols, kSumLanes), 0, static_cast<const float*>(s.as<float>()), rows, n, state.as<MaxSum>(),
           r0 == 0);
  }
  launch("contrastive_forward_finish", forward_finish_kernel, dim3(1), dim3(kFinishThreads), 0,
         static_cast<const MaxSum*>(state.as<MaxSum>()), static_cast<const float*>(lse_rows),
         static_cast<const float*>(diagonal.as<float>()), static_cast<float*>(p.lse_cols.data), n, loss.as<double>());
  return download_double(loss);
}

double contrastive_backward(const ContrastiveParams& p) {
  check_params("contrastiveBackward", p, true);
  const int64_t n = p.n, d = p.d, tile = tile_rows_for(p);
  const float coefficient = static_cast<float>(static_cast<double>(p.g_loss) / (2.0 * static_cast<double>(n)));
  DeviceScratch s(static_cast<size_t>(tile * n) * sizeof(float));
  DeviceScratch row_dot(static_cast<size_t>(n) * sizeof(double));
  DeviceScratch scale_grad(sizeof(double));
  for (int64_t r0 = 0; r0 < n; r0 += tile) {
    const int64_t rows = std::min(tile, n - r0);
    similarity_tile(p, r0, rows, s.as<float>());
    launch_rows("contrastive_gradient_rows", gradient_rows_kernel<32>, gradient_rows_kernel<kRowBlock>, rows, n,
                s.as<float>(), rows, n, r0, static_cast<const float*>(p.lse_rows.data),
                static_cast<const float*>(p.lse_cols.data), coefficient, row_dot.as<double>());
    // grad_a[r0 : r0 + rows] = scale · G · b;  grad_b (+)= scale · Gᵀ · a[r0 : r0 + rows]
    const float* a = static_cast<const float*>(p.a.data);
    const float* b = static_cast<const float*>(p.b.data);
    dense_gemm(s.as<float>(), false, b, false, static_cast<float*>(p.grad_a.data) + r0 * d, rows, d, n, p.scale);
    dense_gemm(s.as<float>(), true, a + r0 * d, false, static_cast<float*>(p.grad_b.data), n, d, rows, p.scale,
               r0 == 0 ? 0.0f : 1.0f);
  }
  launch("contrastive_scale_grad", sum_kernel, dim3(1), dim3(kFinishThreads), 0,
         static_cast<const double*>(row_dot.as<double>()), n, scale_grad.as<double>());
  return download_double(scale_grad);
}

}  // namespace mstar::cuda
