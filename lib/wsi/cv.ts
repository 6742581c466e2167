/**
 * The 8-bit image operations CLAM's tissue segmentation takes from OpenCV, written to
 * give OpenCV's exact outputs (checked against cv2 in test/segment.test.ts):
 *
 * - `rgbToHsv`: cv2.cvtColor(RGB2HSV) for uint8 — H in [0, 180), S and V in [0, 255],
 *   OpenCV's fixed-point arithmetic (color_hsv: hsv_shift 12, rounded division tables).
 * - `medianBlur`: cv2.medianBlur, odd square window, BORDER_REPLICATE.
 * - `threshold` / `otsuThreshold`: cv2.threshold THRESH_BINARY (dst = src > t ? maxval : 0)
 *   and THRESH_OTSU's threshold choice (thresh.cpp getThreshVal_Otsu_8u, including its
 *   FLT_EPSILON guards).
 * - `dilate` / `erode` / `morphologyClose`: rectangular k×k kernel, default anchor
 *   (k/2 rounded down, so even k shifts like OpenCV does), default border (pixels
 *   outside the image never win the max or the min).
 *
 * Images are single-channel [height, width] uint8 unless stated; RGB is [h, w, 3].
 */

const HSV_SHIFT = 12;
/** OpenCV's division tables: round((255 << 12) / v) and round((180 << 12) / (6 diff)). */
const S_DIV = new Int32Array(256);
const H_DIV = new Int32Array(256);
for (let i = 1; i < 256; i++) {
  S_DIV[i] = Math.round((255 << HSV_SHIFT) / i);
  H_DIV[i] = Math.round((180 << HSV_SHIFT) / (6 * i));
}
const HSV_ROUND = 1 << (HSV_SHIFT - 1);

/** RGB [N, 3] → HSV [N, 3] exactly as cv2.cvtColor(img, cv2.COLOR_RGB2HSV) for uint8. */
export function rgbToHsv(rgb: Uint8Array): Uint8Array {
  if (rgb.length % 3 !== 0) throw new RangeError(`rgb length ${rgb.length} is not a multiple of 3`);
  const out = new Uint8Array(rgb.length);
  for (let i = 0; i < rgb.length; i += 3) {
    const r = rgb[i];
    const g = rgb[i + 1];
    const b = rgb[i + 2];
    const v = Math.max(r, g, b);
    const diff = v - Math.min(r, g, b);
    let h: number;
    if (v === r) h = g - b;
    else if (v === g) h = b - r + 2 * diff;
    else h = r - g + 4 * diff;
    h = (h * H_DIV[diff] + HSV_ROUND) >> HSV_SHIFT;
    if (h < 0) h += 180;
    out[i] = h;
    out[i + 1] = (diff * S_DIV[v] + HSV_ROUND) >> HSV_SHIFT;
    out[i + 2] = v;
  }
  return out;
}

/** The S channel of `rgbToHsv` alone: RGB [N, 3] → [N]. */
export function saturation(rgb: Uint8Array): Uint8Array {
  if (rgb.length % 3 !== 0) throw new RangeError(`rgb length ${rgb.length} is not a multiple of 3`);
  const out = new Uint8Array(rgb.length / 3);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j++) {
    const r = rgb[i];
    const g = rgb[i + 1];
    const b = rgb[i + 2];
    const v = r > g ? (r > b ? r : b) : g > b ? g : b;
    const m = r < g ? (r < b ? r : b) : g < b ? g : b;
    out[j] = ((v - m) * S_DIV[v] + HSV_ROUND) >> HSV_SHIFT;
  }
  return out;
}

function checkImage(src: Uint8Array, width: number, height: number): void {
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width < 1 || height < 1 || src.length !== width * height) {
    throw new RangeError(`image has ${src.length} pixels, expected ${width}×${height}`);
  }
}

/**
 * cv2.medianBlur(src, ksize) for uint8: the median of the ksize×ksize window, borders
 * replicated. Huang's sliding histogram with 16 coarse bins: O(ksize) updates per pixel.
 */
export function medianBlur(src: Uint8Array, width: number, height: number, ksize: number): Uint8Array {
  checkImage(src, width, height);
  if (!Number.isSafeInteger(ksize) || ksize < 1 || ksize % 2 === 0) throw new RangeError(`ksize must be odd and positive, got ${ksize}`);
  if (ksize === 1) return src.slice();
  const r = ksize >> 1;
  const rank = (ksize * ksize) >> 1; // 0-based rank of the median
  const out = new Uint8Array(width * height);
  const fine = new Int32Array(256);
  const coarse = new Int32Array(16);
  const clampX = (x: number): number => (x < 0 ? 0 : x >= width ? width - 1 : x);
  const rows = new Int32Array(ksize);
  for (let y = 0; y < height; y++) {
    for (let k = 0; k < ksize; k++) {
      const yy = y - r + k;
      rows[k] = (yy < 0 ? 0 : yy >= height ? height - 1 : yy) * width;
    }
    fine.fill(0);
    coarse.fill(0);
    for (let dx = -r; dx <= r; dx++) {
      const x = clampX(dx);
      for (let k = 0; k < ksize; k++) {
        const v = src[rows[k] + x];
        fine[v]++;
        coarse[v >> 4]++;
      }
    }
    for (let x = 0; ; x++) {
      // Median: walk coarse bins, then the fine bins inside the one that holds the rank.
      let acc = 0;
      let c = 0;
      while (acc + coarse[c] <= rank) acc += coarse[c++];
      let v = c << 4;
      while (acc + fine[v] <= rank) acc += fine[v++];
      out[y * width + x] = v;
      if (x === width - 1) break;
      const xOut = clampX(x - r);
      const xIn = clampX(x + r + 1);
      if (xOut !== xIn) {
        for (let k = 0; k < ksize; k++) {
          const a = src[rows[k] + xOut];
          fine[a]--;
          coarse[a >> 4]--;
          const b = src[rows[k] + xIn];
          fine[b]++;
          coarse[b >> 4]++;
        }
      }
    }
  }
  return out;
}

/** cv2.threshold(src, thresh, maxval, THRESH_BINARY)[1]: src > thresh ? maxval : 0. */
export function threshold(src: Uint8Array, thresh: number, maxval = 255): Uint8Array {
  const out = new Uint8Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] > thresh ? maxval : 0;
  return out;
}

/** The threshold cv2.threshold(..., THRESH_OTSU) picks for uint8 `src` (maximum between-class variance). */
export function otsuThreshold(src: Uint8Array): number {
  const hist = new Float64Array(256);
  for (let i = 0; i < src.length; i++) hist[src[i]]++;
  const scale = 1 / src.length;
  let mu = 0;
  for (let i = 0; i < 256; i++) mu += i * hist[i];
  mu *= scale;
  const FLT_EPSILON = 1.1920928955078125e-7;
  let mu1 = 0;
  let q1 = 0;
  let maxSigma = 0;
  let maxVal = 0;
  for (let i = 0; i < 256; i++) {
    const p = hist[i] * scale;
    mu1 *= q1;
    q1 += p;
    const q2 = 1 - q1;
    if (Math.min(q1, q2) < FLT_EPSILON || Math.max(q1, q2) > 1 - FLT_EPSILON) continue;
    mu1 = (mu1 + i * p) / q1;
    const mu2 = (mu - q1 * mu1) / q2;
    const sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2);
    if (sigma > maxSigma) {
      maxSigma = sigma;
      maxVal = i;
    }
  }
  return maxVal;
}

/** One row of a max/min filter: out[i] = max/min of src over [i + lo, i + hi] ∩ [0, n), for the n pixels from `start`. */
function lineMorph(src: Uint8Array, out: Uint8Array, start: number, n: number, lo: number, hi: number, isMax: boolean): void {
  for (let i = 0; i < n; i++) {
    const a = i + lo < 0 ? 0 : i + lo;
    const b = i + hi >= n ? n - 1 : i + hi;
    let m = src[start + a];
    if (isMax) {
      for (let k = a + 1; k <= b; k++) if (src[start + k] > m) m = src[start + k];
    } else {
      for (let k = a + 1; k <= b; k++) if (src[start + k] < m) m = src[start + k];
    }
    out[start + i] = m;
  }
}

/** Max (dilate) or min (erode) over window [x − a, x + k − 1 − a] per axis, a = ⌊k/2⌋, outside pixels ignored. */
function rectMorph(src: Uint8Array, width: number, height: number, ksize: number, isMax: boolean): Uint8Array {
  checkImage(src, width, height);
  if (!Number.isSafeInteger(ksize) || ksize < 1) throw new RangeError(`ksize must be a positive integer, got ${ksize}`);
  if (ksize === 1) return src.slice();
  const a = ksize >> 1;
  const lo = -a;
  const hi = ksize - 1 - a;
  const tmp = new Uint8Array(width * height);
  const out = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) lineMorph(src, tmp, y * width, width, lo, hi, isMax);
  // Columns, row by row so memory is walked in order: out row y = max/min of tmp rows y + lo .. y + hi.
  for (let y = 0; y < height; y++) {
    const r0 = Math.max(0, y + lo);
    const r1 = Math.min(height - 1, y + hi);
    const row = out.subarray(y * width, (y + 1) * width);
    row.set(tmp.subarray(r0 * width, (r0 + 1) * width));
    for (let r = r0 + 1; r <= r1; r++) {
      const other = tmp.subarray(r * width, (r + 1) * width);
      if (isMax) {
        for (let x = 0; x < width; x++) if (other[x] > row[x]) row[x] = other[x];
      } else {
        for (let x = 0; x < width; x++) if (other[x] < row[x]) row[x] = other[x];
      }
    }
  }
  return out;
}

/** cv2.dilate(src, np.ones((k, k))). */
export function dilate(src: Uint8Array, width: number, height: number, ksize: number): Uint8Array {
  return rectMorph(src, width, height, ksize, true);
}

/** cv2.erode(src, np.ones((k, k))). */
export function erode(src: Uint8Array, width: number, height: number, ksize: number): Uint8Array {
  return rectMorph(src, width, height, ksize, false);
}

/** cv2.morphologyEx(src, MORPH_CLOSE, np.ones((k, k))): dilate, then erode with the same kernel and anchor. */
export function morphologyClose(src: Uint8Array, width: number, height: number, ksize: number): Uint8Array {
  return erode(dilate(src, width, height, ksize), width, height, ksize);
}
