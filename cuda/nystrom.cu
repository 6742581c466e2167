// Row-group sums and broadcasts on CUDA (contracts in nystrom.cuh). Both are
// bandwidth-bound grid-stride loops with columns fastest, so a warp reads 32 neighbouring
// columns of a row. The sum gives each (group, column) to one thread, which adds the
// group's rows in order: no atomics, the same bits on every run.
#include "common.cuh"
#include "nystrom.cuh"

namespace mstar::cuda {
namespace {

constexpr int kThreads = 256;

// Groups [first_group, first_group + groups) of the rows in range.
__global__ void group_row_sum_kernel(const float* x, int64_t x_stride, int64_t row_begin, int64_t row_end,
                                     int64_t cols, int64_t group, int64_t first_group, int64_t groups, float* out) {
  const int64_t n = groups * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % cols, gi = first_group + i / cols;
    const int64_t r0 = gi * group > row_begin ? gi * group : row_begin;
    const int64_t r1 = (gi + 1) * group < row_end ? (gi + 1) * group : row_end;
    float sum = 0.0f;
    for (int64_t r = r0; r < r1; ++r) sum += x[(r - row_begin) * x_stride + c];
    out[gi * cols + c] += sum;
  }
}

__global__ void group_row_broadcast_kernel(const float* g, int64_t row_begin, int64_t rows, int64_t cols,
                                           int64_t group, float alpha, float* out, int64_t out_stride,
                                           bool accumulate) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % cols, local = i / cols;
    const float v = alpha * g[((row_begin + local) / group) * cols + c];
    float* o = out + local * out_stride + c;
    *o = accumulate ? *o + v : v;
  }
}

void check_range(const char* op, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group, int64_t stride,
                 const char* stride_name) {
  MSTAR_CHECK(row_begin >= 0 && cols >= 0 && stride >= 0, Argument, op << ": sizes must be >= 0");
  MSTAR_CHECK(row_begin <= row_end, Range, op << ": rowBegin must be <= rowEnd");
  MSTAR_CHECK(group >= 1, Range, op << ": group must be >= 1");
  MSTAR_CHECK(stride >= cols, Shape, op << ": " << stride_name << " must be >= cols");
}

// Elements of the [groups, cols] landmark buffer the row range reaches.
int64_t groups_extent(const char* op, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group) {
  return row_end == row_begin ? 0 : mul_size((row_end - 1) / group + 1, cols, op);
}

}  // namespace

void group_row_sum(DeviceSpan x, int64_t x_stride, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group,
                   DeviceSpan out) {
  const char* op = "groupRowSum";
  check_range(op, row_begin, row_end, cols, group, x_stride, "xStride");
  require_span(x, strided_extent({{row_end - row_begin, x_stride}, {cols, 1}}, op), "groupRowSum: x");
  require_span(out, groups_extent(op, row_begin, row_end, cols, group), "groupRowSum: out");
  if (row_end == row_begin || cols == 0) return;
  const int64_t first_group = row_begin / group, groups = (row_end - 1) / group + 1 - first_group;
  const int64_t n = mul_size(groups, cols, op);
  launch("group_row_sum", group_row_sum_kernel, dim3(grid_for(n, kThreads)), dim3(kThreads), 0,
         static_cast<const float*>(x.data), x_stride, row_begin, row_end, cols, group, first_group, groups,
         static_cast<float*>(out.data));
}

void group_row_broadcast(DeviceSpan g, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group, float alpha,
                         DeviceSpan out, int64_t out_stride, bool accumulate) {
  const char* op = "groupRowBroadcast";
  check_range(op, row_begin, row_end, cols, group, out_stride, "outStride");
  require_span(g, groups_extent(op, row_begin, row_end, cols, group), "groupRowBroadcast: g");
  require_span(out, strided_extent({{row_end - row_begin, out_stride}, {cols, 1}}, op), "groupRowBroadcast: out");
  if (row_end == row_begin || cols == 0) return;
  const int64_t rows = row_end - row_begin;
  launch("group_row_broadcast", group_row_broadcast_kernel, dim3(grid_for(mul_size(rows, cols, op), kThreads)),
         dim3(kThreads), 0, static_cast<const float*>(g.data), row_begin, rows, cols, group, alpha,
         static_cast<float*>(out.data), out_stride, accumulate);
}

}  // namespace mstar::cuda
