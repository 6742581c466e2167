// Row-group helpers for Nyström attention (Xiong et al. 2021, "Nyströmformer", as
// lucidrains/nystrom-attention computes it and mSTAR's TransMIL uses it): landmarks are
// the means of consecutive groups of `group` rows of q and k, so the forward needs
// group sums and the backward spreads each landmark's gradient back over its group.
// Both work on row ranges so a long sequence can be processed in chunks, and read or
// write strided rows (the q or k columns of a fused qkv buffer) in place.
#pragma once
#include <cstdint>

namespace mstar {

// out[r / group, c] += Σ over rows r in [row_begin, row_end) of x[(r − row_begin)·x_stride + c]
// for c < cols. out is [groups, cols] contiguous (accumulated, never cleared here).
void group_row_sum(const float* x, int64_t x_stride, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group,
                   float* out);

// out[(r − row_begin)·out_stride + c] (+)= alpha · g[r / group, c] for rows r in
// [row_begin, row_end): written when `accumulate` is false, added otherwise.
void group_row_broadcast(const float* g, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group, float alpha,
                         float* out, int64_t out_stride, bool accumulate);

}  // namespace mstar
