// Scaled dot-product attention on the CPU: tiled (flash) forward and backward, and the
// naive anchor that materializes the scores.
//
// For every batch b, head h and query i:
//   s_ij  = scale · q_i·k_j          (−∞ where key_mask[b, j] == 0)
//   out_i = Σ_j softmax(s_i)_j · v_j,   lse_i = log Σ_j exp(s_ij)
// q [B,H,Nq,D], k/v [B,H,Nk,D], out [B,H,Nq,D] through element strides (attention.h);
// lse [B,H,Nq] contiguous. A query whose keys are all masked gets out = 0, lse = −∞ and
// zero gradients.
//
// Reference: T. Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work
// Partitioning", 2023. Forward = its Algorithm 1: one task per (b, h, 64-query block), online
// softmax over 64-key blocks, the accumulator rescaled when the running max moves and
// divided once at the end. Backward = its Algorithm 2: P recomputed from lse,
// D_i = rowsum(dO ∘ O), one task per (b, h, 64-key block) accumulating dK and dV over all
// query blocks. dQ comes from a second pass over query blocks rather than atomic adds, so
// every output element is summed in a fixed order and results do not depend on the number
// of threads (it costs 7 tile products per block pair instead of 5).
// CPU adaptation: score tiles are computed as Sᵀ = K·Qᵀ wherever a task walks over key
// blocks, so K and V are read in place and only the task's own Qᵀ is packed, and the
// softmax statistics are vectors across queries (no horizontal reductions).
//
// Memory: each thread holds a few [64 × D] and [64 × 64] panels (~70 KB at D = 64), the
// backward also D_i ([B,H,Nq] floats); nothing is O(Nq·Nk). The naive anchor holds one
// [Nq × Nk] score matrix.
//
// SIMD: the kernels are written once with GCC vector extensions, generic in the vector
// width, and instantiated inside functions compiled for AVX-512, AVX2+FMA and the baseline
// ISA; mstar::simd_level() picks one at run time, so one binary runs on any x86-64.
// exp is a vectorized exp2 (~1 ulp); results agree with float64 to ~1e-6.
#include "attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>  // MSTAR_CHECK

#include "../core/cpu_features.h"
#include "../core/error.h"
#include "../core/memory.h"
#include "../core/thread_pool.h"

// The vector helpers return vectors by value, which GCC flags as an ABI difference between
// ISAs; they are always inlined, so no such call ever exists.
#pragma GCC diagnostic ignored "-Wpsabi"

#define MSTAR_ALWAYS_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__) || defined(__i386__)
#define MSTAR_ATTENTION_X86 1
#define MSTAR_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma")))
#define MSTAR_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace mstar {
namespace {

// 64 × 64 score tiles stay in L1; 96 and 128 measured the same, and smaller blocks give
// short sequences more tasks to spread over threads.
constexpr int64_t kQueryBlock = 64;  // queries per task
constexpr int64_t kKeyBlock = 64;    // keys per online-softmax step
constexpr int64_t kMaxLanes = 16;    // widest vector (AVX-512); panels are padded to a multiple of it
constexpr float kLog2e = 1.4426950408889634f;
constexpr double kLn2 = 0.6931471805599453;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

typedef float Vec4 __attribute__((vector_size(16)));
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec16 __attribute__((vector_size(64)));

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------
// Vector primitives, generic in the width. Always inlined, so they compile to the ISA of
// the kernel entry they end up in.

template <class V>
constexpr int64_t lanes() {
  return static_cast<int64_t>(sizeof(V) / sizeof(float));
}
// Broadcast. Spelled as an add of +0.0 (one cheap scalar add before the broadcast) because
// GCC 12 expands the other spellings ({x, x, ...}, x - V{}) into a chain of masked per-lane
// broadcasts inside the micro-kernel, which measured 5x slower.
template <class V>
MSTAR_ALWAYS_INLINE V splat(float x) {
  return V{} + x;
}
template <class V>
MSTAR_ALWAYS_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
MSTAR_ALWAYS_INLINE void store(float* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}
template <class V>
MSTAR_ALWAYS_INLINE V vmax(const V& a, const V& b) {
  return a > b ? a : b;
}
// 2^x with relative error ~2e-7 (about 1 ulp): x = n + f, n = round(x), |f| <= 1/2,
// 2^f by its degree-7 Taylor polynomial (truncation < 6e-9), 2^n built in the exponent
// bits. x <= −127 gives exactly 0 (so −∞, i.e. masked keys, contribute nothing) and NaN
// stays NaN, so a NaN in the inputs is not hidden.
template <class V>
MSTAR_ALWAYS_INLINE V exp2v(const V& arg) {
  using I = decltype(arg < arg);  // int32 vector of the same width
  V x = arg;
  const V hi = splat<V>(127.0f);
  const V lo = splat<V>(-127.0f);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  // Adding 1.5·2^23 rounds x to an integer held in the low mantissa bits of t.
  const V magic = splat<V>(12582912.0f);
  const V t = x + magic;
  const V f = x - (t - magic);
  V poly = splat<V>(1.5252733804059840e-5f);  // ln2^7 / 7!
  poly = poly * f + 1.5403530393381606e-4f;   // ln2^6 / 6!
  poly = poly * f + 1.3333558146428443e-3f;   // ln2^5 / 5!
  poly = poly * f + 9.6181291076284770e-3f;   // ln2^4 / 4!
  poly = poly * f + 5.5504108664821580e-2f;   // ln2^3 / 3!
  poly = poly * f + 2.4022650695910071e-1f;   // ln2^2 / 2!
  poly = poly * f + 6.9314718055994531e-1f;   // ln2
  poly = poly * f + 1.0f;
  const I n = reinterpret_cast<I>(t) - reinterpret_cast<I>(magic);
  const I bits = (n + 127) << 23;  // n = −127 gives +0.0
  return poly * reinterpret_cast<V>(bits);
}

// ---------------------------------------------------------------------------------------
// Tile product C[M × N] (+)= A[M × K] · B[K × N]. A's element (i, k) is a[i·a_rs + k·a_cs],
// so A can be a row-major panel or the transpose of one (the backward's Pᵀ and dSᵀ) without
// copying. B's row k starts at b + k·ldb and N is a multiple of the vector width: panels are
// zero-padded so it always is. MR × NV accumulator vectors stay in registers.

struct TileGemm {
  int64_t m, n, k;
  const float* a;
  int64_t a_rs, a_cs;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  bool accumulate;
};

template <class V, int MR, int NV>
MSTAR_ALWAYS_INLINE void micro_kernel(const TileGemm& g, int64_t i0, int64_t j0) {
  constexpr int64_t W = lanes<V>();
  V acc[MR][NV];
  float* c = g.c + i0 * g.ldc + j0;
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[r][j] = g.accumulate ? load<V>(c + r * g.ldc + j * W) : V{};
  }
  const float* a_row[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) a_row[r] = g.a + (i0 + r) * g.a_rs;
  const float* b = g.b + j0;
  for (int64_t k = 0; k < g.k; ++k) {
    V bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = load<V>(b + j * W);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const V av = splat<V>(*a_row[r]);
      a_row[r] += g.a_cs;
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[r][j] += av * bv[j];
    }
    b += g.ldb;
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) store<V>(c + r * g.ldc + j * W, acc[r][j]);
  }
}

// Picks the micro-kernel for the edge tiles (fewer rows or vectors) at compile time.
template <class V, int MR, int NV>
MSTAR_ALWAYS_INLINE void micro_kernel_edge_nv(const TileGemm& g, int64_t i0, int64_t j0, int nv) {
  if constexpr (NV > 1) {
    if (nv < NV) return micro_kernel_edge_nv<V, MR, NV - 1>(g, i0, j0, nv);
  }
  micro_kernel<V, MR, NV>(g, i0, j0);
}
template <class V, int MR, int NV>
MSTAR_ALWAYS_INLINE void micro_kernel_edge(const TileGemm& g, int64_t i0, int64_t j0, int mr, int nv) {
  if constexpr (MR > 1) {
    if (mr < MR) return micro_kernel_edge<V, MR - 1, NV>(g, i0, j0, mr, nv);
  }
  micro_kernel_edge_nv<V, MR, NV>(g, i0, j0, nv);
}

template <class V, int MR, int NV>
MSTAR_ALWAYS_INLINE void gemm_tile(const TileGemm& g) {
  constexpr int64_t W = lanes<V>();
  for (int64_t j0 = 0; j0 < g.n; j0 += NV * W) {
    const int nv = static_cast<int>(std::min<int64_t>(NV, (g.n - j0) / W));
    int64_t i0 = 0;
    if (nv == NV) {
      for (; i0 + MR <= g.m; i0 += MR) micro_kernel<V, MR, NV>(g, i0, j0);
    }
    for (; i0 < g.m; i0 += MR) {
      micro_kernel_edge<V, MR, NV>(g, i0, j0, static_cast<int>(std::min<int64_t>(MR, g.m - i0)), nv);
    }
  }
}

// One out-of-line tile product per ISA: the micro-kernels are instantiated once per ISA
// and the task code calls them (a call per tile costs nothing next to the tile).
using GemmFn = void (*)(const TileGemm&);
#ifdef MSTAR_ATTENTION_X86
MSTAR_TARGET_AVX512 void gemm_avx512(const TileGemm& g) { gemm_tile<Vec16, 6, 4>(g); }  // 24 zmm accumulators
MSTAR_TARGET_AVX2 void gemm_avx2(const TileGemm& g) { gemm_tile<Vec8, 6, 2>(g); }        // 12 of 16 ymm
#endif
void gemm_portable(const TileGemm& g) { gemm_tile<Vec4, 6, 2>(g); }

template <class V>
struct Isa;
#ifdef MSTAR_ATTENTION_X86
template <>
struct Isa<Vec16> {
  static constexpr GemmFn gemm = gemm_avx512;
};
template <>
struct Isa<Vec8> {
  static constexpr GemmFn gemm = gemm_avx2;
};
#endif
template <>
struct Isa<Vec4> {
  static constexpr GemmFn gemm = gemm_portable;
};

// ---------------------------------------------------------------------------------------
// Panels and scheduling. Tiles are oriented so that every packed panel is packed once per
// task and then reused for a whole row or column of tiles; the operands that change from
// tile to tile (K and V rows in the forward and the dQ pass, Q and dO rows in the dK/dV
// pass) are read in place through their strides.

// dst[r·ld + d] = src[r·row_stride + d] for r < rows, d < D; columns D..ld zeroed.
void pack_rows(const float* src, int64_t row_stride, int64_t rows, int64_t D, float* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * row_stride;
    float* o = dst + r * ld;
    for (int64_t d = 0; d < D; ++d) o[d] = s[d];
    for (int64_t d = D; d < ld; ++d) o[d] = 0.0f;
  }
}

// dst[d·ld + r] = mul · src[r·row_stride + d] for r < rows, d < D; columns rows..ld zeroed.
void pack_transposed(const float* src, int64_t row_stride, int64_t rows, int64_t D, float mul, float* dst,
                     int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * row_stride;
    for (int64_t d = 0; d < D; ++d) dst[d * ld + r] = mul * s[d];
  }
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t r = rows; r < ld; ++r) dst[d * ld + r] = 0.0f;
  }
}

// n strided rows of D floats as the B operand of a tile product: read in place when a row
// is a whole number of vectors (dp == D), else copied into a zero-padded [n × dp] panel.
const float* row_operand(const float* src, int64_t row_stride, int64_t n, int64_t D, int64_t dp, float* panel,
                         int64_t* ld) {
  if (dp == D) {
    *ld = row_stride;
    return src;
  }
  pack_rows(src, row_stride, n, D, panel, dp);
  *ld = dp;
  return panel;
}

// Additive bias of one key block: 0 for keys to attend, −∞ for masked keys and for the
// padding up to `padded`. Returns how many keys are attended (0: skip the block).
int64_t build_key_bias(const uint8_t* mask, int64_t cols, int64_t padded, float* bias) {
  int64_t attended = 0;
  for (int64_t j = 0; j < padded; ++j) {
    const bool on = j < cols && (mask == nullptr || mask[j] != 0);
    bias[j] = on ? 0.0f : kNegInf;
    attended += on;
  }
  return attended;
}

// Bump allocation of 64-byte-aligned panels from one per-thread workspace.
struct PanelCarver {
  float* next;
  float* take(int64_t count) {
    float* p = next;
    next += round_up(count, kMaxLanes);
    return p;
  }
};

// Runs task(scratch, index) for every index in [0, n). Tasks are handed out through an
// atomic counter so a thread slowed down by other processes does not hold the rest up;
// which thread runs a task never changes its result. Each thread owns one counted workspace.
template <class Task>
void run_tasks(int64_t n, int64_t scratch_floats, const Task& task) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int threads = static_cast<int>(std::min<int64_t>(n, num_threads()));
  parallel_run(
      [&](int, int) {
        Workspace<float> scratch(static_cast<size_t>(scratch_floats));
        for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) task(scratch.data(), i);
      },
      threads);
}

template <class T>
T* row_ptr(T* base, const AttentionStrides& s, int64_t b, int64_t h, int64_t n) {
  return base + b * s.batch + h * s.head + n * s.row;
}

void check_params(const AttentionParams& p, const char* who) {
  MSTAR_CHECK(p.batch >= 0 && p.heads >= 0 && p.q_len >= 0 && p.k_len >= 0, Shape, who << ": negative size");
  MSTAR_CHECK(p.head_dim >= 1, Shape, who << ": head dim must be >= 1, got " << p.head_dim);
}

// ---------------------------------------------------------------------------------------
// Forward

int64_t forward_scratch_floats(int64_t D) {
  const int64_t dp = round_up(D, kMaxLanes);
  return dp * kQueryBlock           // (scale·log2e·Q)ᵀ
         + kKeyBlock * kQueryBlock  // Sᵀ → Pᵀ
         + kKeyBlock * dp           // V panel (only when D is not whole vectors)
         + kQueryBlock * dp         // output accumulator
         + 3 * kQueryBlock          // running max, running sum, rescale factor
         + kKeyBlock                // key bias
         + 8 * kMaxLanes;           // alignment slack
}

// One task = one (b, h, query block) and the whole softmax over every key block. The score
// tile is computed transposed, Sᵀ = K·Qᵀ [keys × queries], so K is read in place (only Qᵀ
// is packed, once) and the running max and sum are vectors across queries: no horizontal
// reductions. Scores are in log2 units (scale·log2e folded into Qᵀ), so only exp2 is needed.
template <class V>
MSTAR_ALWAYS_INLINE void forward_task(const AttentionParams& p, float* scratch, int64_t task) {
  constexpr int64_t W = lanes<V>();
  const GemmFn gemm = Isa<V>::gemm;
  const int64_t D = p.head_dim, Nq = p.q_len, Nk = p.k_len;
  const int64_t dp = round_up(D, W);
  const int64_t q_blocks = (Nq + kQueryBlock - 1) / kQueryBlock;
  const int64_t bh = task / q_blocks, b = bh / p.heads, h = bh % p.heads;
  const int64_t q0 = (task % q_blocks) * kQueryBlock;
  const int64_t rows = std::min(kQueryBlock, Nq - q0), rowsp = round_up(rows, W);

  PanelCarver carve{scratch};
  float* qt = carve.take(dp * kQueryBlock);
  float* st = carve.take(kKeyBlock * kQueryBlock);
  float* vp = carve.take(kKeyBlock * dp);
  float* o = carve.take(kQueryBlock * dp);
  float* m = carve.take(kQueryBlock);
  float* l = carve.take(kQueryBlock);
  float* alpha = carve.take(kQueryBlock);
  float* bias = carve.take(kKeyBlock);

  pack_transposed(row_ptr(p.q, p.q_strides, b, h, q0), p.q_strides.row, rows, D, p.scale * kLog2e, qt, rowsp);
  std::fill(m, m + rowsp, kNegInf);
  std::fill(l, l + rowsp, 0.0f);
  std::fill(o, o + rows * dp, 0.0f);
  const uint8_t* mask = p.key_mask ? p.key_mask + b * Nk : nullptr;

  for (int64_t k0 = 0; k0 < Nk; k0 += kKeyBlock) {
    const int64_t cols = std::min(kKeyBlock, Nk - k0);
    // A block with at least one attended key gives every query a finite max, so after the
    // first such block m is finite; a block with none is skipped outright.
    if (build_key_bias(mask ? mask + k0 : nullptr, cols, cols, bias) == 0) continue;
    gemm({cols, rowsp, D, row_ptr(p.k, p.k_strides, b, h, k0), p.k_strides.row, 1, qt, rowsp, st, rowsp, false});
    for (int64_t i = 0; i < rowsp; i += W) {
      const V m_old = load<V>(m + i);
      V m_new = m_old;
      for (int64_t j = 0; j < cols; ++j) {
        if (bias[j] == 0.0f) m_new = vmax(m_new, load<V>(st + j * rowsp + i));
      }
      V sum{};
      for (int64_t j = 0; j < cols; ++j) {
        float* s = st + j * rowsp + i;
        if (bias[j] != 0.0f) {
          store<V>(s, V{});  // masked key: P = 0
          continue;
        }
        const V e = exp2v(load<V>(s) - m_new);
        store<V>(s, e);
        sum += e;
      }
      const V a = exp2v(m_old - m_new);  // 0 while m was −∞, exactly 1 when the max did not move
      store<V>(l + i, load<V>(l + i) * a + sum);
      store<V>(m + i, m_new);
      store<V>(alpha + i, a);
    }
    for (int64_t r = 0; r < rows; ++r) {
      if (alpha[r] == 1.0f) continue;
      const V a = splat<V>(alpha[r]);
      for (int64_t d = 0; d < dp; d += W) store<V>(o + r * dp + d, load<V>(o + r * dp + d) * a);
    }
    int64_t ldv = 0;
    const float* v_rows = row_operand(row_ptr(p.v, p.v_strides, b, h, k0), p.v_strides.row, cols, D, dp, vp, &ldv);
    gemm({rows, dp, cols, st, 1, rowsp, v_rows, ldv, o, dp, true});  // O += P·V, P read as (Pᵀ)ᵀ
  }

  float* lse = p.lse ? p.lse + bh * Nq + q0 : nullptr;
  for (int64_t r = 0; r < rows; ++r) {
    float* out = row_ptr(p.out, p.out_strides, b, h, q0 + r);
    if (m[r] == kNegInf) {  // no key attended
      std::fill(out, out + D, 0.0f);
      if (lse) lse[r] = kNegInf;
      continue;
    }
    const float inv = 1.0f / l[r];
    for (int64_t d = 0; d < D; ++d) out[d] = o[r * dp + d] * inv;
    if (lse) lse[r] = static_cast<float>((static_cast<double>(m[r]) + std::log2(static_cast<double>(l[r]))) * kLn2);
  }
}

using TaskFn = void (*)(const AttentionParams&, float*, int64_t);
#ifdef MSTAR_ATTENTION_X86
MSTAR_TARGET_AVX512 void forward_task_avx512(const AttentionParams& p, float* s, int64_t t) { forward_task<Vec16>(p, s, t); }
MSTAR_TARGET_AVX2 void forward_task_avx2(const AttentionParams& p, float* s, int64_t t) { forward_task<Vec8>(p, s, t); }
#endif
void forward_task_portable(const AttentionParams& p, float* s, int64_t t) { forward_task<Vec4>(p, s, t); }

}  // namespace

void attention_forward(const AttentionParams& p) {
  check_params(p, "attention_forward");
  TaskFn task = forward_task_portable;
#ifdef MSTAR_ATTENTION_X86
  if (simd_level() == SimdLevel::Avx512) task = forward_task_avx512;
  else if (simd_level() == SimdLevel::Avx2) task = forward_task_avx2;
#endif
  const int64_t q_blocks = (p.q_len + kQueryBlock - 1) / kQueryBlock;
  run_tasks(p.batch * p.heads * q_blocks, forward_scratch_floats(p.head_dim),
            [&](float* scratch, int64_t i) { task(p, scratch, i); });
}

// The anchor and oracle: plain loops, the [Nq × Nk] scores of one (b, h) materialized, rows
// split over threads. Kept simple on purpose; the compiler vectorizes the inner loops.
void attention_naive_forward(const AttentionParams& p) {
  check_params(p, "attention_naive_forward");
  const int64_t D = p.head_dim, Nq = p.q_len, Nk = p.k_len;
  if (p.batch == 0 || p.heads == 0 || Nq == 0) return;
  // Nk is bounded only by B·H·Nk·D <= 2^53 (k and v may repeat rows), so Nq·Nk can overflow.
  MSTAR_CHECK(Nk == 0 || Nq <= std::numeric_limits<int64_t>::max() / 8 / Nk, OutOfMemory,
              "attention_naive_forward: [" << Nq << " x " << Nk << "] scores do not fit in memory");
  Workspace<float> scores(static_cast<size_t>(std::max<int64_t>(1, Nq * Nk)));
  Workspace<float> keys_t(static_cast<size_t>(std::max<int64_t>(1, D * Nk)));  // Kᵀ: scores become axpys
  for (int64_t b = 0; b < p.batch; ++b) {
    const uint8_t* mask = p.key_mask ? p.key_mask + b * Nk : nullptr;
    for (int64_t h = 0; h < p.heads; ++h) {
      pack_transposed(row_ptr(p.k, p.k_strides, b, h, 0), p.k_strides.row, Nk, D, 1.0f, keys_t.data(), Nk);
      parallel_for(Nq, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const float* q = row_ptr(p.q, p.q_strides, b, h, i);
          float* out = row_ptr(p.out, p.out_strides, b, h, i);
          float* s = scores.data() + i * Nk;
          std::fill(s, s + Nk, 0.0f);
          for (int64_t d = 0; d < D; ++d) {
            const float qd = q[d];
            const float* kt = keys_t.data() + d * Nk;
            for (int64_t j = 0; j < Nk; ++j) s[j] += qd * kt[j];
          }
          float mx = kNegInf;
          for (int64_t j = 0; j < Nk; ++j) {
            s[j] = (mask && !mask[j]) ? kNegInf : s[j] * p.scale;
            mx = std::max(mx, s[j]);
          }
          std::fill(out, out + D, 0.0f);
          if (mx == kNegInf) continue;  // no key attended: zeros
          float sum = 0.0f;
          for (int64_t j = 0; j < Nk; ++j) {
            s[j] = std::exp(s[j] - mx);
            sum += s[j];
          }
          for (int64_t j = 0; j < Nk; ++j) {
            const float pj = s[j] / sum;
            const float* v = row_ptr(p.v, p.v_strides, b, h, j);
            for (int64_t d = 0; d < D; ++d) out[d] += pj * v[d];
          }
        }
      });
    }
  }
}

// ---------------------------------------------------------------------------------------
// Backward

namespace {

int64_t backward_scratch_floats(int64_t D) {
  const int64_t dp = round_up(D, kMaxLanes);
  const int64_t kv_pass = 2 * dp * kKeyBlock            // Kᵀ, Vᵀ
                          + 2 * kKeyBlock * dp          // dK, dV accumulators
                          + 2 * kQueryBlock * dp        // Q, dO panels (only when D is not whole vectors)
                          + 2 * kQueryBlock * kKeyBlock // P, dP → dS
                          + kKeyBlock;                  // key bias
  const int64_t q_pass = 2 * dp * kQueryBlock           // Qᵀ, dOᵀ
                         + kKeyBlock * dp               // K panel (only when D is not whole vectors)
                         + kQueryBlock * dp             // dQ accumulator
                         + 2 * kKeyBlock * kQueryBlock  // Pᵀ, dPᵀ → dSᵀ
                         + 2 * kQueryBlock + kKeyBlock; // lse, D_i, key bias
  return std::max(kv_pass, q_pass) + 12 * kMaxLanes;    // + alignment slack
}

// lse of a query for the recomputation: −∞ (no key attended) becomes +∞, so that s − lse = −∞
// and P = 0 for the whole row without a special case.
float recompute_lse(float lse) { return lse == kNegInf ? std::numeric_limits<float>::infinity() : lse; }

// Pass 1: one task = one (b, h, key block), looping over every query block.
// S = Q·Kᵀ and dP = dO·Vᵀ against Kᵀ, Vᵀ packed once; Q and dO are read in place.
// dV = Σ Pᵀ·dO, dK = scale · Σ dSᵀ·Q with dS = P ∘ (dP − D_i).
template <class V>
MSTAR_ALWAYS_INLINE void backward_kv_task(const AttentionParams& p, const float* di_all, float* scratch,
                                          int64_t task) {
  constexpr int64_t W = lanes<V>();
  const GemmFn gemm = Isa<V>::gemm;
  const int64_t D = p.head_dim, Nq = p.q_len, Nk = p.k_len;
  const int64_t dp = round_up(D, W);
  const int64_t k_blocks = (Nk + kKeyBlock - 1) / kKeyBlock;
  const int64_t bh = task / k_blocks, b = bh / p.heads, h = bh % p.heads;
  const int64_t k0 = (task % k_blocks) * kKeyBlock;
  const int64_t cols = std::min(kKeyBlock, Nk - k0), colsp = round_up(cols, W);

  PanelCarver carve{scratch};
  float* kt = carve.take(dp * kKeyBlock);
  float* vt = carve.take(dp * kKeyBlock);
  float* dk = carve.take(kKeyBlock * dp);
  float* dv = carve.take(kKeyBlock * dp);
  float* qp = carve.take(kQueryBlock * dp);
  float* gp = carve.take(kQueryBlock * dp);
  float* prob = carve.take(kQueryBlock * kKeyBlock);
  float* ds = carve.take(kQueryBlock * kKeyBlock);
  float* bias = carve.take(kKeyBlock);

  std::fill(dk, dk + cols * dp, 0.0f);
  std::fill(dv, dv + cols * dp, 0.0f);
  const uint8_t* mask = p.key_mask ? p.key_mask + b * Nk + k0 : nullptr;
  if (build_key_bias(mask, cols, colsp, bias) > 0) {  // else every key is masked: zero gradients
    pack_transposed(row_ptr(p.k, p.k_strides, b, h, k0), p.k_strides.row, cols, D, 1.0f, kt, colsp);
    pack_transposed(row_ptr(p.v, p.v_strides, b, h, k0), p.v_strides.row, cols, D, 1.0f, vt, colsp);
    const float* lse_bh = p.lse + bh * Nq;
    const float* di_bh = di_all + bh * Nq;
    const V scale = splat<V>(p.scale), log2e = splat<V>(kLog2e);
    for (int64_t q0 = 0; q0 < Nq; q0 += kQueryBlock) {
      const int64_t rows = std::min(kQueryBlock, Nq - q0);
      const float* q_rows = row_ptr(p.q, p.q_strides, b, h, q0);
      const float* g_rows = row_ptr(p.grad_out, p.out_strides, b, h, q0);
      gemm({rows, colsp, D, q_rows, p.q_strides.row, 1, kt, colsp, prob, colsp, false});    // S / scale
      gemm({rows, colsp, D, g_rows, p.out_strides.row, 1, vt, colsp, ds, colsp, false});  // dP
      for (int64_t r = 0; r < rows; ++r) {
        const V lse = splat<V>(recompute_lse(lse_bh[q0 + r]));
        const V di = splat<V>(di_bh[q0 + r]);
        float* pr = prob + r * colsp;
        float* dr = ds + r * colsp;
        for (int64_t j = 0; j < colsp; j += W) {
          const V pv = exp2v((load<V>(pr + j) * scale - lse) * log2e + load<V>(bias + j));
          store<V>(pr + j, pv);
          store<V>(dr + j, pv * (load<V>(dr + j) - di));
        }
      }
      int64_t ldq = 0, ldg = 0;
      const float* q_op = row_operand(q_rows, p.q_strides.row, rows, D, dp, qp, &ldq);
      const float* g_op = row_operand(g_rows, p.out_strides.row, rows, D, dp, gp, &ldg);
      gemm({cols, dp, rows, prob, 1, colsp, g_op, ldg, dv, dp, true});  // dV += Pᵀ·dO
      gemm({cols, dp, rows, ds, 1, colsp, q_op, ldq, dk, dp, true});    // dK += dSᵀ·Q
    }
  }
  for (int64_t j = 0; j < cols; ++j) {
    float* gk = row_ptr(p.grad_k, p.k_strides, b, h, k0 + j);
    float* gv = row_ptr(p.grad_v, p.v_strides, b, h, k0 + j);
    for (int64_t d = 0; d < D; ++d) {
      gk[d] = p.scale * dk[j * dp + d];
      gv[d] = dv[j * dp + d];
    }
  }
}

// Pass 2: one task = one (b, h, query block), looping over every key block. Transposed
// like the forward: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ against Qᵀ, dOᵀ packed once, K and V read in
// place, lse and D_i vectors across queries. dQ = scale · Σ dS·K.
template <class V>
MSTAR_ALWAYS_INLINE void backward_q_task(const AttentionParams& p, const float* di_all, float* scratch,
                                         int64_t task) {
  constexpr int64_t W = lanes<V>();
  const GemmFn gemm = Isa<V>::gemm;
  const int64_t D = p.head_dim, Nq = p.q_len, Nk = p.k_len;
  const int64_t dp = round_up(D, W);
  const int64_t q_blocks = (Nq + kQueryBlock - 1) / kQueryBlock;
  const int64_t bh = task / q_blocks, b = bh / p.heads, h = bh % p.heads;
  const int64_t q0 = (task % q_blocks) * kQueryBlock;
  const int64_t rows = std::min(kQueryBlock, Nq - q0), rowsp = round_up(rows, W);

  PanelCarver carve{scratch};
  float* qt = carve.take(dp * kQueryBlock);
  float* gt = carve.take(dp * kQueryBlock);
  float* kp = carve.take(kKeyBlock * dp);
  float* dq = carve.take(kQueryBlock * dp);
  float* st = carve.take(kKeyBlock * kQueryBlock);
  float* dst = carve.take(kKeyBlock * kQueryBlock);
  float* lse = carve.take(kQueryBlock);
  float* di = carve.take(kQueryBlock);
  float* bias = carve.take(kKeyBlock);

  pack_transposed(row_ptr(p.q, p.q_strides, b, h, q0), p.q_strides.row, rows, D, 1.0f, qt, rowsp);
  pack_transposed(row_ptr(p.grad_out, p.out_strides, b, h, q0), p.out_strides.row, rows, D, 1.0f, gt, rowsp);
  for (int64_t i = 0; i < rowsp; ++i) {  // padding queries: lse = +∞ gives P = 0
    lse[i] = i < rows ? recompute_lse(p.lse[bh * Nq + q0 + i]) : std::numeric_limits<float>::infinity();
    di[i] = i < rows ? di_all[bh * Nq + q0 + i] : 0.0f;
  }
  std::fill(dq, dq + rows * dp, 0.0f);
  const uint8_t* mask = p.key_mask ? p.key_mask + b * Nk : nullptr;
  const V scale = splat<V>(p.scale), log2e = splat<V>(kLog2e);
  for (int64_t k0 = 0; k0 < Nk; k0 += kKeyBlock) {
    const int64_t cols = std::min(kKeyBlock, Nk - k0);
    if (build_key_bias(mask ? mask + k0 : nullptr, cols, cols, bias) == 0) continue;
    const float* k_rows = row_ptr(p.k, p.k_strides, b, h, k0);
    gemm({cols, rowsp, D, k_rows, p.k_strides.row, 1, qt, rowsp, st, rowsp, false});  // Sᵀ / scale
    gemm({cols, rowsp, D, row_ptr(p.v, p.v_strides, b, h, k0), p.v_strides.row, 1, gt, rowsp, dst, rowsp,
          false});  // dPᵀ
    for (int64_t j = 0; j < cols; ++j) {
      float* sr = st + j * rowsp;
      float* dr = dst + j * rowsp;
      if (bias[j] != 0.0f) {  // masked key: dS = 0
        std::fill(dr, dr + rowsp, 0.0f);
        continue;
      }
      for (int64_t i = 0; i < rowsp; i += W) {
        const V pv = exp2v((load<V>(sr + i) * scale - load<V>(lse + i)) * log2e);
        store<V>(dr + i, pv * (load<V>(dr + i) - load<V>(di + i)));
      }
    }
    int64_t ldk = 0;
    const float* k_op = row_operand(k_rows, p.k_strides.row, cols, D, dp, kp, &ldk);
    gemm({rows, dp, cols, dst, 1, rowsp, k_op, ldk, dq, dp, true});  // dQ += dS·K, dS read as (dSᵀ)ᵀ
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* gq = row_ptr(p.grad_q, p.q_strides, b, h, q0 + r);
    for (int64_t d = 0; d < D; ++d) gq[d] = p.scale * dq[r * dp + d];
  }
}

using BackwardTaskFn = void (*)(const AttentionParams&, const float*, float*, int64_t);
#ifdef MSTAR_ATTENTION_X86
MSTAR_TARGET_AVX512 void backward_kv_task_avx512(const AttentionParams& p, const float* di, float* s, int64_t t) {
  backward_kv_task<Vec16>(p, di, s, t);
}
MSTAR_TARGET_AVX2 void backward_kv_task_avx2(const AttentionParams& p, const float* di, float* s, int64_t t) {
  backward_kv_task<Vec8>(p, di, s, t);
}
MSTAR_TARGET_AVX512 void backward_q_task_avx512(const AttentionParams& p, const float* di, float* s, int64_t t) {
  backward_q_task<Vec16>(p, di, s, t);
}
MSTAR_TARGET_AVX2 void backward_q_task_avx2(const AttentionParams& p, const float* di, float* s, int64_t t) {
  backward_q_task<Vec8>(p, di, s, t);
}
#endif
void backward_kv_task_portable(const AttentionParams& p, const float* di, float* s, int64_t t) {
  backward_kv_task<Vec4>(p, di, s, t);
}
void backward_q_task_portable(const AttentionParams& p, const float* di, float* s, int64_t t) {
  backward_q_task<Vec4>(p, di, s, t);
}

}  // namespace

void attention_backward(const AttentionParams& p) {
  check_params(p, "attention_backward");
  BackwardTaskFn kv_task = backward_kv_task_portable;
  BackwardTaskFn q_task = backward_q_task_portable;
#ifdef MSTAR_ATTENTION_X86
  if (simd_level() == SimdLevel::Avx512) {
    kv_task = backward_kv_task_avx512;
    q_task = backward_q_task_avx512;
  } else if (simd_level() == SimdLevel::Avx2) {
    kv_task = backward_kv_task_avx2;
    q_task = backward_q_task_avx2;
  }
#endif
  const int64_t bh = p.batch * p.heads, D = p.head_dim;
  // D_i = rowsum(dO ∘ O) for every query, once: O(B·H·Nq) floats.
  Workspace<float> di(static_cast<size_t>(std::max<int64_t>(1, bh * p.q_len)));
  parallel_for(bh * p.q_len, 256, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / (p.heads * p.q_len), h = row / p.q_len % p.heads, i = row % p.q_len;
      const float* go = row_ptr(p.grad_out, p.out_strides, b, h, i);
      const float* out = row_ptr(p.out, p.out_strides, b, h, i);
      double acc = 0.0;
      for (int64_t d = 0; d < D; ++d) acc += static_cast<double>(go[d]) * out[d];
      di[static_cast<size_t>(row)] = static_cast<float>(acc);
    }
  });
  const int64_t scratch = backward_scratch_floats(D);
  const int64_t k_blocks = (p.k_len + kKeyBlock - 1) / kKeyBlock;
  const int64_t q_blocks = (p.q_len + kQueryBlock - 1) / kQueryBlock;
  run_tasks(bh * k_blocks, scratch, [&](float* s, int64_t i) { kv_task(p, di.data(), s, i); });
  run_tasks(bh * q_blocks, scratch, [&](float* s, int64_t i) { q_task(p, di.data(), s, i); });
}

}  // namespace mstar
