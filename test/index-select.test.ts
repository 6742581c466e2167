/**
 * indexSelect / indexAdd (cpp/ops/index.cc) along the middle axis of [outer, dim, inner]:
 * exact against plain references at odd shapes with repeated indices, indexAdd as the
 * backward of indexSelect (finite differences in float64), duplicates summed in index
 * order whatever the thread count, out-of-range indices rejected before anything is
 * written, and bad input at the boundary.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../lib/native.js';
import { expectAllClose, expectCode, finiteDifferences, makeRng, randn, withThreads } from './helpers.js';

/** `count` indices in [0, dim), with repeats. */
function makeIndices(count: number, dim: number, seed: number): Int32Array {
  const rng = makeRng(seed);
  return Int32Array.from({ length: count }, () => Math.floor(rng() * dim));
}

function select(x: Float32Array, idx: Int32Array, outer: number, dim: number, inner: number): Float32Array {
  const out = new Float32Array(outer * idx.length * inner).fill(12345);
  native().indexSelect(x, idx, out, outer, dim, inner, idx.length);
  return out;
}

function selectRef(x: Float32Array, idx: Int32Array, outer: number, dim: number, inner: number): Float32Array {
  const count = idx.length;
  const out = new Float32Array(outer * count * inner);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < count; c++) {
      for (let i = 0; i < inner; i++) out[(o * count + c) * inner + i] = x[(o * dim + idx[c]) * inner + i];
    }
  }
  return out;
}

/** gx + scatter(g), adding in float32 in increasing c: the order the kernel promises. */
function addRef(g: Float32Array, idx: Int32Array, gx: Float32Array, outer: number, dim: number, inner: number) {
  const count = idx.length;
  const out = Float32Array.from(gx);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < count; c++) {
      for (let i = 0; i < inner; i++) {
        const at = (o * dim + idx[c]) * inner + i;
        out[at] = Math.fround(out[at] + g[(o * count + c) * inner + i]);
      }
    }
  }
  return out;
}

const SHAPES: Array<[number, number, number, number]> = [
  // outer, dim, inner, count
  [1, 1, 1, 1],
  [1, 5, 3, 4],
  [3, 65, 7, 10],
  [2, 769, 1, 65],
  [1, 3, 769, 5],
  [3, 4, 5, 0],
  [0, 4, 5, 3],
  [2, 4, 0, 3],
  [1, 7, 3, 769],
];

describe('indexSelect / indexAdd', () => {
  it.each(SHAPES)('[%i, %i, %i] with %i indices: exact', (outer, dim, inner, count) => {
    const x = randn(outer * dim * inner, dim + count);
    const idx = makeIndices(count, dim, count + 1);
    expect(Array.from(select(x, idx, outer, dim, inner))).toEqual(Array.from(selectRef(x, idx, outer, dim, inner)));
    const g = randn(outer * count * inner, 7);
    const gx = randn(outer * dim * inner, 8);
    const want = addRef(g, idx, gx, outer, dim, inner);
    native().indexAdd(g, idx, gx, outer, dim, inner, count);
    expect(Array.from(gx)).toEqual(Array.from(want));
  });

  it('indexAdd is the backward of indexSelect (finite differences)', () => {
    const [outer, dim, inner] = [2, 6, 3];
    const idx = Int32Array.from([4, 0, 4, 2, 4, 5, 0]);
    const w = randn(outer * idx.length * inner, 3);
    const x = randn(outer * dim * inner, 4);
    const loss = (xv: Float64Array) => {
      let s = 0;
      for (let o = 0; o < outer; o++) {
        for (let c = 0; c < idx.length; c++) {
          for (let i = 0; i < inner; i++) s += w[(o * idx.length + c) * inner + i] * xv[(o * dim + idx[c]) * inner + i];
        }
      }
      return s;
    };
    const numeric = finiteDifferences(Float64Array.from(x), loss, 1e-2);
    const gx = new Float32Array(x.length);
    native().indexAdd(w, idx, gx, outer, dim, inner, idx.length);
    expectAllClose(gx, numeric, { atol: 1e-4, rtol: 1e-5 });
  });

  it('duplicates add in index order, identically for 1 and 2 threads', () => {
    const [outer, dim, inner, count] = [2, 50, 769, 300];
    const idx = makeIndices(count, dim, 99);
    const g = randn(outer * count * inner, 5, 1e3);
    const base = randn(outer * dim * inner, 6);
    const run = (threads: number) =>
      withThreads(threads, () => {
        const gx = Float32Array.from(base);
        native().indexAdd(g, idx, gx, outer, dim, inner, count);
        return gx;
      });
    const one = run(1);
    expect(Buffer.compare(Buffer.from(one.buffer), Buffer.from(run(2).buffer))).toBe(0);
    expect(Buffer.compare(Buffer.from(one.buffer), Buffer.from(addRef(g, idx, base, outer, dim, inner).buffer))).toBe(0);
    const x = randn(outer * dim * inner, 7);
    const sel1 = withThreads(1, () => select(x, idx, outer, dim, inner));
    expect(Buffer.compare(Buffer.from(sel1.buffer), Buffer.from(withThreads(2, () => select(x, idx, outer, dim, inner)).buffer))).toBe(0);
  });

  it('out-of-range indices are rejected, naming the index, before anything is written', () => {
    const x = randn(2 * 5 * 3, 1);
    for (const bad of [-1, 5, 2 ** 31 - 1, -(2 ** 31)]) {
      const idx = Int32Array.from([0, 4, bad, 1]);
      const out = new Float32Array(2 * 4 * 3).fill(7);
      let message = '';
      try {
        native().indexSelect(x, idx, out, 2, 5, 3, 4);
      } catch (error) {
        expect((error as { code?: string }).code).toBe('ERR_RANGE');
        message = (error as Error).message;
      }
      expect(message).toContain(`idx[2] = ${bad}`);
      expect(out.every((v) => v === 7)).toBe(true);
      const gx = new Float32Array(2 * 5 * 3).fill(7);
      expectCode(() => native().indexAdd(out, idx, gx, 2, 5, 3, 4), 'ERR_RANGE');
      expect(gx.every((v) => v === 7)).toBe(true);
    }
    // dim 0 has no valid index at all; zero indices are fine.
    expectCode(() => native().indexSelect(new Float32Array(0), Int32Array.from([0]), new Float32Array(3), 1, 0, 3, 1), 'ERR_RANGE');
    native().indexSelect(new Float32Array(0), new Int32Array(0), new Float32Array(0), 1, 0, 3, 0);
  });
});

describe('indexSelect / indexAdd reject bad input', () => {
  const x = new Float32Array(30);
  const idx = Int32Array.from([0, 1]);
  const out = new Float32Array(12);
  const n = native() as unknown as Record<string, (...args: unknown[]) => unknown>;
  const call = (name: string, ...args: unknown[]) => () => n[name](...args);

  it('array kinds, lengths and sizes', () => {
    expectCode(call('indexSelect', x, Float32Array.from([0, 1]), out, 2, 5, 3, 2), 'ERR_DTYPE');
    expectCode(call('indexSelect', x, [0, 1], out, 2, 5, 3, 2), 'ERR_DTYPE');
    expectCode(call('indexSelect', x, idx, new Float64Array(12), 2, 5, 3, 2), 'ERR_DTYPE');
    expectCode(call('indexSelect', x, idx, out, 2, 5, 3, 3), 'ERR_SHAPE'); // idx too short
    expectCode(call('indexSelect', x, idx, out, 2, 6, 3, 2), 'ERR_SHAPE'); // x too short
    expectCode(call('indexSelect', x, idx, new Float32Array(11), 2, 5, 3, 2), 'ERR_SHAPE');
    expectCode(call('indexSelect', x, idx, out, -2, 5, 3, 2), 'ERR_ARGUMENT');
    expectCode(call('indexSelect', x, idx, out, 2, 5, 3.5, 2), 'ERR_ARGUMENT');
    expectCode(call('indexSelect', x, idx, out, 2 ** 30, 2 ** 30, 2 ** 30, 2), 'ERR_SHAPE');
    expectCode(call('indexAdd', out, idx, new Float32Array(29), 2, 5, 3, 2), 'ERR_SHAPE');
    expectCode(call('indexAdd', new Float32Array(11), idx, x, 2, 5, 3, 2), 'ERR_SHAPE');
    expectCode(call('indexAdd', out, new Uint32Array(2), x, 2, 5, 3, 2), 'ERR_DTYPE');
  });

  it('detached buffers', () => {
    const buffer = native().alloc(64, true);
    const freed = new Int32Array(buffer);
    native().free(buffer);
    expectCode(call('indexSelect', x, freed, out, 2, 5, 3, 0), 'ERR_DETACHED');
    expectCode(call('indexAdd', out, freed, x, 2, 5, 3, 0), 'ERR_DETACHED');
  });
});
