// Reductions over the middle axis of x viewed [outer, dim, inner] (float32):
//
//   reduce_forward  Sum:  out[o, i] = Σ_d x[o, d, i]
//                   Mean: the sum / dim (NaN for dim = 0, like torch.mean of nothing)
//                   Max:  out[o, i] = max_d x[o, d, i], argmax[o, i] = its d (first on
//                         ties); any NaN wins, with the index of the first NaN, like
//                         torch.max(dim). dim must be > 0 unless nothing is reduced.
//                   out: [outer, inner]; argmax: [outer, inner] or null (Max only).
//   sum_squares     Σ x[i]², i < n, in float64 (gradient-norm clipping).
//
// Sums accumulate in float64 in an order fixed by the shape alone (lane-split
// partial sums, then dim blocks combined in order), so results are identical for
// every thread count and SIMD level. There is no reduce_backward: the autograd
// layer expresses it as a broadcast (binary_forward / copy_strided).
#pragma once
#include <cstdint>

namespace mstar {

// Matches lib/native.ts ReduceOp.
enum class ReduceOp : int32_t { Sum = 0, Mean = 1, Max = 2 };
constexpr int kReduceOpCount = 3;

void reduce_forward(ReduceOp op, const float* x, float* out, int32_t* argmax, int64_t outer, int64_t dim,
                    int64_t inner);

double sum_squares(const float* x, int64_t n);

// Σ x[j·stride], j < n, in float64 in a fixed order (shared with sum_to_shape).
double sum_f64(const float* x, int64_t n, int64_t stride);

}  // namespace mstar
