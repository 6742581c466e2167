/**
 * Slide reading with the sharp (libvips) backend on slides built here: a libvips
 * pyramidal TIFF (JPEG and uncompressed), an Aperio-shaped SVS (thumbnail, label and macro
 * pages to skip), a SubIFD pyramid, plain PNG/JPEG, and damaged or missing files.
 */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { availableSlideBackends, bestLevelForDownsample, openSlide, parseAperioDescription, pickPyramidLevels, slideBackendStatus } from '../lib/io/slide.js';
import { readTiffDirectories } from '../lib/io/tiff.js';
import sharp from 'sharp';
import { aperioDescription, boxDownsample, crop, loadPatch, tempDir, tissueCanvas, writeSharpPyramid, writeTiff, type Raw } from './wsi-fixtures.js';

const tmp = tempDir('mstar-slide-');
let source: Raw; // 4096 × 3072 level 0
let svsL0: Raw; // 2048 × 1536
let svsL1: Raw;
let svsL2: Raw;

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, `expected an error with code ${code}`).toBeInstanceOf(Error);
  expect((error as { code?: string }).code, (error as Error).message).toBe(code);
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

beforeAll(async () => {
  const patch = await loadPatch();
  source = tissueCanvas(4096, 3072, patch);
  await writeSharpPyramid(join(tmp.dir, 'pyramid-jpeg.tif'), source, { compression: 'jpeg', xres: 2000, resolutionUnit: 'cm' }); // 2000 px/mm: 0.5 µm/px
  await writeSharpPyramid(join(tmp.dir, 'pyramid-raw.tif'), source, { compression: 'none' });
  svsL0 = tissueCanvas(2048, 1536, patch, { cx: 0.6, cy: 0.5, rx: 0.3, ry: 0.35 });
  svsL1 = boxDownsample(svsL0, 4);
  svsL2 = boxDownsample(svsL0, 16);
  const thumbnail = boxDownsample(svsL0, 8);
  const label: Raw = { width: 100, height: 80, data: new Uint8Array(100 * 80 * 3).fill(200) };
  const macro: Raw = { width: 300, height: 100, data: new Uint8Array(300 * 100 * 3).fill(120) };
  writeTiff(join(tmp.dir, 'aperio.svs'), [
    { image: svsL0, tile: 256, description: aperioDescription(2048, 1536, 0.499, 20) },
    { image: thumbnail, tile: 0, description: 'Aperio Image Library v12.0.15 \r\n2048x1536 -> 256x192 - |AppMag = 20|MPP = 0.4990' },
    { image: svsL1, tile: 256 },
    { image: svsL2, tile: 128 },
    { image: label, tile: 0, subfileType: 1, description: 'Aperio Image Library v12.0.15\r\nlabel 100x80' },
    { image: macro, tile: 0, subfileType: 9, description: 'Aperio Image Library v12.0.15\r\nmacro 300x100' },
  ]);
  writeTiff(join(tmp.dir, 'subifd.tif'), [{ image: svsL0, tile: 256, subifds: [{ image: svsL1, tile: 128, subfileType: 1 }, { image: svsL2, tile: 64, subfileType: 1 }] }]);
  const small = crop(svsL0, 1000, 600, 600, 400);
  await sharp(small, { raw: { width: 600, height: 400, channels: 3 } }).png().toFile(join(tmp.dir, 'plain.png'));
  await sharp(small, { raw: { width: 600, height: 400, channels: 3 } }).jpeg({ quality: 95 }).toFile(join(tmp.dir, 'plain.jpg'));
  await sharp(small, { raw: { width: 600, height: 400, channels: 3 } }).greyscale().png().toFile(join(tmp.dir, 'grey.png'));
});

afterAll(() => tmp.cleanup());

describe('libvips pyramidal TIFF', () => {
  it('levels, downsamples, mpp from the TIFF resolution, properties', async () => {
    const slide = await openSlide(join(tmp.dir, 'pyramid-jpeg.tif'));
    expect(slide.backend).toBe('sharp');
    expect(slide.levelDimensions).toEqual([
      [4096, 3072],
      [2048, 1536],
      [1024, 768],
      [512, 384],
      [256, 192],
    ]);
    expect(slide.levelDownsamples).toEqual([1, 2, 4, 8, 16]);
    expect(slide.mpp).toEqual({ x: 0.5, y: 0.5 }); // XResolution 20000 px/cm
    expect(slide.properties['openslide.vendor']).toBe('generic-tiff');
    expect(slide.properties['tiff.ResolutionUnit']).toBe('centimeter');
    expect(slide.properties['openslide.level[2].tile-width']).toBe('256');
    expect(slide.getBestLevelForDownsample(64)).toBe(4);
    expect(slide.getBestLevelForDownsample(7.99)).toBe(2);
    expect(slide.getBestLevelForDownsample(0.5)).toBe(0);
    slide.close();
  });

  it('readRegion at level 0 matches the source pixels (exact uncompressed, close for JPEG)', async () => {
    const exact = await openSlide(join(tmp.dir, 'pyramid-raw.tif'));
    expect(exact.mpp).toBeUndefined(); // sharp's default 1 px/mm in inches would say 1000 µm/px: implausible, dropped
    const lossy = await openSlide(join(tmp.dir, 'pyramid-jpeg.tif'));
    for (const [x, y] of [
      [0, 0],
      [1000, 700],
      [1237, 1999],
      [3840, 2816],
    ]) {
      const want = crop(source, x, y, 256, 256);
      const a = await exact.readRegion(x, y, 0, 256, 256);
      expect(a.width).toBe(256);
      expect(a.height).toBe(256);
      expect(Buffer.from(a.data).equals(Buffer.from(want))).toBe(true);
      const b = await lossy.readRegion(x, y, 0, 256, 256);
      expect(meanAbsDiff(b.data, want)).toBeLessThan(4);
    }
  });

  it('tile cache: overlapping reads in any order equal one uncached read', async () => {
    const slide = await openSlide(join(tmp.dir, 'pyramid-raw.tif'));
    const uncached = await openSlide(join(tmp.dir, 'pyramid-raw.tif'), { tileCacheBytes: 0 });
    const points = [
      [300, 300],
      [428, 300],
      [300, 428],
      [555, 555],
      [1, 1],
      [4000, 3000],
    ];
    const reads = await Promise.all(points.map(([x, y]) => slide.readRegion(x, y, 0, 300, 200)));
    for (let i = 0; i < points.length; i++) {
      const want = await uncached.readRegion(points[i][0], points[i][1], 0, 300, 200);
      expect(Buffer.from(reads[i].data).equals(Buffer.from(want.data))).toBe(true);
    }
    // Level 2 in level-0 coordinates: (2048, 1024) level 0 is (512, 256) at level 2.
    const l2 = await slide.readRegion(2048, 1024, 2, 64, 64);
    const whole = await slide.readLevel(2);
    expect(Buffer.from(l2.data).equals(Buffer.from(crop({ width: 1024, height: 768, data: whole.data }, 512, 256, 64, 64)))).toBe(true);
    // A lower level is a downsampled source: close to a box filter of level 0.
    expect(meanAbsDiff(whole.data, boxDownsample(source, 4).data)).toBeLessThan(3);
  });

  it('regions partly outside are filled with black (OpenSlide transparent → RGB), or the chosen background', async () => {
    const slide = await openSlide(join(tmp.dir, 'pyramid-raw.tif'));
    const r = await slide.readRegion(4000, -50, 0, 200, 100);
    expect(Buffer.from(r.data).equals(Buffer.from(crop(source, 4000, -50, 200, 100, 0)))).toBe(true);
    const white = await openSlide(join(tmp.dir, 'pyramid-raw.tif'), { background: [255, 255, 255] });
    const w = await white.readRegion(-10, -10, 0, 20, 20);
    expect(Array.from(w.data.subarray(0, 3))).toEqual([255, 255, 255]);
    // Negative origin at a lower level pads by trunc(-x / downsample) pixels, like OpenSlide.
    const l1 = await slide.readRegion(-6, 0, 1, 8, 1);
    expect(Array.from(l1.data.subarray(0, 9))).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('thumbnail fits the requested size and keeps the aspect ratio', async () => {
    const slide = await openSlide(join(tmp.dir, 'pyramid-jpeg.tif'));
    const t = await slide.thumbnail(512);
    expect([t.width, t.height]).toEqual([512, 384]);
    expect(t.data.length).toBe(512 * 384 * 3);
    const big = await slide.thumbnail(100000);
    expect([big.width, big.height]).toEqual([4096, 3072]);
  });

  it('sustains many 256-px patch reads (prints patches/s)', async () => {
    const slide = await openSlide(join(tmp.dir, 'pyramid-jpeg.tif'));
    const coords: [number, number][] = [];
    for (let x = 37; x + 256 <= 3000; x += 256) for (let y = 11; y + 256 <= 2800; y += 256) coords.push([x, y]);
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < coords.length) {
          const [x, y] = coords[next++];
          const p = await slide.readRegion(x, y, 0, 256, 256);
          expect(p.data.length).toBe(256 * 256 * 3);
        }
      }),
    );
    const rate = coords.length / ((performance.now() - t0) / 1000);
    console.log(`readRegion: ${coords.length} patches of 256 px at ${rate.toFixed(0)} patches/s`);
    expect(rate).toBeGreaterThan(6);
  });
});

describe('Aperio SVS layout', () => {
  it('keeps the tiled pyramid pages and skips thumbnail, label and macro', async () => {
    const dirs = readTiffDirectories(join(tmp.dir, 'aperio.svs')).directories;
    expect(dirs.map((d) => [d.width, d.tileWidth, d.subfileType])).toEqual([
      [2048, 256, 0],
      [256, 0, 0],
      [512, 256, 0],
      [128, 128, 0],
      [100, 0, 1],
      [300, 0, 9],
    ]);
    expect(pickPyramidLevels(dirs).map((d) => d.page)).toEqual([0, 2, 3]);
    const slide = await openSlide(join(tmp.dir, 'aperio.svs'));
    expect(slide.levelDimensions).toEqual([
      [2048, 1536],
      [512, 384],
      [128, 96],
    ]);
    expect(slide.levelDownsamples).toEqual([1, 4, 16]);
    expect(slide.mpp).toEqual({ x: 0.499, y: 0.499 });
    expect(slide.properties['openslide.vendor']).toBe('aperio');
    expect(slide.properties['aperio.AppMag']).toBe('20');
    expect(slide.properties['openslide.objective-power']).toBe('20');
    expect(slide.properties['aperio.ScanScope ID']).toBe('SS1234');
    expect(slide.name).toBe('aperio');
  });

  it('readRegion is exact at every level (uncompressed pages)', async () => {
    const slide = await openSlide(join(tmp.dir, 'aperio.svs'));
    const l0 = await slide.readRegion(700, 333, 0, 300, 257);
    expect(Buffer.from(l0.data).equals(Buffer.from(crop(svsL0, 700, 333, 300, 257)))).toBe(true);
    const l1 = await slide.readRegion(800, 400, 1, 100, 90);
    expect(Buffer.from(l1.data).equals(Buffer.from(crop(svsL1, 200, 100, 100, 90)))).toBe(true);
    const l2 = await slide.readLevel(2);
    expect(Buffer.from(l2.data).equals(Buffer.from(svsL2.data))).toBe(true);
  });

  it('SubIFD pyramids are read as levels too', async () => {
    const slide = await openSlide(join(tmp.dir, 'subifd.tif'));
    expect(slide.levelDimensions).toEqual([
      [2048, 1536],
      [512, 384],
      [128, 96],
    ]);
    const l1 = await slide.readRegion(1200, 40, 1, 64, 64);
    expect(Buffer.from(l1.data).equals(Buffer.from(crop(svsL1, 300, 10, 64, 64)))).toBe(true);
  });

  it('parses Aperio descriptions', () => {
    expect(parseAperioDescription('Aperio Image Library v11\r\n46000x32914 (256x256) JPEG/RGB Q=70|AppMag = 40|MPP = 0.2520|Date = 12/29/09')).toEqual({
      'aperio.AppMag': '40',
      'aperio.MPP': '0.2520',
      'aperio.Date': '12/29/09',
    });
  });
});

describe('single-level images', () => {
  it('PNG and JPEG are one-level slides; grey becomes RGB', async () => {
    const png = await openSlide(join(tmp.dir, 'plain.png'));
    expect(png.levelCount).toBe(1);
    expect(png.levelDimensions).toEqual([[600, 400]]);
    expect(png.properties['openslide.vendor']).toBe('generic-image');
    expect(png.mpp).toBeUndefined();
    const want = crop(svsL0, 1000, 600, 600, 400);
    const r = await png.readRegion(100, 50, 0, 64, 48);
    expect(Buffer.from(r.data).equals(Buffer.from(crop({ width: 600, height: 400, data: want }, 100, 50, 64, 48)))).toBe(true);
    const jpg = await openSlide(join(tmp.dir, 'plain.jpg'));
    expect(meanAbsDiff((await jpg.readLevel(0)).data, want)).toBeLessThan(5);
    const grey = await openSlide(join(tmp.dir, 'grey.png'));
    const g = await grey.readRegion(0, 0, 0, 2, 1);
    expect(g.data.length).toBe(6);
    expect(g.data[0]).toBe(g.data[1]);
    expect(g.data[1]).toBe(g.data[2]);
    expect(getBestLevel(png)).toBe(0);
  });
});

function getBestLevel(slide: { getBestLevelForDownsample(d: number): number }): number {
  return slide.getBestLevelForDownsample(64);
}

describe('bad inputs give coded errors', () => {
  it('missing, corrupt and truncated files', async () => {
    await expectCode(openSlide(join(tmp.dir, 'nope.svs')), 'ERR_SLIDE_READ');
    const junk = join(tmp.dir, 'junk.svs');
    writeFileSync(junk, Buffer.from('this is not a slide, just text '.repeat(50)));
    await expectCode(openSlide(junk), 'ERR_FORMAT');
    // A TIFF header whose first IFD points past the end of the file.
    const bad = join(tmp.dir, 'badifd.tif');
    writeFileSync(bad, Uint8Array.from([0x49, 0x49, 42, 0, 0xff, 0xff, 0, 0]));
    await expectCode(openSlide(bad), 'ERR_FORMAT');
    // The pyramid cut in half: either the open or the read must fail with a code, never crash.
    const full = readFileSync(join(tmp.dir, 'pyramid-jpeg.tif'));
    const cut = join(tmp.dir, 'cut.tif');
    writeFileSync(cut, full.subarray(0, full.length >> 1));
    const outcome = await openSlide(cut).then(
      async (s) => {
        for (let y = 0; y < 3072; y += 512) await s.readRegion(0, y, 0, 4096, 256);
        return 'read';
      },
      (e: { code?: string }) => e.code,
    ).catch((e: { code?: string }) => e.code);
    expect(['ERR_FORMAT', 'ERR_SLIDE_READ']).toContain(outcome);
    // A corrupt JPEG: header intact, data damaged.
    const jpg = readFileSync(join(tmp.dir, 'plain.jpg'));
    const broken = join(tmp.dir, 'broken.jpg');
    writeFileSync(broken, jpg.subarray(0, 700));
    const j = await openSlide(broken).catch((e: { code?: string }) => e.code ?? 'no code');
    if (typeof j === 'string') expect(j).toBe('ERR_FORMAT');
    else await expectCode(j.readRegion(0, 0, 0, 600, 400), 'ERR_SLIDE_READ');
  });

  it('TIFF directory parsing: BigTIFF, IFD loops, offsets past the end', () => {
    // BigTIFF: header (8-byte offsets), one IFD at 16 with 4 entries of 20 bytes.
    const big = new Uint8Array(16 + 8 + 4 * 20 + 8);
    const v = new DataView(big.buffer);
    big.set([0x49, 0x49, 43, 0], 0);
    v.setUint16(4, 8, true);
    v.setBigUint64(8, 16n, true);
    v.setBigUint64(16, 4n, true);
    [
      [256, 4, 100000],
      [257, 4, 80000],
      [322, 3, 240],
      [323, 3, 240],
    ].forEach(([tag, type, value], i) => {
      const at = 24 + i * 20;
      v.setUint16(at, tag, true);
      v.setUint16(at + 2, type, true);
      v.setBigUint64(at + 4, 1n, true);
      if (type === 3) v.setUint16(at + 12, value, true);
      else v.setUint32(at + 12, value, true);
    });
    const bigPath = join(tmp.dir, 'big.tif');
    writeFileSync(bigPath, big);
    const info = readTiffDirectories(bigPath);
    expect(info.bigTiff).toBe(true);
    expect(info.directories.map((d) => [d.width, d.height, d.tileWidth, d.tileHeight])).toEqual([[100000, 80000, 240, 240]]);
    // The same IFD whose next pointer points back at itself.
    v.setBigUint64(24 + 4 * 20, 16n, true);
    writeFileSync(bigPath, big);
    expect(() => readTiffDirectories(bigPath)).toThrow(/loops/);
    // An entry count that runs past the end of the file.
    v.setBigUint64(16, 3000n, true);
    writeFileSync(bigPath, big);
    expect(() => readTiffDirectories(bigPath)).toThrow(expect.objectContaining({ code: 'ERR_FORMAT' }));
  });

  it('regions and levels out of range, bad arguments, closed slides', async () => {
    const path = join(tmp.dir, 'aperio-copy.svs');
    copyFileSync(join(tmp.dir, 'aperio.svs'), path);
    const slide = await openSlide(path);
    await expectCode(slide.readRegion(2048, 0, 0, 10, 10), 'ERR_RANGE');
    await expectCode(slide.readRegion(-100, 0, 0, 100, 10), 'ERR_RANGE');
    await expectCode(slide.readRegion(0, 0, 3, 10, 10), 'ERR_RANGE');
    await expectCode(slide.readRegion(0, 0, 0, 0, 10), 'ERR_RANGE');
    await expectCode(slide.readRegion(0.5, 0, 0, 10, 10), 'ERR_ARGUMENT');
    await expectCode(slide.readRegion(0, 0, 0, 100000, 100000), 'ERR_RANGE');
    slide.close();
    await expectCode(slide.readRegion(0, 0, 0, 10, 10), 'ERR_SLIDE_READ');
    await expectCode(openSlide(path, { backend: 'nonexistent' }), 'ERR_ARGUMENT');
  });

  it('lists backends and follows OpenSlide level choice', () => {
    expect(availableSlideBackends()).toContain('sharp');
    expect(slideBackendStatus().find((b) => b.name === 'sharp')?.available).toBe(true);
    expect(bestLevelForDownsample([1, 4, 16, 63.98], 64)).toBe(3);
    expect(bestLevelForDownsample([1, 4, 16, 64.03], 64)).toBe(2);
    expect(bestLevelForDownsample([1, 4], 0.25)).toBe(0);
  });
});
