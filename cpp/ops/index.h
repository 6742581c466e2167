// Gather / scatter along the middle axis of [outer, dim, inner] (float32):
//
//   index_select  out[o, c, i] = x[o, idx[c], i]        x: [outer, dim, inner],
//                                                       idx: [count], out: [outer, count, inner]
//   index_add     gx[o, idx[c], i] += g_out[o, c, i]    (its backward; also a scatter-add)
//
// Both check every index against [0, dim) before touching any output and throw
// ERR_RANGE naming the first bad one. index_add sums duplicate indices in order of
// c, whatever the thread count: each thread owns whole destination rows, so there
// are no races and the result is deterministic.
#pragma once
#include <cstdint>

namespace mstar {

void index_select(const float* x, const int32_t* idx, float* out, int64_t outer, int64_t dim, int64_t inner,
                  int64_t count);
void index_add(const float* g_out, const int32_t* idx, float* gx, int64_t outer, int64_t dim, int64_t inner,
               int64_t count);

}  // namespace mstar
