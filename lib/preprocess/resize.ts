/**
 * Pillow-exact image resampling on 8-bit interleaved pixels, and torchvision's `Resize(int)` size rule.
 *
 * What it computes: `PIL.Image.resize((w, h), resample)` for 8-bit images with 1–4 bands (mSTAR only needs
 * RGB + BILINEAR), byte for byte. Reference: Pillow `src/libImaging/Resample.c` (`precompute_coeffs`,
 * `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc`, `ImagingResampleVertical_8bpc`,
 * `ImagingResampleInner`) and `src/PIL/Image.py` (`Image.resize`).
 *
 * How Pillow does it, and so how we do it:
 *  - Separable convolution, horizontal pass first, then vertical, each rounding back to uint8 (so the order
 *    matters for the bytes). The horizontal pass only produces the rows the vertical pass will read.
 *  - Per output index the filter is centred at `in0 + (i + 0.5)·scale` with `scale = (in1 − in0)/out`; when
 *    shrinking the filter is stretched by `scale` (antialiasing) so its support is `support·scale`. Bounds are
 *    rounded with `(int)(x + 0.5)` (truncation towards zero), clamped to the image.
 *  - Coefficients are computed in double, normalised to sum 1, then converted to fixed point with
 *    22 fraction bits (`PRECISION_BITS = 32 − 8 − 2`), rounding half away from zero.
 *  - Each output sample is `clip8((2^21 + Σ pixel·coeff) >> 22)`.
 *  - Pillow ≥ 12.2 resizes images more than 100× taller than wide vertically first (`Image.resize`); see
 *    `tallImagesVerticalFirst`.
 * Every step is exact integer arithmetic (products < 2^30, sums < 2^31), so the order of additions is free: the
 * kernels below pad each output to a fixed tap count with zero weights and unroll, which is what makes them fast
 * in JS; the bytes are Pillow's.
 */
import { checkPositiveInteger, invalidArgument, rangeError } from '../errors.js';

/** An 8-bit image, row-major interleaved: `data` is `[height, width, channels]` (HWC). */
export interface Image8 {
  width: number;
  height: number;
  /** Bands per pixel (1 = L, 3 = RGB, 4 = RGBA/CMYK). */
  channels: number;
  /** `[height, width, channels]` uint8. */
  data: Uint8Array;
}

/** The resampling filters of Pillow's `Image.Resampling` that use `Resample.c` (NEAREST uses an affine path). */
export type ResampleFilter = 'box' | 'bilinear' | 'hamming' | 'bicubic' | 'lanczos';

export interface ResizeOptions {
  /** Default `'bilinear'` (what torchvision passes for `InterpolationMode.BILINEAR`). */
  filter?: ResampleFilter;
  /**
   * Source region `[x0, y0, x1, y1]` in pixels (Pillow's `box`, held as float32 as Pillow's C code does).
   * Default: the whole image.
   */
  box?: readonly [number, number, number, number];
  /**
   * Pillow ≥ 12.2 (`Image.resize`): when the source is more than 100× taller than wide and gets shorter,
   * resample vertically first, then horizontally. Older Pillow always goes horizontal first. Default true.
   */
  tallImagesVerticalFirst?: boolean;
}

interface Filter {
  fn: (x: number) => number;
  support: number;
}

// Kernels as in Resample.c, evaluated in double.
const FILTERS: Record<ResampleFilter, Filter> = {
  box: { fn: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0), support: 0.5 },
  bilinear: {
    fn: (x) => {
      const ax = x < 0 ? -x : x;
      return ax < 1.0 ? 1.0 - ax : 0.0;
    },
    support: 1.0,
  },
  hamming: {
    fn: (x) => {
      let ax = x < 0 ? -x : x;
      if (ax === 0.0) return 1.0;
      if (ax >= 1.0) return 0.0;
      ax *= Math.PI;
      // Pillow writes the window constants as float literals (0.54f, 0.46f).
      return (Math.sin(ax) / ax) * (HAMMING_A + HAMMING_B * Math.cos(ax));
    },
    support: 1.0,
  },
  bicubic: { fn: (x) => pilCubic(x), support: 2.0 },
  lanczos: {
    fn: (x) => (-3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0),
    support: 3.0,
  },
};
const HAMMING_A = Math.fround(0.54);
const HAMMING_B = Math.fround(0.46);

/** Keys cubic convolution with a = −0.5 (Pillow's `bicubic_filter`), in double. */
function pilCubic(x: number): number {
  const a = -0.5;
  const ax = x < 0 ? -x : x;
  if (ax < 1.0) return ((a + 2.0) * ax - (a + 3.0)) * ax * ax + 1;
  if (ax < 2.0) return (((ax - 5) * ax + 8) * ax - 4) * a;
  return 0.0;
}

function sinc(x: number): number {
  if (x === 0.0) return 1.0;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

/** Fraction bits of the fixed-point coefficients: 32 − 8 (result) − 2 (overflow headroom). */
const PRECISION_BITS = 22;
const HALF = 1 << (PRECISION_BITS - 1);

/**
 * Fixed-point coefficient table for one axis (Pillow `precompute_coeffs` + `normalize_coeffs_8bpc`).
 *  - `ksize`: row stride of `weights` (max taps).
 *  - `start[i]`, `count[i]`: first source index and number of taps of output `i`.
 *  - `weights`: `[outSize, ksize]` int32 with 22 fraction bits.
 */
export interface CoeffTable {
  ksize: number;
  start: Int32Array;
  count: Int32Array;
  weights: Int32Array;
}

/**
 * Pillow's `precompute_coeffs` followed by its 8-bit fixed-point conversion.
 * `in0`/`in1` are the source interval (float32 in Pillow), `outSize` the number of outputs.
 */
export function precomputeCoeffs(
  inSize: number,
  in0: number,
  in1: number,
  outSize: number,
  filter: ResampleFilter,
): CoeffTable {
  const { fn, support: baseSupport } = FILTERS[filter];
  // (double)(in1 - in0) where in0, in1 are C floats: the difference is a float operation.
  const scale = Math.fround(Math.fround(in1) - Math.fround(in0)) / outSize;
  const filterScale = scale < 1.0 ? 1.0 : scale;
  const support = baseSupport * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const invFilterScale = 1.0 / filterScale;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const origin = Math.fround(in0);
  for (let xx = 0; xx < outSize; xx++) {
    const center = origin + (xx + 0.5) * scale;
    // (int)(v + 0.5): C truncation towards zero, then clamped.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    if (xmax > ksize) xmax = ksize; // cannot happen (width ≤ 2·support + 1); keeps the table in bounds regardless
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = fn((x + xmin - center + 0.5) * invFilterScale);
      k[x] = w;
      ww += w;
    }
    const row = xx * ksize;
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? k[x] / ww : k[x];
      // (int)(±0.5 + v·2^22): round half away from zero.
      weights[row + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    start[xx] = xmin;
    count[xx] = xmax < 0 ? 0 : xmax;
  }
  return { ksize, start, count, weights };
}

/** `clip8(ss)`: Pillow's lookup `clip8_lookups[ss >> 22]`, i.e. clamp to [0, 255]. */
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * The same table with a fixed, even number of taps per output (`taps`), zero weights padding each row; `offset[i]`
 * is the first source index, moved left where needed so that all `taps` reads stay inside the source.
 * Zero-weight taps add exactly 0, so results are unchanged; a constant trip count lets the kernels unroll.
 * Returns null when the source is shorter than `taps` (tiny images take the plain loops).
 */
interface PaddedTable {
  taps: number;
  offset: Int32Array;
  weights: Int32Array;
}

function padTable(table: CoeffTable, inSize: number, multiple: number): PaddedTable | null {
  const out = table.start.length;
  let maxCount = 1;
  for (let i = 0; i < out; i++) maxCount = Math.max(maxCount, table.count[i]);
  const taps = Math.ceil(maxCount / multiple) * multiple;
  if (taps > inSize) return null;
  const offset = new Int32Array(out);
  const weights = new Int32Array(out * taps);
  for (let i = 0; i < out; i++) {
    const first = Math.min(table.start[i], inSize - taps);
    offset[i] = first;
    const shift = table.start[i] - first;
    for (let t = 0; t < table.count[i]; t++) weights[i * taps + shift + t] = table.weights[i * table.ksize + t];
  }
  return { taps, offset, weights };
}

const clamp255 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);

// One output sample from 2/4/6 taps of an interleaved RGB row (stride 3): Pillow's `clip8(2^21 + Σ p·w)`.
const tap2 = (s: Uint8Array, q: number, w0: number, w1: number): number =>
  clamp255((HALF + Math.imul(s[q], w0) + Math.imul(s[q + 3], w1)) >> PRECISION_BITS);
const tap4 = (s: Uint8Array, q: number, w0: number, w1: number, w2: number, w3: number): number =>
  clamp255((HALF + Math.imul(s[q], w0) + Math.imul(s[q + 3], w1) + Math.imul(s[q + 6], w2) + Math.imul(s[q + 9], w3)) >> PRECISION_BITS);
const tap6 = (s: Uint8Array, q: number, w0: number, w1: number, w2: number, w3: number, w4: number, w5: number): number =>
  clamp255(
    (HALF +
      Math.imul(s[q], w0) +
      Math.imul(s[q + 3], w1) +
      Math.imul(s[q + 6], w2) +
      Math.imul(s[q + 9], w3) +
      Math.imul(s[q + 12], w4) +
      Math.imul(s[q + 15], w5)) >>
      PRECISION_BITS,
  );

/**
 * RGB horizontal pass on a padded table: fully unrolled for 2, 4 and 6 taps (upscaling, mild and ~2.3× shrinking
 * with bilinear, i.e. the mSTAR cases), a two-taps-per-step loop otherwise. `out` is `[outHeight, outWidth, 3]`.
 */
function horizontalRgb(
  src: Uint8Array,
  srcStride: number,
  rowOffset: number,
  outHeight: number,
  outWidth: number,
  { taps, offset, weights: w }: PaddedTable,
  out: Uint8Array,
): void {
  for (let y = 0; y < outHeight; y++) {
    const rowIn = (y + rowOffset) * srcStride;
    let o = y * outWidth * 3;
    for (let xx = 0; xx < outWidth; xx++, o += 3) {
      const q = rowIn + offset[xx] * 3;
      const k = xx * taps;
      if (taps === 6) {
        const w0 = w[k], w1 = w[k + 1], w2 = w[k + 2], w3 = w[k + 3], w4 = w[k + 4], w5 = w[k + 5];
        out[o] = tap6(src, q, w0, w1, w2, w3, w4, w5);
        out[o + 1] = tap6(src, q + 1, w0, w1, w2, w3, w4, w5);
        out[o + 2] = tap6(src, q + 2, w0, w1, w2, w3, w4, w5);
      } else if (taps === 4) {
        const w0 = w[k], w1 = w[k + 1], w2 = w[k + 2], w3 = w[k + 3];
        out[o] = tap4(src, q, w0, w1, w2, w3);
        out[o + 1] = tap4(src, q + 1, w0, w1, w2, w3);
        out[o + 2] = tap4(src, q + 2, w0, w1, w2, w3);
      } else if (taps === 2) {
        const w0 = w[k], w1 = w[k + 1];
        out[o] = tap2(src, q, w0, w1);
        out[o + 1] = tap2(src, q + 1, w0, w1);
        out[o + 2] = tap2(src, q + 2, w0, w1);
      } else {
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let j = k, p = q, end = k + taps; j < end; j += 2, p += 6) {
          const w0 = w[j];
          const w1 = w[j + 1];
          s0 = (s0 + Math.imul(src[p], w0) + Math.imul(src[p + 3], w1)) | 0;
          s1 = (s1 + Math.imul(src[p + 1], w0) + Math.imul(src[p + 4], w1)) | 0;
          s2 = (s2 + Math.imul(src[p + 2], w0) + Math.imul(src[p + 5], w1)) | 0;
        }
        out[o] = clamp255(s0 >> PRECISION_BITS);
        out[o + 1] = clamp255(s1 >> PRECISION_BITS);
        out[o + 2] = clamp255(s2 >> PRECISION_BITS);
      }
    }
  }
}

/**
 * Horizontal pass (`ImagingResampleHorizontal_8bpc`): rows `[rowOffset, rowOffset + outHeight)` of `src`
 * (`[*, srcWidth, ch]`) → `[outHeight, outWidth, ch]`. Exact integer sums: `Math.imul` products (< 2^30) and
 * int32 additions, as Pillow's `int` accumulators.
 */
function resampleHorizontal(
  src: Uint8Array,
  srcWidth: number,
  ch: number,
  rowOffset: number,
  outHeight: number,
  table: CoeffTable,
): Uint8Array {
  const outWidth = table.start.length;
  const out = new Uint8Array(outHeight * outWidth * ch);
  const srcStride = srcWidth * ch;
  const outStride = outWidth * ch;
  const padded = ch === 3 ? padTable(table, srcWidth, 2) : null;
  if (padded !== null) {
    horizontalRgb(src, srcStride, rowOffset, outHeight, outWidth, padded, out);
    return out;
  }
  const { ksize, start, count, weights } = table;
  for (let y = 0; y < outHeight; y++) {
    const rowIn = (y + rowOffset) * srcStride;
    for (let xx = 0; xx < outWidth; xx++) {
      const kBase = xx * ksize;
      const n = count[xx];
      const p0 = rowIn + start[xx] * ch;
      const o = y * outStride + xx * ch;
      for (let c = 0; c < ch; c++) {
        let s = HALF;
        let p = p0 + c;
        for (let t = 0; t < n; t++) {
          s = (s + Math.imul(src[p], weights[kBase + t])) | 0;
          p += ch;
        }
        out[o + c] = clip8(s);
      }
    }
  }
  return out;
}

/**
 * Vertical pass (`ImagingResampleVertical_8bpc`): `src` is `[*, width, ch]` whose row 0 is source row
 * `rowOffset`. Each output row is built from four source rows at a time (an int32 row accumulator carries the
 * sum between groups); exact integer sums, so the grouping does not change a bit.
 */
function resampleVertical(
  src: Uint8Array,
  width: number,
  ch: number,
  rowOffset: number,
  table: CoeffTable,
): Uint8Array {
  const outHeight = table.start.length;
  const stride = width * ch;
  const out = new Uint8Array(outHeight * stride);
  const acc = new Int32Array(stride);
  const { ksize, start, count, weights } = table;
  for (let yy = 0; yy < outHeight; yy++) {
    const n = count[yy];
    const o = yy * stride;
    const first = start[yy] - rowOffset;
    for (let t0 = 0; t0 < n || t0 === 0; t0 += 4) {
      // Taps t0..t0+3 (missing ones get weight 0 and re-read the first row, which adds exactly 0).
      const k = yy * ksize + t0;
      const w0 = t0 < n ? weights[k] : 0;
      const w1 = t0 + 1 < n ? weights[k + 1] : 0;
      const w2 = t0 + 2 < n ? weights[k + 2] : 0;
      const w3 = t0 + 3 < n ? weights[k + 3] : 0;
      const r0 = (first + Math.min(t0, Math.max(n - 1, 0))) * stride;
      const r1 = t0 + 1 < n ? r0 + stride : r0;
      const r2 = t0 + 2 < n ? r1 + stride : r0;
      const r3 = t0 + 3 < n ? r2 + stride : r0;
      const initial = t0 === 0;
      const last = t0 + 4 >= n;
      if (initial && last) {
        for (let i = 0; i < stride; i++) {
          const v =
            (HALF + Math.imul(src[r0 + i], w0) + Math.imul(src[r1 + i], w1) + Math.imul(src[r2 + i], w2) + Math.imul(src[r3 + i], w3)) >>
            PRECISION_BITS;
          out[o + i] = v < 0 ? 0 : v > 255 ? 255 : v;
        }
      } else if (initial) {
        for (let i = 0; i < stride; i++) {
          acc[i] = (HALF + Math.imul(src[r0 + i], w0) + Math.imul(src[r1 + i], w1) + Math.imul(src[r2 + i], w2) + Math.imul(src[r3 + i], w3)) | 0;
        }
      } else if (last) {
        for (let i = 0; i < stride; i++) {
          const v =
            (acc[i] + Math.imul(src[r0 + i], w0) + Math.imul(src[r1 + i], w1) + Math.imul(src[r2 + i], w2) + Math.imul(src[r3 + i], w3)) >>
            PRECISION_BITS;
          out[o + i] = v < 0 ? 0 : v > 255 ? 255 : v;
        }
      } else {
        for (let i = 0; i < stride; i++) {
          acc[i] = (acc[i] + Math.imul(src[r0 + i], w0) + Math.imul(src[r1 + i], w1) + Math.imul(src[r2 + i], w2) + Math.imul(src[r3 + i], w3)) | 0;
        }
      }
    }
  }
  return out;
}

function checkImage(name: string, image: Image8): void {
  if (image === null || typeof image !== 'object') throw invalidArgument(name, 'an image {width, height, channels, data}', image);
  checkPositiveInteger(`${name}.width`, image.width);
  checkPositiveInteger(`${name}.height`, image.height);
  checkPositiveInteger(`${name}.channels`, image.channels);
  if (image.channels > 4) throw rangeError('ERR_ARGUMENT', `Expected ${name}.channels to be 1..4 but received ${image.channels}`);
  if (!(image.data instanceof Uint8Array)) throw invalidArgument(`${name}.data`, 'a Uint8Array', image.data);
  const expected = image.width * image.height * image.channels;
  if (image.data.length !== expected) {
    throw rangeError(
      'ERR_SHAPE',
      `Expected ${name}.data to hold width·height·channels = ${expected} bytes but it holds ${image.data.length}`,
    );
  }
}

/**
 * Pillow's `ImagingResampleInner` for 8-bit images: `image` → `[height, width, channels]`.
 * `box` is the float32 source region; `needH`/`needV` as Pillow decides them.
 */
function resampleInner(
  image: Image8,
  width: number,
  height: number,
  filter: ResampleFilter,
  box: readonly [number, number, number, number],
): Image8 {
  const ch = image.channels;
  const needHorizontal = width !== image.width || box[0] !== 0 || box[2] !== width;
  const needVertical = height !== image.height || box[1] !== 0 || box[3] !== height;
  const vert = precomputeCoeffs(image.height, box[1], box[3], height, filter);
  const firstRow = vert.start[0];
  const lastRow = vert.start[height - 1] + vert.count[height - 1];
  let data = image.data;
  let curWidth = image.width;
  let rowOffset = 0;
  if (needHorizontal) {
    const horiz = precomputeCoeffs(image.width, box[0], box[2], width, filter);
    data = resampleHorizontal(data, image.width, ch, firstRow, lastRow - firstRow, horiz);
    curWidth = width;
    rowOffset = firstRow;
  }
  if (needVertical) {
    data = resampleVertical(data, curWidth, ch, rowOffset, vert);
  } else if (!needHorizontal) {
    data = data.slice();
  }
  return { width, height, channels: ch, data };
}

/**
 * `PIL.Image.resize((width, height), filter, box)` on an 8-bit image, bit-exact.
 *
 * @param image  `[H, W, C]` uint8, C ∈ 1..4. Note: Pillow resizes RGBA/LA in premultiplied form; this function
 *               treats every band alike (what Pillow does for RGB, L, CMYK, RGBX).
 * @returns      `[height, width, C]` uint8.
 */
export function resizePil(image: Image8, width: number, height: number, options: ResizeOptions = {}): Image8 {
  checkImage('image', image);
  checkPositiveInteger('width', width);
  checkPositiveInteger('height', height);
  const filter = options.filter ?? 'bilinear';
  if (!(filter in FILTERS)) throw invalidArgument('options.filter', `one of ${Object.keys(FILTERS).join(', ')}`, filter);
  const box = options.box ?? ([0, 0, image.width, image.height] as const);
  if (!Array.isArray(box) || box.length !== 4 || !box.every((v) => typeof v === 'number' && Number.isFinite(v))) {
    throw invalidArgument('options.box', 'an array of four finite numbers [x0, y0, x1, y1]', box);
  }
  if (box[0] < 0 || box[1] < 0 || box[2] > image.width || box[3] > image.height || box[2] < box[0] || box[3] < box[1]) {
    throw rangeError('ERR_ARGUMENT', `Expected options.box [${box.join(', ')}] to lie within (0, 0, ${image.width}, ${image.height})`);
  }
  const fbox = [Math.fround(box[0]), Math.fround(box[1]), Math.fround(box[2]), Math.fround(box[3])] as const;
  if (width === image.width && height === image.height && fbox[0] === 0 && fbox[1] === 0 && fbox[2] === width && fbox[3] === height) {
    return { width, height, channels: image.channels, data: image.data.slice() };
  }
  const tallFirst = options.tallImagesVerticalFirst ?? true;
  if (tallFirst && image.height > image.width * 100 && height < image.height) {
    const vertical = resampleInner(image, image.width, height, filter, [0, fbox[1], image.width, fbox[3]]);
    return resampleInner(vertical, width, height, filter, [fbox[0], 0, fbox[2], height]);
  }
  return resampleInner(image, width, height, filter, fbox);
}

/**
 * torchvision's output size for `Resize(size)` with an int `size` (`_compute_resized_output_size`, `max_size`
 * optional): the shorter side becomes `size`, the longer `int(size · long / short)` (Python float division,
 * truncated); with `maxSize`, a longer side over `maxSize` is capped and the short side rescaled.
 * Square images stay square.
 */
export function torchvisionResizeSize(
  width: number,
  height: number,
  size: number,
  maxSize?: number,
): { width: number; height: number } {
  checkPositiveInteger('width', width);
  checkPositiveInteger('height', height);
  checkPositiveInteger('size', size);
  const widthIsShort = width <= height;
  const short = widthIsShort ? width : height;
  const long = widthIsShort ? height : width;
  let newShort = size;
  let newLong = Math.trunc((size * long) / short);
  if (maxSize !== undefined) {
    checkPositiveInteger('maxSize', maxSize);
    if (maxSize <= size) {
      throw rangeError('ERR_ARGUMENT', `Expected maxSize (${maxSize}) to be greater than size (${size})`);
    }
    if (newLong > maxSize) {
      newShort = Math.trunc((maxSize * newShort) / newLong);
      newLong = maxSize;
    }
  }
  return widthIsShort ? { width: newShort, height: newLong } : { width: newLong, height: newShort };
}

/**
 * torchvision `transforms.Resize(size)` (int size, BILINEAR, antialias) applied to a PIL image:
 * computes the output size with {@link torchvisionResizeSize}, returns a copy when the size is unchanged
 * (torchvision returns the image itself), else `PIL.Image.resize(..., BILINEAR)`.
 */
export function resizeTorchvision(image: Image8, size: number, options: { maxSize?: number; filter?: ResampleFilter } = {}): Image8 {
  checkImage('image', image);
  const target = torchvisionResizeSize(image.width, image.height, size, options.maxSize);
  if (target.width === image.width && target.height === image.height) {
    return { ...image, data: image.data.slice() };
  }
  return resizePil(image, target.width, target.height, { filter: options.filter ?? 'bilinear' });
}
