/**
 * PyTorch checkpoints (`torch.save` files, `.pth` / `.pt` / `.bin`) without Python.
 *
 * Reading handles both formats `torch.load` accepts:
 * - zip (torch ≥ 1.6): `<archive>/data.pkl` (the object pickle), `<archive>/data/<key>`
 *   (one raw storage per key), `<archive>/byteorder`; `<archive>` is whatever folder
 *   the first entry is in, as in torch's reader.
 * - legacy: five things back to back — the magic-number pickle
 *   (0x1950a86a20f9469cfc6c), the protocol-version pickle (1001), the sys-info pickle,
 *   the object pickle, the pickle listing storage keys — then, per key, an int64
 *   element count and the raw little-endian storage bytes.
 *
 * The object pickle runs on the safe VM of lib/io/pickle.ts with the torch allowlist
 * below; persistent ids ('storage', <torch.XStorage>, key, location, numel[, view])
 * become storage references, `_rebuild_tensor_v2` calls become tensor references, and
 * after every storage is located each tensor reference becomes a HostTensor: a
 * zero-copy view of the file when it is contiguous, a materialized copy when it is a
 * strided view (transpose, slice with offset, expand). Offsets, shapes and strides
 * are checked against the storage before any byte is touched.
 *
 * Writing produces the zip format with a protocol 2 pickle of an OrderedDict of
 * `_rebuild_tensor_v2` calls, exactly what `torch.load(weights_only=True)` accepts.
 */
import { FormatError, check, forbiddenError, withSource } from './errors.js';
import { bytesOf, writeFileAtomic, collectBytes, type ByteSink } from './files.js';
import {
  HOST_DTYPES,
  namedTensorEntries,
  byteSwapped,
  checkedProduct,
  elementSize,
  assertHostTensor,
  isHostTensor,
  type HostDType,
  type HostTensor,
  type NamedTensors,
} from './host-tensor.js';
import {
  PickleDict,
  describePickleValue,
  isPickleTuple,
  pickleCallable,
  unpickle,
  PickleWriter,
  type PickleObject,
  type PickleValue,
} from './pickle.js';
import { looksLikeZip, readZip, writeZip, type ZipWriteEntry } from './zip.js';

// ---------------------------------------------------------------------------------
// What a checkpoint holds once read

/** A value from a checkpoint: pickle data with every tensor turned into a HostTensor. */
export type CheckpointValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | HostTensor
  | CheckpointValue[]
  | readonly CheckpointValue[]
  | CheckpointDict
  | Set<CheckpointValue>
  | PickleObject;

/** A Python dict from a checkpoint (insertion-ordered; state dicts have string keys). */
export type CheckpointDict = Map<CheckpointValue, CheckpointValue>;

export interface TorchReadOptions {
  /** Check the CRC-32 of every zip entry read (one extra pass over the data). Default false. */
  verifyCrc?: boolean;
}

export interface TorchCheckpointOptions extends TorchReadOptions {
  /**
   * Dotted path of the state dict inside the checkpoint (`'model_state_dict'`,
   * `'model.ema'`); default: found by `findStateDict`.
   */
  stateDictKey?: string;
}

// ---------------------------------------------------------------------------------
// Torch objects the allowlist produces

/** `torch.FloatStorage` & co.: a storage class, standing for its dtype. */
class StorageType implements PickleObject {
  constructor(
    readonly pickleType: string,
    readonly dtype: HostDType,
  ) {}
}

/** `torch.float32` & co. when a checkpoint stores a dtype as a value. */
export class TorchDTypeValue implements PickleObject {
  readonly pickleType: string;
  constructor(
    readonly name: string,
    /** The matching HostDType, when there is one. */
    readonly dtype: HostDType | undefined,
  ) {
    this.pickleType = `torch.${name}`;
  }
}

/** A typed window onto the bytes stored under `key`: [byteOffset, byteOffset + byteLength). */
class StorageRef implements PickleObject {
  readonly pickleType = 'storage';
  constructor(
    readonly key: string,
    readonly dtype: HostDType,
    readonly byteOffset: number,
    readonly byteLength: number,
  ) {}

  get numel(): number {
    return Math.floor(this.byteLength / elementSize(this.dtype));
  }
}

/** A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage. */
class TensorRef implements PickleObject {
  readonly pickleType = 'tensor';
  constructor(
    readonly storage: StorageRef,
    readonly storageOffset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}

  /** Tensors pickled by plain `torch.save` carry no BUILD state; an empty one is accepted. */
  setState(state: PickleValue): void {
    const empty = state === null || (state instanceof PickleDict && state.size === 0) || (Array.isArray(state) && state.length === 0);
    if (!empty) throw forbiddenError('BUILD with state on a tensor (tensor subclass)');
  }
}

/** torch storage class name → dtype (the classes `torch.save` names in persistent ids). */
const STORAGE_TYPES: ReadonlyArray<readonly [string, HostDType]> = [
  ['FloatStorage', 'float32'],
  ['HalfStorage', 'float16'],
  ['BFloat16Storage', 'bfloat16'],
  ['DoubleStorage', 'float64'],
  ['LongStorage', 'int64'],
  ['IntStorage', 'int32'],
  ['ShortStorage', 'int16'],
  ['CharStorage', 'int8'],
  ['ByteStorage', 'uint8'],
  ['BoolStorage', 'bool'],
];

/** dtype → storage class name, for writing. */
const STORAGE_TYPE_OF_DTYPE = new Map(STORAGE_TYPES.map(([name, dtype]) => [dtype, name]));

/** torch dtype attribute names (and aliases) that may appear as values. */
const TORCH_DTYPE_NAMES: ReadonlyArray<readonly [string, HostDType | undefined]> = [
  ['float32', 'float32'], ['float', 'float32'], ['float16', 'float16'], ['half', 'float16'],
  ['bfloat16', 'bfloat16'], ['float64', 'float64'], ['double', 'float64'], ['int64', 'int64'],
  ['long', 'int64'], ['int32', 'int32'], ['int', 'int32'], ['int16', 'int16'], ['short', 'int16'],
  ['int8', 'int8'], ['uint8', 'uint8'], ['bool', 'bool'], ['complex64', undefined], ['complex128', undefined],
];

function asSafeInteger(value: PickleValue, what: string): number {
  check(typeof value === 'number' && Number.isSafeInteger(value) && value >= 0, () => `${what} must be a non-negative integer, got ${describeScalar(value)}`);
  return value as number;
}

function describeScalar(value: PickleValue): string {
  return typeof value === 'number' || typeof value === 'bigint' || typeof value === 'string' ? String(value) : describePickleValue(value);
}

function asIntegerTuple(value: PickleValue, what: string): number[] {
  check(Array.isArray(value), () => `${what} must be a tuple of integers, got ${describePickleValue(value)}`);
  return (value as readonly PickleValue[]).map((item, index) => asSafeInteger(item, `${what}[${index}]`));
}

/** `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])` and v1. */
function rebuildTensor(name: string) {
  return pickleCallable(name, (args) => {
    check(args.length >= 4, () => `${name} expects at least 4 arguments, got ${args.length}`);
    const storage = args[0];
    if (!(storage instanceof StorageRef)) throw new FormatError(`${name}: first argument must be a storage, got ${describePickleValue(storage)}`);
    const shape = asIntegerTuple(args[2], `${name} size`);
    const stride = asIntegerTuple(args[3], `${name} stride`);
    check(shape.length === stride.length, () => `${name}: size has ${shape.length} dims but stride has ${stride.length}`);
    return new TensorRef(storage, asSafeInteger(args[1], `${name} storage_offset`), shape, stride);
  });
}

/** `_rebuild_parameter(data, requires_grad, backward_hooks)` and `_rebuild_parameter_with_state(..., state)`: the data tensor. */
function rebuildParameter(name: string) {
  return pickleCallable(name, (args) => {
    const data = args[0];
    if (!(data instanceof TensorRef)) throw new FormatError(`${name}: first argument must be a tensor, got ${describePickleValue(args[0] ?? null)}`);
    return data;
  });
}

/** The torch globals a state dict needs, added to the plain-data allowlist of pickle.ts. */
export const TORCH_GLOBALS: ReadonlyMap<string, PickleValue> = new Map<string, PickleValue>([
  ['torch._utils._rebuild_tensor_v2', rebuildTensor('torch._utils._rebuild_tensor_v2')],
  ['torch._utils._rebuild_tensor', rebuildTensor('torch._utils._rebuild_tensor')],
  ['torch._utils._rebuild_parameter', rebuildParameter('torch._utils._rebuild_parameter')],
  ['torch._utils._rebuild_parameter_with_state', rebuildParameter('torch._utils._rebuild_parameter_with_state')],
  ['torch.Size', pickleCallable('torch.Size', (args) => Object.freeze([...asIntegerTuple(args[0] ?? null, 'torch.Size')]))],
  ...STORAGE_TYPES.map(([name, dtype]): [string, PickleValue] => [`torch.${name}`, new StorageType(`torch.${name}`, dtype)]),
  ...TORCH_DTYPE_NAMES.map(([name, dtype]): [string, PickleValue] => [`torch.${name}`, new TorchDTypeValue(name, dtype)]),
]);

// ---------------------------------------------------------------------------------
// Persistent ids

interface RootStorage {
  dtype: HostDType;
  byteLength: number;
}

/**
 * Resolves ('storage', storage_type, key, location, numel[, view_metadata]) ids,
 * remembering each root storage's size as the first id naming it declares it
 * (torch does the same).
 */
class StorageResolver {
  readonly roots = new Map<string, RootStorage>();

  resolve = (pid: PickleValue): PickleValue => {
    check(Array.isArray(pid) && pid.length >= 5, () => `persistent id must be a tuple ('storage', type, key, location, numel), got ${describePickleValue(pid)}`);
    const [kind, storageType, key, , numelValue] = pid as readonly PickleValue[];
    if (kind !== 'storage') throw forbiddenError(`persistent id of kind ${describeScalar(kind)}`);
    if (!(storageType instanceof StorageType)) throw new FormatError(`persistent id names ${describePickleValue(storageType)}, not a torch storage type`);
    check(typeof key === 'string', 'storage key must be a string');
    const dtype = storageType.dtype;
    const size = elementSize(dtype);
    const numel = asSafeInteger(numelValue, `storage ${key} numel`);
    const byteLength = checkedProduct([numel, size]);
    check(byteLength !== undefined, () => `storage ${key}: ${numel} elements overflow`);
    const known = this.roots.get(key as string);
    if (!known) this.roots.set(key as string, { dtype, byteLength });
    const rootByteLength = known?.byteLength ?? byteLength;

    const view = pid.length > 5 ? (pid as readonly PickleValue[])[5] : null;
    if (view === null) return new StorageRef(key as string, dtype, 0, Math.min(byteLength, rootByteLength));
    // Legacy storage views (torch < 1.0): (view_key, offset, size) in elements of the dtype.
    check(Array.isArray(view) && view.length === 3, 'storage view metadata must be (key, offset, size)');
    const viewOffset = checkedProduct([asSafeInteger(view[1], 'storage view offset'), size]);
    const viewLength = checkedProduct([asSafeInteger(view[2], 'storage view size'), size]);
    check(
      viewOffset !== undefined && viewLength !== undefined && viewOffset + viewLength <= rootByteLength,
      () => `storage view of ${key} reaches past its ${rootByteLength} bytes`,
    );
    return new StorageRef(key as string, dtype, viewOffset as number, viewLength as number);
  };
}

// ---------------------------------------------------------------------------------
// Reading

const LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL_VERSION = 1001;

/** Bytes of each root storage, by key (little-endian, as stored). */
type StorageBytes = (key: string) => Uint8Array;

/**
 * Reads a whole torch checkpoint (zip or legacy) and returns what `torch.load`
 * would: dicts as Maps, tensors as HostTensors (zero-copy views where contiguous).
 */
export function readTorchFile(source: Uint8Array | string, options: TorchReadOptions = {}): CheckpointValue {
  const path = typeof source === 'string' ? source : undefined;
  return withSource(path, () => {
    const bytes = bytesOf(source);
    if (looksLikeZip(bytes)) return readZipCheckpoint(bytes, options);
    if (bytes.byteLength >= 2 && bytes[0] === 0x80) return readLegacyCheckpoint(bytes); // PROTO: a pickle stream
    if (bytes.byteLength >= 262 && new TextDecoder('latin1').decode(bytes.subarray(257, 262)) === 'ustar') {
      throw new FormatError('the tar-based torch format (torch < 0.1.10) is not supported; re-save with torch.save');
    }
    throw new FormatError('not a PyTorch checkpoint (neither a zip archive nor a legacy pickle stream)');
  });
}

/**
 * Reads the state dict of a checkpoint as `name → HostTensor`: the dict at
 * `options.stateDictKey`, else the one `findStateDict` picks, flattened with dotted
 * names (a plain state dict gives its own keys unchanged).
 */
export function readTorchCheckpoint(source: Uint8Array | string, options: TorchCheckpointOptions = {}): Map<string, HostTensor> {
  const root = readTorchFile(source, options);
  const path = typeof source === 'string' ? source : undefined;
  return withSource(path, () => {
    const stateDict = options.stateDictKey === undefined ? findStateDict(root) : valueAtPath(root, options.stateDictKey);
    return flattenTensors(stateDict);
  });
}

function readZipCheckpoint(bytes: Uint8Array, options: TorchReadOptions): CheckpointValue {
  const archive = readZip(bytes);
  const first = archive.names[0];
  check(first !== undefined, 'zip checkpoint has no entries');
  const slash = first.indexOf('/');
  check(slash >= 0, () => `zip checkpoint entry ${first} is not in a folder (torch archives keep everything under <archive>/)`);
  const prefix = first.slice(0, slash + 1);
  const record = (name: string): Uint8Array => archive.read(prefix + name, { verifyCrc: options.verifyCrc });

  check(archive.has(`${prefix}data.pkl`), () => `zip checkpoint has no ${prefix}data.pkl (a TorchScript archive or not a torch file?)`);
  let bigEndian = false;
  if (archive.has(`${prefix}byteorder`)) {
    const order = new TextDecoder().decode(record('byteorder')).trim();
    check(order === 'little' || order === 'big', () => `byteorder record says ${JSON.stringify(order)}`);
    bigEndian = order === 'big';
  }

  const resolver = new StorageResolver();
  const pickle = record('data.pkl');
  const { value } = unpickle(pickle, { globals: TORCH_GLOBALS, persistentLoad: resolver.resolve });
  const storageBytes: StorageBytes = (key) => {
    const name = `data/${key}`;
    check(archive.has(prefix + name), () => `storage ${key} has no ${prefix}${name} record`);
    return record(name);
  };
  return materialize(value, resolver, storageBytes, { bigEndian, copyBudget: copyBudgetFor(bytes) });
}

function readLegacyCheckpoint(bytes: Uint8Array): CheckpointValue {
  const magic = unpickle(bytes);
  check(magic.value === LEGACY_MAGIC_NUMBER, 'not a PyTorch checkpoint (legacy magic number missing)');
  const protocol = unpickle(bytes, { offset: magic.end });
  check(protocol.value === LEGACY_PROTOCOL_VERSION, () => `unsupported legacy protocol version ${describeScalar(protocol.value)}`);
  const systemInfo = unpickle(bytes, { offset: protocol.end });
  const resolver = new StorageResolver();
  const object = unpickle(bytes, { offset: systemInfo.end, globals: TORCH_GLOBALS, persistentLoad: resolver.resolve });
  const keyList = unpickle(bytes, { offset: object.end });
  check(Array.isArray(keyList.value), 'legacy checkpoint: storage key list is not a list');

  // Raw storages follow, each as an int64 element count and its bytes.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const located = new Map<string, Uint8Array>();
  let position = keyList.end;
  for (const key of keyList.value as readonly PickleValue[]) {
    check(typeof key === 'string', 'legacy checkpoint: storage keys must be strings');
    const root = resolver.roots.get(key as string);
    check(root !== undefined, () => `legacy checkpoint lists storage ${key as string}, which no tensor uses`);
    check(!located.has(key as string), () => `legacy checkpoint lists storage ${key as string} twice`);
    check(bytes.byteLength - position >= 8, () => `legacy checkpoint truncated: storage ${key as string} header at ${position}`);
    const count = view.getBigUint64(position, true);
    const size = elementSize(root.dtype);
    check(
      count === BigInt(root.byteLength / size),
      () => `legacy storage ${key as string} holds ${count} elements, its tensors declared ${root.byteLength / size}`,
    );
    const start = position + 8;
    check(bytes.byteLength - start >= root.byteLength, () => `legacy checkpoint truncated: storage ${key as string} needs ${root.byteLength} bytes at ${start}`);
    located.set(key as string, bytes.subarray(start, start + root.byteLength));
    position = start + root.byteLength;
  }
  const storageBytes: StorageBytes = (key) => {
    const data = located.get(key);
    check(data !== undefined, () => `legacy checkpoint: storage ${key} has no data`);
    return data;
  };
  return materialize(object.value, resolver, storageBytes, { bigEndian: false, copyBudget: copyBudgetFor(bytes) });
}

// ---------------------------------------------------------------------------------
// Tensor references → HostTensors

/**
 * Where a value sits in the checkpoint, as a chain of keys back to the root. Names
 * are joined only when needed (a tensor's name, an error), so walking a deeply nested
 * file costs O(1) per level instead of copying ever longer paths.
 */
interface PathNode {
  parent: PathNode | undefined;
  key: string;
}

function childNode(parent: PathNode | undefined, key: PickleValue): PathNode {
  return { parent, key: describeKey(key) };
}

function pathParts(node: PathNode | undefined): string[] {
  const parts: string[] = [];
  for (let current = node; current; current = current.parent) parts.push(current.key);
  return parts.reverse();
}

function pathLabel(node: PathNode | undefined): string {
  return node ? pathParts(node).join('.') : '<root>';
}

/**
 * Bytes a checkpoint may allocate beyond its own size for copies (strided views,
 * byte swapping): twice the file plus 256 MiB. A view with stride 0 can describe a
 * tensor far larger than its storage; torch keeps such views lazily, we must copy,
 * so a tiny hostile file must not be able to ask for terabytes.
 */
function copyBudgetFor(file: Uint8Array): number {
  return 2 * file.byteLength + 256 * 2 ** 20;
}

interface MaterializeOptions {
  /** The storages are big-endian (zip `byteorder` record says 'big'): swap them. */
  bigEndian: boolean;
  /** Most bytes all copies together may allocate. */
  copyBudget: number;
}

/**
 * Rebuilds the unpickled tree with HostTensors in place of tensor and storage
 * references. Iterative (no recursion limit) and identity-preserving: a container
 * or tensor reached twice becomes one object reached twice, cycles stay cycles.
 */
function materialize(
  root: PickleValue,
  resolver: StorageResolver,
  storageBytes: StorageBytes,
  { bigEndian, copyBudget }: MaterializeOptions,
): CheckpointValue {
  let budgetLeft = copyBudget;
  const reserve = (bytes: number, where: string): void => {
    check(bytes <= budgetLeft, () => `${where}: materializing needs ${bytes} more bytes, more than the file can justify (${budgetLeft} left)`);
    budgetLeft -= bytes;
  };
  const storageCache = new Map<string, Uint8Array>();
  const windowOf = (ref: StorageRef, where: string): Uint8Array => {
    const cacheKey = `${ref.key}\u0000${ref.dtype}`;
    let data = storageCache.get(cacheKey);
    if (!data) {
      const stored = storageBytes(ref.key);
      const declared = resolver.roots.get(ref.key)?.byteLength ?? 0;
      check(stored.byteLength >= declared, () => `${where}: storage ${ref.key} has ${stored.byteLength} bytes, its tensors need ${declared}`);
      if (bigEndian) reserve(declared, where);
      data = bigEndian ? byteSwapped(stored.subarray(0, declared), elementSize(ref.dtype)) : stored;
      storageCache.set(cacheKey, data);
    }
    return data.subarray(ref.byteOffset, ref.byteOffset + ref.byteLength);
  };

  const converted = new Map<object, CheckpointValue>();
  const pending: Array<{ source: PickleValue; target: CheckpointValue; node: PathNode | undefined }> = [];

  const convert = (value: PickleValue, node: PathNode | undefined): CheckpointValue => {
    if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return value;
    const done = converted.get(value);
    if (done !== undefined) return done;
    let result: CheckpointValue;
    if (value instanceof TensorRef) {
      const label = pathLabel(node);
      result = tensorFromRef(value, windowOf(value.storage, label), label, reserve);
    } else if (value instanceof StorageRef) {
      result = { dtype: value.dtype, shape: [value.numel], data: windowOf(value, pathLabel(node)) };
    } else if (value instanceof Map || value instanceof Set || Array.isArray(value)) {
      result = value instanceof Map ? new Map() : value instanceof Set ? new Set() : [];
      pending.push({ source: value, target: result, node });
    } else {
      result = value; // other allowlisted objects (dtype values, storage types, callables)
    }
    converted.set(value, result);
    return result;
  };

  const result = convert(root, undefined);
  while (pending.length > 0) {
    const { source, target, node } = pending.pop() as (typeof pending)[number];
    if (source instanceof Map && target instanceof Map) {
      for (const [key, item] of source) target.set(convert(key, node), convert(item, childNode(node, key)));
    } else if (source instanceof Set && target instanceof Set) {
      for (const item of source) target.add(convert(item, node));
    } else if (Array.isArray(source) && Array.isArray(target)) {
      source.forEach((item, index) => (target as CheckpointValue[]).push(convert(item, childNode(node, index))));
      if (isPickleTuple(source)) Object.freeze(target);
    }
  }
  return result;
}

function describeKey(key: PickleValue): string {
  return typeof key === 'string' || typeof key === 'number' || typeof key === 'bigint' ? String(key) : `<${describePickleValue(key)}>`;
}

/**
 * A HostTensor for `ref` over `storage` (the storage window in bytes): a zero-copy
 * subarray when the view is contiguous, else a row-major copy (its size reserved from
 * the copy budget first). Every index the view can reach is checked to lie inside
 * the storage first.
 */
function tensorFromRef(ref: TensorRef, storage: Uint8Array, name: string, reserve: (bytes: number, where: string) => void): HostTensor {
  const { shape, stride, storageOffset } = ref;
  const dtype = ref.storage.dtype;
  const size = elementSize(dtype);
  const storageNumel = Math.floor(storage.byteLength / size);
  const label = name || 'tensor';
  const numel = checkedProduct(shape);
  check(numel !== undefined, () => `${label}: shape [${shape.join(', ')}] overflows`);
  if (numel === 0) return { dtype, shape: [...shape], data: new Uint8Array(0) };

  // Largest element index the view reaches: offset + Σ (size_d − 1)·stride_d.
  let lastIndex = storageOffset;
  for (let d = 0; d < shape.length; d++) {
    const reach = checkedProduct([shape[d] - 1, stride[d]]);
    check(reach !== undefined && lastIndex <= storageNumel && reach <= storageNumel, () => outOfBounds(label, ref, storageNumel));
    lastIndex += reach as number;
  }
  check(lastIndex < storageNumel, () => outOfBounds(label, ref, storageNumel));

  if (isContiguous(shape, stride)) {
    const start = storageOffset * size;
    return { dtype, shape: [...shape], data: storage.subarray(start, start + numel * size) };
  }
  const byteLength = checkedProduct([numel, size]);
  check(byteLength !== undefined, () => `${label}: ${numel} elements overflow`);
  reserve(byteLength, label);
  return { dtype, shape: [...shape], data: gatherStrided(storage, size, shape, stride, storageOffset, numel) };
}

function outOfBounds(label: string, ref: TensorRef, storageNumel: number): string {
  return `${label}: view (offset ${ref.storageOffset}, size [${ref.shape.join(', ')}], stride [${ref.stride.join(', ')}]) reaches past its storage of ${storageNumel} elements`;
}

/** Row-major strides, ignoring dims of size 1 (their stride never matters). */
function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}

/** Copies a strided view into a new contiguous buffer, one innermost run at a time. */
function gatherStrided(
  storage: Uint8Array,
  size: number,
  shape: readonly number[],
  stride: readonly number[],
  storageOffset: number,
  numel: number,
): Uint8Array {
  const out = new Uint8Array(numel * size);
  const rank = shape.length;
  const innerSize = shape[rank - 1];
  const innerStride = stride[rank - 1];
  const outerIndex = new Array<number>(Math.max(rank - 1, 0)).fill(0);
  let written = 0;
  let base = storageOffset;
  for (;;) {
    if (innerStride === 1) {
      out.set(storage.subarray(base * size, (base + innerSize) * size), written);
      written += innerSize * size;
    } else {
      for (let i = 0; i < innerSize; i++) {
        const from = (base + i * innerStride) * size;
        for (let b = 0; b < size; b++) out[written++] = storage[from + b];
      }
    }
    // Advance the outer multi-index like an odometer.
    let d = rank - 2;
    while (d >= 0) {
      outerIndex[d]++;
      base += stride[d];
      if (outerIndex[d] < shape[d]) break;
      base -= stride[d] * shape[d];
      outerIndex[d] = 0;
      d--;
    }
    if (d < 0) return out;
  }
}

// ---------------------------------------------------------------------------------
// Finding and flattening the state dict

/** Keys under which training scripts commonly keep the model weights, in order of preference. */
const STATE_DICT_KEYS = ['state_dict', 'model_state_dict', 'model', 'module', 'net', 'network', 'weights', 'params', 'teacher', 'student'];

function isDict(value: CheckpointValue | undefined): value is CheckpointDict {
  return value instanceof Map;
}

function holdsTensorDirectly(dict: CheckpointDict): boolean {
  for (const item of dict.values()) if (isHostTensor(item)) return true;
  return false;
}

function holdsTensorAnywhere(value: CheckpointValue): boolean {
  let found = false;
  forEachTensor(value, () => (found = true));
  return found;
}

/**
 * The state dict inside a checkpoint: the root when it holds tensors itself; else the
 * first of `state_dict`, `model_state_dict`, `model`, `module`, `net`, `network`,
 * `weights`, `params`, `teacher`, `student` that holds tensors (searched again inside,
 * for `{"model": {"state_dict": ...}}`); else the only child dict holding tensors;
 * else the root (flattening then names everything by its dotted path).
 */
export function findStateDict(root: CheckpointValue): CheckpointValue {
  let current = root;
  for (let depth = 0; depth < 8 && isDict(current) && !holdsTensorDirectly(current); depth++) {
    const dict: CheckpointDict = current;
    const named = STATE_DICT_KEYS.map((key) => dict.get(key)).find((item) => isDict(item) && holdsTensorAnywhere(item));
    const tensorChildren = [...dict.values()].filter((item) => isDict(item) && holdsTensorAnywhere(item));
    const next = named ?? (tensorChildren.length === 1 ? tensorChildren[0] : undefined);
    if (next === undefined) break;
    current = next;
  }
  return current;
}

/** The value at a dotted path of dict keys (`'model.state_dict'`); ERR_FORMAT naming the missing part. */
export function valueAtPath(root: CheckpointValue, path: string): CheckpointValue {
  let current = root;
  for (const part of path.split('.')) {
    check(isDict(current) && current.has(part), () => `checkpoint has no ${JSON.stringify(part)} in ${JSON.stringify(path)}`);
    current = (current as CheckpointDict).get(part) as CheckpointValue;
  }
  return current;
}

/**
 * Calls `visit(path, tensor)` for every HostTensor under `value` (dict keys and list
 * indices), depth-first in insertion order, until `visit` returns true. Iterative.
 * A container shared under several names is visited under each, but a walk that
 * revisits shared containers far more often than there are containers (a pickle can
 * nest shared lists so the number of paths doubles per level) is refused, as are cycles.
 */
function forEachTensor(value: CheckpointValue, visit: (path: string[], tensor: HostTensor) => boolean | void): void {
  const onPath = new Set<object>();
  const distinct = new Set<object>();
  let containerVisits = 0;
  const stack: Array<{ value: CheckpointValue; node: PathNode | undefined; exit?: boolean }> = [{ value, node: undefined }];
  while (stack.length > 0) {
    const item = stack.pop() as (typeof stack)[number];
    if (item.exit) {
      onPath.delete(item.value as object);
      continue;
    }
    if (isHostTensor(item.value)) {
      if (visit(pathParts(item.node), item.value) === true) return;
      continue;
    }
    const children: Array<[PickleValue, CheckpointValue]> = [];
    if (isDict(item.value)) {
      for (const [key, child] of item.value) children.push([key as PickleValue, child]);
    } else if (Array.isArray(item.value)) {
      item.value.forEach((child, index) => children.push([index, child]));
    } else {
      continue;
    }
    const container = item.value as object;
    check(!onPath.has(container), () => `checkpoint contains a cycle at ${pathLabel(item.node)}`);
    distinct.add(container);
    check(
      ++containerVisits <= 16 * distinct.size + 10_000,
      () => `checkpoint shares containers so many times over (at ${pathLabel(item.node)}) that naming its tensors would not end`,
    );
    onPath.add(container);
    stack.push({ value: item.value, node: item.node, exit: true });
    for (let i = children.length - 1; i >= 0; i--) stack.push({ value: children[i][1], node: childNode(item.node, children[i][0]) });
  }
}

/**
 * Every tensor under `value` by dotted name (`{"a": {"b": t}}` → `a.b`), in insertion
 * order. A tensor reached under two names appears under both; ERR_FORMAT for cycles
 * and for two different tensors that would get the same name.
 */
export function flattenTensors(value: CheckpointValue, { separator = '.' }: { separator?: string } = {}): Map<string, HostTensor> {
  const tensors = new Map<string, HostTensor>();
  forEachTensor(value, (path, tensor) => {
    const name = path.join(separator);
    check(!tensors.has(name) || tensors.get(name) === tensor, () => `two tensors are both named ${JSON.stringify(name)}`);
    tensors.set(name, tensor);
  });
  return tensors;
}

// ---------------------------------------------------------------------------------
// Writing

export interface TorchWriteOptions {
  /** Folder name inside the zip (torch uses the file's stem; any name loads). Default 'archive'. */
  archiveName?: string;
  /** Write zip64 records even for a small file (they are written anyway past 4 GiB); for testing readers. */
  forceZip64?: boolean;
}

/** Row-major strides of `shape`. */
function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let running = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = running;
    running *= shape[d];
  }
  return strides;
}

/**
 * One tensor as torch pickles it: `_rebuild_tensor_v2(('storage', torch.XStorage, key,
 * 'cpu', numel), 0, shape, stride, False, OrderedDict())`, the storage being a persistent id.
 */
function pickleTensor(pickle: PickleWriter, tensor: HostTensor, key: string): void {
  const storageType = STORAGE_TYPE_OF_DTYPE.get(tensor.dtype);
  if (storageType === undefined) throw new FormatError(`cannot write dtype ${tensor.dtype} (supported: ${HOST_DTYPES.join(', ')})`, 'ERR_DTYPE');
  pickle.global('torch._utils', '_rebuild_tensor_v2');
  pickle.mark();
  pickle.mark().string('storage').global('torch', storageType).string(key).string('cpu');
  pickle.int(tensor.data.byteLength / elementSize(tensor.dtype)).tuple();
  pickle.binPersId();
  pickle.int(0).intTuple(tensor.shape).intTuple(contiguousStrides(tensor.shape)).bool(false);
  pickle.global('collections', 'OrderedDict').emptyTuple().reduce();
  pickle.tuple().reduce();
}

/** The data.pkl of a state dict: protocol 2, an OrderedDict of pickled tensors (storage keys '0', '1', ...). */
function stateDictPickle(entries: ReadonlyArray<[string, HostTensor]>): Uint8Array {
  const pickle = new PickleWriter();
  pickle.global('collections', 'OrderedDict').emptyTuple().reduce();
  pickle.mark();
  entries.forEach(([name, tensor], index) => {
    pickle.string(name);
    pickleTensor(pickle, tensor, String(index));
  });
  pickle.setItems().stop();
  return pickle.bytes();
}

/** The zip entries of a torch archive: data.pkl, the version records and storage `data/<i>` = storages[i]. */
function torchZipEntries(dataPickle: Uint8Array, storages: readonly HostTensor[], options: TorchWriteOptions): ZipWriteEntry[] {
  const archiveName = options.archiveName ?? 'archive';
  check(/^[^/\\]+$/.test(archiveName), () => `archive name ${JSON.stringify(archiveName)} must be a single folder name`);
  const text = (value: string): Uint8Array => new TextEncoder().encode(value);
  const folder = `${archiveName}/`;
  return [
    { name: `${folder}data.pkl`, data: dataPickle },
    { name: `${folder}.format_version`, data: text('1') },
    { name: `${folder}.storage_alignment`, data: text('64') },
    { name: `${folder}byteorder`, data: text('little') },
    ...storages.map((tensor, index) => ({ name: `${folder}data/${index}`, data: tensor.data })),
    { name: `${folder}version`, data: text('3\n') },
  ];
}

function stateDictZipEntries(tensors: NamedTensors, options: TorchWriteOptions): ZipWriteEntry[] {
  const entries = namedTensorEntries(tensors);
  return torchZipEntries(stateDictPickle(entries), entries.map(([, tensor]) => tensor), options);
}

/**
 * Writes `tensors` as a zip-format `.pth` that `torch.load(path, weights_only=True)`
 * returns as an OrderedDict of contiguous CPU tensors. Atomic: written to
 * a temporary name beside it, then renamed. Tensor bytes are streamed from the HostTensors
 * (no copy of the whole file in memory).
 */
export function writeTorchCheckpoint(path: string, tensors: NamedTensors, options: TorchWriteOptions = {}): void {
  const entries = stateDictZipEntries(tensors, options);
  writeFileAtomic(path, (sink: ByteSink) => writeZip(entries, sink, { alignment: 64, forceZip64: options.forceZip64 }));
}

/** The bytes `writeTorchCheckpoint` would write. */
export function torchCheckpointBytes(tensors: NamedTensors, options: TorchWriteOptions = {}): Uint8Array {
  const entries = stateDictZipEntries(tensors, options);
  return collectBytes((sink) => writeZip(entries, sink, { alignment: 64, forceZip64: options.forceZip64 }));
}

/**
 * Writes one tensor as `torch.save(tensor)` does (zip format): `torch.load(path,
 * weights_only=True)` returns it as a contiguous CPU tensor of the same dtype and shape
 * (CLAM's `pt_files/<slide>.pt`, features [N, D] float32). Atomic, like writeTorchCheckpoint.
 */
export function writeTorchTensor(path: string, tensor: HostTensor, options: TorchWriteOptions = {}): void {
  assertHostTensor(tensor, 'tensor');
  const pickle = new PickleWriter();
  pickleTensor(pickle, tensor, '0');
  const entries = torchZipEntries(pickle.stop().bytes(), [tensor], options);
  writeFileAtomic(path, (sink: ByteSink) => writeZip(entries, sink, { alignment: 64, forceZip64: options.forceZip64 }));
}
