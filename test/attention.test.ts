/**
 * Tiled (flash) attention, cpp/ops/attention.cc: forward and backward against float64
 * references written here, tiled against the naive kernel, every SIMD path, strided and
 * fused-qkv layouts, masks (including a fully masked batch row), determinism across thread
 * counts, memory, and bad input that must throw an error with a `code`, never crash.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { loadNative, native } from '../lib/native.js';
import { expectAllClose, expectCode, finiteDifferences, makeRng, randn } from './helpers.js';

type Strides = [number, number, number];
type LayoutKind = 'bhnd' | 'bnhd' | 'padded' | 'fused';

interface Shape {
  B: number;
  H: number;
  Nq: number;
  Nk: number;
  D: number;
}

/** A tensor [B, H, N, D] living at `data` through element strides [sB, sH, sN]. */
interface Strided {
  data: Float32Array;
  strides: Strides;
  /** The whole allocation, to check that nothing outside the layout was written. */
  buffer: Float32Array;
  offset: number;
}

const SENTINEL = 777;

/**
 * Allocates q, k, v (or their gradients) in one of the layouts:
 * bhnd = [B,H,N,D]; bnhd = [B,N,H,D]; padded = [B,N,H,D+3] (gaps must stay untouched);
 * fused = one [B,N,3,H,D] buffer shared by all three (needs Nq == Nk).
 */
function allocQkv(kind: LayoutKind, s: Shape, fill = SENTINEL): { q: Strided; k: Strided; v: Strided } {
  const { B, H, Nq, Nk, D } = s;
  if (kind === 'fused') {
    if (Nq !== Nk) throw new Error('fused layout needs Nq == Nk');
    const buffer = new Float32Array(B * Nq * 3 * H * D).fill(fill);
    const strides: Strides = [Nq * 3 * H * D, D, 3 * H * D];
    const at = (i: number): Strided => ({ data: buffer.subarray(i * H * D), strides, buffer, offset: i * H * D });
    return { q: at(0), k: at(1), v: at(2) };
  }
  const one = (N: number) => allocOne(kind, B, H, N, D, fill);
  return { q: one(Nq), k: one(Nk), v: one(Nk) };
}

function allocOne(kind: Exclude<LayoutKind, 'fused'>, B: number, H: number, N: number, D: number, fill = SENTINEL): Strided {
  const Dp = kind === 'padded' ? D + 3 : D;
  const buffer = new Float32Array(B * H * N * Dp).fill(fill);
  const strides: Strides = kind === 'bhnd' ? [H * N * D, N * D, D] : [N * H * Dp, Dp, H * Dp];
  return { data: buffer, strides, buffer, offset: 0 };
}

function offsetOf(t: Strided, b: number, h: number, n: number): number {
  return b * t.strides[0] + h * t.strides[1] + n * t.strides[2];
}

/** Writes a dense [B,H,N,D] array into a strided tensor. */
function scatter(t: Strided, dense: ArrayLike<number>, B: number, H: number, N: number, D: number): void {
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let n = 0; n < N; n++) {
        const o = offsetOf(t, b, h, n);
        const i = ((b * H + h) * N + n) * D;
        for (let d = 0; d < D; d++) t.data[o + d] = dense[i + d];
      }
}

/** Reads a strided tensor into a dense [B,H,N,D] Float64Array. */
function gather(t: Strided, B: number, H: number, N: number, D: number): Float64Array {
  const out = new Float64Array(B * H * N * D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let n = 0; n < N; n++) {
        const o = offsetOf(t, b, h, n);
        const i = ((b * H + h) * N + n) * D;
        for (let d = 0; d < D; d++) out[i + d] = t.data[o + d];
      }
  return out;
}

/** Every element of the allocation outside the layout still holds the fill value. */
function expectGapsUntouched(tensors: Strided[], B: number, H: number, Ns: number[], D: number, label: string): void {
  const buffer = tensors[0].buffer;
  const inside = new Uint8Array(buffer.length);
  tensors.forEach((t, i) => {
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let n = 0; n < Ns[i]; n++) inside.fill(1, t.offset + offsetOf(t, b, h, n), t.offset + offsetOf(t, b, h, n) + D);
  });
  let bad = 0;
  for (let i = 0; i < buffer.length; i++) if (!inside[i] && buffer[i] !== SENTINEL) bad++;
  expect(bad, `${label}: elements written outside the layout`).toBe(0);
}

// ---- float64 references -------------------------------------------------------------

interface Reference {
  out: Float64Array; // [B,H,Nq,D]
  lse: Float64Array; // [B,H,Nq]
  prob: Float64Array; // [B,H,Nq,Nk]
}

function referenceForward(q: Float64Array, k: Float64Array, v: Float64Array, mask: Uint8Array | null, s: Shape, scale: number): Reference {
  const { B, H, Nq, Nk, D } = s;
  const out = new Float64Array(B * H * Nq * D);
  const lse = new Float64Array(B * H * Nq);
  const prob = new Float64Array(B * H * Nq * Nk);
  const row = new Float64Array(Nk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Nq; i++) {
        const bh = b * H + h;
        const qi = (bh * Nq + i) * D;
        let max = -Infinity;
        for (let j = 0; j < Nk; j++) {
          if (mask && !mask[b * Nk + j]) {
            row[j] = -Infinity;
            continue;
          }
          const kj = (bh * Nk + j) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qi + d] * k[kj + d];
          row[j] = scale * dot;
          max = Math.max(max, row[j]);
        }
        if (max === -Infinity) {
          lse[bh * Nq + i] = -Infinity; // out and prob stay 0
          continue;
        }
        let sum = 0;
        for (let j = 0; j < Nk; j++) sum += Math.exp(row[j] - max);
        lse[bh * Nq + i] = max + Math.log(sum);
        for (let j = 0; j < Nk; j++) {
          const p = Math.exp(row[j] - max) / sum;
          prob[(bh * Nq + i) * Nk + j] = p;
          const vj = (bh * Nk + j) * D;
          for (let d = 0; d < D; d++) out[qi + d] += p * v[vj + d];
        }
      }
  return { out, lse, prob };
}

/** Analytic gradients of Σ out ∘ gOut: dV = Pᵀ dO, dS = P ∘ (dO Vᵀ − rowsum(dO ∘ O)), dQ = scale dS K, dK = scale dSᵀ Q. */
function referenceBackward(q: Float64Array, k: Float64Array, v: Float64Array, gOut: Float64Array, mask: Uint8Array | null, s: Shape, scale: number) {
  const { B, H, Nq, Nk, D } = s;
  const { out, prob } = referenceForward(q, k, v, mask, s, scale);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  for (let bh = 0; bh < B * H; bh++)
    for (let i = 0; i < Nq; i++) {
      const qi = (bh * Nq + i) * D;
      let di = 0;
      for (let d = 0; d < D; d++) di += gOut[qi + d] * out[qi + d];
      for (let j = 0; j < Nk; j++) {
        const p = prob[(bh * Nq + i) * Nk + j];
        if (p === 0) continue;
        const kj = (bh * Nk + j) * D;
        let dp = 0;
        for (let d = 0; d < D; d++) {
          dp += gOut[qi + d] * v[kj + d];
          dv[kj + d] += p * gOut[qi + d];
        }
        const ds = p * (dp - di) * scale;
        for (let d = 0; d < D; d++) {
          dq[qi + d] += ds * k[kj + d];
          dk[kj + d] += ds * q[qi + d];
        }
      }
    }
  return { dq, dk, dv };
}

// ---- test set-up ----------------------------------------------------------------------

const initialSimd = native().runtimeInfo().simd;
/** Every SIMD path this CPU can run (setSimdLevel caps to what it supports). */
const simdLevels: string[] = [];

// The thread count is left alone: the tests run on whatever the pool has (the machine's
// cores or MSTAR_NUM_THREADS). Thread-count independence is checked in child processes.
beforeAll(() => {
  for (const level of ['portable', 'avx2', 'avx512'] as const) {
    const got = native().setSimdLevel(level);
    if (!simdLevels.includes(got)) simdLevels.push(got);
  }
  native().setSimdLevel(initialSimd);
});

afterAll(() => {
  native().setSimdLevel(initialSimd);
});

function withSimd(level: string, fn: () => void): void {
  native().setSimdLevel(level as 'portable' | 'avx2' | 'avx512');
  try {
    fn();
  } finally {
    native().setSimdLevel(initialSimd);
  }
}

/** A [B, Nk] mask with ~30% of keys off; batch rows listed in `fullyMasked` attend to nothing. */
function makeMask(B: number, Nk: number, seed: number, fullyMasked: number[] = []): Uint8Array {
  const rng = makeRng(seed);
  const mask = new Uint8Array(B * Nk);
  for (let i = 0; i < mask.length; i++) mask[i] = rng() < 0.7 ? 1 : 0;
  for (const b of fullyMasked) mask.fill(0, b * Nk, (b + 1) * Nk);
  return mask;
}

interface Case extends Shape {
  layout: LayoutKind;
  outLayout?: Exclude<LayoutKind, 'fused'>;
  mask?: 'none' | 'random' | 'fullRow';
  scale?: number;
}

function label(c: Case): string {
  return `B${c.B} H${c.H} Nq${c.Nq} Nk${c.Nk} D${c.D} ${c.layout}${c.outLayout ? `→${c.outLayout}` : ''} mask=${c.mask ?? 'none'}${c.scale ? ` scale=${c.scale}` : ''}`;
}

/** Inputs of a case in its layout, plus their dense float64 copies. */
function setUp(c: Case, seed: number) {
  const { B, H, Nq, Nk, D } = c;
  const { q, k, v } = allocQkv(c.layout, c);
  scatter(q, randn(B * H * Nq * D, seed), B, H, Nq, D);
  scatter(k, randn(B * H * Nk * D, seed + 1), B, H, Nk, D);
  scatter(v, randn(B * H * Nk * D, seed + 2), B, H, Nk, D);
  const mask =
    c.mask === 'random' ? makeMask(B, Nk, seed + 3) : c.mask === 'fullRow' ? makeMask(B, Nk, seed + 3, [B - 1]) : null;
  return {
    q,
    k,
    v,
    mask,
    qd: gather(q, B, H, Nq, D),
    kd: gather(k, B, H, Nk, D),
    vd: gather(v, B, H, Nk, D),
    scale: c.scale ?? 1 / Math.sqrt(D),
  };
}

function runForward(c: Case, inputs: ReturnType<typeof setUp>, naive = false) {
  const { B, H, Nq, Nk, D } = c;
  const out = allocOne(c.outLayout ?? 'bhnd', B, H, Nq, D);
  const lse = new Float32Array(B * H * Nq).fill(SENTINEL);
  const { q, k, v, mask, scale } = inputs;
  const dims = [B, H, Nq, Nk, D];
  if (naive) native().attentionNaiveForward(q.data, k.data, v.data, out.data, mask, dims, q.strides, k.strides, v.strides, out.strides, scale);
  else native().attentionForward(q.data, k.data, v.data, out.data, lse, mask, dims, q.strides, k.strides, v.strides, out.strides, scale);
  return { out, lse };
}

// ---- forward --------------------------------------------------------------------------

describe('attention forward vs float64', () => {
  const cases: Case[] = [
    { B: 1, H: 1, Nq: 1, Nk: 1, D: 1, layout: 'bhnd' },
    { B: 2, H: 3, Nq: 3, Nk: 3, D: 3, layout: 'fused', outLayout: 'padded' },
    { B: 1, H: 2, Nq: 65, Nk: 65, D: 64, layout: 'bnhd', mask: 'random' },
    { B: 2, H: 2, Nq: 197, Nk: 197, D: 64, layout: 'fused', outLayout: 'bnhd', mask: 'fullRow' },
    { B: 1, H: 1, Nq: 769, Nk: 769, D: 128, layout: 'bhnd' },
    { B: 1, H: 2, Nq: 65, Nk: 197, D: 128, layout: 'padded', outLayout: 'padded', mask: 'random' },
    { B: 2, H: 1, Nq: 197, Nk: 65, D: 3, layout: 'bnhd', mask: 'fullRow' },
    { B: 1, H: 1, Nq: 3, Nk: 769, D: 1, layout: 'padded', mask: 'random' },
    // Peaky softmax (scores ~ N(0, 64)): the running max moves often and by a lot.
    { B: 1, H: 1, Nq: 130, Nk: 300, D: 64, layout: 'bhnd', scale: 1 },
  ];
  cases.forEach((c, index) => {
    it(label(c), () => {
      const inputs = setUp(c, 100 + 10 * index);
      const ref = referenceForward(inputs.qd, inputs.kd, inputs.vd, inputs.mask, c, inputs.scale);
      const { B, H, Nq, D } = c;
      for (const level of simdLevels) {
        withSimd(level, () => {
          const { out, lse } = runForward(c, inputs);
          expectAllClose(gather(out, B, H, Nq, D), ref.out, { atol: 1e-5, rtol: 1e-5, label: `${level} out` });
          expectAllClose(lse, ref.lse, { atol: 1e-5, rtol: 1e-5, label: `${level} lse` });
          expectGapsUntouched([out], B, H, [Nq], D, `${level} out`);
        });
      }
      const naive = runForward(c, inputs, true);
      expectAllClose(gather(naive.out, B, H, Nq, D), ref.out, { atol: 1e-5, rtol: 1e-5, label: 'naive out' });
      if (c.mask === 'fullRow') {
        const { out, lse } = runForward(c, inputs);
        const last = gather(out, B, H, Nq, D).subarray((B - 1) * H * Nq * D);
        expect(last.every((x) => x === 0)).toBe(true);
        expect(lse.subarray((B - 1) * H * Nq).every((x) => x === -Infinity)).toBe(true);
      }
    });
  });

  it('empty sizes: Nk = 0 gives zeros and lse = −∞; B, H or Nq = 0 touch nothing', () => {
    const q = randn(2 * 3 * 4, 1);
    const out = new Float32Array(q.length).fill(SENTINEL);
    const lse = new Float32Array(6).fill(SENTINEL);
    const s: Strides = [12, 4, 4];
    native().attentionForward(q, new Float32Array(0), new Float32Array(0), out, lse, null, [2, 1, 3, 0, 4], s, s, s, s, 0.5);
    expect(out.every((x) => x === 0)).toBe(true);
    expect(lse.every((x) => x === -Infinity)).toBe(true);
    out.fill(SENTINEL);
    native().attentionNaiveForward(q, new Float32Array(0), new Float32Array(0), out, null, [2, 1, 3, 0, 4], s, s, s, s, 0.5);
    expect(out.every((x) => x === 0)).toBe(true);
    const none = new Float32Array(0);
    native().attentionForward(none, none, none, none, none, null, [0, 4, 3, 3, 4], s, s, s, s, 0.5);
    native().attentionForward(none, q, q, none, none, null, [1, 1, 0, 3, 4], s, s, s, s, 0.5);
    native().attentionBackward(none, none, none, none, none, none, none, none, none, null, [1, 0, 3, 3, 4], s, s, s, s, 0.5);
  });

  it('NaN in the inputs propagates to the output instead of vanishing', () => {
    const s: Strides = [5 * 4, 5 * 4, 4];
    const q = randn(20, 1);
    const k = randn(20, 2);
    k[5] = NaN;
    const out = new Float32Array(20);
    const lse = new Float32Array(5);
    for (const level of simdLevels) {
      withSimd(level, () => {
        native().attentionForward(q, k, randn(20, 3), out, lse, null, [1, 1, 5, 5, 4], s, s, s, s, 0.5);
        expect(out.every((x) => Number.isNaN(x)), level).toBe(true);
      });
    }
  });
});

describe('tiled vs naive', () => {
  for (const N of [1, 17, 64, 129, 512, 1000, 4096]) {
    it(`N = ${N}, D = 64`, () => {
      const H = N >= 1000 ? 1 : 2;
      const c: Case = { B: 1, H, Nq: N, Nk: N, D: 64, layout: 'bhnd', mask: N % 2 ? 'random' : 'none' };
      const inputs = setUp(c, N);
      const tiled = runForward(c, inputs);
      const naive = runForward(c, inputs, true);
      expectAllClose(tiled.out.data, naive.out.data, { atol: 2e-6, rtol: 1e-5, label: `N=${N}` });
    });
  }
});

// ---- backward -------------------------------------------------------------------------

describe('attention backward vs float64 gradients', () => {
  const cases: Case[] = [
    { B: 1, H: 1, Nq: 1, Nk: 1, D: 1, layout: 'bhnd' },
    { B: 2, H: 2, Nq: 3, Nk: 5, D: 3, layout: 'padded', outLayout: 'padded', mask: 'random' },
    { B: 1, H: 2, Nq: 65, Nk: 65, D: 64, layout: 'fused', outLayout: 'bnhd' },
    { B: 2, H: 1, Nq: 197, Nk: 130, D: 64, layout: 'bnhd', mask: 'fullRow' },
    { B: 1, H: 1, Nq: 100, Nk: 77, D: 128, layout: 'bhnd', mask: 'random' },
    { B: 1, H: 1, Nq: 70, Nk: 200, D: 3, layout: 'bhnd', scale: 1 },
  ];
  cases.forEach((c, index) => {
    it(label(c), () => {
      const { B, H, Nq, Nk, D } = c;
      const inputs = setUp(c, 500 + 10 * index);
      const gOutDense = randn(B * H * Nq * D, 900 + index);
      const ref = referenceBackward(inputs.qd, inputs.kd, inputs.vd, Float64Array.from(gOutDense), inputs.mask, c, inputs.scale);
      const { out, lse } = runForward(c, inputs);
      const gOut = allocOne(c.outLayout ?? 'bhnd', B, H, Nq, D);
      scatter(gOut, gOutDense, B, H, Nq, D);
      const { q, k, v, mask, scale } = inputs;
      for (const level of simdLevels) {
        withSimd(level, () => {
          // Gradients in q/k/v's layout; for the fused layout gq/gk/gv share one buffer.
          const g = allocQkv(c.layout, c);
          native().attentionBackward(q.data, k.data, v.data, out.data, gOut.data, lse, g.q.data, g.k.data, g.v.data, mask,
            [B, H, Nq, Nk, D], q.strides, k.strides, v.strides, out.strides, scale);
          const tol = { atol: 1e-5, rtol: 1e-5 };
          expectAllClose(gather(g.q, B, H, Nq, D), ref.dq, { ...tol, label: `${level} dq` });
          expectAllClose(gather(g.k, B, H, Nk, D), ref.dk, { ...tol, label: `${level} dk` });
          expectAllClose(gather(g.v, B, H, Nk, D), ref.dv, { ...tol, label: `${level} dv` });
          const parts = c.layout === 'fused' ? [g.q, g.k, g.v] : [g.q];
          expectGapsUntouched(parts, B, H, parts.map((_, i) => (i === 0 ? Nq : Nk)), D, `${level} grads`);
        });
      }
    });
  });

  it('float64 reference gradients match finite differences (with a mask)', () => {
    const s: Shape = { B: 1, H: 1, Nq: 3, Nk: 4, D: 2 };
    const mask = Uint8Array.from([1, 0, 1, 1]);
    const scale = 0.7;
    const q = Float64Array.from(randn(6, 11));
    const k = Float64Array.from(randn(8, 12));
    const v = Float64Array.from(randn(8, 13));
    const g = Float64Array.from(randn(6, 14));
    const loss = (qq: Float64Array, kk: Float64Array, vv: Float64Array) =>
      referenceForward(qq, kk, vv, mask, s, scale).out.reduce((acc, o, i) => acc + o * g[i], 0);
    const ref = referenceBackward(q, k, v, g, mask, s, scale);
    const opts = { atol: 1e-7, rtol: 1e-6 };
    expectAllClose(ref.dq, finiteDifferences(q, (x) => loss(x, k, v), 1e-5), { ...opts, label: 'dq' });
    expectAllClose(ref.dk, finiteDifferences(k, (x) => loss(q, x, v), 1e-5), { ...opts, label: 'dk' });
    expectAllClose(ref.dv, finiteDifferences(v, (x) => loss(q, k, x), 1e-5), { ...opts, label: 'dv' });
    // The masked key gets no gradient.
    expect(ref.dk[2]).toBe(0);
    expect(ref.dv[3]).toBe(0);
  });
});

// ---- determinism and memory -------------------------------------------------------------

describe('attention runtime behaviour', () => {
  /**
   * A child process that loads the same addon with MSTAR_NUM_THREADS = threads, runs forward
   * and backward on fixed inputs and prints a SHA-256 of every output byte.
   */
  function outputHashWithThreads(threads: number): string {
    const script = `
      const { createHash } = require('node:crypto');
      const n = require(process.argv[1]);
      const [B, H, Nq, Nk, D] = [2, 3, 150, 260, 64];
      let seed = 12345;
      const fill = (len) => Float32Array.from({ length: len }, () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1);
      const q = fill(B * H * Nq * D), k = fill(B * H * Nk * D), v = fill(B * H * Nk * D), gOut = fill(B * H * Nq * D);
      const mask = Uint8Array.from({ length: B * Nk }, (_, i) => (i * 7) % 5 !== 0 ? 1 : 0);
      const out = new Float32Array(q.length), lse = new Float32Array(B * H * Nq);
      const gq = new Float32Array(q.length), gk = new Float32Array(k.length), gv = new Float32Array(v.length);
      const sq = [H * Nq * D, Nq * D, D], sk = [H * Nk * D, Nk * D, D], dims = [B, H, Nq, Nk, D];
      n.attentionForward(q, k, v, out, lse, mask, dims, sq, sk, sk, sq, 0.125);
      n.attentionBackward(q, k, v, out, gOut, lse, gq, gk, gv, mask, dims, sq, sk, sk, sq, 0.125);
      const hash = createHash('sha256');
      for (const a of [out, lse, gq, gk, gv]) hash.update(Buffer.from(a.buffer));
      console.log(n.runtimeInfo().threads + ' ' + hash.digest('hex'));
    `;
    const result = spawnSync(process.execPath, ['-e', script, loadNative().path], {
      env: { ...process.env, MSTAR_NUM_THREADS: String(threads) },
      encoding: 'utf8',
    });
    expect(result.status, result.stderr).toBe(0);
    const [reported, hash] = result.stdout.trim().split(' ');
    expect(Number(reported)).toBe(threads);
    return hash;
  }

  it('results are bitwise identical on 1, 2 and 3 threads', () => {
    const one = outputHashWithThreads(1);
    expect(outputHashWithThreads(2)).toBe(one);
    expect(outputHashWithThreads(3)).toBe(one);
  });

  it('workspaces are released and tiled memory does not grow with N² (naive does)', () => {
    const N = 2048;
    const shape: Case = { B: 1, H: 1, Nq: N, Nk: N, D: 64, layout: 'bhnd' };
    const inputs = setUp(shape, 7);
    const threads = native().runtimeInfo().threads;
    const before = native().memoryStats().bytesInUse;
    native().resetPeakBytes();
    const { out, lse } = runForward(shape, inputs);
    const tiledPeak = native().memoryStats().peakBytes - before;
    native().resetPeakBytes();
    const g = allocQkv('bhnd', shape);
    const { q, k, v, scale } = inputs;
    native().attentionBackward(q.data, k.data, v.data, out.data, randn(N * 64, 8), lse, g.q.data, g.k.data, g.v.data,
      null, [1, 1, N, N, 64], q.strides, k.strides, v.strides, out.strides, scale);
    const backwardPeak = native().memoryStats().peakBytes - before;
    native().resetPeakBytes();
    runForward(shape, inputs, true);
    const naivePeak = native().memoryStats().peakBytes - before;
    expect(native().memoryStats().bytesInUse).toBe(before);
    expect(tiledPeak).toBeGreaterThan(0);
    // Per-thread panels only: ~67 KB (forward) and ~132 KB (backward) at D = 64, plus D_i [N].
    expect(tiledPeak).toBeLessThan(threads * 96 * 1024);
    expect(backwardPeak).toBeLessThan(threads * 192 * 1024 + N * 4);
    expect(naivePeak).toBeGreaterThanOrEqual(N * N * 4);
  });
});

// ---- bad input ------------------------------------------------------------------------

describe('attention rejects bad input with a code', () => {
  const B = 1, H = 2, N = 5, D = 4;
  const s: Strides = [H * N * D, N * D, D];
  const dims = [B, H, N, N, D];
  const len = B * H * N * D;
  const q = randn(len, 1);
  const k = randn(len, 2);
  const v = randn(len, 3);
  const out = new Float32Array(len);
  const lse = new Float32Array(B * H * N);
  const gOut = randn(len, 4);
  const fwd = (over: Record<number, unknown>) => {
    const args: unknown[] = [q, k, v, out, lse, null, dims, s, s, s, s, 0.5];
    for (const [i, x] of Object.entries(over)) args[Number(i)] = x;
    return () => (native().attentionForward as (...a: unknown[]) => void)(...args);
  };
  const naive = (over: Record<number, unknown>) => {
    const args: unknown[] = [q, k, v, out, null, dims, s, s, s, s, 0.5];
    for (const [i, x] of Object.entries(over)) args[Number(i)] = x;
    return () => (native().attentionNaiveForward as (...a: unknown[]) => void)(...args);
  };
  const bwd = (over: Record<number, unknown>) => {
    const args: unknown[] = [q, k, v, out, gOut, lse, new Float32Array(len), new Float32Array(len), new Float32Array(len), null, dims, s, s, s, s, 0.5];
    for (const [i, x] of Object.entries(over)) args[Number(i)] = x;
    return () => (native().attentionBackward as (...a: unknown[]) => void)(...args);
  };

  it('accepts the valid call', () => {
    expect(fwd({})).not.toThrow();
    expect(naive({})).not.toThrow();
    expect(bwd({})).not.toThrow();
  });

  it('wrong array kinds', () => {
    expectCode(fwd({ 0: new Float64Array(len) }), 'ERR_DTYPE');
    expectCode(fwd({ 1: Array.from(k) }), 'ERR_DTYPE');
    expectCode(fwd({ 4: null }), 'ERR_DTYPE');
    expectCode(fwd({ 5: new Float32Array(B * N) }), 'ERR_DTYPE');
    expectCode(naive({ 3: new Int32Array(len) }), 'ERR_DTYPE');
    expectCode(bwd({ 4: undefined }), 'ERR_DTYPE');
    expectCode(bwd({ 8: new Uint8Array(len) }), 'ERR_DTYPE');
  });

  it('too-short arrays', () => {
    expectCode(fwd({ 0: q.subarray(1) }), 'ERR_SHAPE');
    expectCode(fwd({ 2: new Float32Array(len - 1) }), 'ERR_SHAPE');
    expectCode(fwd({ 3: new Float32Array(len - 1) }), 'ERR_SHAPE');
    expectCode(fwd({ 4: new Float32Array(B * H * N - 1) }), 'ERR_SHAPE');
    expectCode(fwd({ 5: new Uint8Array(B * N - 1) }), 'ERR_SHAPE');
    expectCode(naive({ 1: new Float32Array(0) }), 'ERR_SHAPE');
    expectCode(bwd({ 4: new Float32Array(len - 1) }), 'ERR_SHAPE');
    expectCode(bwd({ 5: new Float32Array(1) }), 'ERR_SHAPE');
    expectCode(bwd({ 6: new Float32Array(len - 1) }), 'ERR_SHAPE');
    expectCode(bwd({ 7: new Float32Array(len - 1) }), 'ERR_SHAPE');
    expectCode(bwd({ 9: new Uint8Array(0) }), 'ERR_SHAPE');
  });

  it('strides pointing outside the arrays', () => {
    expectCode(fwd({ 7: [H * N * D, N * D, D + 1] }), 'ERR_SHAPE');
    expectCode(fwd({ 8: [0, 1e6, 0] }), 'ERR_SHAPE');
    expect(fwd({ 8: [1e6, N * D, D] })).not.toThrow(); // B = 1: the batch stride is never used
    expectCode(fwd({ 9: [0, -N * D, D] }), 'ERR_SHAPE'); // reaches below element 0
    expectCode(fwd({ 10: [H * N * D, N * D, 2 * D] }), 'ERR_SHAPE');
    expectCode(fwd({ 7: [2 ** 52, 2 ** 52, 2 ** 52] }), 'ERR_SHAPE');
    expectCode(naive({ 6: [0, 0, len] }), 'ERR_SHAPE');
    expectCode(bwd({ 11: [0, 0, 100] }), 'ERR_SHAPE');
    // Reading through overlapping strides is fine, writing is not.
    expect(fwd({ 7: [0, 0, 0] })).not.toThrow();
    expect(fwd({ 10: [0, N * D, D] })).not.toThrow(); // a zero stride over B = 1 is fine
    expectCode(fwd({ 10: [H * N * D, 0, D] }), 'ERR_SHAPE');
    expectCode(bwd({ 11: [H * N * D, D, D] }), 'ERR_SHAPE'); // gq rows of two heads overlap
  });

  it('bad dims, strides and scale', () => {
    expectCode(fwd({ 6: [B, H, N, -1, D] }), 'ERR_ARGUMENT');
    expectCode(fwd({ 6: [B, H, N, N, 0] }), 'ERR_SHAPE');
    expectCode(fwd({ 6: [B, H, N, N] }), 'ERR_SHAPE');
    expectCode(fwd({ 6: [B, H, N, N, 1.5] }), 'ERR_ARGUMENT');
    expectCode(fwd({ 6: 'dims' }), 'ERR_ARGUMENT');
    expectCode(fwd({ 6: [2 ** 40, 2 ** 40, 1, 1, 1] }), 'ERR_SHAPE');
    expectCode(fwd({ 7: [1, 2] }), 'ERR_SHAPE');
    expectCode(fwd({ 8: [1, 2, NaN] }), 'ERR_ARGUMENT');
    expectCode(fwd({ 11: Infinity }), 'ERR_ARGUMENT');
    expectCode(naive({ 10: 'x' }), 'ERR_ARGUMENT');
    expectCode(bwd({ 15: undefined }), 'ERR_ARGUMENT');
  });

  it('scores too large for the naive anchor', () => {
    // k and v may repeat one row (stride 0), so Nk is bounded only by B·H·Nk·D <= 2^53.
    const rows = new Float32Array(2048);
    const one = new Float32Array(1);
    const call = (Nk: number) => () =>
      native().attentionNaiveForward(rows, one, one, new Float32Array(2048), null, [1, 1, 2048, Nk, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 1], 1);
    expectCode(call(2 ** 53 - 1), 'ERR_OOM'); // Nq·Nk overflows int64
    expectCode(call(2 ** 40), 'ERR_OOM'); // 8 PiB of scores: beyond a 48-bit address space
  });

  it('a released (detached) buffer', () => {
    const bytes = len * 4;
    const buffer = native().alloc(bytes, true);
    const view = new Float32Array(buffer);
    native().free(buffer);
    expectCode(fwd({ 0: view }), 'ERR_DETACHED');
    expectCode(naive({ 3: view }), 'ERR_DETACHED');
    expectCode(bwd({ 7: view }), 'ERR_DETACHED');
  });
});
