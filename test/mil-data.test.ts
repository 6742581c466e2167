/**
 * The mSTAR CSV layouts (real split files from the repository), several slides per
 * patient, and feature files in .pt, CLAM .h5 and .safetensors.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeClamFeatures } from '../lib/io/clam.js';
import { fromFloat32 } from '../lib/io/host-tensor.js';
import { writeSafetensors } from '../lib/io/safetensors.js';
import { writeTorchCheckpoint } from '../lib/io/torch.js';
import { BagStore, parseCsv, readCohort, readFeatureBag, resolveFeatureFile } from '../lib/mil/data.js';
import { fixturePath } from './fixtures-util.js';

const dir = mkdtempSync(join(tmpdir(), 'mstar-mil-data-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('cohort CSVs', () => {
  it('survival layout (survival_LUSC.csv): one patient per row, ;-separated slides, validation → val', () => {
    const c = readCohort(fixturePath('splits', 'survival_LUSC.csv'));
    expect(c.task).toBe('survival');
    expect(c.patients.length).toBe(452);
    const p = c.patients.find((x) => x.id === 'TCGA-33-4538')!;
    expect(p.slides.length).toBe(9);
    expect(p.slides[0]).toBe('TCGA-33-4538-01Z-00-DX7.4a9f5939-4299-4648-8f62-2a0909e8d3bd.pt');
    expect(p.split).toBe('val');
    expect(p.status).toBe(1);
    expect(p.time).toBeCloseTo(99.3, 9);
    const counts = { train: 0, val: 0, test: 0 };
    for (const q of c.patients) counts[q.split]++;
    expect(counts).toEqual({ train: 316, val: 45, test: 91 });
  });

  it('classification layout (diagnosis_NSCLC.csv): rows of one case form one bag; labels in sorted order', () => {
    const c = readCohort(fixturePath('splits', 'diagnosis_NSCLC.csv'));
    expect(c.task).toBe('classification');
    expect(c.classNames).toEqual(['LUAD', 'LUSC']);
    const p = c.patients.find((x) => x.id === 'TCGA-33-4532')!;
    expect(p.slides.length).toBe(3);
    expect(p.label).toBe(1);
    expect(c.patients.length).toBeLessThan(1053);
  });

  it('parses quotes and CRLF; rejects unknown layouts and splits', () => {
    expect(parseCsv('a,b\r\n"x, ""y""",2\r\n')).toEqual([['a', 'b'], ['x, "y"', '2']]);
    const bad = join(dir, 'bad.csv');
    writeFileSync(bad, 'foo,bar\n1,2\n');
    expect(() => readCohort(bad)).toThrow(/neither the survival layout/);
    writeFileSync(bad, 'case,slide,label,fold\nA,s1,x,holdout\n');
    expect(() => readCohort(bad)).toThrow(/split 'holdout'/);
  });
});

describe('feature files', () => {
  const a = Float32Array.from({ length: 3 * 4 }, (_, i) => i);
  const b = Float32Array.from({ length: 2 * 4 }, (_, i) => -i);

  it('reads .pt (dict or bare state), .h5 and .safetensors, and finds files without extensions', async () => {
    writeTorchCheckpoint(join(dir, 's1.pt'), { features: fromFloat32(a, [3, 4]) });
    await writeClamFeatures(join(dir, 's2.h5'), b, [2, 4], [[0, 0], [256, 0]]);
    writeSafetensors(join(dir, 's3.safetensors'), { only: fromFloat32(b, [1, 2, 4]) });
    expect(Array.from((await readFeatureBag(join(dir, 's1.pt'))).data)).toEqual(Array.from(a));
    const h5 = await readFeatureBag(join(dir, 's2.h5'));
    expect([h5.n, h5.dim]).toEqual([2, 4]);
    expect(Array.from(h5.data)).toEqual(Array.from(b));
    const st = await readFeatureBag(join(dir, 's3.safetensors'));
    expect([st.n, st.dim]).toEqual([2, 4]);
    expect(resolveFeatureFile(dir, 's2')).toBe(join(dir, 's2.h5'));
    expect(resolveFeatureFile(dir, 's3.pt')).toBe(join(dir, 's3.safetensors'));
    expect(resolveFeatureFile(dir, 'nope')).toBeNull();
  });

  it('concatenates a patient\'s slides in order and records missing ones', async () => {
    const store = new BagStore(dir);
    const patient = { id: 'P', split: 'train' as const, slides: ['s1', 's2', 'missing'] };
    const files = store.files(patient);
    expect(store.missing).toEqual([{ patient: 'P', slide: 'missing' }]);
    const bag = await store.load(patient, files);
    expect([bag.n, bag.dim]).toEqual([5, 4]);
    expect(Array.from(bag.data)).toEqual([...a, ...b]);
  });
});
