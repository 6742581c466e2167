/**
 * Patch grids over segmented tissue, compatible with CLAM (mahmoodlab/CLAM,
 * wsi_core/WholeSlideImage.py `process_contours` / `process_contour` /
 * `isInContours`, wsi_core/util_classes.py `isInContourV1/V2/V3_Easy/V3_Hard`, with
 * create_patches_fp.py's defaults: contour_fn 'four_pt', use_padding true,
 * step = patch size), and `mstar tile`'s batch driver `tileSlides`.
 *
 * For each tissue contour (level-0 polygon) CLAM walks the grid
 *   x ∈ [bx, bx + bw) step s·dx,  y ∈ [by, by + bh) step s·dy   (x outer, y inner)
 * over the contour's bounding box, where (dx, dy) = the patch level's downsample as
 * integers and s the step in patch-level pixels, and keeps (x, y) when
 *   - contour test: with P = patch size · dx (level-0 pixels), c = (x + ⌊P/2⌋, y + ⌊P/2⌋)
 *     and q = ⌊⌊P/2⌋ · 0.5⌋: 'four_pt' = any of c ± (q, q), c ± (q, −q) is inside or on
 *     the contour; 'four_pt_hard' = all four; 'center' = c; 'basic' = (x, y);
 *   - hole test: (x + P/2, y + P/2) is strictly inside none of the contour's holes.
 * Coordinates are level-0 top-left corners, contour by contour, in CLAM's order.
 *
 * Deviation from CLAM, on purpose: CLAM truncates the level downsample to an integer
 * (`int(3.9995)` = 3 makes the grid 4/3 too dense on pyramids whose level sizes are
 * rounded up); here a downsample within 1 % of an integer is rounded, otherwise
 * truncated as CLAM does. Exact-integer downsamples (the usual case) are unaffected.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { writeFileAtomically } from '../io/atomic.js';
import { writeClamCoords, type ClamCoordAttrs } from '../io/clam.js';
import { bestLevelForDownsample, openSlide, type OpenSlideOptions } from '../io/slide.js';
import { PolygonTester, boundingRect } from './contours.js';
import { levelScale, segmentTissue, type SegmentOptions, type SlideLike, type TissueSegmentation } from './segment.js';

/** CLAM's contour checks (create_patches_fp.py `contour_fn`). */
export type ContourFn = 'four_pt' | 'four_pt_hard' | 'center' | 'basic';

export interface TileOptions extends SegmentOptions {
  /** Patch side in pixels of the patch level (with `mpp`: pixels at that resolution). Default 256. */
  patchSize?: number;
  /** Patch level (default 0). Exclusive with `mpp`. */
  level?: number;
  /** Target microns per pixel; picks the level and scales patch and step sizes to it. */
  mpp?: number;
  /**
   * With `mpp`: a level-to-target size ratio within this relative distance of an
   * integer is snapped to it (0.2520 µm/px at 0.5 → ×2, so 256 → 512 px at level 0, as
   * mSTAR's "512 px at 40×"). Default 0.05.
   */
  mppTolerance?: number;
  /** Grid step in the units of `patchSize` (default: `patchSize`, no overlap). */
  stepSize?: number;
  /** Default 'four_pt'. */
  contourFn?: ContourFn;
  /** Let patches run past the slide's right and bottom edges (CLAM `use_padding`, default true). */
  usePadding?: boolean;
  /** Written to the `save_path` attribute (CLAM: its patches folder). Default ''. */
  savePath?: string;
}

/** Patch geometry in the patch level's pixels. */
export interface PatchGeometry {
  patchLevel: number;
  /** Patch side at `patchLevel` (the `patch_size` attribute). */
  patchSize: number;
  /** Grid step at `patchLevel`. */
  stepSize: number;
}

export interface TileResult extends PatchGeometry {
  /** [N, 2] int64 level-0 (x, y) of each patch's top-left corner. */
  coords: BigInt64Array;
  /** N. */
  count: number;
  /** The CLAM attributes of `coords`. */
  attrs: ClamCoordAttrs;
  segmentation: TissueSegmentation;
}

function argError(message: string): RangeError & { code: string } {
  return Object.assign(new RangeError(message), { code: 'ERR_ARGUMENT' });
}

/** CLAM's integer patch downsample, rounding values within 1 % of an integer (see the file header). */
export function integerDownsample(ds: number): number {
  const r = Math.round(ds);
  return Math.abs(ds - r) <= 0.01 * ds ? Math.max(1, r) : Math.max(1, Math.trunc(ds));
}

/**
 * Resolves `level` / `mpp`, `patchSize` and `stepSize` to the patch level and sizes in
 * its pixels.
 */
export function resolvePatchGeometry(slide: SlideLike, options: TileOptions = {}): PatchGeometry {
  const patchSize = options.patchSize ?? 256;
  const stepSize = options.stepSize ?? patchSize;
  if (!Number.isInteger(patchSize) || patchSize < 1) throw argError(`patchSize must be a positive integer, got ${patchSize}`);
  if (!Number.isInteger(stepSize) || stepSize < 1) throw argError(`stepSize must be a positive integer, got ${stepSize}`);
  if (options.mpp === undefined) {
    const level = options.level ?? 0;
    if (!Number.isInteger(level) || level < 0 || level >= slide.levelCount) {
      throw Object.assign(new RangeError(`level ${level} is out of range: ${slide.name} has ${slide.levelCount} level(s)`), { code: 'ERR_RANGE' });
    }
    return { patchLevel: level, patchSize, stepSize };
  }
  if (options.level !== undefined) throw argError('pass either level or mpp, not both');
  const mpp = options.mpp;
  if (!(typeof mpp === 'number' && Number.isFinite(mpp) && mpp > 0)) throw argError(`mpp must be a positive number, got ${mpp}`);
  if (!slide.mpp) {
    throw Object.assign(new Error(`${slide.name} does not state its microns per pixel; pass a level instead of mpp`), { code: 'ERR_NO_MPP' });
  }
  const tol = options.mppTolerance ?? 0.05;
  if (!(tol >= 0 && tol < 0.5)) throw argError(`mppTolerance must be in [0, 0.5), got ${tol}`);
  const targetDs = mpp / ((slide.mpp.x + slide.mpp.y) / 2);
  const patchLevel = bestLevelForDownsample(slide.levelDownsamples, targetDs * (1 + tol));
  let ratio = targetDs / slide.levelDownsamples[patchLevel];
  const snapped = Math.round(ratio);
  if (snapped >= 1 && Math.abs(ratio - snapped) <= tol * ratio) ratio = snapped;
  return {
    patchLevel,
    patchSize: Math.max(1, Math.round(patchSize * ratio)),
    stepSize: Math.max(1, Math.round(stepSize * ratio)),
  };
}

/**
 * CLAM's patch grid over level-0 tissue contours and their holes.
 *
 * @param contours      [C] level-0 polygons [P, 2]
 * @param holes         [C] lists of level-0 hole polygons
 * @param level0Dims    slide level-0 (width, height), for use_padding = false
 * @param patchDownsample integer (dx, dy) of the patch level
 * @returns [N, 2] level-0 (x, y), flattened
 */
export function patchGrid(
  contours: readonly Int32Array[],
  holes: readonly (readonly Int32Array[])[],
  level0Dims: readonly [number, number],
  patchDownsample: readonly [number, number],
  { patchSize, stepSize, contourFn = 'four_pt', usePadding = true }: { patchSize: number; stepSize: number; contourFn?: ContourFn; usePadding?: boolean },
): number[] {
  const [dx, dy] = patchDownsample;
  const ref = patchSize * dx; // CLAM uses ref_patch_size[0] for both axes in the checks
  const refY = patchSize * dy;
  const stepX = stepSize * dx;
  const stepY = stepSize * dy;
  const half = Math.floor(ref / 2);
  const shift = Math.floor(half * 0.5);
  const out: number[] = [];
  contours.forEach((contour, c) => {
    const tester = new PolygonTester(contour);
    const holeTesters = (holes[c] ?? []).map((h) => new PolygonTester(h));
    const [bx, by, bw, bh] = boundingRect(contour);
    const stopX = usePadding ? bx + bw : Math.min(bx + bw, level0Dims[0] - ref + 1);
    const stopY = usePadding ? by + bh : Math.min(by + bh, level0Dims[1] - refY + 1);
    const inContour = (x: number, y: number): boolean => {
      const cx = x + half;
      const cy = y + half;
      switch (contourFn) {
        case 'basic':
          return tester.test(x, y) >= 0;
        case 'center':
          return tester.test(cx, cy) >= 0;
        case 'four_pt':
        case 'four_pt_hard': {
          if (shift === 0) return tester.test(cx, cy) >= 0;
          const corners: [number, number][] = [
            [cx - shift, cy - shift],
            [cx + shift, cy + shift],
            [cx + shift, cy - shift],
            [cx - shift, cy + shift],
          ];
          return contourFn === 'four_pt'
            ? corners.some(([px, py]) => tester.test(px, py) >= 0)
            : corners.every(([px, py]) => tester.test(px, py) >= 0);
        }
        default:
          throw argError(`contourFn must be four_pt, four_pt_hard, center or basic, got ${String(contourFn)}`);
      }
    };
    for (let x = bx; x < stopX; x += stepX) {
      for (let y = by; y < stopY; y += stepY) {
        if (!inContour(x, y)) continue;
        const hx = x + ref / 2;
        const hy = y + ref / 2;
        if (holeTesters.some((t) => t.test(hx, hy) > 0)) continue;
        out.push(x, y);
      }
    }
  });
  return out;
}

/**
 * Segments a slide's tissue and lays CLAM's patch grid over it.
 *
 * @returns coords [N, 2] int64 level-0, the CLAM attributes, the segmentation.
 */
export async function tileSlide(slide: SlideLike, options: TileOptions = {}): Promise<TileResult> {
  const geometry = resolvePatchGeometry(slide, options);
  const segmentation = await segmentTissue(slide, options);
  const scale = levelScale(slide, geometry.patchLevel);
  const patchDownsample: [number, number] = [integerDownsample(scale[0]), integerDownsample(scale[1])];
  const flat = patchGrid(segmentation.contours, segmentation.holes, slide.levelDimensions[0], patchDownsample, {
    patchSize: geometry.patchSize,
    stepSize: geometry.stepSize,
    contourFn: options.contourFn,
    usePadding: options.usePadding,
  });
  const coords = BigInt64Array.from(flat, (v) => BigInt(v));
  const [lw, lh] = slide.levelDimensions[geometry.patchLevel];
  const attrs: ClamCoordAttrs = {
    patch_size: geometry.patchSize,
    patch_level: geometry.patchLevel,
    downsample: scale,
    downsampled_level_dim: [lw, lh],
    level_dim: [lw, lh],
    name: slide.name,
    save_path: options.savePath ?? '',
  };
  return { ...geometry, coords, count: flat.length / 2, attrs, segmentation };
}

function svgPath(points: Int32Array, sx: number, sy: number): string {
  let d = '';
  for (let i = 0; i < points.length; i += 2) d += `${i === 0 ? 'M' : 'L'}${(points[i] * sx).toFixed(1)},${(points[i + 1] * sy).toFixed(1)}`;
  return d + 'Z';
}

/**
 * Draws the tissue (translucent green, holes cut out), contours (green), holes (blue)
 * and the patch grid (red squares) over the slide thumbnail; returns PNG bytes.
 *
 * @param coords [N, 2] level-0 patch corners; `patchSizeLevel0` their side in level-0 pixels
 */
export async function renderTilingPreview(
  slide: SlideLike,
  segmentation: Pick<TissueSegmentation, 'contours' | 'holes'>,
  coords: BigInt64Array,
  patchSizeLevel0: number,
  maxSize = 1024,
): Promise<Uint8Array> {
  const thumb = await slide.thumbnail(maxSize);
  const [w0, h0] = slide.levelDimensions[0];
  const sx = thumb.width / w0;
  const sy = thumb.height / h0;
  const parts: string[] = [];
  segmentation.contours.forEach((c, i) => {
    const d = svgPath(c, sx, sy) + (segmentation.holes[i] ?? []).map((h) => svgPath(h, sx, sy)).join('');
    parts.push(`<path d="${d}" fill="rgb(0,200,0)" fill-opacity="0.22" fill-rule="evenodd" stroke="none"/>`);
    parts.push(`<path d="${svgPath(c, sx, sy)}" fill="none" stroke="rgb(0,190,0)" stroke-width="1.5"/>`);
    for (const h of segmentation.holes[i] ?? []) parts.push(`<path d="${svgPath(h, sx, sy)}" fill="none" stroke="rgb(0,0,255)" stroke-width="1.5"/>`);
  });
  const pw = patchSizeLevel0 * sx;
  const ph = patchSizeLevel0 * sy;
  let grid = '';
  for (let i = 0; i < coords.length; i += 2) {
    grid += `M${(Number(coords[i]) * sx).toFixed(1)},${(Number(coords[i + 1]) * sy).toFixed(1)}h${pw.toFixed(2)}v${ph.toFixed(2)}h${(-pw).toFixed(2)}Z`;
  }
  if (grid) parts.push(`<path d="${grid}" fill="none" stroke="rgb(230,30,30)" stroke-opacity="0.8" stroke-width="0.7"/>`);
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${thumb.width}" height="${thumb.height}">${parts.join('')}</svg>`;
  const png = await sharp(thumb.data, { raw: { width: thumb.width, height: thumb.height, channels: 3 } })
    .composite([{ input: Buffer.from(svg), top: 0, left: 0 }])
    .png()
    .toBuffer();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}

export interface TileSlidesOptions extends TileOptions, Pick<OpenSlideOptions, 'backend'> {
  /** Output folder: `<outDir>/<slide>.h5` and `<outDir>/<slide>_preview.png`. Created if missing. */
  outDir: string;
  /** Write the preview PNG (default true) at this thumbnail size (default 1024). */
  preview?: boolean;
  previewSize?: number;
  /** Skip slides whose `.h5` exists (CLAM `auto_skip`, default true). */
  skipExisting?: boolean;
  /** Called after each slide with its outcome. */
  onSlide?: (result: TileSlideOutcome) => void;
}

export interface TileSlideOutcome {
  path: string;
  name: string;
  status: 'done' | 'skipped' | 'failed';
  h5?: string;
  preview?: string;
  count?: number;
  /** For failures: the error's code and message. */
  error?: { code: string; message: string };
}

export interface TileSlidesSummary {
  results: TileSlideOutcome[];
  done: number;
  skipped: number;
  failed: number;
}

/**
 * `mstar tile`: segments and tiles each slide, writing `<outDir>/<slide>.h5` (CLAM
 * coordinates, written atomically) and `<outDir>/<slide>_preview.png`. A slide that
 * fails is reported and the run goes on; the summary lists every outcome. A slide
 * with no tissue gets an `.h5` with 0 rows.
 */
export async function tileSlides(paths: readonly string[], options: TileSlidesOptions): Promise<TileSlidesSummary> {
  const { outDir, preview = true, previewSize = 1024, skipExisting = true, onSlide, backend } = options;
  if (typeof outDir !== 'string' || outDir.length === 0) throw argError('outDir must be a non-empty string');
  // Option mistakes are the caller's, not a slide's: refuse them once, before the loop.
  for (const k of ['patchSize', 'stepSize'] as const) {
    const v = options[k];
    if (v !== undefined && !(Number.isInteger(v) && v > 0)) throw argError(`${k} must be a positive integer, got ${v}`);
  }
  if (options.level !== undefined && options.mpp !== undefined) throw argError('pass either level or mpp, not both');
  if (options.mpp !== undefined && !(options.mpp > 0)) throw argError(`mpp must be a positive number, got ${options.mpp}`);
  if (options.contourFn !== undefined && !['four_pt', 'four_pt_hard', 'center', 'basic'].includes(options.contourFn)) {
    throw argError(`contourFn must be four_pt, four_pt_hard, center or basic, got ${String(options.contourFn)}`);
  }
  mkdirSync(outDir, { recursive: true });
  const results: TileSlideOutcome[] = [];
  const seen = new Map<string, string>();
  for (const path of paths) {
    const name = basename(path, extname(path));
    const h5 = join(outDir, `${name}.h5`);
    const previewPath = join(outDir, `${name}_preview.png`);
    let outcome: TileSlideOutcome;
    const earlier = seen.get(name);
    if (earlier !== undefined) {
      outcome = { path, name, status: 'failed', error: { code: 'ERR_DUPLICATE', message: `${path} and ${earlier} would both write ${h5}` } };
    } else if (skipExisting && existsSync(h5)) {
      outcome = { path, name, status: 'skipped', h5 };
    } else {
      outcome = await tileOne(path, name, h5, preview ? previewPath : undefined);
    }
    seen.set(name, path);
    results.push(outcome);
    onSlide?.(outcome);
  }
  return {
    results,
    done: results.filter((r) => r.status === 'done').length,
    skipped: results.filter((r) => r.status === 'skipped').length,
    failed: results.filter((r) => r.status === 'failed').length,
  };

  async function tileOne(path: string, name: string, h5: string, previewPath: string | undefined): Promise<TileSlideOutcome> {
    let slide;
    try {
      slide = await openSlide(path, { backend });
      const result = await tileSlide(slide, { ...options, savePath: options.savePath ?? resolve(outDir) });
      // The preview first, the .h5 last: an existing .h5 marks a finished slide for reruns.
      if (previewPath) {
        const refSize = result.patchSize * integerDownsample(result.attrs.downsample[0]);
        const png = await renderTilingPreview(slide, result.segmentation, result.coords, refSize, previewSize);
        await writeFileAtomically(previewPath, png);
      }
      await writeClamCoords(h5, result.coords, result.attrs);
      return { path, name, status: 'done', h5, preview: previewPath, count: result.count };
    } catch (error) {
      const e = error as Error & { code?: string };
      return { path, name, status: 'failed', error: { code: e.code ?? 'ERR_UNKNOWN', message: e.message } };
    } finally {
      slide?.close();
    }
  }
}
