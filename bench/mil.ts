/**
 * MIL heads: training throughput and memory at slide scale, and the fused bag-pooling
 * kernel against the same pooling composed from engine ops.
 *
 *   npx tsx bench/mil.ts                 N = 1k, 10k, 100k patches of 1024 features
 *   npx tsx bench/mil.ts --quick         N = 1k, 10k
 *   npx tsx bench/mil.ts --n 2000,50000  chosen sizes
 *   npx tsx bench/mil.ts --sections pool,layer,train --abmil-only|--transmil-only --assert-2gb
 *   npm run bench -- mil
 *
 * Validation first: the fused pooling must equal the engine-op composition (forward and
 * both gradients), and one TransMIL layer (fused, chunked) must equal the unfused
 * engine-op composition of the repository's code at N = 2000 before anything is timed.
 *
 * Figures:
 * - pooling: fused vs unfused forward+backward time over [N, 512] (ratio = unfused / fused),
 *   and the peak native bytes each allocates;
 * - training: one optimizer step (forward, NLL survival loss, backward, Adam) per slide,
 *   slides/s, and the peak native bytes beyond the slide's features (memoryStats().peakBytes
 *   after resetPeakMemory(), minus the bytes in use with the features, the model and the
 *   optimizer state loaded) — with bytes per patch, which stays flat when memory is linear in N;
 *   `--assert-2gb` fails the run when a 100k-patch step needs 2 GiB or more;
 * - TransMIL layer: fused vs unfused (the reference's n×m matrices) at small N, time and memory.
 * Threads: MSTAR_NUM_THREADS (default all cores).
 */
import { memoryStats, resetPeakMemory, Tensor, tidy } from '../lib/index.js';
import { native } from '../lib/native.js';
import { ABMIL } from '../lib/mil/abmil.js';
import { nllSurvLoss } from '../lib/mil/losses.js';
import { TRANSMIL_NYSTROM, transLayer } from '../lib/mil/nystrom.js';
import { bagAttentionPool, bagAttentionPoolUnfused } from '../lib/mil/ops.js';
import { TransMIL } from '../lib/mil/transmil.js';
import { Adam } from '../lib/optim/optimizer.js';
import { transLayerReference } from '../test/mil-reference.js';

const args = process.argv.slice(2);
const nArg = args.indexOf('--n');
const sizes = nArg >= 0 ? args[nArg + 1].split(',').map(Number) : args.includes('--quick') ? [1000, 10000] : [1000, 10000, 100000];
const assert2gb = args.includes('--assert-2gb');
const sectionArg = args.indexOf('--sections');
const sections = new Set(sectionArg >= 0 ? args[sectionArg + 1].split(',') : ['pool', 'layer', 'train']);
const models = (args.includes('--abmil-only') ? ['abmil'] : args.includes('--transmil-only') ? ['transmil'] : ['abmil', 'transmil']) as ('abmil' | 'transmil')[];
const D = 1024;
const MiB = 1024 * 1024;

function random(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

function maxRelErr(a: Float32Array, b: Float32Array): number {
  let m = 0;
  let ref = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i] - b[i]));
    ref = Math.max(ref, Math.abs(b[i]));
  }
  return m / Math.max(ref, 1e-30);
}

function fail(message: string): never {
  console.error(`FAILED: ${message}`);
  process.exit(1);
}

/** Best wall time over reps and the peak native bytes allocated beyond what was in use. */
function measure(fn: () => void, reps: number): { ms: number; peak: number } {
  const base = memoryStats().bytesInUse;
  resetPeakMemory();
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    fn();
    best = Math.min(best, performance.now() - t0);
  }
  return { ms: best, peak: memoryStats().peakBytes - base };
}

console.log(`threads ${native().runtimeInfo().threads}, SIMD ${native().runtimeInfo().simd}`);

// ---- validation ----
tidy(() => {
  const N = 3000;
  const L = 512;
  const s1 = Tensor.fromArray(random(N, 1, 3), [N, 1]).requireGrad();
  const h1 = Tensor.fromArray(random(N * L, 2), [N, L]).requireGrad();
  const s2 = Tensor.fromArray(random(N, 1, 3), [N, 1]).requireGrad();
  const h2 = Tensor.fromArray(random(N * L, 2), [N, L]).requireGrad();
  const g = Tensor.fromArray(random(L, 3), [1, 1, L]);
  const f = bagAttentionPool(s1, h1).pooled;
  const u = bagAttentionPoolUnfused(s2, h2);
  f.backward(g);
  u.backward(g);
  const errs = [maxRelErr(f.toFloat32Array(), u.toFloat32Array()), maxRelErr(s1.grad!.toFloat32Array(), s2.grad!.toFloat32Array()), maxRelErr(h1.grad!.toFloat32Array(), h2.grad!.toFloat32Array())];
  if (errs.some((e) => !(e < 1e-4))) fail(`fused pooling differs from the composition: ${errs.join(', ')}`);
  console.log(`validated: fused pooling = softmax+matmul (max rel err ${Math.max(...errs).toExponential(2)})`);
});
const layerWeights = (C: number) => {
  const inner = 512;
  const t = (shape: number[], seed: number, scale: number) => Tensor.fromArray(random(shape.reduce((a, b) => a * b, 1), seed, scale), shape).requireGrad();
  return {
    normWeight: Tensor.fromArray(random(C, 10, 0.2).map((v) => 1 + v), [C]).requireGrad(), normBias: t([C], 11, 0.1),
    qkvWeight: t([3 * inner, C], 12, 0.08), outWeight: t([C, inner], 13, 0.05), outBias: t([C], 14, 0.1), resConvWeight: t([8, 1, 33, 1], 15, 0.2),
  };
};
tidy(() => {
  const n = 2000;
  const w = layerWeights(512);
  const xv = random(n * 512, 20);
  const g = Tensor.fromArray(random(n * 512, 21), [n, 512]);
  const x1 = Tensor.fromArray(xv, [n, 512]).requireGrad();
  const a = transLayer(x1, w, TRANSMIL_NYSTROM, { chunkRows: 700 }).out;
  a.backward(g);
  const gq = w.qkvWeight.grad!.toFloat32Array();
  Object.values(w).forEach((t) => t.zeroGrad());
  const x2 = Tensor.fromArray(xv, [n, 512]).requireGrad();
  const b = transLayerReference(x2, w, TRANSMIL_NYSTROM);
  b.backward(g);
  const errs = [maxRelErr(a.toFloat32Array(), b.toFloat32Array()), maxRelErr(x1.grad!.toFloat32Array(), x2.grad!.toFloat32Array()), maxRelErr(gq, w.qkvWeight.grad!.toFloat32Array())];
  if (errs.some((e) => !(e < 1e-3))) fail(`fused TransLayer differs from the unfused composition: ${errs.join(', ')}`);
  console.log(`validated: fused chunked TransLayer = unfused composition at N = ${n} (max rel err ${Math.max(...errs).toExponential(2)})`);
  Object.values(w).forEach((t) => t.dispose());
});

// ---- fused pooling vs composition ----
if (sections.has('pool')) {
  console.log('\nattention pooling over [N, 512], forward + backward of the op alone (best of runs)');
  console.log('N        fused ms  unfused ms  ratio   fused GB/s  fused peak MiB  unfused peak MiB');
  for (const N of sizes) {
    const L = 512;
    const s = Tensor.fromArray(random(N, 30, 3), [N, 1]).requireGrad();
    const h = Tensor.fromArray(random(N * L, 31), [N, L]).requireGrad();
    const g = Tensor.fromArray(random(L, 32), [1, 1, L]);
    const run = (fused: boolean) => () => {
      tidy(() => {
        const out = fused ? bagAttentionPool(s, h).pooled : bagAttentionPoolUnfused(s, h);
        out.backward(g);
      });
      s.zeroGrad();
      h.zeroGrad();
    };
    const reps = N >= 100000 ? 3 : 10;
    run(true)();
    const f = measure(run(true), reps);
    const u = measure(run(false), reps);
    // Bytes the fused op must move at least: read h twice (forward, backward), write dh once.
    const gbs = (3 * N * L * 4) / (f.ms / 1000) / 1e9;
    console.log(`${String(N).padEnd(8)} ${f.ms.toFixed(2).padStart(8)}  ${u.ms.toFixed(2).padStart(10)}  ${(u.ms / f.ms).toFixed(2).padStart(5)}×  ${gbs.toFixed(1).padStart(10)}  ${(f.peak / MiB).toFixed(1).padStart(14)}  ${(u.peak / MiB).toFixed(1).padStart(16)}`);
    s.dispose();
    h.dispose();
    g.dispose();
  }
}

// ---- TransLayer fused vs unfused ----
if (sections.has('layer')) console.log('\nTransMIL layer (8 heads × 64, 256 landmarks), forward + backward; unfused = the reference code\'s n×m matrices');
if (sections.has('layer')) console.log('N        fused ms  fused peak MiB  unfused ms  unfused peak MiB');
for (const n of sizes.filter((s) => s <= 10000 && sections.has('layer'))) {
  const w = layerWeights(512);
  const xv = random(n * 512, 40);
  const gv = random(n * 512, 41);
  const run = (fused: boolean) => () => tidy(() => {
    const x = Tensor.fromArray(xv, [n, 512]).requireGrad();
    const out = fused ? transLayer(x, w, TRANSMIL_NYSTROM).out : transLayerReference(x, w, TRANSMIL_NYSTROM);
    out.backward(Tensor.fromArray(gv, [n, 512]));
    Object.values(w).forEach((t) => t.zeroGrad());
  });
  const f = measure(run(true), 2);
  const u = measure(run(false), 1);
  console.log(`${String(n).padEnd(8)} ${f.ms.toFixed(0).padStart(8)}  ${(f.peak / MiB).toFixed(1).padStart(14)}  ${u.ms.toFixed(0).padStart(10)}  ${(u.peak / MiB).toFixed(1).padStart(16)}`);
  Object.values(w).forEach((t) => t.dispose());
}

// ---- training steps ----
if (sections.has('train')) {
  console.log('\ntraining step per slide (forward, NLL survival loss, backward, Adam), D = 1024');
  console.log('model     N        ms/slide  slides/s  peak beyond features MiB  bytes/patch');
}
let over2gb = false;
for (const kind of sections.has('train') ? models : []) {
  for (const N of sizes) {
    const model = kind === 'abmil' ? new ABMIL({ inFeatures: D, nClasses: 4 }) : new TransMIL({ inFeatures: D, nClasses: 4 });
    model.train();
    const opt = new Adam(model.parameters(), { lr: 2e-4, weightDecay: 1e-5 });
    const x = Tensor.fromArray(random(N * D, 50), [N, D]);
    let seed = 1;
    const step = (): void => {
      tidy(() => {
        const out = model.forward(x, { seed: seed++ });
        nllSurvLoss(out.logits, [1], [0]).backward();
      });
      opt.step();
      opt.zeroGrad();
    };
    step(); // creates the optimizer state (counted in the baseline below)
    const reps = N >= 100000 ? 1 : N >= 10000 ? 2 : 3;
    const r = measure(step, reps);
    if (N >= 100000 && r.peak >= 2 * 1024 * MiB) over2gb = true;
    console.log(`${kind.padEnd(9)} ${String(N).padEnd(8)} ${r.ms.toFixed(0).padStart(8)}  ${(1000 / r.ms).toFixed(2).padStart(8)}  ${(r.peak / MiB).toFixed(1).padStart(24)}  ${(r.peak / N).toFixed(0).padStart(11)}`);
    x.dispose();
    opt.dispose();
    model.dispose();
  }
}
if (assert2gb && over2gb) fail('a 100k-patch training step needed 2 GiB or more beyond its features');
