// Reductions over the middle axis of [outer, dim, inner] (see reduce.h).
//
// Two shapes of work: inner == 1 reduces contiguous rows (lane-split accumulators
// so the loop vectorizes without reassociating), inner > 1 reduces columns
// (a block of up to 256 running accumulators per output row, unit-stride loads).
// Parallel over output positions; when there are too few of them to feed the
// threads, the reduced axis is cut into chunks whose size depends on the shape
// only and whose partial sums are combined in chunk order, so the result never
// depends on the thread count.
#include "reduce.h"

#include <algorithm>
#include <sstream>  // MSTAR_CHECK

#include "../core/error.h"
#include "../core/memory.h"
#include "../core/thread_pool.h"
#include "vec_math.h"

namespace mstar {
namespace {

// Fixed accumulator lanes: the summation order (hence the bits of the result) is
// the same on every ISA, and 16 doubles fill two AVX-512 or four AVX2 registers.
constexpr int kLanes = 16;
constexpr int64_t kColumnBlock = 256;        // running column accumulators per task
constexpr int64_t kTaskElements = 1 << 15;   // elements per parallel task, roughly

MSTAR_INLINE double combine_lanes(const double* acc) {
  double pairs[kLanes / 2];
  for (int k = 0; k < kLanes / 2; ++k) pairs[k] = acc[k] + acc[k + kLanes / 2];
  double quads[kLanes / 4];
  for (int k = 0; k < kLanes / 4; ++k) quads[k] = pairs[k] + pairs[k + kLanes / 4];
  return (quads[0] + quads[2]) + (quads[1] + quads[3]);
}

// *result = Σ_j f(x[j·stride]) with f the identity or the square (exact in double).
template <class V>  // V: the SIMD level; the loops are auto-vectorized for it
MSTAR_INLINE void row_sum_body(const float* x, int64_t n, int64_t stride, bool squares, double* result) {
  double acc[kLanes] = {};
  int64_t j = 0;
  if (stride == 1 && squares) {
    for (; j + kLanes <= n; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const double v = x[j + k];
        acc[k] += v * v;
      }
    }
  } else if (stride == 1) {
    for (; j + kLanes <= n; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) acc[k] += static_cast<double>(x[j + k]);
    }
  }
  for (; j < n; ++j) {  // strided rows and tails; lane j % kLanes keeps the same order
    const double v = x[j * stride];
    acc[j % kLanes] += squares ? v * v : v;  // scalar tail: branches are fine
  }
  *result = combine_lanes(acc);
}
MSTAR_SIMD_DISPATCH(row_sum, row_sum_body)

// acc[j] += Σ_r x[r·stride + j] for j < width.
template <class V>
MSTAR_INLINE void column_sum_body(const float* x, int64_t rows, int64_t stride, int64_t width, double* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * stride;
    for (int64_t j = 0; j < width; ++j) acc[j] += static_cast<double>(row[j]);
  }
}
MSTAR_SIMD_DISPATCH(column_sum, column_sum_body)

// NaN-propagating "a wins over b": a is NaN, or a > b (b NaN stays). Bitwise & and |,
// not && and ||, keep it free of branches so the loops over it vectorize.
MSTAR_INLINE bool max_wins(float a, float b) { return (a > b) | ((a != a) & (b == b)); }

// Running column maxima: best/index hold row 0's values; rows 1.. are folded in. Row
// numbers are int32 (argmax's type; the caller checks dim fits when argmax is wanted).
template <class V>
MSTAR_INLINE void column_max_body(const float* x, int64_t rows, int64_t stride, int64_t width, float* best,
                                  int32_t* index) {
  for (int64_t r = 1; r < rows; ++r) {
    const float* row = x + r * stride;
    const int32_t ri = static_cast<int32_t>(r);
    for (int64_t j = 0; j < width; ++j) {
      const bool wins = max_wins(row[j], best[j]);
      best[j] = select(wins, row[j], best[j]);
      index[j] = static_cast<int32_t>(select_bits(wins, static_cast<uint32_t>(ri), static_cast<uint32_t>(index[j])));
    }
  }
}
MSTAR_SIMD_DISPATCH(column_max, column_max_body)

// Max and first argmax of a row x[0, n), n >= 1. The row is read as [n / w, w]
// columns so the vectorized column kernel does the work (w wide enough to amortize its
// per-row overhead); the w column winners are then merged by (value, NaN first,
// smallest index) and the tail beyond the last full row folded in.
void row_max(const float* x, int64_t n, float* value, int64_t* index) {
  const int64_t width = n >= 8 * kColumnBlock ? kColumnBlock : kLanes;
  const int64_t rows = n / width;
  float best = x[0];
  int64_t at = 0;
  if (rows > 0) {
    float lane_best[kColumnBlock];
    int32_t lane_row[kColumnBlock];
    std::copy(x, x + width, lane_best);
    std::fill(lane_row, lane_row + width, 0);
    column_max(x, rows, width, width, static_cast<float*>(lane_best), static_cast<int32_t*>(lane_row));
    for (int64_t k = 0; k < width; ++k) {
      const int64_t e = int64_t{lane_row[k]} * width + k;
      const bool same = lane_best[k] == best || (lane_best[k] != lane_best[k] && best != best);
      if (max_wins(lane_best[k], best) || (same && e < at)) {
        best = lane_best[k];
        at = e;
      }
    }
  }
  for (int64_t j = std::max<int64_t>(1, rows * width); j < n; ++j) {
    if (max_wins(x[j], best)) {
      best = x[j];
      at = j;
    }
  }
  *value = best;
  *index = at;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void sum_forward(const float* x, float* out, int64_t outer, int64_t dim, int64_t inner, bool mean) {
  if (dim == 0) {  // the empty sum; its mean is 0/0
    std::fill(out, out + outer * inner, mean ? __builtin_nanf("") : 0.0f);
    return;
  }
  const int64_t width_blocks = inner == 1 ? 1 : ceil_div(inner, kColumnBlock);
  const int64_t width = std::min(inner, kColumnBlock);
  // Rows of the reduced axis per task. Split only when the output alone cannot feed
  // the threads; the split is a function of the shape, not of the thread count.
  int64_t chunk_rows = dim;
  if (outer * width_blocks < 64 && dim * width > 2 * kTaskElements) {
    chunk_rows = std::max(ceil_div(kTaskElements, width), ceil_div(dim, 256));
  }
  const int64_t chunks = std::max<int64_t>(1, ceil_div(dim, chunk_rows));
  const double divisor = mean ? static_cast<double>(dim) : 1.0;
  Workspace<double> partial(chunks > 1 ? static_cast<size_t>(chunks * outer * inner) : 0);

  // Task t = (chunk, o, width block): writes out directly or its chunk's partials.
  auto store = [&](int64_t chunk, int64_t o, int64_t i, double sum) {
    if (chunks == 1) {
      out[o * inner + i] = static_cast<float>(sum / divisor);
    } else {
      partial[static_cast<size_t>((chunk * outer + o) * inner + i)] = sum;
    }
  };
  const int64_t tasks = chunks * outer * width_blocks;
  const int64_t task_work = std::max<int64_t>(1, std::min(chunk_rows, dim) * width);
  parallel_for(tasks, std::max<int64_t>(1, kTaskElements / task_work), [&](int64_t begin, int64_t end) {
    double acc[kColumnBlock];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t block = t % width_blocks;
      const int64_t o = (t / width_blocks) % outer;
      const int64_t chunk = t / (width_blocks * outer);
      const int64_t r0 = chunk * chunk_rows, r1 = std::min(dim, r0 + chunk_rows);
      if (inner == 1) {
        double sum;
        row_sum(x + o * dim + r0, r1 - r0, int64_t{1}, false, &sum);
        store(chunk, o, 0, sum);
      } else {
        const int64_t i0 = block * kColumnBlock, w = std::min(kColumnBlock, inner - i0);
        std::fill(acc, acc + w, 0.0);
        column_sum(x + (o * dim + r0) * inner + i0, r1 - r0, inner, w, static_cast<double*>(acc));
        for (int64_t j = 0; j < w; ++j) store(chunk, o, i0 + j, acc[j]);
      }
    }
  });
  if (chunks == 1) return;
  parallel_for(outer * inner, kTaskElements / chunks + 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      double sum = 0.0;
      for (int64_t c = 0; c < chunks; ++c) sum += partial[static_cast<size_t>(c * outer * inner + p)];
      out[p] = static_cast<float>(sum / divisor);
    }
  });
}

void max_forward(const float* x, float* out, int32_t* argmax, int64_t outer, int64_t dim, int64_t inner) {
  const int64_t width_blocks = inner == 1 ? 1 : ceil_div(inner, kColumnBlock);
  const int64_t task_work = dim * std::min(inner, kColumnBlock);
  parallel_for(outer * width_blocks, std::max<int64_t>(1, kTaskElements / task_work), [&](int64_t begin, int64_t end) {
    float best[kColumnBlock];
    int32_t index[kColumnBlock];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t o = t / width_blocks, block = t % width_blocks;
      if (inner == 1) {
        int64_t at;
        row_max(x + o * dim, dim, out + o, &at);
        if (argmax) argmax[o] = static_cast<int32_t>(at);
      } else {
        const int64_t i0 = block * kColumnBlock, w = std::min(kColumnBlock, inner - i0);
        const float* base = x + o * dim * inner + i0;
        std::copy(base, base + w, best);
        std::fill(index, index + w, 0);
        column_max(base, dim, inner, w, static_cast<float*>(best), static_cast<int32_t*>(index));
        std::copy(best, best + w, out + o * inner + i0);
        if (argmax) std::copy(index, index + w, argmax + o * inner + i0);
      }
    }
  });
}

}  // namespace

void reduce_forward(ReduceOp op, const float* x, float* out, int32_t* argmax, int64_t outer, int64_t dim,
                    int64_t inner) {
  if (outer == 0 || inner == 0) return;
  if (op == ReduceOp::Max) {
    MSTAR_CHECK(dim > 0, Shape, "reduce: max over an empty axis (dim = 0) has no value");
    MSTAR_CHECK(argmax == nullptr || dim <= INT32_MAX, Shape, "reduce: dim " << dim << " does not fit int32 argmax");
    max_forward(x, out, argmax, outer, dim, inner);
    return;
  }
  sum_forward(x, out, outer, dim, inner, op == ReduceOp::Mean);
}

double sum_f64(const float* x, int64_t n, int64_t stride) {
  double sum;
  row_sum(x, n, stride, false, &sum);
  return sum;
}

double sum_squares(const float* x, int64_t n) {
  const int64_t chunks = std::max<int64_t>(1, ceil_div(n, kTaskElements));
  Workspace<double> partial(static_cast<size_t>(chunks));
  parallel_for(chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t j0 = c * kTaskElements;
      row_sum(x + j0, std::min(kTaskElements, n - j0), int64_t{1}, true, &partial[static_cast<size_t>(c)]);
    }
  });
  double sum = 0.0;
  for (int64_t c = 0; c < chunks; ++c) sum += partial[static_cast<size_t>(c)];
  return sum;
}

}  // namespace mstar
