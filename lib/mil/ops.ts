/**
 * Differentiable MIL ops over the fused kernels: attention pooling over ragged bags
 * (cpp/ops/bag_pool.cc), the instance projection Linear → ReLU → Dropout that saves
 * one byte per output instead of its input and output, and the two token-grid pieces
 * of TransMIL (square padding with the [CLS] token, PPEG). Each op records one node on
 * the autograd tape with a hand-written backward; shapes are in the signatures.
 */
import { checkNumberInRange, invalidArgument, rangeError } from '../errors.js';
import { Activation, native } from '../native.js';
import { gelu } from '../ops/elementwise.js';
import { linear, matmul } from '../ops/linalg.js';
import { dropout, softmax } from '../ops/nn.js';
import { stack } from '../ops/shape.js';
import { checkTensor, elementsFrom, withContiguous } from '../ops/util.js';
import { nextSeed } from '../random.js';
import { isGradEnabled, noGrad, recordOp, shapeString, Tensor } from '../tensor.js';

// ---------------------------------------------------------------------------
// Bags
// ---------------------------------------------------------------------------

/** How instances [T] are grouped into bags: offsets [B + 1] and an optional validity mask [T]. */
export interface BagLayout {
  /** offsets[b] .. offsets[b + 1] are bag b's instances; offsets[0] = 0, offsets[B] = T. */
  offsets: Int32Array;
  /** 1 = real instance, 0 = padding (no attention, no gradient); null = all real. */
  mask: Uint8Array | null;
}

/** One bag of T instances. */
export function singleBag(total: number): BagLayout {
  return { offsets: Int32Array.from([0, total]), mask: null };
}

/** Bags of the given sizes, concatenated. */
export function raggedBags(sizes: readonly number[]): BagLayout {
  const offsets = new Int32Array(sizes.length + 1);
  sizes.forEach((s, i) => {
    if (!Number.isSafeInteger(s) || s < 0) throw invalidArgument(`sizes[${i}]`, 'a non-negative integer', s);
    offsets[i + 1] = offsets[i] + s;
  });
  return { offsets, mask: null };
}

/** A padded batch [B, N] with a key-padding style mask (1 = real instance). */
export function paddedBags(batch: number, length: number, mask: Uint8Array | null): BagLayout {
  if (mask !== null && mask.length !== batch * length) throw rangeError('ERR_SHAPE', `mask has ${mask.length} entries, needs B·N = ${batch * length}`);
  const offsets = new Int32Array(batch + 1);
  for (let b = 0; b <= batch; b++) offsets[b] = b * length;
  return { offsets, mask };
}

function checkLayout(layout: BagLayout, total: number): void {
  if (!(layout.offsets instanceof Int32Array) || layout.offsets.length < 2) throw invalidArgument('layout.offsets', 'an Int32Array [B + 1] with B >= 1', layout.offsets);
  const o = layout.offsets;
  if (o[0] !== 0 || o[o.length - 1] !== total) throw rangeError('ERR_SHAPE', `layout.offsets must run from 0 to T = ${total}, got ${o[0]} … ${o[o.length - 1]}`);
  for (let b = 1; b < o.length; b++) if (o[b] < o[b - 1]) throw rangeError('ERR_RANGE', `layout.offsets must not decrease (offsets[${b}] = ${o[b]} < ${o[b - 1]})`);
  if (layout.mask !== null && (!(layout.mask instanceof Uint8Array) || layout.mask.length !== total)) {
    throw invalidArgument('layout.mask', `a Uint8Array [${total}] or null`, layout.mask);
  }
}

export interface BagPoolResult {
  /** [B, K, L] attention-weighted means. */
  pooled: Tensor;
  /** [T, K] softmax weights (0 on masked instances). Not differentiable; for heatmaps. */
  attention: Tensor;
}

/**
 * Attention pooling (Ilse et al. 2018, eq. 8–9; mSTAR `DAttention.forward`:
 * `softmax(Aᵀ, dim=-1) @ feature`), fused: scores [T, K] (or [T]) and instances
 * h [T, L] → pooled [B, K, L] with the softmax taken over each bag's valid instances.
 * Memory O(T·K) besides h; backward gives gradients for both scores and h.
 */
export function bagAttentionPool(scores: Tensor, h: Tensor, layout: BagLayout = singleBag(h.shape[0] ?? 0)): BagPoolResult {
  checkTensor('scores', scores);
  checkTensor('h', h);
  if (h.ndim !== 2) throw rangeError('ERR_SHAPE', `bagAttentionPool: h must be [T, L], got ${shapeString(h.shape)}`);
  const [T, L] = h.shape;
  const s2 = scores.ndim === 1 ? scores.reshape([scores.shape[0], 1]) : scores;
  if (s2.ndim !== 2 || s2.shape[0] !== T) throw rangeError('ERR_SHAPE', `bagAttentionPool: scores must be [${T}, K] or [${T}], got ${shapeString(scores.shape)}`);
  checkLayout(layout, T);
  const K = s2.shape[1];
  const B = layout.offsets.length - 1;
  const attention = Tensor.empty([T, K]);
  const pooled = Tensor.empty([B, K, L]);
  // h is read in place when its rows are contiguous (a column slice of a wider buffer is fine).
  const hRows = h.strides[1] === 1 || L <= 1 ? h : noGrad(() => h.contiguous());
  const hStride = T <= 1 ? Math.max(L, 1) : Math.max(hRows.strides[0], L);
  const sc = noGrad(() => s2.contiguous());
  if (T > 0 || B > 0) {
    native().bagPoolForward(sc.data(), elementsFrom(hRows), layout.offsets, layout.mask, attention.data(), pooled.data(), B, T, K, L, hStride);
  }
  if (sc !== s2) sc.dispose();
  const out = recordOp('bagAttentionPool', [s2, h], pooled, (g) => {
    const gs = s2.requiresGrad ? Tensor.empty([T, K]) : null;
    const gh = h.requiresGrad ? Tensor.empty([T, L]) : null;
    withContiguous(g, (gc) => {
      if (T > 0) {
        native().bagPoolBackward(elementsFrom(hRows), layout.offsets, layout.mask, attention.data(), pooled.data(), gc.data(),
          gh?.data() ?? null, gs?.data() ?? null, B, T, K, L, hStride);
      }
    });
    return [gs, gh];
  });
  if (hRows !== h && !out.requiresGrad) hRows.dispose();
  return { pooled: out, attention };
}

/**
 * The same pooling composed from engine ops (per bag: softmax over instances, then
 * Aᵀ·h): the unfused anchor for tests and benchmarks. No mask support beyond offsets.
 */
export function bagAttentionPoolUnfused(scores: Tensor, h: Tensor, layout: BagLayout = singleBag(h.shape[0] ?? 0)): Tensor {
  checkLayout(layout, h.shape[0]);
  if (layout.mask !== null) throw rangeError('ERR_UNSUPPORTED', 'bagAttentionPoolUnfused: masks are not supported');
  const s2 = scores.ndim === 1 ? scores.reshape([scores.shape[0], 1]) : scores;
  const bags: Tensor[] = [];
  for (let b = 0; b + 1 < layout.offsets.length; b++) {
    const s = s2.slice(0, layout.offsets[b], layout.offsets[b + 1]).transpose(0, 1); // [K, n]
    const a = softmax(s);
    bags.push(matmul(a, h.slice(0, layout.offsets[b], layout.offsets[b + 1]))); // [K, L]
  }
  return stack(bags);
}

// ---------------------------------------------------------------------------
// Instance projection: Linear → activation → Dropout
// ---------------------------------------------------------------------------

export type ProjectionActivation = 'relu' | 'gelu';

/**
 * y = dropout(act(x · Wᵀ + b)), mSTAR's `_fc1` / DAttention `feature`
 * (nn.Linear, nn.ReLU or nn.GELU, nn.Dropout(p)): x [..., in], weight [out, in], bias [out].
 *
 * With ReLU the activation runs in the GEMM epilogue and the op saves one byte per
 * output element (where the gradient passes), not the pre-activation or the output:
 * dReLU∘dropout = [y > 0] · 1/(1 − p). So the output may be disposed as soon as its
 * consumers have read it. GELU falls back to the engine ops.
 */
export function instanceProjection(
  x: Tensor, weight: Tensor, bias: Tensor | null, activation: ProjectionActivation,
  dropoutP: number, training: boolean, seed?: number,
): Tensor {
  checkNumberInRange('dropoutP', dropoutP, 0, 1, false, true);
  if (activation === 'gelu') {
    // Engine ops; GELU's backward reads its input and output, so neither is released here.
    const y = gelu(linear(x, weight, bias));
    return !training || dropoutP === 0 ? y : dropout(y, dropoutP, true, seed);
  }
  if (activation !== 'relu') throw invalidArgument('activation', "'relu' or 'gelu'", activation);
  checkTensor('x', x);
  checkTensor('weight', weight);
  const [outF, inF] = weight.shape;
  if (x.shape[x.ndim - 1] !== inF) throw rangeError('ERR_SHAPE', `instanceProjection: x ${shapeString(x.shape)} does not end in ${inF}`);
  const rows = x.size / inF;
  const y = Tensor.empty([...x.shape.slice(0, -1), outF]);
  const scale = training && dropoutP > 0 ? Math.fround(1 / (1 - dropoutP)) : 1;
  withContiguous(x, (xc) => withContiguous(weight, (wc) => {
    if (y.size === 0) return;
    const b = bias === null ? null : withContiguous(bias, (bc) => bc.data().slice());
    native().gemm(xc.data(), wc.data(), y.data(), b, 1, rows, outF, inF, false, true, inF, inF, outF, 0, 0, 0, 1, 0, Activation.Relu);
    if (training && dropoutP > 0) {
      const keep = new Uint8Array(y.size);
      native().dropoutForward(y.data(), y.data(), keep, y.size, dropoutP, (seed ?? nextSeed()) >>> 0);
    }
  }));
  const recording = isGradEnabled() && [x, weight, bias].some((t) => t !== null && t.requiresGrad);
  if (!recording) return y;
  // Where the gradient passes: relu active and kept by dropout ⇔ y > 0.
  const values = y.data();
  const pass = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) pass[i] = values[i] > 0 ? 1 : 0;
  const inputs = bias === null ? [x, weight] : [x, weight, bias];
  return recordOp('instanceProjection', inputs, y, (g) => {
    // gz = g · pass · scale, then the linear backward.
    const gz = Tensor.empty(y.shape);
    withContiguous(g, (gc) => {
      const src = gc.data();
      const dst = gz.data();
      for (let i = 0; i < dst.length; i++) dst[i] = pass[i] ? src[i] * scale : 0;
    });
    const gx = x.requiresGrad ? Tensor.empty(x.shape) : null;
    const gw = weight.requiresGrad ? Tensor.zeros(weight.shape) : null;
    const gb = bias !== null && bias.requiresGrad ? Tensor.zeros([outF]) : null;
    if (rows > 0) {
      withContiguous(weight, (wc) => {
        if (gx) native().gemm(gz.data(), wc.data(), gx.data(), null, 1, rows, inF, outF, false, false, outF, inF, inF, 0, 0, 0, 1, 0, Activation.None);
      });
      if (gw) withContiguous(x, (xc) => native().gemm(gz.data(), xc.data(), gw.data(), null, 1, outF, inF, rows, true, false, outF, inF, inF, 0, 0, 0, 1, 0, Activation.None));
      if (gb) native().sumToShape(gz.data(), [rows, outF], gb.data(), [1, outF]);
    }
    gz.dispose();
    return bias === null ? [gx, gw] : [gx, gw, gb];
  });
}

// ---------------------------------------------------------------------------
// TransMIL token grid
// ---------------------------------------------------------------------------

/** Side of TransMIL's square token grid for n instances: ⌈√n⌉. */
export function gridSide(n: number): number {
  let s = Math.ceil(Math.sqrt(n));
  while (s * s < n) s++;
  while (s > 0 && (s - 1) * (s - 1) >= n) s--;
  return s;
}

/**
 * TransMIL's input sequence: [cls; h; h[:add]] with add = ⌈√n⌉² − n (the square is
 * filled by repeating the first instances, as `TransMIL.forward` does), so
 * h [n, C], cls [C] or [1, C] → [1 + ⌈√n⌉², C]. One new tensor; the backward adds the
 * repeated rows' gradient back onto the rows they copy.
 */
export function clsSquarePad(h: Tensor, cls: Tensor): Tensor {
  checkTensor('h', h);
  checkTensor('cls', cls);
  if (h.ndim !== 2 || h.shape[0] < 1) throw rangeError('ERR_SHAPE', `clsSquarePad: h must be [n >= 1, C], got ${shapeString(h.shape)}`);
  const [n, C] = h.shape;
  if (cls.size !== C) throw rangeError('ERR_SHAPE', `clsSquarePad: cls must have ${C} values, got ${shapeString(cls.shape)}`);
  const side = gridSide(n);
  const add = side * side - n;
  const out = Tensor.empty([1 + side * side, C]);
  const o = out.data();
  withContiguous(cls, (c) => o.set(c.data(), 0));
  withContiguous(h, (hc) => {
    const v = hc.data();
    o.set(v, C);
    o.set(v.subarray(0, add * C), (1 + n) * C);
  });
  return recordOp('clsSquarePad', [h, cls], out, (g) => withContiguous(g, (gc) => {
    const gv = gc.data();
    const gh = h.requiresGrad ? Tensor.empty([n, C]) : null;
    if (gh) {
      const d = gh.data();
      d.set(gv.subarray(C, (1 + n) * C));
      native().axpy(gv.subarray((1 + n) * C, (1 + n + add) * C), d, add * C, 1);
    }
    const gcls = cls.requiresGrad ? Tensor.fromArray(gv.slice(0, C), cls.shape) : null;
    return [gh, gcls];
  }));
}

export interface PpegWeights {
  /** proj: depthwise 7×7 [C, 1, 7, 7] and bias [C]. */
  w7: Tensor; b7: Tensor;
  /** proj1: depthwise 5×5 [C, 1, 5, 5] and bias [C]. */
  w5: Tensor; b5: Tensor;
  /** proj2: depthwise 3×3 [C, 1, 3, 3] and bias [C]. */
  w3: Tensor; b3: Tensor;
}

/**
 * PPEG (TransMIL, Shao et al. 2021, §3.3): x [1 + H·W, C] = [cls; grid tokens] →
 * [cls; proj(g) + g + proj1(g) + proj2(g)] with g the tokens as an H×W grid
 * (row-major, channels last, exactly `feat_token.transpose(1, 2).view(B, C, H, W)`).
 * The three depthwise convs and the identity are one 7×7 depthwise conv whose kernel
 * is their sum (the 5×5 and 3×3 centred, +1 at the centre), so the op is one pass of
 * the dwconv2d kernel; the backward crops that kernel's gradient back to each conv.
 * `releaseInputAfterBackward` disposes x once the backward has read it (for callers
 * that own x and read it nowhere else).
 */
export function ppeg(x: Tensor, side: number, w: PpegWeights, releaseInputAfterBackward = false): Tensor {
  checkTensor('x', x);
  const C = x.shape[1];
  if (x.ndim !== 2 || x.shape[0] !== 1 + side * side) throw rangeError('ERR_SHAPE', `ppeg: x must be [1 + ${side}², C], got ${shapeString(x.shape)}`);
  const parts: [Tensor, number][] = [[w.w7, 7], [w.w5, 5], [w.w3, 3]];
  for (const [t, k] of parts) {
    if (t.size !== C * k * k) throw rangeError('ERR_SHAPE', `ppeg: a ${k}×${k} depthwise weight must have ${C * k * k} values, got ${shapeString(t.shape)}`);
  }
  const kernel = new Float32Array(C * 49);
  const bias = new Float32Array(C);
  for (const [t, k] of parts) {
    const v = t.toFloat32Array();
    const off = (7 - k) / 2;
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) kernel[c * 49 + (i + off) * 7 + j + off] += v[(c * k + i) * k + j];
    }
  }
  for (let c = 0; c < C; c++) kernel[c * 49 + 24] += 1;
  for (const b of [w.b7, w.b5, w.b3]) {
    const v = b.toFloat32Array();
    for (let c = 0; c < C; c++) bias[c] += v[c];
  }
  const xc = noGrad(() => x.contiguous());
  const out = Tensor.empty(x.shape);
  const o = out.data();
  const xv = xc.data();
  o.set(xv.subarray(0, C));
  const dims = [1, side, side, C, 7, 7];
  const grid = side * side;
  if (grid > 0) {
    native().dwconv2dForward(xv.subarray(C), 0, side, C, kernel, bias, o.subarray(C), 0, side, C, dims, 0, side);
  }
  const inputs = [x, w.w7, w.b7, w.w5, w.b5, w.w3, w.b3];
  const result = recordOp('ppeg', inputs, out, (g) => withContiguous(g, (gc) => {
    const gv = gc.data();
    const grads: (Tensor | null)[] = [];
    if (x.requiresGrad) {
      const gx = Tensor.empty(x.shape);
      const d = gx.data();
      d.set(gv.subarray(0, C));
      if (grid > 0) native().dwconv2dBackwardInput(gv.subarray(C), 0, side, C, kernel, d.subarray(C), 0, side, C, dims, 0, side);
      grads.push(gx);
    } else {
      grads.push(null);
    }
    const gk = new Float32Array(C * 49);
    const gb = new Float32Array(C);
    if (grid > 0) native().dwconv2dBackwardWeight(xc.data().subarray(C), 0, side, C, gv.subarray(C), 0, side, C, gk, gb, dims, 0, side);
    for (const [t, k] of parts) {
      const off = (7 - k) / 2;
      const gw = new Float32Array(C * k * k);
      for (let c = 0; c < C; c++) {
        for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) gw[(c * k + i) * k + j] = gk[c * 49 + (i + off) * 7 + j + off];
      }
      grads.push(t.requiresGrad ? Tensor.fromArray(gw, t.shape) : null);
      grads.push(null); // bias placeholder, filled below
    }
    // Bias gradients: every conv's bias receives Σ g over the grid.
    [w.b7, w.b5, w.b3].forEach((b, i) => {
      grads[2 + 2 * i] = b.requiresGrad ? Tensor.fromArray(gb, b.shape) : null;
    });
    if (xc !== x) xc.dispose();
    if (releaseInputAfterBackward) x.dispose();
    return grads;
  }));
  if (!result.requiresGrad && xc !== x) xc.dispose();
  return result;
}
