/**
 * Pillow-exact resampling: every byte equal to Pillow 12.3's `Image.resize` (fixtures written by
 * test/fixtures/gen/preprocess.py) for torchvision `Resize(224)`, shrinking, enlarging, mixed, every
 * filter, float boxes, tall images, one-pixel and one-row images, and a one-band image.
 */
import { describe, expect, it } from 'vitest';
import {
  type Image8,
  type ResampleFilter,
  precomputeCoeffs,
  resizePil,
  resizeTorchvision,
  torchvisionResizeSize,
} from '../lib/preprocess/resize.js';
import { expectCode } from './helpers.js';
import { cropImage, firstByteMismatches, readJson, readRawImage } from './fixtures-util.js';

interface ResizeCase {
  name: string;
  source: { crop?: number[]; file?: string };
  op: { kind: 'torchvision' | 'pil'; size: number | number[]; filter?: ResampleFilter; box?: number[] };
  expected: string;
  size: [number, number];
}

const manifest = readJson<{ versions: { pillow: string }; cases: ResizeCase[] }>('preprocess', 'resize_cases.json');
const transformExpected = readJson<{ resize_sizes: { in: [number, number]; size: number; max_size: number | null; out: [number, number] }[] }>(
  'preprocess',
  'transform_expected.json',
);

let patchCache: Image8 | undefined;
async function patch(): Promise<Image8> {
  patchCache ??= await readRawImage('preprocess', 'patch.png');
  return patchCache;
}

async function source(c: ResizeCase): Promise<Image8> {
  if (c.source.file) return readRawImage('preprocess', c.source.file);
  return cropImage(await patch(), c.source.crop!);
}

describe('resizePil: bit-exact vs Pillow', () => {
  it('fixtures come from Pillow ≥ 12.2 (tall images resized vertically first)', () => {
    const [major, minor] = manifest.versions.pillow.split('.').map(Number);
    expect(major > 12 || (major === 12 && minor >= 2)).toBe(true);
  });

  for (const c of manifest.cases) {
    it(c.name, async () => {
      const src = await source(c);
      const want = await readRawImage('preprocess', c.expected);
      const got =
        c.op.kind === 'torchvision'
          ? resizeTorchvision(src, c.op.size as number)
          : resizePil(src, (c.op.size as number[])[0], (c.op.size as number[])[1], {
              filter: c.op.filter,
              box: c.op.box as [number, number, number, number] | undefined,
            });
      expect([got.width, got.height, got.channels]).toEqual([want.width, want.height, want.channels]);
      const bad = firstByteMismatches(got.data, want.data);
      expect(bad, `${c.name}: first mismatching bytes`).toEqual([]);
    });
  }

  it('tall images: the old (horizontal-first) order is available and differs', async () => {
    const c = manifest.cases.find((x) => x.name === 'tall_3x400_to_5x37')!;
    const src = await source(c);
    const newer = resizePil(src, 5, 37, { filter: 'bicubic' });
    const older = resizePil(src, 5, 37, { filter: 'bicubic', tallImagesVerticalFirst: false });
    expect(older.width).toBe(5);
    expect(Buffer.compare(Buffer.from(newer.data), Buffer.from(older.data))).not.toBe(0);
  });

  it('same size and full box: a copy', async () => {
    const src = cropImage(await patch(), [0, 0, 33, 21]);
    const out = resizePil(src, 33, 21);
    expect(out.data).toEqual(src.data);
    expect(out.data).not.toBe(src.data);
  });

  it('coefficients are normalised in fixed point (each row sums to ~2^22)', () => {
    for (const [inSize, outSize] of [[512, 224], [97, 131], [7, 3], [3, 400]]) {
      for (const filter of ['bilinear', 'bicubic', 'lanczos'] as const) {
        const t = precomputeCoeffs(inSize, 0, inSize, outSize, filter);
        for (let i = 0; i < outSize; i++) {
          let s = 0;
          for (let k = 0; k < t.count[i]; k++) s += t.weights[i * t.ksize + k];
          expect(Math.abs(s - (1 << 22))).toBeLessThanOrEqual(t.count[i]);
        }
      }
    }
  });

  it('validates its arguments with codes', async () => {
    const src = cropImage(await patch(), [0, 0, 8, 8]);
    expectCode(() => resizePil(src, 0, 4), 'ERR_ARGUMENT');
    expectCode(() => resizePil({ ...src, data: src.data.subarray(1) }, 4, 4), 'ERR_SHAPE');
    expectCode(() => resizePil(src, 4, 4, { box: [0, 0, 9, 8] }), 'ERR_ARGUMENT');
    expectCode(() => resizePil(src, 4, 4, { filter: 'nearest' as ResampleFilter }), 'ERR_ARGUMENT');
  });
});

describe('torchvision Resize(int) size rule', () => {
  it('matches torchvision._compute_resized_output_size on every recorded size', () => {
    expect(transformExpected.resize_sizes.length).toBeGreaterThan(100);
    for (const r of transformExpected.resize_sizes) {
      const got = torchvisionResizeSize(r.in[0], r.in[1], r.size, r.max_size ?? undefined);
      expect([got.width, got.height], JSON.stringify(r)).toEqual(r.out);
    }
  });

  it('rejects maxSize ≤ size like torchvision', () => {
    expectCode(() => torchvisionResizeSize(300, 200, 224, 224), 'ERR_ARGUMENT');
  });
});

describe('resize speed', () => {
  it('512×512 RGB → 224×224 (torchvision Resize(224))', async () => {
    const src = await patch();
    for (let i = 0; i < 20; i++) resizeTorchvision(src, 224);
    const n = 100;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) resizeTorchvision(src, 224);
    const ms = (performance.now() - t0) / n;
    console.log(`resize 512x512 -> 224x224: ${ms.toFixed(2)} ms per patch`);
    expect(ms).toBeLessThan(50); // a sanity bound, not a benchmark
  });
});
