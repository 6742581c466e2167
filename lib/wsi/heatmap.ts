/**
 * Per-patch score heatmaps over a slide thumbnail, with a colour bar, as PNG — a
 * visual check in the spirit of CLAM's `WholeSlideImage.visHeatmap` (patch squares
 * coloured by score; overlapping patches averaged; blended with the slide by `alpha`).
 *
 * Colour maps follow matplotlib's definitions: 'jet' is its piecewise-linear segment
 * table (_cm.py `_jet_data`); 'viridis' is interpolated linearly between the nine
 * colours of its 9-class palette (#440154 … #fde725), within a few RGB units of the
 * 256-entry original.
 */
import { writeFileSync } from 'node:fs';
import sharp from 'sharp';
import { writeAtomically } from '../io/atomic.js';
import type { SlideLike } from './segment.js';

export type Colormap = 'jet' | 'viridis';

export interface HeatmapOptions {
  /** Write the PNG here (atomically); without it, only the bytes are returned. */
  out?: string;
  /** Weight of the heatmap colour over the slide, in [0, 1] (default 0.4, CLAM's). */
  alpha?: number;
  colormap?: Colormap;
  /** Longest side of the slide thumbnail (default 1024). */
  maxSize?: number;
  /**
   * How scores map to [0, 1]: 'minmax' (default; [vmin, vmax] = range of the finite
   * scores unless given), 'percentile' (rank / (N − 1), as CLAM's
   * convert_to_percentiles), 'none' (scores already in [0, 1], clamped).
   */
  normalize?: 'minmax' | 'percentile' | 'none';
  vmin?: number;
  vmax?: number;
  /** Colour bar and its labels (default true). */
  colorbar?: boolean;
}

export interface HeatmapImage {
  width: number;
  height: number;
  /** PNG bytes. */
  png: Uint8Array;
  /** The score range the colours span (after normalization: 0..1 → vmin..vmax). */
  vmin: number;
  vmax: number;
}

type Segments = readonly (readonly [number, number])[];

/** matplotlib `_jet_data`: (position, value) breakpoints per channel. */
const JET: readonly [Segments, Segments, Segments] = [
  [
    [0, 0],
    [0.35, 0],
    [0.66, 1],
    [0.89, 1],
    [1, 0.5],
  ],
  [
    [0, 0],
    [0.125, 0],
    [0.375, 1],
    [0.64, 1],
    [0.91, 0],
    [1, 0],
  ],
  [
    [0, 0.5],
    [0.11, 1],
    [0.34, 1],
    [0.65, 0],
    [1, 0],
  ],
];

/** viridis 9-class palette, evenly spaced on [0, 1]. */
const VIRIDIS9 = [0x440154, 0x472d7b, 0x3b528b, 0x2c728e, 0x21918c, 0x28ae80, 0x5ec962, 0xaddc30, 0xfde725];

function interpolate(segments: Segments, t: number): number {
  for (let i = 1; i < segments.length; i++) {
    const [x1, y1] = segments[i];
    if (t <= x1) {
      const [x0, y0] = segments[i - 1];
      return x1 === x0 ? y1 : y0 + ((t - x0) / (x1 - x0)) * (y1 - y0);
    }
  }
  return segments[segments.length - 1][1];
}

/** RGB (0..255) of colour map `name` at t ∈ [0, 1] (clamped). */
export function colormapRgb(name: Colormap, t: number): [number, number, number] {
  const u = Number.isNaN(t) ? 0 : Math.min(1, Math.max(0, t));
  if (name === 'jet') return [0, 1, 2].map((c) => Math.round(255 * interpolate(JET[c], u))) as [number, number, number];
  if (name === 'viridis') {
    const pos = u * (VIRIDIS9.length - 1);
    const i = Math.min(VIRIDIS9.length - 2, Math.floor(pos));
    const f = pos - i;
    const a = VIRIDIS9[i];
    const b = VIRIDIS9[i + 1];
    return [16, 8, 0].map((s) => Math.round(((a >> s) & 255) * (1 - f) + ((b >> s) & 255) * f)) as [number, number, number];
  }
  throw Object.assign(new TypeError(`colormap must be 'jet' or 'viridis', got ${String(name)}`), { code: 'ERR_ARGUMENT' });
}

function argError(message: string, code = 'ERR_ARGUMENT'): RangeError & { code: string } {
  return Object.assign(new RangeError(message), { code });
}

/** Scores → [0, 1] per `normalize`; returns the values and the score range they span. */
function normalizeScores(scores: ArrayLike<number>, options: HeatmapOptions): { t: Float64Array; vmin: number; vmax: number } {
  const n = scores.length;
  const t = new Float64Array(n);
  const mode = options.normalize ?? 'minmax';
  if (mode === 'percentile') {
    const order = Array.from({ length: n }, (_, i) => i).filter((i) => Number.isFinite(scores[i]));
    order.sort((a, b) => scores[a] - scores[b]);
    t.fill(NaN);
    order.forEach((i, rank) => (t[i] = order.length > 1 ? rank / (order.length - 1) : 1));
    return { t, vmin: 0, vmax: 1 };
  }
  if (mode === 'none') {
    for (let i = 0; i < n; i++) t[i] = Number.isFinite(scores[i]) ? Math.min(1, Math.max(0, scores[i])) : NaN;
    return { t, vmin: 0, vmax: 1 };
  }
  if (mode !== 'minmax') throw argError(`normalize must be minmax, percentile or none, got ${String(mode)}`);
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(scores[i])) continue;
    lo = Math.min(lo, scores[i]);
    hi = Math.max(hi, scores[i]);
  }
  const vmin = options.vmin ?? (Number.isFinite(lo) ? lo : 0);
  const vmax = options.vmax ?? (Number.isFinite(hi) ? hi : 1);
  const span = vmax - vmin;
  for (let i = 0; i < n; i++) {
    t[i] = Number.isFinite(scores[i]) ? (span > 0 ? Math.min(1, Math.max(0, (scores[i] - vmin) / span)) : 0.5) : NaN;
  }
  return { t, vmin, vmax };
}

function formatLabel(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(2) : Number(v.toPrecision(3)).toString();
}

/**
 * Draws `scores` [N] of patches `coords` [N, 2] (level-0 top-left corners, side
 * `patchSize` level-0 pixels, as CLAM's visHeatmap takes them) over the slide thumbnail.
 *
 * @returns the PNG (and writes it to `options.out` when given)
 * @throws ERR_SHAPE when coords and scores disagree in length, ERR_ARGUMENT for bad options
 */
export async function renderHeatmap(
  slide: SlideLike,
  coords: BigInt64Array | ArrayLike<number>,
  scores: ArrayLike<number>,
  patchSize: number,
  options: HeatmapOptions = {},
): Promise<HeatmapImage> {
  const n = scores.length;
  if (coords.length !== 2 * n) throw argError(`coords holds ${coords.length / 2} patches, scores ${n}`, 'ERR_SHAPE');
  if (!(Number.isFinite(patchSize) && patchSize > 0)) throw argError(`patchSize must be a positive number, got ${patchSize}`);
  const alpha = options.alpha ?? 0.4;
  if (!(alpha >= 0 && alpha <= 1)) throw argError(`alpha must be in [0, 1], got ${alpha}`);
  const colormap = options.colormap ?? 'jet';
  colormapRgb(colormap, 0); // validates the name
  const { t, vmin, vmax } = normalizeScores(scores, options);

  const thumb = await slide.thumbnail(options.maxSize ?? 1024);
  const { width, height } = thumb;
  const [w0, h0] = slide.levelDimensions[0];
  const sx = width / w0;
  const sy = height / h0;
  // Average the scores of overlapping patches per thumbnail pixel.
  const sum = new Float64Array(width * height);
  const count = new Uint32Array(width * height);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(t[i])) continue;
    const x = Number(coords[2 * i]);
    const y = Number(coords[2 * i + 1]);
    const x0 = Math.max(0, Math.floor(x * sx));
    const y0 = Math.max(0, Math.floor(y * sy));
    const x1 = Math.min(width, Math.ceil((x + patchSize) * sx));
    const y1 = Math.min(height, Math.ceil((y + patchSize) * sy));
    for (let yy = y0; yy < y1; yy++) {
      for (let xx = x0; xx < x1; xx++) {
        sum[yy * width + xx] += t[i];
        count[yy * width + xx]++;
      }
    }
  }
  const lut = Array.from({ length: 256 }, (_, k) => colormapRgb(colormap, k / 255));
  const rgb = thumb.data.slice();
  for (let p = 0; p < width * height; p++) {
    if (count[p] === 0) continue;
    const c = lut[Math.round((sum[p] / count[p]) * 255)];
    for (let k = 0; k < 3; k++) rgb[p * 3 + k] = Math.round((1 - alpha) * rgb[p * 3 + k] + alpha * c[k]);
  }

  let image = sharp(rgb, { raw: { width, height, channels: 3 } });
  let outWidth = width;
  let outHeight = height;
  if (options.colorbar ?? true) {
    // White margin on the right: a vertical bar (top = vmax) and three labels.
    const barW = 16;
    const margin = 90;
    outWidth = width + margin;
    outHeight = Math.max(height, 120);
    const barH = Math.max(64, Math.round(outHeight * 0.7));
    const top = Math.round((outHeight - barH) / 2);
    const bar = new Uint8Array(barW * barH * 3);
    for (let r = 0; r < barH; r++) {
      const c = colormapRgb(colormap, 1 - r / (barH - 1));
      for (let x = 0; x < barW; x++) bar.set(c, (r * barW + x) * 3);
    }
    const labels = [
      [top + 5, vmax],
      [top + barH / 2 + 4, (vmin + vmax) / 2],
      [top + barH - 1, vmin],
    ] as const;
    const svg =
      `<svg xmlns="http://www.w3.org/2000/svg" width="${margin}" height="${outHeight}">` +
      labels.map(([y, v]) => `<text x="${barW + 16}" y="${y.toFixed(0)}" font-family="sans-serif" font-size="11" fill="black">${formatLabel(v)}</text>`).join('') +
      `</svg>`;
    const base = await image.png().toBuffer();
    image = sharp({ create: { width: outWidth, height: outHeight, channels: 3, background: { r: 255, g: 255, b: 255 } } }).composite([
      { input: base, left: 0, top: 0 },
      { input: Buffer.from(bar), raw: { width: barW, height: barH, channels: 3 }, left: width + 10, top },
      { input: Buffer.from(svg), left: width, top: 0 },
    ]);
  }
  const png = new Uint8Array(await image.png().toBuffer());
  if (options.out) await writeAtomically(options.out, (tmp) => writeFileSync(tmp, png));
  return { width: outWidth, height: outHeight, png, vmin, vmax };
}
