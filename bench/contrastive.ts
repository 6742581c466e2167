/**
 * The tiled contrastive loss (symmetric InfoNCE, cpp/ops/contrastive.cc): forward+backward
 * time and peak native memory, against the same loss composed from engine ops that form
 * the N×N matrix (matmul, crossEntropy both ways) — the anchor, measured in the same run.
 *
 *   npx tsx bench/contrastive.ts [--n 4096,8192] [--d 512] [--repeats 3] [--large 65536]
 *
 * First checks that both give the same loss and gradients at the smallest N. `--large N`
 * also runs the tiled loss alone at N (forward + backward) and prints its peak memory,
 * where the materialized N×N matrix alone would need N²·4 bytes.
 */
import { memoryStats, ops, resetPeakMemory, Tensor, tidy } from '../lib/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const LOG_SCALE = Math.log(1 / 0.07);

function embeddings(n: number, d: number, seed: number): Tensor {
  const x = new Float32Array(n * d);
  let s = seed >>> 0;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = s / 2 ** 32 - 0.5;
  }
  return tidy(() => ops.l2Normalize(Tensor.fromArray(x, [n, d])));
}

/** The materialized loss: S = exp(t)·a bᵀ [N, N], cross entropy over rows and columns. */
function materializedLoss(a: Tensor, b: Tensor, t: Tensor): Tensor {
  const n = a.shape[0];
  const targets = Int32Array.from({ length: n }, (_, i) => i);
  const s = ops.mul(ops.matmul(a, b.transpose(0, 1)), ops.exp(t));
  const rows = ops.crossEntropy(s, targets);
  const cols = ops.crossEntropy(s.transpose(0, 1), targets);
  return ops.mulScalar(ops.add(rows, cols), 0.5);
}

type LossFn = (a: Tensor, b: Tensor, t: Tensor) => Tensor;

/** Best seconds of forward+backward, peak native bytes beyond the inputs, and the results. */
function measure(fn: LossFn, n: number, d: number, repeats: number) {
  let best = Infinity;
  let peak = 0;
  let result = { loss: NaN, gradA: new Float32Array(0), gradT: NaN };
  for (let r = 0; r < repeats; r++) {
    tidy(() => {
      const a = embeddings(n, d, 1).requireGrad();
      const b = embeddings(n, d, 2).requireGrad();
      const t = Tensor.scalar(LOG_SCALE).requireGrad();
      const before = memoryStats().bytesInUse;
      resetPeakMemory();
      const start = performance.now();
      const loss = fn(a, b, t);
      loss.backward();
      best = Math.min(best, (performance.now() - start) / 1000);
      peak = Math.max(peak, memoryStats().peakBytes - before);
      result = { loss: loss.item(), gradA: a.grad!.toFloat32Array(), gradT: t.grad!.item() };
    });
  }
  return { seconds: best, peak, ...result };
}

const MiB = 2 ** 20;
const ns = arg('--n', '4096,8192').split(',').map(Number);
const d = Number(arg('--d', '512'));
const repeats = Number(arg('--repeats', '3'));
const large = Number(arg('--large', '0'));

const check = (n: number): void => {
  const tiled = measure((a, b, t) => ops.contrastiveLoss(a, b, t), n, d, 1);
  const plain = measure(materializedLoss, n, d, 1);
  let gradError = 0;
  for (let i = 0; i < tiled.gradA.length; i++) gradError = Math.max(gradError, Math.abs(tiled.gradA[i] - plain.gradA[i]));
  console.log(`check at N=${n}, D=${d}: loss ${tiled.loss.toFixed(6)} vs ${plain.loss.toFixed(6)}, max |Δ grad a| ${gradError.toExponential(2)}, d/dt ${tiled.gradT.toFixed(5)} vs ${plain.gradT.toFixed(5)}`);
  if (Math.abs(tiled.loss - plain.loss) > 1e-4 * Math.max(1, Math.abs(plain.loss)) || gradError > 1e-5 || Math.abs(tiled.gradT - plain.gradT) > 1e-3) {
    throw new Error('tiled and materialized losses disagree; not measuring');
  }
};
check(Math.min(...ns));

console.log('   N      D   tiled fwd+bwd   peak      materialized (anchor)   peak       time ratio   memory ratio');
for (const n of ns) {
  const tiled = measure((a, b, t) => ops.contrastiveLoss(a, b, t), n, d, repeats);
  const plain = measure(materializedLoss, n, d, repeats);
  console.log(`${String(n).padStart(6)} ${String(d).padStart(5)}   ${tiled.seconds.toFixed(3).padStart(8)} s   ${(tiled.peak / MiB).toFixed(0).padStart(5)} MiB   ` +
    `${plain.seconds.toFixed(3).padStart(8)} s          ${(plain.peak / MiB).toFixed(0).padStart(6)} MiB   ${(plain.seconds / tiled.seconds).toFixed(2).padStart(6)}×      ${(plain.peak / tiled.peak).toFixed(1).padStart(6)}×`);
}
if (large > 0) {
  const r = measure((a, b, t) => ops.contrastiveLoss(a, b, t), large, d, 1);
  console.log(`N=${large}, D=${d}: tiled forward+backward ${r.seconds.toFixed(1)} s, peak ${(r.peak / MiB).toFixed(0)} MiB beyond the inputs ` +
    `(the N×N matrix alone: ${((large * large * 4) / MiB).toFixed(0)} MiB), loss ${r.loss.toFixed(4)}`);
}
