/** Shared argument checks and broadcasting rules for the differentiable ops. */
import { invalidArgument, rangeError, typeError } from '../errors.js';
import { noGrad, shapeString, Tensor, type Shape } from '../tensor.js';

/** Throws unless `t` is a live float32 Tensor. */
export function checkTensor(name: string, t: unknown): Tensor {
  if (!(t instanceof Tensor)) throw invalidArgument(name, 'a Tensor', t);
  if (t.disposed) t.storage; // throws ERR_DISPOSED with the shape in the message
  if (t.dtype !== 'float32') throw typeError('ERR_DTYPE', `${name}: ops compute in float32, got ${t.dtype} (use .to('float32'))`);
  return t;
}

/** NumPy broadcasting of two shapes. */
export function broadcastShapes(a: Shape, b: Shape, op = 'op'): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw rangeError('ERR_SHAPE', `${op}: shapes ${shapeString(a)} and ${shapeString(b)} do not broadcast`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides that read `t` broadcast to `shape` (0 on broadcast dims), relative to t.offset. */
export function broadcastStrides(t: Tensor, shape: Shape): number[] {
  const lead = shape.length - t.ndim;
  return shape.map((size, i) => (i < lead || t.shape[i - lead] !== size ? 0 : t.strides[i - lead]));
}

/** The storage elements of `t` starting at its offset (a Float32Array view). */
export function elementsFrom(t: Tensor): Float32Array {
  return (t.storage.elements() as Float32Array).subarray(t.offset);
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((s, i) => s === b[i]);
}

/** Runs fn on a contiguous version of t, disposing the temporary copy afterwards. */
export function withContiguous<T>(t: Tensor, fn: (c: Tensor) => T): T {
  const c = noGrad(() => t.contiguous());
  try {
    return fn(c);
  } finally {
    if (c !== t) c.dispose();
  }
}

/** t.reshape(shape), disposing t when the result is a new view (t is a temporary). */
export function reshapeTemporary(t: Tensor, shape: Shape): Tensor {
  const r = t.reshape(shape);
  if (r !== t) t.dispose();
  return r;
}
