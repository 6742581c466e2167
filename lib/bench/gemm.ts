/**
 * fp32 GEMM throughput of the native engine: C_b[m×n] = A_b[m×k] · B_b[k×n] (or B_b stored [n×k]
 * with `transB`), b < batch. Used by `mstar bench gemm` and bench/gemm.ts.
 *
 * A fast wrong kernel is not a benchmark: the result of the first run is checked against a float64
 * reference on a sample of entries before anything is timed, and a mismatch throws
 * (code ERR_BENCH_MISMATCH). Then `repeats` runs are timed and the best is reported (the machine
 * may be shared; the best run is the one least disturbed).
 */
import { Activation, native } from '../native.js';
import { checkPositiveInteger } from '../errors.js';

export interface GemmBenchOptions {
  m: number;
  n: number;
  k: number;
  batch?: number;
  /** Timed runs; the best is reported. Default 5. */
  repeats?: number;
  /** B stored [n×k] (the layout of a torch Linear weight). Default false. */
  transB?: boolean;
  /** Threads for the native pool during the run (restored after). Default: the pool as it is. */
  threads?: number;
  /** Entries of C checked against the float64 reference. Default 256. */
  samples?: number;
}

export interface GemmBenchResult {
  /** 2·batch·m·n·k / bestSeconds / 1e9. */
  gflops: number;
  bestSeconds: number;
  medianSeconds: number;
  /** Largest |C − reference| over the sampled entries. */
  maxAbsError: number;
  threads: number;
  simd: string;
}

/** Uniform [−1, 1) from a 32-bit LCG: fast enough for 10^8 entries, deterministic. */
function fillUniform(x: Float32Array, seed: number): void {
  let s = seed >>> 0;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = s / 2147483648 - 1;
  }
}

export function benchGemm(options: GemmBenchOptions): GemmBenchResult {
  const m = checkPositiveInteger('m', options.m);
  const n = checkPositiveInteger('n', options.n);
  const k = checkPositiveInteger('k', options.k);
  const batch = checkPositiveInteger('batch', options.batch ?? 1);
  const repeats = checkPositiveInteger('repeats', options.repeats ?? 5);
  const samples = checkPositiveInteger('samples', options.samples ?? 256);
  const transB = options.transB ?? false;
  const binding = native();
  const savedThreads = binding.runtimeInfo().threads;
  if (options.threads !== undefined) binding.setNumThreads(checkPositiveInteger('threads', options.threads));
  try {
    const a = new Float32Array(batch * m * k);
    const b = new Float32Array(batch * k * n);
    const c = new Float32Array(batch * m * n);
    fillUniform(a, 1);
    fillUniform(b, 2);
    const ldb = transB ? k : n;
    const run = () =>
      binding.gemm(a, b, c, null, batch, m, n, k, false, transB, k, ldb, n, m * k, k * n, m * n, 1, 0, Activation.None);

    run();
    // Check: float64 dot products for a spread of entries (corners included).
    let maxAbsError = 0;
    let seed = 12345;
    for (let s = 0; s < samples; s++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      const t = s === 0 ? 0 : s === 1 ? batch - 1 : seed % batch;
      const i = s === 0 ? 0 : s === 1 ? m - 1 : (seed >>> 8) % m;
      const j = s === 0 ? 0 : s === 1 ? n - 1 : (Math.imul(seed, 2654435761) >>> 0) % n;
      let ref = 0;
      for (let l = 0; l < k; l++) {
        const bv = transB ? b[t * k * n + j * k + l] : b[t * k * n + l * n + j];
        ref += a[t * m * k + i * k + l] * bv;
      }
      maxAbsError = Math.max(maxAbsError, Math.abs(c[t * m * n + i * n + j] - ref));
    }
    // Inputs in [−1, 1): |C| ≲ √k/3, float32 accumulation errors stay far below this bound,
    // while any indexing or packing bug gives errors of order 1.
    const tolerance = 1e-5 * k;
    if (!(maxAbsError <= tolerance)) {
      const error = new Error(
        `benchGemm: result differs from the float64 reference by ${maxAbsError} (> ${tolerance}); not timing a wrong kernel`,
      ) as Error & { code: string };
      error.code = 'ERR_BENCH_MISMATCH';
      throw error;
    }

    const times: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const start = process.hrtime.bigint();
      run();
      times.push(Number(process.hrtime.bigint() - start) / 1e9);
    }
    times.sort((x, y) => x - y);
    const bestSeconds = times[0];
    const info = binding.runtimeInfo();
    return {
      gflops: (2 * batch * m * n * k) / bestSeconds / 1e9,
      bestSeconds,
      medianSeconds: times[Math.floor(times.length / 2)],
      maxAbsError,
      threads: info.threads,
      simd: info.simd,
    };
  } finally {
    if (options.threads !== undefined) binding.setNumThreads(savedThreads);
  }
}
