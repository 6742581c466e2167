// Tiled (flash) attention forward on tensor cores (contract in attention.cuh), after
// FlashAttention-2 (Dao, 2023), forward pass, bfloat16, head dims 64 and 128.
//
// One block of 4 warps takes 64 queries of one (batch, head); each warp owns 16 query rows.
// Keys and values stream through shared memory in tiles of 64 (double-buffered with
// cp.async, so the next tile loads while this one is used). Per tile and warp:
//   S = Q·Kᵀ           mma.m16n8k16, Q fragments held in registers for the whole loop,
//                      K read as a K-major B operand ([key][d] rows, ldmatrix);
//   online softmax     in float32 and base 2 (scale·log2 e folded into S): a row's
//                      running max m and partial sum l live in the 4 lanes that hold the
//                      row (quad shuffles); masked keys and keys ≥ Nk score −∞;
//   O = O·2^(m_old−m) + P·V   P re-used straight from the S accumulators as the A operand
//                      (the m16n8 C layout of two adjacent tiles is the m16k16 A layout),
//                      rounded to bfloat16; V read as an MN-major B operand (ldmatrix.trans).
// At the end O /= l and lse = (m + log2 l)·ln 2; a row with no attended key gets O = 0 and
// lse = −∞. Memory is O(tile) whatever Nk is; [Nq, Nk] never exists.
#include "attention.cuh"
#include "mma.cuh"

namespace mstar::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kBlockQ = 16 * kWarps;  // query rows per block
constexpr int kBlockK = 64;           // keys per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct AttentionArgs {
  const bfloat16* q;
  const bfloat16* k;
  const bfloat16* v;
  bfloat16* out;
  float* lse;
  const uint8_t* key_mask;  // nullptr: none
  int heads, q_len, k_len;
  AttentionStrides qs, ks, vs, os;
  float scale_log2;  // scale · log2(e)
  bool vector_q, vector_k, vector_v;
};

// Max and sum over the 4 lanes (t = lane % 4) that hold one row of an m16n8 tile.
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(kFullMask, v, 1));
  return fmaxf(v, __shfl_xor_sync(kFullMask, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(kFullMask, v, 1);
  return v + __shfl_xor_sync(kFullMask, v, 2);
}

template <int kHeadDim>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(AttentionArgs args) {
  constexpr int kStride = kHeadDim + 8;     // row stride (elements): an odd multiple of 16 bytes
  constexpr int kTileElems = 64 * kStride;  // one 64-row tile (queries, keys or values)
  constexpr int kDSteps = kHeadDim / 16;    // k16 steps over the head dim
  constexpr int kDTiles = kHeadDim / 8;     // n8 tiles over the head dim
  constexpr int kKeyTiles = kBlockK / 8;    // n8 tiles over a key tile
  static_assert(kBlockQ == 64 && kBlockK == 64, "tiles are 64 rows");

  bfloat16* const smem_q = dynamic_smem<bfloat16>();
  bfloat16* const smem_k = smem_q + kTileElems;      // [2][kTileElems]
  bfloat16* const smem_v = smem_k + 2 * kTileElems;  // [2][kTileElems]

  const int b = static_cast<int>(blockIdx.z), h = static_cast<int>(blockIdx.y);
  const int q0 = static_cast<int>(blockIdx.x) * kBlockQ;
  const bfloat16* const q = args.q + b * args.qs.batch + h * args.qs.head;
  const bfloat16* const k = args.k + b * args.ks.batch + h * args.ks.head;
  const bfloat16* const v = args.v + b * args.vs.batch + h * args.vs.head;
  const uint8_t* const mask = args.key_mask != nullptr ? args.key_mask + int64_t{b} * args.k_len : nullptr;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;

  auto load_kv = [&](int stage, int tile) {
    const int key0 = tile * kBlockK;
    load_tile<kBlockK, kHeadDim, kThreads>(smem_k + stage * kTileElems, kStride, k, args.ks.row, key0, 0, args.k_len,
                                           kHeadDim, args.vector_k);
    load_tile<kBlockK, kHeadDim, kThreads>(smem_v + stage * kTileElems, kStride, v, args.vs.row, key0, 0, args.k_len,
                                           kHeadDim, args.vector_v);
  };

  // Q and the first K/V tile in one group; the loop keeps one tile in flight ahead.
  const int key_tiles = (args.k_len + kBlockK - 1) / kBlockK;
  load_tile<kBlockQ, kHeadDim, kThreads>(smem_q, kStride, q, args.qs.row, q0, 0, args.q_len, kHeadDim, args.vector_q);
  if (key_tiles > 0) load_kv(0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // This warp's 16 query rows as A fragments, one per k16 step over d.
  uint32_t qf[kDSteps][4];
#pragma unroll
  for (int d = 0; d < kDSteps; ++d) load_fragment_x4<true, true>(qf[d], smem_q, kStride, 16 * warp, 16 * d);

  float o[kDTiles][4];
#pragma unroll
  for (int j = 0; j < kDTiles; ++j) {
#pragma unroll
    for (int x = 0; x < 4; ++x) o[j][x] = 0.0f;
  }
  // Rows g and g + 8 of the warp's 16: running max (base-2 scaled scores) and partial sum
  // of this lane's columns (summed over the quad at the end).
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};

  for (int tile = 0; tile < key_tiles; ++tile) {
    if (tile > 0) {
      // Committed groups so far: tile + 1, the newest being this tile: wait for all.
      cp_async_wait<0>();
      __syncthreads();
    }
    // Prefetch the next tile into the other stage; every warp finished reading it (the
    // previous iteration ended with a barrier).
    if (tile + 1 < key_tiles) load_kv((tile + 1) % 2, tile + 1);
    cp_async_commit();
    const bfloat16* const sk = smem_k + (tile % 2) * kTileElems;
    const bfloat16* const sv = smem_v + (tile % 2) * kTileElems;

    // S = Q·Kᵀ for 16 rows × 64 keys.
    float s[kKeyTiles][4];
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
      for (int x = 0; x < 4; ++x) s[j][x] = 0.0f;
    }
#pragma unroll
    for (int d = 0; d < kDSteps; ++d) {
#pragma unroll
      for (int p = 0; p < kKeyTiles / 2; ++p) {
        uint32_t r[4];
        load_fragment_x4<true, false>(r, sk, kStride, 16 * p, 16 * d);
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma_bf16_16816(s[2 * p], qf[d], b0);
        mma_bf16_16816(s[2 * p + 1], qf[d], b1);
      }
    }

    // Scale into base 2, mask, and update the running max per row.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int key = tile * kBlockK + 8 * j + 2 * t + x % 2;
        const bool attend = key < args.k_len && (mask == nullptr || mask[key] != 0);
        s[j][x] = attend ? s[j][x] * args.scale_log2 : -INFINITY;
        tile_max[x / 2] = fmaxf(tile_max[x / 2], s[j][x]);
      }
    }
    float correction[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float new_max = fmaxf(row_max[r], quad_max(tile_max[r]));
      // While a row has seen only masked keys its max is −∞; use 0 as the reference so
      // that exp2(−∞ − 0) = 0 instead of exp2(−∞ + ∞) = NaN.
      base[r] = new_max == -INFINITY ? 0.0f : new_max;
      correction[r] = exp2f(row_max[r] - base[r]);
      row_max[r] = new_max;
      row_sum[r] *= correction[r];
    }
#pragma unroll
    for (int j = 0; j < kDTiles; ++j) {
#pragma unroll
      for (int x = 0; x < 4; ++x) o[j][x] *= correction[x / 2];
    }

    // P = 2^(S − max), summed per row, and packed as bfloat16 A fragments: for the k16
    // step over keys 16·p .. 16·p + 15, n8 tiles 2p and 2p + 1 give a0..a3.
    uint32_t pf[kKeyTiles / 2][4];
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
      float e[4];
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        e[x] = exp2f(s[j][x] - base[x / 2]);
        row_sum[x / 2] += e[x];
      }
      pf[j / 2][2 * (j % 2)] = pack_bfloat16(e[0], e[1]);      // row g
      pf[j / 2][2 * (j % 2) + 1] = pack_bfloat16(e[2], e[3]);  // row g + 8
    }

    // O += P·V for 16 rows × D.
#pragma unroll
    for (int p = 0; p < kKeyTiles / 2; ++p) {
#pragma unroll
      for (int d = 0; d < kDTiles / 2; ++d) {
        uint32_t r[4];
        load_fragment_x4<false, false>(r, sv, kStride, 16 * d, 16 * p);
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma_bf16_16816(o[2 * d], pf[p], b0);
        mma_bf16_16816(o[2 * d + 1], pf[p], b1);
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();

  // Normalize and write rows g and g + 8 of this warp.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float total = quad_sum(row_sum[r]);
    const int row = q0 + 16 * warp + g + 8 * r;
    if (row >= args.q_len) continue;
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    bfloat16* const out_row = args.out + b * args.os.batch + h * args.os.head + row * args.os.row;
#pragma unroll
    for (int j = 0; j < kDTiles; ++j) {
      const int d = 8 * j + 2 * t;
      out_row[d] = float_to_bfloat16(o[j][2 * r] * inv);
      out_row[d + 1] = float_to_bfloat16(o[j][2 * r + 1] * inv);
    }
    if (t == 0) {
      args.lse[(int64_t{b} * args.heads + h) * args.q_len + row] =
          total > 0.0f ? (row_max[r] + log2f(total)) * kLn2 : -INFINITY;
    }
  }
}

// Elements spanned by one [B, H, N, D] tensor with these strides.
int64_t tensor_extent(const AttentionParams& p, const AttentionStrides& s, int64_t n, const char* what) {
  return strided_extent({{p.batch, s.batch}, {p.heads, s.head}, {n, s.row}, {p.head_dim, 1}}, what);
}

bool can_vectorize(const void* base, const AttentionStrides& s) {
  // 8 bfloat16 = 16 bytes; the head dim (64 or 128) is a multiple of 8.
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && s.batch % 8 == 0 && s.head % 8 == 0 && s.row % 8 == 0;
}

bool overlaps(const DeviceSpan& x, int64_t x_elems, const DeviceSpan& y, int64_t y_elems) {
  if (x_elems == 0 || y_elems == 0) return false;
  const auto x0 = reinterpret_cast<uintptr_t>(x.data), y0 = reinterpret_cast<uintptr_t>(y.data);
  return x0 < y0 + 2 * y_elems && y0 < x0 + 2 * x_elems;
}

template <int kHeadDim>
void launch_attention(const AttentionArgs& args, dim3 grid) {
  constexpr size_t kSmemBytes = 5 * 64 * (kHeadDim + 8) * sizeof(bfloat16);  // Q + 2 × (K, V)
  launch("attention_forward", attention_forward_kernel<kHeadDim>, grid, dim3(kThreads), kSmemBytes, args);
}

}  // namespace

void attention_forward(const AttentionParams& p) {
  MSTAR_CHECK(p.dtype == Dtype::BF16, Unsupported,
              "attentionForward: CUDA attention takes bfloat16 (got " << dtype_name(p.dtype)
                                                                       << "); float32 attention runs on the CPU");
  MSTAR_CHECK(p.batch >= 0 && p.heads >= 0 && p.q_len >= 0 && p.k_len >= 0, Argument,
              "attentionForward: sizes must be >= 0");
  MSTAR_CHECK(p.head_dim == 64 || p.head_dim == 128, Unsupported,
              "attentionForward: CUDA attention supports head dims 64 and 128, not " << p.head_dim);
  MSTAR_CHECK(p.batch <= 65535 && p.heads <= 65535 && p.q_len < (int64_t{1} << 31) && p.k_len < (int64_t{1} << 31),
              Unsupported, "attentionForward: batch or heads above 65535, or sequences above 2^31, on CUDA");
  const int64_t q_elems = tensor_extent(p, p.q_strides, p.q_len, "attentionForward q");
  const int64_t out_elems = tensor_extent(p, p.out_strides, p.q_len, "attentionForward out");
  if (out_elems == 0) return;
  const int64_t k_elems = tensor_extent(p, p.k_strides, p.k_len, "attentionForward k");
  const int64_t v_elems = tensor_extent(p, p.v_strides, p.k_len, "attentionForward v");
  require_span(p.q, q_elems, "attentionForward: q");
  require_span(p.k, k_elems, "attentionForward: k");
  require_span(p.v, v_elems, "attentionForward: v");
  require_span(p.out, out_elems, "attentionForward: out");
  require_span(p.lse, mul_size(mul_size(p.batch, p.heads, "attentionForward"), p.q_len, "attentionForward"),
               "attentionForward: lse");
  if (p.key_mask.data != nullptr) {
    require_span(p.key_mask, mul_size(p.batch, p.k_len, "attentionForward"), "attentionForward: keyMask");
  }
  // Blocks write their own query rows only after reading all keys and values; q may be out.
  MSTAR_CHECK(!overlaps(p.out, out_elems, p.k, k_elems) && !overlaps(p.out, out_elems, p.v, v_elems), Argument,
              "attentionForward: out must not overlap k or v");

  AttentionArgs args;
  args.q = static_cast<const bfloat16*>(p.q.data);
  args.k = static_cast<const bfloat16*>(p.k.data);
  args.v = static_cast<const bfloat16*>(p.v.data);
  args.out = static_cast<bfloat16*>(p.out.data);
  args.lse = static_cast<float*>(p.lse.data);
  args.key_mask = static_cast<const uint8_t*>(p.key_mask.data);
  args.heads = static_cast<int>(p.heads);
  args.q_len = static_cast<int>(p.q_len);
  args.k_len = static_cast<int>(p.k_len);
  args.qs = p.q_strides;
  args.ks = p.k_strides;
  args.vs = p.v_strides;
  args.os = p.out_strides;
  args.scale_log2 = p.scale * kLog2e;
  args.vector_q = can_vectorize(p.q.data, p.q_strides);
  args.vector_k = k_elems > 0 && can_vectorize(p.k.data, p.k_strides);
  args.vector_v = v_elems > 0 && can_vectorize(p.v.data, p.v_strides);
  const dim3 grid(static_cast<unsigned>(ceil_div(p.q_len, kBlockQ)), static_cast<unsigned>(p.heads),
                  static_cast<unsigned>(p.batch));
  if (p.head_dim == 64) launch_attention<64>(args, grid);
  else launch_attention<128>(args, grid);
}

}  // namespace mstar::cuda
