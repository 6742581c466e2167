/**
 * The OpenSlide backend (libopenslide through the addon) against the libvips backend
 * on slides built here — a sharp pyramidal TIFF and a hand-laid Aperio SVS: same
 * levels, downsamples, mpp and properties, identical pixels. The premultiplied-ARGB
 * conversion is checked on every build; the rest is skipped when the addon was built
 * without libopenslide (then the backend must say why it is unavailable).
 */
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../lib/native.js';
import { openslideBuilt, openslideSlideBackend } from '../lib/io/slide-openslide.js';
import { availableSlideBackends, openSlide, slideBackendStatus, type Slide } from '../lib/io/slide.js';
import { makeRng } from './helpers.js';
import { aperioDescription, boxDownsample, corruptLastTiles, loadPatch, tempDir, tissueCanvas, writeSharpPyramid, writeTiff } from './wsi-fixtures.js';

const built = openslideBuilt();
const tmp = tempDir('mstar-openslide-');
const pyramid = join(tmp.dir, 'pyramid.tif');
const svs = join(tmp.dir, 'aperio.svs');

beforeAll(async () => {
  if (!built) return;
  const patch = await loadPatch();
  await writeSharpPyramid(pyramid, tissueCanvas(3072, 2048, patch), { compression: 'jpeg', xres: 2000, resolutionUnit: 'cm' });
  const l0 = tissueCanvas(2048, 1536, patch, { cx: 0.6, cy: 0.5, rx: 0.3, ry: 0.35 });
  writeTiff(svs, [
    { image: l0, tile: 256, description: aperioDescription(2048, 1536, 0.499, 20) },
    { image: boxDownsample(l0, 8), tile: 0, description: 'Aperio Image Library v12.0.15 \r\n2048x1536 -> 256x192 - |AppMag = 20|MPP = 0.4990' },
    // One tile size for every level, as Aperio writes them. (libopenslide 3.4.1 with Debian's libtiff fails
    // "Invalid tile byte count" on uncompressed pyramids whose levels differ in tile size once it has
    // read a level with larger tiles; the libvips backend reads those.)
    { image: boxDownsample(l0, 4), tile: 256 },
    { image: boxDownsample(l0, 16), tile: 256 },
  ]);
});

afterAll(() => tmp.cleanup());

/** openslide-python: lowlevel._load_image (_convert.argb2rgba) then PIL convert('RGB'). */
function referenceArgbToRgb(argb: Uint32Array, background: readonly number[]): Uint8Array {
  const out = new Uint8Array(argb.length * 3);
  argb.forEach((v, i) => {
    const a = v >>> 24;
    const c = [(v >>> 16) & 255, (v >>> 8) & 255, v & 255];
    for (let k = 0; k < 3; k++) out[3 * i + k] = a === 0 ? background[k] : a === 255 ? c[k] : Math.floor((255 * c[k]) / a) & 255;
  });
  return out;
}

describe('premultiplied ARGB → RGB (every build)', () => {
  it('matches openslide-python: opaque copied, partial alpha un-premultiplied (integer division), transparent → background', () => {
    const rng = makeRng(7);
    const n = 4096;
    const argb = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const a = i % 5 === 0 ? 0 : i % 5 === 1 ? 255 : 1 + Math.floor(rng() * 254);
      const c = () => Math.floor(rng() * (a + 1)); // premultiplied: c ≤ a
      argb[i] = ((a << 24) | (c() << 16) | (c() << 8) | c()) >>> 0;
    }
    for (const background of [[0, 0, 0], [255, 250, 240]] as const) {
      const rgb = new Uint8Array(n * 3);
      native().openslideArgbToRgb(argb, rgb, background);
      expect(Buffer.from(rgb).equals(Buffer.from(referenceArgbToRgb(argb, background)))).toBe(true);
    }
    const one = new Uint8Array(3);
    native().openslideArgbToRgb(Uint32Array.of(0x80402010), one, [0, 0, 0]); // a = 128: 255·64/128, 255·32/128, 255·16/128
    expect(Array.from(one)).toEqual([127, 63, 31]);
    expect(() => native().openslideArgbToRgb(Uint32Array.of(1, 2), new Uint8Array(5), [0, 0, 0])).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
  });
});

describe.skipIf(built)('built without libopenslide', () => {
  it('the backend is registered but unavailable, with the reason; native calls say ERR_UNSUPPORTED', async () => {
    expect(availableSlideBackends()).not.toContain('openslide');
    const status = slideBackendStatus().find((s) => s.name === 'openslide');
    expect(status?.available).toBe(false);
    expect(status?.reason).toMatch(/without libopenslide/);
    expect(native().openslideVersion()).toBeNull();
    expect(() => native().openslideOpen('/nonexistent.svs')).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED' }));
  });
});

describe.skipIf(!built)('OpenSlide backend', () => {
  const pair = async (path: string): Promise<[Slide, Slide]> => [await openSlide(path, { backend: 'openslide' }), await openSlide(path, { backend: 'sharp' })];

  it('is available, preferred by auto, and reports its version', async () => {
    expect(availableSlideBackends()[0]).toBe('openslide');
    expect(native().openslideVersion()).toMatch(/^\d+\.\d+/);
    const slide = await openSlide(svs);
    expect(slide.backend).toBe('openslide');
    slide.close();
  });

  for (const [file, vendor] of [
    ['pyramid.tif', 'generic-tiff'],
    ['aperio.svs', 'aperio'],
  ] as const) {
    it(`${file}: same levels, downsamples, mpp and properties as the libvips backend`, async () => {
      const [os, vips] = await pair(join(tmp.dir, file));
      expect(os.properties['openslide.vendor']).toBe(vendor);
      expect(os.levelDimensions).toEqual(vips.levelDimensions);
      expect(os.levelDownsamples).toEqual(vips.levelDownsamples);
      expect(os.mpp).toEqual(vips.mpp);
      expect(os.mpp).toBeDefined();
      // Every property the libvips backend emulates is OpenSlide's, with OpenSlide's value.
      for (const [key, value] of Object.entries(vips.properties)) expect([key, os.properties[key]]).toEqual([key, value]);
      os.close();
      vips.close();
    });

    it(`${file}: readRegion gives the libvips backend's bytes (level 0, edges, padding; lower levels)`, async () => {
      const [os, vips] = await pair(join(tmp.dir, file));
      const [w0, h0] = os.dimensions;
      const regions: [number, number, number, number, number][] = [
        [1000, 700, 0, 256, 256],
        [37, 91, 0, 256, 256],
        [w0 - 100, h0 - 60, 0, 256, 256], // past the bottom-right corner: black padding
        [-100, -50, 0, 300, 200],
        [0, 0, 0, 1, 1],
        [512, 512, 1, 128, 128],
        [0, 0, os.levelCount - 1, ...os.levelDimensions[os.levelCount - 1]],
      ];
      for (const [x, y, level, w, h] of regions) {
        const a = await os.readRegion(x, y, level, w, h);
        const b = await vips.readRegion(x, y, level, w, h);
        expect([x, y, level, Buffer.from(a.data).equals(Buffer.from(b.data))]).toEqual([x, y, level, true]);
      }
      // Concurrent reads on one handle give the same bytes as one at a time.
      const many = await Promise.all(Array.from({ length: 12 }, (_, i) => os.readRegion(64 * i, 48 * i, 0, 256, 256)));
      for (let i = 0; i < many.length; i++) {
        const b = await vips.readRegion(64 * i, 48 * i, 0, 256, 256);
        expect(Buffer.from(many[i].data).equals(Buffer.from(b.data))).toBe(true);
      }
      const t = await os.thumbnail(300);
      const tv = await vips.thumbnail(300);
      expect([t.width, t.height]).toEqual([tv.width, tv.height]);
      os.close();
      vips.close();
    });
  }

  it('errors: not a slide, damaged file, bad level or size, closed handle', async () => {
    const png = join(tmp.dir, 'x.png');
    writeFileSync(png, new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]));
    expect(openslideSlideBackend.canOpen(png, new Uint8Array(0))).toBe(false);
    const bad = join(tmp.dir, 'bad.svs');
    writeFileSync(bad, new Uint8Array([0x49, 0x49, 42, 0, 8, 0, 0, 0, 0xff, 0xff, 1, 2, 3]));
    await expect(openslideSlideBackend.open(bad, { decodeCacheBytes: 0, tileCacheBytes: 0 })).rejects.toMatchObject({ code: 'ERR_FORMAT' });

    const binding = native();
    const handle = binding.openslideOpen(svs);
    const info = binding.openslideInfo(handle);
    expect(info.levelDimensions).toEqual([
      [2048, 1536],
      [512, 384],
      [128, 96],
    ]);
    const out = new Uint8Array(16 * 16 * 3);
    await binding.openslideReadRegion(handle, 0, 0, 0, 16, 16, out, [0, 0, 0]);
    expect(() => binding.openslideReadRegion(handle, 0, 0, 3, 16, 16, out, [0, 0, 0])).toThrow(expect.objectContaining({ code: 'ERR_RANGE' }));
    expect(() => binding.openslideReadRegion(handle, 0, 0, 0, 17, 16, out, [0, 0, 0])).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
    expect(() => binding.openslideReadRegion(handle, 0, 0, 0, 2 ** 40, 2 ** 40, out, [0, 0, 0])).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' })); // w·h·3 overflows
    expect(() => binding.openslideReadRegion(handle, 0, 0, 0, 32768, 16384, out, [0, 0, 0])).toThrow(expect.objectContaining({ code: 'ERR_RANGE' })); // > 1 GiB
    expect(() => binding.openslideReadRegion(handle, 0, 0, 0, 0, 16, out, [0, 0, 0])).toThrow(expect.objectContaining({ code: 'ERR_RANGE' }));
    expect(() => binding.openslideReadRegion(handle, 0, 0, 0, 16, 16, out, [0, 0, 256] as unknown as [number, number, number])).toThrow(
      expect.objectContaining({ code: 'ERR_ARGUMENT' }),
    );
    expect(binding.openslideClose(handle)).toBe(true);
    expect(binding.openslideClose(handle)).toBe(false);
    expect(() => binding.openslideInfo(handle)).toThrow(expect.objectContaining({ code: 'ERR_ARGUMENT' }));

    const slide = await openSlide(svs, { backend: 'openslide' });
    slide.close();
    await expect(slide.readRegion(0, 0, 0, 8, 8)).rejects.toMatchObject({ code: 'ERR_SLIDE_READ' });
  });

  it('a read failing inside OpenSlide (tiles past the end of the file) rejects with ERR_SLIDE_READ', async () => {
    const cut = join(tmp.dir, 'cut.svs');
    copyFileSync(svs, cut);
    expect(corruptLastTiles(cut, 0.25)).toBeGreaterThan(0);
    const slide = await openSlide(cut, { backend: 'openslide' });
    const good = await slide.readRegion(0, 0, 0, 256, 256); // the first tiles are intact
    expect(good.data.length).toBe(256 * 256 * 3);
    const [w, h] = slide.dimensions;
    await expect(slide.readRegion(w - 256, h - 256, 0, 256, 256)).rejects.toMatchObject({ code: 'ERR_SLIDE_READ' });
    slide.close();
  });
});
