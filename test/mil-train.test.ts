/**
 * Training end to end on synthetic cohorts in the mSTAR CSV layouts: a planted signal is
 * learned (test AUC > 0.95, C-index > 0.8), shuffled labels stay near chance, a run
 * killed after an epoch and resumed ends exactly like an uninterrupted one, and the
 * `train-mil` / `predict-mil` commands work on real files (predict-mil reproduces the
 * repository's logits from its own state dict).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeClamFeatures } from '../lib/io/clam.js';
import { fromFloat32 } from '../lib/io/host-tensor.js';
import { readSafetensors, writeSafetensors } from '../lib/io/safetensors.js';
import { writeTorchCheckpoint } from '../lib/io/torch.js';
import { memoryStats } from '../lib/index.js';
import { predictMilCommand, trainMilCommand } from '../lib/cli/mil.js';
import type { ClassificationMetrics, SurvivalMetrics } from '../lib/mil/metrics.js';
import { trainMil, type TrainMilOptions } from '../lib/mil/train.js';
import { expectAllClose } from './helpers.js';
import { fixturePath } from './fixtures-util.js';
import { readExpected } from './mil-helpers.js';
import { writeSyntheticCohort } from './mil-synthetic.js';

const root = mkdtempSync(join(tmpdir(), 'mstar-mil-train-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const quiet = { bootstrap: 200, epochs: 10, lr: 1e-3, patience: 0 } satisfies Partial<TrainMilOptions>;

describe('planted signal', () => {
  it('classification (ABMIL): test macro AUC > 0.95; shuffled labels stay near chance', async () => {
    const cohort = await writeSyntheticCohort({ dir: join(root, 'cls'), task: 'classification', patients: 120, dim: 16, signalFraction: 0.4, shift: 2, formats: ['pt', 'h5', 'safetensors'], multiSlideEvery: 4 });
    const r = await trainMil({ ...cohort, out: join(root, 'cls', 'out'), ...quiet });
    const test = r.metrics.test as ClassificationMetrics;
    expect(test.aucMacro.value).toBeGreaterThan(0.95);
    expect(test.n).toBe(24);
    for (const f of ['metrics.json', 'predictions.csv', 'best.safetensors', 'roc.png', 'last.safetensors']) expect(existsSync(join(r.outDir, f)), f).toBe(true);
    const shuffled = await writeSyntheticCohort({ dir: join(root, 'cls-shuffled'), task: 'classification', patients: 120, dim: 16, signalFraction: 0.4, shift: 2, shuffleLabels: true });
    const s = await trainMil({ ...shuffled, out: join(root, 'cls-shuffled', 'out'), ...quiet, epochs: 5 });
    const auc = (s.metrics.test as ClassificationMetrics).aucMacro.value;
    expect(auc).toBeGreaterThan(0.2);
    expect(auc).toBeLessThan(0.8);
  });

  it('survival (gated ABMIL): test C-index > 0.8; shuffled outcomes stay near chance', async () => {
    const cohort = await writeSyntheticCohort({ dir: join(root, 'surv'), task: 'survival', patients: 150, dim: 16, signalFraction: 0.5 });
    const r = await trainMil({ ...cohort, out: join(root, 'surv', 'out'), model: 'abmil-gated', ...quiet });
    const test = r.metrics.test as SurvivalMetrics;
    expect(test.cIndex.value).toBeGreaterThan(0.8);
    expect(test.riskGroups.logRank.pValue).toBeLessThan(0.05);
    expect(existsSync(join(r.outDir, 'km.png'))).toBe(true);
    const shuffled = await writeSyntheticCohort({ dir: join(root, 'surv-shuffled'), task: 'survival', patients: 150, dim: 16, signalFraction: 0.5, shuffleLabels: true });
    const s = await trainMil({ ...shuffled, out: join(root, 'surv-shuffled', 'out'), model: 'abmil-gated', ...quiet, epochs: 5 });
    const c = (s.metrics.test as SurvivalMetrics).cIndex.value;
    expect(c).toBeGreaterThan(0.3);
    expect(c).toBeLessThan(0.7);
  });
});

describe('resume', () => {
  it('a run killed after epoch 2 and started again ends exactly like an uninterrupted run', async () => {
    const cohort = await writeSyntheticCohort({ dir: join(root, 'resume'), task: 'survival', patients: 40, dim: 8 });
    const base = { ...cohort, epochs: 4, lr: 1e-3, bootstrap: 50, patience: 0 };
    const full = await trainMil({ ...base, out: join(root, 'resume', 'full') });
    const killedOut = join(root, 'resume', 'killed');
    await expect(trainMil({ ...base, out: killedOut, onEpoch: (e) => { if (e.epoch === 2) throw new Error('killed'); } })).rejects.toThrow('killed');
    const resumed = await trainMil({ ...base, out: killedOut });
    const strip = (m: typeof full.metrics): unknown => ({ ...m, history: m.history.map((h) => ({ ...h, seconds: 0 })) });
    expect(strip(resumed.metrics)).toEqual(strip(full.metrics));
    expect(readFileSync(join(killedOut, 'best.safetensors'))).toEqual(readFileSync(join(root, 'resume', 'full', 'best.safetensors')));
    expect(readFileSync(join(killedOut, 'predictions.csv'), 'utf8')).toBe(readFileSync(join(root, 'resume', 'full', 'predictions.csv'), 'utf8'));
  });

  it('native memory returns to its baseline after a run', async () => {
    const cohort = await writeSyntheticCohort({ dir: join(root, 'mem'), task: 'classification', patients: 20, dim: 8 });
    const before = memoryStats().bytesInUse;
    await trainMil({ ...cohort, out: join(root, 'mem', 'out'), epochs: 2, bootstrap: 20 });
    expect(memoryStats().bytesInUse).toBe(before);
  });
});

describe('commands', () => {
  it('predict-mil applies the repository\'s ABMIL state dict to .pt, .h5 and .safetensors bags in argument order', async () => {
    const expected = readExpected('mil', 'abmil_expected.safetensors');
    const x300 = expected.get('n300.x')!.data;
    const x7 = expected.get('n7.x')!.data;
    const dir = join(root, 'predict');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir, { recursive: true });
    writeTorchCheckpoint(join(dir, 'a.pt'), { features: fromFloat32(x300, [300, 1024]) });
    await writeClamFeatures(join(dir, 'b.h5'), x7, [7, 1024], Array.from({ length: 7 }, (_, i) => [i, 0]));
    writeSafetensors(join(dir, 'c.safetensors'), { features: fromFloat32(x7, [7, 1024]) });
    const out = join(dir, 'out.safetensors');
    await predictMilCommand().parseAsync(['--model', 'abmil', '--weights', fixturePath('mil', 'abmil.pth'), '--n-classes', '4', '--out', out,
      join(dir, 'a.pt'), join(dir, 'b.h5'), join(dir, 'c.safetensors')], { from: 'user' });
    const { tensors } = readSafetensors(out);
    const logits = new Float32Array(tensors.get('logits')!.data.slice().buffer);
    expect(tensors.get('logits')!.shape).toEqual([3, 4]);
    const ref = [expected.get('n300.logits')!.data, expected.get('n7.logits')!.data, expected.get('n7.logits')!.data].flatMap((a) => Array.from(a));
    expectAllClose(logits, ref, { atol: 1e-4, rtol: 0, label: 'logits' });
    expect(tensors.get('attention.0')!.shape).toEqual([300]);
    expect(tensors.get('attention.2')!.shape).toEqual([7]);
  });

  it('train-mil runs a classification study from the command line', async () => {
    const cohort = await writeSyntheticCohort({ dir: join(root, 'cli'), task: 'classification', patients: 30, dim: 8, classes: 3 });
    const out = join(root, 'cli', 'out');
    await trainMilCommand().parseAsync(['--csv', cohort.csv, '--features', cohort.features, '--out', out, '--model', 'abmil-gated', '--epochs', '2',
      '--bootstrap', '50', '--optimizer', 'adamw', '--json'], { from: 'user' });
    const m = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
    expect(m.task).toBe('classification');
    expect(m.classNames).toEqual(['class0', 'class1', 'class2']);
    expect(m.history.length).toBe(2);
    const lines = readFileSync(join(out, 'predictions.csv'), 'utf8').trim().split('\n');
    expect(lines[0]).toBe('patient,split,label,label_name,pred,pred_name,prob_class0,prob_class1,prob_class2');
    expect(lines.length).toBe(1 + m.counts.val + m.counts.test);
  });

  it('train-mil runs a survival study from the command line', async () => {
    const cohort = await writeSyntheticCohort({ dir: join(root, 'cli-surv'), task: 'survival', patients: 40, dim: 8 });
    const out = join(root, 'cli-surv', 'out');
    await trainMilCommand().parseAsync(['--csv', cohort.csv, '--features', cohort.features, '--out', out, '--model', 'abmil', '--task', 'survival',
      '--epochs', '2', '--bootstrap', '50', '--json'], { from: 'user' });
    const m = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
    expect(m.task).toBe('survival');
    expect(m.history.length).toBe(2);
    expect(m.test.cIndex.value).toBeGreaterThanOrEqual(0);
    expect(m.test.cIndex.value).toBeLessThanOrEqual(1);
    for (const f of ['predictions.csv', 'best.safetensors', 'km.png']) expect(existsSync(join(out, f)), f).toBe(true);
  });
});
