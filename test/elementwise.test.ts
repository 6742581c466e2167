/**
 * Elementwise kernels (cpp/ops/elementwise.cc) against float64 references at every
 * SIMD level this CPU has: unary forward (tails, ±Inf, NaN, subnormals) and backward
 * (analytic and central finite differences), broadcasting binary ops through strides
 * (exact: IEEE +, −, ×, ÷ round once), affine/axpy, sumToShape (reference sums, finite
 * differences of the broadcast it inverts, thread-count independence) and bad input.
 */
import { describe, expect, it } from 'vitest';
import { BinaryOp, native, UnaryOp } from '../lib/native.js';
import { expectAllClose, expectCode, finiteDifferences, randn, simdLevels, withThreads } from './helpers.js';

const LEVELS = simdLevels();
const SIZES = [0, 1, 3, 65, 769];

// ---- float64 references ----

/** erfc in float64: Maclaurin series below 2, continued fraction (evaluated bottom-up) above. */
function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfc(-x);
  if (x < 2) {
    let sum = x;
    let term = x;
    for (let n = 1; n < 200; n++) {
      term *= (-x * x) / n;
      const t = term / (2 * n + 1);
      sum += t;
      if (Math.abs(t) < 1e-18) break;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = x;
  for (let k = 120; k >= 1; k--) f = x + k / 2 / f;
  return Math.exp(-x * x) / (Math.sqrt(Math.PI) * f);
}
const normalCdf = (x: number) => 0.5 * erfc(-x * Math.SQRT1_2);
const normalPdf = (x: number) => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);

interface UnaryRef {
  f: (x: number) => number;
  /** f'(x), given x and the kernel's own float32 y (the contract's backward inputs). */
  df: (x: number, y: number) => number;
  /** Inputs in the op's domain, away from kinks, for finite differences. */
  smooth: (x: number) => number;
}

const UNARY: Record<UnaryOp, UnaryRef> = {
  // torch's threshold_backward: the gradient passes unless x <= 0 (so NaN passes it).
  [UnaryOp.Relu]: { f: (x) => (x < 0 ? 0 : x), df: (x) => (x <= 0 ? 0 : 1), smooth: (x) => x + Math.sign(x) * 0.05 },
  [UnaryOp.Gelu]: {
    f: (x) => (x === -Infinity ? -0 : x * normalCdf(x)),
    df: (x) => (x === Infinity ? 1 : x === -Infinity ? 0 : normalCdf(x) + x * normalPdf(x)),
    smooth: (x) => x,
  },
  [UnaryOp.Tanh]: { f: Math.tanh, df: (_x, y) => 1 - y * y, smooth: (x) => x },
  [UnaryOp.Sigmoid]: { f: (x) => 1 / (1 + Math.exp(-x)), df: (_x, y) => y * (1 - y), smooth: (x) => x },
  [UnaryOp.Exp]: { f: Math.exp, df: (_x, y) => y, smooth: (x) => x },
  [UnaryOp.Log]: { f: Math.log, df: (x) => 1 / x, smooth: (x) => Math.abs(x) + 0.1 },
  [UnaryOp.Neg]: { f: (x) => -x, df: () => -1, smooth: (x) => x },
  [UnaryOp.Sqrt]: { f: Math.sqrt, df: (_x, y) => 1 / (2 * y), smooth: (x) => Math.abs(x) + 0.1 },
  [UnaryOp.Abs]: { f: Math.abs, df: (x) => Math.sign(x), smooth: (x) => x + Math.sign(x) * 0.05 },
  [UnaryOp.Square]: { f: (x) => x * x, df: (x) => 2 * x, smooth: (x) => x },
};
const UNARY_OPS = Object.keys(UNARY).map(Number) as UnaryOp[];

// Values that probe every branch: signed zeros, non-finites, overflow/underflow edges,
// subnormals, the GELU/tanh switch points and deep tails.
const SPECIAL = [
  0, -0, 1, -1, Infinity, -Infinity, NaN, 0.5, -0.5, 0.625, -0.624, 5, -5, 10, -10, 13, -13, 15, -15, 19.9, -19.9,
  20.5, -20.5, 30, -30, 88, 89, -87, -88, -103, -104, -110, 1e-40, -1e-40, 1e-20, 1e30, -1e30, 3.4e38,
].map(Math.fround);

function unaryInputs(n: number, seed: number): Float32Array {
  const x = randn(n, seed, 3);
  if (n >= 65) x.set(SPECIAL.slice(0, Math.min(SPECIAL.length, n)));
  return x;
}

function forward(op: UnaryOp, x: Float32Array): Float32Array {
  const y = new Float32Array(x.length).fill(12345);
  native().unaryForward(op, x, y, x.length);
  return y;
}

function backward(op: UnaryOp, x: Float32Array, y: Float32Array, gy: Float32Array): Float32Array {
  const gx = new Float32Array(x.length).fill(12345);
  native().unaryBackward(op, x, y, gy, gx, x.length);
  return gx;
}

describe.each(LEVELS)('unary ops at simd=%s', (level) => {
  it.each(UNARY_OPS)('op %i forward matches float64 at every size', (op) => {
    native().setSimdLevel(level);
    for (const n of [...SIZES, 20011]) {
      const x = unaryInputs(n, 100 + n);
      const want = Array.from(x, (v) => Math.fround(UNARY[op].f(v)));
      // 1e-6 relative everywhere the result is a normal float, tails included.
      expectAllClose(forward(op, x), want, { atol: 1e-37, rtol: 1e-6, label: `op ${op} n=${n}` });
    }
  });

  it.each(UNARY_OPS)('op %i backward matches the analytic derivative and finite differences', (op) => {
    native().setSimdLevel(level);
    for (const n of SIZES) {
      const x = unaryInputs(n, 200 + n);
      const gy = randn(n, 300 + n);
      const y = forward(op, x);
      const want = Array.from(x, (v, i) => Math.fround(gy[i] * UNARY[op].df(v, y[i])));
      expectAllClose(backward(op, x, y, gy), want, { atol: 1e-6, rtol: 1e-5, label: `op ${op} n=${n}` });
    }
    // Central differences of L(x) = Σ w ⊙ f(x), in float64.
    const xs = randn(65, 400, 2).map(UNARY[op].smooth);
    const w = randn(65, 401);
    const loss = (v: Float64Array) => v.reduce((s, vi, i) => s + w[i] * UNARY[op].f(vi), 0);
    const numeric = finiteDifferences(Float64Array.from(xs), loss, 1e-4);
    const got = backward(op, xs, forward(op, xs), w);
    expectAllClose(got, numeric, { atol: 1e-4, rtol: 1e-4, label: `op ${op} finite differences` });
  });
});

describe('unary ops: in place and thread counts', () => {
  it('x and y may be the same array', () => {
    const x = unaryInputs(769, 7);
    const want = forward(UnaryOp.Gelu, x);
    native().unaryForward(UnaryOp.Gelu, x, x, x.length);
    expect(Array.from(x)).toEqual(Array.from(want));
  });

  it('1 and 2 threads give the same bits', () => {
    const x = unaryInputs(100003, 8);
    for (const op of [UnaryOp.Gelu, UnaryOp.Relu]) {
      const one = withThreads(1, () => forward(op, x));
      const two = withThreads(2, () => forward(op, x));
      expect(Buffer.compare(Buffer.from(one.buffer), Buffer.from(two.buffer))).toBe(0);
    }
  });
});

// ---- binary ----

const BINARY: Record<BinaryOp, (a: number, b: number) => number> = {
  [BinaryOp.Add]: (a, b) => a + b,
  [BinaryOp.Sub]: (a, b) => a - b,
  [BinaryOp.Mul]: (a, b) => a * b,
  [BinaryOp.Div]: (a, b) => a / b,
  [BinaryOp.Max]: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b)),
  [BinaryOp.Min]: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b)),
};
const BINARY_OPS = Object.keys(BINARY).map(Number) as BinaryOp[];

function stridedRef(
  op: BinaryOp, a: Float32Array, b: Float32Array, shape: number[], as: number[], bs: number[],
): Float64Array {
  const n = shape.reduce((p, s) => p * s, 1);
  const out = new Float64Array(n);
  const idx = new Array(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let ia = 0;
    let ib = 0;
    for (let d = 0; d < shape.length; d++) {
      ia += idx[d] * as[d];
      ib += idx[d] * bs[d];
    }
    out[i] = Math.fround(BINARY[op](a[ia], b[ib]));
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

function binary(op: BinaryOp, a: Float32Array, b: Float32Array, shape: number[], as: number[], bs: number[]) {
  const out = new Float32Array(shape.reduce((p, s) => p * s, 1)).fill(12345);
  native().binaryForward(op, a, b, out, shape, as, bs);
  return out;
}

/** Random values with NaN, ±Inf and zeros sprinkled in. */
function binaryInputs(n: number, seed: number): Float32Array {
  const v = randn(n, seed, 2);
  const specials = [NaN, Infinity, -Infinity, 0, -0];
  for (let i = 0; i < n; i += 37) v[i] = specials[(i / 37) % specials.length];
  return v;
}

const BROADCASTS: Array<{ name: string; shape: number[]; as: number[]; bs: number[]; an: number; bn: number }> = [
  { name: 'empty', shape: [0], as: [1], bs: [1], an: 0, bn: 0 },
  { name: 'empty inner', shape: [3, 0], as: [0, 1], bs: [0, 1], an: 0, bn: 0 },
  { name: 'rank 0', shape: [], as: [], bs: [], an: 1, bn: 1 },
  { name: 'one', shape: [1], as: [1], bs: [1], an: 1, bn: 1 },
  { name: 'same shape 769', shape: [769], as: [1], bs: [1], an: 769, bn: 769 },
  { name: 'same shape 3x65', shape: [3, 65], as: [65, 1], bs: [65, 1], an: 195, bn: 195 },
  { name: 'scalar b', shape: [65, 7], as: [7, 1], bs: [0, 0], an: 455, bn: 1 },
  { name: 'scalar a', shape: [65, 7], as: [0, 0], bs: [7, 1], an: 1, bn: 455 },
  { name: 'row broadcast', shape: [65, 7], as: [7, 1], bs: [0, 1], an: 455, bn: 7 },
  { name: 'column broadcast', shape: [7, 65], as: [65, 1], bs: [1, 0], an: 455, bn: 7 },
  { name: 'outer product', shape: [65, 7], as: [1, 0], bs: [0, 1], an: 65, bn: 7 },
  { name: 'transposed a', shape: [7, 65], as: [1, 7], bs: [65, 1], an: 455, bn: 455 },
  { name: 'steps 2 and 3', shape: [65], as: [2], bs: [3], an: 129, bn: 193 },
  { name: '3-d mixed', shape: [3, 65, 7], as: [455, 7, 1], bs: [0, 1, 0], an: 1365, bn: 65 },
  { name: 'size-1 dims', shape: [1, 3, 1, 5], as: [99, 5, 99, 1], bs: [7, 0, 3, 1], an: 15, bn: 5 },
];

describe.each(LEVELS)('binaryForward at simd=%s', (level) => {
  it.each(BROADCASTS)('$name: every op exact against float64', ({ shape, as, bs, an, bn }) => {
    native().setSimdLevel(level);
    const a = binaryInputs(an, 11);
    const b = binaryInputs(bn, 12).map((v, i) => (i % 5 === 1 ? a[i % Math.max(an, 1)] : v)); // ties for max/min
    for (const op of BINARY_OPS) {
      const want = stridedRef(op, a, b, shape, as, bs);
      expectAllClose(binary(op, a, b, shape, as, bs), want, { atol: 0, rtol: 0, label: `op ${op}` });
    }
  });
});

describe('binaryForward: in place and thread counts', () => {
  it('out may be a itself (a += b with a row broadcast)', () => {
    const a = randn(65 * 7, 1);
    const b = randn(7, 2);
    const want = stridedRef(BinaryOp.Add, a, b, [65, 7], [7, 1], [0, 1]);
    native().binaryForward(BinaryOp.Add, a, b, a, [65, 7], [7, 1], [0, 1]);
    expectAllClose(a, want, { atol: 0, rtol: 0 });
  });

  it('1 and 2 threads give the same bits', () => {
    const a = randn(300 * 769, 3);
    const b = randn(769, 4);
    for (const [as, bs] of [[[769, 1], [0, 1]], [[1, 300], [0, 1]]]) {
      const one = withThreads(1, () => binary(BinaryOp.Mul, a, b, [300, 769], as, bs));
      const two = withThreads(2, () => binary(BinaryOp.Mul, a, b, [300, 769], as, bs));
      expect(Buffer.compare(Buffer.from(one.buffer), Buffer.from(two.buffer))).toBe(0);
      expectAllClose(one, stridedRef(BinaryOp.Mul, a, b, [300, 769], as, bs), { atol: 0, rtol: 0 });
    }
  });
});

// ---- affine, axpy ----

describe.each(LEVELS)('affine and axpy at simd=%s', (level) => {
  it('match float64 at every size', () => {
    native().setSimdLevel(level);
    const alpha = 0.3;
    const beta = -1.7;
    for (const n of [...SIZES, 100003]) {
      const x = randn(n, 5 + n);
      const y = new Float32Array(n).fill(NaN);
      native().affine(x, y, n, alpha, beta);
      const fa = Math.fround(alpha);
      const fb = Math.fround(beta);
      expectAllClose(y, Array.from(x, (v) => fa * v + fb), { atol: 1e-6, rtol: 1e-6, label: `affine n=${n}` });
      const y0 = randn(n, 6 + n);
      const acc = Float32Array.from(y0);
      native().axpy(x, acc, n, alpha);
      expectAllClose(acc, Array.from(x, (v, i) => y0[i] + fa * v), { atol: 1e-6, rtol: 1e-6, label: `axpy n=${n}` });
    }
  });
});

// ---- sumToShape ----

function sumToShapeRef(src: Float32Array, srcShape: number[], dstShape: number[]): Float64Array {
  const dst = new Float64Array(dstShape.reduce((p, s) => p * s, 1));
  const n = srcShape.reduce((p, s) => p * s, 1);
  const idx = new Array(srcShape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let at = 0;
    for (let d = 0; d < srcShape.length; d++) at = at * dstShape[d] + (dstShape[d] === 1 ? 0 : idx[d]);
    dst[at] += src[i];
    for (let d = srcShape.length - 1; d >= 0; d--) {
      if (++idx[d] < srcShape[d]) break;
      idx[d] = 0;
    }
  }
  return dst;
}

function sumToShape(src: Float32Array, srcShape: number[], dstShape: number[]): Float32Array {
  const dst = new Float32Array(dstShape.reduce((p, s) => p * s, 1)).fill(12345);
  native().sumToShape(src, srcShape, dst, dstShape);
  return dst;
}

const REDUCTIONS: Array<[number[], number[]]> = [
  [[0], [1]],
  [[0, 5], [1, 5]],
  [[5, 0], [5, 0]],
  [[], []],
  [[1], [1]],
  [[769], [1]],
  [[3], [3]],
  [[65, 769], [1, 769]],
  [[65, 769], [65, 1]],
  [[3, 65, 7], [3, 1, 7]],
  [[3, 65, 7], [1, 65, 1]],
  [[3, 65, 7], [1, 1, 1]],
  [[3, 1, 7], [3, 1, 7]],
  [[2, 3, 5, 7], [2, 1, 5, 1]],
  [[2, 3, 5, 7], [1, 3, 1, 7]],
];

describe.each(LEVELS)('sumToShape at simd=%s', (level) => {
  it.each(REDUCTIONS)('%j -> %j matches float64 sums', (srcShape, dstShape) => {
    native().setSimdLevel(level);
    const src = randn(srcShape.reduce((p, s) => p * s, 1), 21);
    const want = sumToShapeRef(src, srcShape, dstShape);
    expectAllClose(sumToShape(src, srcShape, dstShape), want, { atol: 1e-5, rtol: 1e-6 });
  });
});

describe('sumToShape as the backward of broadcasting', () => {
  it('equals finite differences of Σ w ⊙ (a + broadcast(b))', () => {
    for (const [outShape, bShape, bStrides] of [
      [[5, 7], [1, 7], [0, 1]],
      [[3, 4, 5], [3, 1, 1], [1, 0, 0]],
      [[3, 4, 5], [1, 4, 1], [0, 1, 0]],
    ] as Array<[number[], number[], number[]]>) {
      const n = outShape.reduce((p, s) => p * s, 1);
      const a = randn(n, 31);
      const w = randn(n, 32);
      const b = randn(bShape.reduce((p, s) => p * s, 1), 33);
      // Float64 loss over the broadcast; the strided b index is read off the out index.
      const loss = (bv: Float64Array) => {
        let s = 0;
        for (let i = 0; i < n; i++) {
          let rest = i;
          let ib = 0;
          for (let d = outShape.length - 1; d >= 0; d--) {
            ib += (rest % outShape[d]) * bStrides[d];
            rest = Math.floor(rest / outShape[d]);
          }
          s += w[i] * (a[i] + bv[ib]);
        }
        return s;
      };
      const numeric = finiteDifferences(Float64Array.from(b), loss, 1e-2);
      expectAllClose(sumToShape(w, outShape, bShape), numeric, { atol: 1e-3, rtol: 1e-4 });
    }
  });

  it('large reductions give the same bits with 1 and 2 threads', () => {
    for (const [srcShape, dstShape] of [
      [[700, 300], [1, 300]],
      [[300, 700], [300, 1]],
      [[20, 300, 50], [1, 300, 1]],
      [[200003], [1]],
      [[70001, 3], [1, 3]],
    ]) {
      const src = randn(srcShape.reduce((p, s) => p * s, 1), 41);
      const one = withThreads(1, () => sumToShape(src, srcShape, dstShape));
      const two = withThreads(2, () => sumToShape(src, srcShape, dstShape));
      expect(Buffer.compare(Buffer.from(one.buffer), Buffer.from(two.buffer)), `${srcShape}`).toBe(0);
      expectAllClose(one, sumToShapeRef(src, srcShape, dstShape), { atol: 1e-4, rtol: 1e-6 });
    }
  });
});

// ---- bad input ----

describe('elementwise entry points reject bad input', () => {
  const x = new Float32Array(8);
  const y = new Float32Array(8);
  const n = native() as unknown as Record<string, (...args: unknown[]) => unknown>;
  const call = (name: string, ...args: unknown[]) => () => n[name](...args);

  it('op codes, array kinds, lengths, sizes', () => {
    expectCode(call('unaryForward', 10, x, y, 8), 'ERR_ARGUMENT');
    expectCode(call('unaryForward', -1, x, y, 8), 'ERR_ARGUMENT');
    expectCode(call('unaryForward', 1.5, x, y, 8), 'ERR_ARGUMENT');
    expectCode(call('unaryForward', 0, new Float64Array(8), y, 8), 'ERR_DTYPE');
    expectCode(call('unaryForward', 0, x, new Float32Array(7), 8), 'ERR_SHAPE');
    expectCode(call('unaryForward', 0, x, y, -1), 'ERR_ARGUMENT');
    expectCode(call('unaryForward', 0, x, y, 2.5), 'ERR_ARGUMENT');
    expectCode(call('unaryBackward', 0, x, y, new Int32Array(8), y, 8), 'ERR_DTYPE');
    expectCode(call('unaryBackward', 0, x, y, x, new Float32Array(3), 8), 'ERR_SHAPE');
    expectCode(call('affine', x, y, 9, 1, 0), 'ERR_SHAPE');
    expectCode(call('affine', x, y, 8, NaN, 0), 'ERR_ARGUMENT');
    expectCode(call('axpy', x, [0, 1], 2, 1), 'ERR_DTYPE');
  });

  it('binaryForward shapes and strided reads', () => {
    expectCode(call('binaryForward', 6, x, y, y, [8], [1], [1]), 'ERR_ARGUMENT');
    expectCode(call('binaryForward', 0, x, y, y, [2, 4], [4], [4, 1]), 'ERR_SHAPE');
    expectCode(call('binaryForward', 0, x, y, y, [2, 4], [4, 1], [4, 1, 0]), 'ERR_SHAPE');
    expectCode(call('binaryForward', 0, x, y, y, [2, 4], [5, 1], [4, 1]), 'ERR_RANGE');
    expectCode(call('binaryForward', 0, x, y, y, [8], [1], [-1]), 'ERR_RANGE');
    expectCode(call('binaryForward', 0, x, y, new Float32Array(7), [8], [1], [1]), 'ERR_SHAPE');
    expectCode(call('binaryForward', 0, x, y, y, [-8], [1], [1]), 'ERR_ARGUMENT');
    expectCode(call('binaryForward', 0, x, y, y, [2 ** 40, 2 ** 40], [0, 0], [0, 0]), 'ERR_SHAPE');
  });

  it('sumToShape shapes', () => {
    expectCode(call('sumToShape', x, [2, 4], y, [4]), 'ERR_SHAPE');
    expectCode(call('sumToShape', x, [2, 4], y, [2, 2]), 'ERR_SHAPE');
    expectCode(call('sumToShape', x, [3, 4], y, [1, 4]), 'ERR_SHAPE');
    expectCode(call('sumToShape', x, [2, 4], new Float32Array(3), [1, 4]), 'ERR_SHAPE');
    expectCode(call('sumToShape', x, [2, -4], y, [1, 4]), 'ERR_ARGUMENT');
  });

  it('detached buffers', () => {
    const buffer = native().alloc(32, true);
    const freed = new Float32Array(buffer);
    native().free(buffer);
    expectCode(call('unaryForward', 0, freed, y, 0), 'ERR_DETACHED');
    expectCode(call('binaryForward', 0, x, freed, y, [0], [1], [1]), 'ERR_DETACHED');
    expectCode(call('sumToShape', freed, [0], y, [1]), 'ERR_DETACHED');
    expectCode(call('axpy', x, freed, 0, 1), 'ERR_DETACHED');
  });
});
