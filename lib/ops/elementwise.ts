/**
 * Differentiable elementwise ops over native kernels (cpp/ops/elementwise.cc):
 * unary activations, broadcasting binary arithmetic and scalar affine maps.
 */
import { checkFiniteNumber } from '../errors.js';
import { BinaryOp, native, UnaryOp } from '../native.js';
import { recordOp, sumToShape, Tensor } from '../tensor.js';
import { broadcastShapes, broadcastStrides, checkTensor, elementsFrom, withContiguous } from './util.js';

function unary(op: UnaryOp, name: string, x: Tensor): Tensor {
  checkTensor('x', x);
  return withContiguous(x, (xc) => {
    const y = Tensor.empty(x.shape);
    if (y.size > 0) native().unaryForward(op, xc.data(), y.data(), y.size);
    // Saved for backward: the input values (a contiguous copy if x is a view) and y.
    const saved = xc === x ? x : xc.clone();
    return recordOp(name, [x], y, (g) => {
      const gx = Tensor.empty(x.shape);
      withContiguous(g, (gc) => {
        if (gx.size > 0) native().unaryBackward(op, saved.data(), y.data(), gc.data(), gx.data(), gx.size);
      });
      return [gx];
    });
  });
}

/** max(x, 0) */
export const relu = (x: Tensor): Tensor => unary(UnaryOp.Relu, 'relu', x);
/** x/2 · (1 + erf(x/√2)) — the exact GELU (PyTorch's default, timm's nn.GELU). */
export const gelu = (x: Tensor): Tensor => unary(UnaryOp.Gelu, 'gelu', x);
export const tanh = (x: Tensor): Tensor => unary(UnaryOp.Tanh, 'tanh', x);
export const sigmoid = (x: Tensor): Tensor => unary(UnaryOp.Sigmoid, 'sigmoid', x);
export const exp = (x: Tensor): Tensor => unary(UnaryOp.Exp, 'exp', x);
export const log = (x: Tensor): Tensor => unary(UnaryOp.Log, 'log', x);
export const neg = (x: Tensor): Tensor => unary(UnaryOp.Neg, 'neg', x);
export const sqrt = (x: Tensor): Tensor => unary(UnaryOp.Sqrt, 'sqrt', x);
export const abs = (x: Tensor): Tensor => unary(UnaryOp.Abs, 'abs', x);
export const square = (x: Tensor): Tensor => unary(UnaryOp.Square, 'square', x);

/** out = op(a, b) with NumPy broadcasting; reads strided/broadcast inputs in place. */
function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor, name: string): Tensor {
  const shape = broadcastShapes(a.shape, b.shape, name);
  const out = Tensor.empty(shape);
  if (out.size > 0) {
    native().binaryForward(op, elementsFrom(a), elementsFrom(b), out.data(), shape, broadcastStrides(a, shape), broadcastStrides(b, shape));
  }
  return out;
}

function binary(op: BinaryOp, name: string, a: Tensor, b: Tensor, backward: (g: Tensor) => [Tensor | null, Tensor | null]): Tensor {
  checkTensor('a', a);
  checkTensor('b', b);
  const out = binaryRaw(op, a, b, name);
  return recordOp(name, [a, b], out, (g) => {
    const [ga, gb] = backward(g);
    return [reduceGrad(ga, a), reduceGrad(gb, b)];
  });
}

/** Sums a broadcast gradient back to the input's shape (disposing the full-size one). */
function reduceGrad(g: Tensor | null, input: Tensor): Tensor | null {
  if (g === null || !input.requiresGrad) {
    if (g !== null) g.dispose();
    return null;
  }
  const r = sumToShape(g, input.shape);
  if (r !== g) g.dispose();
  return r;
}

/** a + b (broadcasting). */
export function add(a: Tensor, b: Tensor): Tensor {
  return binary(BinaryOp.Add, 'add', a, b, (g) => [g.detach(), g.detach()]);
}

/** a − b (broadcasting). */
export function sub(a: Tensor, b: Tensor): Tensor {
  return binary(BinaryOp.Sub, 'sub', a, b, (g) => [g.detach(), b.requiresGrad ? mulScalar(g, -1) : null]);
}

/** a ⊙ b (broadcasting). */
export function mul(a: Tensor, b: Tensor): Tensor {
  return binary(BinaryOp.Mul, 'mul', a, b, (g) => [
    a.requiresGrad ? binaryRaw(BinaryOp.Mul, g, b, 'mul') : null,
    b.requiresGrad ? binaryRaw(BinaryOp.Mul, g, a, 'mul') : null,
  ]);
}

/** a / b (broadcasting). */
export function div(a: Tensor, b: Tensor): Tensor {
  return binary(BinaryOp.Div, 'div', a, b, (g) => {
    const ga = a.requiresGrad ? binaryRaw(BinaryOp.Div, g, b, 'div') : null;
    let gb: Tensor | null = null;
    if (b.requiresGrad) {
      // d(a/b)/db = −a/b² = −(a/b)/b
      const q = binaryRaw(BinaryOp.Div, a, b, 'div');
      const t = binaryRaw(BinaryOp.Div, q, b, 'div');
      gb = binaryRaw(BinaryOp.Mul, g, t, 'mul');
      native().affine(gb.data(), gb.data(), gb.size, -1, 0);
      q.dispose();
      t.dispose();
    }
    return [ga, gb];
  });
}

/** Elementwise max(a, b) (broadcasting); the gradient goes to a where a ≥ b. */
export function maximum(a: Tensor, b: Tensor): Tensor {
  return minmax(BinaryOp.Max, 'maximum', a, b);
}

/** Elementwise min(a, b) (broadcasting); the gradient goes to a where a ≤ b. */
export function minimum(a: Tensor, b: Tensor): Tensor {
  return minmax(BinaryOp.Min, 'minimum', a, b);
}

function minmax(op: BinaryOp, name: string, a: Tensor, b: Tensor): Tensor {
  const out = binaryRaw(op, checkTensor('a', a), checkTensor('b', b), name);
  return recordOp(name, [a, b], out, (g) => {
    // Mask of where the output came from a: out == a (ties go to a).
    const shape = out.shape;
    const fromA = Tensor.empty(shape);
    const oc = out.data();
    const aExpanded = a.expand(shape);
    const av = aExpanded.toFloat32Array();
    aExpanded.dispose();
    const m = fromA.data();
    for (let i = 0; i < m.length; i++) m[i] = oc[i] === av[i] ? 1 : 0;
    const ga = a.requiresGrad ? binaryRaw(BinaryOp.Mul, g, fromA, name) : null;
    let gb: Tensor | null = null;
    if (b.requiresGrad) {
      native().affine(m, m, m.length, -1, 1);
      gb = binaryRaw(BinaryOp.Mul, g, fromA, name);
    }
    fromA.dispose();
    return [reduceGrad(ga, a), reduceGrad(gb, b)];
  });
}

/** alpha · x + beta (scalars). */
export function affine(x: Tensor, alpha: number, beta = 0): Tensor {
  checkTensor('x', x);
  checkFiniteNumber('alpha', alpha);
  checkFiniteNumber('beta', beta);
  return withContiguous(x, (xc) => {
    const y = Tensor.empty(x.shape);
    if (y.size > 0) native().affine(xc.data(), y.data(), y.size, alpha, beta);
    return recordOp('affine', [x], y, (g) => [mulScalar(g, alpha)]);
  });
}

/** x · s */
export function mulScalar(x: Tensor, s: number): Tensor {
  return affine(x, s, 0);
}

/** x + s */
export function addScalar(x: Tensor, s: number): Tensor {
  return affine(x, 1, s);
}
