/**
 * Differentiable neural-network ops over native kernels: softmax / log-softmax
 * (cpp/ops/softmax.cc), cross-entropy (cpp/ops/cross_entropy.cc), LayerNorm
 * (cpp/ops/layernorm.cc), dropout (cpp/ops/dropout.cc), tiled attention
 * (cpp/ops/attention.cc) and the tiled contrastive loss (cpp/ops/contrastive.cc).
 */
import { checkNumberInRange, invalidArgument, rangeError, typeError } from '../errors.js';
import { native } from '../native.js';
import { nextSeed } from '../random.js';
import { normalizeDim, recordOp, shapeString, Tensor } from '../tensor.js';
import { addScalar, div, sqrt, square } from './elementwise.js';
import { sum } from './reduce.js';
import { checkTensor, elementsFrom, withContiguous } from './util.js';

function lastDimOp(x: Tensor, dim: number, fn: (xc: Tensor) => Tensor): Tensor {
  const d = normalizeDim(dim, x.ndim);
  if (d === x.ndim - 1 || x.ndim === 0) return fn(x);
  const moved = x.transpose(d, -1);
  const r = fn(moved);
  const back = r.transpose(d, -1);
  moved.dispose();
  return back;
}

function softmaxImpl(x: Tensor, dim: number, log: boolean): Tensor {
  checkTensor('x', x);
  return lastDimOp(x, dim, (xl) => {
    const cols = xl.ndim === 0 ? 1 : xl.shape[xl.ndim - 1];
    const rows = cols === 0 ? 0 : xl.size / cols;
    const y = withContiguous(xl, (xc) => {
      const out = Tensor.empty(xl.shape);
      if (out.size > 0) native().softmaxForward(xc.data(), out.data(), rows, cols, log);
      return out;
    });
    return recordOp(log ? 'logSoftmax' : 'softmax', [xl], y, (g) => {
      const gx = Tensor.empty(xl.shape);
      withContiguous(g, (gc) => {
        if (gx.size > 0) native().softmaxBackward(y.data(), gc.data(), gx.data(), rows, cols, log);
      });
      return [gx];
    });
  });
}

/** softmax along `dim` (default last). */
export function softmax(x: Tensor, dim = -1): Tensor {
  return softmaxImpl(x, dim, false);
}

/** log-softmax along `dim` (default last). */
export function logSoftmax(x: Tensor, dim = -1): Tensor {
  return softmaxImpl(x, dim, true);
}

export interface CrossEntropyOptions {
  /** 'mean' (over non-ignored rows, like PyTorch), 'sum' or 'none' ([N]). */
  reduction?: 'mean' | 'sum' | 'none';
  /** Target value whose rows contribute nothing (default −100 like PyTorch). */
  ignoreIndex?: number;
}

/**
 * Cross-entropy of logits [N, C] against class indices [N] (torch.nn.functional.cross_entropy).
 */
export function crossEntropy(logits: Tensor, targets: Int32Array | readonly number[], options: CrossEntropyOptions = {}): Tensor {
  checkTensor('logits', logits);
  const reduction = options.reduction ?? 'mean';
  const ignoreIndex = options.ignoreIndex ?? -100;
  if (!['mean', 'sum', 'none'].includes(reduction)) throw invalidArgument('reduction', "'mean', 'sum' or 'none'", reduction);
  if (logits.ndim !== 2) throw rangeError('ERR_SHAPE', `crossEntropy: logits must be [N, C], got ${shapeString(logits.shape)}`);
  const [rows, cols] = logits.shape;
  if (!(targets instanceof Int32Array) && !Array.isArray(targets)) throw invalidArgument('targets', 'an Int32Array or number[]', targets);
  if (targets.length !== rows) throw rangeError('ERR_SHAPE', `crossEntropy: ${targets.length} targets for ${rows} rows`);
  // The kernel ignores −1; map the user's ignore index onto it and check the rest.
  const t = new Int32Array(rows);
  let counted = 0;
  for (let i = 0; i < rows; i++) {
    const v = targets[i];
    if (v === ignoreIndex) {
      t[i] = -1;
      continue;
    }
    if (!Number.isInteger(v) || v < 0 || v >= cols) {
      throw rangeError('ERR_RANGE', `crossEntropy: targets[${i}] = ${v} is not a class index in [0, ${cols})`);
    }
    t[i] = v;
    counted++;
  }
  const losses = withContiguous(logits, (lc) => {
    const out = Tensor.empty([rows]);
    if (rows > 0) native().crossEntropyForward(lc.data(), t, out.data(), rows, cols);
    return out;
  });
  const perRow = recordOp('crossEntropy', [logits], losses, (g) => {
    const gl = Tensor.empty(logits.shape);
    withContiguous(logits, (lc) => withContiguous(g, (gc) => {
      if (gl.size > 0) native().crossEntropyBackward(lc.data(), t, gc.data(), gl.data(), rows, cols);
    }));
    return [gl];
  });
  if (reduction === 'none') return perRow;
  const total = reduceRows(perRow, reduction === 'mean' ? (counted === 0 ? NaN : 1 / counted) : 1);
  perRow.dispose();
  return total;
}

/** scale · Σ rows of a [N] tensor → scalar (differentiable). */
function reduceRows(v: Tensor, scale: number): Tensor {
  const values = v.data();
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  const out = Tensor.scalar(s * scale);
  return recordOp('sumRows', [v], out, (g) => [Tensor.full(v.shape, g.item() * scale)]);
}

/**
 * LayerNorm over the last dim (torch.nn.functional.layer_norm with normalized_shape [C]):
 * x [..., C], weight/bias [C] or null.
 */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  checkTensor('x', x);
  checkNumberInRange('eps', eps, 0, Infinity, true);
  const cols = x.shape[x.ndim - 1] ?? 1;
  for (const [name, p] of [['weight', weight], ['bias', bias]] as const) {
    if (p !== null && (checkTensor(name, p).ndim !== 1 || p.shape[0] !== cols)) {
      throw rangeError('ERR_SHAPE', `layerNorm: ${name} must be [${cols}], got ${shapeString(p.shape)}`);
    }
  }
  const rows = cols === 0 ? 0 : x.size / cols;
  const mean = Tensor.empty([rows]);
  const rstd = Tensor.empty([rows]);
  const xc = withContiguous(x, (c) => (c === x ? x : c.clone()));
  const y = Tensor.empty(x.shape);
  const w = weight === null ? null : withContiguous(weight, (c) => (c === weight ? weight : c.clone()));
  const b = bias === null ? null : withContiguous(bias, (c) => (c === bias ? bias : c.clone()));
  if (y.size > 0) native().layerNormForward(xc.data(), w?.data() ?? null, b?.data() ?? null, y.data(), mean.data(), rstd.data(), rows, cols, eps);
  const inputs = [x, weight, bias].filter((t): t is Tensor => t !== null);
  return recordOp('layerNorm', inputs, y, (g) => {
    const gx = Tensor.empty(x.shape);
    const gw = weight !== null && weight.requiresGrad ? Tensor.zeros([cols]) : null;
    const gb = bias !== null && bias.requiresGrad ? Tensor.zeros([cols]) : null;
    withContiguous(g, (gc) => {
      if (gx.size > 0) {
        native().layerNormBackward(xc.data(), w?.data() ?? null, mean.data(), rstd.data(), gc.data(), gx.data(), gw?.data() ?? null, gb?.data() ?? null, rows, cols);
      }
    });
    const grads: (Tensor | null)[] = [gx];
    if (weight !== null) grads.push(gw);
    if (bias !== null) grads.push(gb);
    return grads;
  });
}

/**
 * Inverted dropout: zeroes each element with probability p and scales the rest by
 * 1/(1−p); identity when not training or p = 0. The mask comes from a
 * counter-based RNG seeded by `seed` (default: the next seed of the global stream),
 * so it is the same for any thread count.
 */
export function dropout(x: Tensor, p: number, training: boolean, seed?: number): Tensor {
  checkTensor('x', x);
  checkNumberInRange('p', p, 0, 1);
  if (!training || p === 0) return x;
  const s = seed ?? nextSeed();
  const mask = new Uint8Array(x.size);
  const y = withContiguous(x, (xc) => {
    const out = Tensor.empty(x.shape);
    if (out.size > 0) native().dropoutForward(xc.data(), out.data(), mask, out.size, p, s >>> 0);
    return out;
  });
  return recordOp('dropout', [x], y, (g) => {
    const gx = Tensor.empty(x.shape);
    withContiguous(g, (gc) => {
      if (gx.size > 0) native().dropoutBackward(gc.data(), mask, gx.data(), gx.size, p);
    });
    return [gx];
  });
}

export interface AttentionOptions {
  /** Uint8Array [B, Nk], 1 = attend; or null. */
  keyMask?: Uint8Array | null;
  /** Softmax scale (default 1/√D). */
  scale?: number;
}

function headStrides(t: Tensor): number[] {
  return [t.strides[0], t.strides[1], t.strides[2]];
}

/**
 * Scaled dot-product attention with the tiled (flash) kernel:
 * q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, D] → [B, H, Nq, D].
 * Any layout whose last dim is contiguous is read in place (e.g. views of a fused
 * qkv [B, N, 3, H, D]). The result is a view of a [B, Nq, H, D] buffer, so
 * `out.transpose(1, 2).reshape([B, Nq, H·D])` is free. Memory O(N·D).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    checkTensor(name, t);
    if (t.ndim !== 4) throw rangeError('ERR_SHAPE', `attention: ${name} must be [B, H, N, D], got ${shapeString(t.shape)}`);
  }
  const [B, H, Nq, D] = q.shape;
  const Nk = k.shape[2];
  if (k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D || v.shape[0] !== B || v.shape[1] !== H || v.shape[2] !== Nk || v.shape[3] !== D) {
    throw rangeError('ERR_SHAPE', `attention: q ${shapeString(q.shape)}, k ${shapeString(k.shape)}, v ${shapeString(v.shape)} do not match`);
  }
  const scale = options.scale ?? 1 / Math.sqrt(Math.max(D, 1));
  const keyMask = options.keyMask ?? null;
  if (keyMask !== null) {
    if (!(keyMask instanceof Uint8Array)) throw typeError('ERR_DTYPE', 'attention: keyMask must be a Uint8Array [B, Nk]');
    if (keyMask.length !== B * Nk) throw rangeError('ERR_SHAPE', `attention: keyMask has ${keyMask.length} entries, needs B·Nk = ${B * Nk}`);
  }
  // Inputs must have a contiguous last dim; others are read through strides.
  const [qi, ki, vi] = [q, k, v].map((t) => (t.strides[3] === 1 || t.shape[3] <= 1 ? t : t.contiguous()));
  const buffer = Tensor.empty([B, Nq, H, D]);
  const out = buffer.permute([0, 2, 1, 3]);
  buffer.dispose();
  const lse = Tensor.empty([B, H, Nq]);
  const dims = [B, H, Nq, Nk, D];
  if (out.size > 0) {
    native().attentionForward(elementsFrom(qi), elementsFrom(ki), elementsFrom(vi), elementsFrom(out), lse.data(), keyMask,
      dims, headStrides(qi), headStrides(ki), headStrides(vi), headStrides(out), scale);
  }
  const result = recordOp('attention', [q, k, v], out, (g) => {
    const gi = gradientBuffers([qi, ki, vi]);
    // The kernel reads gOut with out's layout ([B, Nq, H, D] buffer viewed as [B, H, Nq, D]).
    const sameLayout = g.shape.every((size, i) => size <= 1 || g.strides[i] === out.strides[i]);
    const gOut = sameLayout ? g : g.transpose(1, 2).contiguous();
    if (out.size > 0) {
      native().attentionBackward(elementsFrom(qi), elementsFrom(ki), elementsFrom(vi), elementsFrom(out), elementsFrom(gOut), lse.data(),
        elementsFrom(gi[0]), elementsFrom(gi[1]), elementsFrom(gi[2]), keyMask,
        dims, headStrides(qi), headStrides(ki), headStrides(vi), headStrides(out), scale);
    } else {
      for (const t of gi) t.storage.elements().fill(0);
    }
    if (gOut !== g) gOut.dispose();
    return gi;
  });
  for (const [t, orig] of [[qi, q], [ki, k], [vi, v]] as const) if (t !== orig && !result.requiresGrad) t.dispose();
  return result;
}

/**
 * Gradient tensors laid out like the inputs (same strides and offsets) over fresh
 * storages — one per distinct input storage, so q/k/v views of one fused buffer get
 * views of one gradient buffer (the kernel writes disjoint elements).
 */
function gradientBuffers(inputs: Tensor[]): Tensor[] {
  const byStorage = new Map<unknown, Tensor>();
  return inputs.map((t) => {
    let base = byStorage.get(t.storage);
    if (base === undefined) {
      base = Tensor.zeros([t.storage.length]);
      byStorage.set(t.storage, base);
    }
    return new Tensor({ storage: base.storage, shape: t.shape, strides: t.strides, offset: t.offset });
  }).map((view, i, all) => {
    // Drop the flat bases once every view holds its own reference.
    if (i === all.length - 1) for (const b of byStorage.values()) b.dispose();
    return view;
  });
}

/** Float64-free reference used by tests and benchmarks: materializes the scores (O(N²) memory). */
export function attentionNaive(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const [B, H, Nq, D] = q.shape;
  const Nk = k.shape[2];
  const scale = options.scale ?? 1 / Math.sqrt(Math.max(D, 1));
  const out = Tensor.empty([B, H, Nq, D]);
  if (out.size > 0) {
    native().attentionNaiveForward(elementsFrom(q), elementsFrom(k), elementsFrom(v), out.data(), options.keyMask ?? null,
      [B, H, Nq, Nk, D], headStrides(q), headStrides(k), headStrides(v), [H * Nq * D, Nq * D, D], scale);
  }
  return out;
}


/**
 * x / max(‖x‖₂, eps) along `dim` (torch.nn.functional.normalize with p = 2), differentiable.
 * Implemented as x / sqrt(Σ x² + eps²), which equals torch's for ‖x‖ ≫ eps.
 */
export function l2Normalize(x: Tensor, dim = -1, eps = 1e-12): Tensor {
  checkTensor('x', x);
  checkNumberInRange('eps', eps, 0, Infinity, true);
  return div(x, sqrt(addScalar(sum(square(x), dim, true), eps * eps)));
}

export interface ContrastiveLossOptions {
  /** Rows of the similarity matrix per tile (default: about 64 MB of it). */
  tileRows?: number;
}

/**
 * Symmetric InfoNCE (the CLIP loss, as open_clip's ClipLoss) of paired embeddings:
 * a, b [N, D], row i of each a positive pair; S = exp(logitScale) · a bᵀ;
 *   loss = ½ (crossEntropy(S, 0..N−1) + crossEntropy(Sᵀ, 0..N−1)).
 * logitScale is a learnable scalar Tensor (CLIP starts it at log(1/0.07)) or a fixed number.
 * Tiled: the N×N matrix is never formed (memory O(tileRows·N + N·D)); gradients flow to a,
 * b and logitScale. L2-normalize the rows first (`l2Normalize`) for cosine similarities.
 */
export function contrastiveLoss(a: Tensor, b: Tensor, logitScale: Tensor | number, options: ContrastiveLossOptions = {}): Tensor {
  checkTensor('a', a);
  checkTensor('b', b);
  if (a.ndim !== 2 || b.ndim !== 2 || a.shape[0] !== b.shape[0] || a.shape[1] !== b.shape[1]) {
    throw rangeError('ERR_SHAPE', `contrastiveLoss: a and b must both be [N, D], got ${shapeString(a.shape)} and ${shapeString(b.shape)}`);
  }
  const [n, d] = a.shape;
  if (n === 0 || d === 0) throw rangeError('ERR_SHAPE', `contrastiveLoss: needs N ≥ 1 and D ≥ 1, got ${shapeString(a.shape)}`);
  const tileRows = options.tileRows ?? 0;
  if (!Number.isSafeInteger(tileRows) || tileRows < 0) throw invalidArgument('tileRows', 'a non-negative integer', tileRows);
  let scaleTensor: Tensor | null = null;
  let logScale: number;
  if (typeof logitScale === 'number') {
    logScale = logitScale;
  } else {
    scaleTensor = checkTensor('logitScale', logitScale);
    if (scaleTensor.size !== 1) throw rangeError('ERR_SHAPE', `contrastiveLoss: logitScale must hold one value, got ${shapeString(scaleTensor.shape)}`);
    logScale = scaleTensor.item();
  }
  const scale = Math.exp(logScale);
  if (!Number.isFinite(scale) || scale <= 0) throw rangeError('ERR_RANGE', `contrastiveLoss: exp(logitScale) = ${scale} must be finite and > 0`);
  const lseRows = new Float32Array(n);
  const lseCols = new Float32Array(n);
  const loss = withContiguous(a, (ac) => withContiguous(b, (bc) =>
    native().contrastiveForward(ac.data(), bc.data(), n, d, scale, tileRows, lseRows, lseCols)));
  const out = Tensor.scalar(loss);
  const inputs = scaleTensor ? [a, b, scaleTensor] : [a, b];
  return recordOp('contrastiveLoss', inputs, out, (g) => {
    const gradA = Tensor.empty([n, d]);
    const gradB = Tensor.empty([n, d]);
    const gradScale = withContiguous(a, (ac) => withContiguous(b, (bc) =>
      native().contrastiveBackward(ac.data(), bc.data(), n, d, scale, tileRows, lseRows, lseCols, g.item(), gradA.data(), gradB.data())));
    return scaleTensor ? [gradA, gradB, Tensor.full(scaleTensor.shape, gradScale)] : [gradA, gradB];
  });
}
