/**
 * dropoutForward / dropoutBackward (cpp/ops/dropout.cc): a counter-based RNG, so the
 * mask depends on (seed, i) only — identical for any thread count and SIMD level; the
 * keep rate is 1 − p within sampling error; kept values are scaled by 1/(1 − p)
 * (rounded to float once); p = 0 and p = 1 are exact; backward is checked against the
 * analytic gradient and finite differences; bad input at the boundary.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../lib/native.js';
import { expectAllClose, expectCode, finiteDifferences, randn, simdLevels, withThreads } from './helpers.js';

const LEVELS = simdLevels();

function dropout(x: Float32Array, p: number, seed: number) {
  const y = new Float32Array(x.length).fill(12345);
  const mask = new Uint8Array(x.length).fill(7);
  native().dropoutForward(x, y, mask, x.length, p, seed);
  return { y, mask };
}

const same = (a: ArrayBufferView, b: ArrayBufferView) =>
  Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

describe('dropoutForward', () => {
  it('is identical for 1 and 2 threads and every SIMD level', () => {
    const x = randn(300001, 1);
    const reference = withThreads(1, () => dropout(x, 0.3, 42));
    expect(same(withThreads(2, () => dropout(x, 0.3, 42)).y, reference.y)).toBe(true);
    for (const level of LEVELS) {
      native().setSimdLevel(level);
      const run = dropout(x, 0.3, 42);
      expect(same(run.y, reference.y) && same(run.mask, reference.mask), level).toBe(true);
    }
  });

  it('a prefix of a longer call draws the same decisions (they depend on (seed, i) only)', () => {
    const x = randn(100000, 2);
    const long = dropout(x, 0.5, 9);
    const short = dropout(x.subarray(0, 777), 0.5, 9);
    expect(same(short.mask, long.mask.subarray(0, 777))).toBe(true);
  });

  it.each([0.1, 0.5, 0.9])('keeps 1 − p of the entries (p = %f) and scales them by 1/(1 − p)', (p) => {
    const n = 200000;
    const x = randn(n, 3);
    const { y, mask } = dropout(x, p, 1234);
    let kept = 0;
    let invalid = 0;
    const scale = Math.fround(1 / (1 - p));
    const want = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      if (mask[i] > 1) invalid++;
      kept += mask[i];
      want[i] = mask[i] ? Math.fround(x[i] * scale) : 0;
    }
    expect(invalid).toBe(0);
    const sigma = Math.sqrt(n * p * (1 - p));
    expect(Math.abs(kept - n * (1 - p))).toBeLessThan(5 * sigma);
    expect(same(y, want)).toBe(true);
  });

  it('different seeds give different, uncorrelated masks; the same seed the same mask', () => {
    const x = randn(50000, 4);
    const a = dropout(x, 0.5, 1).mask;
    const b = dropout(x, 0.5, 2).mask;
    let both = 0;
    for (let i = 0; i < a.length; i++) both += a[i] & b[i];
    expect(Math.abs(both / a.length - 0.25)).toBeLessThan(0.01);
    expect(same(dropout(x, 0.5, 1).mask, a)).toBe(true);
    expect(same(dropout(x, 0.5, -1).mask, a)).toBe(false); // negative seeds are valid and distinct
  });

  it('p = 0 is the identity and p = 1 zeroes everything (no division by zero)', () => {
    const x = Float32Array.from([...randn(65, 5), Infinity, -Infinity, NaN, 0, -0]);
    const keepAll = dropout(x, 0, 77);
    expect(same(keepAll.y, x)).toBe(true);
    expect(keepAll.mask.every((m) => m === 1)).toBe(true);
    const dropAll = dropout(x, 1, 77);
    expect(dropAll.y.every((v) => Object.is(v, 0))).toBe(true);
    expect(dropAll.mask.every((m) => m === 0)).toBe(true);
  });

  it('handles odd sizes and in-place use', () => {
    for (const n of [0, 1, 3, 65, 769]) {
      const x = randn(n, n + 10);
      const { y, mask } = dropout(x, 0.25, 5);
      const inPlace = Float32Array.from(x);
      native().dropoutForward(inPlace, inPlace, new Uint8Array(n), n, 0.25, 5);
      expect(same(inPlace, y)).toBe(true);
      expectAllClose(y, Array.from(x, (v, i) => (mask[i] ? v / 0.75 : 0)), { atol: 1e-6, rtol: 1e-6 });
    }
  });
});

describe('dropoutBackward', () => {
  it('is gy · mask / (1 − p), matching finite differences of the masked forward', () => {
    for (const p of [0, 0.2, 0.7, 1]) {
      for (const n of [0, 1, 3, 65, 769]) {
        const x = randn(n, n + 20);
        const gy = randn(n, n + 21);
        const { mask } = dropout(x, p, 11);
        const gx = new Float32Array(n).fill(12345);
        native().dropoutBackward(gy, mask, gx, n, p);
        const scale = p === 1 ? 0 : 1 / (1 - p);
        expectAllClose(gx, Array.from(gy, (g, i) => g * mask[i] * scale), { atol: 1e-6, rtol: 1e-6, label: `p=${p} n=${n}` });
        if (n === 65) {
          // L(x) = Σ gy ⊙ dropout(x) with the mask fixed, in float64.
          const loss = (xv: Float64Array) => xv.reduce((s, v, i) => s + gy[i] * mask[i] * v * scale, 0);
          expectAllClose(gx, finiteDifferences(Float64Array.from(x), loss, 1e-3), { atol: 1e-4, rtol: 1e-4 });
        }
      }
    }
  });
});

describe('dropout rejects bad input', () => {
  const x = new Float32Array(8);
  const y = new Float32Array(8);
  const mask = new Uint8Array(8);
  const n = native() as unknown as Record<string, (...args: unknown[]) => unknown>;
  const call = (name: string, ...args: unknown[]) => () => n[name](...args);

  it('p out of [0, 1], bad seeds, sizes, array kinds and lengths', () => {
    expectCode(call('dropoutForward', x, y, mask, 8, 1.5, 1), 'ERR_RANGE');
    expectCode(call('dropoutForward', x, y, mask, 8, -0.1, 1), 'ERR_RANGE');
    expectCode(call('dropoutForward', x, y, mask, 8, NaN, 1), 'ERR_ARGUMENT');
    expectCode(call('dropoutForward', x, y, mask, 8, 0.5, 1.5), 'ERR_ARGUMENT');
    expectCode(call('dropoutForward', x, y, mask, 8, 0.5, 2 ** 60), 'ERR_ARGUMENT');
    expectCode(call('dropoutForward', x, y, mask, -8, 0.5, 1), 'ERR_ARGUMENT');
    expectCode(call('dropoutForward', x, y, new Int8Array(8), 8, 0.5, 1), 'ERR_DTYPE');
    expectCode(call('dropoutForward', x, y, new Uint8Array(7), 8, 0.5, 1), 'ERR_SHAPE');
    expectCode(call('dropoutForward', x, new Float32Array(7), mask, 8, 0.5, 1), 'ERR_SHAPE');
    expectCode(call('dropoutBackward', x, mask, y, 8, 2), 'ERR_RANGE');
    expectCode(call('dropoutBackward', x, new Uint16Array(8), y, 8, 0.5), 'ERR_DTYPE');
    expectCode(call('dropoutBackward', x, mask, new Float32Array(3), 8, 0.5), 'ERR_SHAPE');
  });

  it('detached buffers', () => {
    const buffer = native().alloc(64, true);
    const freed = new Uint8Array(buffer);
    native().free(buffer);
    expectCode(call('dropoutForward', x, y, freed, 0, 0.5, 1), 'ERR_DETACHED');
    expectCode(call('dropoutBackward', x, freed, y, 0, 0.5), 'ERR_DETACHED');
  });
});
