// Attention pooling over ragged bags on CUDA (contracts in bag_pool.cuh).
//   forward:  softmax: one row group (a warp when every bag has at most 1024 instances,
//             else a block) per (bag, head), an online max-and-sum pass then the write;
//             pooling: the bags are cut into row chunks on the host; a 32-column × 8-lane
//             block sums attn·h over one chunk for one head, then a second kernel adds
//             each bag's chunks in order (deterministic, no atomics, as in layernorm.cu);
//   backward: centre[b, k] = M·g per (bag, head) row group, then one row group per
//             instance writes grad_h and the K dot products of grad_scores; an instance
//             finds its bag by binary search over the offsets.
// Memory beyond the outputs: the offsets and chunk table (O(B + chunks) int64), the chunk
// partial sums (chunks·K·L floats, chunks <= B + 1024) and centre (B·K floats).
#include <algorithm>
#include <string>

#include "bag_pool.cuh"
#include "common.cuh"

namespace mstar::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxChunks = 1024;     // chunks over all rows, before bag boundaries split them
constexpr int64_t kMinRowsPerChunk = 32;

__device__ __forceinline__ bool valid_row(const uint8_t* mask, int64_t t) { return mask == nullptr || mask[t] != 0; }

// attn[t, k] for every instance of bag row / K, head row % K.
template <int kGroup>
__global__ void __launch_bounds__(kRowBlock)
    bag_softmax_kernel(const float* scores, const uint8_t* mask, const int64_t* offsets, float* attn, int64_t bags,
                       int64_t heads) {
  const RowWalk<kGroup> walk;
  for (int64_t row = walk.first_row(); row < bags * heads; row += walk.row_step()) {
    const int64_t b = row / heads, k = row % heads;
    const int64_t begin = offsets[b], end = offsets[b + 1];
    MaxSum s{-INFINITY, 0.0f};
    for (int64_t t = begin + walk.lane(); t < end; t += kGroup) {
      if (valid_row(mask, t)) s = online_add(s, scores[t * heads + k]);
    }
    s = group_reduce<kGroup>(s, MaxSumMerge{});
    // No valid instance, or only −Infinity scores: sum = 0, and the bag pools to zero.
    const float inv_sum = s.sum > 0.0f ? 1.0f / s.sum : 0.0f;
    for (int64_t t = begin + walk.lane(); t < end; t += kGroup) {
      const bool use = valid_row(mask, t) && s.max != -INFINITY;
      attn[t * heads + k] = use ? expf(scores[t * heads + k] - s.max) * inv_sum : 0.0f;
    }
  }
}

// partial[chunk, k, col] = Σ over the chunk's rows t of attn[t, k] · h[t, col].
// Block (kSumCols, kSumLanes); grid.x = chunk · K + k, grid.y = column tile.
__global__ void __launch_bounds__(kSumCols* kSumLanes)
    bag_pool_partial_kernel(const float* attn, const float* h, const int64_t* chunk_rows, float* partial,
                            int64_t chunks, int64_t heads, int64_t dim, int64_t h_stride) {
  const int64_t chunk = blockIdx.x / heads, k = blockIdx.x % heads;
  const int64_t col = int64_t{blockIdx.y} * kSumCols + threadIdx.x;
  const int64_t begin = chunk_rows[chunk], end = chunk_rows[chunks + chunk];
  float sum = 0.0f;
  if (col < dim) {
    for (int64_t t = begin + threadIdx.y; t < end; t += kSumLanes) sum += attn[t * heads + k] * h[t * h_stride + col];
  }
  sum = sum_over_lanes(sum);
  if (threadIdx.y == 0 && col < dim) partial[(chunk * heads + k) * dim + col] = sum;
}

// pooled[b, k, col] = Σ over the chunks of bag b, in order (0 for an empty bag).
__global__ void bag_pool_finalize_kernel(const float* partial, const int64_t* bag_chunks, float* pooled, int64_t bags,
                                         int64_t heads, int64_t dim) {
  const int64_t n = bags * heads * dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t col = i % dim, bk = i / dim, b = bk / heads, k = bk % heads;
    float sum = 0.0f;
    for (int64_t c = bag_chunks[b]; c < bag_chunks[b + 1]; ++c) sum += partial[(c * heads + k) * dim + col];
    pooled[i] = sum;
  }
}

// centre[b, k] = pooled[b, k, :] · grad_pooled[b, k, :].
template <int kGroup>
__global__ void __launch_bounds__(kRowBlock)
    bag_centre_kernel(const float* pooled, const float* grad_pooled, float* centre, int64_t rows, int64_t dim) {
  const RowWalk<kGroup> walk;
  for (int64_t row = walk.first_row(); row < rows; row += walk.row_step()) {
    float dot = 0.0f;
    for (int64_t c = walk.lane(); c < dim; c += kGroup) dot += pooled[row * dim + c] * grad_pooled[row * dim + c];
    dot = group_reduce<kGroup>(dot, SumOp{});
    if (walk.lane() == 0) centre[row] = dot;
  }
}

// The bag of instance t: the b with offsets[b] <= t < offsets[b + 1] (empty bags skipped).
__device__ __forceinline__ int64_t bag_of(const int64_t* offsets, int64_t bags, int64_t t) {
  int64_t lo = 0, hi = bags;  // offsets[lo] <= t < offsets[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= t) lo = mid;
    else hi = mid;
  }
  return lo;
}

template <int kGroup>
__global__ void __launch_bounds__(kRowBlock)
    bag_pool_backward_kernel(const float* h, const float* attn, const float* grad_pooled, const float* centre,
                             const int64_t* offsets, float* grad_h, float* grad_scores, int64_t bags, int64_t total,
                             int64_t heads, int64_t dim, int64_t h_stride) {
  const RowWalk<kGroup> walk;
  for (int64_t t = walk.first_row(); t < total; t += walk.row_step()) {
    const int64_t b = bag_of(offsets, bags, t);
    const float* g = grad_pooled + b * heads * dim;
    const float* a = attn + t * heads;
    if (grad_h != nullptr) {
      for (int64_t c = walk.lane(); c < dim; c += kGroup) {
        float sum = 0.0f;
        for (int64_t k = 0; k < heads; ++k) sum += a[k] * g[k * dim + c];
        grad_h[t * dim + c] = sum;
      }
    }
    if (grad_scores != nullptr) {
      for (int64_t k = 0; k < heads; ++k) {
        // a = 0 for masked instances: their gradient is exactly zero. The branch is the
        // same for the whole group, so group_reduce is reached by all or none.
        if (a[k] == 0.0f) {
          if (walk.lane() == 0) grad_scores[t * heads + k] = 0.0f;
          continue;
        }
        float dot = 0.0f;
        for (int64_t c = walk.lane(); c < dim; c += kGroup) dot += h[t * h_stride + c] * g[k * dim + c];
        dot = group_reduce<kGroup>(dot, SumOp{});
        if (walk.lane() == 0) grad_scores[t * heads + k] = a[k] * (dot - centre[b * heads + k]);
      }
    }
  }
}

// Host int64 values in device scratch.
struct DeviceTable {
  explicit DeviceTable(const std::vector<int64_t>& values)
      : scratch(std::max<size_t>(1, values.size()) * sizeof(int64_t)) {
    copy_to_device(scratch.as<void>(), values.data(), values.size() * sizeof(int64_t));
  }
  const int64_t* data() const { return scratch.as<const int64_t>(); }
  DeviceScratch scratch;
};

// Row kernels over `rows` rows of up to `longest` columns: a warp per row when short.
template <typename WarpKernel, typename BlockKernel, typename... Args>
void launch_rows(const char* name, WarpKernel warp_kernel, BlockKernel block_kernel, int64_t rows, int64_t longest,
                 Args... args) {
  if (rows <= 0) return;
  if (longest <= kRowLongThreshold) {
    launch(name, warp_kernel, dim3(row_grid(rows, RowWalk<32>::kRowsPerBlock)), dim3(kRowBlock), 0, args...);
  } else {
    launch(name, block_kernel, dim3(row_grid(rows, RowWalk<kRowBlock>::kRowsPerBlock)), dim3(kRowBlock), 0, args...);
  }
}

void check_params(const char* op, const BagPoolParams& p) {
  MSTAR_CHECK(p.bags >= 0 && p.total >= 0 && p.dim >= 0 && p.h_stride >= 0, Argument,
              op << ": bags, total, dim and hStride must be >= 0");
  MSTAR_CHECK(p.heads >= 1, Shape, op << ": heads must be >= 1, got " << p.heads);
  MSTAR_CHECK(p.h_stride >= p.dim, Shape, op << ": hStride (" << p.h_stride << ") must be >= dim (" << p.dim << ")");
  MSTAR_CHECK(static_cast<int64_t>(p.offsets.size()) == p.bags + 1, Shape,
              op << ": offsets needs bags + 1 = " << p.bags + 1 << " entries, got " << p.offsets.size());
  for (int64_t b = 0; b <= p.bags; ++b) {
    const int64_t o = p.offsets[b];
    MSTAR_CHECK(o >= 0 && o <= p.total && (b == 0 || o >= p.offsets[b - 1]), Range,
                op << ": offsets[" << b << "] = " << o << " breaks 0 <= offsets[b] <= offsets[b+1] <= total ("
                   << p.total << ")");
  }
  MSTAR_CHECK(p.offsets[0] == 0 && p.offsets[p.bags] == p.total, Range,
              op << ": offsets must start at 0 and end at total (" << p.total << ")");
  const std::string o(op);
  const int64_t tk = mul_size(p.total, p.heads, op);
  require_span(p.h, strided_extent({{p.total, p.h_stride}, {p.dim, 1}}, op), (o + ": h").c_str());
  require_span(p.attn, tk, (o + ": attn").c_str());
  require_span(p.pooled, mul_size(mul_size(p.bags, p.heads, op), p.dim, op), (o + ": pooled").c_str());
  if (p.mask.data != nullptr) require_span(p.mask, p.total, (o + ": mask").c_str());
}

int64_t longest_bag(const std::vector<int64_t>& offsets) {
  int64_t longest = 0;
  for (size_t b = 0; b + 1 < offsets.size(); ++b) longest = std::max(longest, offsets[b + 1] - offsets[b]);
  return longest;
}

}  // namespace

void bag_pool_forward(const BagPoolParams& p) {
  const char* op = "bagPoolForward";
  check_params(op, p);
  require_span(p.scores, mul_size(p.total, p.heads, op), "bagPoolForward: scores");
  const int64_t B = p.bags, K = p.heads, L = p.dim;
  if (B == 0) return;
  MSTAR_CHECK(ceil_div(L, kSumCols) <= 65535, Unsupported, op << ": dim above 2^21 is not supported on CUDA");

  // Chunks: each bag's rows cut into pieces of rows_per_chunk. chunk_rows holds the
  // chunk begins, then the chunk ends; bag b owns chunks [bag_chunks[b], bag_chunks[b + 1]).
  const int64_t rows_per_chunk = std::max(kMinRowsPerChunk, ceil_div(p.total, kMaxChunks));
  std::vector<int64_t> bag_chunks(static_cast<size_t>(B + 1), 0), begins, ends;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = p.offsets[b]; t < p.offsets[b + 1]; t += rows_per_chunk) {
      begins.push_back(t);
      ends.push_back(std::min(t + rows_per_chunk, p.offsets[b + 1]));
    }
    bag_chunks[b + 1] = static_cast<int64_t>(begins.size());
  }
  const int64_t chunks = static_cast<int64_t>(begins.size());
  MSTAR_CHECK(mul_size(chunks, K, op) < (int64_t{1} << 31), Unsupported,
              op << ": too many instance chunks × heads for one CUDA launch");
  std::vector<int64_t> chunk_rows = begins;
  chunk_rows.insert(chunk_rows.end(), ends.begin(), ends.end());

  const DeviceTable offsets(p.offsets), bag_table(bag_chunks), chunk_table(chunk_rows);
  const auto* scores = static_cast<const float*>(p.scores.data);
  const auto* mask = static_cast<const uint8_t*>(p.mask.data);
  auto* attn = static_cast<float*>(p.attn.data);
  launch_rows("bag_softmax", bag_softmax_kernel<32>, bag_softmax_kernel<kRowBlock>, B * K, longest_bag(p.offsets),
              scores, mask, offsets.data(), attn, B, K);
  if (L == 0) return;

  const int64_t partial_elems = std::max<int64_t>(1, mul_size(mul_size(chunks, K, op), L, op));
  DeviceScratch partial(static_cast<size_t>(mul_size(partial_elems, sizeof(float), op)));
  if (chunks > 0) {
    launch("bag_pool_partial", bag_pool_partial_kernel,
           dim3(static_cast<unsigned>(chunks * K), static_cast<unsigned>(ceil_div(L, kSumCols))),
           dim3(kSumCols, kSumLanes), 0, static_cast<const float*>(attn), static_cast<const float*>(p.h.data),
           chunk_table.data(), partial.as<float>(), chunks, K, L, p.h_stride);
  }
  launch("bag_pool_finalize", bag_pool_finalize_kernel, dim3(grid_for(B * K * L, kThreads)), dim3(kThreads), 0,
         static_cast<const float*>(partial.as<float>()), bag_table.data(), static_cast<float*>(p.pooled.data), B, K, L);
}

void bag_pool_backward(const BagPoolParams& p) {
  const char* op = "bagPoolBackward";
  check_params(op, p);
  const int64_t B = p.bags, T = p.total, K = p.heads, L = p.dim;
  require_span(p.grad_pooled, mul_size(mul_size(B, K, op), L, op), "bagPoolBackward: gradPooled");
  if (p.grad_h.data != nullptr) require_span(p.grad_h, mul_size(T, L, op), "bagPoolBackward: gradH");
  if (p.grad_scores.data != nullptr) require_span(p.grad_scores, mul_size(T, K, op), "bagPoolBackward: gradScores");
  if (B == 0 || T == 0 || (p.grad_h.data == nullptr && p.grad_scores.data == nullptr)) return;

  const auto* pooled = static_cast<const float*>(p.pooled.data);
  const auto* grad_pooled = static_cast<const float*>(p.grad_pooled.data);
  DeviceScratch centre(static_cast<size_t>(mul_size(B, K, op)) * sizeof(float));
  launch_rows("bag_centre", bag_centre_kernel<32>, bag_centre_kernel<kRowBlock>, B * K, L, pooled, grad_pooled,
              centre.as<float>(), B * K, L);
  const DeviceTable offsets(p.offsets);
  launch_rows("bag_pool_backward", bag_pool_backward_kernel<32>, bag_pool_backward_kernel<kRowBlock>, T, L,
              static_cast<const float*>(p.h.data), static_cast<const float*>(p.attn.data), grad_pooled,
              static_cast<const float*>(centre.as<float>()), offsets.data(), static_cast<float*>(p.grad_h.data),
              static_cast<float*>(p.grad_scores.data), B, T, K, L, p.h_stride);
}

}  // namespace mstar::cuda
