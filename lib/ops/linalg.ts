/**
 * Matrix products over the native GEMM (cpp/ops/gemm.cc): batched matmul with
 * broadcasting over batch dims, and linear layers with a fused bias/activation
 * epilogue. Strided operands (transposed views) are passed to GEMM as transposes,
 * not copied.
 */
import { invalidArgument, rangeError } from '../errors.js';
import { Activation, native } from '../native.js';
import { noGrad, numel, recordOp, shapeString, sumToShape, Tensor, type Shape } from '../tensor.js';
import { broadcastShapes, checkTensor, elementsFrom, reshapeTemporary, withContiguous } from './util.js';
import { gelu, relu } from './elementwise.js';

/** How one operand of a batched GEMM is read: base, transpose flag, leading dim and batch stride. */
interface GemmOperand {
  source: Tensor; // the tensor whose storage is read (maybe a temporary copy)
  trans: boolean;
  ld: number;
  batchStride: number;
  temporary: boolean;
}

/**
 * Describes `t` ([...batch, rows, cols]) broadcast to `batchShape` as a GEMM operand
 * without copying when its layout allows; otherwise makes a contiguous copy.
 */
function gemmOperand(t: Tensor, batchShape: Shape): GemmOperand {
  const nd = t.ndim;
  const rows = t.shape[nd - 2];
  const cols = t.shape[nd - 1];
  const rs = t.strides[nd - 2];
  const cs = t.strides[nd - 1];
  let trans: boolean | null = null;
  let ld = 0;
  if (cs === 1 && (rs >= Math.max(cols, 1) || rows <= 1)) {
    trans = false;
    ld = Math.max(rs, cols, 1);
  } else if (rs === 1 && (cs >= Math.max(rows, 1) || cols <= 1)) {
    trans = true;
    ld = Math.max(cs, rows, 1);
  }
  // Batch dims: a single stride must step through them (or all broadcast: stride 0).
  const ownBatch = t.shape.slice(0, nd - 2);
  const lead = batchShape.length - ownBatch.length;
  const batchDims: { size: number; stride: number }[] = [];
  let broadcastAll = true;
  let mixed = false;
  batchShape.forEach((size, i) => {
    const own = i < lead ? 1 : ownBatch[i - lead];
    const stride = i < lead || own !== size ? 0 : t.strides[i - lead];
    if (size !== 1) {
      if (stride !== 0) broadcastAll = false;
      else if (own === 1 && size > 1) mixed = true;
      batchDims.push({ size, stride });
    }
  });
  let batchStride = 0;
  let collapsible = true;
  if (!broadcastAll) {
    if (mixed) collapsible = false;
    for (let i = batchDims.length - 1; i > 0 && collapsible; i--) {
      if (batchDims[i - 1].stride !== batchDims[i].stride * batchDims[i].size) collapsible = false;
    }
    batchStride = batchDims.length > 0 ? batchDims[batchDims.length - 1].stride : 0;
  }
  if (trans !== null && collapsible) return { source: t, trans, ld, batchStride, temporary: false };
  // Fall back: materialize [batch..., rows, cols] contiguous.
  const full = noGrad(() => {
    const expanded = t.expand([...batchShape, rows, cols]);
    const c = expanded.contiguous();
    if (c !== expanded) expanded.dispose();
    return c;
  });
  return { source: full, trans: false, ld: Math.max(cols, 1), batchStride: broadcastAll ? 0 : rows * cols, temporary: true };
}

/** C = A·B for A [..., M, K], B [..., K, N] (batch dims broadcast) → [..., M, N], no grad recording. */
function matmulRaw(a: Tensor, b: Tensor): Tensor {
  const m = a.shape[a.ndim - 2];
  const k = a.shape[a.ndim - 1];
  const n = b.shape[b.ndim - 1];
  if (b.shape[b.ndim - 2] !== k) {
    throw rangeError('ERR_SHAPE', `matmul: ${shapeString(a.shape)} · ${shapeString(b.shape)}: inner dims ${k} and ${b.shape[b.ndim - 2]} differ`);
  }
  const batchShape = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), 'matmul');
  const batch = numel(batchShape);
  const out = Tensor.empty([...batchShape, m, n]);
  if (out.size === 0) return out;
  if (k === 0) {
    out.data().fill(0);
    return out;
  }
  const A = gemmOperand(a, batchShape);
  const B = gemmOperand(b, batchShape);
  try {
    native().gemm(
      elementsFrom(A.source), elementsFrom(B.source), out.data(), null,
      batch, m, n, k, A.trans, B.trans, A.ld, B.ld, n,
      A.batchStride, B.batchStride, m * n, 1, 0, Activation.None,
    );
  } finally {
    if (A.temporary) A.source.dispose();
    if (B.temporary) B.source.dispose();
  }
  return out;
}

/**
 * Matrix product with NumPy semantics for ≥ 2-D operands:
 * a [..., M, K] · b [..., K, N] → [..., M, N], batch dims broadcast.
 * A 1-D a is treated as [1, K] and a 1-D b as [K, 1] (the added dim is removed).
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  checkTensor('a', a);
  checkTensor('b', b);
  if (a.ndim === 0 || b.ndim === 0) throw rangeError('ERR_SHAPE', 'matmul: operands must have at least 1 dim');
  if (a.ndim === 1) {
    const r = matmul(a.unsqueeze(0), b);
    return r.squeeze(r.ndim - 2);
  }
  if (b.ndim === 1) {
    const r = matmul(a, b.unsqueeze(1));
    return r.squeeze(r.ndim - 1);
  }
  const out = matmulRaw(a, b);
  return recordOp('matmul', [a, b], out, (g) => {
    const ga = a.requiresGrad ? reduceTo(matmulRaw(g, b.transpose(-1, -2)), a.shape) : null;
    const gb = b.requiresGrad ? reduceTo(matmulRaw(a.transpose(-1, -2), g), b.shape) : null;
    return [ga, gb];
  });
}

function reduceTo(g: Tensor, shape: Shape): Tensor {
  const r = sumToShape(g, shape);
  if (r !== g) g.dispose();
  return r;
}

export type LinearActivation = 'none' | 'relu' | 'gelu';
const ACTIVATION: Record<LinearActivation, Activation> = { none: Activation.None, relu: Activation.Relu, gelu: Activation.Gelu };

/**
 * y = act(x · Wᵀ + b): x [..., in], weight [out, in], bias [out] or null → [..., out].
 * The activation is fused into the GEMM epilogue when no gradient is recorded;
 * when training, it is applied as a separate differentiable op.
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null, activation: LinearActivation = 'none'): Tensor {
  checkTensor('x', x);
  checkTensor('weight', weight);
  if (bias !== null) checkTensor('bias', bias);
  if (!(activation in ACTIVATION)) throw invalidArgument('activation', "'none', 'relu' or 'gelu'", activation);
  if (weight.ndim !== 2) throw rangeError('ERR_SHAPE', `linear: weight must be [out, in], got ${shapeString(weight.shape)}`);
  const [outFeatures, inFeatures] = weight.shape;
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== inFeatures) {
    throw rangeError('ERR_SHAPE', `linear: x ${shapeString(x.shape)} does not end in ${inFeatures} (weight ${shapeString(weight.shape)})`);
  }
  if (bias !== null && (bias.ndim !== 1 || bias.shape[0] !== outFeatures)) {
    throw rangeError('ERR_SHAPE', `linear: bias must be [${outFeatures}], got ${shapeString(bias.shape)}`);
  }
  const recording = [x, weight, bias].some((t) => t !== null && t.requiresGrad);
  const fuse = !recording || activation === 'none';
  const rows = x.size / Math.max(inFeatures, 1);
  const outShape = [...x.shape.slice(0, -1), outFeatures];
  const y = withContiguous(x, (xc) => withContiguous(weight, (wc) => {
    const out = Tensor.empty(outShape);
    if (out.size === 0) return out;
    if (inFeatures === 0) {
      out.data().fill(0);
      if (bias !== null) for (let r = 0; r < rows; r++) out.data().set(bias.toFloat32Array(), r * outFeatures);
      return out;
    }
    const b = bias === null ? null : withContiguous(bias, (bc) => bc.data().slice());
    native().gemm(
      xc.data(), wc.data(), out.data(), b,
      1, rows, outFeatures, inFeatures, false, true, inFeatures, inFeatures, outFeatures,
      0, 0, 0, 1, 0, fuse ? ACTIVATION[activation] : Activation.None,
    );
    return out;
  }));
  const recorded = recordOp('linear', bias === null ? [x, weight] : [x, weight, bias], y, (g) => {
    const g2 = g.reshape([rows, outFeatures]);
    const gx = x.requiresGrad ? reshapeTemporary(matmulRaw(g2, weight), x.shape) : null;
    let gw: Tensor | null = null;
    if (weight.requiresGrad) {
      const x2 = x.reshape([rows, inFeatures]);
      gw = matmulRaw(g2.transpose(0, 1), x2);
      x2.dispose();
    }
    const gb = bias !== null && bias.requiresGrad ? reshapeTemporary(sumToShape(g2, [1, outFeatures]), [outFeatures]) : null;
    g2.dispose();
    return bias === null ? [gx, gw] : [gx, gw, gb];
  });
  if (fuse) return recorded;
  return activation === 'relu' ? relu(recorded) : gelu(recorded);
}
