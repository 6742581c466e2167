// fp32 GEMM: checks, the blocked and threaded driver, the portable kernel and the dispatch to the
// AVX2 / AVX-512 kernels. What it computes: gemm.h. Kernel contract and layouts: gemm_kernel.h.
//
// Loop nest (per batch item), BLIS order with the roles of A and B chosen for a row-major
// broadcast-A / vector-B microkernel:
//   ic: A blocks of mc rows          packed A block [mc × kc], shared by all threads (L3)
//    pc: K blocks of kc               (the A micro-panel, mr × kc, is what stays in L1)
//     jc: B chunks of nc columns      packed privately by the thread that computes them (its L2)
//      ir: A micro-panels of mr rows
//       jr: B micro-panels of nr columns → microkernel (B streams from L2, A from L1)
// One (ic, pc) pair is a phase: the threads pack the shared A block together, meet at a barrier,
// then take (B chunk × A panel range) units from a shared counter; A is double-buffered, so that
// is the only barrier of a phase. Every C element gets the same summation order for any thread
// count, so results do not depend on it.
//
// Blocking for AVX-512 on Zen 4/5 (48 KB L1d, 1 MB L2 per core): kc = 384 keeps the 14×384 A
// micro-panel (21 KB) in L1 next to the streamed B; nc = 256 keeps a B chunk (384 KB) plus a
// ViT-sized A block (197×384, 300 KB) in L2; mc = 2016 bounds the two A buffers at 6 MB (B is
// then repacked once per 2016 rows, ≥ 4000 flops per packed element).
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <sstream>
#include <thread>
#include <utility>

#include "../core/cpu_features.h"
#include "../core/error.h"
#include "../core/memory.h"
#include "../core/thread_pool.h"
#include "gemm_kernel.h"
#include "gemm_microkernel.h"

namespace mstar {
namespace gemm_detail {
namespace {

// ---- portable kernel: the same microkernel template on plain arrays, which the compiler maps
// to whatever baseline SIMD the target has (SSE2 on x86-64). 6×8 keeps 12 xmm accumulators.
struct PortableVec {
  static constexpr int W = 8;
  struct reg {
    float v[W];
  };
  template <class F>
  static reg map(F f) {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = f(i);
    return r;
  }
  static reg zero() { return map([](int) { return 0.0f; }); }
  static reg set1(float x) { return map([x](int) { return x; }); }
  static reg load(const float* p) { return map([p](int i) { return p[i]; }); }
  static void store(float* p, reg v) { std::memcpy(p, v.v, sizeof v.v); }
  static reg bcast(const float* p) { return set1(*p); }
  static reg fmadd(reg a, reg b, reg c) { return map([&](int i) { return a.v[i] * b.v[i] + c.v[i]; }); }
  static reg add(reg a, reg b) { return map([&](int i) { return a.v[i] + b.v[i]; }); }
  static reg sub(reg a, reg b) { return map([&](int i) { return a.v[i] - b.v[i]; }); }
  static reg mul(reg a, reg b) { return map([&](int i) { return a.v[i] * b.v[i]; }); }
  static reg div(reg a, reg b) { return map([&](int i) { return a.v[i] / b.v[i]; }); }
  // As x86 max/min: the second operand is returned when either is NaN.
  static reg max(reg a, reg b) { return map([&](int i) { return a.v[i] > b.v[i] ? a.v[i] : b.v[i]; }); }
  static reg min(reg a, reg b) { return map([&](int i) { return a.v[i] < b.v[i] ? a.v[i] : b.v[i]; }); }
  static reg abs(reg x) { return map([&](int i) { return std::fabs(x.v[i]); }); }
  // Adding 1.5·2^23 rounds to an integer (|x| ≤ 2^22 here): no libm call, no SSE4.1 needed.
  static reg round(reg x) { return map([&](int i) { return (x.v[i] + 12582912.0f) - 12582912.0f; }); }
  static reg pow2(reg n) {
    return map([&](int i) {
      int32_t bits = n.v[i] == n.v[i] ? (static_cast<int32_t>(n.v[i]) + 127) << 23 : 0x7fc00000;
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    });
  }
  static reg select_neg(reg x, reg a, reg b) { return map([&](int i) { return x.v[i] < 0.0f ? a.v[i] : b.v[i]; }); }
  static void prefetch(const float* p) { __builtin_prefetch(p); }
};

void pack_transposed_portable(const float* src, int64_t ld, int64_t width, int64_t kc, int pr, float* dst,
                              int64_t panel_stride) {
  for (int64_t q = 0; q * pr < width; ++q) {
    const int64_t lanes = std::min<int64_t>(pr, width - q * pr);
    const float* s = src + q * pr * ld;
    float* d = dst + q * panel_stride;
    for (int64_t k = 0; k < kc; ++k) {
      for (int i = 0; i < pr; ++i) d[k * pr + i] = i < lanes ? s[i * ld + k] : 0.0f;
    }
  }
}

void pack_direct_portable(const float* src, int64_t ld, int64_t width, int64_t kc, int pr, float* dst,
                          int64_t panel_stride) {
  for (int64_t k = 0; k < kc; ++k) {
    for (int64_t q = 0; q * pr < width; ++q) {
      const int64_t lanes = std::min<int64_t>(pr, width - q * pr);
      float* d = dst + q * panel_stride + k * pr;
      std::memcpy(d, src + k * ld + q * pr, sizeof(float) * lanes);
      std::fill(d + lanes, d + pr, 0.0f);
    }
  }
}

constexpr KernelSet kPortableKernels = {
    "portable",
    /*mr=*/6,
    /*nr=*/8,
    /*kc=*/256,
    /*mc=*/1020,
    /*nc=*/256,
    make_kernel_table<PortableVec, 6, 1>(),
    &pack_transposed_portable,
    &pack_direct_portable,
    &apply_activation<PortableVec>,
};

}  // namespace

const KernelSet& kernels_portable() { return kPortableKernels; }

}  // namespace gemm_detail

namespace {

using gemm_detail::KernelSet;
using gemm_detail::MicroArgs;

const KernelSet& select_kernels() {
  switch (simd_level()) {
    case SimdLevel::Avx512: return gemm_detail::kernels_avx512();
    case SimdLevel::Avx2: return gemm_detail::kernels_avx2();
    default: return gemm_detail::kernels_portable();
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// a·b + c with overflow detection (sizes come from JS, so they can be anything up to 2^53).
int64_t checked_madd(int64_t a, int64_t b, int64_t c) {
  int64_t product = 0, sum = 0;
  if (__builtin_mul_overflow(a, b, &product) || __builtin_add_overflow(product, c, &sum)) {
    fail(ErrorCode::Shape, "gemm: operand extent overflows int64");
  }
  return sum;
}

// Elements spanned by `batch` items of a [rows × cols] matrix with leading dim ld, `stride` apart.
int64_t matrix_extent(int64_t batch, int64_t stride, int64_t rows, int64_t cols, int64_t ld) {
  if (batch == 0 || rows == 0 || cols == 0) return 0;
  return checked_madd(batch - 1, stride, checked_madd(rows - 1, ld, cols));
}

// A barrier for the threads of one parallel_run: spins briefly (the other thread is usually
// microseconds away), then yields so an oversubscribed machine still makes progress.
class SpinBarrier {
 public:
  explicit SpinBarrier(int threads) : threads_(threads) {}
  void wait() {
    if (threads_ <= 1) return;
    const uint32_t generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == threads_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < 2000) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  const int threads_;
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> generation_{0};
};

// Block sizes and packed-buffer sizes for one problem; the same for every thread count.
struct Blocking {
  int64_t kc, mc, nc;
  int64_t a_panel, b_panel;  // floats per packed micro-panel (kc·mr or kc·nr, plus slack, 64-byte multiple)
  int64_t a_floats, b_floats;  // one packed A block; one thread's B chunk
};

Blocking make_blocking(const KernelSet& ks, int64_t m, int64_t n, int64_t k) {
  Blocking bl;
  // Equal K blocks (no short tail block that pays a full C pass for little work).
  bl.kc = ceil_div(k, ceil_div(k, ks.kc));
  bl.mc = round_up(ceil_div(m, ceil_div(m, ks.mc)), ks.mr);
  bl.nc = std::min(ks.nc, round_up(n, ks.nr));
  bl.a_panel = round_up(bl.kc * ks.mr + gemm_detail::kPanelSlack, 16);
  bl.b_panel = round_up(bl.kc * ks.nr + gemm_detail::kPanelSlack, 16);
  bl.a_floats = (bl.mc / ks.mr) * bl.a_panel;
  bl.b_floats = ceil_div(bl.nc, ks.nr) * bl.b_panel;
  return bl;
}

// Splits [0, count) into `parts` near-equal contiguous ranges; returns range `index`.
std::pair<int64_t, int64_t> split_range(int64_t count, int parts, int index) {
  return {count * index / parts, count * (index + 1) / parts};
}

struct Item {
  const float* a;
  const float* b;
  float* c;
};

// What the threads working on one GEMM share: the barrier and, per phase (one A block × one K
// block), a work counter. Phases alternate between two counters: thread 0 resets the other one
// right after the phase's barrier, when every thread has left the previous phase.
struct Team {
  explicit Team(int threads) : barrier(threads) {}
  SpinBarrier barrier;
  std::atomic<int64_t> next_work[2] = {0, 0};
};

// One batch item on the `nt` threads of `team` (nullptr: thread 0 alone, one A buffer; else
// a_packs holds two). Per phase the threads pack the shared A block (a static split), meet at a
// barrier, then claim work units dynamically (so a thread slowed by another process on its core
// sheds work to the others). A unit is one B chunk (nc columns, packed into the thread's own
// buffer) times a range of A micro-panels; M is split only when N alone gives too few units.
// The barrier also orders the K blocks of every C tile: phase p + 1 starts only when all of
// phase p is done.
void gemm_item(const KernelSet& ks, const GemmParams& p, const Blocking& bl, const Item& item, float* a_packs,
               float* b_pack, int t, int nt, Team* team, int64_t& phase) {
  const int64_t m = p.m, n = p.n, k = p.k;
  const int mr = ks.mr, nr = ks.nr;
  const int64_t n_chunks = ceil_div(n, bl.nc);

  for (int64_t ic = 0; ic < m; ic += bl.mc) {
    const int64_t mb = std::min(bl.mc, m - ic);
    const int64_t m_panels = ceil_div(mb, mr);
    // Splitting M repacks the same B chunk on several threads: only worth it with many A panels.
    const int64_t m_parts =
        n_chunks >= 4 * nt ? 1 : std::max<int64_t>(1, std::min(ceil_div(4 * nt, n_chunks), m_panels / 8));
    const int64_t units = n_chunks * m_parts;
    for (int64_t pc = 0; pc < k; pc += bl.kc, ++phase) {
      const int64_t kb = std::min(bl.kc, k - pc);
      const bool first = pc == 0, last = pc + kb == k;
      // A is double-buffered by phase parity: a thread that finishes phase p early packs its share
      // of phase p + 1 into the other buffer, which nobody reads any more (everyone passed the
      // barrier of phase p, so phase p − 1 is done), and one barrier per phase is enough.
      float* a_pack = team ? a_packs + (phase & 1) * bl.a_floats : a_packs;

      // Pack this thread's share of the A block.
      const auto [pack_lo, pack_hi] = split_range(m_panels, nt, t);
      if (pack_lo < pack_hi) {
        const int64_t i0 = ic + pack_lo * mr;
        const int64_t width = std::min(m, ic + pack_hi * mr) - i0;
        float* dst = a_pack + pack_lo * bl.a_panel;
        if (p.trans_a) ks.pack_direct(item.a + pc * p.lda + i0, p.lda, width, kb, mr, dst, bl.a_panel);
        else ks.pack_transposed(item.a + i0 * p.lda + pc, p.lda, width, kb, mr, dst, bl.a_panel);
      }
      std::atomic<int64_t> local_next{0};
      std::atomic<int64_t>* next = &local_next;
      if (team) {
        team->barrier.wait();
        if (t == 0) team->next_work[(phase + 1) & 1].store(0, std::memory_order_relaxed);
        next = &team->next_work[phase & 1];
      }

      MicroArgs args;
      args.kc = kb;
      args.ldc = p.ldc;
      args.load_c = !first || p.beta != 0.0f;
      args.alpha = p.alpha;
      args.beta = first ? p.beta : 1.0f;
      args.act = last ? static_cast<int>(p.activation) : 0;
      int64_t packed_chunk = -1;
      for (int64_t unit = next->fetch_add(1, std::memory_order_relaxed); unit < units;
           unit = next->fetch_add(1, std::memory_order_relaxed)) {
        const int64_t chunk = unit / m_parts;
        const auto [ip_lo, ip_hi] = split_range(m_panels, static_cast<int>(m_parts), static_cast<int>(unit % m_parts));
        const int64_t jc = chunk * bl.nc;
        const int64_t nb = std::min(bl.nc, n - jc);
        const int64_t n_panels = ceil_div(nb, nr);
        if (chunk != packed_chunk) {
          if (p.trans_b) ks.pack_transposed(item.b + jc * p.ldb + pc, p.ldb, nb, kb, nr, b_pack, bl.b_panel);
          else ks.pack_direct(item.b + pc * p.ldb + jc, p.ldb, nb, kb, nr, b_pack, bl.b_panel);
          packed_chunk = chunk;
        }
        for (int64_t ip = ip_lo; ip < ip_hi; ++ip) {
          const int64_t i0 = ic + ip * mr;
          const int rows = static_cast<int>(std::min<int64_t>(mr, m - i0));
          const gemm_detail::MicroKernel kernel = ks.kernels.fn[rows];
          args.a = a_pack + ip * bl.a_panel;
          for (int64_t jp = 0; jp < n_panels; ++jp) {
            const int64_t j0 = jc + jp * nr;
            args.b = b_pack + jp * bl.b_panel;
            args.c = item.c + i0 * p.ldc + j0;
            args.cols = static_cast<int>(std::min<int64_t>(nr, n - j0));
            args.bias = last && p.bias ? p.bias + j0 : nullptr;
            kernel(args);
          }
        }
      }
    }
  }
}

Item item_at(const GemmParams& p, int64_t index) {
  return {p.a + index * p.stride_a, p.b + index * p.stride_b, p.c + index * p.stride_c};
}

// k = 0 or alpha = 0: C = act(beta·C + bias); A and B are not read.
void gemm_without_product(const KernelSet& ks, const GemmParams& p) {
  parallel_for(p.batch * p.m, std::max<int64_t>(1, 16384 / std::max<int64_t>(p.n, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      float* c = p.c + (row / p.m) * p.stride_c + (row % p.m) * p.ldc;
      for (int64_t j = 0; j < p.n; ++j) {
        float v = p.beta == 0.0f ? 0.0f : p.beta * c[j];
        c[j] = p.bias ? v + p.bias[j] : v;
      }
      ks.activation(c, p.ldc, 1, p.n, static_cast<int>(p.activation));
    }
  });
}

}  // namespace

GemmExtents gemm_extents(const GemmParams& p) {
  GemmExtents e;
  e.a = p.trans_a ? matrix_extent(p.batch, p.stride_a, p.k, p.m, p.lda) : matrix_extent(p.batch, p.stride_a, p.m, p.k, p.lda);
  e.b = p.trans_b ? matrix_extent(p.batch, p.stride_b, p.n, p.k, p.ldb) : matrix_extent(p.batch, p.stride_b, p.k, p.n, p.ldb);
  e.c = matrix_extent(p.batch, p.stride_c, p.m, p.n, p.ldc);
  e.bias = p.bias ? p.n : 0;
  return e;
}

void gemm_check(const GemmParams& p) {
  MSTAR_CHECK(p.batch >= 0 && p.m >= 0 && p.n >= 0 && p.k >= 0, Shape,
              "gemm: sizes must be >= 0, got batch " << p.batch << ", m " << p.m << ", n " << p.n << ", k " << p.k);
  const int64_t a_cols = p.trans_a ? p.m : p.k, b_cols = p.trans_b ? p.k : p.n;
  MSTAR_CHECK(p.lda >= a_cols, Shape, "gemm: lda " << p.lda << " < " << (p.trans_a ? "m " : "k ") << a_cols);
  MSTAR_CHECK(p.ldb >= b_cols, Shape, "gemm: ldb " << p.ldb << " < " << (p.trans_b ? "k " : "n ") << b_cols);
  MSTAR_CHECK(p.ldc >= p.n, Shape, "gemm: ldc " << p.ldc << " < n " << p.n);
  MSTAR_CHECK(p.stride_a >= 0 && p.stride_b >= 0 && p.stride_c >= 0, Shape,
              "gemm: batch strides must be >= 0, got " << p.stride_a << ", " << p.stride_b << ", " << p.stride_c);
  // Batch items of C must not overlap: they are written independently (and possibly in parallel).
  if (p.batch > 1 && p.m > 0 && p.n > 0) {
    const int64_t c_item = matrix_extent(1, 0, p.m, p.n, p.ldc);
    MSTAR_CHECK(p.stride_c >= c_item, Shape,
                "gemm: strideC " << p.stride_c << " < " << c_item << " (C batch items would overlap)");
  }
  const int act = static_cast<int>(p.activation);
  MSTAR_CHECK(act >= 0 && act <= 2, Argument, "gemm: activation must be 0 (none), 1 (relu) or 2 (gelu), got " << act);
  gemm_extents(p);  // throws when an extent overflows
}

void gemm(const GemmParams& p) {
  gemm_check(p);
  const GemmExtents e = gemm_extents(p);
  MSTAR_CHECK(e.a == 0 || p.a, Argument, "gemm: a is null");
  MSTAR_CHECK(e.b == 0 || p.b, Argument, "gemm: b is null");
  MSTAR_CHECK(e.c == 0 || p.c, Argument, "gemm: c is null");
  if (p.batch == 0 || p.m == 0 || p.n == 0) return;
  const KernelSet& ks = select_kernels();
  if (p.k == 0 || p.alpha == 0.0f) {
    gemm_without_product(ks, p);
    return;
  }

  const Blocking bl = make_blocking(ks, p.m, p.n, p.k);
  const double item_flops = 2.0 * p.m * p.n * p.k;
  // Waking the pool costs microseconds: below ~2 MFLOP per call one thread is faster.
  const int pool_threads = num_threads();
  const int wanted = static_cast<int>(std::min<double>(pool_threads, std::max(1.0, item_flops * p.batch / 2e6)));
  // Many small items: one item per thread, each with private buffers, no barriers.
  const bool per_item = p.batch >= wanted && item_flops < 5e7 && wanted > 1;

  if (wanted <= 1) {
    Workspace<float> a_pack(bl.a_floats), b_pack(bl.b_floats);
    int64_t phase = 0;
    for (int64_t i = 0; i < p.batch; ++i) {
      gemm_item(ks, p, bl, item_at(p, i), a_pack.data(), b_pack.data(), 0, 1, nullptr, phase);
    }
    return;
  }
  if (per_item) {
    Workspace<float> a_pack(bl.a_floats * wanted), b_pack(bl.b_floats * wanted);
    parallel_run(
        [&](int t, int nt) {
          int64_t phase = 0;
          for (int64_t i = t; i < p.batch; i += nt) {
            gemm_item(ks, p, bl, item_at(p, i), a_pack.data() + t * bl.a_floats, b_pack.data() + t * bl.b_floats, 0, 1,
                      nullptr, phase);
          }
        },
        wanted);
    return;
  }
  Workspace<float> a_pack(2 * bl.a_floats), b_pack(bl.b_floats * wanted);
  Team team(wanted);
  parallel_run(
      [&](int t, int nt) {
        // nt < wanted only when called from inside another parallel region (then nt = 1).
        Team* shared = nt == wanted ? &team : nullptr;
        int64_t phase = 0;
        for (int64_t i = 0; i < p.batch; ++i) {
          gemm_item(ks, p, bl, item_at(p, i), a_pack.data(), b_pack.data() + t * bl.b_floats, t, nt, shared, phase);
        }
      },
      wanted);
}

}  // namespace mstar
