/**
 * Tensors in native memory, views, deterministic release, and the reverse-mode
 * autograd tape.
 *
 * Memory model: a Tensor is a view (shape, strides, offset) of a Storage, a block
 * of native memory (`native().alloc`). Storages are reference counted by the
 * tensors that view them; `dispose()` (or `using`, or the end of a `tidy` scope)
 * drops a reference and the last one frees the block at once. GC finalizers (the
 * external ArrayBuffer's) are only a safety net.
 *
 * Autograd: an op whose inputs require grad records a GradNode on its output:
 * the inputs, and a closure mapping the output gradient to input gradients.
 * `loss.backward()` walks the graph in reverse topological order, accumulating
 * into leaf `.grad` tensors (which no scope owns), and releases the graph.
 */
import {
  checkNonNegativeInteger,
  invalidArgument,
  MstarError,
  rangeError,
  typeError,
} from './errors.js';
import { DtypeCode, native } from './native.js';

export type Dtype = 'float32' | 'float16' | 'bfloat16';
export type Shape = readonly number[];

const DTYPE_CODE: Record<Dtype, DtypeCode> = {
  float32: DtypeCode.Float32,
  float16: DtypeCode.Float16,
  bfloat16: DtypeCode.BFloat16,
};
const DTYPE_BYTES: Record<Dtype, number> = { float32: 4, float16: 2, bfloat16: 2 };

export function dtypeCode(dtype: Dtype): DtypeCode {
  return DTYPE_CODE[dtype];
}

/** Product of a shape's dims (1 for a scalar). */
export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides of a contiguous tensor. */
export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

/** Validates a user-given shape: an array of non-negative safe integers whose product is safe. */
export function checkShape(name: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) throw invalidArgument(name, 'an array of non-negative integers', shape);
  let n = 1;
  shape.forEach((d, i) => {
    checkNonNegativeInteger(`${name}[${i}]`, d);
    n *= d as number;
  });
  if (!Number.isSafeInteger(n)) throw rangeError('ERR_SHAPE', `${name}: ${JSON.stringify(shape)} has too many elements`);
  return [...(shape as number[])];
}

export function shapeString(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

/** A reference-counted block of native memory. */
export class Storage {
  readonly buffer: ArrayBuffer;
  readonly dtype: Dtype;
  /** Elements (not bytes). */
  readonly length: number;
  private refs = 0;

  constructor(dtype: Dtype, length: number, zero: boolean) {
    this.dtype = dtype;
    this.length = length;
    this.buffer = native().alloc(length * DTYPE_BYTES[dtype], zero);
  }

  get released(): boolean {
    return this.refs < 0;
  }

  retain(): void {
    if (this.refs < 0) throw new MstarError('ERR_DISPOSED', 'storage was already released');
    this.refs++;
  }

  release(): void {
    if (this.refs < 0) return;
    if (--this.refs === 0) {
      this.refs = -1;
      native().free(this.buffer);
    }
  }

  /** A typed view of all elements: Float32Array for float32, Uint16Array (raw bits) otherwise. */
  elements(): Float32Array | Uint16Array {
    return this.dtype === 'float32' ? new Float32Array(this.buffer) : new Uint16Array(this.buffer);
  }
}

// ---------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------

type Scope = Set<Tensor>;
const scopeStack: Scope[] = [];

function track(t: Tensor): void {
  const scope = scopeStack[scopeStack.length - 1];
  if (scope) scope.add(t);
}

function collectTensors(value: unknown, into: Set<Tensor>, depth = 0): void {
  if (depth > 8 || value === null || typeof value !== 'object') return;
  if (value instanceof Tensor) {
    into.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collectTensors(v, into, depth + 1);
  } else if (value instanceof Map) {
    for (const v of value.values()) collectTensors(v, into, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, into, depth + 1);
  }
}

/**
 * Runs `fn` in a scope: every tensor created inside is disposed when it returns,
 * except the tensors it returns (a tensor, or arrays/plain objects/Maps of them),
 * which move to the enclosing scope. Async functions are not supported (a scope
 * must not span an await); use `using` or explicit `dispose()` there.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Scope = new Set();
  scopeStack.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    scopeStack.pop();
    for (const t of scope) t.dispose();
    throw error;
  }
  scopeStack.pop();
  if (result instanceof Promise) {
    for (const t of scope) t.dispose();
    throw typeError('ERR_ARGUMENT', 'tidy(fn): fn must be synchronous (it returned a Promise)');
  }
  const kept = new Set<Tensor>();
  collectTensors(result, kept);
  const parent = scopeStack[scopeStack.length - 1];
  for (const t of scope) {
    if (kept.has(t)) {
      if (parent) parent.add(t);
    } else {
      t.dispose();
    }
  }
  return result;
}

/** Removes tensors from every scope so they live until disposed explicitly. Returns its argument. */
export function keep<T extends Tensor | Tensor[]>(value: T): T {
  const list = Array.isArray(value) ? value : [value];
  for (const t of list) for (const scope of scopeStack) scope.delete(t);
  return value;
}

// ---------------------------------------------------------------------------
// Autograd state
// ---------------------------------------------------------------------------

let gradEnabled = true;

/** Runs fn with gradient recording off (inference, optimizer steps). */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/**
 * Maps the output gradient to one gradient per input (null where the input needs
 * none). Returned tensors must be new (or views of) tensors, or the output gradient
 * itself: the engine disposes them once consumed. Runs with recording off.
 */
export type BackwardFn = (gradOutput: Tensor) => (Tensor | null)[];

export interface GradNode {
  readonly name: string;
  inputs: Tensor[];
  backward: BackwardFn | null;
}

// ---------------------------------------------------------------------------
// Tensor
// ---------------------------------------------------------------------------

export interface TensorInit {
  storage: Storage;
  shape: Shape;
  strides?: Shape;
  offset?: number;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  /** Offset of element [0, ..., 0] in the storage, in elements. */
  readonly offset: number;
  readonly dtype: Dtype;
  /** Whether gradients flow to this tensor (leaves: set by the user; outputs: inferred). */
  requiresGrad = false;
  /** Accumulated gradient of a leaf after backward(); owned by no scope. */
  grad: Tensor | null = null;
  /** How this tensor was made, when gradients flow through it. */
  gradFn: GradNode | null = null;
  private storageRef: Storage | null;

  constructor({ storage, shape, strides, offset = 0 }: TensorInit) {
    storage.retain();
    this.storageRef = storage;
    this.dtype = storage.dtype;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    track(this);
  }

  // ---- creation ----

  /** Uninitialized contiguous tensor (contents unspecified). */
  static empty(shape: Shape, dtype: Dtype = 'float32'): Tensor {
    return new Tensor({ storage: new Storage(dtype, numel(shape), false), shape });
  }

  static zeros(shape: Shape, dtype: Dtype = 'float32'): Tensor {
    return new Tensor({ storage: new Storage(dtype, numel(shape), true), shape });
  }

  static full(shape: Shape, value: number): Tensor {
    const t = Tensor.empty(shape);
    t.data().fill(value);
    return t;
  }

  /**
   * Copies `data` into a new native tensor of `shape` (default [data.length]).
   * float32 data: Float32Array, Float64Array or number[]; float16/bfloat16 data: raw bits as Uint16Array.
   */
  static fromArray(data: ArrayLike<number>, shape?: Shape, dtype: Dtype = 'float32'): Tensor {
    const isTyped = ArrayBuffer.isView(data);
    if (!isTyped && !Array.isArray(data)) throw invalidArgument('data', 'a typed array or an array of numbers', data);
    if (isTyped && (data.constructor === DataView || (data as unknown as { buffer: ArrayBuffer }).buffer === undefined)) {
      throw invalidArgument('data', 'a typed array', data);
    }
    if (isTyped && (data as unknown as { buffer: { detached?: boolean } }).buffer.detached === true) {
      throw typeError('ERR_DETACHED', 'data: its ArrayBuffer is detached');
    }
    if (dtype === 'float32') {
      if (isTyped && !(data instanceof Float32Array) && !(data instanceof Float64Array)) {
        throw typeError('ERR_DTYPE', `data: float32 tensors are made from Float32Array, Float64Array or number[], not ${data.constructor.name}`);
      }
    } else if (!(data instanceof Uint16Array)) {
      throw typeError('ERR_DTYPE', `data: ${dtype} tensors are made from the raw 16-bit patterns in a Uint16Array`);
    }
    const dims = shape === undefined ? [data.length] : checkShape('shape', shape);
    if (numel(dims) !== data.length) {
      throw rangeError('ERR_SHAPE', `data has ${data.length} elements but shape ${shapeString(dims)} needs ${numel(dims)}`);
    }
    const t = new Tensor({ storage: new Storage(dtype, data.length, false), shape: dims });
    t.storage.elements().set(data);
    return t;
  }

  /** Scalar tensor (shape []). */
  static scalar(value: number): Tensor {
    return Tensor.fromArray([value], []);
  }

  // ---- properties ----

  get storage(): Storage {
    if (this.storageRef === null) {
      throw new MstarError('ERR_DISPOSED', `tensor ${shapeString(this.shape)} was disposed and cannot be used`);
    }
    return this.storageRef;
  }

  get disposed(): boolean {
    return this.storageRef === null;
  }

  get ndim(): number {
    return this.shape.length;
  }

  get size(): number {
    return numel(this.shape);
  }

  isContiguous(): boolean {
    let expected = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== expected) return false;
      expected *= this.shape[i];
    }
    return true;
  }

  // ---- data access ----

  /**
   * The elements of a contiguous float32 tensor as a Float32Array over native
   * memory (no copy; writes go to the tensor). Invalid after dispose().
   */
  data(): Float32Array {
    if (this.dtype !== 'float32') throw typeError('ERR_DTYPE', `data(): tensor is ${this.dtype}; use .to('float32') first`);
    if (!this.isContiguous()) throw typeError('ERR_SHAPE', 'data(): tensor is not contiguous; use .contiguous() first');
    return new Float32Array(this.storage.buffer, this.offset * 4, this.size);
  }

  /** Raw elements of a contiguous tensor of any dtype (Uint16Array bits for 16-bit dtypes). */
  rawData(): Float32Array | Uint16Array {
    if (!this.isContiguous()) throw typeError('ERR_SHAPE', 'rawData(): tensor is not contiguous; use .contiguous() first');
    return this.dtype === 'float32'
      ? new Float32Array(this.storage.buffer, this.offset * 4, this.size)
      : new Uint16Array(this.storage.buffer, this.offset * 2, this.size);
  }

  /** A JS-owned copy of the values as float32, in row-major order. */
  toFloat32Array(): Float32Array {
    const out = new Float32Array(this.size);
    if (this.dtype === 'float32' && this.isContiguous()) {
      out.set(this.data());
    } else if (out.length > 0) {
      native().copyStrided(this.storage.elements(), DTYPE_CODE[this.dtype], this.offset, [...this.shape], [...this.strides], out, DtypeCode.Float32);
    }
    return out;
  }

  /** Nested arrays, for printing and small tests. */
  toNested(): unknown {
    const flat = this.toFloat32Array();
    const build = (dim: number, base: number): unknown => {
      if (dim === this.ndim) return flat[base];
      const stride = numel(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, base + i * stride));
    };
    return build(0, 0);
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw rangeError('ERR_SHAPE', `item(): tensor has ${this.size} elements, not 1`);
    return this.toFloat32Array()[0];
  }

  toString(): string {
    return `Tensor(${shapeString(this.shape)}, ${this.dtype}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }

  // ---- lifetime ----

  /** Releases this tensor's reference to its storage now. Idempotent. */
  dispose(): void {
    if (this.storageRef === null) return;
    const storage = this.storageRef;
    this.storageRef = null;
    // gradFn stays: disposing an intermediate frees its data, not the graph through
    // it (a backward that needs the data reports ERR_DISPOSED).
    for (const scope of scopeStack) scope.delete(this);
    storage.release();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- autograd ----

  /** Marks a leaf as requiring grad (returns this). */
  requireGrad(flag = true): this {
    if (this.gradFn !== null) throw new MstarError('ERR_AUTOGRAD', 'requireGrad(): only leaf tensors can be marked');
    if (flag && this.dtype !== 'float32') throw typeError('ERR_DTYPE', 'only float32 tensors can require grad');
    this.requiresGrad = flag;
    return this;
  }

  /** A tensor sharing storage but cut from the graph. */
  detach(): Tensor {
    return new Tensor({ storage: this.storage, shape: this.shape, strides: this.strides, offset: this.offset });
  }

  /** Clears the accumulated gradient. */
  zeroGrad(): void {
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /**
   * Back-propagates from this tensor. A non-scalar output needs `gradOutput` of
   * its shape. Leaf gradients accumulate (+=) into `.grad`.
   */
  backward(gradOutput?: Tensor): void {
    runBackward(this, gradOutput);
  }

  // ---- views (share storage; gradients flow through) ----

  /** Same data, new shape (one dim may be −1). Copies only when the layout requires it. */
  reshape(shape: Shape): Tensor {
    const dims = inferShape(shape, this.size);
    if (this.isContiguous()) {
      return recordView(this, new Tensor({ storage: this.storage, shape: dims, offset: this.offset }), 'reshape', (g) => g.reshape(this.shape));
    }
    return this.contiguous().reshape(dims);
  }

  /** Reorders dims (no copy). */
  permute(dims: readonly number[]): Tensor {
    if (!Array.isArray(dims) || dims.length !== this.ndim) {
      throw rangeError('ERR_SHAPE', `permute(): needs ${this.ndim} dims, got ${JSON.stringify(dims)}`);
    }
    const seen = new Set<number>();
    const norm = dims.map((d, i) => {
      const n = normalizeDim(d, this.ndim, `dims[${i}]`);
      if (seen.has(n)) throw rangeError('ERR_SHAPE', `permute(): dim ${n} repeated`);
      seen.add(n);
      return n;
    });
    const inverse = new Array<number>(norm.length);
    norm.forEach((d, i) => (inverse[d] = i));
    const out = new Tensor({
      storage: this.storage,
      shape: norm.map((d) => this.shape[d]),
      strides: norm.map((d) => this.strides[d]),
      offset: this.offset,
    });
    return recordView(this, out, 'permute', (g) => g.permute(inverse));
  }

  /** Swaps two dims (no copy). */
  transpose(dim0: number, dim1: number): Tensor {
    const order = this.shape.map((_, i) => i);
    const a = normalizeDim(dim0, this.ndim, 'dim0');
    const b = normalizeDim(dim1, this.ndim, 'dim1');
    [order[a], order[b]] = [order[b], order[a]];
    return this.permute(order);
  }

  /** Elements [start, end) along `dim` (no copy). */
  slice(dim: number, start: number, end?: number): Tensor {
    const d = normalizeDim(dim, this.ndim, 'dim');
    const size = this.shape[d];
    const s = clampIndex(start, size, 'start');
    const e = end === undefined ? size : clampIndex(end, size, 'end');
    const length = Math.max(0, e - s);
    const shape = [...this.shape];
    shape[d] = length;
    const out = new Tensor({ storage: this.storage, shape, strides: this.strides, offset: this.offset + s * this.strides[d] });
    return recordView(this, out, 'slice', (g) => sliceBackward(g, this.shape, d, s));
  }

  /** Inserts a dim of size 1. */
  unsqueeze(dim: number): Tensor {
    const d = normalizeDim(dim, this.ndim + 1, 'dim');
    const shape = [...this.shape];
    shape.splice(d, 0, 1);
    return this.reshape(shape);
  }

  /** Removes a dim of size 1 (or all of them). */
  squeeze(dim?: number): Tensor {
    if (dim === undefined) return this.reshape(this.shape.filter((s) => s !== 1));
    const d = normalizeDim(dim, this.ndim, 'dim');
    if (this.shape[d] !== 1) return this;
    const shape = [...this.shape];
    shape.splice(d, 1);
    return this.reshape(shape);
  }

  /** Broadcasts size-1 dims to `shape` (stride 0; no copy). */
  expand(shape: Shape): Tensor {
    const dims = checkShape('shape', shape);
    if (dims.length < this.ndim) throw rangeError('ERR_SHAPE', `expand(): ${shapeString(dims)} has fewer dims than ${shapeString(this.shape)}`);
    const lead = dims.length - this.ndim;
    const strides = dims.map((size, i) => {
      if (i < lead) return 0;
      const own = this.shape[i - lead];
      if (own === size) return this.strides[i - lead];
      if (own === 1) return 0;
      throw rangeError('ERR_SHAPE', `expand(): cannot expand ${shapeString(this.shape)} to ${shapeString(dims)}`);
    });
    const out = new Tensor({ storage: this.storage, shape: dims, strides, offset: this.offset });
    return recordView(this, out, 'expand', (g) => sumToShape(g, this.shape));
  }

  /** This tensor if contiguous, else a contiguous copy (gradients flow). */
  contiguous(): Tensor {
    if (this.isContiguous()) return this;
    const out = Tensor.empty(this.shape, this.dtype);
    if (out.size > 0) {
      native().copyStrided(this.storage.elements(), DTYPE_CODE[this.dtype], this.offset, [...this.shape], [...this.strides], out.storage.elements(), DTYPE_CODE[this.dtype]);
    }
    return recordView(this, out, 'contiguous', (g) => g);
  }

  /** A contiguous copy (always a new storage). */
  clone(): Tensor {
    const out = Tensor.empty(this.shape, this.dtype);
    if (out.size > 0) {
      native().copyStrided(this.storage.elements(), DTYPE_CODE[this.dtype], this.offset, [...this.shape], [...this.strides], out.storage.elements(), DTYPE_CODE[this.dtype]);
    }
    return recordView(this, out, 'clone', (g) => g);
  }

  /** Converts the storage dtype (float32 ↔ float16/bfloat16, round-to-nearest-even). */
  to(dtype: Dtype): Tensor {
    if (!(dtype in DTYPE_CODE)) throw invalidArgument('dtype', "'float32', 'float16' or 'bfloat16'", dtype);
    if (dtype === this.dtype) return this;
    const out = Tensor.empty(this.shape, dtype);
    if (out.size > 0) {
      native().copyStrided(this.storage.elements(), DTYPE_CODE[this.dtype], this.offset, [...this.shape], [...this.strides], out.storage.elements(), DTYPE_CODE[dtype]);
    }
    return out;
  }
}

// ---------------------------------------------------------------------------
// helpers for views
// ---------------------------------------------------------------------------

export function normalizeDim(dim: number, ndim: number, name = 'dim'): number {
  if (!Number.isInteger(dim) || dim < -ndim || dim >= Math.max(ndim, 1)) {
    throw rangeError('ERR_SHAPE', `${name} ${dim} is out of range for a tensor of ${ndim} dims`);
  }
  return dim < 0 ? dim + ndim : dim;
}

function clampIndex(index: number, size: number, name: string): number {
  if (!Number.isInteger(index)) throw invalidArgument(name, 'an integer', index);
  const i = index < 0 ? index + size : index;
  return Math.min(Math.max(i, 0), size);
}

function inferShape(shape: Shape, size: number): number[] {
  if (!Array.isArray(shape)) throw invalidArgument('shape', 'an array of integers', shape);
  let inferred = -1;
  let known = 1;
  shape.forEach((d, i) => {
    if (d === -1) {
      if (inferred >= 0) throw rangeError('ERR_SHAPE', 'reshape(): only one dim can be -1');
      inferred = i;
    } else {
      checkNonNegativeInteger(`shape[${i}]`, d);
      known *= d;
    }
  });
  const dims = [...shape];
  if (inferred >= 0) {
    if (known === 0 || size % known !== 0) throw rangeError('ERR_SHAPE', `reshape(): cannot infer -1 in ${shapeString(shape)} for ${size} elements`);
    dims[inferred] = size / known;
  } else if (known !== size) {
    throw rangeError('ERR_SHAPE', `reshape(): shape ${shapeString(shape)} has ${known} elements, tensor has ${size}`);
  }
  return dims;
}

/**
 * Records an op on the tape when recording is on and any input requires grad:
 * marks `out` as requiring grad and attaches the node. Returns `out`.
 */
export function recordOp(name: string, inputs: Tensor[], out: Tensor, backward: BackwardFn): Tensor {
  if (gradEnabled && inputs.some((t) => t.requiresGrad)) {
    out.requiresGrad = true;
    out.gradFn = { name, inputs, backward };
  }
  return out;
}

/** Records a view/copy op whose backward is a single function of the output gradient. */
function recordView(input: Tensor, out: Tensor, name: string, backward: (g: Tensor) => Tensor): Tensor {
  if (gradEnabled && input.requiresGrad) {
    out.requiresGrad = true;
    out.gradFn = { name, inputs: [input], backward: (g) => [backward(g)] };
  }
  return out;
}

/** Gradient of slice: zeros of the input shape with g placed at [start, start + len) of dim. */
function sliceBackward(g: Tensor, inputShape: Shape, dim: number, start: number): Tensor {
  const outer = numel(inputShape.slice(0, dim));
  const inner = numel(inputShape.slice(dim + 1));
  const count = g.shape[dim];
  const gx = Tensor.zeros(inputShape);
  if (g.size > 0) {
    const gc = g.contiguous();
    const idx = new Int32Array(count);
    for (let i = 0; i < count; i++) idx[i] = start + i;
    native().indexAdd(gc.data(), idx, gx.data(), outer, inputShape[dim], inner, count);
    if (gc !== g) gc.dispose();
  }
  return gx;
}

/** Sums a (broadcast) gradient down to `shape` (the backward of broadcasting). */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (g.shape.length === shape.length && g.shape.every((s, i) => s === shape[i])) return g;
  const lead = g.ndim - shape.length;
  if (lead < 0) throw rangeError('ERR_SHAPE', `sumToShape(): ${shapeString(g.shape)} has fewer dims than ${shapeString(shape)}`);
  const padded = [...new Array<number>(lead).fill(1), ...shape];
  const gc = g.contiguous();
  const out = Tensor.empty(shape);
  if (out.size > 0) native().sumToShape(gc.data(), [...g.shape], out.data(), padded);
  if (gc !== g) gc.dispose();
  return out;
}

// ---------------------------------------------------------------------------
// backward pass
// ---------------------------------------------------------------------------

/** Adds `g` into `target.grad` (creating it, owned by no scope). */
function accumulateLeafGrad(target: Tensor, g: Tensor): void {
  if (target.grad === null) {
    const copy = keep(Tensor.empty(target.shape));
    if (copy.size > 0) copy.data().set(g.isContiguous() ? g.data() : g.toFloat32Array());
    target.grad = copy;
  } else {
    addInPlace(target.grad, g);
  }
}

/** target += g (target contiguous float32, same shape). */
function addInPlace(target: Tensor, g: Tensor): void {
  const gc = g.contiguous();
  if (gc.size > 0) native().axpy(gc.data(), target.data(), gc.size, 1);
  if (gc !== g) gc.dispose();
}

function runBackward(root: Tensor, gradOutput?: Tensor): void {
  if (!root.requiresGrad) {
    throw new MstarError('ERR_AUTOGRAD', 'backward(): tensor does not require grad (no input of the computation requires grad)');
  }
  if (gradOutput !== undefined) {
    if (!(gradOutput instanceof Tensor)) throw invalidArgument('gradOutput', 'a Tensor', gradOutput);
    if (gradOutput.shape.length !== root.shape.length || gradOutput.shape.some((s, i) => s !== root.shape[i])) {
      throw rangeError('ERR_SHAPE', `backward(): gradOutput ${shapeString(gradOutput.shape)} ≠ output ${shapeString(root.shape)}`);
    }
  } else if (root.size !== 1) {
    throw rangeError('ERR_SHAPE', `backward(): output has ${root.size} elements; pass gradOutput of shape ${shapeString(root.shape)}`);
  }

  // Reverse topological order by iterative DFS over gradFn edges.
  const order: Tensor[] = [];
  const visited = new Set<Tensor>([root]);
  const stack: [Tensor, number][] = [[root, 0]];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const inputs = top[0].gradFn?.inputs ?? [];
    if (top[1] < inputs.length) {
      const next = inputs[top[1]++];
      if (next.requiresGrad && !visited.has(next)) {
        visited.add(next);
        stack.push([next, 0]);
      }
    } else {
      stack.pop();
      order.push(top[0]);
    }
  }

  noGrad(() => {
    // Every value in `grads` is a distinct Tensor object owned by this pass (a view
    // where the same data reaches several inputs), so each can be disposed on its
    // own; gradients are never mutated in place once handed to an input.
    const grads = new Map<Tensor, Tensor>();
    grads.set(root, gradOutput !== undefined ? gradOutput.detach() : Tensor.full(root.shape, 1));
    try {
      for (let n = order.length - 1; n >= 0; n--) {
        const t = order[n];
        const g = grads.get(t);
        if (g === undefined) continue;
        grads.delete(t);
        const node = t.gradFn;
        if (node === null) {
          accumulateLeafGrad(t, g);
          g.dispose();
          continue;
        }
        if (node.backward === null) {
          g.dispose();
          throw new MstarError('ERR_AUTOGRAD', `backward(): the graph through ${node.name} was already used by an earlier backward()`);
        }
        const inputGrads = node.backward(g);
        const handedOut = new Set<Tensor>();
        node.inputs.forEach((input, i) => {
          let gi = inputGrads[i];
          if (!input.requiresGrad || gi === null || gi === undefined) return;
          if (gi === g || handedOut.has(gi)) gi = gi.detach();
          handedOut.add(gi);
          const existing = grads.get(input);
          if (existing === undefined) {
            grads.set(input, gi);
          } else {
            const sum = existing.clone();
            addInPlace(sum, gi);
            existing.dispose();
            gi.dispose();
            grads.set(input, sum);
          }
        });
        // Release what the node saved; a second backward through it is an error.
        node.backward = null;
        node.inputs = [];
        g.dispose();
      }
    } finally {
      for (const g of grads.values()) g.dispose();
    }
  });
}
