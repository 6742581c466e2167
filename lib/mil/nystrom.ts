/**
 * TransMIL's transformer layer with Nyström attention, fused and chunked so that its
 * memory is linear in the sequence length, forward and backward.
 *
 * What it computes is mSTAR's `TransLayer` (downstream_task/<task>/models/TransMIL/network.py:
 * `x + NystromAttention(LayerNorm(x))`) with the attention of lucidrains/nystrom-attention
 * as vendored in mSTAR's models/TransMIL/util.py (Xiong et al. 2021, "Nyströmformer", eq. 15):
 *
 *   y = LayerNorm(x)                                   x [n, C]
 *   y ← zero rows in front until P = m·l, l = ⌈n/m⌉     (m landmarks; pad rows give q = k = v = 0)
 *   q, k, v = y·W_qkvᵀ split into H heads of Dh         [P, H·Dh] each (no bias)
 *   q̃ = scale · mean of q over consecutive groups of l rows, k̃ likewise (scale = Dh^-½)   [m, H·Dh]
 *   A₁ = softmax(scale·q k̃ᵀ)   A₂ = softmax(q̃ k̃ᵀ)   A₃ = softmax(q̃ kᵀ)                 (per head)
 *   Z = pinv₆(A₂)   (6 Moore–Penrose iterations, init Aᵀ / (max row-sum · max col-sum))
 *   O = A₁ (Z (A₃ v)) + conv₃₃(v)   (depthwise over the sequence, one 33-tap filter per head)
 *   out = x + (dropout(O·W_oᵀ + b_o))[last n rows]
 *
 * Fusion: A₃v and A₁W (W = Z·A₃v) are the engine's tiled attention kernel with k̃/W as
 * the keys/values of A₁, so no n×m matrix is ever formed; the m×m part (A₂, the pinv,
 * W) is composed from engine ops and differentiated by the tape (it is O(m³), tiny).
 * The only O(n) buffer the layer holds is qkv [P, 3·H·Dh], during the forward and again
 * (recomputed) during the backward; the backward runs over row chunks:
 *
 *   0. recompute qkv from x (and the per-group sums of y)
 *   1. output-row chunks: dropout/out-projection backward, recompute A₁ rows, tiled
 *      attention backward of A₁ → dq (direct part), Σ dk̃, Σ dW
 *   2. the m×m graph backward from dW → dq̃, dk̃, d(A₃v)
 *   3. key chunks: tiled attention backward of A₃ (with the global lse) → dk, dv, Σ dq̃;
 *      conv₃₃ backward; dk̃ spread over its group; qkv and LayerNorm backward
 *   4. dq̃'s share of dq is constant within a group, so its weight gradient uses the
 *      group sums of y and its input gradient is one more LayerNorm backward pass.
 *
 * Associativity differs from the reference ((A₁Z)(A₃v) there, A₁(Z(A₃v)) here):
 * the same maths, float rounding of order 1e-7 relative.
 */
import { invalidArgument, rangeError } from '../errors.js';
import { Activation, native } from '../native.js';
import { abs, div, mul, mulScalar, sub } from '../ops/elementwise.js';
import { matmul } from '../ops/linalg.js';
import { softmax } from '../ops/nn.js';
import { sum } from '../ops/reduce.js';
import { checkTensor, withContiguous } from '../ops/util.js';
import { nextSeed } from '../random.js';
import { isGradEnabled, noGrad, recordOp, shapeString, Tensor } from '../tensor.js';

/** Hyper-parameters of one Nyström layer (TransMIL: 8 heads × 64, 256 landmarks, 6 iterations, kernel 33). */
export interface NystromConfig {
  heads: number;
  headDim: number;
  landmarks: number;
  pinvIterations: number;
  residualKernel: number;
  /** LayerNorm epsilon (nn.LayerNorm default 1e-5). */
  normEps: number;
  /** Dropout after the output projection (`to_out`), active in training. */
  dropout: number;
}

export const TRANSMIL_NYSTROM: NystromConfig = Object.freeze({
  heads: 8, headDim: 64, landmarks: 256, pinvIterations: 6, residualKernel: 33, normEps: 1e-5, dropout: 0.1,
});

/** Parameters of one TransLayer, with the repository's names in comments. */
export interface TransLayerWeights {
  /** norm.weight, norm.bias [C] */
  normWeight: Tensor;
  normBias: Tensor;
  /** attn.to_qkv.weight [3·H·Dh, C] */
  qkvWeight: Tensor;
  /** attn.to_out.0.weight [C, H·Dh], attn.to_out.0.bias [C] */
  outWeight: Tensor;
  outBias: Tensor;
  /** attn.res_conv.weight [H, 1, K, 1] */
  resConvWeight: Tensor;
}

export interface TransLayerOptions {
  training?: boolean;
  /** Seed of the output dropout (training); default: the next of the global stream. */
  seed?: number;
  /** Rows per chunk (default 2048): bounds every temporary to chunk · 3·H·Dh floats. */
  chunkRows?: number;
  /** 'all' (default): out [n, C]; 'first': only row 0 (the [CLS] token) → [1, C]. */
  outputRows?: 'all' | 'first';
  /**
   * Compute the attention that this row (an index into x, e.g. 0 for [CLS]) pays to every
   * row of x: the row of A₁·Z·A₃, averaged over heads, front padding dropped → [n].
   */
  attentionRow?: number;
  /**
   * Dispose x once the backward has used it (the caller promises nothing else reads it):
   * lets a model free each layer's input as soon as its gradient is done.
   */
  releaseInputAfterBackward?: boolean;
}

export interface TransLayerResult {
  out: Tensor;
  attention?: Float32Array;
}

/**
 * max over every element (torch.max(x) with no dim); the gradient is shared evenly by
 * all maximal elements, as PyTorch's `evenly_distribute_backward` does.
 */
export function maxAll(x: Tensor): Tensor {
  checkTensor('x', x);
  const v = x.toFloat32Array();
  if (v.length === 0) throw rangeError('ERR_SHAPE', 'maxAll: empty tensor');
  let m = -Infinity;
  let nan = false;
  for (let i = 0; i < v.length; i++) {
    if (Number.isNaN(v[i])) nan = true;
    else if (v[i] > m) m = v[i];
  }
  const value = nan ? NaN : m;
  const out = Tensor.scalar(value);
  return recordOp('maxAll', [x], out, (g) => {
    const gx = Tensor.zeros(x.shape);
    const d = gx.data();
    let count = 0;
    for (let i = 0; i < v.length; i++) if (v[i] === value || (nan && Number.isNaN(v[i]))) count++;
    const share = g.item() / count;
    for (let i = 0; i < v.length; i++) if (v[i] === value || (nan && Number.isNaN(v[i]))) d[i] = share;
    return [gx];
  });
}

/**
 * Iterative Moore–Penrose pseudo-inverse (Razavi et al. 2014; nystrom-attention's
 * `moore_penrose_iter_pinv`): x [..., m, m] →
 *   z₀ = xᵀ / (max_all(Σ_j |x_ij|) · max_all(Σ_i |x_ij|)),
 *   z ← ¼ z (13I − xz(15I − xz(7I − xz)))  `iterations` times.
 * The maxima run over every batch and head at once, as in the reference.
 */
export function moorePenrosePinv(x: Tensor, iterations: number): Tensor {
  const m = x.shape[x.ndim - 1];
  if (x.shape[x.ndim - 2] !== m) throw rangeError('ERR_SHAPE', `moorePenrosePinv: x must be [..., m, m], got ${shapeString(x.shape)}`);
  const a = abs(x);
  const denom = mul(maxAll(sum(a, -1)), maxAll(sum(a, -2))); // 0-d
  const eye = Tensor.zeros([m, m]);
  const e = eye.data();
  for (let i = 0; i < m; i++) e[i * m + i] = 1;
  const i7 = mulScalar(eye, 7);
  const i13 = mulScalar(eye, 13);
  const i15 = mulScalar(eye, 15);
  let z = div(x.transpose(-1, -2), denom);
  for (let it = 0; it < iterations; it++) {
    const xz = matmul(x, z);
    // ¼·z is exact (a power of two), so (¼z)·M equals the reference's `0.25 * z @ M`.
    z = matmul(mulScalar(z, 0.25), sub(i13, matmul(xz, sub(i15, matmul(xz, sub(i7, xz))))));
  }
  return z;
}

/** Mixes a layer seed and a chunk index into a 32-bit seed (SplitMix-style avalanche). */
function chunkSeed(seed: number, chunk: number): number {
  let z = (seed ^ Math.imul(chunk + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

interface Geometry {
  n: number; C: number; H: number; Dh: number; inner: number; m: number; l: number; P: number; p0: number;
  K: number; scale: number; chunk: number;
}

function geometry(x: Tensor, w: TransLayerWeights, cfg: NystromConfig, chunkRows: number): Geometry {
  if (x.ndim !== 2) throw rangeError('ERR_SHAPE', `transLayer: x must be [n, C], got ${shapeString(x.shape)}`);
  const [n, C] = x.shape;
  if (n < 1) throw rangeError('ERR_SHAPE', 'transLayer: x needs at least one row');
  const H = cfg.heads;
  const Dh = cfg.headDim;
  const inner = H * Dh;
  const m = cfg.landmarks;
  const K = cfg.residualKernel;
  const expect = (t: Tensor, shape: number[], name: string): void => {
    checkTensor(name, t);
    if (t.size !== shape.reduce((a, b) => a * b, 1)) throw rangeError('ERR_SHAPE', `transLayer: ${name} must be ${shapeString(shape)}, got ${shapeString(t.shape)}`);
  };
  expect(w.normWeight, [C], 'normWeight');
  expect(w.normBias, [C], 'normBias');
  expect(w.qkvWeight, [3 * inner, C], 'qkvWeight');
  expect(w.outWeight, [C, inner], 'outWeight');
  expect(w.outBias, [C], 'outBias');
  expect(w.resConvWeight, [H, 1, K, 1], 'resConvWeight');
  if (K % 2 !== 1) throw rangeError('ERR_ARGUMENT', `residualKernel must be odd, got ${K}`);
  const l = Math.ceil(n / m);
  const P = m * l;
  return { n, C, H, Dh, inner, m, l, P, p0: P - n, K, scale: Dh ** -0.5, chunk: chunkRows };
}

/** A contiguous float32 copy of a parameter (parameters are contiguous leaves; this just reads them). */
function values(t: Tensor): Float32Array {
  return withContiguous(t, (c) => c.data());
}

/**
 * One TransMIL TransLayer: x [n, C] → x + NystromAttention(LayerNorm(x)) ([n, C], or
 * [1, C] with outputRows 'first'). Differentiable with respect to x and every weight.
 * Batch size 1, as TransMIL runs (its pinv init couples every batch entry).
 * Memory: O(n·3·H·Dh) floats (the qkv buffer) plus chunk-sized temporaries.
 */
export function transLayer(x: Tensor, w: TransLayerWeights, cfg: NystromConfig = TRANSMIL_NYSTROM, options: TransLayerOptions = {}): TransLayerResult {
  checkTensor('x', x);
  const chunkRows = options.chunkRows ?? 2048;
  if (!Number.isSafeInteger(chunkRows) || chunkRows < 1) throw invalidArgument('chunkRows', 'a positive integer', chunkRows);
  const g = geometry(x, w, cfg, chunkRows);
  const { n, C, H, Dh, inner, m, l, P, p0, K, scale } = g;
  const nOut = options.outputRows === 'first' ? 1 : n;
  const training = options.training ?? false;
  const pDrop = training ? cfg.dropout : 0;
  const dropScale = pDrop > 0 ? Math.fround(1 / (1 - pDrop)) : 1;
  const seed = pDrop > 0 ? (options.seed ?? nextSeed()) >>> 0 : 0;
  const recording = isGradEnabled() && [x, w.normWeight, w.normBias, w.qkvWeight, w.outWeight, w.outBias, w.resConvWeight].some((t) => t.requiresGrad);
  const N = native();
  const MN = native();
  const xc = noGrad(() => x.contiguous());
  const gamma = values(w.normWeight);
  const beta = values(w.normBias);
  const wqkv = values(w.qkvWeight);
  const wo = values(w.outWeight);
  const bo = values(w.outBias);
  const wRes = expandResidualWeight(values(w.resConvWeight), H, Dh, K);

  // ---- qkv [P, 3·inner] (front rows zero), landmark sums ----
  const qkv = Tensor.zeros([P, 3 * inner]);
  const qkvData = qkv.data();
  computeQkv(xc.data(), gamma, beta, wqkv, qkvData, g, cfg.normEps, null);
  const qSum = new Float32Array(m * inner);
  const kSum = new Float32Array(m * inner);
  MN.groupRowSum(qkvData, 3 * inner, 0, P, inner, l, qSum);
  MN.groupRowSum(qkvData.subarray(inner), 3 * inner, 0, P, inner, l, kSum);
  const qL = qSum.map((v) => v * (scale / l)); // q̃ = scale·mean(q)
  const kL = kSum.map((v) => v / l);
  // ---- A₃v with lse₃ (m queries over all P keys) ----
  const a3v = new Float32Array(m * inner);
  const lse3 = new Float32Array(H * m);
  const landStr = [0, Dh, inner];
  const qkvStr = [0, Dh, 3 * inner];
  N.attentionForward(qL, qkvData.subarray(inner), qkvData.subarray(2 * inner), a3v, lse3, null, [1, H, m, P, Dh], landStr, qkvStr, qkvStr, landStr, 1);

  // ---- the m×m part on the tape: W = pinv(softmax(q̃ k̃ᵀ)) · A₃v ----
  const leaf = (v: Float32Array): Tensor => {
    const t = Tensor.fromArray(v, [1, m, H, Dh]);
    if (recording) t.requireGrad();
    return t;
  };
  const qLt = leaf(qL);
  const kLt = leaf(kL);
  const a3vt = leaf(a3v);
  const small = (): { W: Tensor; Z: Tensor } => {
    const qh = qLt.permute([0, 2, 1, 3]);
    const kh = kLt.permute([0, 2, 1, 3]);
    const s2 = softmax(matmul(qh, kh.transpose(-1, -2)));
    const Z = moorePenrosePinv(s2, cfg.pinvIterations);
    const W = matmul(Z, a3vt.permute([0, 2, 1, 3])); // [1, H, m, Dh]
    return { W, Z };
  };
  const { W, Z } = recording ? small() : noGrad(small);
  const Wc = noGrad(() => W.contiguous());
  const wData = Wc.data(); // [H, m, Dh]
  const wStr = [0, m * Dh, Dh];

  // ---- output rows ----
  const out = Tensor.empty([nOut, C]);
  const outData = out.data();
  const keepBits = pDrop > 0 ? new Uint8Array(Math.ceil((nOut * C) / 8)) : null;
  const tmp = chunkBuffers(g);
  for (let r0 = 0, chunk = 0; r0 < nOut; r0 += g.chunk, chunk++) {
    const r1 = Math.min(nOut, r0 + g.chunk);
    const rows = r1 - r0;
    const i0 = p0 + r0;
    const o1 = attention1Rows(qkvData, kL, wData, i0, rows, g, tmp);
    const o = tmp.o.subarray(0, rows * inner);
    residualRows(qkvData, wRes, i0, i0 + rows, g, o); // o = conv(v) rows
    N.axpy(o1, o, rows * inner, 1);
    const y = outData.subarray(r0 * C, r1 * C);
    N.gemm(o, wo, y, bo, 1, rows, C, inner, false, true, inner, inner, C, 0, 0, 0, 1, 0, Activation.None);
    if (keepBits) {
      const keep = tmp.keep.subarray(0, rows * C);
      N.dropoutForward(y, y, keep, rows * C, pDrop, chunkSeed(seed, chunk));
      packBits(keep, keepBits, r0 * C);
    }
    N.axpy(xc.data().subarray(r0 * C, r1 * C), y, rows * C, 1);
  }

  let attention: Float32Array | undefined;
  if (options.attentionRow !== undefined) {
    attention = attentionScores(options.attentionRow, qkvData, qL, kL, lse3, noGrad(() => Z.contiguous()).toFloat32Array(), g, tmp);
  }
  qkv.dispose();
  tmp.dispose();

  if (!recording) {
    Wc.dispose();
    if (xc !== x) xc.dispose();
    return { out, attention };
  }

  const saved = { qL, kL, a3v, lse3, wData, keepBits, seed };
  const inputs = [x, w.normWeight, w.normBias, w.qkvWeight, w.outWeight, w.outBias, w.resConvWeight];
  const result = recordOp('transLayer', inputs, out, (gOut) => {
    const grads = withContiguous(gOut, (gc) => transLayerBackward(gc.data(), xc.data(), { gamma, beta, wqkv, wo, bo, wRes },
      saved, { W, qLt, kLt, a3vt }, g, cfg, nOut, dropScale, w, x));
    Wc.dispose();
    if (xc !== x) xc.dispose();
    if (options.releaseInputAfterBackward) x.dispose();
    return grads;
  });
  return { out: result, attention };
}


/** [H, 1, K, 1] → per-channel taps [H·Dh, K] (every channel of head h uses head h's filter). */
function expandResidualWeight(w: Float32Array, H: number, Dh: number, K: number): Float32Array {
  const out = new Float32Array(H * Dh * K);
  for (let h = 0; h < H; h++) for (let d = 0; d < Dh; d++) out.set(w.subarray(h * K, (h + 1) * K), (h * Dh + d) * K);
  return out;
}

function packBits(keep: Uint8Array, bits: Uint8Array, start: number): void {
  for (let i = 0; i < keep.length; i++) if (keep[i]) bits[(start + i) >> 3] |= 1 << ((start + i) & 7);
}

interface ChunkBuffers {
  y: Float32Array; mean: Float32Array; rstd: Float32Array; q: Float32Array; o1: Float32Array; o: Float32Array;
  lse: Float32Array; gq: Float32Array; gqkv: Float32Array; gy: Float32Array; pre: Float32Array; gO: Float32Array;
  conv: Float32Array; keep: Uint8Array; gkL: Float32Array; gW: Float32Array; gqL: Float32Array;
  dispose(): void;
}

/** Chunk-sized temporaries in native memory (counted by memoryStats), freed by dispose(). */
function chunkBuffers(g: Geometry): ChunkBuffers {
  const rows = Math.min(g.chunk, g.P);
  const halo = rows + g.K - 1;
  const owned: Tensor[] = [];
  const f = (size: number): Float32Array => {
    const t = Tensor.empty([Math.max(size, 1)]);
    owned.push(t);
    return t.data();
  };
  return {
    y: f(rows * g.C), mean: f(rows), rstd: f(rows), q: f(rows * g.inner), o1: f(rows * g.inner), o: f(rows * g.inner),
    lse: f(g.H * rows), gq: f(rows * g.inner), gqkv: f(rows * 3 * g.inner), gy: f(rows * g.C), pre: f(halo * g.C),
    gO: f(halo * g.inner), conv: f(rows * g.inner), keep: new Uint8Array(rows * g.C),
    gkL: f(g.m * g.inner), gW: f(g.m * g.inner), gqL: f(g.m * g.inner),
    dispose: () => owned.forEach((t) => t.dispose()),
  };
}

/**
 * qkv rows p0 + r = LayerNorm(x[r])·W_qkvᵀ for every row of x, in chunks. When ySum is
 * given, also accumulates the per-landmark-group sums of y into it ([m, C]).
 */
function computeQkv(x: Float32Array, gamma: Float32Array, beta: Float32Array, wqkv: Float32Array, qkv: Float32Array,
  g: Geometry, eps: number, ySum: Float32Array | null): void {
  const N = native();
  const rowsMax = Math.min(g.chunk, g.n);
  const y = Tensor.empty([rowsMax * g.C]);
  const mean = new Float32Array(rowsMax);
  const rstd = new Float32Array(rowsMax);
  try {
    for (let r0 = 0; r0 < g.n; r0 += g.chunk) {
      const rows = Math.min(g.chunk, g.n - r0);
      const yd = y.data().subarray(0, rows * g.C);
      N.layerNormForward(x.subarray(r0 * g.C, (r0 + rows) * g.C), gamma, beta, yd, mean, rstd, rows, g.C, eps);
      const i0 = g.p0 + r0;
      N.gemm(yd, wqkv, qkv.subarray(i0 * 3 * g.inner), null, 1, rows, 3 * g.inner, g.C, false, true, g.C, g.C, 3 * g.inner, 0, 0, 0, 1, 0, Activation.None);
      if (ySum) native().groupRowSum(yd, g.C, i0, i0 + rows, g.C, g.l, ySum);
    }
  } finally {
    y.dispose();
  }
}

/** A₁ rows: O₁ = softmax(scale·q k̃ᵀ)·W for padded rows [i0, i0 + rows) → tmp.o1 (and lse in tmp.lse); q copied to tmp.q. */
function attention1Rows(qkv: Float32Array, kL: Float32Array, wData: Float32Array, i0: number, rows: number, g: Geometry, tmp: ChunkBuffers): Float32Array {
  const { inner, H, Dh, m, scale } = g;
  const q = tmp.q.subarray(0, rows * inner);
  for (let r = 0; r < rows; r++) q.set(qkv.subarray((i0 + r) * 3 * inner, (i0 + r) * 3 * inner + inner), r * inner);
  const o1 = tmp.o1.subarray(0, rows * inner);
  native().attentionForward(q, kL, wData, o1, tmp.lse.subarray(0, H * rows), null, [1, H, rows, m, Dh],
    [0, Dh, inner], [0, Dh, inner], [0, m * Dh, Dh], [0, Dh, inner], scale);
  return o1;
}

/** out rows [i0, i1) (written, [rows, inner]) = depthwise conv_K over v (the v columns of qkv). */
function residualRows(qkv: Float32Array, wRes: Float32Array, i0: number, i1: number, g: Geometry, out: Float32Array): void {
  if (i1 <= i0) return;
  native().dwconv2dForward(qkv.subarray(2 * g.inner), 0, g.P, 3 * g.inner, wRes, null, out, i0, i1 - i0, g.inner,
    [1, g.P, 1, g.inner, g.K, 1], i0, i1);
}

/**
 * The attention row `row` of x pays to every row of x through the layer: per head
 * c = softmax(scale·q_row k̃ᵀ)·Z, then Σ_i c_i·A₃[i, j] for each key j — computed as the
 * dV of a tiled attention backward with dO = c (O = 0, so the kernel's D term vanishes),
 * which is exactly Pᵀc without forming A₃. Averaged over heads, front padding dropped.
 */
function attentionScores(row: number, qkv: Float32Array, qL: Float32Array, kL: Float32Array, lse3: Float32Array,
  z: Float32Array, g: Geometry, tmp: ChunkBuffers): Float32Array {
  const { n, H, Dh, inner, m, p0, scale } = g;
  if (!Number.isInteger(row) || row < 0 || row >= n) throw rangeError('ERR_RANGE', `attentionRow ${row} is not a row of x (n = ${n})`);
  const i = p0 + row;
  const gOut = new Float32Array(m * inner);
  for (let h = 0; h < H; h++) {
    const s = new Float64Array(m);
    let mx = -Infinity;
    for (let j = 0; j < m; j++) {
      let d = 0;
      for (let e = 0; e < Dh; e++) d += qkv[i * 3 * inner + h * Dh + e] * kL[j * inner + h * Dh + e];
      s[j] = d * scale;
      mx = Math.max(mx, s[j]);
    }
    let tot = 0;
    for (let j = 0; j < m; j++) tot += (s[j] = Math.exp(s[j] - mx));
    for (let j = 0; j < m; j++) s[j] /= tot;
    for (let j = 0; j < m; j++) {
      let c = 0;
      for (let k = 0; k < m; k++) c += s[k] * z[(h * m + k) * m + j];
      gOut.fill(c, j * inner + h * Dh, j * inner + (h + 1) * Dh);
    }
  }
  const zeros = new Float32Array(m * inner);
  const scores = new Float32Array(n);
  const landStr = [0, Dh, inner];
  const qkvStr = [0, Dh, 3 * inner];
  for (let r0 = 0; r0 < n; r0 += g.chunk) {
    const rows = Math.min(g.chunk, n - r0);
    const j0 = p0 + r0;
    const gkv = tmp.gqkv.subarray(0, rows * 3 * inner);
    native().attentionBackward(qL, qkv.subarray(j0 * 3 * inner + inner), qkv.subarray(j0 * 3 * inner + 2 * inner), zeros, gOut, lse3,
      tmp.gqL, gkv.subarray(inner), gkv.subarray(2 * inner), null, [1, H, m, rows, Dh], landStr, qkvStr, qkvStr, landStr, 1);
    for (let r = 0; r < rows; r++) {
      let acc = 0;
      for (let h = 0; h < H; h++) acc += gkv[r * 3 * inner + 2 * inner + h * Dh];
      scores[r0 + r] = acc / H;
    }
  }
  return scores;
}

interface LayerValues {
  gamma: Float32Array; beta: Float32Array; wqkv: Float32Array; wo: Float32Array; bo: Float32Array; wRes: Float32Array;
}
interface SavedState {
  qL: Float32Array; kL: Float32Array; a3v: Float32Array; lse3: Float32Array; wData: Float32Array;
  keepBits: Uint8Array | null; seed: number;
}
interface SmallGraph {
  W: Tensor; qLt: Tensor; kLt: Tensor; a3vt: Tensor;
}

/** pre rows [a, b) (padded index) = gOut·keep·scale for output rows, 0 elsewhere; gO = pre·W_o. */
function outputGradRows(gOut: Float32Array, keepBits: Uint8Array | null, dropScale: number, wo: Float32Array, a: number, b: number,
  nOut: number, g: Geometry, tmp: ChunkBuffers): Float32Array {
  const { C, inner, p0 } = g;
  const rows = b - a;
  const pre = tmp.pre.subarray(0, rows * C);
  pre.fill(0);
  for (let i = a; i < b; i++) {
    const r = i - p0;
    if (r < 0 || r >= nOut) continue;
    const src = gOut.subarray(r * C, (r + 1) * C);
    const dst = pre.subarray((i - a) * C, (i - a + 1) * C);
    if (keepBits === null) {
      dst.set(src);
    } else {
      const base = r * C;
      for (let c = 0; c < C; c++) {
        const idx = base + c;
        dst[c] = keepBits[idx >> 3] & (1 << (idx & 7)) ? src[c] * dropScale : 0;
      }
    }
  }
  const gO = tmp.gO.subarray(0, rows * inner);
  native().gemm(pre, wo, gO, null, 1, rows, inner, C, false, false, C, inner, inner, 0, 0, 0, 1, 0, Activation.None);
  return gO;
}

function transLayerBackward(gOut: Float32Array, x: Float32Array, v: LayerValues, s: SavedState, graph: SmallGraph,
  g: Geometry, cfg: NystromConfig, nOut: number, dropScale: number, w: TransLayerWeights, xInput: Tensor): (Tensor | null)[] {
  const N = native();
  const MN = native();
  const { n, C, H, Dh, inner, m, l, P, p0, K, scale } = g;
  const halo = Math.floor(K / 2);
  const gWqkv = Tensor.zeros([3 * inner, C]);
  const gWo = Tensor.zeros([C, inner]);
  const gbo = Tensor.zeros([C]);
  const gGamma = Tensor.zeros([C]);
  const gBeta = Tensor.zeros([C]);
  const gwResExp = new Float32Array(inner * K);
  const gx = Tensor.empty([n, C]);
  const gxd = gx.data();
  const qkv = Tensor.zeros([P, 3 * inner]);
  const qkvData = qkv.data();
  const ySum = new Float32Array(m * C);
  const tmp = chunkBuffers(g);
  const colSum = new Float32Array(C);
  const landStr = [0, Dh, inner];
  const qkvStr = [0, Dh, 3 * inner];
  try {
    // 0. qkv again, and the group sums of y.
    computeQkv(x, v.gamma, v.beta, v.wqkv, qkvData, g, cfg.normEps, ySum);

    // 1. output rows: out-projection and A₁ backward; dq (direct) replaces q in qkv.
    const gkLAcc = new Float32Array(m * inner);
    const gWAcc = new Float32Array(m * inner);
    for (let r0 = 0; r0 < nOut; r0 += g.chunk) {
      const rows = Math.min(g.chunk, nOut - r0);
      const i0 = p0 + r0;
      const gO = outputGradRows(gOut, s.keepBits, dropScale, v.wo, i0, i0 + rows, nOut, g, tmp);
      const pre = tmp.pre.subarray(0, rows * C);
      const o1 = attention1Rows(qkvData, s.kL, s.wData, i0, rows, g, tmp);
      const o = tmp.o.subarray(0, rows * inner);
      residualRows(qkvData, v.wRes, i0, i0 + rows, g, o);
      N.axpy(o1, o, rows * inner, 1);
      N.gemm(pre, o, gWo.data(), null, 1, C, inner, rows, true, false, C, inner, inner, 0, 0, 0, 1, 1, Activation.None);
      N.sumToShape(pre, [rows, C], colSum, [1, C]);
      N.axpy(colSum, gbo.data(), C, 1);
      const gq = tmp.gq.subarray(0, rows * inner);
      N.attentionBackward(tmp.q.subarray(0, rows * inner), s.kL, s.wData, o1, gO, tmp.lse.subarray(0, H * rows), gq, tmp.gkL, tmp.gW, null,
        [1, H, rows, m, Dh], landStr, landStr, [0, m * Dh, Dh], landStr, scale);
      N.axpy(tmp.gkL, gkLAcc, m * inner, 1);
      N.axpy(tmp.gW, gWAcc, m * inner, 1);
      for (let r = 0; r < rows; r++) qkvData.set(gq.subarray(r * inner, (r + 1) * inner), (i0 + r) * 3 * inner);
    }
    // Rows without output gradient have no direct dq.
    for (let i = 0; i < P; i++) {
      const r = i - p0;
      if (r >= 0 && r < nOut) continue;
      qkvData.fill(0, i * 3 * inner, i * 3 * inner + inner);
    }

    // 2. the m×m graph: dW → dq̃, dk̃, d(A₃v).
    const gWt = Tensor.fromArray(gWAcc, [1, H, m, Dh]);
    graph.W.backward(gWt);
    gWt.dispose();
    const gradOf = (t: Tensor): Float32Array => (t.grad ? t.grad.toFloat32Array() : new Float32Array(m * inner));
    const gqL = gradOf(graph.qLt);
    const gkL = gradOf(graph.kLt);
    N.axpy(gkLAcc, gkL, m * inner, 1);
    const gA3v = gradOf(graph.a3vt);
    for (const t of [graph.qLt, graph.kLt, graph.a3vt]) t.zeroGrad();

    // 3. key chunks over the real rows: A₃ backward, conv backward, qkv and LayerNorm backward.
    const dims = [1, P, 1, inner, K, 1];
    for (let r0 = 0; r0 < n; r0 += g.chunk) {
      const rows = Math.min(g.chunk, n - r0);
      const i0 = p0 + r0;
      const i1 = i0 + rows;
      const gqkv = tmp.gqkv.subarray(0, rows * 3 * inner);
      for (let r = 0; r < rows; r++) gqkv.set(qkvData.subarray((i0 + r) * 3 * inner, (i0 + r) * 3 * inner + inner), r * 3 * inner);
      N.attentionBackward(s.qL, qkvData.subarray(i0 * 3 * inner + inner), qkvData.subarray(i0 * 3 * inner + 2 * inner), s.a3v, gA3v, s.lse3,
        tmp.gqL, gqkv.subarray(inner), gqkv.subarray(2 * inner), null, [1, H, m, rows, Dh], landStr, qkvStr, qkvStr, landStr, 1);
      N.axpy(tmp.gqL, gqL, m * inner, 1);
      MN.groupRowBroadcast(gkL, i0, i1, inner, l, 1 / l, gqkv.subarray(inner), 3 * inner, true);
      // conv₃₃ backward needs dO on the rows within K/2 of the chunk.
      const a = Math.max(0, i0 - halo);
      const b = Math.min(P, i1 + halo);
      const gO = outputGradRows(gOut, s.keepBits, dropScale, v.wo, a, b, nOut, g, tmp);
      const conv = tmp.conv.subarray(0, rows * inner);
      MN.dwconv2dBackwardInput(gO, a, b - a, inner, v.wRes, conv, i0, rows, inner, dims, i0, i1);
      for (let r = 0; r < rows; r++) N.axpy(conv.subarray(r * inner, (r + 1) * inner), gqkv.subarray(r * 3 * inner + 2 * inner), inner, 1);
      MN.dwconv2dBackwardWeight(qkvData.subarray(2 * inner), 0, P, 3 * inner, gO, a, b - a, inner, gwResExp, null, dims, i0, i1);
      // y again for this chunk; dW_qkv += dqkvᵀ·y; dy = dqkv·W_qkv; LayerNorm backward.
      const xr = x.subarray(r0 * C, (r0 + rows) * C);
      const y = tmp.y.subarray(0, rows * C);
      N.layerNormForward(xr, v.gamma, v.beta, y, tmp.mean, tmp.rstd, rows, C, cfg.normEps);
      N.gemm(gqkv, y, gWqkv.data(), null, 1, 3 * inner, C, rows, true, false, 3 * inner, C, C, 0, 0, 0, 1, 1, Activation.None);
      const gy = tmp.gy.subarray(0, rows * C);
      N.gemm(gqkv, v.wqkv, gy, null, 1, rows, C, 3 * inner, false, false, 3 * inner, C, C, 0, 0, 0, 1, 0, Activation.None);
      const gxr = gxd.subarray(r0 * C, (r0 + rows) * C);
      N.layerNormBackward(xr, v.gamma, tmp.mean, tmp.rstd, gy, gxr, gGamma.data(), gBeta.data(), rows, C);
      // The residual: out = x + ..., for the rows that are outputs.
      const outRows = Math.max(0, Math.min(rows, nOut - r0));
      if (outRows > 0) N.axpy(gOut.subarray(r0 * C, (r0 + outRows) * C), gxr, outRows * C, 1);
    }

    // 4. dq̃'s share: dq_i = dq̃[group(i)]·scale/l for every row, constant within a group.
    const u = gqL.map((val) => val * (scale / l)); // [m, inner]
    N.gemm(u, ySum, gWqkv.data(), null, 1, inner, C, m, true, false, inner, C, C, 0, 0, 0, 1, 1, Activation.None);
    const G = new Float32Array(m * C);
    N.gemm(u, v.wqkv, G, null, 1, m, C, inner, false, false, inner, C, C, 0, 0, 0, 1, 0, Activation.None);
    for (let r0 = 0; r0 < n; r0 += g.chunk) {
      const rows = Math.min(g.chunk, n - r0);
      const i0 = p0 + r0;
      const xr = x.subarray(r0 * C, (r0 + rows) * C);
      const y = tmp.y.subarray(0, rows * C);
      N.layerNormForward(xr, v.gamma, v.beta, y, tmp.mean, tmp.rstd, rows, C, cfg.normEps);
      const gy = tmp.gy.subarray(0, rows * C);
      MN.groupRowBroadcast(G, i0, i0 + rows, C, l, 1, gy, C, false);
      const gxr = tmp.y.subarray(0, rows * C); // y no longer needed: reuse as the gx temporary
      N.layerNormBackward(xr, v.gamma, tmp.mean, tmp.rstd, gy, gxr, gGamma.data(), gBeta.data(), rows, C);
      N.axpy(gxr, gxd.subarray(r0 * C, (r0 + rows) * C), rows * C, 1);
    }
  } finally {
    qkv.dispose();
    tmp.dispose();
  }
  const gRes = new Float32Array(H * K);
  for (let h = 0; h < H; h++) for (let d = 0; d < Dh; d++) for (let t = 0; t < K; t++) gRes[h * K + t] += gwResExp[(h * Dh + d) * K + t];
  const want = (t: Tensor, grad: Tensor): Tensor | null => {
    if (t.requiresGrad) return grad;
    grad.dispose();
    return null;
  };
  return [
    want(xInput, gx),
    want(w.normWeight, gGamma),
    want(w.normBias, gBeta),
    want(w.qkvWeight, gWqkv),
    want(w.outWeight, gWo),
    want(w.outBias, gbo),
    w.resConvWeight.requiresGrad ? Tensor.fromArray(gRes, w.resConvWeight.shape) : null,
  ];
}
