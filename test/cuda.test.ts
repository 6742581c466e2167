/**
 * CUDA kernels (cuda/*.cu) against the CPU kernels of the same addon (cpp/ops), table-driven:
 * op × dtype (float32, bfloat16) × shape, odd sizes (1, 3, 65, 769) included; the slide-level
 * aggregation ops (bag pooling, depthwise conv, Nyström row groups; float32 only) with masks,
 * empty and ragged bags, row chunks and strided views; the training ops (tiled contrastive loss
 * over several tile sizes and scales, AdamW and SGD over several steps); plus the device runtime (buffers, views,
 * copies through staging, caching allocator, budget, errors).
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
    expect(device.supportedOps()).toContain('bagPoolForward');
    expect(device.supportedOps()).toEqual(expect.arrayContaining(['contrastiveForward', 'contrastiveBackward', 'adamwStep', 'sgdStep']));
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

  // ---- slide-level aggregation (float32 only, like the CPU kernels) ----
  describe('bag pooling', () => {
    interface BagCase { sizes: number[]; heads: number; dim: number; pad: number; mask: boolean; negInf?: boolean }
    const CASES: BagCase[] = [
      { sizes: [1], heads: 1, dim: 1, pad: 0, mask: false },
      { sizes: [5, 0, 37, 3], heads: 3, dim: 65, pad: 2, mask: true }, // an empty bag, a fully masked last bag
      { sizes: [65, 7], heads: 2, dim: 33, pad: 0, mask: false, negInf: true }, // a head with only −∞ scores
      { sizes: [1100, 30], heads: 1, dim: 33, pad: 5, mask: true }, // a bag above 1024: block-per-bag softmax
      { sizes: [4, 3], heads: 2, dim: 1030, pad: 0, mask: false }, // rows above 1024 columns
      { sizes: [0, 0], heads: 2, dim: 3, pad: 0, mask: false }, // no instances: pooled is zero
      { sizes: [769, 65, 1, 3], heads: 2, dim: 769, pad: 3, mask: true },
      { sizes: [20000], heads: 1, dim: 512, pad: 0, mask: false }, // one slide-sized bag
      { sizes: Array.from({ length: 64 }, (_, i) => 1 + ((i * 37) % 200)), heads: 3, dim: 128, pad: 0, mask: true },
    ];
    for (const c of CASES) {
      const name = `bags ${c.sizes.length > 8 ? `${c.sizes.length} ragged` : `[${c.sizes.join(',')}]`} K${c.heads} ` +
        `L${c.dim} pad${c.pad}${c.mask ? ' mask' : ''}${c.negInf ? ' −∞ head' : ''}`;
      it(name, () => {
        const B = c.sizes.length, K = c.heads, L = c.dim, hs = L + c.pad;
        const offsets = new Int32Array(B + 1);
        for (let i = 0; i < B; i++) offsets[i + 1] = offsets[i] + c.sizes[i];
        const T = offsets[B];
        const scores = randn(T * K, 30, 2);
        if (c.negInf) for (let t = 0; t < offsets[1]; t++) scores[t * K] = Number.NEGATIVE_INFINITY;
        const h = randn(T === 0 ? 0 : (T - 1) * hs + L, 31);
        const gradPooled = randn(B * K * L, 32);
        let mask: Uint8Array | null = null;
        if (c.mask) {
          mask = new Uint8Array(T).map((_, t) => (t % 4 === 3 ? 0 : 1));
          mask.fill(0, offsets[B - 1]);
        }
        const attn = new Float32Array(T * K), pooled = new Float32Array(B * K * L);
        b.bagPoolForward(scores, h, offsets, mask, attn, pooled, B, T, K, L, hs);
        const dh = up(h), dmask = mask ? up8(mask) : null;
        const dattn = up(new Float32Array(T * K).fill(Number.NaN)), dpooled = up(new Float32Array(B * K * L).fill(Number.NaN));
        device.bagPoolForward(up(scores), dh, offsets, dmask, dattn, dpooled, B, T, K, L, hs);
        const gotAttn = dattn.toFloat32(T * K), gotPooled = dpooled.toFloat32(B * K * L);
        expectAllClose(gotAttn, attn, { atol: 1e-6, rtol: 1e-5, label: 'attn' });
        expectAllClose(gotPooled, pooled, { atol: 1e-5, rtol: 1e-4, label: 'pooled' });

        // Backward from the GPU's own forward outputs on both sides: only the backward kernels differ.
        const gradH = new Float32Array(T * L), gradScores = new Float32Array(T * K);
        b.bagPoolBackward(h, offsets, mask, gotAttn, gotPooled, gradPooled, gradH, gradScores, B, T, K, L, hs);
        const dgh = zeros(T * L), dgs = zeros(T * K);
        device.bagPoolBackward(dh, offsets, dmask, dattn, dpooled, up(gradPooled), dgh, dgs, B, T, K, L, hs);
        expectAllClose(dgh.toFloat32(T * L), gradH, { atol: 1e-5, rtol: 1e-4, label: 'gradH' });
        // h·g − M·g cancels: the error scales with the terms (√L), not with the difference.
        expectAllClose(dgs.toFloat32(T * K), gradScores, { atol: 2e-5 * Math.sqrt(L + 1), rtol: 1e-4, label: 'gradScores' });
        // Each output alone.
        const dgs2 = zeros(T * K);
        device.bagPoolBackward(dh, offsets, dmask, dattn, dpooled, up(gradPooled), null, dgs2, B, T, K, L, hs);
        expectAllClose(dgs2.toFloat32(T * K), gradScores, { atol: 2e-5 * Math.sqrt(L + 1), rtol: 1e-4, label: 'gradScores alone' });
        release();
      });
    }

    it('rejects bad offsets and sizes with codes before launching', () => {
      const x = zeros(16);
      expectCode(() => device.bagPoolForward(x, x, Int32Array.of(0, 3, 2), null, x, x, 2, 4, 1, 2, 2), 'ERR_RANGE');
      expectCode(() => device.bagPoolForward(x, x, Int32Array.of(0, 4), null, x, x, 2, 4, 1, 2, 2), 'ERR_SHAPE');
      expectCode(() => device.bagPoolForward(x, x, [0, 4] as never, null, x, x, 1, 4, 1, 2, 2), 'ERR_ARGUMENT');
      // Extents are checked in C++: h needs (T − 1)·hStride + dim = 21 floats.
      expectCode(() => device.bagPoolForward(x, x, Int32Array.of(0, 4), null, x, x, 1, 4, 1, 3, 6), 'ERR_SHAPE');
      expectCode(() => b.cudaBagPoolForward(x.handle, x.handle, Int32Array.of(0, 5), null, x.handle, x.handle, 1, 4, 1, 2,
        2), 'ERR_RANGE');
      release();
    });
  });

  describe('dwconv2d', () => {
    // [B, H, W, C, kh, kw], output rows [rowBegin, rowEnd), extra elements per pixel, bias.
    const CASES: { dims: number[]; rows: [number, number]; pad: number; bias: boolean; label?: string }[] = [
      { dims: [1, 1, 1, 1, 1, 1], rows: [0, 1], pad: 0, bias: false },
      { dims: [2, 7, 5, 3, 3, 3], rows: [0, 7], pad: 0, bias: true },
      { dims: [1, 9, 9, 37, 7, 7], rows: [2, 6], pad: 3, bias: true, label: 'row chunk' },
      { dims: [1, 6, 6, 65, 5, 5], rows: [0, 6], pad: 0, bias: false },
      { dims: [2, 20, 20, 5, 3, 3], rows: [3, 17], pad: 1, bias: true },
      { dims: [1, 47, 47, 512, 7, 7], rows: [0, 47], pad: 0, bias: true, label: 'PPEG 7x7' },
      { dims: [1, 4097, 1, 512, 33, 1], rows: [0, 4097], pad: 1024, bias: false, label: 'Nyström residual in fused qkv' },
      { dims: [1, 4, 3, 2, 5, 3], rows: [4, 4], pad: 0, bias: true, label: 'empty range' },
    ];
    for (const c of CASES) {
      const [B, H, W, C, kh, kw] = c.dims;
      const [r0, r1] = c.rows;
      const name = `B${B} H${H} W${W} C${C} ${kh}x${kw} rows [${r0}, ${r1}) stride ${C + c.pad}${c.bias ? ' bias' : ''}` +
        `${c.label ? ` (${c.label})` : ''}`;
      it(name, () => {
        const ph = kh >> 1, stride = C + c.pad, taps = kh * kw;
        // Inputs hold exactly the rows the call reaches; outputs exactly the rows it writes.
        const in0 = Math.max(0, r0 - ph), in1 = Math.min(H, r1 + ph), outRows = r1 - r0;
        const elems = (rows: number) => (B * rows * W === 0 ? 0 : (B * rows * W - 1) * stride + C);
        const x = randn(elems(in1 - in0), 40), gyIn = randn(elems(in1 - in0), 41), gyOut = randn(elems(outRows), 42);
        const weight = randn(C * taps, 43, 0.3), bias = c.bias ? randn(C, 44) : null;
        const y = new Float32Array(elems(outRows)).fill(Number.NaN), gx = Float32Array.from(y);
        const gWeight = new Float32Array(C * taps).fill(0.25), gBias = new Float32Array(C).fill(-0.5);
        const dy = up(y), dgx = up(gx), dgw = up(gWeight), dgb = up(gBias);
        b.dwconv2dForward(x, in0, in1 - in0, stride, weight, bias, y, r0, outRows, stride, c.dims, r0, r1);
        b.dwconv2dBackwardInput(gyIn, in0, in1 - in0, stride, weight, gx, r0, outRows, stride, c.dims, r0, r1);
        b.dwconv2dBackwardWeight(x, in0, in1 - in0, stride, gyOut, r0, outRows, stride, gWeight, gBias, c.dims, r0, r1);
        const dx = up(x), dw = up(weight), dgyOut = up(gyOut);
        device.dwconv2dForward(dx, in0, in1 - in0, stride, dw, bias ? up(bias) : null, dy, r0, outRows, stride, c.dims, r0, r1);
        device.dwconv2dBackwardInput(up(gyIn), in0, in1 - in0, stride, dw, dgx, r0, outRows, stride, c.dims, r0, r1);
        device.dwconv2dBackwardWeight(dx, in0, in1 - in0, stride, dgyOut, r0, outRows, stride, dgw, dgb, c.dims, r0, r1);
        // NaN padding between pixels must stay NaN on both sides (neither written nor read).
        expectAllClose(dy.toFloat32(y.length), y, { atol: 1e-5, rtol: 1e-5, label: 'y' });
        expectAllClose(dgx.toFloat32(gx.length), gx, { atol: 1e-5, rtol: 1e-5, label: 'gx' });
        // Sums over B·rows·W pixels in float32, in different orders on each side.
        const ptol = 2e-5 * Math.sqrt(B * outRows * W + 1);
        expectAllClose(dgw.toFloat32(gWeight.length), gWeight, { atol: ptol, rtol: 1e-5, label: 'gWeight' });
        expectAllClose(dgb.toFloat32(C), gBias, { atol: ptol, rtol: 1e-5, label: 'gBias' });
        // The bias gradient alone.
        const dgb2 = up(new Float32Array(C).fill(-0.5));
        device.dwconv2dBackwardWeight(dx, in0, in1 - in0, stride, dgyOut, r0, outRows, stride, null, dgb2, c.dims, r0, r1);
        expectAllClose(dgb2.toFloat32(C), gBias, { atol: ptol, rtol: 1e-5, label: 'gBias alone' });
        release();
      });
    }

    it('rejects bad kernels, row ranges and buffers with codes before launching', () => {
      const x = zeros(64), w = zeros(64);
      expectCode(() => device.dwconv2dForward(x, 0, 4, 2, w, null, x, 0, 4, 2, [1, 4, 4, 2, 2, 3], 0, 4), 'ERR_SHAPE');
      expectCode(() => device.dwconv2dForward(x, 0, 4, 2, w, null, x, 0, 4, 2, [1, 4, 4, 2, 3, 3], 0, 5), 'ERR_RANGE');
      expectCode(() => device.dwconv2dForward(x, 0, 4, 1, w, null, x, 0, 4, 2, [1, 4, 4, 2, 3, 3], 0, 4), 'ERR_SHAPE');
      // In C++: an input missing rows the taps reach, a buffer too small for its stride.
      expectCode(() => device.dwconv2dForward(x, 1, 3, 2, w, null, x, 0, 4, 2, [1, 4, 4, 2, 3, 3], 0, 4), 'ERR_RANGE');
      expectCode(() => device.dwconv2dBackwardInput(x, 0, 4, 5, w, x, 0, 4, 2, [1, 4, 4, 2, 3, 3], 0, 4), 'ERR_SHAPE');
      release();
    });
  });

  describe('Nyström row groups', () => {
    const CASES: [number, number, number, number, number][] = [
      // rowBegin, rowEnd, cols, group, stride
      [0, 1, 1, 1, 1],
      [5, 83, 33, 7, 97],
      [0, 300, 65, 256, 68],
      [130, 131, 3, 65, 3],
      [0, 4097, 512, 17, 1536], // the q columns of a fused qkv, 256 landmarks
      [4, 4, 5, 2, 5],
    ];
    for (const [r0, r1, cols, group, stride] of CASES) {
      it(`rows [${r0}, ${r1}) cols ${cols} group ${group} stride ${stride}`, () => {
        const rows = r1 - r0, groups = rows === 0 ? 0 : Math.floor((r1 - 1) / group) + 1;
        const strided = rows === 0 ? 0 : (rows - 1) * stride + cols;
        const x = randn(strided, 50), sums = randn(groups * cols, 51);
        const dsums = up(sums);
        b.groupRowSum(x, stride, r0, r1, cols, group, sums);
        device.groupRowSum(up(x), stride, r0, r1, cols, group, dsums);
        expectAllClose(dsums.toFloat32(sums.length), sums, { atol: 1e-5 * Math.sqrt(group + 1), rtol: 1e-5, label: 'sums' });
        for (const accumulate of [false, true]) {
          const g = randn(groups * cols, 52), out = randn(strided, 53);
          const dout = up(out);
          b.groupRowBroadcast(g, r0, r1, cols, group, 0.75, out, stride, accumulate);
          device.groupRowBroadcast(up(g), r0, r1, cols, group, 0.75, dout, stride, accumulate);
          expectAllClose(dout.toFloat32(out.length), out, { atol: 1e-6, rtol: 1e-6, label: `broadcast ${accumulate}` });
        }
        release();
      });
    }

    it('rejects bad ranges and too-small buffers with codes', () => {
      const x = zeros(10), small = zeros(8);
      expectCode(() => device.groupRowSum(x, 2, 3, 2, 2, 1, x), 'ERR_RANGE');
      expectCode(() => device.groupRowSum(x, 2, 0, 2, 2, 0, x), 'ERR_ARGUMENT');
      expectCode(() => device.groupRowBroadcast(x, 0, 2, 3, 1, 1, x, 2, false), 'ERR_SHAPE');
      expectCode(() => device.groupRowSum(x, 2, 0, 5, 2, 1, small), 'ERR_SHAPE'); // in C++: out needs 10 floats
      release();
    });
  });

  // ---- training: contrastive loss, optimizers (float32) ----
  /** Rows scaled to unit length, as CLIP embeddings are before the loss. */
  function normalizedRows(x: Float32Array, n: number, d: number): Float32Array {
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (let k = 0; k < d; k++) sum += x[i * d + k] * x[i * d + k];
      const inv = 1 / Math.sqrt(sum || 1);
      for (let k = 0; k < d; k++) x[i * d + k] *= inv;
    }
    return x;
  }
  const maxAbs = (x: ArrayLike<number>): number => {
    let m = 0;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
    return m;
  };

  describe('contrastive', () => {
    // Odd n and d, several tile sizes (0 = automatic; ragged last tiles; one row per tile), scales from
    // 1 to open_clip's cap of 100, rows above 1024 (block-per-row kernels).
    const CASES: { n: number; d: number; scale: number; tile: number }[] = [
      { n: 1, d: 1, scale: 1, tile: 0 },
      { n: 5, d: 3, scale: 2.5, tile: 2 },
      { n: 37, d: 70, scale: 14.3, tile: 1 },
      { n: 65, d: 33, scale: 14.3, tile: 0 },
      { n: 67, d: 17, scale: 1, tile: 7 },
      { n: 769, d: 65, scale: 20, tile: 128 },
      { n: 1030, d: 129, scale: 100, tile: 0 },
      { n: 4097, d: 512, scale: 14.3, tile: 1000 },
    ];
    for (const c of CASES) {
      const { n, d, scale, tile } = c;
      it(`n${n} d${d} scale ${scale} tileRows ${tile}`, () => {
        const a = normalizedRows(randn(n * d, 60), n, d);
        const noise = randn(n * d, 61, 0.5);
        const bm = normalizedRows(a.map((v, i) => v + noise[i]), n, d);
        const gLoss = 0.75;
        const lseRows = new Float32Array(n), lseCols = new Float32Array(n);
        const gradA = new Float32Array(n * d), gradB = new Float32Array(n * d);
        const loss = b.contrastiveForward(a, bm, n, d, scale, tile, lseRows, lseCols);
        const scaleGrad = b.contrastiveBackward(a, bm, n, d, scale, tile, lseRows, lseCols, gLoss, gradA, gradB);

        const da = up(a), db = up(bm);
        const dRows = up(new Float32Array(n).fill(Number.NaN)), dCols = up(new Float32Array(n).fill(Number.NaN));
        const dga = up(new Float32Array(n * d).fill(Number.NaN)), dgb = up(new Float32Array(n * d).fill(Number.NaN));
        const gotLoss = device.contrastiveForward(da, db, n, d, scale, tile, dRows, dCols);
        const gotScaleGrad = device.contrastiveBackward(da, db, n, d, scale, tile, dRows, dCols, gLoss, dga, dgb);
        // |S| <= scale for unit rows; both sides carry float32 GEMM rounding of S (~1e-7·√d·scale).
        const stol = 5e-6 * scale + 1e-6;
        expect(Math.abs(gotLoss - loss), `loss ${gotLoss} vs ${loss}`).toBeLessThanOrEqual(stol + 1e-6 * Math.abs(loss));
        expectAllClose(dRows.toFloat32(n), lseRows, { atol: stol, rtol: 1e-6, label: 'lseRows' });
        expectAllClose(dCols.toFloat32(n), lseCols, { atol: stol, rtol: 1e-6, label: 'lseCols' });
        const gtol = 1e-5 * Math.max(maxAbs(gradA), maxAbs(gradB)) * (1 + scale / 10) + 1e-8;
        const gotA = dga.toFloat32(n * d), gotB = dgb.toFloat32(n * d);
        expectAllClose(gotA, gradA, { atol: gtol, rtol: 1e-4, label: 'gradA' });
        expectAllClose(gotB, gradB, { atol: gtol, rtol: 1e-4, label: 'gradB' });
        // Σ G⊙S cancels: Σ|G⊙S| <= 2·gLoss·scale bounds the terms.
        expect(Math.abs(gotScaleGrad - scaleGrad), `scale grad ${gotScaleGrad} vs ${scaleGrad}`)
          .toBeLessThanOrEqual(2e-5 * gLoss * scale + 1e-6 + 1e-4 * Math.abs(scaleGrad));

        // Deterministic: the same call again gives the same bits.
        const again = device.contrastiveBackward(da, db, n, d, scale, tile, dRows, dCols, gLoss, dga, dgb);
        expect(again).toBe(gotScaleGrad);
        expect(dga.toFloat32(n * d)).toEqual(gotA);
        expect(dgb.toFloat32(n * d)).toEqual(gotB);
        expect(device.contrastiveForward(da, db, n, d, scale, tile, dRows, dCols)).toBe(gotLoss);
        release();
      });
    }

    it('the tile size changes only the rounding', () => {
      const n = 301, d = 31, scale = 10;
      const a = normalizedRows(randn(n * d, 62), n, d), bm = normalizedRows(randn(n * d, 63), n, d);
      const da = up(a), db = up(bm), rows = zeros(n), cols = zeros(n), ga = zeros(n * d), gb = zeros(n * d);
      const results = [0, 1, 17, 300].map((tile) => {
        const loss = device.contrastiveForward(da, db, n, d, scale, tile, rows, cols);
        const sg = device.contrastiveBackward(da, db, n, d, scale, tile, rows, cols, 1, ga, gb);
        return { loss, sg, ga: ga.toFloat32(n * d), gb: gb.toFloat32(n * d) };
      });
      for (const r of results.slice(1)) {
        expect(Math.abs(r.loss - results[0].loss)).toBeLessThan(1e-5);
        expect(Math.abs(r.sg - results[0].sg)).toBeLessThan(1e-4);
        expectAllClose(r.ga, results[0].ga, { atol: 1e-6, rtol: 1e-4, label: 'gradA' });
        expectAllClose(r.gb, results[0].gb, { atol: 1e-6, rtol: 1e-4, label: 'gradB' });
      }
      release();
    });

    it('rejects bad sizes, scales and buffers with codes before launching', () => {
      const x = zeros(64), rows = zeros(4), cols = zeros(4), g1 = zeros(16), g2 = zeros(16), small = zeros(2);
      expectCode(() => device.contrastiveForward(x, x, 4, 4, 0, 0, rows, cols), 'ERR_ARGUMENT');
      expectCode(() => device.contrastiveForward(x, x, 0, 4, 1, 0, rows, cols), 'ERR_ARGUMENT');
      expectCode(() => device.contrastiveForward(x, x, 4, 4, Number.NaN, 0, rows, cols), 'ERR_ARGUMENT');
      expectCode(() => device.contrastiveBackward(x, x, 4, 4, 1, 0, rows, cols, Infinity, g1, g2), 'ERR_ARGUMENT');
      // In C++: extents, aliasing, and the same checks again on the raw binding.
      expectCode(() => device.contrastiveForward(x, x, 4, 4, 1, 0, small, cols), 'ERR_SHAPE');
      expectCode(() => device.contrastiveForward(x, x, 9, 9, 1, 0, rows, cols), 'ERR_SHAPE');
      expectCode(() => device.contrastiveBackward(x, x, 4, 4, 1, 0, rows, cols, 1, x, g2), 'ERR_ARGUMENT');
      expectCode(() => b.cudaContrastiveForward(x.handle, x.handle, 4, 4, 0, 0, rows.handle, cols.handle), 'ERR_ARGUMENT');
      expectCode(() => b.cudaContrastiveForward(x.handle, x.handle, 0, 4, 1, 0, rows.handle, cols.handle), 'ERR_SHAPE');
      release();
    });
  });

  describe('optimizers', () => {
    const SIZES = [1, 3, 769, 100_003];
    for (const n of SIZES) {
      for (const [weightDecay, beta1] of [[0, 0.9], [0.01, 0.9], [0.05, 0.3]]) {
        it(`adamw n${n} wd ${weightDecay} β1 ${beta1}, 5 steps`, () => {
          const param = randn(n, 70), m = new Float32Array(n), v = new Float32Array(n);
          const dp = up(param), dm = up(m), dv = up(v), dg = zeros(n);
          for (let step = 1; step <= 5; step++) {
            const grad = randn(n, 70 + step);
            b.adamwStep(param, grad, m, v, n, 1e-3, beta1, 0.999, 1e-8, weightDecay, step);
            dg.upload(grad);
            device.adamwStep(dp, dg, dm, dv, n, 1e-3, beta1, 0.999, 1e-8, weightDecay, step);
          }
          // Same operations and roundings: equal on AVX2/AVX-512 hosts, a few ulps on the portable level.
          expectAllClose(dp.toFloat32(n), param, { atol: 1e-7, rtol: 1e-6, label: 'param' });
          expectAllClose(dm.toFloat32(n), m, { atol: 1e-8, rtol: 1e-6, label: 'm' });
          expectAllClose(dv.toFloat32(n), v, { atol: 1e-10, rtol: 1e-6, label: 'v' });
          release();
        });
      }
      const SGD: { momentum: number; dampening: number; weightDecay: number; nesterov: boolean }[] = [
        { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false },
        { momentum: 0, dampening: 0, weightDecay: 0.01, nesterov: false },
        { momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false },
        { momentum: 0.9, dampening: 0.1, weightDecay: 0.01, nesterov: false },
        { momentum: 0.9, dampening: 0, weightDecay: 0.01, nesterov: true },
      ];
      for (const c of SGD) {
        it(`sgd n${n} momentum ${c.momentum} dampening ${c.dampening} wd ${c.weightDecay}${c.nesterov ? ' nesterov' : ''}, 4 steps`, () => {
          const param = randn(n, 80), buffer = c.momentum !== 0 ? new Float32Array(n) : null;
          const dp = up(param), dbuf = buffer ? up(new Float32Array(n).fill(Number.NaN)) : null, dg = zeros(n);
          for (let step = 0; step < 4; step++) {
            const grad = randn(n, 80 + step);
            b.sgdStep(param, grad, buffer, n, 0.05, c.momentum, c.dampening, c.weightDecay, c.nesterov, step === 0);
            dg.upload(grad);
            device.sgdStep(dp, dg, dbuf, n, 0.05, c.momentum, c.dampening, c.weightDecay, c.nesterov, step === 0);
          }
          expectAllClose(dp.toFloat32(n), param, { atol: 1e-7, rtol: 1e-6, label: 'param' });
          if (buffer && dbuf) expectAllClose(dbuf.toFloat32(n), buffer, { atol: 1e-7, rtol: 1e-6, label: 'momentumBuffer' });
          release();
        });
      }
    }

    it('rejects bad hyper-parameters and buffers with codes before launching', () => {
      const x = zeros(16), g = zeros(16), m = zeros(16), v = zeros(16), small = zeros(4);
      expectCode(() => device.adamwStep(x, g, m, v, 16, 1e-3, 1, 0.999, 1e-8, 0, 1), 'ERR_ARGUMENT');
      expectCode(() => device.adamwStep(x, g, m, v, 16, 1e-3, 0.9, 0.999, 0, 0, 1), 'ERR_ARGUMENT');
      expectCode(() => device.adamwStep(x, g, m, v, 16, 1e-3, 0.9, 0.999, 1e-8, 0, 0), 'ERR_ARGUMENT');
      expectCode(() => device.sgdStep(x, g, null, 16, 0.1, 0.9, 0, 0, false, true), 'ERR_ARGUMENT');
      expectCode(() => device.sgdStep(x, g, m, 16, 0.1, 0.9, 0.5, 0, true, true), 'ERR_ARGUMENT');
      // In C++: extents, aliasing, and the ranges again on the raw binding.
      expectCode(() => device.adamwStep(x, g, m, small, 16, 1e-3, 0.9, 0.999, 1e-8, 0, 1), 'ERR_SHAPE');
      expectCode(() => device.adamwStep(x, g, x, v, 16, 1e-3, 0.9, 0.999, 1e-8, 0, 1), 'ERR_ARGUMENT');
      expectCode(() => device.sgdStep(x, g, g, 16, 0.1, 0.9, 0, 0, false, true), 'ERR_ARGUMENT');
      expectCode(() => b.cudaAdamwStep(x.handle, g.handle, m.handle, v.handle, 16, 1e-3, 0.9, 1, 1e-8, 0, 1), 'ERR_ARGUMENT');
      expectCode(() => b.cudaSgdStep(x.handle, g.handle, null, 16, 0.1, 0.9, 0, 0, false, true), 'ERR_ARGUMENT');
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
