// Row-group sums and broadcasts for Nyström landmarks: the CUDA twin of cpp/ops/nystrom
// (same contracts as groupRowSum/groupRowBroadcast in lib/native.ts; Xiong et al. 2021,
// "Nyströmformer", as lucidrains/nystrom-attention computes it). Landmarks are the means
// of consecutive groups of `group` rows of q and k: the forward needs group sums, the
// backward spreads each landmark's gradient back over its group. Both take row ranges
// (chunks of a long sequence) and strided rows (the q or k columns of a fused qkv buffer).
// float32 only, like the CPU kernel.
#pragma once
#include <cstdint>

#include "types.cuh"

namespace mstar::cuda {

// out[r / group, c] += Σ over rows r in [row_begin, row_end) of x[(r − row_begin)·x_stride + c],
// c < cols. out is [groups, cols] contiguous, groups = (row_end − 1) / group + 1, and is
// accumulated (never cleared). Each group's rows are added in row order by one thread.
void group_row_sum(DeviceSpan x, int64_t x_stride, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group,
                   DeviceSpan out);

// out[(r − row_begin)·out_stride + c] (+)= alpha · g[r / group, c] for rows r in
// [row_begin, row_end): written when `accumulate` is false, added otherwise.
void group_row_broadcast(DeviceSpan g, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group, float alpha,
                         DeviceSpan out, int64_t out_stride, bool accumulate);

}  // namespace mstar::cuda
