// index_select / index_add (see index.h).
//
// index_select copies whole inner rows (memcpy), parallel over output rows.
// index_add first buckets the positions c by target row (a stable counting sort:
// for every row r, the c with idx[c] = r in increasing order), then runs parallel
// over destination rows, each adding its own sources in that fixed order.
#include "index.h"

#include <algorithm>
#include <sstream>  // MSTAR_CHECK
#include <cstring>

#include "../core/error.h"
#include "../core/memory.h"
#include "../core/thread_pool.h"

namespace mstar {
namespace {

// Elements copied or added per parallel chunk (memory-bound work).
constexpr int64_t kGrainElements = int64_t{1} << 15;

void check_indices(const char* op, const int32_t* idx, int64_t count, int64_t dim) {
  for (int64_t c = 0; c < count; ++c) {
    MSTAR_CHECK(idx[c] >= 0 && idx[c] < dim, Range,
                op << ": idx[" << c << "] = " << idx[c] << " is out of range [0, " << dim << ")");
  }
}

}  // namespace

void index_select(const float* x, const int32_t* idx, float* out, int64_t outer, int64_t dim, int64_t inner,
                  int64_t count) {
  check_indices("indexSelect", idx, count, dim);
  if (inner == 0) return;
  const size_t row_bytes = static_cast<size_t>(inner) * sizeof(float);
  parallel_for(outer * count, std::max<int64_t>(1, kGrainElements / inner), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t o = row / count, c = row % count;
      std::memcpy(out + row * inner, x + (o * dim + idx[c]) * inner, row_bytes);
    }
  });
}

void index_add(const float* g_out, const int32_t* idx, float* gx, int64_t outer, int64_t dim, int64_t inner,
               int64_t count) {
  check_indices("indexAdd", idx, count, dim);
  if (outer == 0 || inner == 0 || count == 0) return;
  // Counting sort of c by idx[c]: sources of row r are order[start[r], start[r+1]).
  Workspace<int64_t> start(static_cast<size_t>(dim) + 1, true);
  Workspace<int64_t> order(static_cast<size_t>(count));
  for (int64_t c = 0; c < count; ++c) ++start[static_cast<size_t>(idx[c]) + 1];
  for (int64_t r = 0; r < dim; ++r) start[static_cast<size_t>(r) + 1] += start[static_cast<size_t>(r)];
  {
    Workspace<int64_t> next(static_cast<size_t>(dim));
    std::copy(start.data(), start.data() + dim, next.data());
    for (int64_t c = 0; c < count; ++c) order[static_cast<size_t>(next[static_cast<size_t>(idx[c])]++)] = c;
  }
  // Average work per destination row, to size chunks.
  const int64_t row_work = std::max<int64_t>(1, (count / std::max<int64_t>(dim, 1) + 1) * inner);
  parallel_for(outer * dim, std::max<int64_t>(1, kGrainElements / row_work), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t o = row / dim, r = row % dim;
      float* target = gx + row * inner;
      for (int64_t s = start[static_cast<size_t>(r)]; s < start[static_cast<size_t>(r) + 1]; ++s) {
        const float* source = g_out + (o * count + order[static_cast<size_t>(s)]) * inner;
        for (int64_t i = 0; i < inner; ++i) target[i] += source[i];
      }
    }
  });
}

}  // namespace mstar
