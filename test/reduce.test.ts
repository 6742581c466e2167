/**
 * reduce and sumSquares (cpp/ops/reduce.cc) against float64 references at every SIMD
 * level this CPU has: sum / mean / max+argmax over the middle axis of [outer, dim, inner]
 * at odd shapes, NaN propagation and tie-breaking as torch.max(dim), empty axes,
 * thread-count independence (the summation order is fixed by the shape), bad input.
 * These reductions have no native backward: autograd broadcasts the output gradient.
 */
import { describe, expect, it } from 'vitest';
import { native, ReduceOp } from '../lib/native.js';
import { expectAllClose, expectCode, randn, simdLevels, withThreads } from './helpers.js';

const LEVELS = simdLevels();

interface Reduced {
  out: Float32Array;
  argmax: Int32Array | null;
}

function reduce(op: ReduceOp, x: Float32Array, outer: number, dim: number, inner: number, withArgmax = true): Reduced {
  const out = new Float32Array(outer * inner).fill(12345);
  const argmax = op === ReduceOp.Max && withArgmax ? new Int32Array(outer * inner).fill(-7) : null;
  native().reduce(op, x, out, outer, dim, inner, argmax);
  return { out, argmax };
}

/** float64 sums/means; max and first argmax with NaN winning (torch.max(dim)). */
function reduceRef(op: ReduceOp, x: Float32Array, outer: number, dim: number, inner: number) {
  const out = new Float64Array(outer * inner);
  const argmax = new Int32Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let sum = 0;
      let best = -Infinity;
      let at = 0;
      for (let d = 0; d < dim; d++) {
        const v = x[(o * dim + d) * inner + i];
        sum += v;
        if (d === 0 || (Number.isNaN(v) && !Number.isNaN(best)) || v > best) {
          best = v;
          at = d;
        }
      }
      out[o * inner + i] = op === ReduceOp.Sum ? sum : op === ReduceOp.Mean ? sum / dim : best;
      argmax[o * inner + i] = at;
    }
  }
  return { out, argmax };
}

const SHAPES: Array<[number, number, number]> = [
  [1, 1, 1],
  [3, 65, 1],
  [3, 65, 7],
  [1, 769, 1],
  [2, 3, 769],
  [65, 3, 3],
  [0, 5, 3],
  [4, 5, 0],
];

describe.each(LEVELS)('reduce at simd=%s', (level) => {
  it.each(SHAPES)('[%i, %i, %i]: sum, mean, max and argmax', (outer, dim, inner) => {
    native().setSimdLevel(level);
    const x = randn(outer * dim * inner, outer * 100 + dim + inner);
    // Repeated values so argmax ties happen.
    for (let i = 5; i < x.length; i += 11) x[i] = x[i - 5];
    for (const op of [ReduceOp.Sum, ReduceOp.Mean, ReduceOp.Max]) {
      const got = reduce(op, x, outer, dim, inner);
      const want = reduceRef(op, x, outer, dim, inner);
      const exact = op === ReduceOp.Max;
      expectAllClose(got.out, want.out, { atol: exact ? 0 : 1e-6, rtol: exact ? 0 : 1e-6, label: `op ${op}` });
      if (got.argmax) expect(Array.from(got.argmax)).toEqual(Array.from(want.argmax));
    }
    if (outer * inner > 0) {
      const plain = reduce(ReduceOp.Max, x, outer, dim, inner, false);
      expect(Array.from(plain.out)).toEqual(Array.from(reduce(ReduceOp.Max, x, outer, dim, inner).out));
    }
  });

  it('max propagates NaN with the index of the first NaN; ±Inf; all equal', () => {
    native().setSimdLevel(level);
    for (const [outer, dim, inner] of [[4, 40, 1], [4, 40, 3]]) {
      const x = randn(outer * dim * inner, 9);
      const put = (o: number, d: number, i: number, v: number) => (x[(o * dim + d) * inner + i] = v);
      for (let i = 0; i < inner; i++) {
        put(0, 17, i, NaN);
        put(0, 30, i, NaN);
        put(0, 31, i, Infinity);
        put(1, 39, i, NaN);
        put(2, 3, i, Infinity);
        put(2, 20, i, Infinity);
        for (let d = 0; d < dim; d++) put(3, d, i, -Infinity);
      }
      const got = reduce(ReduceOp.Max, x, outer, dim, inner);
      const want = reduceRef(ReduceOp.Max, x, outer, dim, inner);
      expectAllClose(got.out, want.out, { atol: 0, rtol: 0 });
      expect(Array.from(got.argmax!)).toEqual(Array.from(want.argmax));
      expect(got.argmax![0]).toBe(17);
      expect(got.argmax![2 * inner]).toBe(3);
      expect(got.out[3 * inner]).toBe(-Infinity);
      expect(got.argmax![3 * inner]).toBe(0);
      // Sums see the NaN too.
      expect(Number.isNaN(reduce(ReduceOp.Sum, x, outer, dim, inner).out[0])).toBe(true);
    }
  });

  it('an empty axis sums to 0, means to NaN and has no max', () => {
    native().setSimdLevel(level);
    const x = new Float32Array(0);
    expect(Array.from(reduce(ReduceOp.Sum, x, 3, 0, 2).out)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(reduce(ReduceOp.Mean, x, 3, 0, 2).out.every(Number.isNaN)).toBe(true);
    expectCode(() => reduce(ReduceOp.Max, x, 3, 0, 2), 'ERR_SHAPE');
    reduce(ReduceOp.Max, x, 0, 0, 2); // nothing to produce: fine
  });

  it('sumSquares matches float64', () => {
    native().setSimdLevel(level);
    for (const n of [0, 1, 3, 65, 769, 100003]) {
      const x = randn(n, n + 1, 3);
      let want = 0;
      for (let i = 0; i < n; i++) want += x[i] * x[i];
      const got = native().sumSquares(x, n);
      expect(Math.abs(got - want)).toBeLessThanOrEqual(1e-12 * Math.max(want, 1));
    }
    expect(native().sumSquares(Float32Array.from([3, 4, 100]), 2)).toBe(25);
  });
});

describe('reduce: thread counts and SIMD levels', () => {
  it('sums have the same bits on every SIMD level (fixed summation order)', () => {
    const x = randn(3 * 1001 * 7, 12);
    const bits = LEVELS.map((level) => {
      native().setSimdLevel(level);
      return [reduce(ReduceOp.Sum, x, 3, 1001, 7).out, reduce(ReduceOp.Mean, x, 21, 1001, 1).out, native().sumSquares(x, x.length)];
    });
    for (const b of bits) expect(b).toEqual(bits[0]);
  });

  it('large sums give the same bits with 1 and 2 threads', () => {
    for (const [outer, dim, inner] of [[1, 200003, 1], [1, 70001, 3], [3, 50001, 1], [1, 300, 700], [700, 300, 1], [2, 70, 769]]) {
      const x = randn(outer * dim * inner, dim);
      for (const op of [ReduceOp.Sum, ReduceOp.Mean, ReduceOp.Max]) {
        const one = withThreads(1, () => reduce(op, x, outer, dim, inner));
        const two = withThreads(2, () => reduce(op, x, outer, dim, inner));
        expect(Buffer.compare(Buffer.from(one.out.buffer), Buffer.from(two.out.buffer)), `op ${op} [${outer},${dim},${inner}]`).toBe(0);
        if (one.argmax) expect(Array.from(one.argmax)).toEqual(Array.from(two.argmax!));
        const want = reduceRef(op, x, outer, dim, inner);
        expectAllClose(one.out, want.out, { atol: 1e-5, rtol: 1e-6, label: `op ${op}` });
      }
    }
    const x = randn(300001, 5);
    const one = withThreads(1, () => native().sumSquares(x, x.length));
    expect(withThreads(2, () => native().sumSquares(x, x.length))).toBe(one);
  });
});

describe('reduce rejects bad input', () => {
  const x = new Float32Array(12);
  const out = new Float32Array(4);
  const call = (...args: unknown[]) => () => (native().reduce as (...a: unknown[]) => void)(...args);

  it('op codes, argmax use, array kinds and lengths', () => {
    expectCode(call(3, x, out, 4, 3, 1, null), 'ERR_ARGUMENT');
    expectCode(call(-1, x, out, 4, 3, 1, null), 'ERR_ARGUMENT');
    expectCode(call(ReduceOp.Sum, x, out, 4, 3, 1, new Int32Array(4)), 'ERR_ARGUMENT');
    expectCode(call(ReduceOp.Max, x, out, 4, 3, 1, new Float32Array(4)), 'ERR_DTYPE');
    expectCode(call(ReduceOp.Max, x, out, 4, 3, 1, new Int32Array(3)), 'ERR_SHAPE');
    expectCode(call(ReduceOp.Sum, new Float64Array(12), out, 4, 3, 1, null), 'ERR_DTYPE');
    expectCode(call(ReduceOp.Sum, x, out, 4, 4, 1, null), 'ERR_SHAPE');
    expectCode(call(ReduceOp.Sum, x, new Float32Array(3), 4, 3, 1, null), 'ERR_SHAPE');
    expectCode(call(ReduceOp.Sum, x, out, -4, 3, 1, null), 'ERR_ARGUMENT');
    expectCode(call(ReduceOp.Sum, x, out, 4, 1.5, 1, null), 'ERR_ARGUMENT');
    expectCode(call(ReduceOp.Sum, x, out, 2 ** 30, 2 ** 30, 2 ** 30, null), 'ERR_SHAPE');
    expectCode(() => native().sumSquares(x, 13), 'ERR_SHAPE');
    expectCode(() => native().sumSquares(new Int32Array(4) as unknown as Float32Array, 4), 'ERR_DTYPE');
  });

  it('detached buffers', () => {
    const buffer = native().alloc(64, true);
    const freed = new Float32Array(buffer);
    native().free(buffer);
    expectCode(call(ReduceOp.Sum, freed, out, 0, 3, 1, null), 'ERR_DETACHED');
    expectCode(call(ReduceOp.Sum, x, freed, 0, 3, 1, null), 'ERR_DETACHED');
    expectCode(() => native().sumSquares(freed, 0), 'ERR_DETACHED');
  });
});
