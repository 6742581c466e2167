/** Differentiable joins and gathers over native kernels (cpp/ops/index.cc). */
import { invalidArgument, rangeError } from '../errors.js';
import { native } from '../native.js';
import { normalizeDim, numel, recordOp, shapeString, Tensor } from '../tensor.js';
import { checkTensor, withContiguous } from './util.js';

function rangeIndices(start: number, count: number): Int32Array {
  const idx = new Int32Array(count);
  for (let i = 0; i < count; i++) idx[i] = start + i;
  return idx;
}

/** Joins tensors along `dim`; all other dims must match. */
export function concat(tensors: readonly Tensor[], dim = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw invalidArgument('tensors', 'a non-empty array of Tensors', tensors);
  tensors.forEach((t, i) => checkTensor(`tensors[${i}]`, t));
  const first = tensors[0];
  const d = normalizeDim(dim, first.ndim);
  for (const [i, t] of tensors.entries()) {
    if (t.ndim !== first.ndim || t.shape.some((s: number, j: number) => j !== d && s !== first.shape[j])) {
      throw rangeError('ERR_SHAPE', `concat: tensors[${i}] ${shapeString(t.shape)} does not match ${shapeString(first.shape)} outside dim ${d}`);
    }
  }
  const total = tensors.reduce((s, t) => s + t.shape[d], 0);
  const shape = [...first.shape];
  shape[d] = total;
  const outer = numel(shape.slice(0, d));
  const inner = numel(shape.slice(d + 1));
  // Scatter each input into its range of a zeroed output (exact: x + 0 = x).
  const out = Tensor.zeros(shape);
  let start = 0;
  const starts: number[] = [];
  for (const t of tensors) {
    starts.push(start);
    const count = t.shape[d];
    if (count > 0 && out.size > 0) {
      withContiguous(t, (tc) => native().indexAdd(tc.data(), rangeIndices(start, count), out.data(), outer, total, inner, count));
    }
    start += count;
  }
  return recordOp('concat', [...tensors], out, (g) =>
    tensors.map((t, i) => (t.requiresGrad ? indexSelectRaw(g, d, rangeIndices(starts[i], t.shape[d])) : null)),
  );
}

/** Stacks same-shape tensors along a new dim. */
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw invalidArgument('tensors', 'a non-empty array of Tensors', tensors);
  const d = normalizeDim(dim, tensors[0].ndim + 1);
  const expanded = tensors.map((t) => t.unsqueeze(d));
  const out = concat(expanded, d);
  for (const e of expanded) e.dispose();
  return out;
}

function indexSelectRaw(x: Tensor, d: number, idx: Int32Array): Tensor {
  const outer = numel(x.shape.slice(0, d));
  const inner = numel(x.shape.slice(d + 1));
  const shape = [...x.shape];
  shape[d] = idx.length;
  const out = Tensor.empty(shape);
  if (out.size > 0) withContiguous(x, (xc) => native().indexSelect(xc.data(), idx, out.data(), outer, x.shape[d], inner, idx.length));
  return out;
}

/** Rows of x along `dim` at `indices` (torch.index_select); gradients scatter-add back. */
export function indexSelect(x: Tensor, dim: number, indices: Int32Array | readonly number[]): Tensor {
  checkTensor('x', x);
  const d = normalizeDim(dim, x.ndim);
  const size = x.shape[d];
  const idx = Int32Array.from(indices, (v, i) => {
    if (!Number.isInteger(v) || v < -size || v >= size) throw rangeError('ERR_RANGE', `indexSelect: indices[${i}] = ${v} is out of range for size ${size}`);
    return v < 0 ? v + size : v;
  });
  const out = indexSelectRaw(x, d, idx);
  return recordOp('indexSelect', [x], out, (g) => {
    const gx = Tensor.zeros(x.shape);
    const outer = numel(x.shape.slice(0, d));
    const inner = numel(x.shape.slice(d + 1));
    if (g.size > 0) withContiguous(g, (gc) => native().indexAdd(gc.data(), idx, gx.data(), outer, size, inner, idx.length));
    return [gx];
  });
}
