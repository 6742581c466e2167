/**
 * Per-patch score files for `mstar heatmap` (lib/wsi/scores.ts, lib/io/clam.ts
 * readClamScores): CLAM's attention-score blocks in HDF5, bare and dict .pt files,
 * safetensors; names picked or inferred; clear errors otherwise.
 */
import { join } from 'node:path';
import h5wasm from 'h5wasm/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromFloat32, fromTypedArray } from '../lib/io/host-tensor.js';
import { writeSafetensors } from '../lib/io/safetensors.js';
import { writeTorchCheckpoint, writeTorchTensor } from '../lib/io/torch.js';
import { readPatchScores } from '../lib/wsi/scores.js';
import { tempDir } from './wsi-fixtures.js';

const tmp = tempDir('mstar-scores-');
const values = Float32Array.from([0.5, -1, 2.25, 3]);

beforeAll(async () => {
  await h5wasm.ready;
  // As CLAM's create_heatmaps.py saves a block: attention_scores [N, 1] float32, coords [N, 2] int64.
  const f = new h5wasm.File(join(tmp.dir, 'block.h5'), 'w');
  f.create_dataset({ name: 'attention_scores', data: values, shape: [4, 1], dtype: '<f' });
  f.create_dataset({ name: 'coords', data: BigInt64Array.from([0n, 0n, 256n, 0n, 0n, 256n, 256n, 256n]), shape: [4, 2], dtype: '<q' });
  f.create_dataset({ name: 'other', data: Float64Array.from([1, 2, 3, 4]), shape: [4], dtype: '<d' });
  f.close();
  writeTorchTensor(join(tmp.dir, 'bare.pt'), fromFloat32(values, [4]));
  writeTorchTensor(join(tmp.dir, 'matrix.pt'), fromFloat32(new Float32Array(8), [4, 2]));
  writeTorchCheckpoint(join(tmp.dir, 'dict.pt'), { attention: fromFloat32(values, [1, 4]), weight: fromFloat32(new Float32Array(6), [2, 3]) });
  writeSafetensors(join(tmp.dir, 'scores.safetensors'), { a: fromTypedArray(Int32Array.from([1, 2, 3, 4]), [4]), b: fromFloat32(values, [4, 1]) });
});

afterAll(() => tmp.cleanup());

describe('readPatchScores', () => {
  it('reads CLAM attention-score blocks ([N, 1] next to coords), by name when several vectors exist', async () => {
    const s = await readPatchScores(join(tmp.dir, 'block.h5'), 'attention_scores');
    expect(Array.from(s.scores)).toEqual([0.5, -1, 2.25, 3]);
    expect(s.coords).toEqual(BigInt64Array.from([0n, 0n, 256n, 0n, 0n, 256n, 256n, 256n]));
    await expect(readPatchScores(join(tmp.dir, 'block.h5'))).rejects.toThrow(/several score datasets \(attention_scores, other\); name the one/);
    await expect(readPatchScores(join(tmp.dir, 'block.h5'), 'nope')).rejects.toMatchObject({ code: 'ERR_FORMAT' });
  });

  it('reads a bare .pt tensor and the only vector of a .pt dict or a safetensors file', async () => {
    expect(Array.from((await readPatchScores(join(tmp.dir, 'bare.pt'))).scores)).toEqual([0.5, -1, 2.25, 3]);
    const dict = await readPatchScores(join(tmp.dir, 'dict.pt'));
    expect([dict.name, Array.from(dict.scores)]).toEqual(['attention', [0.5, -1, 2.25, 3]]);
    expect(Array.from((await readPatchScores(join(tmp.dir, 'scores.safetensors'), 'a')).scores)).toEqual([1, 2, 3, 4]);
    await expect(readPatchScores(join(tmp.dir, 'scores.safetensors'))).rejects.toThrow(/several vector tensors \((a, b|b, a)\)/);
    await expect(readPatchScores(join(tmp.dir, 'matrix.pt'))).rejects.toThrow(/shape \[4, 2\], not \[N\]/);
    await expect(readPatchScores(join(tmp.dir, 'scores.npy'))).rejects.toThrow(/\.h5, \.pt\/\.pth or \.safetensors/);
  });
});
