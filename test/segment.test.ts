/**
 * Tissue segmentation and tiling: the OpenCV primitives against hand-computed cases and
 * against cv2 (fixture from test/fixtures/gen/clam_seg.py), and CLAM's whole
 * segmentTissue + process_contours run on a synthetic slide against CLAM's own output.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { readClamCoords } from '../lib/io/clam.js';
import { bestLevelForDownsample, openSlide, type RgbImage } from '../lib/io/slide.js';
import { PolygonTester, boundingRect, contourArea, findContours, pointPolygonTest } from '../lib/wsi/contours.js';
import { dilate, erode, medianBlur, morphologyClose, otsuThreshold, rgbToHsv, saturation, threshold } from '../lib/wsi/cv.js';
import { segmentTissue, segmentTissueImage, type SlideLike } from '../lib/wsi/segment.js';
import { integerDownsample, patchGrid, resolvePatchGeometry, tileSlide, tileSlides, type ContourFn } from '../lib/wsi/tile.js';
import { loadPatch, tempDir, tissueCanvas, writeSharpPyramid, type Raw } from './wsi-fixtures.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixture = JSON.parse(readFileSync(join(here, 'fixtures/clam-seg/expected.json'), 'utf8')) as {
  levelDims: [number, number][];
  segLevel: number;
  levelDownsamples: [number, number][];
  contoursTissue: number[][][];
  holesTissue: number[][][][];
  runs: { patchLevel: number; patchSize: number; stepSize: number; contourFn: ContourFn; coords: number[][]; attrs: Record<string, unknown> }[];
  hsv: { rgb: number[]; hsv: number[] };
  median: { w: number; h: number; src: number[]; k3: number[]; k7: number[] };
  morph: { w: number; h: number; src: number[]; close4: number[]; close3: number[]; dilate4: number[]; erode4: number[] };
  otsu: { src: number[]; thresh: number }[];
  masks: { w: number; h: number; mask: number[]; contours: number[][][]; hierarchy: number[][]; areas: number[]; rects: number[][]; points: [number, number][]; tests: number[][] }[];
};

const flat = (c: Int32Array): number[][] => Array.from({ length: c.length / 2 }, (_, i) => [c[2 * i], c[2 * i + 1]]);

/** Deep equality, fast for big arrays: compares JSON first and shows a structural diff only on mismatch. */
function expectSame(actual: unknown, expected: unknown): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) expect(actual).toEqual(expected);
}

describe('OpenCV primitives, hand-computed', () => {
  it('RGB→HSV follows OpenCV 8-bit arithmetic', () => {
    // Pure red: H 0, S 255, V 255. (200,100,50): V 200, S round(150·255/200) = 191, H = (100−50)·30/150 = 10.
    // Blue (0,0,255): H = 4·255·30/255 = 120. Grey: S 0, H 0.
    const hsv = rgbToHsv(Uint8Array.from([255, 0, 0, 200, 100, 50, 0, 0, 255, 77, 77, 77]));
    expect(Array.from(hsv)).toEqual([0, 255, 255, 10, 191, 200, 120, 255, 255, 0, 0, 77]);
    expect(Array.from(saturation(Uint8Array.from([255, 0, 0, 200, 100, 50, 0, 0, 255, 77, 77, 77])))).toEqual([255, 191, 255, 0]);
  });

  it('median blur replicates the border', () => {
    // 3×3 window at (0,0) of [[9,1],[1,1]] sees rows/cols replicated: 9 9 1 / 9 9 1 / 1 1 1 → median 1;
    // without replication (zero or reflect-101 borders) the 9 would weigh differently.
    expect(Array.from(medianBlur(Uint8Array.from([9, 1, 1, 1]), 2, 2, 3))).toEqual([1, 1, 1, 1]);
    expect(Array.from(medianBlur(Uint8Array.from([9, 9, 9, 1]), 2, 2, 3))).toEqual([9, 9, 9, 9]);
    // A lone bright pixel in a 5×5 flat field vanishes; a 3-wide bar survives a 3×3 median.
    const src = new Uint8Array(25);
    src[12] = 200;
    expect(Math.max(...medianBlur(src, 5, 5, 3))).toBe(0);
    const bar = new Uint8Array(25).map((_, i) => (Math.floor(i / 5) >= 1 && Math.floor(i / 5) <= 3 ? 50 : 0));
    expect(Array.from(medianBlur(bar, 5, 5, 3)).slice(5, 20)).toEqual(new Array(15).fill(50));
  });

  it('threshold, Otsu and an even close kernel shift like OpenCV', () => {
    expect(Array.from(threshold(Uint8Array.from([0, 8, 9, 255]), 8))).toEqual([0, 0, 255, 255]);
    const bimodal = Uint8Array.from([...new Array(50).fill(10), ...new Array(50).fill(200)]);
    const t = otsuThreshold(bimodal);
    expect(t).toBeGreaterThanOrEqual(10);
    expect(t).toBeLessThan(200);
    // A single pixel closed with a 4×4 kernel (anchor 2): dilate covers [p−1, p+2], erode keeps p+1.
    const one = new Uint8Array(81);
    one[4 * 9 + 4] = 255;
    const closed = morphologyClose(one, 9, 9, 4);
    expect(Array.from(closed).flatMap((v, i) => (v ? [i] : []))).toEqual([5 * 9 + 5]);
  });

  it('contours, areas and holes of a rectangle with a one-pixel hole', () => {
    // 8×7 mask, rectangle x 1..6, y 1..5, hole at (3, 3).
    const mask = new Uint8Array(8 * 7);
    for (let y = 1; y <= 5; y++) for (let x = 1; x <= 6; x++) mask[y * 8 + x] = 1;
    mask[3 * 8 + 3] = 0;
    const { contours, hierarchy } = findContours(mask, 8, 7);
    expect(contours.length).toBe(2);
    expect(hierarchy).toEqual([
      [-1, -1, 1, -1],
      [-1, -1, -1, 0],
    ]);
    // Outer border: the rectangle's corner pixels, traced down the left side first.
    expect(flat(contours[0]).slice(0, 3)).toEqual([
      [1, 1],
      [1, 2],
      [1, 3],
    ]);
    expect(contourArea(contours[0])).toBe(5 * 4);
    expect(boundingRect(contours[0])).toEqual([1, 1, 6, 5]);
    // Hole border: the four 4-neighbours of the hole, a diamond of area 2.
    expect(new Set(flat(contours[1]).map(String))).toEqual(new Set(['3,2', '2,3', '3,4', '4,3']));
    expect(contourArea(contours[1])).toBe(2);
    expect(pointPolygonTest(contours[1], 3, 3)).toBe(1);
    expect(pointPolygonTest(contours[1], 3, 2)).toBe(0);
    expect(pointPolygonTest(contours[1], 3.5, 2.5)).toBe(0);
    expect(pointPolygonTest(contours[0], 0, 0)).toBe(-1);
    // Single isolated pixel: a one-point contour with area 0.
    const dot = findContours(Uint8Array.from([0, 0, 0, 0, 1, 0, 0, 0, 0]), 3, 3);
    expect(dot.contours.map(flat)).toEqual([[[1, 1]]]);
    expect(contourArea(dot.contours[0])).toBe(0);
  });

  it('segments a hand-made image: white is background, a stained square is tissue', () => {
    const w = 40;
    const h = 30;
    const rgb = new Uint8Array(w * h * 3).fill(245);
    for (let y = 5; y < 25; y++) for (let x = 8; x < 30; x++) rgb.set([170, 90, 160], (y * w + x) * 3);
    const seg = segmentTissueImage({ width: w, height: h, data: rgb }, [16, 16], { aT: 1, aH: 0, refPatchSize: 16 });
    expect(seg.contours.length).toBe(1);
    // Stained x 8..29, y 5..24. The close (4×4, anchor 2) dilates to [x−1, x+2] and erodes back to
    // [x+1, x+1]: the square moves by one pixel, to x 9..30, y 6..25, as in OpenCV.
    expect(boundingRect(seg.levelContours[0])).toEqual([9, 6, 22, 20]);
    expect(boundingRect(seg.contours[0])).toEqual([9 * 16, 6 * 16, 30 * 16 - 9 * 16 + 1, 25 * 16 - 6 * 16 + 1]);
    const seg2 = segmentTissueImage({ width: w, height: h, data: new Uint8Array(w * h * 3).fill(250) }, [16, 16]);
    expect(seg2.contours.length).toBe(0);
  });
});

describe('OpenCV primitives vs cv2 ' + 'fixture', () => {
  it('HSV', () => {
    expect(Array.from(rgbToHsv(Uint8Array.from(fixture.hsv.rgb)))).toEqual(fixture.hsv.hsv);
  });

  it('medianBlur 3 and 7', () => {
    const { w, h, src } = fixture.median;
    expect(Array.from(medianBlur(Uint8Array.from(src), w, h, 3))).toEqual(fixture.median.k3);
    expect(Array.from(medianBlur(Uint8Array.from(src), w, h, 7))).toEqual(fixture.median.k7);
  });

  it('dilate, erode, close', () => {
    const { w, h } = fixture.morph;
    const src = Uint8Array.from(fixture.morph.src);
    expect(Array.from(dilate(src, w, h, 4))).toEqual(fixture.morph.dilate4);
    expect(Array.from(erode(src, w, h, 4))).toEqual(fixture.morph.erode4);
    expect(Array.from(morphologyClose(src, w, h, 4))).toEqual(fixture.morph.close4);
    expect(Array.from(morphologyClose(src, w, h, 3))).toEqual(fixture.morph.close3);
  });

  it('Otsu threshold', () => {
    for (const { src, thresh } of fixture.otsu) expect(otsuThreshold(Uint8Array.from(src))).toBe(thresh);
  });

  it('findContours (RETR_CCOMP, CHAIN_APPROX_NONE), contourArea, boundingRect, pointPolygonTest', () => {
    for (const m of fixture.masks) {
      const { contours, hierarchy } = findContours(Uint8Array.from(m.mask), m.w, m.h);
      expectSame(contours.map(flat), m.contours);
      expectSame(hierarchy, m.hierarchy);
      expectSame(contours.map(contourArea), m.areas);
      expectSame(contours.map(boundingRect), m.rects);
      expectSame(
        contours.map((c) => m.points.map(([x, y]) => pointPolygonTest(c, x, y))),
        m.tests,
      );
      expectSame(
        contours.map((c) => {
          const tester = new PolygonTester(c);
          return m.points.map(([x, y]) => tester.test(x, y));
        }),
        m.tests,
      );
    }
  });
});

/** A slide whose segmentation level is the fixture's seg.png (CLAM's run used the same pixels). */
async function fixtureSlide(): Promise<SlideLike> {
  const { data, info } = await sharp(join(here, 'fixtures/clam-seg/seg.png')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const seg: RgbImage = { width: info.width, height: info.height, data: new Uint8Array(data) };
  const dims = fixture.levelDims;
  const downsamples = dims.map(([w, h]) => (dims[0][0] / w + dims[0][1] / h) / 2);
  return {
    name: 'synthetic',
    levelCount: dims.length,
    levelDimensions: dims,
    levelDownsamples: downsamples,
    getBestLevelForDownsample: (ds) => bestLevelForDownsample(downsamples, ds),
    readRegion: async (x, y, level, w, h) => {
      expect([x, y, level, w, h]).toEqual([0, 0, 3, seg.width, seg.height]);
      return seg;
    },
    thumbnail: async () => seg,
  };
}

describe('CLAM segmentTissue + process_contours on a synthetic slide', () => {
  it('picks the same seg level, contours and holes as CLAM', async () => {
    const slide = await fixtureSlide();
    const seg = await segmentTissue(slide);
    expect(seg.segLevel).toBe(fixture.segLevel);
    expect(seg.scale).toEqual(fixture.levelDownsamples[fixture.segLevel]);
    expectSame(seg.contours.map(flat), fixture.contoursTissue);
    expectSame(seg.holes.map((hs) => hs.map(flat)), fixture.holesTissue);
    // Tissue found, white background not: the mask covers the stained area only.
    const tissue = seg.mask.reduce((s, v) => s + (v ? 1 : 0), 0) / seg.mask.length;
    expect(tissue).toBeGreaterThan(0.2);
    expect(tissue).toBeLessThan(0.6);
    expect(seg.mask[0]).toBe(0);
  });

  it.each(fixture.runs.map((r) => [`level ${r.patchLevel} size ${r.patchSize} step ${r.stepSize} ${r.contourFn}`, r] as const))(
    'patch grid equals CLAM: %s',
    async (_label, run) => {
      const slide = await fixtureSlide();
      const result = await tileSlide(slide, {
        level: run.patchLevel,
        patchSize: run.patchSize,
        stepSize: run.stepSize,
        contourFn: run.contourFn,
        savePath: String(run.attrs.save_path),
      });
      expect(result.count).toBe(run.coords.length);
      expectSame(Array.from(result.coords, Number), run.coords.flat());
      expect(result.attrs).toEqual(run.attrs);
    },
  );
});

describe('patch geometry', () => {
  const slide = (mpp: number | undefined, dims: [number, number][]): SlideLike => {
    const ds = dims.map(([w, h]) => (dims[0][0] / w + dims[0][1] / h) / 2);
    return {
      name: 's',
      levelCount: dims.length,
      levelDimensions: dims,
      levelDownsamples: ds,
      mpp: mpp === undefined ? undefined : { x: mpp, y: mpp },
      getBestLevelForDownsample: (d) => bestLevelForDownsample(ds, d),
      readRegion: async () => ({ width: 0, height: 0, data: new Uint8Array(0) }),
      thumbnail: async () => ({ width: 0, height: 0, data: new Uint8Array(0) }),
    };
  };

  it('maps mpp to a level and a patch size (40× slide at 0.5 µm: 512 px at level 0)', () => {
    expect(resolvePatchGeometry(slide(0.252, [[40000, 30000]]), { mpp: 0.5, patchSize: 256 })).toEqual({ patchLevel: 0, patchSize: 512, stepSize: 512 });
    const pyramid = slide(0.25, [
      [40000, 30000],
      [10000, 7500],
    ]);
    expect(resolvePatchGeometry(pyramid, { mpp: 1.0, patchSize: 256 })).toEqual({ patchLevel: 1, patchSize: 256, stepSize: 256 });
    expect(resolvePatchGeometry(pyramid, { mpp: 0.5, patchSize: 224, stepSize: 112 })).toEqual({ patchLevel: 0, patchSize: 448, stepSize: 224 });
    expect(() => resolvePatchGeometry(slide(undefined, [[100, 100]]), { mpp: 0.5 })).toThrow(/microns per pixel/);
    expect(() => resolvePatchGeometry(pyramid, { level: 2 })).toThrow(/out of range/);
  });

  it('rounds near-integer downsamples where CLAM would truncate', () => {
    expect(integerDownsample(4)).toBe(4);
    expect(integerDownsample(3.9995)).toBe(4);
    expect(integerDownsample(2.5)).toBe(2);
  });

  it('grid: hand-computed square contour, hole excludes its centre patch', () => {
    // Square tissue [0, 1000]² at level 0, hole square around (500, 500); 4-point test with P=200.
    const square = Int32Array.from([0, 0, 0, 1000, 1000, 1000, 1000, 0]);
    const hole = Int32Array.from([450, 450, 450, 550, 550, 550, 550, 450]);
    const coords = patchGrid([square], [[hole]], [2000, 2000], [1, 1], { patchSize: 200, stepSize: 200 });
    // bbox width 1001: x, y ∈ {0, 200, ..., 1000}. For x = 1000 the four test points lie at x = 1050 and 1150,
    // outside, likewise y = 1000; 5 × 5 = 25 pass, minus (400, 400) whose centre (500, 500) is inside the hole.
    expect(coords.length / 2).toBe(24);
    const pairs = Array.from({ length: coords.length / 2 }, (_, i) => `${coords[2 * i]},${coords[2 * i + 1]}`);
    expect(pairs).not.toContain('400,400');
    expect(pairs.slice(0, 3)).toEqual(['0,0', '0,200', '0,400']); // x outer, y inner (CLAM's meshgrid 'ij')
  });
});

describe('tileSlides (mstar tile) on a real pyramidal TIFF', () => {
  it('writes CLAM .h5 and a preview; patches lie on tissue; bad slides are reported and the run goes on', async () => {
    const tmp = tempDir('mstar-tile-');
    try {
      const source: Raw = tissueCanvas(2048, 1536, await loadPatch());
      const path = join(tmp.dir, 'slide-a.tif');
      await writeSharpPyramid(path, source, { compression: 'jpeg', xres: 4000, resolutionUnit: 'cm' }); // 0.25 µm/px
      const corrupt = join(tmp.dir, 'corrupt.svs');
      writeFileSync(corrupt, 'garbage'.repeat(100));
      const out = join(tmp.dir, 'coords');
      const seen: string[] = [];
      // The slide is small: area threshold 1 reference patch (512² level-0 px) instead of 100.
      const options = { outDir: out, aT: 1, mpp: 0.5, patchSize: 128, onSlide: (r: { status: string }) => seen.push(r.status) };
      const summary = await tileSlides([path, corrupt, join(tmp.dir, 'missing.svs')], options);
      expect([summary.done, summary.skipped, summary.failed]).toEqual([1, 0, 2]);
      expect(seen).toEqual(['done', 'failed', 'failed']);
      expect(summary.results[1].error?.code).toBe('ERR_FORMAT');
      expect(summary.results[2].error?.code).toBe('ERR_SLIDE_READ');

      const h5 = await readClamCoords(join(out, 'slide-a.h5'));
      // 0.25 µm/px slide at 0.5 µm/px: level 1 (downsample 2) holds 0.5 µm/px, so 128-px patches there.
      expect(h5.attrs).toMatchObject({ patch_size: 128, patch_level: 1, downsample: [2, 2], level_dim: [1024, 768], name: 'slide-a' });
      expect(h5.count).toBeGreaterThan(10);
      // Every patch overlaps tissue (the 4-point test accepts patches whose inner square touches the
      // seg-level contour, 8 level-0 px per seg pixel); none lies on the white background alone.
      for (let i = 0; i < h5.count; i++) {
        const x0 = Number(h5.coords[2 * i]);
        const y0 = Number(h5.coords[2 * i + 1]);
        let stained = 0;
        for (let y = y0; y < Math.min(1536, y0 + 256); y += 8) {
          for (let x = x0; x < Math.min(2048, x0 + 256); x += 8) {
            const p = (y * 2048 + x) * 3;
            if (Math.min(source.data[p], source.data[p + 1], source.data[p + 2]) < 230) stained++;
          }
        }
        expect(stained, `patch ${i} at (${x0}, ${y0})`).toBeGreaterThan(32 * 32 * 0.05);
      }
      // Nothing right of the tissue ellipse (it ends at x ≈ 1310).
      for (let i = 0; i < h5.count; i++) expect(Number(h5.coords[2 * i])).toBeLessThan(1310);
      const preview = join(out, 'slide-a_preview.png');
      expect(statSync(preview).size).toBeGreaterThan(1000);
      const meta = await sharp(preview).metadata();
      expect([meta.width, meta.height]).toEqual([1024, 768]); // the whole slide fits in 1024

      // Rerun: finished slides are skipped, the h5 is untouched.
      const before = statSync(join(out, 'slide-a.h5')).mtimeMs;
      const again = await tileSlides([path], { ...options, onSlide: undefined });
      expect(again.results[0].status).toBe('skipped');
      expect(statSync(join(out, 'slide-a.h5')).mtimeMs).toBe(before);
      expect(existsSync(join(out, 'corrupt.h5'))).toBe(false);

      // Same grid straight from the API with CLAM's defaults except the area threshold.
      const slide = await openSlide(path);
      const direct = await tileSlide(slide, { aT: 1, level: 1, patchSize: 128 });
      expect(Array.from(direct.coords)).toEqual(Array.from(h5.coords));
      slide.close();
    } finally {
      tmp.cleanup();
    }
  });
});
