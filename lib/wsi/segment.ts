/**
 * Tissue segmentation compatible with CLAM (mahmoodlab/CLAM, wsi_core/WholeSlideImage.py
 * `segmentTissue`, with create_patches_fp.py's defaults):
 *
 *   RGB of the segmentation level → HSV saturation → median blur (mthresh) →
 *   binary threshold (sthresh, or Otsu) → morphological close (close × close ones) →
 *   contours with RETR_CCOMP → keep outer contours whose area minus their holes'
 *   area exceeds a_t · ref_patch_area_at_level; per kept contour, the max_n_holes largest
 *   holes whose area exceeds a_h · ref_patch_area_at_level → contours scaled to level 0.
 *
 * Defaults: seg level = best level for downsample 64 (level 0 for a single-level
 * slide), sthresh 8, sthresh_up 255, mthresh 7, close 4, use_otsu false, a_t 100,
 * a_h 16, max_n_holes 8, ref_patch_size 512 (segmentTissue's own default, which
 * create_patches_fp.py does not override).
 *
 * The OpenCV steps are lib/wsi/cv.ts and lib/wsi/contours.ts (exact re-implementations).
 */
import type { RgbImage } from '../io/slide.js';
import { contourArea, findContours } from './contours.js';
import { medianBlur, morphologyClose, otsuThreshold, saturation, threshold } from './cv.js';

/** What segmentation and tiling need from a slide (`Slide` from lib/io/slide.ts has it). */
export interface SlideLike {
  readonly name: string;
  readonly levelCount: number;
  readonly levelDimensions: readonly (readonly [number, number])[];
  readonly levelDownsamples: readonly number[];
  readonly mpp?: { x: number; y: number };
  getBestLevelForDownsample(downsample: number): number;
  readRegion(x: number, y: number, level: number, w: number, h: number): Promise<RgbImage>;
  thumbnail(maxSize: number): Promise<RgbImage>;
}

export interface SegmentOptions {
  /** Level to segment; default best level for downsample 64 (CLAM `seg_level: -1`). */
  segLevel?: number;
  /** Saturation threshold (CLAM `sthresh`, default 8) and the value written above it (`sthresh_up`, 255). */
  sthresh?: number;
  sthreshUp?: number;
  /** Median blur window, odd (CLAM `mthresh`, default 7). */
  mthresh?: number;
  /** Morphological close kernel size, 0 = none (CLAM `close`, default 4). */
  close?: number;
  /** Otsu's threshold instead of `sthresh` (CLAM `use_otsu`, default false). */
  useOtsu?: boolean;
  /** Tissue area threshold in reference patches (CLAM `a_t`, default 100). */
  aT?: number;
  /** Hole area threshold in reference patches (CLAM `a_h`, default 16). */
  aH?: number;
  /** Largest holes kept per contour (CLAM `max_n_holes`, default 8). */
  maxNHoles?: number;
  /** Reference patch size in level-0 pixels for the area thresholds (CLAM `ref_patch_size`, default 512). */
  refPatchSize?: number;
  /** Keep only these contour indices (after filtering) / drop these (CLAM `keep_ids`, `exclude_ids`). */
  keepIds?: number[];
  excludeIds?: number[];
  /** Refuse segmentation levels larger than this many pixels (CLAM aborts above 1e8). */
  maxPixels?: number;
}

/** The result of `segmentTissue`; contours are [P, 2] (x, y) flattened. */
export interface TissueSegmentation {
  segLevel: number;
  /** CLAM's per-axis downsample of the seg level: [w0 / w, h0 / h]. */
  scale: [number, number];
  /** Seg-level size. */
  width: number;
  height: number;
  /** [height, width] binary mask after the close (0 or sthreshUp). */
  mask: Uint8Array;
  /** Tissue contours at level 0 (CLAM `contours_tissue`: trunc(point · scale)). */
  contours: Int32Array[];
  /** Holes kept for each tissue contour, at level 0 (CLAM `holes_tissue`). */
  holes: Int32Array[][];
  /** The same contours and holes at the segmentation level. */
  levelContours: Int32Array[];
  levelHoles: Int32Array[][];
}

function checkOption(name: string, value: number, ok: boolean): void {
  if (!ok) throw Object.assign(new RangeError(`segmentation option ${name} = ${value} is invalid`), { code: 'ERR_ARGUMENT' });
}

/** Multiplies each point by the per-axis scale and truncates to int32 (CLAM scaleContourDim). */
export function scaleContour(contour: Int32Array, scale: readonly [number, number]): Int32Array {
  const out = new Int32Array(contour.length);
  for (let i = 0; i < contour.length; i += 2) {
    out[i] = Math.trunc(contour[i] * scale[0]);
    out[i + 1] = Math.trunc(contour[i + 1] * scale[1]);
  }
  return out;
}

/**
 * Segments tissue in an RGB image of the segmentation level. `scale` is the level's
 * per-axis downsample [w0/w, h0/h]; it sets the area thresholds and the level-0 contours.
 */
export function segmentTissueImage(image: RgbImage, scale: readonly [number, number], options: SegmentOptions = {}): Omit<TissueSegmentation, 'segLevel'> {
  const {
    sthresh = 8,
    sthreshUp = 255,
    mthresh = 7,
    close = 4,
    useOtsu = false,
    aT = 100,
    aH = 16,
    maxNHoles = 8,
    refPatchSize = 512,
    keepIds = [],
    excludeIds = [],
  } = options;
  checkOption('sthresh', sthresh, Number.isInteger(sthresh) && sthresh >= 0 && sthresh <= 255);
  checkOption('sthreshUp', sthreshUp, Number.isInteger(sthreshUp) && sthreshUp >= 1 && sthreshUp <= 255);
  checkOption('mthresh', mthresh, Number.isInteger(mthresh) && mthresh >= 1 && mthresh % 2 === 1);
  checkOption('close', close, Number.isInteger(close) && close >= 0);
  checkOption('aT', aT, Number.isFinite(aT) && aT >= 0);
  checkOption('aH', aH, Number.isFinite(aH) && aH >= 0);
  checkOption('maxNHoles', maxNHoles, Number.isInteger(maxNHoles) && maxNHoles >= 0);
  checkOption('refPatchSize', refPatchSize, Number.isInteger(refPatchSize) && refPatchSize > 0);
  const { width, height } = image;
  const sat = saturation(image.data); // [h, w]
  const blurred = medianBlur(sat, width, height, mthresh);
  let mask = threshold(blurred, useOtsu ? otsuThreshold(blurred) : sthresh, sthreshUp);
  if (close > 0) mask = morphologyClose(mask, width, height, close);

  // Area thresholds in seg-level pixels: CLAM int(ref² / (sx · sy)) reference-patch areas.
  const scaledRefPatchArea = Math.trunc((refPatchSize * refPatchSize) / (scale[0] * scale[1]));
  const areaTissue = aT * scaledRefPatchArea;
  const areaHole = aH * scaledRefPatchArea;

  const { contours, hierarchy } = findContours(mask, width, height);
  const holesOf = new Map<number, number[]>();
  hierarchy.forEach(([, , , parent], h) => {
    if (parent === -1) return;
    const list = holesOf.get(parent);
    if (list) list.push(h);
    else holesOf.set(parent, [h]);
  });
  const kept: number[] = [];
  const keptHoles: number[][] = [];
  for (let c = 0; c < contours.length; c++) {
    if (hierarchy[c][3] !== -1) continue; // only outer borders
    const holes = holesOf.get(c) ?? []; // in index order, as np.flatnonzero(parent == c)
    const area = contourArea(contours[c]) - holes.reduce((s, h) => s + contourArea(contours[h]), 0);
    if (area === 0) continue;
    if (areaTissue < area) {
      kept.push(c);
      keptHoles.push(holes);
    }
  }
  let levelContours = kept.map((c) => contours[c]);
  let levelHoles = keptHoles.map((holes) =>
    holes
      .map((h) => ({ h, area: contourArea(contours[h]) }))
      .sort((a, b) => b.area - a.area) // stable, like Python's sorted(reverse=True)
      .slice(0, maxNHoles)
      .filter(({ area }) => area > areaHole)
      .map(({ h }) => contours[h]),
  );
  // keep_ids / exclude_ids select among the filtered contours (sorted ids, as a Python set of small ints iterates).
  if (keepIds.length > 0 || excludeIds.length > 0) {
    const base = keepIds.length > 0 ? keepIds : levelContours.map((_, i) => i);
    const ids = [...new Set(base)].filter((i) => !excludeIds.includes(i) && i >= 0 && i < levelContours.length).sort((a, b) => a - b);
    levelContours = ids.map((i) => levelContours[i]);
    levelHoles = ids.map((i) => levelHoles[i]);
  }
  return {
    scale: [scale[0], scale[1]],
    width,
    height,
    mask,
    contours: levelContours.map((c) => scaleContour(c, scale)),
    holes: levelHoles.map((hs) => hs.map((h) => scaleContour(h, scale))),
    levelContours,
    levelHoles,
  };
}

/** CLAM's default segmentation level: best level for downsample 64, or 0 for a single-level slide. */
export function defaultSegLevel(slide: SlideLike): number {
  return slide.levelCount === 1 ? 0 : slide.getBestLevelForDownsample(64);
}

/** CLAM's per-axis downsample of `level`: [w0 / w, h0 / h] (WholeSlideImage._assertLevelDownsamples). */
export function levelScale(slide: SlideLike, level: number): [number, number] {
  const [w0, h0] = slide.levelDimensions[0];
  const [w, h] = slide.levelDimensions[level];
  return [w0 / w, h0 / h];
}

/**
 * Segments the tissue of a slide at `options.segLevel` (default: CLAM's choice).
 *
 * @throws ERR_RANGE when the level does not exist or exceeds `maxPixels` (default 1e8, CLAM's limit).
 */
export async function segmentTissue(slide: SlideLike, options: SegmentOptions = {}): Promise<TissueSegmentation> {
  const segLevel = options.segLevel ?? defaultSegLevel(slide);
  if (!Number.isInteger(segLevel) || segLevel < 0 || segLevel >= slide.levelCount) {
    throw Object.assign(new RangeError(`segLevel ${segLevel} is out of range: ${slide.name} has ${slide.levelCount} level(s)`), { code: 'ERR_RANGE' });
  }
  const [w, h] = slide.levelDimensions[segLevel];
  const maxPixels = options.maxPixels ?? 1e8;
  if (w * h > maxPixels) {
    throw Object.assign(
      new RangeError(`${slide.name}: segmentation level ${segLevel} is ${w}×${h}, over the ${maxPixels}-pixel limit; pass a coarser segLevel`),
      { code: 'ERR_RANGE' },
    );
  }
  const image = await slide.readRegion(0, 0, segLevel, w, h);
  return { segLevel, ...segmentTissueImage(image, levelScale(slide, segLevel), options) };
}
