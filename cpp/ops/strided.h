// Strided index spaces shared by the layout, elementwise and reduction kernels.
//
// A StridedLayout<N> describes one row-major index space (`shape`) read or written
// through N operands, each with its own element strides (0 broadcasts, negative
// walks backwards). Kernels never loop over a multi-index themselves: they ask
// for_each_run() for runs along the innermost dimension and handle each run with a
// tight (vectorizable) loop specialised on the inner strides. Coalescing first
// merges dimensions that are contiguous for every operand, so a contiguous tensor,
// a row broadcast or a transposed copy all become one or two long dimensions.
#pragma once
#include <algorithm>
#include <cstdint>
#include <sstream>
#include <vector>

#include "../core/error.h"

namespace mstar {

// The JS surface caps shapes at 64 entries (binding/args.cc).
constexpr int kMaxRank = 64;

template <int N>
struct StridedLayout {
  int rank = 0;                        // 0: a single element
  int64_t shape[kMaxRank] = {};
  int64_t strides[N][kMaxRank] = {};  // element strides of each operand
  int64_t numel = 1;

  int64_t inner_size() const { return rank == 0 ? 1 : shape[rank - 1]; }
  int64_t inner_stride(int operand) const { return rank == 0 ? 0 : strides[operand][rank - 1]; }
};

// Row-major contiguous strides of `shape`.
inline std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

// Π shape, throwing ERR_SHAPE if it exceeds 2^53 (no typed array can hold more).
inline int64_t checked_numel(const std::vector<int64_t>& shape, const char* name) {
  constexpr int64_t kLimit = int64_t{1} << 53;
  int64_t numel = 1;
  for (int64_t s : shape) {
    MSTAR_CHECK(s >= 0, Shape, name << ": negative dimension " << s);
    if (s == 0) return 0;
  }
  for (int64_t s : shape) {
    MSTAR_CHECK(numel <= kLimit / s, Shape, name << ": element count overflows");
    numel *= s;
  }
  return numel;
}

// Builds a coalesced layout: size-1 dims are dropped (their stride never matters)
// and dim d is folded into d+1 when every operand steps over d exactly as if d and
// d+1 were one dimension. The visiting order (row-major) is unchanged.
template <int N>
StridedLayout<N> make_layout(const std::vector<int64_t>& shape, const std::vector<int64_t>* const (&strides)[N]) {
  MSTAR_CHECK(shape.size() <= static_cast<size_t>(kMaxRank), Shape, "rank " << shape.size() << " > " << kMaxRank);
  StridedLayout<N> layout;
  for (int64_t s : shape) layout.numel *= s;
  if (layout.numel == 0) {  // nothing to visit; one empty dim keeps for_each_run trivial
    layout.rank = 1;
    layout.shape[0] = 0;
    return layout;
  }
  int rank = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = rank > 0;
    for (int k = 0; k < N && merge; ++k) {
      merge = layout.strides[k][rank - 1] == (*strides[k])[d] * shape[d];
    }
    if (merge) {
      layout.shape[rank - 1] *= shape[d];
      for (int k = 0; k < N; ++k) layout.strides[k][rank - 1] = (*strides[k])[d];
    } else {
      layout.shape[rank] = shape[d];
      for (int k = 0; k < N; ++k) layout.strides[k][rank] = (*strides[k])[d];
      ++rank;
    }
  }
  layout.rank = rank;
  return layout;
}

// Visits the linear index range [begin, end) of `layout` as runs along the innermost
// dimension: fn(offsets, count) with offsets[k] the element offset of the run's first
// entry for operand k; inside a run operand k advances by layout.inner_stride(k).
// Ranges let parallel_for split the space anywhere, not only on row boundaries.
template <int N, typename Fn>
void for_each_run(const StridedLayout<N>& layout, int64_t begin, int64_t end, Fn&& fn) {
  if (begin >= end) return;
  int64_t offsets[N] = {};
  if (layout.rank == 0) {
    fn(offsets, int64_t{1});
    return;
  }
  const int inner = layout.rank - 1;
  int64_t index[kMaxRank];
  int64_t rest = begin;
  for (int d = inner; d >= 0; --d) {
    index[d] = rest % layout.shape[d];
    rest /= layout.shape[d];
    for (int k = 0; k < N; ++k) offsets[k] += index[d] * layout.strides[k][d];
  }
  int64_t position = begin;
  while (position < end) {
    int64_t count = std::min(layout.shape[inner] - index[inner], end - position);
    fn(static_cast<const int64_t*>(offsets), count);
    position += count;
    if (position >= end) break;
    // Step to the start of the next run: carry through the outer dims.
    for (int k = 0; k < N; ++k) offsets[k] += count * layout.strides[k][inner];
    index[inner] += count;
    for (int d = inner; d > 0 && index[d] == layout.shape[d]; --d) {
      for (int k = 0; k < N; ++k) offsets[k] += layout.strides[k][d - 1] - layout.shape[d] * layout.strides[k][d];
      index[d] = 0;
      ++index[d - 1];
    }
  }
}

// Throws ERR_RANGE unless every element offset `offset + Σ idx_d·strides[d]` over
// `shape` lies in [0, length). Empty shapes read nothing and always pass. Products
// are bounded before they are formed, so hostile strides cannot overflow.
inline void check_strided_read(const char* name, int64_t length, int64_t offset, const std::vector<int64_t>& shape,
                               const std::vector<int64_t>& strides) {
  MSTAR_CHECK(shape.size() == strides.size(), Shape,
              name << ": strides have " << strides.size() << " entries for a rank-" << shape.size() << " shape");
  for (int64_t s : shape) {
    if (s == 0) return;
  }
  constexpr int64_t kLimit = int64_t{1} << 53;  // no typed array is longer
  int64_t lo = offset, hi = offset;
  bool overflow = offset < -kLimit || offset > kLimit;
  for (size_t d = 0; d < shape.size() && !overflow; ++d) {
    int64_t steps = shape[d] - 1;
    int64_t stride = strides[d];
    if (steps == 0 || stride == 0) continue;
    int64_t magnitude = stride < 0 ? -stride : stride;
    if (magnitude > kLimit / steps) {
      overflow = true;
      break;
    }
    int64_t reach = steps * stride;  // |reach| <= 2^53; at most 64 terms cannot overflow int64
    (reach < 0 ? lo : hi) += reach;
  }
  MSTAR_CHECK(!overflow, Range, name << ": offset and strides reach past any possible array (length " << length << ")");
  MSTAR_CHECK(lo >= 0 && hi < length, Range,
              name << ": strided read reaches element offsets [" << lo << ", " << hi << "] outside the array of length "
                   << length << " (check the offset, shape and strides)");
}

}  // namespace mstar
