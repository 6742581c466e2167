/**
 * Absolute position-embedding resampling, exactly as timm's `resample_abs_pos_embed` does it:
 * `F.interpolate(grid, size=(nh, nw), mode='bicubic', antialias=True, align_corners=False)` in float32
 * (timm casts the embedding to float32 before interpolating).
 *
 * Reference: timm `layers/pos_embed.py` (`resample_abs_pos_embed`) and PyTorch's CPU kernel
 * `aten/src/ATen/native/cpu/UpSampleKernel.cpp` (`separable_upsample_generic_Nd_kernel_impl`,
 * `HelperInterpBase::_compute_indices_min_size_weights_aa`, `HelperInterpCubic::aa_filter`) with
 * `aten/src/ATen/native/UpSample.h` (`area_pixel_compute_scale`, `cubic_convolution1/2`).
 *
 * PyTorch's float path, step for step (every quantity is a C++ `float` unless said otherwise):
 *  - scale = in/out; support = 2·scale when shrinking (scale ≥ 1) else 2; taps ≤ 2·ceil(support) + 1;
 *    invscale = 1/scale when shrinking (computed in double, stored as float) else 1.
 *  - center = scale·(i + 0.5); xmin = max(int64(float(center − support) + 0.5), 0);
 *    xsize = min(int64(float(center + support) + 0.5), in) − xmin.
 *  - w_j = cubic_a=−0.5(float((float(j + xmin − center) + 0.5)·invscale)), cubic evaluated in float;
 *    the weights are normalised by their float sum.
 *  - Separable: the last (W) axis first, then H; an axis whose size does not change is skipped.
 *    Each output is `t0·w0 + t1·w1 + …` accumulated left to right in float.
 * PyTorch's x86-64 wheels compile this file for AVX2/AVX512 with GCC (`-ffp-contract=fast`, vectorizer on); the
 * generated code, which we reproduce, rounds as follows (verified bit for bit against torch 2.13, both the AVX2 and
 * the AVX512 kernels, which agree):
 *  - the cubic polynomial is evaluated with fused multiply-adds (one rounding per `a·b + c`);
 *  - the tap loop `out = t0·w0; for j ≥ 1: out += tj·wj` is vectorized 4 products at a time with the sums kept in
 *    order: for j = 1 … 4·⌊(n−1)/4⌋ each product is rounded, then added; the remaining (n−1) mod 4 taps run in the
 *    scalar epilogue, fused (`fma(tj, wj, out)`).
 * `fusedMultiplyAdd: false` rounds every operation separately instead (PyTorch's DEFAULT, non-AVX kernel).
 * The two differ by a few float32 ulps (≤ 3e-6 on unit-scale embeddings).
 */
import { checkPositiveInteger, invalidArgument, rangeError } from '../errors.js';

const f32 = Math.fround;

/**
 * Single-precision fused multiply-add `fl32(a·b + c)` with one rounding, for float32 inputs.
 * The product of two float32 values is exact in double; the double sum may round once more, which matters only
 * when it lands exactly on a float32 midpoint: then the exact sum's residual (TwoSum) breaks the tie.
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f32(s);
  if (r === s) return r;
  const m = 2 * s - r; // the other float32 neighbour if s is exactly their midpoint
  if (f32(m) !== m || m === r) return r;
  const bp = s - c;
  const err = p - bp + (c - (s - bp)); // exact: p + c − s
  if (err === 0) return r;
  return err > 0 ? Math.max(r, m) : Math.min(r, m);
}

/** PyTorch `aa_filter<float>` for bicubic (Keys, a = −0.5), float32 with FMA contraction. */
function cubicAaFused(xIn: number): number {
  const x = xIn < 0 ? -xIn : xIn;
  // ((A + 2)·x − (A + 3))·x·x + 1 with A + 2 = 1.5, A + 3 = 2.5.
  if (x < 1.0) return fmaf(f32(fmaf(1.5, x, -2.5) * x), x, 1);
  // ((A·x − 5A)·x + 8A)·x − 4A with 5A = −2.5, 8A = −4, 4A = −2.
  if (x < 2.0) return fmaf(fmaf(fmaf(-0.5, x, 2.5), x, -4), x, 2);
  return 0.0;
}

/** The same polynomial with every operation rounded separately (a build without FMA contraction). */
function cubicAaUnfused(xIn: number): number {
  const x = xIn < 0 ? -xIn : xIn;
  if (x < 1.0) return f32(f32(f32(f32(f32(1.5 * x) - 2.5) * x) * x) + 1);
  if (x < 2.0) return f32(f32(f32(f32(f32(f32(-0.5 * x) + 2.5) * x) - 4) * x) + 2);
  return 0.0;
}

/** Per-output taps of one axis: `weights` is `[out, ksize]` float32, `start`/`count` the source range. */
interface AxisTaps {
  ksize: number;
  start: Int32Array;
  count: Int32Array;
  weights: Float32Array;
}

/** `_compute_index_ranges_weights<float>` with antialias for the cubic filter. */
function antialiasedCubicTaps(inSize: number, outSize: number, fused: boolean): AxisTaps {
  const cubic = fused ? cubicAaFused : cubicAaUnfused;
  const scale = f32(inSize / outSize);
  const support = scale >= 1.0 ? f32(2 * scale) : 2.0;
  const ksize = Math.ceil(support) * 2 + 1;
  const invscale = scale >= 1.0 ? f32(1.0 / scale) : 1.0;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float32Array(outSize * ksize);
  for (let i = 0; i < outSize; i++) {
    const center = f32(scale * (i + 0.5));
    const xmin = Math.max(Math.trunc(f32(center - support) + 0.5), 0);
    let xsize = Math.min(Math.trunc(f32(center + support) + 0.5), inSize) - xmin;
    xsize = Math.min(Math.max(xsize, 0), ksize);
    const row = i * ksize;
    let total = 0;
    for (let j = 0; j < xsize; j++) {
      const w = cubic(f32((f32(j + xmin - center) + 0.5) * invscale));
      weights[row + j] = w;
      total = f32(total + w);
    }
    if (total !== 0) {
      for (let j = 0; j < xsize; j++) weights[row + j] = f32(weights[row + j] / total);
    }
    start[i] = xmin;
    count[i] = xsize;
  }
  return { ksize, start, count, weights };
}

/**
 * One separable pass over a `[outer, inner_in, C]`-strided tensor along its middle axis:
 * `src` is `[outer, inSize, inner]`, result `[outer, outSize, inner]` (inner = the contiguous trailing block).
 */
function resampleAxis(
  src: Float32Array,
  outer: number,
  inSize: number,
  inner: number,
  taps: AxisTaps,
  fused: boolean,
): Float32Array {
  const outSize = taps.start.length;
  const out = new Float32Array(outer * outSize * inner);
  const { ksize, start, count, weights } = taps;
  for (let o = 0; o < outer; o++) {
    const srcBase = o * inSize * inner;
    for (let i = 0; i < outSize; i++) {
      const dst = (o * outSize + i) * inner;
      const n = count[i];
      if (n === 0) continue;
      const kBase = i * ksize;
      const w0 = weights[kBase];
      let s = srcBase + start[i] * inner;
      for (let c = 0; c < inner; c++) out[dst + c] = f32(src[s + c] * w0);
      // Taps [1, vectorEnd) as the 4-wide vector body (product rounded, then added); the rest fused.
      const vectorEnd = fused ? 1 + 4 * Math.floor((n - 1) / 4) : n;
      for (let j = 1; j < n; j++) {
        const w = weights[kBase + j];
        s += inner;
        if (j < vectorEnd) {
          // Float32Array stores round the (exact-in-double) sum of two floats: one float32 addition.
          for (let c = 0; c < inner; c++) out[dst + c] += f32(src[s + c] * w);
        } else {
          for (let c = 0; c < inner; c++) out[dst + c] = fmaf(src[s + c], w, out[dst + c]);
        }
      }
    }
  }
  return out;
}

function checkSize(name: string, size: unknown): [number, number] {
  if (!Array.isArray(size) || size.length !== 2) throw invalidArgument(name, 'a pair [rows, cols]', size);
  checkPositiveInteger(`${name}[0]`, size[0]);
  checkPositiveInteger(`${name}[1]`, size[1]);
  return [size[0], size[1]];
}

export interface ResampleOptions {
  /**
   * Round like PyTorch's AVX2/AVX512 CPU kernels (default true: fused multiply-adds where GCC contracted them);
   * false rounds every operation separately like the DEFAULT (non-AVX) kernel. They differ by a few float32 ulps.
   */
  fusedMultiplyAdd?: boolean;
}

/**
 * Resamples a position-embedding grid like `F.interpolate(mode='bicubic', antialias=True, align_corners=False)`
 * on the `[1, C, gh, gw]` view timm makes of it.
 *
 * @param grid      `[gh, gw, C]` float32 (timm's `pos_embed[:, prefix:]` of shape `[1, gh·gw, C]`, row-major).
 * @param oldSize   `[gh, gw]`.
 * @param newSize   `[nh, nw]`.
 * @param channels  C (embedding dim).
 * @returns         `[nh, nw, C]` float32; a copy of `grid` when the sizes are equal.
 */
export function resamplePosEmbed(
  grid: Float32Array,
  oldSize: readonly [number, number],
  newSize: readonly [number, number],
  channels: number,
  options: ResampleOptions = {},
): Float32Array {
  if (!(grid instanceof Float32Array)) throw invalidArgument('grid', 'a Float32Array', grid);
  const [gh, gw] = checkSize('oldSize', oldSize);
  const [nh, nw] = checkSize('newSize', newSize);
  checkPositiveInteger('channels', channels);
  if (grid.length !== gh * gw * channels) {
    throw rangeError(
      'ERR_SHAPE',
      `Expected grid to hold oldSize[0]·oldSize[1]·channels = ${gh}·${gw}·${channels} = ${gh * gw * channels} floats but it holds ${grid.length}`,
    );
  }
  const fused = options.fusedMultiplyAdd ?? true;
  let data = grid;
  // Width (the contiguous spatial axis of the NCHW view) first, then height, as PyTorch does.
  if (nw !== gw) data = resampleAxis(data, gh, gw, channels, antialiasedCubicTaps(gw, nw, fused), fused);
  if (nh !== gh) data = resampleAxis(data, 1, gh, nw * channels, antialiasedCubicTaps(gh, nh, fused), fused);
  return data === grid ? grid.slice() : data;
}

/**
 * timm `resample_abs_pos_embed(posemb, new_size, old_size, num_prefix_tokens)` on a full embedding table:
 * prefix tokens ([CLS], registers) pass through, the grid is resampled with {@link resamplePosEmbed}.
 * As timm 1.0.29 with `old_size` given: unchanged (here: a copy) when `newSize` equals `oldSize`.
 *
 * @param posEmbed  `[prefix + gh·gw, C]` float32 (timm's `[1, prefix + gh·gw, C]`).
 * @param newSize   `[nh, nw]`; `oldSize` `[gh, gw]` (timm's `patch_embed.grid_size`).
 * @returns         `[prefix + nh·nw, C]` float32.
 */
export function resampleAbsPosEmbed(
  posEmbed: Float32Array,
  newSize: readonly [number, number],
  oldSize: readonly [number, number],
  channels: number,
  numPrefixTokens = 1,
  options: ResampleOptions = {},
): Float32Array {
  if (!(posEmbed instanceof Float32Array)) throw invalidArgument('posEmbed', 'a Float32Array', posEmbed);
  const [gh, gw] = checkSize('oldSize', oldSize);
  const [nh, nw] = checkSize('newSize', newSize);
  checkPositiveInteger('channels', channels);
  if (!(Number.isSafeInteger(numPrefixTokens) && numPrefixTokens >= 0)) {
    throw invalidArgument('numPrefixTokens', 'a non-negative integer', numPrefixTokens);
  }
  if (posEmbed.length !== (numPrefixTokens + gh * gw) * channels) {
    throw rangeError(
      'ERR_SHAPE',
      `Expected posEmbed to be [${numPrefixTokens} + ${gh}·${gw}, ${channels}] = ${(numPrefixTokens + gh * gw) * channels} floats but it holds ${posEmbed.length}`,
    );
  }
  if (nh === gh && nw === gw) return posEmbed.slice();
  const prefix = numPrefixTokens * channels;
  const grid = resamplePosEmbed(posEmbed.subarray(prefix), [gh, gw], [nh, nw], channels, options);
  const out = new Float32Array(prefix + grid.length);
  out.set(posEmbed.subarray(0, prefix), 0);
  out.set(grid, prefix);
  return out;
}
