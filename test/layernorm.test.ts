/**
 * layerNormForward / layerNormBackward (cpp/ops/layernorm.cc) against float64 references
 * at every SIMD level this CPU has: odd shapes, optional gamma/beta, accumulation into
 * gGamma/gBeta, finite differences, large offsets, thread-count independence and bad
 * input at the boundary.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { native } from '../lib/native.js';
import { expectAllClose, expectCode, finiteDifferences, maxAbsDiff, randn } from './helpers.js';

const SHAPES: Array<[number, number]> = [[0, 5], [0, 0], [1, 1], [3, 3], [65, 7], [3, 769], [1, 769], [65, 65]];
const LEVELS = (['portable', 'avx2', 'avx512'] as const).filter((l) => native().setSimdLevel(l) === l);
const EPS = 1e-5;
afterAll(() => {
  native().setSimdLevel('avx512'); // back to the best this CPU has
});

interface Params {
  gamma: Float32Array | null;
  beta: Float32Array | null;
}

function forwardRef(x: ArrayLike<number>, { gamma, beta }: Params, rows: number, cols: number, eps = EPS) {
  const y = new Float64Array(rows * cols);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let s = 0;
    for (let c = 0; c < cols; c++) s += x[o + c];
    const m = s / cols;
    let v = 0;
    for (let c = 0; c < cols; c++) v += (x[o + c] - m) ** 2;
    const rs = 1 / Math.sqrt(v / cols + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (let c = 0; c < cols; c++) y[o + c] = (x[o + c] - m) * rs * (gamma ? gamma[c] : 1) + (beta ? beta[c] : 0);
  }
  return { y, mean, rstd };
}

/** Analytic float64 backward from the saved statistics. */
function backwardRef(
  x: ArrayLike<number>, gamma: ArrayLike<number> | null, mean: ArrayLike<number>, rstd: ArrayLike<number>,
  gy: ArrayLike<number>, rows: number, cols: number,
) {
  const gx = new Float64Array(rows * cols);
  const gGamma = new Float64Array(cols);
  const gBeta = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const xhat = (c: number) => (x[o + c] - mean[r]) * rstd[r];
    const g = (c: number) => gy[o + c] * (gamma ? gamma[c] : 1);
    let a = 0;
    let b = 0;
    for (let c = 0; c < cols; c++) {
      a += g(c);
      b += g(c) * xhat(c);
      gGamma[c] += gy[o + c] * xhat(c);
      gBeta[c] += gy[o + c];
    }
    for (let c = 0; c < cols; c++) gx[o + c] = rstd[r] * (g(c) - a / cols - (xhat(c) * b) / cols);
  }
  return { gx, gGamma, gBeta };
}

function forward(x: Float32Array, p: Params, rows: number, cols: number, eps = EPS) {
  const y = new Float32Array(rows * cols);
  const mean = new Float32Array(rows);
  const rstd = new Float32Array(rows);
  native().layerNormForward(x, p.gamma, p.beta, y, mean, rstd, rows, cols, eps);
  return { y, mean, rstd };
}

function backward(
  x: Float32Array, gamma: Float32Array | null, mean: Float32Array, rstd: Float32Array, gy: Float32Array,
  rows: number, cols: number, init = 0,
) {
  const gx = new Float32Array(rows * cols).fill(NaN);
  const gGamma = new Float32Array(cols).fill(init);
  const gBeta = new Float32Array(cols).fill(init);
  native().layerNormBackward(x, gamma, mean, rstd, gy, gx, gGamma, gBeta, rows, cols);
  return { gx, gGamma, gBeta };
}

function paramsFor(cols: number, seed: number, which: 'both' | 'gamma' | 'none'): Params {
  return {
    gamma: which === 'none' ? null : randn(cols, seed, 0.5).map((v) => v + 1),
    beta: which === 'both' ? randn(cols, seed + 1, 0.5) : null,
  };
}

// First in the file, before any other parallel work, and never back to the default:
// ThreadPool::resize after parallel work currently lets new workers replay the last
// (finished) task, which crashes (reported; cpp/core/thread_pool.cc).
describe('layernorm threads', () => {
  it('parameter gradients are identical for any thread count', () => {
    const rows = 1000;
    const cols = 33;
    const x = randn(rows * cols, 71, 2);
    const gy = randn(rows * cols, 72);
    const { gamma } = paramsFor(cols, 73, 'gamma');
    const run = () => {
      const { mean, rstd } = forward(x, { gamma, beta: null }, rows, cols);
      return backward(x, gamma, mean, rstd, gy, rows, cols);
    };
    native().setNumThreads(1);
    const one = run();
    native().setNumThreads(3);
    const three = run();
    expect(maxAbsDiff(three.gGamma, one.gGamma)).toBe(0);
    expect(maxAbsDiff(three.gBeta, one.gBeta)).toBe(0);
    expect(maxAbsDiff(three.gx, one.gx)).toBe(0);
  });
});

for (const level of LEVELS) {
  describe(`layernorm [${level}]`, () => {
    const setLevel = () => expect(native().setSimdLevel(level)).toBe(level);

    for (const which of ['both', 'gamma', 'none'] as const) {
      it(`forward matches float64 at odd shapes (affine: ${which})`, () => {
        setLevel();
        for (const [rows, cols] of SHAPES) {
          const x = randn(rows * cols, rows * 100 + cols, 2);
          const p = paramsFor(cols, cols, which);
          const got = forward(x, p, rows, cols);
          const want = forwardRef(x, p, rows, cols);
          const label = `${rows}x${cols}`;
          expectAllClose(got.y, want.y, { atol: 1e-6, rtol: 1e-6, label: `${label} y` });
          expectAllClose(got.mean, want.mean, { atol: 1e-7, rtol: 1e-6, label: `${label} mean` });
          expectAllClose(got.rstd, want.rstd, { atol: 0, rtol: 1e-6, label: `${label} rstd` });
        }
      });

      it(`backward matches the analytic float64 gradient, accumulating (affine: ${which})`, () => {
        setLevel();
        for (const [rows, cols] of SHAPES) {
          const x = randn(rows * cols, rows + cols, 2);
          const gy = randn(rows * cols, rows * 3 + cols);
          const { gamma } = paramsFor(cols, cols + 5, which);
          const { mean, rstd } = forward(x, { gamma, beta: null }, rows, cols);
          const got = backward(x, gamma, mean, rstd, gy, rows, cols, 0.25);
          const want = backwardRef(x, gamma, mean, rstd, gy, rows, cols);
          const label = `${rows}x${cols}`;
          expectAllClose(got.gx, want.gx, { atol: 1e-5, rtol: 1e-5, label: `${label} gx` });
          expectAllClose(got.gGamma, want.gGamma.map((v) => v + 0.25), { atol: 1e-5, rtol: 1e-5, label: `${label} gGamma` });
          expectAllClose(got.gBeta, want.gBeta.map((v) => v + 0.25), { atol: 1e-5, rtol: 1e-5, label: `${label} gBeta` });
        }
      });
    }

    it('backward matches finite differences of the float64 function (x, gamma, beta)', () => {
      setLevel();
      const rows = 3;
      const cols = 6;
      const x = randn(rows * cols, 81, 2);
      const gy = randn(rows * cols, 82);
      const p = paramsFor(cols, 83, 'both');
      const { mean, rstd } = forward(x, p, rows, cols);
      const got = backward(x, p.gamma, mean, rstd, gy, rows, cols);
      const loss = (x64: ArrayLike<number>, gamma: Float32Array | Float64Array, beta: Float32Array | Float64Array) =>
        forwardRef(x64, { gamma: gamma as Float32Array, beta: beta as Float32Array }, rows, cols).y
          .reduce((s, v, i) => s + v * gy[i], 0);
      const fdX = finiteDifferences(Float64Array.from(x), (v) => loss(v, p.gamma!, p.beta!));
      const fdGamma = finiteDifferences(Float64Array.from(p.gamma!), (v) => loss(x, v, p.beta!));
      const fdBeta = finiteDifferences(Float64Array.from(p.beta!), (v) => loss(x, p.gamma!, v));
      expectAllClose(got.gx, fdX, { atol: 1e-4, rtol: 1e-4, label: 'fd x' });
      expectAllClose(got.gGamma, fdGamma, { atol: 1e-4, rtol: 1e-4, label: 'fd gamma' });
      expectAllClose(got.gBeta, fdBeta, { atol: 1e-4, rtol: 1e-4, label: 'fd beta' });
    });

    it('keeps full precision with a large common offset and handles constant rows', () => {
      setLevel();
      const rows = 4;
      const cols = 131;
      const x = randn(rows * cols, 91).map((v) => v + 1e4);
      x.fill(-3.5, 3 * cols, 4 * cols); // a constant row: var = 0, y = beta
      const p = paramsFor(cols, 92, 'both');
      const got = forward(x, p, rows, cols);
      const want = forwardRef(x, p, rows, cols);
      expectAllClose(got.y, want.y, { atol: 2e-6, rtol: 1e-6, label: 'offset y' });
      expectAllClose(got.y.subarray(3 * cols), p.beta!, { atol: 0, rtol: 0, label: 'constant row' });
      const gy = randn(rows * cols, 93);
      const g = backward(x, p.gamma, got.mean, got.rstd, gy, rows, cols);
      const ref = backwardRef(x, p.gamma, got.mean, got.rstd, gy, rows, cols);
      expectAllClose(g.gx, ref.gx, { atol: 1e-4, rtol: 1e-5, label: 'offset gx' });
      expectAllClose(g.gGamma, ref.gGamma, { atol: 1e-5, rtol: 1e-5, label: 'offset gGamma' });
    });

    it('works in place (y = x, gx = gy) and with gGamma / gBeta absent', () => {
      setLevel();
      const rows = 5;
      const cols = 40;
      const x = randn(rows * cols, 101);
      const p = paramsFor(cols, 102, 'both');
      const want = forward(x, p, rows, cols);
      const inPlace = Float32Array.from(x);
      native().layerNormForward(inPlace, p.gamma, p.beta, inPlace, new Float32Array(rows), new Float32Array(rows), rows, cols, EPS);
      expect(maxAbsDiff(inPlace, want.y)).toBe(0);
      const gy = randn(rows * cols, 103);
      const ref = backward(x, p.gamma, want.mean, want.rstd, gy, rows, cols);
      const g = Float32Array.from(gy);
      native().layerNormBackward(x, p.gamma, want.mean, want.rstd, g, g, null, null, rows, cols);
      expect(maxAbsDiff(g, ref.gx)).toBe(0);
    });
  });
}

describe('layernorm bad input', () => {
  const rows = 2;
  const cols = 3;
  const x = new Float32Array(6);
  const y = new Float32Array(6);
  const stats = new Float32Array(2);
  const gamma = new Float32Array(3);

  it('rejects wrong array kinds', () => {
    expectCode(() => native().layerNormForward(new Float64Array(6) as never, null, null, y, stats, stats, rows, cols, EPS), 'ERR_DTYPE');
    expectCode(() => native().layerNormForward(x, [1, 1, 1] as never, null, y, stats, stats, rows, cols, EPS), 'ERR_DTYPE');
    expectCode(() => native().layerNormBackward(x, null, stats, stats, new Int32Array(6) as never, y, null, null, rows, cols), 'ERR_DTYPE');
    expectCode(() => native().layerNormBackward(x, null, stats, stats, x, y, 0 as never, null, rows, cols), 'ERR_DTYPE');
  });

  it('rejects short arrays (an empty array is not null), bad dims and bad eps', () => {
    expectCode(() => native().layerNormForward(x, new Float32Array(2), null, y, stats, stats, rows, cols, EPS), 'ERR_SHAPE');
    expectCode(() => native().layerNormForward(x, new Float32Array(0), null, y, stats, stats, rows, cols, EPS), 'ERR_SHAPE');
    expectCode(() => native().layerNormForward(x, null, null, y, new Float32Array(1), stats, rows, cols, EPS), 'ERR_SHAPE');
    expectCode(() => native().layerNormForward(x, null, null, new Float32Array(5), stats, stats, rows, cols, EPS), 'ERR_SHAPE');
    expectCode(() => native().layerNormBackward(x, null, stats, stats, x, y, new Float32Array(2), null, rows, cols), 'ERR_SHAPE');
    expectCode(() => native().layerNormBackward(x, null, stats, new Float32Array(1), x, y, null, null, rows, cols), 'ERR_SHAPE');
    expectCode(() => native().layerNormForward(x, null, null, y, stats, stats, 2, 0, EPS), 'ERR_SHAPE');
    expectCode(() => native().layerNormBackward(x, null, stats, stats, x, y, null, null, 2, 0), 'ERR_SHAPE');
    expectCode(() => native().layerNormForward(x, gamma, null, y, stats, stats, -2, cols, EPS), 'ERR_ARGUMENT');
    expectCode(() => native().layerNormForward(x, gamma, null, y, stats, stats, rows, 2.5, EPS), 'ERR_ARGUMENT');
    for (const eps of [0, -1e-5, NaN, Infinity]) {
      expectCode(() => native().layerNormForward(x, gamma, null, y, stats, stats, rows, cols, eps), 'ERR_ARGUMENT');
    }
  });

  it('rejects released buffers', () => {
    const buffer = native().alloc(12, true);
    const released = new Float32Array(buffer);
    native().free(buffer);
    expectCode(() => native().layerNormForward(x, released, null, y, stats, stats, rows, cols, EPS), 'ERR_DETACHED');
    expectCode(() => native().layerNormBackward(x, gamma, stats, stats, x, y, released, null, rows, cols), 'ERR_DETACHED');
  });
});
