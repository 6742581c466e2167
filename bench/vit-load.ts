/**
 * Loading mSTAR's ViT-L/16 weights (1.2 GB): seconds and peak resident memory for the
 * `.pth` (zip) and `.safetensors` forms, each in a fresh process, best of N.
 *
 *   npx tsx bench/vit-load.ts [--repeats 3] [--weights mSTAR.pth]
 *
 * Anchor, measured in the same child: first touch of fresh memory the size of the
 * parameters (what any loader must pay to hold them; on a VM it is most of the time).
 * The target: peak memory ≤ ~2× the file, a few seconds.
 * Without --weights, a ViT-L with random weights is written to a temporary folder first;
 * every load is checked against those weights.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPatchEncoder, manualSeed, MSTAR_VIT_L16, Tensor, VisionTransformer } from '../lib/index.js';
import { fromFloat32 } from '../lib/io/host-tensor.js';
import { writeSafetensors } from '../lib/io/safetensors.js';
import { writeTorchCheckpoint } from '../lib/io/torch.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

interface ChildResult { seconds: number; maxRssBytes: number; anonBytes: number; fileBytes: number; fillSeconds: number; checksum: number }

/** RssAnon / RssFile of this process now (Linux), bytes. */
function rssSplit(): { anonBytes: number; fileBytes: number } {
  const status = existsSync('/proc/self/status') ? readFileSync('/proc/self/status', 'utf8') : '';
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { anonBytes: kb('RssAnon'), fileBytes: kb('RssFile') };
}

/** Sum of every 4099th parameter value: a cheap fingerprint of the loaded weights. */
function fingerprint(model: VisionTransformer): number {
  let sum = 0;
  for (const p of model.parameters()) {
    const d = p.data();
    for (let i = 0; i < d.length; i += 4099) sum += d[i];
  }
  return sum;
}

async function child(path: string): Promise<void> {
  const t0 = performance.now();
  const encoder = await loadPatchEncoder(path);
  const seconds = (performance.now() - t0) / 1000;
  const maxRssBytes = process.resourceUsage().maxRSS * 1024;
  const split = rssSplit(); // after loading: the file is unmapped again, the parameters stay
  const checksum = fingerprint(encoder.model);
  const bytes = encoder.model.parameters().reduce((n, p) => n + p.size * 4, 0);
  const t1 = performance.now();
  const fill = Tensor.empty([bytes / 4]);
  fill.data().fill(1);
  const fillSeconds = (performance.now() - t1) / 1000;
  console.log(JSON.stringify({ seconds, maxRssBytes, ...split, fillSeconds, checksum } satisfies ChildResult));
}

async function main(): Promise<void> {
  const repeats = Number(arg('--repeats', '3'));
  let weights = arg('--weights', '');
  const dir = weights ? null : mkdtempSync(join(tmpdir(), 'mstar-vit-load-'));
  try {
    const files: string[] = [];
    let expected: number | null = null;
    if (dir) {
      manualSeed(7);
      const model = new VisionTransformer(MSTAR_VIT_L16);
      expected = fingerprint(model);
      const tensors = new Map([...model.stateDict()].map(([n, t]) => [n, fromFloat32(t.toFloat32Array(), [...t.shape])]));
      model.dispose();
      files.push(join(dir, 'vit-l16.pth'), join(dir, 'vit-l16.safetensors'));
      writeTorchCheckpoint(files[0], tensors);
      writeSafetensors(files[1], tensors);
    } else {
      files.push(weights);
    }
    console.log('file                  size      load (best)  peak RSS  RSS/file  private after  fresh-memory anchor  load/anchor');
    for (const file of files) {
      const size = statSync(file).size;
      let best: ChildResult | null = null;
      for (let r = 0; r < repeats; r++) {
        const run = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', file], { encoding: 'utf8' });
        if (run.status !== 0) throw new Error(`loading ${file} failed:\n${run.stderr}`);
        const result = JSON.parse(run.stdout.trim().split('\n').at(-1) as string) as ChildResult;
        if (expected !== null && Math.abs(result.checksum - expected) > 1e-6 * Math.max(1, Math.abs(expected))) {
          throw new Error(`${file}: loaded weights differ from those written (fingerprint ${result.checksum} vs ${expected})`);
        }
        if (best === null || result.seconds < best.seconds) best = result;
      }
      const b = best as ChildResult;
      const name = file.split('/').at(-1) as string;
      console.log(`${name.padEnd(20)}  ${(size / 1e9).toFixed(2)} GB   ${b.seconds.toFixed(2).padStart(6)} s    ${(b.maxRssBytes / 1e9).toFixed(2)} GB   ${(b.maxRssBytes / size).toFixed(2)}×     ${(b.anonBytes / 1e9).toFixed(2)} GB       ${b.fillSeconds.toFixed(2).padStart(6)} s            ${(b.seconds / b.fillSeconds).toFixed(2)}×`);
    }
    console.log('peak RSS counts the mapped file pages (page cache, shared with the OS cache) and the parameters;\n' +
      '"private after" is the anonymous memory held once loaded (parameters + runtime), the file being unmapped.');
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

const childAt = process.argv.indexOf('--child');
if (childAt >= 0) await child(process.argv[childAt + 1]);
else await main();
