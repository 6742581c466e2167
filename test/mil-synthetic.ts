/**
 * Synthetic cohorts with a planted signal, written in the mSTAR CSV layouts with one
 * feature file per slide (.pt, .h5 or .safetensors), for the training tests.
 *
 * Classification: instances ~ N(0, 1)^D; in a class-c bag a fraction of the instances is
 * shifted by +shift along axis c. Survival: each patient has a hidden risk r ~ U(−1, 1);
 * a fraction of its instances is shifted by 2r along axis 0; follow-up times are
 * 30·exp(−3r + 0.3ε) (shorter for higher r), and a quarter of the patients are censored
 * at a uniform fraction of their time.
 * `shuffleLabels` permutes labels (or times/status) across patients to destroy the signal.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeClamFeatures } from '../lib/io/clam.js';
import { fromFloat32 } from '../lib/io/host-tensor.js';
import { writeSafetensors } from '../lib/io/safetensors.js';
import { writeTorchCheckpoint } from '../lib/io/torch.js';
import { makeRng } from './helpers.js';

export interface SyntheticOptions {
  dir: string;
  task: 'classification' | 'survival';
  patients?: number;
  dim?: number;
  instances?: [number, number];
  classes?: number;
  signalFraction?: number;
  shift?: number;
  shuffleLabels?: boolean;
  seed?: number;
  /** File format per slide (cycled): default all .pt */
  formats?: ('pt' | 'h5' | 'safetensors')[];
  /** Give every k-th patient two slides. */
  multiSlideEvery?: number;
}

function gaussian(rng: () => number): number {
  const u = Math.max(rng(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
}

export async function writeSyntheticCohort(o: SyntheticOptions): Promise<{ csv: string; features: string }> {
  const rng = makeRng(o.seed ?? 7);
  const P = o.patients ?? 90;
  const D = o.dim ?? 32;
  const [nMin, nMax] = o.instances ?? [8, 40];
  const C = o.classes ?? 2;
  const frac = o.signalFraction ?? 0.3;
  const shift = o.shift ?? 1.5;
  const formats = o.formats ?? ['pt'];
  const features = join(o.dir, 'features');
  mkdirSync(features, { recursive: true });
  const labels: number[] = [];
  const risks: number[] = [];
  const rows: string[] = [];
  for (let p = 0; p < P; p++) {
    labels.push(p % C);
    risks.push(2 * rng() - 1);
  }
  const times = risks.map((r) => 30 * Math.exp(-3 * r + 0.3 * gaussian(rng)));
  const status = times.map(() => (rng() < 0.25 ? 0 : 1));
  const observed = times.map((t, i) => (status[i] ? t : t * (0.3 + 0.7 * rng())));
  // Shuffled labels: the features stay, the outcomes move to other patients.
  const perm = Array.from({ length: P }, (_, i) => i);
  if (o.shuffleLabels) for (let i = P - 1; i > 0; i--) { const j = Math.floor(rng() * (i + 1)); [perm[i], perm[j]] = [perm[j], perm[i]]; }
  let fileIndex = 0;
  for (let p = 0; p < P; p++) {
    const split = p % 10 < 6 ? 'train' : p % 10 < 8 ? (o.task === 'survival' ? 'validation' : 'val') : 'test';
    const slideCount = o.multiSlideEvery && p % o.multiSlideEvery === 0 ? 2 : 1;
    const slideNames: string[] = [];
    for (let s = 0; s < slideCount; s++) {
      const n = nMin + Math.floor(rng() * (nMax - nMin + 1));
      const data = new Float32Array(n * D);
      for (let i = 0; i < n; i++) {
        const signal = rng() < frac;
        for (let d = 0; d < D; d++) {
          let v = gaussian(rng);
          if (signal && o.task === 'classification' && d === labels[p]) v += shift;
          if (signal && o.task === 'survival' && d === 0) v += 2 * risks[p];
          data[i * D + d] = v;
        }
      }
      const format = formats[fileIndex++ % formats.length];
      const name = `P${String(p).padStart(3, '0')}-S${s}`;
      if (format === 'pt') writeTorchCheckpoint(join(features, `${name}.pt`), { features: fromFloat32(data, [n, D]) });
      else if (format === 'safetensors') writeSafetensors(join(features, `${name}.safetensors`), { features: fromFloat32(data, [n, D]) });
      else await writeClamFeatures(join(features, `${name}.h5`), data, [n, D], Array.from({ length: n }, (_, i) => [i * 256, 0]));
      slideNames.push(o.task === 'survival' ? `${name}.${format}` : name);
    }
    const q = perm[p];
    if (o.task === 'classification') {
      for (const s of slideNames) rows.push(`PAT${p},${s},class${labels[q]},${split}`);
    } else {
      rows.push(`SYN,PAT${p},${observed[q].toFixed(4)},${status[q]}.0,${slideNames.join(';')},${split}`);
    }
  }
  const csv = join(o.dir, 'cohort.csv');
  const header = o.task === 'classification' ? 'case,slide,label,fold' : 'Study,ID,Event,Status,WSI,split';
  writeFileSync(csv, `${header}\n${rows.join('\n')}\n`);
  return { csv, features };
}
