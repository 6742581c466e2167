/**
 * Heatmaps: colour maps at known points, the overlay lands on the right patches with
 * the right colours, the colour bar runs from vmin (bottom) to vmax (top), bad inputs.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSlide, type Slide } from '../lib/io/slide.js';
import { colormapRgb, renderHeatmap } from '../lib/wsi/heatmap.js';
import { loadPatch, tempDir, tissueCanvas } from './wsi-fixtures.js';

const tmp = tempDir('mstar-heatmap-');
let slide: Slide;

beforeAll(async () => {
  const img = tissueCanvas(2048, 1536, await loadPatch());
  const path = join(tmp.dir, 'slide.png');
  await sharp(img.data, { raw: { width: 2048, height: 1536, channels: 3 } }).png({ compressionLevel: 1 }).toFile(path);
  slide = await openSlide(path);
});

afterAll(() => {
  slide?.close();
  tmp.cleanup();
});

async function decode(png: Uint8Array): Promise<{ width: number; height: number; data: Uint8Array }> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data) };
}

describe('colour maps', () => {
  it('jet and viridis at their anchors', () => {
    expect(colormapRgb('jet', 0)).toEqual([0, 0, 128]);
    expect(colormapRgb('jet', 1)).toEqual([128, 0, 0]);
    expect(colormapRgb('jet', 0.5)).toEqual([123, 255, 123]); // r = 0.15/0.31, b = 1 − 0.16/0.31: matplotlib's (0.484, 1, 0.484)
    expect(colormapRgb('viridis', 0)).toEqual([0x44, 0x01, 0x54]);
    expect(colormapRgb('viridis', 0.5)).toEqual([0x21, 0x91, 0x8c]);
    expect(colormapRgb('viridis', 1)).toEqual([0xfd, 0xe7, 0x25]);
    expect(colormapRgb('viridis', 2)).toEqual(colormapRgb('viridis', 1));
    expect(() => colormapRgb('magma' as 'jet', 0)).toThrow(/colormap/);
  });
});

describe('renderHeatmap', () => {
  it('colours each patch by its score, leaves the rest of the slide alone, draws a colour bar', async () => {
    // Two patches of 512 level-0 px: a low score at (0, 0), a high one at (1024, 512).
    const coords = BigInt64Array.from([0n, 0n, 1024n, 512n]);
    const out = join(tmp.dir, 'heat.png');
    const r = await renderHeatmap(slide, coords, [0.1, 0.9], 512, { out, alpha: 1, maxSize: 512, colormap: 'jet' });
    expect(existsSync(out)).toBe(true);
    expect([r.width, r.height]).toEqual([512 + 90, 384]);
    expect([r.vmin, r.vmax]).toEqual([0.1, 0.9]);
    const img = await decode(r.png);
    const thumb = await slide.thumbnail(512);
    const px = (im: { width: number; data: Uint8Array }, x: number, y: number): number[] => Array.from(im.data.subarray((y * im.width + x) * 3, (y * im.width + x) * 3 + 3));
    // Thumbnail scale 1/4: patch 1 covers [0,128)², patch 2 [256,384) × [128,256).
    expect(px(img, 60, 60)).toEqual(colormapRgb('jet', 0));
    expect(px(img, 300, 200)).toEqual(colormapRgb('jet', 1));
    expect(px(img, 450, 350)).toEqual(px(thumb, 450, 350));
    // Colour bar: top is vmax (dark red), bottom vmin (dark blue), in the right margin.
    const barX = 512 + 10 + 8;
    const top = Math.round((384 - Math.round(384 * 0.7)) / 2);
    expect(px(img, barX, top)).toEqual(colormapRgb('jet', 1));
    expect(px(img, barX, top + Math.round(384 * 0.7) - 1)).toEqual(colormapRgb('jet', 0));
  });

  it('blends with alpha, averages overlaps, skips NaN, supports percentiles and viridis', async () => {
    const coords = [0, 0, 256, 0, 1024, 1024];
    const r = await renderHeatmap(slide, coords, [0, 1, Number.NaN], 512, { alpha: 0.5, maxSize: 512, colormap: 'viridis', normalize: 'percentile', colorbar: false });
    expect([r.width, r.height]).toEqual([512, 384]);
    const img = await decode(r.png);
    const thumb = await slide.thumbnail(512);
    const at = (im: { data: Uint8Array }, x: number, y: number): number[] => Array.from(im.data.subarray((y * 512 + x) * 3, (y * 512 + x) * 3 + 3));
    // x in [64, 128) thumbnail px is covered by both patches: mean score 0.5.
    const mid = colormapRgb('viridis', 128 / 255);
    expect(at(img, 100, 50)).toEqual(at(thumb, 100, 50).map((v, k) => Math.round(0.5 * v + 0.5 * mid[k])));
    expect(at(img, 300, 300)).toEqual(at(thumb, 300, 300)); // the NaN patch is not drawn
  });

  it('rejects mismatched lengths and bad options', async () => {
    await expect(renderHeatmap(slide, [0, 0], [1, 2], 256)).rejects.toMatchObject({ code: 'ERR_SHAPE' });
    await expect(renderHeatmap(slide, [0, 0], [1], 256, { alpha: 2 })).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(renderHeatmap(slide, [0, 0], [1], 0)).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
  });
});
