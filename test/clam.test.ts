/**
 * CLAM HDF5 files: the real CLAM coordinate files in test/fixtures/clam-coords (copied
 * from the mSTAR repository), round trips with CLAM's dtypes, shapes, chunking and
 * attribute types, feature files, atomic writes and damaged inputs.
 */
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import h5wasm from 'h5wasm/node';
import { afterAll, describe, expect, it } from 'vitest';
import { writeAtomically } from '../lib/io/atomic.js';
import { readClamCoords, readClamFeatures, writeClamCoords, writeClamFeatures, type ClamCoordAttrs } from '../lib/io/clam.js';
import { tempDir } from './wsi-fixtures.js';

const here = dirname(fileURLToPath(import.meta.url));
const examples = join(here, 'fixtures/clam-coords');
const tmp = tempDir('mstar-clam-');
afterAll(() => tmp.cleanup());

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, `expected an error with code ${code}`).toBeInstanceOf(Error);
  expect((error as { code?: string }).code, (error as Error).message).toBe(code);
}

/** Storage facts of a file's `coords` dataset and its attributes, as h5wasm reports them. */
async function describeCoords(path: string): Promise<Record<string, unknown>> {
  await h5wasm.ready;
  const f = new h5wasm.File(path, 'r');
  try {
    const d = f.get('coords') as InstanceType<typeof h5wasm.Dataset>;
    const m = d.metadata;
    const attrs: Record<string, unknown> = {};
    for (const [k, a] of Object.entries(d.attrs)) {
      const am = a.metadata;
      attrs[k] = { type: am.type, size: am.size, signed: am.signed, vlen: am.vlen, cset: am.cset, shape: am.shape, littleEndian: am.littleEndian };
    }
    return { dtype: d.dtype, shape: m.shape, chunks: m.chunks, maxshape: m.maxshape, attrs };
  } finally {
    f.close();
  }
}

describe('CLAM coordinate files', () => {
  it('reads the real CLAM files', async () => {
    const expected: Record<string, [number, string, number[], [number, number]]> = {
      'example1.h5': [402, '1058', [1816, 18032, 2328, 17520], [26592, 23200]],
      'example2.h5': [162, '1057', [1976, 16200, 1976, 16712], [14224, 27120]],
      'example3.h5': [482, '1056', [7400, 15720, 7400, 16232], [26640, 19312]],
    };
    for (const [file, [count, name, first, dims]] of Object.entries(expected)) {
      const c = await readClamCoords(join(examples, file));
      expect(c.count).toBe(count);
      expect(c.coords.length).toBe(2 * count);
      expect(Array.from(c.coords.subarray(0, 4), Number)).toEqual(first);
      expect(c.attrs).toEqual({
        patch_size: 512,
        patch_level: 0,
        downsample: [1, 1],
        downsampled_level_dim: dims,
        level_dim: dims,
        name,
        save_path: '/jhcnas3/Pathology/Patches/BCNB/patches',
      });
    }
  });

  it('writes what CLAM writes: same values, dtypes, shapes, chunks and attribute types', async () => {
    for (const file of readdirSync(examples).filter((f) => f.endsWith('.h5'))) {
      const original = await readClamCoords(join(examples, file));
      const out = join(tmp.dir, file);
      await writeClamCoords(out, original.coords, original.attrs as ClamCoordAttrs);
      const back = await readClamCoords(out);
      expect(back.attrs).toEqual(original.attrs);
      expect(Buffer.from(back.coords.buffer).equals(Buffer.from(original.coords.buffer))).toBe(true);
      expect(await describeCoords(out)).toEqual(await describeCoords(join(examples, file)));
    }
    const facts = await describeCoords(join(tmp.dir, 'example1.h5'));
    expect(facts.dtype).toBe('<q');
    expect(facts.chunks).toEqual([1, 2]);
    expect((facts.attrs as Record<string, { shape: number[] }>).patch_size.shape).toEqual([]);
    expect((facts.attrs as Record<string, { vlen: boolean }>).name.vlen).toBe(true);
  });

  it('accepts rows or flat numbers, and writes an empty grid', async () => {
    const attrs: ClamCoordAttrs = {
      patch_size: 256,
      patch_level: 1,
      downsample: [4, 3.99],
      downsampled_level_dim: [1000, 800],
      level_dim: [1000, 800],
      name: 'slide-é',
      save_path: '/out',
    };
    const p = join(tmp.dir, 'rows.h5');
    await writeClamCoords(p, [
      [0, 1],
      [2, 3],
    ], attrs);
    const r = await readClamCoords(p);
    expect(Array.from(r.coords, Number)).toEqual([0, 1, 2, 3]);
    expect(r.attrs).toEqual(attrs);
    const e = join(tmp.dir, 'empty.h5');
    await writeClamCoords(e, [], attrs);
    expect((await readClamCoords(e)).count).toBe(0);
  });

  it('refuses bad attributes and ragged coordinates before touching the file', async () => {
    const p = join(tmp.dir, 'bad.h5');
    const attrs = { patch_size: 0, patch_level: 0, downsample: [1, 1], downsampled_level_dim: [1, 1], level_dim: [1, 1], name: 'x', save_path: '' } as ClamCoordAttrs;
    await expectCode(writeClamCoords(p, [1, 2], attrs), 'ERR_ARGUMENT');
    await expectCode(writeClamCoords(p, [1, 2, 3], { ...attrs, patch_size: 1 }), 'ERR_SHAPE');
    await expectCode(writeClamCoords(p, [1.5, 2], { ...attrs, patch_size: 1 }), 'ERR_ARGUMENT');
    expect(existsSync(p)).toBe(false);
  });
});

describe('CLAM feature files', () => {
  it('round-trips features float32 [N, D] and coords int64 [N, 2] with CLAM chunking', async () => {
    const n = 5;
    const d = 7;
    const features = Float32Array.from({ length: n * d }, (_, i) => Math.sin(i) * 10);
    const coords = Array.from({ length: n }, (_, i) => [i * 256, i * 512]);
    const p = join(tmp.dir, 'features.h5');
    await writeClamFeatures(p, features, [n, d], coords);
    const back = await readClamFeatures(p);
    expect(back.shape).toEqual([n, d]);
    expect(Array.from(back.features)).toEqual(Array.from(features));
    expect(Array.from(back.coords ?? [], Number)).toEqual(coords.flat());
    await h5wasm.ready;
    const f = new h5wasm.File(p, 'r');
    const ds = f.get('features') as InstanceType<typeof h5wasm.Dataset>;
    expect([ds.dtype, ds.metadata.chunks, ds.metadata.maxshape?.[1]]).toEqual(['<f', [1, d], d]);
    expect((f.get('coords') as InstanceType<typeof h5wasm.Dataset>).dtype).toBe('<q');
    f.close();
    await expectCode(writeClamFeatures(p, features, [n, d + 1], coords), 'ERR_SHAPE');
    await expectCode(writeClamFeatures(p, features, [n, d], coords.slice(1)), 'ERR_SHAPE');
  });
});

describe('damaged and missing files', () => {
  it('missing, not HDF5, truncated, no coords, wrong shape', async () => {
    await expectCode(readClamCoords(join(tmp.dir, 'missing.h5')), 'ERR_NOT_FOUND');
    const text = join(tmp.dir, 'text.h5');
    writeFileSync(text, 'not hdf5 '.repeat(200));
    await expectCode(readClamCoords(text), 'ERR_FORMAT');
    const cut = join(tmp.dir, 'cut.h5');
    writeFileSync(cut, readFileSync(join(examples, 'example1.h5')).subarray(0, 5000));
    await expectCode(readClamCoords(cut), 'ERR_FORMAT');
    const feats = join(tmp.dir, 'only-features.h5');
    await writeClamFeatures(feats, new Float32Array(4), [2, 2], [0, 0, 1, 1]);
    await expectCode(readClamFeatures(join(tmp.dir, 'missing.h5')), 'ERR_NOT_FOUND');
    await expectCode(readClamCoords(join(examples, 'example1.h5')).then(() => readClamFeatures(join(examples, 'example1.h5'))), 'ERR_FORMAT');
    // coords of the wrong shape
    await h5wasm.ready;
    const wrong = join(tmp.dir, 'wrong.h5');
    const f = new h5wasm.File(wrong, 'w');
    f.create_dataset({ name: 'coords', data: new BigInt64Array(6), shape: [2, 3], dtype: '<q' });
    f.close();
    await expectCode(readClamCoords(wrong), 'ERR_FORMAT');
  });

  it('an interrupted write leaves neither a partial file nor a temporary', async () => {
    const target = join(tmp.dir, 'atomic.h5');
    copyFileSync(join(examples, 'example2.h5'), target);
    await expect(
      writeAtomically(target, (t) => {
        writeFileSync(t, 'partial');
        throw new Error('killed');
      }),
    ).rejects.toThrow('killed');
    expect((await readClamCoords(target)).count).toBe(162);
    expect(readdirSync(tmp.dir).filter((f) => f.includes('.tmp'))).toEqual([]);
  });
});
