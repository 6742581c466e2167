/**
 * Shared test utilities: a seeded RNG, float64 references, a closeness check in
 * the llm.c style (|a − r| ≤ atol + rtol·|r|, non-finite references skipped,
 * first mismatches printed) and finite differences.
 */
import { afterAll, expect } from 'vitest';
import { native } from '../lib/native.js';
import { uniformGenerator as makeRng } from '../lib/random.js';

/** Mulberry32: the library's own seeded uniform generator. */
export { makeRng };

/** Standard normal samples (Box–Muller) as Float32Array. */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const rng = makeRng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(rng(), 1e-12);
    const v = rng();
    const r = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** Uniform samples in [lo, hi) as Float32Array. */
export function uniform(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const rng = makeRng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rng();
  return out;
}

export interface CloseOptions {
  atol?: number;
  rtol?: number;
  label?: string;
}

/** Asserts |actual − expected| ≤ atol + rtol·|expected| elementwise; prints the first mismatches. */
export function expectAllClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { atol = 1e-5, rtol = 1e-5, label = 'values' }: CloseOptions = {},
): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  const bad: string[] = [];
  let count = 0;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const r = expected[i];
    const a = actual[i];
    if (!Number.isFinite(r)) {
      if (Number.isNaN(r) ? !Number.isNaN(a) : a !== r) {
        count++;
        if (bad.length < 8) bad.push(`  [${i}] got ${a}, want ${r}`);
      }
      continue;
    }
    const err = Math.abs(a - r);
    const tol = atol + rtol * Math.abs(r);
    if (!(err <= tol)) {
      count++;
      worst = Math.max(worst, Number.isNaN(err) ? Infinity : err);
      if (bad.length < 8) bad.push(`  [${i}] got ${a}, want ${r} (err ${err.toExponential(2)} > tol ${tol.toExponential(2)})`);
    }
  }
  if (count > 0) {
    expect.fail(`${label}: ${count} of ${expected.length} mismatches (worst ${worst.toExponential(2)})\n${bad.join('\n')}`);
  }
}

/** Max |a − b|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/**
 * Central finite differences of a scalar function f(x) (evaluated in float64 by the
 * caller) with respect to each entry of x: (f(x + h e_i) − f(x − h e_i)) / 2h.
 */
export function finiteDifferences(x: Float64Array, f: (x: Float64Array) => number, h = 1e-3): Float64Array {
  const grad = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const saved = x[i];
    x[i] = saved + h;
    const plus = f(x);
    x[i] = saved - h;
    const minus = f(x);
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

/** Expects fn to throw an Error whose `code` is `code`. */
export function expectCode(fn: () => unknown, code: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, `expected an error with code ${code}`).toBeInstanceOf(Error);
  expect((thrown as { code?: string }).code, (thrown as Error).message).toBe(code);
}

/**
 * The SIMD levels this CPU supports (each kernel test runs at every one); the best
 * level is restored after the calling file's tests.
 */
export function simdLevels(): ('portable' | 'avx2' | 'avx512')[] {
  const levels = (['portable', 'avx2', 'avx512'] as const).filter((l) => native().setSimdLevel(l) === l);
  afterAll(() => {
    native().setSimdLevel('avx512'); // capped to the best this CPU has
  });
  return levels;
}

/** Runs fn with the native pool at `threads` threads, then restores the previous count. */
export function withThreads<T>(threads: number, fn: () => T): T {
  const saved = native().runtimeInfo().threads;
  native().setNumThreads(threads);
  try {
    return fn();
  } finally {
    native().setNumThreads(saved);
  }
}
