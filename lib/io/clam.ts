/**
 * CLAM's HDF5 files (mahmoodlab/CLAM: wsi_core/WholeSlideImage.py `process_contour`,
 * wsi_core/wsi_utils.py `save_hdf5`, extract_features_fp.py), read and written with
 * h5wasm so that h5py code reads our files unchanged:
 *
 * - coordinates `<slide>.h5`: dataset `coords` int64 [N, 2] (level-0 x, y of each
 *   patch's top-left corner), chunks (1, 2), maxshape (None, 2), with attributes
 *     patch_size             int64 scalar   patch side in pixels of patch_level
 *     patch_level            int64 scalar
 *     downsample             float64 [2]    (w0 / w, h0 / h) of patch_level
 *     downsampled_level_dim  int64 [2]      patch_level (width, height)
 *     level_dim              int64 [2]      the same
 *     name                   str            slide name (variable-length UTF-8, scalar)
 *     save_path              str            folder CLAM wrote to
 *   (dtypes and shapes as in the real CLAM files copied to test/fixtures/clam-coords).
 * - features `<slide>.h5`: `features` float32 [N, D] chunks (1, D) and `coords` int64
 *   [N, 2] chunks (1, 2), both maxshape (None, ...), no attributes.
 *
 * h5wasm's Node build reads and writes the host file system directly. Writes go to a
 * temporary name in the destination folder and are renamed into place when complete.
 * Reads check the HDF5 signature, the datasets' types and shapes, and sizes before
 * allocating; violations throw `FormatError` (`ERR_FORMAT`); a missing file throws
 * `ERR_NOT_FOUND`.
 */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import h5wasm, { type Dataset, type File as H5File, type Metadata } from 'h5wasm/node';
import { writeAtomically } from './atomic.js';
import { FormatError, withCode } from './errors.js';

/** Attributes of a CLAM `coords` dataset. */
export interface ClamCoordAttrs {
  patch_size: number;
  patch_level: number;
  /** [2] float64: (w0 / w, h0 / h) of patch_level. */
  downsample: [number, number];
  /** [2] int64: (width, height) of patch_level. */
  downsampled_level_dim: [number, number];
  /** [2] int64: (width, height) of patch_level. */
  level_dim: [number, number];
  name: string;
  save_path: string;
}

/** A CLAM coordinate file in memory. */
export interface ClamCoords {
  /** [N, 2] int64 row-major: (x, y) level-0 top-left corners. */
  coords: BigInt64Array;
  /** N. */
  count: number;
  /** The CLAM attributes; those a file lacks are absent (other tools write fewer). */
  attrs: Partial<ClamCoordAttrs>;
}

/** A CLAM feature file in memory. */
export interface ClamFeatures {
  /** [N, D] float32 row-major. */
  features: Float32Array;
  /** [N, D]. */
  shape: [number, number];
  /** [N, 2] int64, when the file has `coords`. */
  coords?: BigInt64Array;
}

/** Rows a dataset may claim before we refuse to allocate it. */
const MAX_ROWS = 1 << 28;
const MAX_FEATURE_VALUES = 1 << 30;
const HDF5_SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];

let ready: Promise<unknown> | undefined;
/** h5wasm's WebAssembly module, initialized once. */
function h5Ready(): Promise<unknown> {
  ready ??= h5wasm.ready;
  return ready;
}

/**
 * Checks that `path` exists and starts with an HDF5 superblock signature (at 0 or at a
 * user-block offset 512, 1024, 2048, ...), before h5wasm sees it: h5wasm does not throw
 * on a bad file, it logs HDF5 diagnostics and returns an invalid handle.
 */
function checkHdf5File(path: string): void {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new Error('not a regular file');
    size = st.size;
  } catch (error) {
    throw withCode(new Error(`cannot read ${path}: ${(error as Error).message}`, { cause: error }), 'ERR_NOT_FOUND');
  }
  const fd = openSync(path, 'r');
  try {
    const sig = new Uint8Array(8);
    for (let offset = 0; offset + 8 <= size; offset = offset === 0 ? 512 : offset * 2) {
      if (readSync(fd, sig, 0, 8, offset) === 8 && HDF5_SIGNATURE.every((b, i) => sig[i] === b)) return;
    }
  } finally {
    closeSync(fd);
  }
  throw new FormatError(`${path} is not an HDF5 file (no superblock signature)`);
}

function openForRead(path: string): H5File {
  checkHdf5File(path);
  const file = new h5wasm.File(path, 'r');
  if (typeof file.file_id !== 'bigint' || file.file_id < 0n) throw new FormatError(`${path}: HDF5 cannot open it (damaged or truncated)`);
  return file;
}

/**
 * Creates `tmp` (the temporary name of `path`) for writing. h5wasm does not throw when
 * HDF5 cannot create a file (it prints diagnostics and returns an invalid handle), so
 * the folder is checked first and the handle after.
 */
function createForWrite(tmp: string, path: string): H5File {
  const folder = dirname(path);
  if (!existsSync(folder)) throw withCode(new Error(`cannot write ${path}: folder ${folder} does not exist`), 'ERR_NOT_FOUND');
  const file = new h5wasm.File(tmp, 'w');
  if (typeof file.file_id !== 'bigint' || file.file_id < 0n) throw withCode(new Error(`cannot write ${path}: HDF5 could not create ${tmp}`), 'ERR_IO');
  return file;
}

function dataset(file: H5File, name: string, path: string, required: true): Dataset;
function dataset(file: H5File, name: string, path: string, required: false): Dataset | undefined;
function dataset(file: H5File, name: string, path: string, required: boolean): Dataset | undefined {
  const keys = file.keys();
  if (!keys.includes(name)) {
    if (required) throw new FormatError(`${path}: no dataset '${name}' (found: ${keys.join(', ') || 'nothing'})`);
    return undefined;
  }
  const entity = file.get(name);
  if (!entity || !(entity instanceof h5wasm.Dataset)) throw new FormatError(`${path}: '${name}' is not a readable dataset (damaged file?)`);
  return entity;
}

/** Integer [N, 2] dataset → BigInt64Array, any integer width. */
function readCoordsDataset(d: Dataset, path: string): BigInt64Array {
  const meta = d.metadata;
  const shape = meta.shape ?? [];
  if (meta.type !== 0 || shape.length !== 2 || shape[1] !== 2) {
    throw new FormatError(`${path}: coords must be an integer [N, 2] dataset, found type ${meta.type} shape [${shape.join(', ')}]`);
  }
  if (shape[0] > MAX_ROWS) throw new FormatError(`${path}: coords claims ${shape[0]} rows (limit ${MAX_ROWS})`);
  if (shape[0] === 0) return new BigInt64Array(0);
  const value = d.value;
  if (value instanceof BigInt64Array) {
    if (value.length !== shape[0] * 2) throw new FormatError(`${path}: coords holds ${value.length} values for shape [${shape}]`);
    return value;
  }
  if (ArrayBuffer.isView(value) && !(value instanceof DataView) && (value as ArrayLike<number | bigint>).length === shape[0] * 2) {
    const src = value as unknown as ArrayLike<number | bigint>;
    const out = new BigInt64Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = BigInt(src[i]);
    return out;
  }
  throw new FormatError(`${path}: coords could not be read as integers`);
}

function attrNumber(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (ArrayBuffer.isView(value) && (value as unknown as ArrayLike<unknown>).length === 1) return attrNumber((value as unknown as ArrayLike<unknown>)[0]);
  return undefined;
}

function attrPair(value: unknown): [number, number] | undefined {
  if ((ArrayBuffer.isView(value) || Array.isArray(value)) && (value as ArrayLike<unknown>).length === 2) {
    const a = attrNumber((value as ArrayLike<unknown>)[0]);
    const b = attrNumber((value as ArrayLike<unknown>)[1]);
    if (a !== undefined && b !== undefined) return [a, b];
  }
  return undefined;
}

/**
 * Reads a CLAM coordinate file (CLAM's `patches/<slide>.h5`, `mstar tile`'s output).
 *
 * @returns coords [N, 2] int64 and the attributes present.
 * @throws ERR_NOT_FOUND (missing file), ERR_FORMAT (not HDF5, no `coords`, wrong type or shape).
 */
export async function readClamCoords(path: string): Promise<ClamCoords> {
  await h5Ready();
  const file = openForRead(path);
  try {
    const d = dataset(file, 'coords', path, true);
    const coords = readCoordsDataset(d, path);
    const attrs: Partial<ClamCoordAttrs> = {};
    const raw = d.attrs;
    const get = (k: string): unknown => (k in raw ? raw[k].value : undefined);
    const num = (k: 'patch_size' | 'patch_level'): void => {
      const v = attrNumber(get(k));
      if (v !== undefined) attrs[k] = v;
    };
    const pair = (k: 'downsample' | 'downsampled_level_dim' | 'level_dim'): void => {
      const v = attrPair(get(k));
      if (v !== undefined) attrs[k] = v;
    };
    num('patch_size');
    num('patch_level');
    pair('downsample');
    pair('downsampled_level_dim');
    pair('level_dim');
    for (const k of ['name', 'save_path'] as const) {
      const v = get(k);
      if (typeof v === 'string') attrs[k] = v;
    }
    if (attrs.patch_size !== undefined && !(Number.isInteger(attrs.patch_size) && attrs.patch_size > 0)) {
      throw new FormatError(`${path}: attribute patch_size = ${attrs.patch_size} is not a positive integer`);
    }
    if (attrs.patch_level !== undefined && !(Number.isInteger(attrs.patch_level) && attrs.patch_level >= 0)) {
      throw new FormatError(`${path}: attribute patch_level = ${attrs.patch_level} is not a non-negative integer`);
    }
    return { coords, count: coords.length / 2, attrs };
  } finally {
    file.close();
  }
}

/** Accepts [N, 2] as BigInt64Array / number[] flattened, or number[][] rows. */
function toCoordArray(coords: BigInt64Array | ArrayLike<number> | readonly (readonly number[])[], what: string): BigInt64Array {
  if (coords instanceof BigInt64Array) {
    if (coords.length % 2 !== 0) throw withCode(new RangeError(`${what}: coords length ${coords.length} is not a multiple of 2`), 'ERR_SHAPE');
    return coords;
  }
  const rows = Array.isArray(coords) && coords.length > 0 && Array.isArray(coords[0]);
  const flat: number[] = rows ? (coords as readonly (readonly number[])[]).flatMap((r) => {
    if (r.length !== 2) throw withCode(new RangeError(`${what}: each coords row needs 2 values, got ${r.length}`), 'ERR_SHAPE');
    return [...r];
  }) : Array.from(coords as ArrayLike<number>);
  if (flat.length % 2 !== 0) throw withCode(new RangeError(`${what}: coords length ${flat.length} is not a multiple of 2`), 'ERR_SHAPE');
  const out = new BigInt64Array(flat.length);
  flat.forEach((v, i) => {
    if (!Number.isSafeInteger(v)) throw withCode(new RangeError(`${what}: coordinate ${v} is not an integer`), 'ERR_ARGUMENT');
    out[i] = BigInt(v);
  });
  return out;
}

function int64Scalar(value: number): BigInt64Array {
  return BigInt64Array.of(BigInt(value));
}

function int64Pair([a, b]: readonly [number, number]): BigInt64Array {
  return BigInt64Array.of(BigInt(a), BigInt(b));
}

/** One extensible dataset chunked by row, as CLAM's save_hdf5 creates it. */
function createRowChunked(file: H5File, name: string, data: BigInt64Array | Float32Array, rows: number, cols: number, dtype: '<q' | '<f'): Dataset {
  return file.create_dataset({ name, data, shape: [rows, cols], dtype, maxshape: [null, cols], chunks: [1, cols] });
}

function checkAttrs(attrs: ClamCoordAttrs, path: string): void {
  const bad = (what: string): never => {
    throw withCode(new TypeError(`${path}: attribute ${what}`), 'ERR_ARGUMENT');
  };
  if (!Number.isSafeInteger(attrs.patch_size) || attrs.patch_size <= 0) bad(`patch_size must be a positive integer, got ${attrs.patch_size}`);
  if (!Number.isSafeInteger(attrs.patch_level) || attrs.patch_level < 0) bad(`patch_level must be a non-negative integer, got ${attrs.patch_level}`);
  for (const k of ['downsample', 'downsampled_level_dim', 'level_dim'] as const) {
    const v = attrs[k];
    if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => Number.isFinite(x) && x > 0)) bad(`${k} must be two positive numbers, got ${String(v)}`);
  }
  for (const k of ['downsampled_level_dim', 'level_dim'] as const) if (!attrs[k].every(Number.isSafeInteger)) bad(`${k} must be integers`);
  if (typeof attrs.name !== 'string') bad('name must be a string');
  if (typeof attrs.save_path !== 'string') bad('save_path must be a string');
}

/**
 * Writes a CLAM coordinate file atomically (temporary name, then rename).
 *
 * @param coords [N, 2] level-0 (x, y): BigInt64Array or numbers flattened, or rows.
 * @param attrs  CLAM's attributes, written with CLAM's dtypes and shapes.
 */
export async function writeClamCoords(
  path: string,
  coords: BigInt64Array | ArrayLike<number> | readonly (readonly number[])[],
  attrs: ClamCoordAttrs,
): Promise<void> {
  const data = toCoordArray(coords, path);
  checkAttrs(attrs, path);
  await h5Ready();
  await writeAtomically(path, (tmp) => {
    const file = createForWrite(tmp, path);
    try {
      const d = createRowChunked(file, 'coords', data, data.length / 2, 2, '<q');
      d.create_attribute('patch_size', int64Scalar(attrs.patch_size), [], '<q');
      d.create_attribute('patch_level', int64Scalar(attrs.patch_level), [], '<q');
      d.create_attribute('downsample', Float64Array.from(attrs.downsample), [2], '<d');
      d.create_attribute('downsampled_level_dim', int64Pair(attrs.downsampled_level_dim), [2], '<q');
      d.create_attribute('level_dim', int64Pair(attrs.level_dim), [2], '<q');
      d.create_attribute('name', attrs.name);
      d.create_attribute('save_path', attrs.save_path);
    } finally {
      file.close();
    }
  });
}

/**
 * Reads a CLAM feature file (`h5_files/<slide>.h5`).
 *
 * @returns features [N, D] float32 (float16/float64 files are converted) and coords [N, 2] when present.
 * @throws ERR_NOT_FOUND, ERR_FORMAT (no `features`, not 2-D, coords rows ≠ N, too large).
 */
export async function readClamFeatures(path: string): Promise<ClamFeatures> {
  await h5Ready();
  const file = openForRead(path);
  try {
    const d = dataset(file, 'features', path, true);
    const meta: Metadata = d.metadata;
    const shape = meta.shape ?? [];
    if (meta.type !== 1 || shape.length !== 2) {
      throw new FormatError(`${path}: features must be a floating-point [N, D] dataset, found type ${meta.type} shape [${shape.join(', ')}]`);
    }
    const [n, dim] = shape;
    if (n * dim > MAX_FEATURE_VALUES) throw new FormatError(`${path}: features [${n}, ${dim}] exceeds the ${MAX_FEATURE_VALUES}-value limit`);
    let features: Float32Array;
    if (n * dim === 0) features = new Float32Array(0);
    else {
      const value = d.value;
      if (value instanceof Float32Array) features = value;
      else if (value instanceof Float64Array) features = Float32Array.from(value);
      else throw new FormatError(`${path}: features of ${meta.size}-byte floats are not supported (float32 or float64)`);
    }
    if (features.length !== n * dim) throw new FormatError(`${path}: features holds ${features.length} values for shape [${n}, ${dim}]`);
    const c = dataset(file, 'coords', path, false);
    const result: ClamFeatures = { features, shape: [n, dim] };
    if (c) {
      const coords = readCoordsDataset(c, path);
      if (coords.length !== 2 * n) throw new FormatError(`${path}: coords has ${coords.length / 2} rows, features ${n}`);
      result.coords = coords;
    }
    return result;
  } finally {
    file.close();
  }
}

/**
 * Writes a CLAM feature file atomically: `features` float32 [N, D], `coords` int64 [N, 2].
 */
export async function writeClamFeatures(
  path: string,
  features: Float32Array,
  shape: readonly [number, number],
  coords: BigInt64Array | ArrayLike<number> | readonly (readonly number[])[],
): Promise<void> {
  const [n, dim] = shape;
  if (!Number.isSafeInteger(n) || !Number.isSafeInteger(dim) || n < 0 || dim < 1 || features.length !== n * dim) {
    throw withCode(new RangeError(`${path}: features has ${features.length} values, shape [${shape.join(', ')}] needs ${n * dim}`), 'ERR_SHAPE');
  }
  const c = toCoordArray(coords, path);
  if (c.length !== 2 * n) throw withCode(new RangeError(`${path}: ${c.length / 2} coords rows for ${n} feature rows`), 'ERR_SHAPE');
  await h5Ready();
  await writeAtomically(path, (tmp) => {
    const file = createForWrite(tmp, path);
    try {
      createRowChunked(file, 'features', features, n, dim, '<f');
      createRowChunked(file, 'coords', c, n, 2, '<q');
    } finally {
      file.close();
    }
  });
}

/** Per-patch scores from an HDF5 file: a [N] vector and the file's coords when it has them. */
export interface ClamScores {
  /** [N] float64. */
  scores: Float64Array;
  /** The dataset read. */
  name: string;
  /** [N, 2] int64, when the file has `coords` with N rows. */
  coords?: BigInt64Array;
}

/**
 * Reads one per-patch score vector from an HDF5 file — CLAM's heatmap blocks
 * (create_heatmaps.py: `attention_scores` [N, 1] next to `coords` [N, 2]) or any file
 * with a numeric [N], [N, 1] or [1, N] dataset.
 *
 * @param name dataset to read; default: the only such dataset other than `coords`
 * @throws ERR_FORMAT (not HDF5, no such dataset, not a vector, several candidates)
 */
export async function readClamScores(path: string, name?: string): Promise<ClamScores> {
  await h5Ready();
  const file = openForRead(path);
  try {
    const isVector = (shape: number[]): boolean => shape.length === 1 || (shape.length === 2 && (shape[0] === 1 || shape[1] === 1));
    const keys = file.keys();
    let chosen = name;
    if (chosen === undefined) {
      const candidates = keys.filter((k) => {
        if (k === 'coords') return false;
        const e = file.get(k);
        return e instanceof h5wasm.Dataset && (e.metadata.type === 0 || e.metadata.type === 1) && isVector(e.metadata.shape ?? []);
      });
      if (candidates.length !== 1) {
        throw new FormatError(`${path}: ${candidates.length === 0 ? 'no numeric [N] dataset' : `several score datasets (${candidates.join(', ')})`}; name the one to use`);
      }
      chosen = candidates[0];
    }
    const d = dataset(file, chosen, path, true);
    const shape = d.metadata.shape ?? [];
    if ((d.metadata.type !== 0 && d.metadata.type !== 1) || !isVector(shape)) {
      throw new FormatError(`${path}: '${chosen}' must be a numeric [N] or [N, 1] dataset, found type ${d.metadata.type} shape [${shape.join(', ')}]`);
    }
    const n = shape.reduce((a, b) => a * b, 1);
    if (n > MAX_ROWS) throw new FormatError(`${path}: '${chosen}' claims ${n} values (limit ${MAX_ROWS})`);
    const value = n === 0 ? new Float64Array(0) : d.value;
    if (!ArrayBuffer.isView(value) || (value as unknown as ArrayLike<unknown>).length !== n) throw new FormatError(`${path}: '${chosen}' could not be read as numbers`);
    const scores = Float64Array.from(value as unknown as ArrayLike<number | bigint>, Number);
    const result: ClamScores = { scores, name: chosen };
    const c = dataset(file, 'coords', path, false);
    if (c) {
      const coords = readCoordsDataset(c, path);
      if (coords.length === 2 * n) result.coords = coords;
    }
    return result;
  } finally {
    file.close();
  }
}
