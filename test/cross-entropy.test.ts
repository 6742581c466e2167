/**
 * crossEntropyForward / crossEntropyBackward (cpp/ops/cross_entropy.cc) against float64
 * references at every SIMD level this CPU has: odd shapes, ignored rows (target −1),
 * finite differences, logits near ±1e4, −Infinity masks, and bad input at the boundary.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../lib/native.js';
import { expectAllClose, expectCode, finiteDifferences, makeRng, randn, simdLevels } from './helpers.js';

const SHAPES: Array<[number, number]> = [[0, 5], [1, 1], [3, 3], [65, 7], [3, 769], [1, 769], [65, 65]];
const LEVELS = simdLevels();

/** Targets in [0, cols), about one row in five ignored (−1). */
function makeTargets(rows: number, cols: number, seed: number): Int32Array {
  const rng = makeRng(seed);
  const t = new Int32Array(rows);
  for (let r = 0; r < rows; r++) t[r] = rng() < 0.2 ? -1 : Math.floor(rng() * cols);
  return t;
}

function logSumExp(x: ArrayLike<number>, o: number, cols: number): number {
  let max = -Infinity;
  for (let c = 0; c < cols; c++) max = Math.max(max, x[o + c]);
  let sum = 0;
  for (let c = 0; c < cols; c++) sum += Math.exp(x[o + c] - max);
  return max + Math.log(sum);
}

function lossRef(x: ArrayLike<number>, t: Int32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) out[r] = t[r] === -1 ? 0 : logSumExp(x, r * cols, cols) - x[r * cols + t[r]];
  return out;
}

function gradRef(x: ArrayLike<number>, t: Int32Array, g: ArrayLike<number>, rows: number, cols: number) {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    if (t[r] === -1) continue;
    const o = r * cols;
    const lse = logSumExp(x, o, cols);
    for (let c = 0; c < cols; c++) out[o + c] = g[r] * (Math.exp(x[o + c] - lse) - (c === t[r] ? 1 : 0));
  }
  return out;
}

function forward(x: Float32Array, t: Int32Array, rows: number, cols: number): Float32Array {
  const losses = new Float32Array(rows).fill(NaN);
  native().crossEntropyForward(x, t, losses, rows, cols);
  return losses;
}

function backward(x: Float32Array, t: Int32Array, g: Float32Array, rows: number, cols: number): Float32Array {
  const gx = new Float32Array(rows * cols).fill(NaN);
  native().crossEntropyBackward(x, t, g, gx, rows, cols);
  return gx;
}

for (const level of LEVELS) {
  describe(`cross entropy [${level}]`, () => {
    const setLevel = () => expect(native().setSimdLevel(level)).toBe(level);

    it('forward matches float64 at odd shapes, ignored rows give 0', () => {
      setLevel();
      for (const [rows, cols] of SHAPES) {
        const x = randn(rows * cols, rows * 100 + cols, 3);
        const t = makeTargets(rows, cols, rows + cols);
        const losses = forward(x, t, rows, cols);
        expectAllClose(losses, lossRef(x, t, rows, cols), { atol: 1e-6, rtol: 1e-6, label: `${rows}x${cols}` });
        t.forEach((target, r) => target === -1 && expect(losses[r]).toBe(0));
      }
    });

    it('backward matches the analytic float64 gradient', () => {
      setLevel();
      for (const [rows, cols] of SHAPES) {
        const x = randn(rows * cols, rows * 3 + cols, 3);
        const t = makeTargets(rows, cols, rows * 5 + cols);
        const g = randn(rows, rows + 17);
        expectAllClose(backward(x, t, g, rows, cols), gradRef(x, t, g, rows, cols), {
          atol: 1e-7,
          rtol: 2e-6,
          label: `${rows}x${cols}`,
        });
      }
    });

    it('backward matches finite differences of the float64 loss', () => {
      setLevel();
      const rows = 4;
      const cols = 6;
      const x = randn(rows * cols, 31, 2);
      const t = Int32Array.from([2, -1, 0, 5]);
      const g = randn(rows, 32);
      const loss = (x64: Float64Array) => lossRef(x64, t, rows, cols).reduce((s, v, r) => s + v * g[r], 0);
      expectAllClose(backward(x, t, g, rows, cols), finiteDifferences(Float64Array.from(x), loss), {
        atol: 1e-5,
        rtol: 1e-4,
        label: 'fd',
      });
    });

    it('is exact where the target dominates and handles logits near ±1e4', () => {
      setLevel();
      const rows = 3;
      const cols = 40;
      const x = randn(rows * cols, 41, 1e4);
      const t = Int32Array.from([7, 0, 39]);
      x[7] = 3e4; // row 0: the target wins by far, p_t = 1 and the loss is ~0
      const g = Float32Array.from([1, -2, 0.5]);
      expectAllClose(forward(x, t, rows, cols), lossRef(x, t, rows, cols), { atol: 1e-6, rtol: 1e-6, label: 'loss' });
      expectAllClose(backward(x, t, g, rows, cols), gradRef(x, t, g, rows, cols), { atol: 1e-7, rtol: 2e-6, label: 'grad' });
      // A target barely dominant: g·(p_t − 1) must keep its precision (no float cancellation).
      const y = Float32Array.from([0, -20, -21]);
      const gy = backward(y, Int32Array.from([0]), Float32Array.from([1]), 1, 3);
      expectAllClose(gy, gradRef(y, Int32Array.from([0]), [1], 1, 3), { atol: 0, rtol: 1e-6, label: 'p_t near 1' });
      // ... and so must the loss, log(1 + 2.8e-9).
      const tiny = forward(y, Int32Array.from([0]), 1, 3);
      expectAllClose(tiny, lossRef(y, Int32Array.from([0]), 1, 3), { atol: 0, rtol: 1e-6, label: 'loss near 0' });
    });

    it('handles −Infinity masks: +Infinity loss at a masked target, NaN for an all-masked row', () => {
      setLevel();
      const cols = 9;
      const x = randn(3 * cols, 51);
      x[2] = -Infinity; // row 0: a masked non-target
      x[cols + 4] = -Infinity; // row 1: the target itself is masked
      x.fill(-Infinity, 2 * cols, 3 * cols); // row 2: everything masked
      const t = Int32Array.from([1, 4, 0]);
      const g = Float32Array.from([1, 1, 1]);
      const losses = forward(x, t, 3, cols);
      expectAllClose(losses.subarray(0, 1), lossRef(x, t, 1, cols), { atol: 1e-6, rtol: 1e-6, label: 'row 0' });
      expect(losses[1]).toBe(Infinity);
      expect(losses[2]).toBeNaN();
      const gx = backward(x, t, g, 3, cols);
      expect(gx[2]).toBe(0);
      expect(gx[cols + 4]).toBe(-1);
      expectAllClose(gx.subarray(0, 2 * cols), gradRef(x, t, g, 3, cols).subarray(0, 2 * cols), {
        atol: 1e-7,
        rtol: 2e-6,
        label: 'masked grad',
      });
    });
  });
}

describe('cross entropy bad input', () => {
  const x = new Float32Array(6);
  const losses = new Float32Array(2);
  const t = Int32Array.from([0, 1]);

  it('rejects an out-of-range target before writing anything, naming the row', () => {
    for (const bad of [3, -2, 2 ** 31 - 1]) {
      const out = new Float32Array(2).fill(7);
      let error: (Error & { code?: string }) | undefined;
      try {
        native().crossEntropyForward(x, Int32Array.from([1, bad]), out, 2, 3);
      } catch (e) {
        error = e as Error & { code?: string };
      }
      expect(error?.code).toBe('ERR_RANGE');
      expect(error?.message).toContain('row 1');
      expect(Array.from(out)).toEqual([7, 7]);
      const gx = new Float32Array(6).fill(7);
      expectCode(() => native().crossEntropyBackward(x, Int32Array.from([bad, 0]), losses, gx, 2, 3), 'ERR_RANGE');
      expect(Array.from(gx)).toEqual([7, 7, 7, 7, 7, 7]);
    }
    // With no classes, only ignored rows are valid.
    native().crossEntropyForward(new Float32Array(0), Int32Array.from([-1]), losses, 1, 0);
    expect(losses[0]).toBe(0);
    expectCode(() => native().crossEntropyForward(new Float32Array(0), Int32Array.from([0]), losses, 1, 0), 'ERR_RANGE');
  });

  it('rejects wrong array kinds', () => {
    expectCode(() => native().crossEntropyForward(x, Float32Array.from([0, 1]) as never, losses, 2, 3), 'ERR_DTYPE');
    expectCode(() => native().crossEntropyForward(x, new Uint32Array(2) as never, losses, 2, 3), 'ERR_DTYPE');
    expectCode(() => native().crossEntropyForward(x, [0, 1] as never, losses, 2, 3), 'ERR_DTYPE');
    expectCode(() => native().crossEntropyBackward(x, t, new Float64Array(2) as never, x, 2, 3), 'ERR_DTYPE');
  });

  it('rejects short arrays and bad dims', () => {
    expectCode(() => native().crossEntropyForward(new Float32Array(5), t, losses, 2, 3), 'ERR_SHAPE');
    expectCode(() => native().crossEntropyForward(x, new Int32Array(1), losses, 2, 3), 'ERR_SHAPE');
    expectCode(() => native().crossEntropyForward(x, t, new Float32Array(1), 2, 3), 'ERR_SHAPE');
    expectCode(() => native().crossEntropyBackward(x, t, new Float32Array(1), x, 2, 3), 'ERR_SHAPE');
    expectCode(() => native().crossEntropyBackward(x, t, losses, new Float32Array(5), 2, 3), 'ERR_SHAPE');
    expectCode(() => native().crossEntropyForward(x, t, losses, 2, -3), 'ERR_ARGUMENT');
    expectCode(() => native().crossEntropyForward(x, t, losses, 0.5, 3), 'ERR_ARGUMENT');
    expectCode(() => native().crossEntropyBackward(x, t, losses, x, 2, '3' as never), 'ERR_ARGUMENT');
  });

  it('rejects released buffers', () => {
    const buffer = native().alloc(8, true);
    const targets = new Int32Array(buffer);
    native().free(buffer);
    expectCode(() => native().crossEntropyForward(x, targets, losses, 2, 3), 'ERR_DETACHED');
    const lossBuffer = native().alloc(8, true);
    const g = new Float32Array(lossBuffer);
    native().free(lossBuffer);
    expectCode(() => native().crossEntropyBackward(x, t, g, x, 2, 3), 'ERR_DETACHED');
  });
});
