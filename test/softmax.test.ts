/**
 * softmaxForward / softmaxBackward (cpp/ops/softmax.cc) against float64 references,
 * at every SIMD level this CPU has, with finite-difference checks of the gradient,
 * extreme logits, −Infinity masks and bad input at the boundary.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../lib/native.js';
import { expectAllClose, expectCode, finiteDifferences, maxAbsDiff, randn, simdLevels, uniform } from './helpers.js';

const SHAPES: Array<[number, number]> = [[0, 5], [4, 0], [1, 1], [3, 3], [1, 769], [65, 65], [3, 769], [65, 1]];
const LEVELS = simdLevels();

/** float64 softmax / log-softmax of each row. */
function softmaxRef(x: ArrayLike<number>, rows: number, cols: number, log: boolean): Float64Array {
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let max = -Infinity;
    for (let c = 0; c < cols; c++) max = Math.max(max, x[o + c]);
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += Math.exp(x[o + c] - max);
    for (let c = 0; c < cols; c++) {
      y[o + c] = log ? x[o + c] - max - Math.log(sum) : Math.exp(x[o + c] - max) / sum;
    }
  }
  return y;
}

/** The analytic float64 backward from the saved output y. */
function softmaxBackwardRef(y: ArrayLike<number>, gy: ArrayLike<number>, rows: number, cols: number, log: boolean) {
  const gx = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let s = 0;
    for (let c = 0; c < cols; c++) s += log ? gy[o + c] : gy[o + c] * y[o + c];
    for (let c = 0; c < cols; c++) {
      gx[o + c] = log ? gy[o + c] - Math.exp(y[o + c]) * s : y[o + c] * (gy[o + c] - s);
    }
  }
  return gx;
}

function forward(x: Float32Array, rows: number, cols: number, log: boolean): Float32Array {
  const y = new Float32Array(rows * cols);
  native().softmaxForward(x, y, rows, cols, log);
  return y;
}

function backward(y: Float32Array, gy: Float32Array, rows: number, cols: number, log: boolean): Float32Array {
  const gx = new Float32Array(rows * cols);
  native().softmaxBackward(y, gy, gx, rows, cols, log);
  return gx;
}

// Probabilities to ~1e-6 relative (exp is ~2e-7; x − max rounds once); log-probabilities absolutely.
const TOL = { softmax: { atol: 1e-9, rtol: 2e-6 }, log: { atol: 2e-6, rtol: 1e-6 } };

// First in the file, before any other parallel work, and never back to the default:
// ThreadPool::resize after parallel work currently lets new workers replay the last
// (finished) task, which crashes (reported; cpp/core/thread_pool.cc).
describe('softmax threads', () => {
  it('gives identical results for any thread count', () => {
    const rows = 300;
    const cols = 129;
    const x = randn(rows * cols, 21, 4);
    const gy = randn(rows * cols, 22);
    const run = () => {
      const y = forward(x, rows, cols, false);
      return [y, backward(y, gy, rows, cols, false)];
    };
    native().setNumThreads(1);
    const [y1, g1] = run();
    native().setNumThreads(3);
    const [y3, g3] = run();
    expect(maxAbsDiff(y3, y1)).toBe(0);
    expect(maxAbsDiff(g3, g1)).toBe(0);
  });
});

for (const level of LEVELS) {
  describe(`softmax [${level}]`, () => {
    const setLevel = () => expect(native().setSimdLevel(level)).toBe(level);

    for (const log of [false, true]) {
      const name = log ? 'logSoftmax' : 'softmax';
      const tol = log ? TOL.log : TOL.softmax;

      it(`${name} forward matches float64 at odd shapes`, () => {
        setLevel();
        for (const [rows, cols] of SHAPES) {
          const x = randn(rows * cols, rows * 1000 + cols, 3);
          expectAllClose(forward(x, rows, cols, log), softmaxRef(x, rows, cols, log), { ...tol, label: `${rows}x${cols}` });
        }
      });

      it(`${name} backward matches the analytic float64 gradient`, () => {
        setLevel();
        for (const [rows, cols] of SHAPES) {
          const x = randn(rows * cols, rows + cols, 2);
          const gy = randn(rows * cols, rows * 7 + cols);
          const y = forward(x, rows, cols, log);
          expectAllClose(backward(y, gy, rows, cols, log), softmaxBackwardRef(y, gy, rows, cols, log), {
            atol: 2e-6,
            rtol: 1e-5,
            label: `${rows}x${cols}`,
          });
        }
      });

      it(`${name} backward matches finite differences of the float64 function`, () => {
        setLevel();
        const rows = 3;
        const cols = 5;
        const x = randn(rows * cols, 11, 2);
        const gy = randn(rows * cols, 12);
        const gx = backward(forward(x, rows, cols, log), gy, rows, cols, log);
        const loss = (x64: Float64Array) => softmaxRef(x64, rows, cols, log).reduce((s, v, i) => s + v * gy[i], 0);
        expectAllClose(gx, finiteDifferences(Float64Array.from(x), loss), { atol: 1e-5, rtol: 1e-4, label: 'fd' });
      });

      it(`${name} handles logits near ±1e4 and −Infinity masks`, () => {
        setLevel();
        const rows = 4;
        const cols = 37;
        const x = randn(rows * cols, 5, 1e4);
        for (let c = 0; c < cols; c += 3) x[c] = -Infinity; // row 0: a third masked
        for (let c = 0; c < cols; c++) if (c !== 17) x[cols + c] = -Infinity; // row 1: one survivor
        const y = forward(x, rows, cols, log);
        expectAllClose(y, softmaxRef(x, rows, cols, log), { ...tol, label: 'extreme' });
        expect(y[cols + 17]).toBe(log ? 0 : 1);
        expect(y[0]).toBe(log ? -Infinity : 0);
        const gy = randn(rows * cols, 6);
        const gx = backward(y, gy, rows, cols, log);
        expectAllClose(gx, softmaxBackwardRef(y, gy, rows, cols, log), { atol: 2e-6, rtol: 1e-5, label: 'extreme grad' });
        // A masked entry gets no gradient through softmax; through log-softmax, gy itself (as PyTorch).
        expect(gx[0]).toBe(log ? gy[0] : 0);
      });

      it(`${name} of an all −Infinity row is NaN (as PyTorch), other rows unaffected`, () => {
        setLevel();
        const cols = 19;
        const x = randn(2 * cols, 8);
        x.fill(-Infinity, 0, cols);
        const y = forward(x, 2, cols, log);
        for (let c = 0; c < cols; c++) expect(y[c]).toBeNaN();
        expectAllClose(y.subarray(cols), softmaxRef(x.subarray(cols), 1, cols, log), { ...tol, label: 'second row' });
      });
    }

    it('vector exp keeps ~1e-7 relative accuracy over the whole normal range', () => {
      setLevel();
      // Row max 0, other entries uniform in [−87, 0]: y = e^x / Σ, so the relative error
      // of every probability is the exp error plus two roundings.
      const rows = 200;
      const cols = 33;
      const x = uniform(rows * cols, 13, -87, 0);
      for (let r = 0; r < rows; r++) x[r * cols] = 0;
      expectAllClose(forward(x, rows, cols, false), softmaxRef(x, rows, cols, false), { atol: 0, rtol: 5e-7, label: 'exp' });
    });

    it('works in place and on subarrays at odd offsets', () => {
      setLevel();
      const rows = 3;
      const cols = 21;
      const base = randn(rows * cols + 1, 9);
      const x = base.subarray(1);
      const want = softmaxRef(x, rows, cols, false);
      native().softmaxForward(x, x, rows, cols, false);
      expectAllClose(x, want, { ...TOL.softmax, label: 'in place' });
    });
  });
}

describe('softmax bad input', () => {
  const x = new Float32Array(6);
  const y = new Float32Array(6);

  it('rejects wrong array kinds', () => {
    expectCode(() => native().softmaxForward(new Float64Array(6) as never, y, 2, 3, false), 'ERR_DTYPE');
    expectCode(() => native().softmaxForward(x, [0, 0, 0, 0, 0, 0] as never, 2, 3, false), 'ERR_DTYPE');
    expectCode(() => native().softmaxBackward(y, new Int32Array(6) as never, y, 2, 3, false), 'ERR_DTYPE');
  });

  it('rejects short arrays, bad dims and a non-boolean flag', () => {
    expectCode(() => native().softmaxForward(x, new Float32Array(5), 2, 3, false), 'ERR_SHAPE');
    expectCode(() => native().softmaxBackward(y, x, new Float32Array(5), 2, 3, true), 'ERR_SHAPE');
    expectCode(() => native().softmaxForward(x, y, -1, 3, false), 'ERR_ARGUMENT');
    expectCode(() => native().softmaxForward(x, y, 2, 1.5, false), 'ERR_ARGUMENT');
    expectCode(() => native().softmaxForward(x, y, 2, NaN, false), 'ERR_ARGUMENT');
    expectCode(() => native().softmaxForward(x, y, 2 ** 40, 2 ** 40, false), 'ERR_SHAPE');
    expectCode(() => native().softmaxForward(x, y, 2, 3, 1 as never), 'ERR_ARGUMENT');
    expectCode(() => (native().softmaxForward as (...a: unknown[]) => void)(x, y, 2), 'ERR_ARGUMENT');
  });

  it('rejects released buffers', () => {
    const buffer = native().alloc(24, true);
    const view = new Float32Array(buffer);
    native().free(buffer);
    expectCode(() => native().softmaxForward(view, y, 2, 3, false), 'ERR_DETACHED');
    expectCode(() => native().softmaxBackward(y, y, view, 2, 3, false), 'ERR_DETACHED');
  });
});
