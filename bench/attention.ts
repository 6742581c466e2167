/**
 * Tiled (flash) attention vs the naive anchor (cpp/ops/attention.cc), forward, plus the
 * tiled backward. Shapes [B=1, H, N, D=64], self-attention, no mask.
 *
 *   npx tsx bench/attention.ts            N = 197, 512, 4096, 16384
 *   npx tsx bench/attention.ts --quick    N = 197, 512
 *   MSTAR_NUM_THREADS=4 npx tsx bench/attention.ts
 *
 * Validation: before timing, sampled output rows against a float64 reference and, after the
 * backward's first run, sampled dV rows against float64 (P recomputed from the kernel's lse);
 * naive's output (from its timed runs) must match tiled's. Times are the best of several runs; peak bytes are
 * native().memoryStats().peakBytes after resetPeakBytes() (the inputs live in JS memory and
 * are not counted), i.e. what each kernel allocates for itself. FLOPs: forward 4·B·H·N²·D
 * (QKᵀ and PV); backward 2.5× that, the usual FlashAttention convention (the kernel itself
 * does 3.5× because dQ is a second, deterministic pass).
 */
import { native } from '../lib/native.js';

const threads = Number(process.env.MSTAR_NUM_THREADS ?? 2);
// Set before any parallel work has run.
native().setNumThreads(threads);

const quick = process.argv.includes('--quick');
const D = 64;
/**
 * Heads per size: 16, except one head at 16384 (the naive anchor alone takes ~10 s per
 * head there). Timed runs per kernel: `reps`, the naive anchor at most 2.
 */
const configs = [
  { N: 197, H: 16, reps: 10 },
  { N: 512, H: 16, reps: 5 },
  { N: 4096, H: 16, reps: 3 },
  { N: 16384, H: 1, reps: 3 },
].filter((c) => !quick || c.N <= 512);
/** Naive holds one [N, N] float32 score matrix at a time (one (b, h) after another); skip it above this. */
const naiveLimitBytes = 4 * 2 ** 30;

function randn(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

/** Best wall time (ms) of `reps` runs, and the peak native bytes allocated during them. */
function measure(fn: () => void, reps: number): { ms: number; peak: number } {
  const base = native().memoryStats().bytesInUse;
  native().resetPeakBytes();
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    best = Math.min(best, performance.now() - t0);
  }
  return { ms: best, peak: native().memoryStats().peakBytes - base };
}

/** Max |out − reference| over a few query rows of head 0, reference in float64. */
function sampledError(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, N: number, scale: number): number {
  let worst = 0;
  for (const i of [0, 1, N >> 1, N - 1]) {
    const s = new Float64Array(N);
    let max = -Infinity;
    for (let j = 0; j < N; j++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[i * D + d] * k[j * D + d];
      s[j] = dot * scale;
      max = Math.max(max, s[j]);
    }
    let sum = 0;
    for (let j = 0; j < N; j++) sum += (s[j] = Math.exp(s[j] - max));
    for (let d = 0; d < D; d++) {
      let o = 0;
      for (let j = 0; j < N; j++) o += s[j] * v[j * D + d];
      worst = Math.max(worst, Math.abs(o / sum - out[i * D + d]));
    }
  }
  return worst;
}

/** Max |dV_j − reference| / max |reference| over a few keys j of head 0: dV_j = Σ_i P_ij dO_i. */
function sampledGradVError(
  q: Float32Array, k: Float32Array, gOut: Float32Array, lse: Float32Array, gv: Float32Array, N: number, scale: number,
): number {
  let worst = 0;
  let magnitude = 0;
  for (const j of [0, N >> 1, N - 1]) {
    const ref = new Float64Array(D);
    for (let i = 0; i < N; i++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[i * D + d] * k[j * D + d];
      const p = Math.exp(dot * scale - lse[i]);
      for (let d = 0; d < D; d++) ref[d] += p * gOut[i * D + d];
    }
    for (let d = 0; d < D; d++) {
      worst = Math.max(worst, Math.abs(gv[j * D + d] - ref[d]));
      magnitude = Math.max(magnitude, Math.abs(ref[d]));
    }
  }
  return worst / magnitude;
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 3 : 1);
const info = native().runtimeInfo();
console.log(`attention, B=1, D=${D}, ${info.threads} threads, simd ${info.simd}; best-of-N ms; peak = native bytes the kernel allocates`);
console.log('| N | H | tiled fwd ms | GFLOP/s | tiled peak MiB | naive fwd ms | GFLOP/s | naive peak MiB | naive/tiled time | naive/tiled memory | tiled bwd ms | bwd GFLOP/s | bwd peak MiB |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');

for (const { N, H, reps } of configs) {
  const scale = 1 / Math.sqrt(D);
  const len = H * N * D;
  const [q, k, v, gOut] = [randn(len, 1), randn(len, 2), randn(len, 3), randn(len, 4)];
  const out = new Float32Array(len);
  const naiveOut = new Float32Array(len);
  const lse = new Float32Array(H * N);
  const [gq, gk, gv] = [new Float32Array(len), new Float32Array(len), new Float32Array(len)];
  const strides = [H * N * D, N * D, D];
  const dims = [1, H, N, N, D];
  const flops = 4 * H * N * N * D;
  const tiled = () => native().attentionForward(q, k, v, out, lse, null, dims, strides, strides, strides, strides, scale);
  const naive = () => native().attentionNaiveForward(q, k, v, naiveOut, null, dims, strides, strides, strides, strides, scale);
  const backward = () =>
    native().attentionBackward(q, k, v, out, gOut, lse, gq, gk, gv, null, dims, strides, strides, strides, strides, scale);

  // Validate before timing (naive is checked against tiled below, on its own timed output).
  tiled();
  const error = sampledError(q, k, v, out, N, scale);
  if (!(error < 1e-5)) throw new Error(`N=${N}: tiled output differs from the float64 reference by ${error}`);
  backward();
  const gradError = sampledGradVError(q, k, gOut, lse, gv, N, scale);
  if (!(gradError < 1e-4)) throw new Error(`N=${N}: tiled dV differs from the float64 reference by ${gradError} (relative)`);
  const t = measure(tiled, reps);
  const b = measure(backward, Math.max(1, Math.ceil(reps / 2)));
  const gflops = (f: number, ms: number) => (f / ms / 1e6).toFixed(1);
  const naiveBytes = N * N * 4;
  let naiveCells: string[];
  if (naiveBytes <= naiveLimitBytes) {
    const n = measure(naive, Math.min(2, reps));
    let diff = 0;
    for (let i = 0; i < len; i++) diff = Math.max(diff, Math.abs(out[i] - naiveOut[i]));
    if (!(diff < 1e-5)) throw new Error(`N=${N}: tiled and naive differ by ${diff}`);
    naiveCells = [n.ms.toFixed(1), gflops(flops, n.ms), mib(n.peak), (n.ms / t.ms).toFixed(1) + '×', (n.peak / t.peak).toFixed(0) + '×'];
  } else {
    naiveCells = [`skipped: needs ${mib(naiveBytes)} MiB of scores`, '', '', '', ''];
  }
  console.log(
    `| ${N} | ${H} | ${t.ms.toFixed(1)} | ${gflops(flops, t.ms)} | ${mib(t.peak)} | ${naiveCells.join(' | ')} | ${b.ms.toFixed(1)} | ${gflops(2.5 * flops, b.ms)} | ${mib(b.peak)} |`,
  );
}
