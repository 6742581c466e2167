/** Differentiable reductions over native kernels (cpp/ops/reduce.cc, elementwise sumToShape). */
import { rangeError } from '../errors.js';
import { native, ReduceOp } from '../native.js';
import { normalizeDim, numel, recordOp, sumToShape, Tensor } from '../tensor.js';
import { affine } from './elementwise.js';
import { checkTensor, reshapeTemporary, withContiguous } from './util.js';

function normalizeDims(x: Tensor, dims: number | readonly number[] | undefined): number[] {
  if (dims === undefined) return x.shape.map((_, i) => i);
  const list = typeof dims === 'number' ? [dims] : [...dims];
  const out = [...new Set(list.map((d) => normalizeDim(d, x.ndim)))];
  return out.sort((a, b) => a - b);
}

/** Σ over `dims` (all when omitted); keepDim keeps them as size 1. */
export function sum(x: Tensor, dims?: number | readonly number[], keepDim = false): Tensor {
  checkTensor('x', x);
  const reduced = normalizeDims(x, dims);
  const kept = x.shape.map((s, i) => (reduced.includes(i) ? 1 : s));
  const finalShape = keepDim ? kept : x.shape.filter((_, i) => !reduced.includes(i));
  const out = withContiguous(x, (xc) => {
    const r = sumToShape(xc, kept);
    return r === xc ? xc.clone() : r;
  });
  const y = reshapeTemporary(out, finalShape);
  return recordOp('sum', [x], y, (g) => {
    const gk = g.reshape(kept);
    const ge = gk.expand(x.shape);
    const gx = ge.contiguous();
    if (gx !== ge) ge.dispose();
    gk.dispose();
    return [gx];
  });
}

/** Mean over `dims` (all when omitted). */
export function mean(x: Tensor, dims?: number | readonly number[], keepDim = false): Tensor {
  const reduced = normalizeDims(checkTensor('x', x), dims);
  const count = numel(reduced.map((d) => x.shape[d]));
  const s = sum(x, dims, keepDim);
  const m = affine(s, count === 0 ? NaN : 1 / count);
  s.dispose();
  return m;
}

/** Max over one dim: values and argmax indices (gradient flows to the argmax entries). */
export function max(x: Tensor, dim: number, keepDim = false): { values: Tensor; indices: Int32Array } {
  checkTensor('x', x);
  const d = normalizeDim(dim, x.ndim);
  const size = x.shape[d];
  if (size === 0) throw rangeError('ERR_SHAPE', `max: dim ${d} has size 0`);
  const outer = numel(x.shape.slice(0, d));
  const inner = numel(x.shape.slice(d + 1));
  const keptShape = x.shape.map((s, i) => (i === d ? 1 : s));
  const finalShape = keepDim ? keptShape : x.shape.filter((_, i) => i !== d);
  const indices = new Int32Array(outer * inner);
  const values = withContiguous(x, (xc) => {
    const v = Tensor.empty(finalShape);
    if (v.size > 0) native().reduce(ReduceOp.Max, xc.data(), v.data(), outer, size, inner, indices);
    return v;
  });
  recordOp('max', [x], values, (g) => {
    const gx = Tensor.zeros(x.shape);
    const gv = withContiguous(g, (gc) => gc.data().slice());
    const out = gx.data();
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) out[(o * size + indices[o * inner + i]) * inner + i] += gv[o * inner + i];
    }
    return [gx];
  });
  return { values, indices };
}

/** √(Σ x²) over all elements of several tensors, accumulated in float64 (gradient clipping). */
export function globalNorm(tensors: readonly Tensor[]): number {
  let total = 0;
  for (const t of tensors) total += withContiguous(t, (c) => (c.size === 0 ? 0 : native().sumSquares(c.data(), c.size)));
  return Math.sqrt(total);
}
