// The device primitives the kernels build on: inline PTX for Ampere+ tensor cores
// (mma.sync, ldmatrix, cp.async, cvt to tf32), dynamic shared memory, and launch().
// Everything here is what the host emulation (test/native/cuda_emu/emu.h) replaces;
// keep the two in step, names and semantics, when adding a primitive.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime.cuh"

namespace mstar::cuda {

// ---- launch ------------------------------------------------------------------------

// Queues kernel<<<grid, block, smem>>> on the engine stream and checks the launch.
// Kernels needing more than the default 48 KiB of dynamic shared memory are opted
// in here, so no kernel file has to remember it.
template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args... args) {
  cudaStream_t st = stream();
  if (smem > 48 * 1024) {
    MSTAR_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  kernel<<<grid, block, smem, st>>>(static_cast<Params>(args)...);
  check_launch(name);
}

// ---- shared memory -----------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(128) unsigned char mstar_dynamic_smem[];
  return reinterpret_cast<T*>(mstar_dynamic_smem);
}

__device__ __forceinline__ uint32_t smem_address(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// ---- cp.async (sm_80+) -------------------------------------------------------------

// Copies 16 bytes global -> shared without passing through registers. When !valid
// nothing is read (src-size 0) and the 16 destination bytes are zero-filled.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(smem_dst)), "l"(gmem_src),
               "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most kPending of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ---- ldmatrix ------------------------------------------------------------------------

// Four 8x8 matrices of 16-bit elements; lane 8j+i gives the address of row i of
// matrix j (16 contiguous bytes). Register j of lane t receives row t/4, elements
// 2(t%4) and 2(t%4)+1 of matrix j (lower element in the low half).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(smem_row)));
}

// Same addressing; each matrix is transposed on the way: register j of lane t holds
// elements (2(t%4), t/4) and (2(t%4)+1, t/4) of matrix j as stored (row, column).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(smem_row)));
}

// ---- mma.sync ------------------------------------------------------------------------
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 / m16n8k8"), with
// g = lane / 4 and t = lane % 4; "(row, col)" of the 16x8 C/D tile, A (16 x K), B (K x 8):
//   C/D:           d0 (g, 2t)   d1 (g, 2t+1)   d2 (g+8, 2t)   d3 (g+8, 2t+1)
//   bf16 A 16x16:  a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)   [pairs packed low-first]
//   bf16 B 16x8:   b0 (k 2t..2t+1, n g)  b1 (k 2t+8..2t+9, n g)
//   tf32 A 16x8:   a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)
//   tf32 B 8x8:    b0 (k t, n g)  b1 (k t+4, n g)

// d += A(16x16 bf16) * B(16x8 bf16), float accumulation.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += A(16x8 tf32) * B(8x8 tf32), float accumulation. Operands are tf32 bit patterns.
__device__ __forceinline__ void mma_tf32_1688(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// float -> tf32 (round to nearest, ties away from zero), as a float bit pattern with
// the low 13 mantissa bits zero.
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t out;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(out) : "f"(x));
  return out;
}

}  // namespace mstar::cuda
