// GEMM internals shared by the driver (gemm.cc) and the SIMD kernel files (gemm_avx2.cc,
// gemm_avx512.cc): the packed-panel layout and the microkernel contract. The microkernel itself is
// one template in gemm_microkernel.h, instantiated by each kernel file for its vector width.
//
// Packed layouts (BLIS): an A micro-panel holds `mr` rows of op(A) for `kc` steps of k as
// ap[k·mr + r]; a B micro-panel holds `nr` columns of op(B) as bp[k·nr + j]. Edge panels are
// zero-padded to mr / nr, so the microkernel's inner loop has no edge branches; only the
// store of a partial tile is special-cased. Panels are kPanelSlack floats longer than kc·mr so
// that 8-wide packing stores may run past a panel's last k-slice.
#pragma once
#include <cstdint>

namespace mstar::gemm_detail {

constexpr int kMaxMr = 16;
constexpr int64_t kPanelSlack = 16;

// One microkernel call: C tile [rows × cols] (rows fixed by the kernel, cols ≤ nr)
//   C = alpha·(Ap·Bp) + (load_c ? beta·C : 0) + bias, then act.
// The driver passes beta=1 / no bias / no act for all but the first / last K block.
struct MicroArgs {
  int64_t kc;
  const float* a;     // packed A micro-panel [kc][mr]
  const float* b;     // packed B micro-panel [kc][nr]
  float* c;           // C tile origin
  int64_t ldc;
  int cols;           // columns of C to write (≤ nr)
  bool load_c;        // false: C's old contents are ignored (first K block with beta = 0)
  float alpha, beta;
  const float* bias;  // bias + tile column, or nullptr
  int act;            // GemmActivation, applied on the last K block only
};

using MicroKernel = void (*)(const MicroArgs&);
// Packs `width` lanes into ceil(width/pr) consecutive micro-panels, panel_stride floats apart:
// panel q holds dst[q·panel_stride + k·pr + i] = lane q·pr + i of slice k (0 past `width`), k < kc.
//   transposed: lane i of slice k is src[i·ld + k] (rows of src are the lanes);
//   direct:     lane i of slice k is src[k·ld + i] (rows of src are the k steps). The direct packer
//               walks src row by row across all panels: panel by panel, a large power-of-two ld
//               would map every row of a 32-float-wide column strip to the same few cache sets.
using PackFn = void (*)(const float* src, int64_t ld, int64_t width, int64_t kc, int pr, float* dst,
                        int64_t panel_stride);
// c[r·ldc + j] = act(c[r·ldc + j]) for r < rows, j < cols.
using ActivationFn = void (*)(float* c, int64_t ldc, int64_t rows, int64_t cols, int act);

struct KernelTable {
  MicroKernel fn[kMaxMr + 1];  // fn[rows] for rows = 1..mr
};

struct KernelSet {
  const char* name;
  int mr, nr;
  int64_t kc, mc, nc;  // K block (A micro-panel in L1), A block rows (L3), B chunk columns per thread (L2)
  KernelTable kernels;
  PackFn pack_transposed, pack_direct;
  ActivationFn activation;
};

const KernelSet& kernels_portable();
const KernelSet& kernels_avx2();
const KernelSet& kernels_avx512();
// The AVX2 packers, which the AVX-512 set reuses (every AVX-512 CPU has AVX2).
void pack_transposed_avx2(const float* src, int64_t ld, int64_t width, int64_t kc, int pr, float* dst,
                          int64_t panel_stride);
void pack_direct_avx2(const float* src, int64_t ld, int64_t width, int64_t kc, int pr, float* dst,
                      int64_t panel_stride);

}  // namespace mstar::gemm_detail
