/**
 * A small pass over every CUDA kernel and code path, for compute-sanitizer (memcheck,
 * racecheck): odd sizes that exercise tile edges, both GEMM load paths (16-byte vectors
 * and scalar), every transpose, both row-kernel shapes (warp per row, block per row), the
 * layer-norm parameter-gradient reduction and the slide-level aggregation ops. It checks
 * nothing itself; the sanitizer does.
 *
 *   MSTAR_CUDA_CACHING=0 compute-sanitizer --tool memcheck --error-exitcode 99 node --import tsx bench/gpu/smoke.ts
 *
 * MSTAR_CUDA_CACHING=0 gives every buffer its own exact-size cudaMalloc; with the caching
 * allocator, an overrun inside a rounded-up bucket would go unseen.
 */
import { CudaDevice, DeviceBuffer, GemmMath, loadCudaBuild } from '../../lib/cuda.js';
import { Activation, BinaryOp, DtypeCode, UnaryOp } from '../../lib/native.js';

const binding = loadCudaBuild();
if (binding.cudaDeviceCount() === 0) {
  console.error('smoke: no GPU answered');
  process.exit(2);
}
const device = new CudaDevice(binding);
const live: DeviceBuffer[] = [];
/** Buffers of exactly the size the op needs (run with MSTAR_CUDA_CACHING=0, so every buffer is its own cudaMalloc). */
const buf = (elems: number, dtype: DtypeCode): DeviceBuffer => {
  const b = device.upload(dtype === DtypeCode.BFloat16 ? new Uint16Array(elems).fill(0x3f80) : new Float32Array(elems).fill(1));
  live.push(b);
  return b;
};

for (const dtype of [DtypeCode.Float32, DtypeCode.BFloat16] as const) {
  for (const [m, n, k] of [[3, 65, 67], [130, 129, 40], [64, 136, 96]]) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const lda = transA ? m : k, ldb = transB ? k : n;
        device.gemm(buf(m * k, dtype), buf(k * n, dtype), buf(m * n, dtype), buf(n, dtype), 1, m, n, k, transA, transB,
          lda, ldb, n, 0, 0, 0, 1, 0.5, Activation.Gelu, dtype, GemmMath.Fp32);
      }
    }
  }
  const n = 769;
  device.unaryForward(UnaryOp.Gelu, buf(n, dtype), buf(n, dtype), n, dtype);
  device.unaryBackward(UnaryOp.Tanh, buf(n, dtype), buf(n, dtype), buf(n, dtype), buf(n, dtype), n, dtype);
  device.binaryForward(BinaryOp.Mul, buf(15, dtype), buf(20, dtype), buf(60, dtype), [3, 4, 5], [5, 0, 1], [0, 5, 1], dtype);
  for (const [rows, cols] of [[65, 769], [3, 1500]]) {
    device.softmaxForward(buf(rows * cols, dtype), buf(rows * cols, dtype), rows, cols, true, dtype);
    device.softmaxBackward(buf(rows * cols, dtype), buf(rows * cols, dtype), buf(rows * cols, dtype), rows, cols, false, dtype);
    const f = DtypeCode.Float32;
    device.layerNormForward(buf(rows * cols, dtype), buf(cols, f), buf(cols, f), buf(rows * cols, dtype), buf(rows, f),
      buf(rows, f), rows, cols, 1e-5, dtype);
    device.layerNormBackward(buf(rows * cols, dtype), buf(cols, f), buf(rows, f), buf(rows, f), buf(rows * cols, dtype),
      buf(rows * cols, dtype), buf(cols, f), buf(cols, f), rows, cols, dtype);
  }
}
for (const d of [64, 128]) {
  // [B=2, H=3, N, D] with Nq = 70, Nk = 131 (partial tiles), a key mask, one attending nothing.
  const [B, H, nq, nk] = [2, 3, 70, 131];
  const mask = device.upload(new Uint8Array(B * nk).map((_, j) => (j < nk ? j % 2 : 0)));
  live.push(mask);
  const bf = DtypeCode.BFloat16;
  device.attentionForward(buf(B * H * nq * d, bf), buf(B * H * nk * d, bf), buf(B * H * nk * d, bf),
    buf(B * H * nq * d, bf), buf(B * H * nq, DtypeCode.Float32), mask, [B, H, nq, nk, d], [H * nq * d, nq * d, d],
    [H * nk * d, nk * d, d], [H * nk * d, nk * d, d], [H * nq * d, nq * d, d], 0.125, bf);
}
device.gemm(buf(4 * 64, DtypeCode.Float32), buf(64 * 8, DtypeCode.Float32), buf(4 * 8, DtypeCode.Float32), null, 1, 4, 8,
  64, false, false, 64, 8, 8, 0, 0, 0, 1, 0, Activation.None, DtypeCode.Float32, GemmMath.Tf32);
{
  // Slide-level aggregation (float32): ragged bags with an empty and a fully masked bag, a bag
  // above 1024 rows; a depthwise conv row chunk with a strided view; Nyström groups over a row range.
  const f = DtypeCode.Float32;
  const offsets = Int32Array.of(0, 5, 5, 1105, 1108);
  const [B, T, K, L, hs] = [4, 1108, 2, 65, 67];
  const mask = device.upload(new Uint8Array(T).map((_, t) => (t >= 1105 || t % 4 === 3 ? 0 : 1)));
  live.push(mask);
  const h = buf((T - 1) * hs + L, f), attn = buf(T * K, f), pooled = buf(B * K * L, f);
  device.bagPoolForward(buf(T * K, f), h, offsets, mask, attn, pooled, B, T, K, L, hs);
  device.bagPoolBackward(h, offsets, mask, attn, pooled, buf(B * K * L, f), buf(T * L, f), buf(T * K, f), B, T, K, L, hs);
  const dims = [2, 9, 9, 37, 7, 7], stride = 40, pixels = (rows: number) => (2 * rows * 9 - 1) * stride + 37;
  // Output rows [2, 6): the inputs hold rows [0, 9), the outputs rows [2, 6).
  device.dwconv2dForward(buf(pixels(9), f), 0, 9, stride, buf(37 * 49, f), buf(37, f), buf(pixels(4), f), 2, 4, stride,
    dims, 2, 6);
  device.dwconv2dBackwardInput(buf(pixels(9), f), 0, 9, stride, buf(37 * 49, f), buf(pixels(4), f), 2, 4, stride, dims, 2, 6);
  device.dwconv2dBackwardWeight(buf(pixels(9), f), 0, 9, stride, buf(pixels(4), f), 2, 4, stride, buf(37 * 49, f),
    buf(37, f), dims, 2, 6);
  // Rows [5, 83) of a fused qkv (stride 97), groups of 7.
  device.groupRowSum(buf(77 * 97 + 33, f), 97, 5, 83, 33, 7, buf(12 * 33, f));
  device.groupRowBroadcast(buf(12 * 33, f), 5, 83, 33, 7, 0.5, buf(77 * 97 + 33, f), 97, true);
}
device.synchronize();
for (const b of live) b.dispose();
console.log(`smoke: ok (${live.length} buffers), memory ${JSON.stringify(device.memoryStats())}`);
