/**
 * gemm (cpp/ops/gemm.cc) against a float64 reference, at every SIMD level this CPU has:
 * odd and empty shapes (0, 1, 3, 65, 769), all transpose combinations, leading dims larger than
 * minimal, strided and broadcast (stride 0) batches, alpha/beta (beta = 0 ignores NaN in C),
 * bias + relu/gelu epilogues across several K blocks, thread-count independence, and bad input
 * at the boundary (always an Error with a `code`, never a crash).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Activation, native } from '../lib/native.js';
import { expectAllClose, expectCode, randn } from './helpers.js';

const INITIAL_SIMD = native().runtimeInfo().simd;
const INITIAL_THREADS = native().runtimeInfo().threads;
const LEVELS = (['portable', 'avx2', 'avx512'] as const).filter((l) => native().setSimdLevel(l) === l);
afterAll(() => {
  native().setSimdLevel(INITIAL_SIMD);
  native().setNumThreads(INITIAL_THREADS);
});

interface Case {
  batch?: number;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  /** Extra elements on each leading dimension. */
  pad?: number;
  /** Batch strides; default: items packed one after another. 0 broadcasts. */
  strideA?: number;
  strideB?: number;
  alpha?: number;
  beta?: number;
  bias?: boolean;
  activation?: Activation;
  /** Fill C with NaN first (only meaningful with beta = 0). */
  nanC?: boolean;
  seed?: number;
}

interface Problem {
  a: Float32Array;
  b: Float32Array;
  c: Float32Array;
  bias: Float32Array | null;
  batch: number;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  lda: number;
  ldb: number;
  ldc: number;
  strideA: number;
  strideB: number;
  strideC: number;
  alpha: number;
  beta: number;
  activation: Activation;
}

function makeProblem(spec: Case): Problem {
  const { m, n, k, transA = false, transB = false, pad = 0, alpha = 1, beta = 0, seed = 1 } = spec;
  const batch = spec.batch ?? 1;
  const lda = (transA ? m : k) + pad;
  const ldb = (transB ? k : n) + pad;
  const ldc = n + pad;
  const aItem = (transA ? k : m) * lda;
  const bItem = (transB ? n : k) * ldb;
  const strideA = spec.strideA ?? aItem;
  const strideB = spec.strideB ?? bItem;
  const strideC = m * ldc;
  const c = randn(Math.max(batch * strideC, 0), seed + 2);
  if (spec.nanC) c.fill(Number.NaN);
  return {
    a: randn(batch > 0 ? (batch - 1) * strideA + aItem : 0, seed),
    b: randn(batch > 0 ? (batch - 1) * strideB + bItem : 0, seed + 1),
    c,
    bias: spec.bias ? randn(n, seed + 3) : null,
    batch, m, n, k, transA, transB, lda, ldb, ldc, strideA, strideB, strideC, alpha, beta,
    activation: spec.activation ?? Activation.None,
  };
}

function run(p: Problem, c: Float32Array = p.c): void {
  native().gemm(p.a, p.b, c, p.bias, p.batch, p.m, p.n, p.k, p.transA, p.transB, p.lda, p.ldb, p.ldc,
    p.strideA, p.strideB, p.strideC, p.alpha, p.beta, p.activation);
}

/**
 * erfc(z) for z ≥ 0 in float64: the Taylor series of erf below 2.5 (cancellation costs < 4 digits),
 * the continued fraction erfc(z) = e^{−z²}/√π · 1/(z + ½/(z + 1/(z + 3/2/(z + …)))) above.
 */
function erfcRef(z: number): number {
  if (z < 2.5) {
    let term = z;
    let sum = z;
    for (let n = 1; n < 100; n++) {
      term *= (-z * z) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = z;
  for (let n = 80; n >= 1; n--) f = z + n / 2 / f;
  return Math.exp(-z * z) / (Math.sqrt(Math.PI) * f);
}

/** 0.5·x·(1 + erf(x/√2)), written through erfc so the negative tail keeps its relative precision. */
export function geluRef(x: number): number {
  const e = erfcRef(Math.abs(x) / Math.SQRT2);
  return x >= 0 ? x * (1 - 0.5 * e) : 0.5 * x * e;
}

/** The whole C buffer after the call, in float64 (entries outside the m×n items keep their values). */
function gemmRef(p: Problem, cBefore: Float32Array): Float64Array {
  const out = Float64Array.from(cBefore);
  for (let t = 0; t < p.batch; t++) {
    const oa = t * p.strideA, ob = t * p.strideB, oc = t * p.strideC;
    for (let i = 0; i < p.m; i++) {
      for (let j = 0; j < p.n; j++) {
        let s = 0;
        for (let l = 0; l < p.k; l++) {
          const av = p.transA ? p.a[oa + l * p.lda + i] : p.a[oa + i * p.lda + l];
          const bv = p.transB ? p.b[ob + j * p.ldb + l] : p.b[ob + l * p.ldb + j];
          s += av * bv;
        }
        let v = p.alpha * s + (p.beta === 0 ? 0 : p.beta * cBefore[oc + i * p.ldc + j]);
        if (p.bias) v += p.bias[j];
        if (p.activation === Activation.Relu) v = Math.max(0, v);
        else if (p.activation === Activation.Gelu) v = geluRef(v);
        out[oc + i * p.ldc + j] = v;
      }
    }
  }
  return out;
}

/** fp32 accumulation of k products of N(0,1) values: error grows like √k. */
function tolerance(k: number): { atol: number; rtol: number } {
  return { atol: 2e-5 * Math.sqrt(k + 1), rtol: 1e-5 };
}

function check(spec: Case, label: string): void {
  const p = makeProblem(spec);
  const before = p.c.slice();
  run(p);
  expectAllClose(p.c, gemmRef(p, before), { ...tolerance(p.k), label });
}

const EDGE = [0, 1, 3, 65];
const TRANS: Array<[boolean, boolean]> = [[false, false], [false, true], [true, false], [true, true]];

for (const level of LEVELS) {
  describe(`gemm at SIMD level ${level}`, () => {
    beforeAll(() => {
      native().setSimdLevel(level);
    });
    afterAll(() => {
      native().setSimdLevel(INITIAL_SIMD);
    });

    it('matches the float64 reference for every m, n, k in {0, 1, 3, 65} and every transpose', () => {
      for (const m of EDGE) for (const n of EDGE) for (const k of EDGE) {
        for (const [transA, transB] of TRANS) {
          check({ m, n, k, transA, transB, pad: (m + n + k) % 3, seed: m * 7 + n * 3 + k },
            `${level} m${m} n${n} k${k} tA${transA} tB${transB}`);
        }
      }
    });

    it('handles 769 in each dimension (several K blocks, edge tiles in M and N)', () => {
      const shapes: Array<[number, number, number]> = [[769, 65, 3], [3, 769, 65], [65, 3, 769], [70, 97, 769], [769, 1, 130]];
      for (const [m, n, k] of shapes) {
        for (const [transA, transB] of TRANS) {
          check({ m, n, k, transA, transB, pad: 5 }, `${level} m${m} n${n} k${k} tA${transA} tB${transB}`);
        }
      }
    });

    it('applies alpha and beta, and beta = 0 ignores NaN in C', () => {
      check({ m: 37, n: 45, k: 29, alpha: -0.75, beta: 1.5, pad: 2 }, `${level} alpha/beta`);
      check({ m: 37, n: 45, k: 500, alpha: 2, beta: 0.5, transB: true }, `${level} alpha/beta, 2 K blocks`);
      const p = makeProblem({ m: 30, n: 70, k: 400, beta: 0, nanC: true, pad: 1 });
      run(p);
      for (let i = 0; i < p.m; i++) {
        for (let j = 0; j < p.n; j++) expect(Number.isFinite(p.c[i * p.ldc + j]), `C[${i},${j}]`).toBe(true);
        expect(Number.isNaN(p.c[i * p.ldc + p.n]), 'padding column untouched').toBe(true);
      }
      check({ m: 30, n: 70, k: 400, beta: 0, nanC: true }, `${level} beta 0 over NaN`);
    });

    it('alpha = 0 or k = 0 gives act(beta·C + bias) without reading A or B', () => {
      check({ m: 9, n: 33, k: 0, beta: 0.5, bias: true, activation: Activation.Relu }, `${level} k = 0`);
      check({ m: 9, n: 33, k: 12, alpha: 0, beta: -2, bias: true, activation: Activation.Gelu }, `${level} alpha = 0`);
      const p = makeProblem({ m: 9, n: 33, k: 12, alpha: 0, beta: 0, nanC: true });
      p.a.fill(Number.NaN);
      const before = p.c.slice();
      run(p);
      expectAllClose(p.c, gemmRef({ ...p, a: new Float32Array(p.a.length) }, before), { label: 'alpha 0 ignores NaN A' });
    });

    it('fuses bias, relu and gelu into the last K block', () => {
      for (const activation of [Activation.None, Activation.Relu, Activation.Gelu]) {
        check({ m: 67, n: 100, k: 900, bias: true, activation, beta: 0.5, transB: true, pad: 3 },
          `${level} bias act ${activation}`);
        check({ m: 5, n: 31, k: 7, bias: true, activation, alpha: 3 }, `${level} small bias act ${activation}`);
      }
    });

    it('gelu is the exact erf form, tails included', () => {
      // C = A·B with A a column of values and B = [1]: C = act(x) for chosen x.
      const xs = [-12, -8, -5.5, -4, -3, -2, -1, -0.5, -1e-3, 0, 1e-3, 0.5, 1, 2, 3, 4, 6, 10, 30];
      const a = Float32Array.from(xs);
      const c = new Float32Array(xs.length);
      native().gemm(a, Float32Array.of(1), c, null, 1, xs.length, 1, 1, false, false, 1, 1, 1, 0, 0, 0, 1, 0, Activation.Gelu);
      // Relative, even at gelu(−12) ≈ −1e−32: the float32 exponent argument (≈ −73 there) bounds it at a few 1e−6.
      expectAllClose(c, Float64Array.from(a, (x) => geluRef(x)), { atol: 1e-37, rtol: 2e-5, label: 'gelu' });
      expect(geluRef(-1)).toBeCloseTo(-0.15865525393145707, 15);
    });

    it('batches with strides, stride-0 broadcast of A or B', () => {
      check({ batch: 3, m: 20, n: 35, k: 17, pad: 1 }, `${level} batch 3`);
      check({ batch: 4, m: 20, n: 35, k: 17, strideB: 0, transB: true }, `${level} broadcast B`);
      check({ batch: 4, m: 20, n: 35, k: 17, strideA: 0, transA: true, bias: true, activation: Activation.Relu },
        `${level} broadcast A`);
      check({ batch: 5, m: 60, n: 90, k: 70, strideB: 0, beta: 1 }, `${level} batch 5 (parallel over items)`);
      check({ batch: 2, m: 150, n: 130, k: 400, strideA: 0, pad: 2 }, `${level} batch 2 (threads within items)`);
      check({ batch: 0, m: 4, n: 4, k: 4 }, `${level} batch 0`);
    });
  });
}

describe('gemm threading', () => {
  afterAll(() => {
    native().setNumThreads(INITIAL_THREADS);
  });

  it('gives the same result on 1, 2 and 3 threads', () => {
    const results: Float32Array[] = [];
    for (const threads of [1, 2, 3]) {
      native().setNumThreads(threads);
      const p = makeProblem({ m: 197, n: 300, k: 500, transB: true, bias: true, activation: Activation.Gelu, seed: 9 });
      run(p);
      results.push(p.c);
      const q = makeProblem({ m: 1000, n: 40, k: 300, seed: 10 }); // tall and narrow: split over M
      const before = q.c.slice();
      run(q);
      expectAllClose(q.c, gemmRef(q, before), { ...tolerance(q.k), label: `tall, ${threads} threads` });
    }
    expectAllClose(results[1], results[0], { atol: 1e-6, rtol: 1e-6, label: '2 vs 1 threads' });
    expectAllClose(results[2], results[0], { atol: 1e-6, rtol: 1e-6, label: '3 vs 1 threads' });
  });

  it('matches the reference on a ViT-sized problem (sampled entries)', () => {
    native().setNumThreads(INITIAL_THREADS);
    const p = makeProblem({ m: 197, n: 1024, k: 1024, transB: true, bias: true, seed: 4 });
    run(p);
    const want: number[] = [];
    const got: number[] = [];
    for (let s = 0; s < 400; s++) {
      const i = (s * 7919) % p.m, j = (s * 104729) % p.n;
      let acc = p.bias![j];
      for (let l = 0; l < p.k; l++) acc += p.a[i * p.lda + l] * p.b[j * p.ldb + l];
      want.push(acc);
      got.push(p.c[i * p.ldc + j]);
    }
    expectAllClose(got, want, { ...tolerance(p.k), label: 'vit sample' });
  });

  it('returns its workspaces (memory back to baseline)', () => {
    const before = native().memoryStats().bytesInUse;
    run(makeProblem({ m: 100, n: 200, k: 300 }));
    run(makeProblem({ batch: 6, m: 10, n: 20, k: 30 }));
    expect(native().memoryStats().bytesInUse).toBe(before);
  });
});

describe('gemm rejects bad input with a code', () => {
  // A valid 2×3·3×4 call; each case changes one argument.
  const base = (): unknown[] => [
    new Float32Array(6), new Float32Array(12), new Float32Array(8), null,
    1, 2, 4, 3, false, false, 3, 4, 4, 0, 0, 0, 1, 0, 0,
  ];
  const call = (args: unknown[]) => () => (native().gemm as (...xs: unknown[]) => void)(...args);
  const withArg = (index: number, value: unknown): unknown[] => {
    const args = base();
    args[index] = value;
    return args;
  };

  it('accepts the base call', () => {
    expect(call(base())).not.toThrow();
  });

  it('wrong typed-array kind: ERR_DTYPE', () => {
    expectCode(call(withArg(0, new Float64Array(6))), 'ERR_DTYPE');
    expectCode(call(withArg(1, [1, 2, 3])), 'ERR_DTYPE');
    expectCode(call(withArg(2, new Int32Array(8))), 'ERR_DTYPE');
    expectCode(call(withArg(3, new Uint16Array(4))), 'ERR_DTYPE');
  });

  it('arrays too short for the sizes, leading dims and strides: ERR_SHAPE', () => {
    expectCode(call(withArg(0, new Float32Array(5))), 'ERR_SHAPE');
    expectCode(call(withArg(1, new Float32Array(11))), 'ERR_SHAPE');
    expectCode(call(withArg(2, new Float32Array(7))), 'ERR_SHAPE');
    expectCode(call(withArg(3, new Float32Array(3))), 'ERR_SHAPE');
    expectCode(call(withArg(10, 5)), 'ERR_SHAPE'); // lda 5 needs 8 elements of A
    expectCode(call(withArg(4, 2)), 'ERR_SHAPE'); // batch 2 with strides 0: C items would overlap
    const batched = base();
    batched[4] = 2;
    batched[15] = 8;
    expectCode(call(batched), 'ERR_SHAPE'); // C needs 16 elements
    // A subarray's own length counts, not its buffer's.
    expectCode(call(withArg(0, new Float32Array(12).subarray(7))), 'ERR_SHAPE');
  });

  it('leading dims below minimal: ERR_SHAPE', () => {
    expectCode(call(withArg(10, 2)), 'ERR_SHAPE'); // lda < k
    expectCode(call(withArg(11, 3)), 'ERR_SHAPE'); // ldb < n
    expectCode(call(withArg(12, 3)), 'ERR_SHAPE'); // ldc < n
    const transposed = withArg(8, true); // A stored [k×m]: lda ≥ m = 2
    transposed[10] = 1;
    expectCode(call(transposed), 'ERR_SHAPE');
    const strideC = base();
    strideC[4] = 2;
    strideC[2] = new Float32Array(16);
    strideC[15] = 7; // items 8 apart would be needed
    expectCode(call(strideC), 'ERR_SHAPE');
  });

  it('negative, fractional or non-number sizes and bad scalars: ERR_ARGUMENT', () => {
    expectCode(call(withArg(5, -1)), 'ERR_ARGUMENT');
    expectCode(call(withArg(6, 2.5)), 'ERR_ARGUMENT');
    expectCode(call(withArg(7, '3')), 'ERR_ARGUMENT');
    expectCode(call(withArg(4, Number.NaN)), 'ERR_ARGUMENT');
    expectCode(call(withArg(13, -6)), 'ERR_ARGUMENT');
    expectCode(call(withArg(8, 1)), 'ERR_ARGUMENT');
    expectCode(call(withArg(16, Number.POSITIVE_INFINITY)), 'ERR_ARGUMENT');
    expectCode(call(withArg(17, 1e300)), 'ERR_ARGUMENT');
    expectCode(call(withArg(18, 3)), 'ERR_ARGUMENT');
    expectCode(call(withArg(18, -1)), 'ERR_ARGUMENT');
    expectCode(call(base().slice(0, 10)), 'ERR_ARGUMENT');
  });

  it('C overlapping an input: ERR_ARGUMENT', () => {
    const buffer = new Float32Array(32);
    const args = base();
    args[0] = buffer.subarray(0, 6);
    args[2] = buffer.subarray(4, 12);
    expectCode(call(args), 'ERR_ARGUMENT');
  });

  it('a released native buffer: ERR_DETACHED', () => {
    const memory = native().alloc(6 * 4, true);
    const a = new Float32Array(memory);
    native().free(memory);
    expectCode(call(withArg(0, a)), 'ERR_DETACHED');
    const memoryC = native().alloc(8 * 4, true);
    const c = new Float32Array(memoryC);
    native().free(memoryC);
    expectCode(call(withArg(2, c)), 'ERR_DETACHED');
  });

  it('huge sizes fail cleanly instead of overflowing', () => {
    expectCode(call(withArg(5, 2 ** 52)), 'ERR_SHAPE');
    const huge = base();
    huge[4] = 2 ** 40;
    huge[13] = 2 ** 40;
    expectCode(call(huge), 'ERR_SHAPE');
  });
});
