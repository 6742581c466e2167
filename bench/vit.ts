/**
 * ViT-L/16 (mSTAR's patch encoder) fp32 inference on this CPU: images/s at batch 1 and 16,
 * and the ratio to the GEMM roofline — OpenBLAS GFLOP/s measured in the same run at the
 * ViT-L GEMM shapes ÷ 123.2 GFLOP per image (the model's multiply-adds ×2 at 224²).
 *
 *   npx tsx bench/vit.ts [--threads 2] [--repeats 3] [--batches 1,16]
 *
 * First checks the engine on the vit-tiny fixture (timm parity ≤ 1e-4) and that batch
 * results equal single-image results for ViT-L, then measures.
 */
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { readFileSync } from 'node:fs';
import { loadPatchEncoder } from '../lib/encoder.js';
import { manualSeed, noGrad, setNumThreads, Tensor, tidy } from '../lib/index.js';
import { MSTAR_VIT_L16, VisionTransformer } from '../lib/models/vit.js';
import { native } from '../lib/native.js';
import { numpyAvailable, numpyGemmSeconds } from './anchors.js';

const GFLOP_PER_IMAGE = 123.2;
const here = dirname(fileURLToPath(import.meta.url));

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

async function checkTinyParity(): Promise<number> {
  const dir = join(here, '..', 'test', 'fixtures', 'vit-tiny');
  const encoder = await loadPatchEncoder(join(dir, 'weights.safetensors'), { config: join(dir, 'config.json') });
  // expected.safetensors: patch.input [1,3,224,224], patch.features [1,64]
  const bytes = readFileSync(join(dir, 'expected.safetensors'));
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const tensor = (name: string): Float32Array => {
    const [b, e] = header[name].data_offsets;
    return new Float32Array(bytes.buffer.slice(bytes.byteOffset + 8 + headerLength + b, bytes.byteOffset + 8 + headerLength + e));
  };
  const out = tidy(() => encoder.embedTensor(Tensor.fromArray(tensor('patch.input'), [1, 3, 224, 224])).toFloat32Array());
  encoder.dispose();
  const want = tensor('patch.features');
  return out.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0);
}

async function main(): Promise<void> {
  const threads = Number(arg('--threads', '2'));
  const repeats = Number(arg('--repeats', '3'));
  const batches = arg('--batches', '1,16').split(',').map(Number);
  setNumThreads(threads);
  const info = native().runtimeInfo();
  console.log(`ViT-L/16 fp32 inference: ${threads} threads, simd ${info.simd}, ${cpus()[0]?.model ?? '?'}, load ${loadavg()[0].toFixed(2)}`);

  const tinyError = await checkTinyParity();
  console.log(`check: vit-tiny vs timm max |Δ| = ${tinyError.toExponential(2)} (≤ 1e-4 required)`);
  if (!(tinyError <= 1e-4)) throw new Error('parity check failed; not measuring');

  manualSeed(0);
  const model = new VisionTransformer(MSTAR_VIT_L16).eval();
  const image = new Float32Array(3 * 224 * 224).map((_, i) => Math.sin(i * 0.37));
  const run = (batch: number): Float32Array =>
    tidy(() => noGrad(() => {
      const data = new Float32Array(batch * image.length);
      for (let b = 0; b < batch; b++) data.set(image, b * image.length);
      return model.forward(Tensor.fromArray(data, [batch, 3, 224, 224])).features.toFloat32Array();
    }));
  const single = run(1);
  const batched = run(2);
  const consistency = single.reduce((m, v, i) => Math.max(m, Math.abs(v - batched[1024 + i])), 0);
  console.log(`check: ViT-L batch-2 row vs batch-1 max |Δ| = ${consistency.toExponential(2)}`);
  if (!(consistency <= 1e-3)) throw new Error('batch consistency check failed; not measuring');

  // Rounds alternate the anchor and our model, so both see the same machine load; each
  // figure is the best over the rounds. Anchor: one transformer block's GEMMs at batch 16
  // (qkv, proj, MLP up, MLP down) in numpy/OpenBLAS, Σ FLOPs / Σ seconds.
  const anchorShapes = [
    { m: 16 * 197, k: 1024, n: 3072 },
    { m: 16 * 197, k: 1024, n: 1024 },
    { m: 16 * 197, k: 1024, n: 4096 },
    { m: 16 * 197, k: 4096, n: 1024 },
  ];
  const hasNumpy = numpyAvailable();
  if (!hasNumpy) console.log('anchor: python3 + numpy not found; ratios not available');
  let anchorGflops = 0;
  const bestSeconds = new Map<number, number>(batches.map((b) => [b, Infinity]));
  for (let r = 0; r < repeats; r++) {
    if (hasNumpy) {
      let seconds = 0;
      let flops = 0;
      for (const s of anchorShapes) {
        seconds += numpyGemmSeconds(s, { threads, repeats: 2 });
        flops += 2 * s.m * s.k * s.n;
      }
      anchorGflops = Math.max(anchorGflops, flops / seconds / 1e9);
    }
    for (const batch of batches) {
      const t = performance.now();
      run(batch);
      bestSeconds.set(batch, Math.min(bestSeconds.get(batch) as number, (performance.now() - t) / 1000));
    }
  }
  const roofline = anchorGflops / GFLOP_PER_IMAGE;
  if (hasNumpy) console.log(`anchor: OpenBLAS (numpy) at the ViT-L GEMM shapes, batch 16: ${anchorGflops.toFixed(1)} GFLOP/s → roofline ${roofline.toFixed(3)} images/s (best of ${repeats} rounds)`);
  for (const batch of batches) {
    const best = bestSeconds.get(batch) as number;
    const imagesPerSecond = batch / best;
    const ratio = hasNumpy ? (imagesPerSecond / roofline).toFixed(2) : '?';
    console.log(`batch ${String(batch).padStart(2)}: ${imagesPerSecond.toFixed(3)} images/s (${(best / batch).toFixed(3)} s/image, ${(imagesPerSecond * GFLOP_PER_IMAGE).toFixed(1)} GFLOP/s), ` +
      `${ratio}× the OpenBLAS roofline (best of ${repeats} rounds)`);
  }
  model.dispose();
}

await main();
