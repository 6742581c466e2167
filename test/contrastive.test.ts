/**
 * The tiled contrastive (symmetric InfoNCE) loss against a float64 reference that forms
 * the whole N×N matrix: loss, gradients of a, b and logit_scale, at odd sizes and tile
 * sizes, every SIMD level; finite differences through autograd; memory stays O(N·D).
 */
import { describe, expect, it } from 'vitest';
import { memoryStats, ops, resetPeakMemory, Tensor, tidy } from '../lib/index.js';
import { native } from '../lib/native.js';
import { gradcheck } from './gradcheck.js';
import { expectAllClose, expectCode, randn, simdLevels } from './helpers.js';

/** Materialized float64 CLIP loss and its gradients. */
function reference(a: Float32Array, b: Float32Array, n: number, d: number, logScale: number) {
  const scale = Math.exp(logScale);
  const s = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += a[i * d + k] * b[j * d + k];
      s[i * n + j] = scale * dot;
    }
  }
  const lse = (get: (k: number) => number): number => {
    let m = -Infinity;
    for (let k = 0; k < n; k++) m = Math.max(m, get(k));
    let t = 0;
    for (let k = 0; k < n; k++) t += Math.exp(get(k) - m);
    return m + Math.log(t);
  };
  const lseRows = Array.from({ length: n }, (_, i) => lse((j) => s[i * n + j]));
  const lseCols = Array.from({ length: n }, (_, j) => lse((i) => s[i * n + j]));
  let loss = 0;
  for (let i = 0; i < n; i++) loss += (lseRows[i] - s[i * n + i] + lseCols[i] - s[i * n + i]) / (2 * n);
  const gradA = new Float64Array(n * d);
  const gradB = new Float64Array(n * d);
  let gradLogScale = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const g = (Math.exp(s[i * n + j] - lseRows[i]) + Math.exp(s[i * n + j] - lseCols[j]) - (i === j ? 2 : 0)) / (2 * n);
      gradLogScale += g * s[i * n + j];
      for (let k = 0; k < d; k++) {
        gradA[i * d + k] += scale * g * b[j * d + k];
        gradB[j * d + k] += scale * g * a[i * d + k];
      }
    }
  }
  return { loss, gradA, gradB, gradLogScale };
}

function normalizedRows(n: number, d: number, seed: number): Float32Array {
  const x = randn(n * d, seed);
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let k = 0; k < d; k++) norm += x[i * d + k] ** 2;
    for (let k = 0; k < d; k++) x[i * d + k] /= Math.sqrt(norm);
  }
  return x;
}

describe('contrastiveLoss (tiled symmetric InfoNCE)', () => {
  const cases = [
    { n: 1, d: 3, logScale: 0, tileRows: 0 },
    { n: 7, d: 5, logScale: Math.log(1 / 0.07), tileRows: 3 },
    { n: 33, d: 17, logScale: 2, tileRows: 1 },
    { n: 130, d: 64, logScale: Math.log(100), tileRows: 0 },
    { n: 130, d: 64, logScale: Math.log(100), tileRows: 47 },
  ];
  for (const level of simdLevels()) {
    for (const c of cases) {
      it(`${level}: n=${c.n} d=${c.d} scale=${Math.exp(c.logScale).toFixed(2)} tileRows=${c.tileRows} matches the materialized float64 loss and gradients`, () => {
        const previous = native().setSimdLevel(level);
        try {
          tidy(() => {
            const av = normalizedRows(c.n, c.d, 1);
            const bv = normalizedRows(c.n, c.d, 2);
            const ref = reference(av, bv, c.n, c.d, c.logScale);
            const a = Tensor.fromArray(av, [c.n, c.d]).requireGrad();
            const b = Tensor.fromArray(bv, [c.n, c.d]).requireGrad();
            const t = Tensor.scalar(c.logScale).requireGrad();
            const loss = ops.contrastiveLoss(a, b, t, { tileRows: c.tileRows });
            expect(loss.item()).toBeCloseTo(ref.loss, 4);
            loss.backward();
            expectAllClose(a.grad!.toFloat32Array(), ref.gradA, { atol: 2e-5, rtol: 1e-3 });
            expectAllClose(b.grad!.toFloat32Array(), ref.gradB, { atol: 2e-5, rtol: 1e-3 });
            expect(t.grad!.item()).toBeCloseTo(ref.gradLogScale, 4);
          });
        } finally {
          native().setSimdLevel(previous as 'portable' | 'avx2' | 'avx512');
        }
      });
    }
  }

  it('gradients agree with finite differences (through l2Normalize, fixed and learnable scale)', () => {
    gradcheck(([a, b, t]) => ops.contrastiveLoss(ops.l2Normalize(a), ops.l2Normalize(b), t, { tileRows: 2 }), [
      { shape: [5, 4] },
      { shape: [5, 4] },
      { shape: [1], values: Float32Array.of(1.5) },
    ]);
    gradcheck(([a, b]) => ops.contrastiveLoss(a, b, 0.5), [{ shape: [6, 3] }, { shape: [6, 3] }], { label: 'fixed scale' });
  });

  it('l2Normalize matches x / ‖x‖', () => {
    tidy(() => {
      const x = randn(12, 3);
      const y = ops.l2Normalize(Tensor.fromArray(x, [3, 4])).toFloat32Array();
      for (let i = 0; i < 3; i++) {
        const norm = Math.hypot(...x.subarray(i * 4, i * 4 + 4));
        expectAllClose(y.subarray(i * 4, i * 4 + 4), Array.from(x.subarray(i * 4, i * 4 + 4), (v) => v / norm), { atol: 1e-6 });
      }
    });
  });

  it('never forms the N×N matrix: peak memory is O(tileRows·N + N·D)', () => {
    const n = 4096;
    const d = 32;
    tidy(() => {
      const a = Tensor.fromArray(normalizedRows(n, d, 3), [n, d]).requireGrad();
      const b = Tensor.fromArray(normalizedRows(n, d, 4), [n, d]).requireGrad();
      const before = memoryStats().bytesInUse;
      resetPeakMemory();
      const loss = ops.contrastiveLoss(a, b, Math.log(10), { tileRows: 128 });
      loss.backward();
      const peak = memoryStats().peakBytes - before;
      expect(Number.isFinite(loss.item())).toBe(true);
      expect(peak).toBeLessThan(128 * n * 4 + 4 * n * d * 4 + (1 << 20)); // one tile + grads + slack; N×N would be 64 MiB
    });
  });

  it('rejects bad shapes and scales with coded errors', () => {
    tidy(() => {
      const a = Tensor.zeros([4, 3]);
      expectCode(() => ops.contrastiveLoss(a, Tensor.zeros([4, 2]), 0), 'ERR_SHAPE');
      expectCode(() => ops.contrastiveLoss(a, Tensor.zeros([5, 3]), 0), 'ERR_SHAPE');
      expectCode(() => ops.contrastiveLoss(Tensor.zeros([0, 3]), Tensor.zeros([0, 3]), 0), 'ERR_SHAPE');
      expectCode(() => ops.contrastiveLoss(a, a, Tensor.zeros([2])), 'ERR_SHAPE');
      expectCode(() => ops.contrastiveLoss(a, a, 1000), 'ERR_RANGE');
      expectCode(() => ops.contrastiveLoss(a, a, 0, { tileRows: -1 }), 'ERR_ARGUMENT');
      const f = new Float32Array(12);
      expectCode(() => native().contrastiveForward(f, f, 4, 4, 1, 0, new Float32Array(4), new Float32Array(4)), 'ERR_SHAPE');
      expectCode(() => native().contrastiveForward(f, f, 4, 3, -1, 0, new Float32Array(4), new Float32Array(4)), 'ERR_ARGUMENT');
      expectCode(() => native().contrastiveForward(f, f, 4, 3, 1, 0, new Float32Array(3), new Float32Array(4)), 'ERR_SHAPE');
    });
  });
});
