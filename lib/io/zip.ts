/**
 * A minimal ZIP reader and writer for STORED (uncompressed) entries, which is all
 * PyTorch's zip checkpoint format uses (APPNOTE.TXT 6.3.x, with the zip64 extensions).
 *
 * Reader: finds the end-of-central-directory record (and the zip64 locator and
 * record when present), walks the central directory and every local header, and
 * checks each size and offset against the archive before using it. Entry data is
 * returned as a subarray view of the input: nothing is copied. Duplicate names,
 * multi-disk archives, encrypted or compressed entries are `ERR_FORMAT` errors.
 *
 * Writer: STORED entries whose data starts on a multiple of `alignment` bytes (64,
 * like `torch.save`, padded with an extra field), CRC-32 for every entry, zip64
 * records when an offset or size needs them (or always, with `forceZip64`).
 */
import * as zlib from 'node:zlib';
import { FormatError, check } from './errors.js';
import { collectBytes, type ByteSink } from './files.js';

// ---------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, as in zlib)

const CRC_TABLES = buildCrcTables();

/** Slicing-by-8 tables: table k maps a byte to its CRC contribution k bytes further on. */
function buildCrcTables(): Uint32Array {
  const tables = new Uint32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    tables[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) {
      const previous = tables[(k - 1) * 256 + n];
      tables[k * 256 + n] = (previous >>> 8) ^ tables[previous & 0xff];
    }
  }
  return tables;
}

/** CRC-32 in plain TypeScript (the fallback when node:zlib has no crc32). */
export function crc32Portable(data: Uint8Array, previous = 0): number {
  const t = CRC_TABLES;
  let c = (previous ^ 0xffffffff) >>> 0;
  let i = 0;
  const fullBlocksEnd = data.length - (data.length % 8);
  for (; i < fullBlocksEnd; i += 8) {
    const low = c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
    c =
      t[1792 + (low & 0xff)] ^
      t[1536 + ((low >>> 8) & 0xff)] ^
      t[1280 + ((low >>> 16) & 0xff)] ^
      t[1024 + (low >>> 24)] ^
      t[768 + data[i + 4]] ^
      t[512 + data[i + 5]] ^
      t[256 + data[i + 6]] ^
      t[data[i + 7]];
  }
  for (; i < data.length; i++) c = t[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

type Crc32Function = (data: Uint8Array, previous?: number) => number;
const nativeCrc32 = (zlib as unknown as { crc32?: Crc32Function }).crc32;

/** CRC-32 of `data`, continuing from `previous` (zlib's, hardware-assisted, when Node has it). */
export function crc32(data: Uint8Array, previous = 0): number {
  return nativeCrc32 ? nativeCrc32(data, previous) >>> 0 : crc32Portable(data, previous);
}

// ---------------------------------------------------------------------------------
// Record layouts

const LOCAL_HEADER_SIGNATURE = 0x04034b50;
const CENTRAL_HEADER_SIGNATURE = 0x02014b50;
const END_OF_CENTRAL_DIRECTORY_SIGNATURE = 0x06054b50;
const ZIP64_END_SIGNATURE = 0x06064b50;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const LOCAL_HEADER_SIZE = 30;
const CENTRAL_HEADER_SIZE = 46;
const END_OF_CENTRAL_DIRECTORY_SIZE = 22;
const ZIP64_END_SIZE = 56;
const ZIP64_LOCATOR_SIZE = 20;
const MAX_COMMENT_SIZE = 0xffff;
const ZIP64_EXTRA_ID = 0x0001;
/** Extra-field id torch (and we) use for alignment padding: "FB". */
const PADDING_EXTRA_ID = 0x4246;
const SATURATED_16 = 0xffff;
const SATURATED_32 = 0xffffffff;
const FLAG_ENCRYPTED = 0x0001;
const FLAG_UTF8_NAME = 0x0800;
const METHOD_STORED = 0;
const VERSION_DEFAULT = 20;
const VERSION_ZIP64 = 45;
/** 1980-01-01, the DOS epoch (torch writes the same zero timestamp). */
const DOS_DATE_EPOCH = (0 << 9) | (1 << 5) | 1;

// ---------------------------------------------------------------------------------
// Reader

/** One entry of an archive, located and bounds-checked. */
export interface ZipEntry {
  name: string;
  /** Offset of the entry's (stored) data within the archive bytes. */
  dataOffset: number;
  /** Bytes of data as stored (equal to the uncompressed size for STORED entries). */
  compressedSize: number;
  uncompressedSize: number;
  crc32: number;
  /** 0 = stored; anything else cannot be read by this reader. */
  method: number;
  encrypted: boolean;
}

export interface ZipReadOptions {
  /** Check each entry's CRC-32 when it is read (costs one pass over the data). Default false. */
  verifyCrc?: boolean;
}

/** An opened archive: entries in central-directory order, data as zero-copy views. */
export class ZipArchive {
  constructor(
    private readonly bytes: Uint8Array,
    /** Entries by name, in central-directory order. */
    readonly entries: ReadonlyMap<string, ZipEntry>,
  ) {}

  get names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The data of entry `name` as a view into the archive bytes; ERR_FORMAT if absent, compressed or encrypted. */
  read(name: string, { verifyCrc = false }: ZipReadOptions = {}): Uint8Array {
    const entry = this.entries.get(name);
    if (!entry) throw new FormatError(`zip: no entry named ${JSON.stringify(name)}`);
    if (entry.encrypted) throw new FormatError(`zip: entry ${name} is encrypted`);
    if (entry.method !== METHOD_STORED) {
      throw new FormatError(
        `zip: entry ${name} uses compression method ${entry.method}; only stored (uncompressed) entries are supported, as torch.save writes them`,
      );
    }
    check(entry.compressedSize === entry.uncompressedSize, () => `zip: stored entry ${name} has different compressed and uncompressed sizes`);
    const data = this.bytes.subarray(entry.dataOffset, entry.dataOffset + entry.compressedSize);
    if (verifyCrc) {
      const actual = crc32(data);
      check(actual === entry.crc32, () => `zip: entry ${name} fails its CRC-32 check (stored ${hex32(entry.crc32)}, computed ${hex32(actual)})`);
    }
    return data;
  }
}

function hex32(value: number): string {
  return `0x${value.toString(16).padStart(8, '0')}`;
}

/** True when `bytes` starts like a ZIP archive (a local header or an empty archive's end record). */
export function looksLikeZip(bytes: Uint8Array): boolean {
  if (bytes.byteLength < 4) return false;
  const signature = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  return signature === LOCAL_HEADER_SIGNATURE || signature === END_OF_CENTRAL_DIRECTORY_SIGNATURE;
}

/** Bounds-checked little-endian field reads over the archive. */
class ByteReader {
  private readonly view: DataView;

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get length(): number {
    return this.bytes.byteLength;
  }

  /** Throws unless [offset, offset + size) lies within [0, limit). */
  need(offset: number, size: number, what: string, limit = this.length): void {
    if (!(offset >= 0 && size >= 0 && offset <= limit && size <= limit - offset)) {
      throw new FormatError(`zip: ${what} (bytes ${offset}..${offset + size}) is outside the archive's ${limit} bytes`);
    }
  }

  u16(offset: number): number {
    return this.view.getUint16(offset, true);
  }

  u32(offset: number): number {
    return this.view.getUint32(offset, true);
  }

  /** A 64-bit field as a number; ERR_FORMAT when it exceeds 2^53 − 1. */
  u64(offset: number, what: string): number {
    const value = this.view.getBigUint64(offset, true);
    check(value <= BigInt(Number.MAX_SAFE_INTEGER), () => `zip: ${what} ${value} is too large`);
    return Number(value);
  }
}

interface CentralDirectoryLocation {
  entryCount: number;
  offset: number;
  size: number;
  /** Where the central directory must end: the zip64 end record or the end record. */
  limit: number;
}

/** Opens the archive in `bytes`, checking every structure; ERR_FORMAT if anything is out of place. */
export function readZip(bytes: Uint8Array): ZipArchive {
  const reader = new ByteReader(bytes);
  const directory = locateCentralDirectory(reader);
  const entries = new Map<string, ZipEntry>();
  const nameDecoder = new TextDecoder('utf-8');
  let position = directory.offset;
  const directoryEnd = directory.offset + directory.size;
  for (let index = 0; index < directory.entryCount; index++) {
    reader.need(position, CENTRAL_HEADER_SIZE, `central directory entry ${index}`, directoryEnd);
    check(reader.u32(position) === CENTRAL_HEADER_SIGNATURE, () => `zip: bad signature for central directory entry ${index} at ${position}`);
    const flags = reader.u16(position + 8);
    const method = reader.u16(position + 10);
    const crc = reader.u32(position + 16);
    let compressedSize = reader.u32(position + 20);
    let uncompressedSize = reader.u32(position + 24);
    const nameLength = reader.u16(position + 28);
    const extraLength = reader.u16(position + 30);
    const commentLength = reader.u16(position + 32);
    let diskStart = reader.u16(position + 34);
    let localHeaderOffset = reader.u32(position + 42);
    const variableSize = nameLength + extraLength + commentLength;
    reader.need(position + CENTRAL_HEADER_SIZE, variableSize, `name/extra/comment of central entry ${index}`, directoryEnd);
    const nameStart = position + CENTRAL_HEADER_SIZE;
    const nameBytes = bytes.subarray(nameStart, nameStart + nameLength);
    const name = nameDecoder.decode(nameBytes);

    const zip64 = readZip64Extra(reader, nameStart + nameLength, extraLength, {
      uncompressed: uncompressedSize === SATURATED_32,
      compressed: compressedSize === SATURATED_32,
      offset: localHeaderOffset === SATURATED_32,
      disk: diskStart === SATURATED_16,
    });
    uncompressedSize = zip64.uncompressed ?? uncompressedSize;
    compressedSize = zip64.compressed ?? compressedSize;
    localHeaderOffset = zip64.offset ?? localHeaderOffset;
    diskStart = zip64.disk ?? diskStart;
    check(diskStart === 0, () => `zip: entry ${name} starts on disk ${diskStart}; multi-disk archives are not supported`);
    check(!entries.has(name), () => `zip: duplicate entry name ${JSON.stringify(name)}`);

    // The local header repeats the name; its own extra field decides where the data starts.
    reader.need(localHeaderOffset, LOCAL_HEADER_SIZE, `local header of ${name}`, directory.offset);
    check(reader.u32(localHeaderOffset) === LOCAL_HEADER_SIGNATURE, () => `zip: bad local header signature for ${name} at ${localHeaderOffset}`);
    const localNameLength = reader.u16(localHeaderOffset + 26);
    const localExtraLength = reader.u16(localHeaderOffset + 28);
    const localNameStart = localHeaderOffset + LOCAL_HEADER_SIZE;
    reader.need(localNameStart, localNameLength + localExtraLength, `local name/extra of ${name}`, directory.offset);
    check(
      localNameLength === nameLength && bytesEqual(bytes.subarray(localNameStart, localNameStart + localNameLength), nameBytes),
      () => `zip: local header name of ${name} does not match the central directory`,
    );
    const dataOffset = localNameStart + localNameLength + localExtraLength;
    reader.need(dataOffset, compressedSize, `data of ${name}`, directory.offset);

    entries.set(name, {
      name,
      dataOffset,
      compressedSize,
      uncompressedSize,
      crc32: crc,
      method,
      encrypted: (flags & FLAG_ENCRYPTED) !== 0,
    });
    position = nameStart + variableSize;
  }
  return new ZipArchive(bytes, entries);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Finds the end record (searching back over a comment of up to 64 KiB) and, if present, the zip64 records. */
function locateCentralDirectory(reader: ByteReader): CentralDirectoryLocation {
  const length = reader.length;
  check(length >= END_OF_CENTRAL_DIRECTORY_SIZE, `zip: ${length} bytes is too short for a ZIP archive`);
  const searchStart = length - END_OF_CENTRAL_DIRECTORY_SIZE;
  const searchStop = Math.max(0, searchStart - MAX_COMMENT_SIZE);
  let end = -1;
  for (let offset = searchStart; offset >= searchStop; offset--) {
    if (reader.u32(offset) === END_OF_CENTRAL_DIRECTORY_SIGNATURE && offset + END_OF_CENTRAL_DIRECTORY_SIZE + reader.u16(offset + 20) <= length) {
      end = offset;
      break;
    }
  }
  check(end >= 0, 'zip: no end-of-central-directory record (not a ZIP archive, or truncated)');

  const diskNumber = reader.u16(end + 4);
  const directoryDisk = reader.u16(end + 6);
  let entriesOnDisk = reader.u16(end + 8);
  let entryCount = reader.u16(end + 10);
  let size = reader.u32(end + 12);
  let offset = reader.u32(end + 16);
  let limit = end;

  const locator = end - ZIP64_LOCATOR_SIZE;
  if (locator >= 0 && reader.u32(locator) === ZIP64_LOCATOR_SIGNATURE) {
    check(reader.u32(locator + 4) === 0 && reader.u32(locator + 16) <= 1, 'zip: multi-disk zip64 archives are not supported');
    const zip64End = reader.u64(locator + 8, 'zip64 end record offset');
    reader.need(zip64End, ZIP64_END_SIZE, 'zip64 end-of-central-directory record', locator);
    check(reader.u32(zip64End) === ZIP64_END_SIGNATURE, () => `zip: bad zip64 end record signature at ${zip64End}`);
    check(reader.u32(zip64End + 16) === 0 && reader.u32(zip64End + 20) === 0, 'zip: multi-disk zip64 archives are not supported');
    entriesOnDisk = reader.u64(zip64End + 24, 'zip64 entry count on disk');
    entryCount = reader.u64(zip64End + 32, 'zip64 entry count');
    size = reader.u64(zip64End + 40, 'zip64 central directory size');
    offset = reader.u64(zip64End + 48, 'zip64 central directory offset');
    limit = zip64End;
  } else {
    check(diskNumber === 0 && directoryDisk === 0, 'zip: multi-disk archives are not supported');
  }
  check(entriesOnDisk === entryCount, 'zip: multi-disk archives are not supported');
  reader.need(offset, size, 'central directory', limit);
  check(
    entryCount <= Math.floor(size / CENTRAL_HEADER_SIZE),
    () => `zip: ${entryCount} entries cannot fit in a ${size}-byte central directory`,
  );
  return { entryCount, offset, size, limit };
}

interface Zip64Fields {
  uncompressed?: number;
  compressed?: number;
  offset?: number;
  disk?: number;
}

/**
 * The zip64 extra field (id 1) of a central entry: 64-bit values, present only for
 * the fields saturated in the fixed header, in the order uncompressed, compressed,
 * local header offset, disk.
 */
function readZip64Extra(
  reader: ByteReader,
  extraStart: number,
  extraLength: number,
  saturated: { uncompressed: boolean; compressed: boolean; offset: boolean; disk: boolean },
): Zip64Fields {
  const fields: Zip64Fields = {};
  const extraEnd = extraStart + extraLength;
  let position = extraStart;
  while (position + 4 <= extraEnd) {
    const id = reader.u16(position);
    const size = reader.u16(position + 2);
    const dataStart = position + 4;
    reader.need(dataStart, size, 'extra field', extraEnd);
    if (id === ZIP64_EXTRA_ID) {
      let cursor = dataStart;
      const take64 = (what: string): number => {
        reader.need(cursor, 8, `zip64 ${what}`, dataStart + size);
        const value = reader.u64(cursor, `zip64 ${what}`);
        cursor += 8;
        return value;
      };
      if (saturated.uncompressed) fields.uncompressed = take64('uncompressed size');
      if (saturated.compressed) fields.compressed = take64('compressed size');
      if (saturated.offset) fields.offset = take64('local header offset');
      if (saturated.disk) {
        reader.need(cursor, 4, 'zip64 disk number', dataStart + size);
        fields.disk = reader.u32(cursor);
      }
      return fields;
    }
    position = dataStart + size;
  }
  const missing = Object.entries(saturated).find(([, isSaturated]) => isSaturated);
  check(missing === undefined, () => `zip: ${missing?.[0]} needs a zip64 extra field, and there is none`);
  return fields;
}

// ---------------------------------------------------------------------------------
// Writer

export interface ZipWriteEntry {
  name: string;
  data: Uint8Array;
}

export interface ZipWriteOptions {
  /** Each entry's data starts on a multiple of this many bytes (default 64, like torch.save). */
  alignment?: number;
  /** Write zip64 records even when nothing needs them (tests the reader's zip64 path). */
  forceZip64?: boolean;
}

interface CentralRecord {
  nameBytes: Uint8Array;
  flags: number;
  crc: number;
  size: number;
  localHeaderOffset: number;
  zip64Sizes: boolean;
  zip64Offset: number | undefined;
}

/**
 * Streams a ZIP archive of STORED entries into `sink`: local header (+ padding so the
 * data is aligned), the data itself (the caller's bytes, not copied), then the
 * central directory and end records.
 */
export function writeZip(entries: Iterable<ZipWriteEntry>, sink: ByteSink, options: ZipWriteOptions = {}): void {
  const alignment = options.alignment ?? 64;
  if (!Number.isSafeInteger(alignment) || alignment < 1 || alignment > 0x8000) {
    throw new RangeError(`alignment must be an integer in [1, 32768], got ${alignment}`);
  }
  const forceZip64 = options.forceZip64 ?? false;
  const encoder = new TextEncoder();
  const records: CentralRecord[] = [];
  const names = new Set<string>();
  let offset = 0;
  const emit = (chunk: Uint8Array): void => {
    sink(chunk);
    offset += chunk.byteLength;
  };

  for (const { name, data } of entries) {
    if (names.has(name)) throw new FormatError(`zip: duplicate entry name ${JSON.stringify(name)}`);
    names.add(name);
    const nameBytes = encoder.encode(name);
    if (nameBytes.byteLength > SATURATED_16) throw new FormatError(`zip: entry name is longer than 65535 bytes`);
    const flags = /^[\x20-\x7e]*$/.test(name) ? 0 : FLAG_UTF8_NAME;
    const size = data.byteLength;
    const zip64Sizes = forceZip64 || size >= SATURATED_32;
    const localHeaderOffset = offset;
    const crc = crc32(data);

    const zip64Extra = zip64Sizes ? extraField(ZIP64_EXTRA_ID, u64Bytes(size, size)) : new Uint8Array(0);
    const unpaddedDataStart = localHeaderOffset + LOCAL_HEADER_SIZE + nameBytes.byteLength + zip64Extra.byteLength;
    const paddingExtra = alignmentPadding(unpaddedDataStart, alignment);
    const header = new Uint8Array(LOCAL_HEADER_SIZE);
    const view = new DataView(header.buffer);
    view.setUint32(0, LOCAL_HEADER_SIGNATURE, true);
    view.setUint16(4, zip64Sizes ? VERSION_ZIP64 : VERSION_DEFAULT, true);
    view.setUint16(6, flags, true);
    view.setUint16(8, METHOD_STORED, true);
    view.setUint16(10, 0, true); // time 00:00:00
    view.setUint16(12, DOS_DATE_EPOCH, true);
    view.setUint32(14, crc, true);
    view.setUint32(18, zip64Sizes ? SATURATED_32 : size, true);
    view.setUint32(22, zip64Sizes ? SATURATED_32 : size, true);
    view.setUint16(26, nameBytes.byteLength, true);
    view.setUint16(28, zip64Extra.byteLength + paddingExtra.byteLength, true);
    emit(header);
    emit(nameBytes);
    if (zip64Extra.byteLength) emit(zip64Extra);
    if (paddingExtra.byteLength) emit(paddingExtra);
    if (size) emit(data);

    const zip64Offset = forceZip64 || localHeaderOffset >= SATURATED_32 ? localHeaderOffset : undefined;
    records.push({ nameBytes, flags, crc, size, localHeaderOffset, zip64Sizes, zip64Offset });
  }

  const directoryOffset = offset;
  for (const record of records) emit(centralHeader(record));
  const directorySize = offset - directoryOffset;
  const needsZip64End =
    forceZip64 || records.length >= SATURATED_16 || directorySize >= SATURATED_32 || directoryOffset >= SATURATED_32;
  if (needsZip64End) {
    const zip64EndOffset = offset;
    const zip64End = new Uint8Array(ZIP64_END_SIZE);
    const view = new DataView(zip64End.buffer);
    view.setUint32(0, ZIP64_END_SIGNATURE, true);
    view.setBigUint64(4, BigInt(ZIP64_END_SIZE - 12), true);
    view.setUint16(12, VERSION_ZIP64, true);
    view.setUint16(14, VERSION_ZIP64, true);
    view.setBigUint64(24, BigInt(records.length), true);
    view.setBigUint64(32, BigInt(records.length), true);
    view.setBigUint64(40, BigInt(directorySize), true);
    view.setBigUint64(48, BigInt(directoryOffset), true);
    emit(zip64End);
    const locator = new Uint8Array(ZIP64_LOCATOR_SIZE);
    const locatorView = new DataView(locator.buffer);
    locatorView.setUint32(0, ZIP64_LOCATOR_SIGNATURE, true);
    locatorView.setBigUint64(8, BigInt(zip64EndOffset), true);
    locatorView.setUint32(16, 1, true);
    emit(locator);
  }
  const end = new Uint8Array(END_OF_CENTRAL_DIRECTORY_SIZE);
  const endView = new DataView(end.buffer);
  endView.setUint32(0, END_OF_CENTRAL_DIRECTORY_SIGNATURE, true);
  endView.setUint16(8, needsZip64End ? SATURATED_16 : records.length, true);
  endView.setUint16(10, needsZip64End ? SATURATED_16 : records.length, true);
  endView.setUint32(12, needsZip64End ? SATURATED_32 : directorySize, true);
  endView.setUint32(16, needsZip64End ? SATURATED_32 : directoryOffset, true);
  emit(end);
}

/** The whole archive in memory (tests, small files). */
export function zipBytes(entries: Iterable<ZipWriteEntry>, options: ZipWriteOptions = {}): Uint8Array {
  return collectBytes((sink) => writeZip(entries, sink, options));
}

function extraField(id: number, payload: Uint8Array): Uint8Array {
  const field = new Uint8Array(4 + payload.byteLength);
  const view = new DataView(field.buffer);
  view.setUint16(0, id, true);
  view.setUint16(2, payload.byteLength, true);
  field.set(payload, 4);
  return field;
}

function u64Bytes(...values: number[]): Uint8Array {
  const bytes = new Uint8Array(8 * values.length);
  const view = new DataView(bytes.buffer);
  values.forEach((value, index) => view.setBigUint64(8 * index, BigInt(value), true));
  return bytes;
}

/** A padding extra field ("FB" + filler) that moves `dataStart` to a multiple of `alignment`; empty if already aligned. */
function alignmentPadding(dataStart: number, alignment: number): Uint8Array {
  if (dataStart % alignment === 0) return new Uint8Array(0);
  const fillerLength = (alignment - ((dataStart + 4) % alignment)) % alignment;
  return extraField(PADDING_EXTRA_ID, new Uint8Array(fillerLength).fill(0x5a /* 'Z' */));
}

function centralHeader(record: CentralRecord): Uint8Array {
  const zip64Values: number[] = [];
  if (record.zip64Sizes) zip64Values.push(record.size, record.size);
  if (record.zip64Offset !== undefined) zip64Values.push(record.zip64Offset);
  const extra = zip64Values.length ? extraField(ZIP64_EXTRA_ID, u64Bytes(...zip64Values)) : new Uint8Array(0);
  const usesZip64 = zip64Values.length > 0;
  const header = new Uint8Array(CENTRAL_HEADER_SIZE + record.nameBytes.byteLength + extra.byteLength);
  const view = new DataView(header.buffer);
  view.setUint32(0, CENTRAL_HEADER_SIGNATURE, true);
  view.setUint16(4, usesZip64 ? VERSION_ZIP64 : VERSION_DEFAULT, true); // made by: MS-DOS host
  view.setUint16(6, usesZip64 ? VERSION_ZIP64 : VERSION_DEFAULT, true);
  view.setUint16(8, record.flags, true);
  view.setUint16(10, METHOD_STORED, true);
  view.setUint16(12, 0, true);
  view.setUint16(14, DOS_DATE_EPOCH, true);
  view.setUint32(16, record.crc, true);
  view.setUint32(20, record.zip64Sizes ? SATURATED_32 : record.size, true);
  view.setUint32(24, record.zip64Sizes ? SATURATED_32 : record.size, true);
  view.setUint16(28, record.nameBytes.byteLength, true);
  view.setUint16(30, extra.byteLength, true);
  view.setUint32(42, record.zip64Offset !== undefined ? SATURATED_32 : record.localHeaderOffset, true);
  header.set(record.nameBytes, CENTRAL_HEADER_SIZE);
  header.set(extra, CENTRAL_HEADER_SIZE + record.nameBytes.byteLength);
  return header;
}
