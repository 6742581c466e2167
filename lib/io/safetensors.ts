/**
 * safetensors read and write, validating exactly as the reference implementation
 * (huggingface/safetensors, `safetensors/src/tensor.rs`: `SafeTensors::read_metadata`,
 * `Metadata::validate`, `prepare`). Layout:
 *
 *   [8 bytes: header length N, u64 little-endian][N bytes: UTF-8 JSON header][data]
 *
 * The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]}
 * (offsets relative to the start of the data) plus an optional `__metadata__`
 * string → string map. A file is accepted only if, in the reference's order:
 * it has 8 bytes (HeaderTooSmall); N ≤ 100 000 000 (HeaderTooLarge); 8 + N fits the
 * file (InvalidHeaderLength); the header is UTF-8 (InvalidHeader) and JSON of that
 * shape (InvalidHeaderDeserialization: unknown dtype, negative or fractional sizes,
 * missing fields); sorted by offsets, each tensor begins where the previous ended,
 * starting at 0, with end ≥ begin (InvalidOffset); the shape product and the byte
 * size do not overflow u64 (ValidationOverflow); end − begin = numel · element size
 * (TensorInvalidInfo); and the last end + 8 + N is the file length exactly
 * (MetadataIncompleteBuffer). Each failure is an ERR_FORMAT error naming the check.
 * A well-formed file with a dtype HostTensor lacks (U16, F8_E4M3, C64, ...) is ERR_DTYPE.
 *
 * Tensors come back as zero-copy views of the file bytes, in file order.
 */
import { FormatError, check, withSource } from './errors.js';
import { bytesOf, collectBytes, writeFileAtomic, type ByteSink } from './files.js';
import { namedTensorEntries, unsupportedDTypeError, type HostDType, type HostTensor, type NamedTensors } from './host-tensor.js';
import { JsonNumber, JsonObject, parseStrictJson, type JsonValue } from './strict-json.js';

/** The reference's limit on the JSON header. */
export const MAX_HEADER_SIZE = 100_000_000;
const HEADER_LENGTH_BYTES = 8;
const MAX_U64 = (1n << 64n) - 1n;

/**
 * The reference's dtypes in its enum order (= ascending alignment), with their size
 * in bits and our HostDType where we have one.
 */
const SAFETENSORS_DTYPES: ReadonlyArray<readonly [string, number, HostDType | undefined]> = [
  ['BOOL', 8, 'bool'],
  ['F4', 4, undefined],
  ['F6_E2M3', 6, undefined],
  ['F6_E3M2', 6, undefined],
  ['U8', 8, 'uint8'],
  ['I8', 8, 'int8'],
  ['F8_E5M2', 8, undefined],
  ['F8_E4M3', 8, undefined],
  ['F8_E8M0', 8, undefined],
  ['F8_E4M3FNUZ', 8, undefined],
  ['F8_E5M2FNUZ', 8, undefined],
  ['I16', 16, 'int16'],
  ['U16', 16, undefined],
  ['F16', 16, 'float16'],
  ['BF16', 16, 'bfloat16'],
  ['I32', 32, 'int32'],
  ['U32', 32, undefined],
  ['F32', 32, 'float32'],
  ['C64', 64, undefined],
  ['F64', 64, 'float64'],
  ['I64', 64, 'int64'],
  ['U64', 64, undefined],
];

const DTYPE_BY_NAME = new Map(SAFETENSORS_DTYPES.map(([name, bits, hostDType], order) => [name, { name, bits, hostDType, order }]));
const NAME_BY_HOST_DTYPE = new Map(
  SAFETENSORS_DTYPES.filter(([, , hostDType]) => hostDType !== undefined).map(([name, , hostDType]) => [hostDType as HostDType, name]),
);

export interface SafetensorsContents {
  /** Tensors in file order; data are views of the file bytes. */
  tensors: Map<string, HostTensor>;
  /** The `__metadata__` map ({} when absent); a null-prototype object. */
  metadata: Record<string, string>;
}

interface TensorInfo {
  name: string;
  dtype: string;
  shape: bigint[];
  begin: bigint;
  end: bigint;
}

function safetensorsError(kind: string, detail: string): FormatError {
  return new FormatError(`safetensors ${kind}: ${detail}`);
}

/** Reads and validates a safetensors file (a path or its bytes). */
export function readSafetensors(source: Uint8Array | string): SafetensorsContents {
  const path = typeof source === 'string' ? source : undefined;
  return withSource(path, () => parseSafetensors(bytesOf(source)));
}

function parseSafetensors(bytes: Uint8Array): SafetensorsContents {
  if (bytes.byteLength < HEADER_LENGTH_BYTES) throw safetensorsError('HeaderTooSmall', `${bytes.byteLength} bytes cannot hold the 8-byte header length`);
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, HEADER_LENGTH_BYTES).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_SIZE)) throw safetensorsError('HeaderTooLarge', `header of ${headerLength} bytes exceeds ${MAX_HEADER_SIZE}`);
  const n = Number(headerLength);
  if (HEADER_LENGTH_BYTES + n > bytes.byteLength) {
    throw safetensorsError('InvalidHeaderLength', `header of ${n} bytes does not fit in a ${bytes.byteLength}-byte file`);
  }
  let headerText: string;
  try {
    headerText = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(HEADER_LENGTH_BYTES, HEADER_LENGTH_BYTES + n));
  } catch {
    throw safetensorsError('InvalidHeader', 'header is not valid UTF-8');
  }
  const { infos, metadata } = deserializeHeader(headerText);
  infos.sort((a, b) => compareBigInt(a.begin, b.begin) || compareBigInt(a.end, b.end));
  const dataLength = validateOffsets(infos);
  if (dataLength + BigInt(HEADER_LENGTH_BYTES + n) !== BigInt(bytes.byteLength)) {
    throw safetensorsError(
      'MetadataIncompleteBuffer',
      `header describes ${dataLength} data bytes, the file has ${bytes.byteLength - HEADER_LENGTH_BYTES - n}`,
    );
  }

  const dataStart = HEADER_LENGTH_BYTES + n;
  const tensors = new Map<string, HostTensor>();
  for (const info of infos) {
    const hostDType = DTYPE_BY_NAME.get(info.dtype)?.hostDType;
    if (hostDType === undefined) throw unsupportedDTypeError(info.dtype, `safetensors tensor ${JSON.stringify(info.name)}`);
    const shape = info.shape.map((dim) => {
      check(dim <= BigInt(Number.MAX_SAFE_INTEGER), () => `safetensors tensor ${JSON.stringify(info.name)}: dimension ${dim} is too large to represent`);
      return Number(dim);
    });
    const begin = dataStart + Number(info.begin);
    tensors.set(info.name, { dtype: hostDType, shape, data: bytes.subarray(begin, dataStart + Number(info.end)) });
  }
  return { tensors, metadata };
}

function compareBigInt(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The header JSON → tensor infos and metadata, with the reference's (serde) typing rules. */
function deserializeHeader(text: string): { infos: TensorInfo[]; metadata: Record<string, string> } {
  let root: JsonValue;
  try {
    root = parseStrictJson(text);
  } catch (error) {
    throw safetensorsError('InvalidHeaderDeserialization', (error as Error).message);
  }
  const fail = (detail: string): FormatError => safetensorsError('InvalidHeaderDeserialization', detail);
  if (!(root instanceof JsonObject)) throw fail('header must be a JSON object');

  const metadata: Record<string, string> = Object.create(null) as Record<string, string>;
  let sawMetadata = false;
  const infosByName = new Map<string, TensorInfo>();
  for (const [key, value] of root.entries) {
    if (key === '__metadata__') {
      if (sawMetadata) throw fail('duplicate field `__metadata__`');
      sawMetadata = true;
      if (value === null) continue;
      if (!(value instanceof JsonObject)) throw fail('`__metadata__` must be a map of strings to strings');
      for (const [metaKey, metaValue] of value.entries) {
        if (typeof metaValue !== 'string') throw fail(`__metadata__[${JSON.stringify(metaKey)}] must be a string`);
        metadata[metaKey] = metaValue;
      }
      continue;
    }
    infosByName.set(key, tensorInfo(key, value, fail)); // a repeated name: the last one wins, as in the reference
  }
  return { infos: [...infosByName.values()], metadata };
}

/** One tensor's {dtype, shape, data_offsets}; serde also accepts the fields as a 3-element array. */
function tensorInfo(name: string, value: JsonValue, fail: (detail: string) => FormatError): TensorInfo {
  const where = `tensor ${JSON.stringify(name)}`;
  const fields = new Map<string, JsonValue>();
  if (value instanceof JsonObject) {
    for (const [field, fieldValue] of value.entries) {
      if (field !== 'dtype' && field !== 'shape' && field !== 'data_offsets') continue; // unknown fields are ignored
      if (fields.has(field)) throw fail(`${where}: duplicate field \`${field}\``);
      fields.set(field, fieldValue);
    }
  } else if (Array.isArray(value)) {
    if (value.length !== 3) throw fail(`${where}: expected {dtype, shape, data_offsets}, got an array of ${value.length}`);
    fields.set('dtype', value[0]).set('shape', value[1]).set('data_offsets', value[2]);
  } else {
    throw fail(`${where}: expected an object {dtype, shape, data_offsets}`);
  }
  for (const field of ['dtype', 'shape', 'data_offsets']) {
    if (!fields.has(field)) throw fail(`${where}: missing field \`${field}\``);
  }
  const dtype = fields.get('dtype');
  if (typeof dtype !== 'string' || !DTYPE_BY_NAME.has(dtype)) throw fail(`${where}: unknown dtype ${JSON.stringify(dtype)}`);
  const shapeValue = fields.get('shape');
  if (!Array.isArray(shapeValue)) throw fail(`${where}: shape must be an array of non-negative integers`);
  const shape = shapeValue.map((dim) => unsignedInteger(dim, `${where} shape`, fail));
  const offsets = fields.get('data_offsets');
  if (!Array.isArray(offsets) || offsets.length !== 2) throw fail(`${where}: data_offsets must be [begin, end]`);
  const [begin, end] = offsets.map((offset) => unsignedInteger(offset, `${where} data_offsets`, fail));
  return { name, dtype, shape, begin, end };
}

/** A JSON integer literal in [0, 2^64 − 1] (serde's usize on 64-bit). */
function unsignedInteger(value: JsonValue, where: string, fail: (detail: string) => FormatError): bigint {
  if (!(value instanceof JsonNumber) || !value.isInteger) throw fail(`${where}: expected a non-negative integer, got ${describeJson(value)}`);
  const parsed = BigInt(value.text);
  if (parsed < 0n || parsed > MAX_U64) throw fail(`${where}: ${value.text} is not a usize`);
  return parsed;
}

function describeJson(value: JsonValue): string {
  if (value instanceof JsonNumber) return value.text;
  if (value instanceof JsonObject) return 'an object';
  if (Array.isArray(value)) return 'an array';
  return JSON.stringify(value);
}

/** `Metadata::validate`: contiguous offsets from 0 and consistent sizes; returns the data length. */
function validateOffsets(infos: readonly TensorInfo[]): bigint {
  let start = 0n;
  for (const info of infos) {
    if (info.begin !== start || info.end < info.begin) {
      throw safetensorsError(
        'InvalidOffset',
        `tensor ${JSON.stringify(info.name)} has data_offsets [${info.begin}, ${info.end}], expected to begin at ${start}`,
      );
    }
    start = info.end;
    let numel = 1n;
    for (const dim of info.shape) {
      numel *= dim;
      if (numel > MAX_U64) throw safetensorsError('ValidationOverflow', `tensor ${JSON.stringify(info.name)}: shape [${info.shape.join(', ')}] overflows`);
    }
    const bits = numel * BigInt((DTYPE_BY_NAME.get(info.dtype) as { bits: number }).bits);
    if (bits > MAX_U64) throw safetensorsError('ValidationOverflow', `tensor ${JSON.stringify(info.name)}: byte size overflows`);
    if (bits % 8n !== 0n) throw safetensorsError('MisalignedSlice', `tensor ${JSON.stringify(info.name)} does not fill whole bytes`);
    if (info.end - info.begin !== bits / 8n) {
      throw safetensorsError(
        'TensorInvalidInfo',
        `tensor ${JSON.stringify(info.name)}: ${info.dtype} [${info.shape.join(', ')}] needs ${bits / 8n} bytes, data_offsets give ${info.end - info.begin}`,
      );
    }
  }
  return start;
}

// ---------------------------------------------------------------------------------
// Writing

/** Bytes `a` < `b` as UTF-8 (Rust's String ordering). */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function checkText(text: string, what: string): void {
  if (LONE_SURROGATE.test(text)) throw new FormatError(`${what} ${JSON.stringify(text)} is not valid Unicode (lone surrogate)`);
}

interface PreparedFile {
  header: Uint8Array;
  tensors: HostTensor[];
}

/**
 * `prepare`: tensors sorted by descending dtype alignment then name, offsets laid out
 * back to back, the header serialized compactly and padded with spaces to a multiple
 * of 8 bytes.
 */
function prepare(tensors: NamedTensors, metadata: Readonly<Record<string, string>> | undefined): PreparedFile {
  const entries = namedTensorEntries(tensors);
  for (const [name] of entries) {
    checkText(name, 'tensor name');
    if (name === '__metadata__') throw new FormatError('a tensor cannot be named __metadata__');
  }
  const order = (dtype: HostDType): number => (DTYPE_BY_NAME.get(NAME_BY_HOST_DTYPE.get(dtype) as string) as { order: number }).order;
  entries.sort(([nameA, a], [nameB, b]) => order(b.dtype) - order(a.dtype) || compareUtf8(nameA, nameB));

  const parts: string[] = [];
  if (metadata !== undefined) {
    const metaParts: string[] = [];
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') throw new TypeError(`metadata[${JSON.stringify(key)}] must be a string`);
      checkText(key, 'metadata key');
      checkText(value, 'metadata value');
      metaParts.push(`${JSON.stringify(key)}:${JSON.stringify(value)}`);
    }
    parts.push(`"__metadata__":{${metaParts.join(',')}}`);
  }
  let offset = 0;
  for (const [name, tensor] of entries) {
    const end = offset + tensor.data.byteLength;
    const dtype = NAME_BY_HOST_DTYPE.get(tensor.dtype) as string;
    parts.push(`${JSON.stringify(name)}:{"dtype":"${dtype}","shape":[${tensor.shape.join(',')}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const paddedLength = Math.ceil(json.byteLength / HEADER_LENGTH_BYTES) * HEADER_LENGTH_BYTES;
  if (paddedLength > MAX_HEADER_SIZE) throw safetensorsError('HeaderTooLarge', `header of ${paddedLength} bytes exceeds ${MAX_HEADER_SIZE}`);
  const header = new Uint8Array(HEADER_LENGTH_BYTES + paddedLength).fill(0x20, HEADER_LENGTH_BYTES + json.byteLength);
  new DataView(header.buffer).setBigUint64(0, BigInt(paddedLength), true);
  header.set(json, HEADER_LENGTH_BYTES);
  return { header, tensors: entries.map(([, tensor]) => tensor) };
}

function emitSafetensors(prepared: PreparedFile, sink: ByteSink): void {
  sink(prepared.header);
  for (const tensor of prepared.tensors) if (tensor.data.byteLength) sink(tensor.data);
}

/**
 * Writes `tensors` (and optional `__metadata__`) as a safetensors file laid out like
 * the reference's `serialize_to_file`. Atomic: `<path>.tmp-<pid>`, then rename.
 */
export function writeSafetensors(path: string, tensors: NamedTensors, metadata?: Readonly<Record<string, string>>): void {
  const prepared = prepare(tensors, metadata);
  writeFileAtomic(path, (sink) => emitSafetensors(prepared, sink));
}

/** The bytes `writeSafetensors` would write. */
export function safetensorsBytes(tensors: NamedTensors, metadata?: Readonly<Record<string, string>>): Uint8Array {
  const prepared = prepare(tensors, metadata);
  return collectBytes((sink) => emitSafetensors(prepared, sink));
}
