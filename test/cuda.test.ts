/**
 * CUDA kernels (cuda/*.cu) against the CPU kernels of the same addon (cpp/ops), table-driven:
 * op × dtype (float32, bfloat16) × shape, odd sizes (1, 3, 65, 769) included, plus the device
 * runtime (buffers, views, copies through staging, caching allocator, budget, errors).
 *
 * The CUDA build (build-cuda/Release/mstar.node, `npm run build:cuda`) is loaded explicitly
 * and its CPU functions are the oracle, so both sides see the same inputs. bfloat16 cases
 * round the inputs to bfloat16 first; the CPU then computes in float32 on exactly the values
 * the GPU sees, and the tolerance covers the bfloat16 rounding of the GPU's outputs.
 *
 * Tiers: without the CUDA build everything skips with the reason in the suite name; with the
 * build but no GPU only the "no GPU" checks run (they must not throw on cudaDeviceCount and
 * must give clear errors); with a GPU the parity suite runs. MSTAR_REQUIRE_GPU=1 (set by
 * bench/gpu/run.sh) turns a skip into a failure, so a broken GPU setup cannot pass silently.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { CudaDevice, cudaBuildPath, DeviceBuffer, GemmMath, loadCudaBuild, type CudaNativeBinding } from '../lib/cuda.js';
import { Activation, BinaryOp, DtypeCode, UnaryOp, type NativeBinding } from '../lib/native.js';
import { expectAllClose, expectCode, randn, uniform } from './helpers.js';

type Binding = NativeBinding & CudaNativeBinding;

interface Setup {
  binding: Binding | null;
  /** Why the GPU suite does not run; null when it does. */
  skipGpu: string | null;
}

function setup(): Setup {
  if (!existsSync(cudaBuildPath)) return { binding: null, skipGpu: `no CUDA build at ${cudaBuildPath} (npm run build:cuda)` };
  let binding: Binding;
  try {
    binding = loadCudaBuild();
  } catch (error) {
    return { binding: null, skipGpu: `the CUDA build does not load: ${(error as Error).message}` };
  }
  if (binding.cudaDeviceCount() === 0) return { binding, skipGpu: 'no GPU answered (cudaDeviceCount() = 0)' };
  return { binding, skipGpu: null };
}

const { binding, skipGpu } = setup();
const requireGpu = process.env.MSTAR_REQUIRE_GPU === '1';

describe('CUDA test tier', () => {
  it(`GPU suite ${skipGpu === null ? 'runs' : `skipped: ${skipGpu}`}`, () => {
    if (requireGpu) expect(skipGpu, 'MSTAR_REQUIRE_GPU=1 but the GPU suite would be skipped').toBeNull();
  });
});

describe.skipIf(binding === null || skipGpu === null)('CUDA build without a GPU', () => {
  const b = binding as Binding;
  it('probes without throwing and reports the build', () => {
    expect(b.cudaDeviceCount()).toBe(0);
    const info = b.cudaInfo();
    expect(info.built).toBe(true);
    expect(info.devices).toEqual([]);
    expect(info.deviceLost).toBe(false);
    expect(b.runtimeInfo().cudaBuilt).toBe(true);
  });

  it('device calls fail with ERR_UNSUPPORTED and a way forward, and the process stays usable', () => {
    expectCode(() => b.cudaAlloc(16), 'ERR_UNSUPPORTED');
    try {
      b.cudaAlloc(16);
    } catch (error) {
      expect((error as Error).message).toMatch(/MSTAR_DEVICE=cpu/);
    }
    expectCode(() => b.cudaSynchronize(), 'ERR_UNSUPPORTED');
    expect(b.cudaMemoryStats().liveAllocations).toBe(0);
    // The CPU kernels of the same addon still work.
    const y = new Float32Array(3);
    b.unaryForward(UnaryOp.Neg, Float32Array.of(1, -2, 3), y, 3);
    expect(Array.from(y)).toEqual([-1, 2, -3]);
  });

  it('rejects things that are not device buffers before touching the device', () => {
    expectCode(() => b.cudaFree({} as never), 'ERR_ARGUMENT');
    expectCode(() => b.cudaUpload(new Float32Array(4), new Float32Array(4) as never), 'ERR_ARGUMENT');
  });
});

// ---- bfloat16 on the host --------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits, round to nearest even (NaN stays NaN), as cuda/common.cuh. */
function toBf16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    f32[0] = x[i];
    const u = u32[0];
    if ((u & 0x7fffffff) > 0x7f800000) out[i] = (u >>> 16) | 0x40;
    else out[i] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

function fromBf16(x: Uint16Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    u32[0] = x[i] << 16;
    out[i] = f32[0];
  }
  return out;
}

const roundBf16 = (x: Float32Array): Float32Array => fromBf16(toBf16(x));

// ---- GPU suite ---------------------------------------------------------------------------

const DTYPES = [DtypeCode.Float32, DtypeCode.BFloat16] as const;
const dtypeName = (d: DtypeCode): string => (d === DtypeCode.BFloat16 ? 'bf16' : 'f32');

describe.skipIf(skipGpu !== null)(`CUDA parity${skipGpu === null ? '' : ` (skipped: ${skipGpu})`}`, () => {
  const b = binding as Binding;
  const device = new CudaDevice(b);
  const baseline = skipGpu === null ? device.memoryStats().liveAllocations : 0;
  const live: DeviceBuffer[] = [];

  /** A device copy of `x` in `dtype` (float32 values, rounded for bfloat16). */
  function up(x: Float32Array, dtype: DtypeCode = DtypeCode.Float32): DeviceBuffer {
    const buffer = device.upload(dtype === DtypeCode.BFloat16 ? toBf16(x) : x);
    live.push(buffer);
    return buffer;
  }
  function zeros(n: number, dtype: DtypeCode = DtypeCode.Float32): DeviceBuffer {
    return up(new Float32Array(n), dtype);
  }
  function down(buffer: DeviceBuffer, n: number, dtype: DtypeCode = DtypeCode.Float32): Float32Array {
    return dtype === DtypeCode.BFloat16 ? fromBf16(buffer.toUint16(n)) : buffer.toFloat32(n);
  }
  function up8(x: Uint8Array): DeviceBuffer {
    const buffer = device.upload(x);
    live.push(buffer);
    return buffer;
  }
  /** Inputs as the GPU sees them. */
  const asSeen = (x: Float32Array, dtype: DtypeCode): Float32Array => (dtype === DtypeCode.BFloat16 ? roundBf16(x) : x);
  function release(): void {
    for (const buffer of live.splice(0)) buffer.dispose();
  }

  afterAll(() => {
    release();
  });

  it('reports the device', () => {
    const info = device.info();
    expect(info.built).toBe(true);
    expect(info.devices!.length).toBeGreaterThan(0);
    console.log(`CUDA devices: ${JSON.stringify(info.devices)} runtime ${info.runtimeVersion} driver ${info.driverVersion}`);
    expect(device.supportedOps()).toContain('gemm');
  });

  // ---- GEMM ----
  interface GemmCase {
    m: number;
    n: number;
    k: number;
    transA?: boolean;
    transB?: boolean;
    batch?: number;
    pad?: number;
    broadcastB?: boolean;
    alpha?: number;
    beta?: number;
    bias?: boolean;
    activation?: Activation;
  }
  const SIZES: [number, number, number][] = [
    [1, 1, 1], [3, 65, 769], [769, 3, 65], [65, 769, 3], [65, 65, 769], [769, 129, 65], [128, 128, 128], [256, 192, 320],
  ];
  const gemmCases: GemmCase[] = [];
  for (const [m, n, k] of SIZES) {
    for (const transA of [false, true]) for (const transB of [false, true]) gemmCases.push({ m, n, k, transA, transB });
  }
  gemmCases.push(
    { m: 70, n: 50, k: 64, transB: true, pad: 8 },
    { m: 64, n: 72, k: 33, transA: true, pad: 3 },
    { m: 40, n: 24, k: 32, transB: true, batch: 3, broadcastB: true, alpha: 2, beta: 0.5, bias: true, activation: Activation.Gelu },
    { m: 17, n: 130, k: 48, transA: true, transB: true, batch: 2, beta: 1, bias: true, activation: Activation.Relu },
    { m: 197, n: 3072, k: 1024, transB: true, bias: true, activation: Activation.Gelu }, // ViT-L MLP up
    { m: 0, n: 5, k: 3 },
    { m: 4, n: 5, k: 0, beta: 0.5, bias: true },
  );
  const PRECISIONS = [
    { dtype: DtypeCode.Float32, math: GemmMath.Fp32, label: 'f32(3xtf32)', atol: 2e-4, rtol: 1e-4 },
    { dtype: DtypeCode.Float32, math: GemmMath.Tf32, label: 'tf32', atol: 1e-2, rtol: 5e-3 },
    { dtype: DtypeCode.BFloat16, math: GemmMath.Fp32, label: 'bf16', atol: 1e-2, rtol: 8e-3 },
  ];

  describe('gemm', () => {
    for (const p of PRECISIONS) {
      for (const c of gemmCases) {
        const { m, n, k, transA = false, transB = false, batch = 1, pad = 0, alpha = 1, beta = 0 } = c;
        const name = `${p.label} ${transA ? 'T' : 'N'}${transB ? 'T' : 'N'} b${batch} ${m}x${n}x${k} pad${pad}` +
          `${c.broadcastB ? ' bcastB' : ''} α${alpha} β${beta}${c.bias ? ' bias' : ''} act${c.activation ?? 0}`;
        it(name, () => {
          const lda = (transA ? m : k) + pad, ldb = (transB ? k : n) + pad, ldc = n + pad;
          const aItem = (transA ? k : m) * lda, bItem = (transB ? n : k) * ldb;
          const strideA = aItem, strideB = c.broadcastB ? 0 : bItem, strideC = m * ldc;
          const a = asSeen(randn(batch * aItem, 1), p.dtype);
          const bm = asSeen(randn(c.broadcastB ? bItem : batch * bItem, 2), p.dtype);
          const c0 = asSeen(beta === 0 ? new Float32Array(batch * strideC).fill(Number.NaN) : randn(batch * strideC, 3), p.dtype);
          const bias = c.bias ? asSeen(randn(n, 4), p.dtype) : null;
          const act = c.activation ?? Activation.None;

          const want = Float32Array.from(c0);
          b.gemm(a, bm, want, bias, batch, m, n, k, transA, transB, lda, ldb, ldc, strideA, strideB, strideC, alpha, beta, act);
          const dc = up(c0, p.dtype);
          device.gemm(up(a, p.dtype), up(bm, p.dtype), dc, bias ? up(bias, p.dtype) : null, batch, m, n, k, transA, transB,
            lda, ldb, ldc, strideA, strideB, strideC, alpha, beta, act, p.dtype as never, p.math);
          const got = down(dc, c0.length, p.dtype);
          // Errors grow like √k for random signs.
          const scale = Math.sqrt(Math.max(k, 1));
          expectAllClose(got, want, { atol: p.atol * scale, rtol: p.rtol, label: name });
          release();
        });
      }
    }

    it('rejects bad arguments with codes before launching', () => {
      const a = zeros(16), c = zeros(16);
      expectCode(() => device.gemm(a, a, c, null, 1, 4, 4, 8, false, false, 8, 4, 4, 0, 0, 0, 1, 0, Activation.None), 'ERR_SHAPE');
      expectCode(() => device.gemm(a, a, a, null, 1, 4, 4, 4, false, false, 4, 4, 4, 0, 0, 0, 1, 0, Activation.None), 'ERR_ARGUMENT');
      expectCode(() => device.gemm(a, a, c, null, 1, 4, 4, 4, false, false, 3, 4, 4, 0, 0, 0, 1, 0, Activation.None), 'ERR_SHAPE');
      expectCode(() => b.cudaGemm(a.handle, a.handle, c.handle, null, 1, 2, 2, 2, false, false, 2, 2, 2, 0, 0, 0, 1, 0,
        Activation.None, DtypeCode.Float16 as never), 'ERR_UNSUPPORTED');
      release();
    });
  });

  // ---- elementwise ----
  const ODD = [1, 3, 65, 769];
  const UNARY = [
    UnaryOp.Relu, UnaryOp.Gelu, UnaryOp.Tanh, UnaryOp.Sigmoid, UnaryOp.Exp, UnaryOp.Log, UnaryOp.Neg, UnaryOp.Sqrt,
    UnaryOp.Abs, UnaryOp.Square,
  ];
  describe('elementwise', () => {
    for (const dtype of DTYPES) {
      const tol = dtype === DtypeCode.BFloat16 ? 1e-2 : 1e-5;
      for (const op of UNARY) {
        for (const n of ODD) {
          it(`unary ${UnaryOp[op]} ${dtypeName(dtype)} n=${n}`, () => {
            const positive = op === UnaryOp.Log || op === UnaryOp.Sqrt;
            const x = asSeen(uniform(n, 5 + op, positive ? 0.1 : -3, 3), dtype);
            const gy = asSeen(randn(n, 6), dtype);
            const y = new Float32Array(n), gx = new Float32Array(n);
            b.unaryForward(op, x, y, n);
            b.unaryBackward(op, x, y, gy, gx, n);
            const dx = up(x, dtype), dy = zeros(n, dtype), dgy = up(gy, dtype), dgx = zeros(n, dtype);
            device.unaryForward(op, dx, dy, n, dtype as never);
            device.unaryBackward(op, dx, dy, dgy, dgx, n, dtype as never);
            expectAllClose(down(dy, n, dtype), y, { atol: tol, rtol: tol, label: 'y' });
            // In bfloat16 the derivative of tanh/sigmoid/exp/sqrt uses the rounded y.
            const gtol = dtype === DtypeCode.BFloat16 ? 3e-2 : 1e-5;
            expectAllClose(down(dgx, n, dtype), gx, { atol: gtol, rtol: gtol, label: 'gx' });
            release();
          });
        }
      }
      const BROADCASTS: { shape: number[]; a: number[]; b: number[]; aLen: number; bLen: number; label: string }[] = [
        { shape: [769], a: [1], b: [1], aLen: 769, bLen: 769, label: 'same shape' },
        { shape: [3, 4, 5], a: [5, 0, 1], b: [0, 5, 1], aLen: 15, bLen: 20, label: '[3,1,5]⊙[1,4,5]' },
        { shape: [65, 3], a: [1, 65], b: [0, 0], aLen: 195, bLen: 1, label: 'transposed a ⊙ scalar' },
        { shape: [2, 65, 769], a: [65 * 769, 769, 1], b: [0, 0, 1], aLen: 2 * 65 * 769, bLen: 769, label: 'row bias' },
      ];
      for (let op = BinaryOp.Add; op <= BinaryOp.Min; op++) {
        for (const bc of BROADCASTS) {
          it(`binary ${BinaryOp[op]} ${dtypeName(dtype)} ${bc.label}`, () => {
            const a = asSeen(uniform(bc.aLen, 7, 0.5, 2), dtype), bb = asSeen(uniform(bc.bLen, 8, 0.5, 2), dtype);
            const n = bc.shape.reduce((x, y) => x * y, 1);
            const want = new Float32Array(n);
            b.binaryForward(op, a, bb, want, bc.shape, bc.a, bc.b);
            const out = zeros(n, dtype);
            device.binaryForward(op, up(a, dtype), up(bb, dtype), out, bc.shape, bc.a, bc.b, dtype as never);
            expectAllClose(down(out, n, dtype), want, { atol: tol, rtol: tol });
            release();
          });
        }
      }
    }
    it('checks extents: a read past its buffer is ERR_SHAPE, not a device fault', () => {
      const small = zeros(4), out = zeros(16);
      expectCode(() => device.binaryForward(BinaryOp.Add, small, small, out, [4, 4], [4, 1], [0, 1]), 'ERR_SHAPE');
      expectCode(() => device.unaryForward(UnaryOp.Exp, small, out, 5), 'ERR_SHAPE');
      release();
    });
  });

  // ---- softmax ----
  const ROWS_COLS: [number, number][] = [[1, 1], [3, 3], [65, 769], [3, 1500], [769, 65], [2, 4097]];
  describe('softmax', () => {
    for (const dtype of DTYPES) {
      const tol = dtype === DtypeCode.BFloat16 ? 1e-2 : 2e-6;
      for (const log of [false, true]) {
        for (const [rows, cols] of ROWS_COLS) {
          it(`${log ? 'log-' : ''}softmax ${dtypeName(dtype)} ${rows}x${cols}`, () => {
            const n = rows * cols;
            const x = asSeen(randn(n, 9, 3), dtype);
            if (cols > 1) x[n - 1] = Number.NEGATIVE_INFINITY; // a masked entry
            const gy = asSeen(randn(n, 10), dtype);
            const y = new Float32Array(n), gx = new Float32Array(n);
            b.softmaxForward(x, y, rows, cols, log);
            const dy = zeros(n, dtype), dgx = zeros(n, dtype);
            device.softmaxForward(up(x, dtype), dy, rows, cols, log, dtype as never);
            const gotY = down(dy, n, dtype);
            expectAllClose(gotY, y, { atol: tol, rtol: tol, label: 'y' });
            // Backward from the GPU's own y on both sides: only the backward kernels differ.
            b.softmaxBackward(gotY, gy, gx, rows, cols, log);
            device.softmaxBackward(dy, up(gy, dtype), dgx, rows, cols, log, dtype as never);
            expectAllClose(down(dgx, n, dtype), gx, { atol: tol * 4, rtol: tol * 4, label: 'gx' });
            release();
          });
        }
      }
    }
  });

  // ---- layer norm ----
  const LN_SHAPES: [number, number][] = [[1, 1], [3, 7], [65, 769], [5, 1300], [3152, 1024], [70, 33]];
  describe('layernorm', () => {
    for (const dtype of DTYPES) {
      const tol = dtype === DtypeCode.BFloat16 ? 2e-2 : 1e-5;
      for (const affine of [true, false]) {
        for (const [rows, cols] of LN_SHAPES) {
          it(`layernorm ${dtypeName(dtype)} ${affine ? 'affine' : 'plain'} ${rows}x${cols}`, () => {
            const n = rows * cols, eps = 1e-5;
            const x = asSeen(randn(n, 11, 2), dtype);
            const gy = asSeen(randn(n, 12), dtype);
            const gamma = affine ? uniform(cols, 13, 0.5, 1.5) : null;
            const beta = affine ? randn(cols, 14) : null;
            const y = new Float32Array(n), mean = new Float32Array(rows), rstd = new Float32Array(rows);
            const gx = new Float32Array(n);
            const gGamma = new Float32Array(cols).fill(0.25), gBeta = new Float32Array(cols).fill(-0.5);
            const dGamma = up(gGamma), dBeta = up(gBeta);
            b.layerNormForward(x, gamma, beta, y, mean, rstd, rows, cols, eps);
            b.layerNormBackward(x, gamma, mean, rstd, gy, gx, gGamma, gBeta, rows, cols);
            const dy = zeros(n, dtype), dmean = zeros(rows), drstd = zeros(rows), dgx = zeros(n, dtype);
            const dx = up(x, dtype);
            const dg = gamma ? up(gamma) : null;
            device.layerNormForward(dx, dg, beta ? up(beta) : null, dy, dmean, drstd, rows, cols, eps, dtype as never);
            device.layerNormBackward(dx, dg, dmean, drstd, up(gy, dtype), dgx, dGamma, dBeta, rows, cols, dtype as never);
            expectAllClose(down(dy, n, dtype), y, { atol: tol, rtol: tol, label: 'y' });
            expectAllClose(dmean.toFloat32(rows), mean, { atol: 1e-5, rtol: 1e-5, label: 'mean' });
            expectAllClose(drstd.toFloat32(rows), rstd, { atol: 1e-4, rtol: 1e-4, label: 'rstd' });
            expectAllClose(down(dgx, n, dtype), gx, { atol: tol * 5, rtol: tol * 5, label: 'gx' });
            // Column sums over up to 3152 rows in float32, in different orders on each side.
            const ptol = 1e-5 * Math.sqrt(rows) * 10;
            expectAllClose(dGamma.toFloat32(cols), gGamma, { atol: ptol, rtol: 1e-4, label: 'gGamma' });
            expectAllClose(dBeta.toFloat32(cols), gBeta, { atol: ptol, rtol: 1e-4, label: 'gBeta' });
            release();
          });
        }
      }
    }
  });

  // ---- attention ----
  describe('attention', () => {
    const CASES: { b: number; h: number; nq: number; nk: number; d: number; mask: boolean; fused?: boolean }[] = [];
    for (const d of [64, 128]) {
      for (const [b, h, nq, nk] of [[1, 1, 1, 1], [2, 3, 197, 197], [1, 2, 65, 769], [2, 1, 3, 4097]]) {
        for (const mask of [false, true]) CASES.push({ b, h, nq, nk, d, mask });
      }
    }
    CASES.push({ b: 2, h: 16, nq: 197, nk: 197, d: 64, mask: false, fused: true }); // ViT-L/16 qkv in place
    CASES.push({ b: 1, h: 2, nq: 5, nk: 0, d: 64, mask: false }); // no keys: zeros, lse −∞

    for (const c of CASES) {
      const name = `bf16 B${c.b} H${c.h} Nq${c.nq} Nk${c.nk} D${c.d}${c.mask ? ' mask' : ''}${c.fused ? ' fused qkv' : ''}`;
      it(name, () => {
        const { b: B, h: H, nq, nk, d: D } = c;
        let q: Float32Array, k: Float32Array, v: Float32Array;
        let qs: number[], ks: number[];
        let qOff = 0, kOff = 0, vOff = 0;
        if (c.fused) {
          // [B, N, 3, H, D] as timm's qkv linear writes it; q, k, v are offsets into it.
          q = k = v = roundBf16(randn(B * nq * 3 * H * D, 20));
          qs = ks = [nq * 3 * H * D, D, 3 * H * D];
          kOff = H * D;
          vOff = 2 * H * D;
        } else {
          q = roundBf16(randn(B * H * nq * D, 21));
          k = roundBf16(randn(B * H * nk * D, 22));
          v = roundBf16(randn(B * H * nk * D, 23));
          qs = [H * nq * D, nq * D, D];
          ks = [H * nk * D, nk * D, D];
        }
        const os = [H * nq * D, nq * D, D];
        let mask: Uint8Array | null = null;
        if (c.mask) {
          mask = new Uint8Array(B * nk).map((_, j) => (j % 5 === 2 ? 0 : 1));
          if (B > 1) mask.fill(0, nk, 2 * nk); // batch 1 attends to nothing
        }
        const dims = [B, H, nq, nk, D], scale = 1 / Math.sqrt(D);
        const want = new Float32Array(B * H * nq * D), wantLse = new Float32Array(B * H * nq);
        b.attentionForward(q.subarray(qOff), k.subarray(kOff), v.subarray(vOff), want, wantLse, mask, dims, qs, ks, ks,
          os, scale);
        const dq = up(q, DtypeCode.BFloat16);
        const dk = c.fused ? dq : up(k, DtypeCode.BFloat16);
        const dv = c.fused ? dq : up(v, DtypeCode.BFloat16);
        const view = (buf: DeviceBuffer, off: number) => {
          const part = buf.view(off * 2, buf.bytes - off * 2);
          live.push(part);
          return part;
        };
        const out = zeros(want.length, DtypeCode.BFloat16), lse = zeros(wantLse.length);
        device.attentionForward(view(dq, qOff), view(dk, kOff), view(dv, vOff), out, lse, mask ? up8(mask) : null, dims,
          qs, ks, ks, os, scale, DtypeCode.BFloat16);
        // P is rounded to bfloat16 before P·V and out is stored in bfloat16.
        expectAllClose(down(out, want.length, DtypeCode.BFloat16), want, { atol: 2e-2, rtol: 2e-2, label: 'out' });
        expectAllClose(lse.toFloat32(wantLse.length), wantLse, { atol: 2e-3, rtol: 1e-3, label: 'lse' });
        release();
      });
    }

    it('float32 and other head dims are ERR_UNSUPPORTED (the CPU kernel runs them)', () => {
      const x = zeros(64 * 2), lse = zeros(2);
      const s = [64, 64, 64];
      expectCode(() => device.attentionForward(x, x, x, zeros(128), lse, null, [1, 1, 2, 2, 64], s, s, s, s, 1,
        DtypeCode.Float32), 'ERR_UNSUPPORTED');
      expectCode(() => device.attentionForward(x, x, x, zeros(128), lse, null, [1, 1, 2, 2, 32], [32, 32, 32],
        [32, 32, 32], [32, 32, 32], [32, 32, 32], 1), 'ERR_UNSUPPORTED');
      release();
    });
  });

  // ---- runtime ----
  describe('runtime', () => {
    it('round-trips odd sizes and sizes spanning several staging chunks', () => {
      for (const n of [0, 1, 3, 65, 769, 5_000_001]) {
        const x = randn(n, 15);
        using buffer = device.upload(x);
        expect(buffer.toFloat32(n)).toEqual(x);
      }
    });

    it('views share memory and die with their owner', () => {
      const owner = device.upload(Float32Array.of(1, 2, 3, 4, 5, 6));
      const view = owner.view(8, 12);
      expect(Array.from(view.toFloat32())).toEqual([3, 4, 5]);
      view.upload(Float32Array.of(7));
      expect(Array.from(owner.toFloat32())).toEqual([1, 2, 7, 4, 5, 6]);
      expectCode(() => owner.view(20, 8), 'ERR_SHAPE');
      const rawView = b.cudaView(owner.handle, 0, 4);
      owner.dispose();
      expectCode(() => b.cudaDownload(rawView, new Float32Array(1)), 'ERR_DETACHED');
      expectCode(() => view.toFloat32(), 'ERR_DETACHED');
      owner.dispose(); // idempotent
      expectCode(() => owner.handle, 'ERR_DISPOSED');
    });

    it('caches freed blocks and returns to the baseline', () => {
      device.synchronize();
      const before = device.memoryStats();
      for (let i = 0; i < 20; i++) device.alloc(1 << 20).dispose();
      const after = device.memoryStats();
      expect(after.liveAllocations).toBe(before.liveAllocations);
      expect(after.bytesInUse).toBe(before.bytesInUse);
      expect(after.cacheHits - before.cacheHits).toBeGreaterThanOrEqual(19);
    });

    it('a memory budget gives ERR_CUDA_OOM, and the process stays usable', () => {
      device.emptyCache();
      const inUse = device.memoryStats().bytesInUse;
      device.setMemoryBudget(inUse + (64 << 20));
      try {
        const ok = device.alloc(32 << 20);
        expectCode(() => device.alloc(48 << 20), 'ERR_CUDA_OOM');
        ok.dispose();
        device.alloc(48 << 20).dispose(); // fits once the cache is released
      } finally {
        device.setMemoryBudget(0);
      }
      expectCode(() => device.alloc(2 ** 45), 'ERR_CUDA_OOM'); // 32 TiB: the driver says no
      using fine = device.upload(Float32Array.of(1));
      expect(fine.toFloat32()[0]).toBe(1);
    });

    it('an illegal address marks the device lost: later calls say so, CPU kernels still work (child process)', () => {
      // The fault poisons the CUDA context for the rest of the process, hence the child.
      const script = `
        const b = require(${JSON.stringify(cudaBuildPath)});
        const codeOf = (fn) => { try { fn(); return null; } catch (e) { return { code: e.code, message: e.message }; } };
        const buf = b.cudaAlloc(64);
        codeOf(() => b.cudaTestFault()); // may already report the fault; the lost state is what matters
        const sync = codeOf(() => b.cudaSynchronize());
        const alloc = codeOf(() => b.cudaAlloc(16));
        const download = codeOf(() => b.cudaDownload(buf, new Float32Array(4)));
        const y = new Float32Array(2);
        b.unaryForward(6, Float32Array.of(1, -2), y, 2);
        console.log(JSON.stringify({ sync, alloc, download, info: b.cudaInfo(), cpu: Array.from(y) }));`;
      const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
      expect(child.status, child.stderr).toBe(0);
      const out = JSON.parse(child.stdout.trim().split('\n').pop()!);
      for (const call of [out.sync, out.alloc, out.download]) {
        expect(call?.code).toBe('ERR_CUDA');
        expect(call?.message).toMatch(/device lost/);
      }
      expect(out.sync.message).toMatch(/cudaErrorIllegalAddress/);
      expect(out.info.deviceLost).toBe(true);
      expect(out.cpu).toEqual([-1, 2]);
    });

    it('every buffer of this file was released', () => {
      release();
      expect(device.memoryStats().liveAllocations).toBe(baseline);
      expect(device.info().deviceLost).toBe(false);
    });
  });
});
