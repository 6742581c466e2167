/**
 * HostTensor: the plain in-memory tensor record every reader in lib/io returns and
 * every writer takes. It owns no native memory: `data` holds the raw little-endian
 * bytes of the elements, contiguous and row-major (C order), so a tensor of shape
 * [A, B] with element size s keeps element (a, b) at bytes [(a·B + b)·s, (a·B + b + 1)·s).
 *
 * Readers return zero-copy views into the file's bytes where they can: `data` may
 * alias the file buffer and other tensors (tensors that share a torch storage).
 * Treat it as read-only, or copy it (`data.slice()`) before writing into it.
 *
 * Conversions (`toFloat32`, `fromFloat32`, ...) round to nearest even like PyTorch.
 */
import { FormatError, withCode } from './errors.js';

/** Element types a HostTensor can hold (torch names). */
export type HostDType =
  | 'float32'
  | 'float16'
  | 'bfloat16'
  | 'float64'
  | 'int64'
  | 'int32'
  | 'int16'
  | 'int8'
  | 'uint8'
  | 'bool';

export const HOST_DTYPES: readonly HostDType[] = [
  'float32',
  'float16',
  'bfloat16',
  'float64',
  'int64',
  'int32',
  'int16',
  'int8',
  'uint8',
  'bool',
];

/** A dense, contiguous, row-major tensor in host memory: `data.byteLength = numel(shape)·elementSize(dtype)`. */
export interface HostTensor {
  dtype: HostDType;
  shape: number[];
  /** Raw little-endian element bytes, contiguous row-major. May be a view into a file buffer. */
  data: Uint8Array;
}

const ELEMENT_SIZES: Record<HostDType, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

/** True when this machine stores multi-byte numbers little-endian (typed arrays follow the host). */
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function isHostDType(value: unknown): value is HostDType {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ELEMENT_SIZES, value);
}

/** Bytes per element of `dtype`. */
export function elementSize(dtype: HostDType): number {
  return ELEMENT_SIZES[dtype];
}

/**
 * Product of non-negative integer factors, or `undefined` when a factor is not a
 * non-negative safe integer or the product exceeds 2^53 − 1 (checked before it can
 * lose precision). Used for every size computed from a file.
 */
export function checkedProduct(factors: readonly number[]): number | undefined {
  for (const factor of factors) {
    if (!Number.isSafeInteger(factor) || factor < 0) return undefined;
  }
  // An empty tensor of huge nominal size is still empty.
  if (factors.includes(0)) return 0;
  let product = 1;
  for (const factor of factors) {
    if (product > Number.MAX_SAFE_INTEGER / factor) return undefined;
    product *= factor;
  }
  return product;
}

/** Number of elements of `shape`; RangeError (code ERR_SHAPE) for a shape that is not a list of non-negative safe integers. */
export function shapeNumel(shape: readonly number[]): number {
  const numel = checkedProduct(shape);
  if (numel === undefined) {
    throw withCode(new RangeError(`shape [${shape.join(', ')}] must be non-negative integers with a product below 2^53`), 'ERR_SHAPE');
  }
  return numel;
}

/** Bytes a contiguous tensor of `dtype` and `shape` occupies. */
export function tensorByteLength(dtype: HostDType, shape: readonly number[]): number {
  return shapeNumel(shape) * elementSize(dtype);
}

/** Builds a HostTensor, checking that `data` holds exactly numel(shape)·elementSize(dtype) bytes. */
export function hostTensor(dtype: HostDType, shape: readonly number[], data: Uint8Array): HostTensor {
  if (!isHostDType(dtype)) throw withCode(new TypeError(`dtype must be one of ${HOST_DTYPES.join(', ')}, got ${String(dtype)}`), 'ERR_DTYPE');
  const expected = tensorByteLength(dtype, shape);
  if (data.byteLength !== expected) {
    throw withCode(
      new RangeError(`data has ${data.byteLength} bytes, but ${dtype} [${shape.join(', ')}] needs ${expected}`),
      'ERR_SHAPE',
    );
  }
  return { dtype, shape: [...shape], data };
}

export function isHostTensor(value: unknown): value is HostTensor {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Partial<HostTensor>;
  return isHostDType(candidate.dtype) && Array.isArray(candidate.shape) && candidate.data instanceof Uint8Array;
}

/** Throws TypeError/RangeError (with a code) unless `tensor` is a well-formed HostTensor; `name` goes into the message. */
export function assertHostTensor(tensor: unknown, name: string): asserts tensor is HostTensor {
  if (!isHostTensor(tensor)) {
    throw withCode(new TypeError(`${name} must be a HostTensor { dtype, shape, data: Uint8Array }`), 'ERR_DTYPE');
  }
  const expected = checkedProduct(tensor.shape);
  if (expected === undefined || expected * elementSize(tensor.dtype) !== tensor.data.byteLength) {
    throw withCode(
      new RangeError(`${name}: ${tensor.data.byteLength} bytes do not match ${tensor.dtype} [${tensor.shape.join(', ')}]`),
      'ERR_SHAPE',
    );
  }
}

/** Tensors by name, in the order they should be written. */
export type NamedTensors = ReadonlyMap<string, HostTensor> | Readonly<Record<string, HostTensor>>;

/** The [name, tensor] pairs of `tensors` in order, each checked to be a well-formed HostTensor. */
export function namedTensorEntries(tensors: NamedTensors): Array<[string, HostTensor]> {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  for (const [name, tensor] of entries) assertHostTensor(tensor, `tensor ${JSON.stringify(name)}`);
  return entries;
}

// ---------------------------------------------------------------------------------
// Byte order and typed views

/** A copy of `bytes` with every `size`-byte element reversed (big ↔ little endian). */
export function byteSwapped(bytes: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(bytes.byteLength);
  if (size === 1) {
    out.set(bytes);
    return out;
  }
  for (let element = 0; element < bytes.byteLength; element += size) {
    for (let k = 0; k < size; k++) out[element + k] = bytes[element + size - 1 - k];
  }
  return out;
}

interface TypedArrayConstructorLike<T> {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): T;
  readonly BYTES_PER_ELEMENT: number;
}

/** A typed view of little-endian `bytes`; zero-copy when aligned on a little-endian host, else a copy. */
function typedView<T>(bytes: Uint8Array, Ctor: TypedArrayConstructorLike<T>): T {
  const size = Ctor.BYTES_PER_ELEMENT;
  const count = bytes.byteLength / size;
  if (!HOST_LITTLE_ENDIAN && size > 1) {
    const swapped = byteSwapped(bytes, size);
    return new Ctor(swapped.buffer, 0, count);
  }
  if (bytes.byteOffset % size === 0) return new Ctor(bytes.buffer, bytes.byteOffset, count);
  return new Ctor(bytes.slice().buffer, 0, count);
}

/** Bytes of a typed array in little-endian order (a view when the host is little-endian). */
function littleEndianBytes(values: ArrayBufferView & { BYTES_PER_ELEMENT: number }): Uint8Array {
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  return HOST_LITTLE_ENDIAN ? bytes : byteSwapped(bytes, values.BYTES_PER_ELEMENT);
}

/** The typed array natural for each dtype (float16/bfloat16: raw 16-bit patterns). */
export type HostTypedArray =
  | Float32Array
  | Float64Array
  | Uint16Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

/**
 * The elements of `tensor` as the typed array natural for its dtype: Float32Array,
 * Float64Array, BigInt64Array (int64), Int32Array, Int16Array, Int8Array, Uint8Array
 * (uint8, bool as 0/1) or Uint16Array (raw float16/bfloat16 bit patterns).
 * Zero-copy when `tensor.data` is aligned; a copy otherwise.
 */
export function typedArrayOf(tensor: HostTensor): HostTypedArray {
  switch (tensor.dtype) {
    case 'float32':
      return typedView(tensor.data, Float32Array);
    case 'float64':
      return typedView(tensor.data, Float64Array);
    case 'float16':
    case 'bfloat16':
      return typedView(tensor.data, Uint16Array);
    case 'int64':
      return typedView(tensor.data, BigInt64Array);
    case 'int32':
      return typedView(tensor.data, Int32Array);
    case 'int16':
      return typedView(tensor.data, Int16Array);
    case 'int8':
      return typedView(tensor.data, Int8Array);
    case 'uint8':
    case 'bool':
      return tensor.data;
  }
}

// ---------------------------------------------------------------------------------
// Scalar float16 / bfloat16 conversions (round to nearest even)

const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

let float16Table: Float32Array | undefined;

/** All 65536 float16 values as float32 (built on first use, 256 KiB). */
function float16ToFloat32Table(): Float32Array {
  if (float16Table) return float16Table;
  const table = new Float32Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const mantissa = bits & 0x3ff;
    if (exponent === 0) table[bits] = sign * mantissa * 2 ** -24;
    else if (exponent === 0x1f) table[bits] = mantissa ? NaN : sign * Infinity;
    else table[bits] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  float16Table = table;
  return table;
}

export function float16BitsToFloat32(bits: number): number {
  return float16ToFloat32Table()[bits & 0xffff];
}

export function bfloat16BitsToFloat32(bits: number): number {
  scratchBits[0] = (bits & 0xffff) << 16;
  return scratchFloat[0];
}

/** float32 bit pattern → float16 bit pattern, round to nearest even; overflow → ±inf. */
function float32BitsToFloat16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 | (mantissa >>> 13) : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign;
    const full = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    const halfway = 2 ** (shift - 1);
    const remainder = full % 2 ** shift;
    let result = Math.floor(full / 2 ** shift);
    if (remainder > halfway || (remainder === halfway && result & 1)) result++;
    return sign | result;
  }
  let result = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && result & 1)) result++; // a carry into the exponent is correct rounding
  return sign | result;
}

/** float32 bit pattern → bfloat16 bit pattern, round to nearest even; NaN stays a (quiet) NaN. */
function float32BitsToBfloat16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return Math.floor((x + 0x7fff + ((x >>> 16) & 1)) / 65536) & 0xffff;
}

export function float32ToFloat16Bits(value: number): number {
  scratchFloat[0] = value;
  return float32BitsToFloat16Bits(scratchBits[0]);
}

export function float32ToBfloat16Bits(value: number): number {
  scratchFloat[0] = value;
  return float32BitsToBfloat16Bits(scratchBits[0]);
}

// ---------------------------------------------------------------------------------
// Bulk conversions

/**
 * The elements of `tensor` as float32 ([numel], row-major). Zero-copy for an aligned
 * float32 tensor; float16/bfloat16 widen exactly; float64 and integers round to nearest
 * float32 (int64 beyond 2^24 loses precision, as in torch); bool gives 0/1.
 */
export function toFloat32(tensor: HostTensor): Float32Array {
  const values = typedArrayOf(tensor);
  if (tensor.dtype === 'float32') return values as Float32Array;
  const out = new Float32Array(values.length);
  if (tensor.dtype === 'float16') {
    const table = float16ToFloat32Table();
    const bits = values as Uint16Array;
    for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  } else if (tensor.dtype === 'bfloat16') {
    const bits = values as Uint16Array;
    const outBits = new Uint32Array(out.buffer);
    for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16;
  } else if (tensor.dtype === 'int64') {
    const ints = values as BigInt64Array;
    for (let i = 0; i < ints.length; i++) out[i] = Number(ints[i]);
  } else if (tensor.dtype === 'bool') {
    const flags = values as Uint8Array;
    for (let i = 0; i < flags.length; i++) out[i] = flags[i] ? 1 : 0;
  } else {
    out.set(values as Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array);
  }
  return out;
}

/** The elements of `tensor` as float64 ([numel]); exact for every dtype except int64 beyond 2^53. */
export function toFloat64(tensor: HostTensor): Float64Array {
  if (tensor.dtype === 'float64') return Float64Array.from(typedArrayOf(tensor) as Float64Array);
  if (tensor.dtype === 'int64') {
    const ints = typedArrayOf(tensor) as BigInt64Array;
    const out = new Float64Array(ints.length);
    for (let i = 0; i < ints.length; i++) out[i] = Number(ints[i]);
    return out;
  }
  return Float64Array.from(toFloat32(tensor));
}

/**
 * A HostTensor of `dtype` and `shape` from float32 values ([numel], row-major):
 * float16/bfloat16 round to nearest even, integers truncate toward zero, bool is
 * `value !== 0`. For `float32` the bytes are a view of `values` (no copy).
 */
export function fromFloat32(values: Float32Array, shape: readonly number[], dtype: HostDType = 'float32'): HostTensor {
  const numel = shapeNumel(shape);
  if (values.length !== numel) {
    throw withCode(new RangeError(`values has ${values.length} elements, shape [${shape.join(', ')}] needs ${numel}`), 'ERR_SHAPE');
  }
  switch (dtype) {
    case 'float32':
      return hostTensor(dtype, shape, littleEndianBytes(values));
    case 'float16':
    case 'bfloat16': {
      const bits = new Uint16Array(numel);
      const inputBits = new Uint32Array(values.buffer, values.byteOffset, numel);
      const convert = dtype === 'float16' ? float32BitsToFloat16Bits : float32BitsToBfloat16Bits;
      for (let i = 0; i < numel; i++) bits[i] = convert(inputBits[i]);
      return hostTensor(dtype, shape, littleEndianBytes(bits));
    }
    case 'float64':
      return hostTensor(dtype, shape, littleEndianBytes(Float64Array.from(values)));
    case 'int64': {
      const ints = new BigInt64Array(numel);
      for (let i = 0; i < numel; i++) ints[i] = BigInt(Math.trunc(finiteOrZero(values[i])));
      return hostTensor(dtype, shape, littleEndianBytes(ints));
    }
    case 'int32':
      return hostTensor(dtype, shape, littleEndianBytes(Int32Array.from(values, truncate)));
    case 'int16':
      return hostTensor(dtype, shape, littleEndianBytes(Int16Array.from(values, truncate)));
    case 'int8':
      return hostTensor(dtype, shape, littleEndianBytes(Int8Array.from(values, truncate)));
    case 'uint8':
      return hostTensor(dtype, shape, Uint8Array.from(values, truncate));
    case 'bool':
      return hostTensor(dtype, shape, Uint8Array.from(values, (value) => (value !== 0 ? 1 : 0)));
  }
}

function finiteOrZero(value: number): number {
  return Number.isFinite(value) ? value : 0;
}

function truncate(value: number): number {
  return Math.trunc(finiteOrZero(value));
}

/**
 * A HostTensor viewing a typed array's bytes (no copy on little-endian hosts).
 * The dtype follows the array: Float32Array → float32, Float64Array → float64,
 * BigInt64Array → int64, Int32Array → int32, Int16Array → int16, Int8Array → int8,
 * Uint8Array → uint8 (pass `asBool` for bool).
 */
export function fromTypedArray(
  values: Float32Array | Float64Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array,
  shape: readonly number[],
  { asBool = false }: { asBool?: boolean } = {},
): HostTensor {
  const dtype: HostDType =
    values instanceof Float32Array
      ? 'float32'
      : values instanceof Float64Array
        ? 'float64'
        : values instanceof BigInt64Array
          ? 'int64'
          : values instanceof Int32Array
            ? 'int32'
            : values instanceof Int16Array
              ? 'int16'
              : values instanceof Int8Array
                ? 'int8'
                : asBool
                  ? 'bool'
                  : 'uint8';
  return hostTensor(dtype, shape, littleEndianBytes(values));
}

/** A HostTensor that owns a copy of `tensor`'s bytes (detached from any file buffer). */
export function cloneHostTensor(tensor: HostTensor): HostTensor {
  return { dtype: tensor.dtype, shape: [...tensor.shape], data: tensor.data.slice() };
}

/** A FormatError for a dtype this package has no HostDType for (e.g. complex, float8). */
export function unsupportedDTypeError(name: string, where: string): FormatError {
  return new FormatError(
    `${where}: dtype ${name} is not supported (supported: ${HOST_DTYPES.join(', ')})`,
    'ERR_DTYPE',
  );
}
