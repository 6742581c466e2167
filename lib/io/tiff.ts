/**
 * TIFF / BigTIFF directory reader: walks the IFD chain (and page 0's SubIFDs) and
 * returns, per directory, the few tags a slide reader needs to pick pyramid levels
 * (size, tiling, NewSubfileType, ImageDescription, resolution). Pixel data is not
 * touched: decoding is libvips' job (lib/io/slide.ts).
 *
 * Follows the TIFF 6.0 specification (Adobe, 1992), §2 "TIFF Structure" and the
 * BigTIFF extension (header 0x2B, 8-byte offsets and counts, 20-byte entries).
 * Every count, offset and size read from the file is checked against the file size
 * and against fixed caps before anything is allocated; a loop in the IFD chain is an
 * error. Violations throw `FormatError` (`code: 'ERR_FORMAT'`).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { FormatError } from './errors.js';

/** One image file directory, as far as slide reading needs it. */
export interface TiffDirectory {
  /** Position in the main IFD chain (libvips `page`), or the parent page for a SubIFD. */
  page: number;
  /** Index among page `page`'s SubIFDs (libvips `subifd`), or -1 for a main-chain directory. */
  subifd: number;
  /** ImageWidth (256) × ImageLength (257), pixels. */
  width: number;
  height: number;
  /** TileWidth (322) / TileLength (323); 0 when the image is stored in strips. */
  tileWidth: number;
  tileHeight: number;
  /** NewSubfileType (254): bit 0 reduced-resolution, bit 1 page, bit 2 mask. 0 when absent. */
  subfileType: number;
  /** Compression (259), 1 when absent. */
  compression: number;
  /** SamplesPerPixel (277), 1 when absent. */
  samplesPerPixel: number;
  /** BitsPerSample (258), first value, 1 when absent. */
  bitsPerSample: number;
  /** PhotometricInterpretation (262), -1 when absent. */
  photometric: number;
  /** ImageDescription (270), Software (305), Make (271), Model (272), DateTime (306). */
  description?: string;
  software?: string;
  make?: string;
  model?: string;
  dateTime?: string;
  /** XResolution (282) / YResolution (283) as numbers; ResolutionUnit (296) only when present. */
  xResolution?: number;
  yResolution?: number;
  resolutionUnit?: number;
  /** True when the directory carries Hamamatsu NDPI private tags (65420), which need OpenSlide. */
  ndpi: boolean;
  /**
   * End of the image data: the largest offset + byte count over the tiles (or strips), 0
   * when the tables are absent. Beyond the file size, the file is truncated: libvips would
   * decode the missing tiles as black without failing (at its 'error' level).
   */
  dataEnd: number;
}

/** The parsed file: byte order, flavour and directories (main chain first, then SubIFDs). */
export interface TiffInfo {
  littleEndian: boolean;
  bigTiff: boolean;
  directories: TiffDirectory[];
}

/** Caps that bound the work and memory a hostile file can cause. */
const MAX_DIRECTORIES = 4096;
const MAX_ENTRIES_PER_IFD = 4096;
const MAX_STRING_BYTES = 1 << 20;
const MAX_SUBIFDS = 64;

/** Tags whose values are read; all others are skipped unread. */
const USED_TAGS = new Set([254, 256, 257, 258, 259, 262, 270, 271, 272, 277, 282, 283, 296, 305, 306, 322, 323, 330]);
/** A Hamamatsu NDPI private tag: its presence marks a file only OpenSlide reads correctly. */
const NDPI_MARKER_TAG = 65420;

/** Byte size of each TIFF field type (TIFF 6.0 §2 + BigTIFF 16..18); 0 = unknown. */
const TYPE_SIZES: Record<number, number> = { 1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8 };

/** Returns the TIFF flavour of a file header, or undefined when it is not a TIFF. */
export function tiffFlavour(header: Uint8Array): { littleEndian: boolean; bigTiff: boolean } | undefined {
  if (header.length < 4) return undefined;
  const le = header[0] === 0x49 && header[1] === 0x49;
  const be = header[0] === 0x4d && header[1] === 0x4d;
  if (!le && !be) return undefined;
  const magic = le ? header[2] | (header[3] << 8) : (header[2] << 8) | header[3];
  if (magic === 42) return { littleEndian: le, bigTiff: false };
  if (magic === 43) return { littleEndian: le, bigTiff: true };
  return undefined;
}

/** Positional, bounds-checked reads from an open file. */
class Reader {
  constructor(
    private readonly fd: number,
    readonly size: number,
    readonly littleEndian: boolean,
  ) {}

  bytes(offset: number, length: number, what: string): Uint8Array {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new FormatError(`TIFF ${what}: ${length} bytes at offset ${offset} lie outside the file (${this.size} bytes)`);
    }
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, out, done, length - done, offset + done);
      if (n <= 0) throw new FormatError(`TIFF ${what}: unexpected end of file at offset ${offset + done}`);
      done += n;
    }
    return out;
  }

  view(offset: number, length: number, what: string): DataView {
    const b = this.bytes(offset, length, what);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
}

function readUint(view: DataView, at: number, size: number, le: boolean): number {
  switch (size) {
    case 1:
      return view.getUint8(at);
    case 2:
      return view.getUint16(at, le);
    case 4:
      return view.getUint32(at, le);
    default: {
      const v = view.getBigUint64(at, le);
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`TIFF value ${v} exceeds 2^53`);
      return Number(v);
    }
  }
}

interface RawEntry {
  tag: number;
  type: number;
  count: number;
  /** Where the value bytes are: inline in the entry or at an offset in the file. */
  view: DataView;
  at: number;
  /** For DATA_TABLE_TAGS stored out of line: the table's file offset (its bytes are not read into `view`). */
  fileOffset?: number;
}

/** StripOffsets, StripByteCounts, TileOffsets, TileByteCounts. */
const DATA_TABLE_TAGS = new Set([273, 279, 324, 325]);
const TABLE_CHUNK = 8192;

/** The `count` values of an integer table at `fileOffset` (or inline), read `TABLE_CHUNK` at a time. */
function* tableChunks(r: Reader, entry: RawEntry): Generator<number[]> {
  const size = TYPE_SIZES[entry.type];
  if (entry.fileOffset === undefined || entry.fileOffset < 0) {
    yield entryUints(entry, r.littleEndian, entry.count);
    return;
  }
  for (let start = 0; start < entry.count; start += TABLE_CHUNK) {
    const n = Math.min(TABLE_CHUNK, entry.count - start);
    const view = r.view(entry.fileOffset + start * size, n * size, `tag ${entry.tag} table`);
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) out[i] = readUint(view, i * size, size, r.littleEndian);
    yield out;
  }
}

/** Largest offset + byte count over a directory's tiles (or strips); 0 without usable tables. */
function dataEnd(r: Reader, entries: Map<number, RawEntry>): number {
  const tiled = entries.has(324);
  const offsets = entries.get(tiled ? 324 : 273);
  const counts = entries.get(tiled ? 325 : 279);
  // Odd tables are left to the decoder (0: unknown); only a table or data past the end of the file is news here.
  const integer = (e: RawEntry): boolean => [3, 4, 16].includes(e.type);
  if (!offsets || !counts || offsets.count !== counts.count || !integer(offsets) || !integer(counts)) return 0;
  const o = tableChunks(r, offsets);
  const c = tableChunks(r, counts);
  let end = 0;
  for (let a = o.next(), b = c.next(); !a.done && !b.done; a = o.next(), b = c.next()) {
    for (let i = 0; i < a.value.length; i++) if (b.value[i] > 0) end = Math.max(end, a.value[i] + b.value[i]);
  }
  return end;
}

/** Reads every value of an integer-typed entry (BYTE, SHORT, LONG, LONG8, IFD, IFD8). */
function entryUints(entry: RawEntry, le: boolean, cap: number): number[] {
  const size = TYPE_SIZES[entry.type];
  if (![1, 3, 4, 13, 16, 18].includes(entry.type)) throw new FormatError(`TIFF tag ${entry.tag}: type ${entry.type} is not an unsigned integer type`);
  if (entry.count > cap) throw new FormatError(`TIFF tag ${entry.tag}: ${entry.count} values exceed the cap of ${cap}`);
  const out: number[] = [];
  for (let i = 0; i < entry.count; i++) out.push(readUint(entry.view, entry.at + i * size, size, le));
  return out;
}

function entryNumber(entry: RawEntry, le: boolean): number {
  if (entry.count < 1) throw new FormatError(`TIFF tag ${entry.tag}: no value`);
  const v = entry.view;
  switch (entry.type) {
    case 5:
    case 10: {
      const signed = entry.type === 10;
      const num = signed ? v.getInt32(entry.at, le) : v.getUint32(entry.at, le);
      const den = signed ? v.getInt32(entry.at + 4, le) : v.getUint32(entry.at + 4, le);
      return den === 0 ? NaN : num / den;
    }
    case 11:
      return v.getFloat32(entry.at, le);
    case 12:
      return v.getFloat64(entry.at, le);
    default:
      return entryUints({ ...entry, count: 1 }, le, 1)[0];
  }
}

function entryString(entry: RawEntry): string {
  if (entry.type !== 2 && entry.type !== 1 && entry.type !== 7) throw new FormatError(`TIFF tag ${entry.tag}: type ${entry.type} is not ASCII`);
  if (entry.count > MAX_STRING_BYTES) throw new FormatError(`TIFF tag ${entry.tag}: a ${entry.count}-byte string exceeds the cap of ${MAX_STRING_BYTES}`);
  let bytes = new Uint8Array(entry.view.buffer, entry.view.byteOffset + entry.at, entry.count);
  const nul = bytes.indexOf(0);
  if (nul >= 0) bytes = bytes.subarray(0, nul);
  return new TextDecoder('latin1').decode(bytes);
}

/**
 * Reads one IFD at `offset`: returns its entries (values resolved to inline or
 * out-of-line bytes, all bounds-checked) and the offset of the next IFD (0 = none).
 */
function readIfd(r: Reader, offset: number, bigTiff: boolean): { entries: Map<number, RawEntry>; next: number } {
  const le = r.littleEndian;
  const countSize = bigTiff ? 8 : 2;
  const entrySize = bigTiff ? 20 : 12;
  const inlineSize = bigTiff ? 8 : 4;
  const count = readUint(r.view(offset, countSize, 'IFD entry count'), 0, countSize, le);
  if (count === 0 || count > MAX_ENTRIES_PER_IFD) throw new FormatError(`TIFF IFD at offset ${offset} has ${count} entries (expected 1..${MAX_ENTRIES_PER_IFD})`);
  const body = r.view(offset + countSize, count * entrySize + inlineSize, 'IFD entries');
  const entries = new Map<number, RawEntry>();
  for (let i = 0; i < count; i++) {
    const at = i * entrySize;
    const tag = body.getUint16(at, le);
    const type = body.getUint16(at + 2, le);
    const n = readUint(body, at + 4, bigTiff ? 8 : 4, le);
    const typeSize = TYPE_SIZES[type] ?? 0;
    if (typeSize === 0) continue; // unknown types are skipped, as libtiff does
    const byteCount = n * typeSize;
    if (!Number.isSafeInteger(byteCount)) throw new FormatError(`TIFF tag ${tag}: value size overflows`);
    const valueAt = at + 4 + (bigTiff ? 8 : 4);
    if (DATA_TABLE_TAGS.has(tag)) {
      // Tile/strip tables can be huge: remember where they are; dataEnd() reads them in chunks.
      const fileOffset = byteCount <= inlineSize ? -1 : readUint(body, valueAt, inlineSize, le);
      entries.set(tag, { tag, type, count: n, view: body, at: valueAt, fileOffset });
      continue;
    }
    if (!USED_TAGS.has(tag)) {
      if (tag === NDPI_MARKER_TAG) entries.set(tag, { tag, type, count: 0, view: body, at: 0 });
      continue;
    }
    if (byteCount <= inlineSize) {
      entries.set(tag, { tag, type, count: n, view: body, at: valueAt });
    } else {
      const valueOffset = readUint(body, valueAt, inlineSize, le);
      if (byteCount > MAX_STRING_BYTES) throw new FormatError(`TIFF tag ${tag}: a ${byteCount}-byte value exceeds the cap of ${MAX_STRING_BYTES}`);
      entries.set(tag, { tag, type, count: n, view: r.view(valueOffset, byteCount, `tag ${tag} value`), at: 0 });
    }
  }
  const next = readUint(body, count * entrySize, inlineSize, le);
  return { entries, next };
}

function toDirectory(r: Reader, entries: Map<number, RawEntry>, le: boolean, page: number, subifd: number): TiffDirectory {
  const num = (tag: number, fallback: number): number => {
    const e = entries.get(tag);
    return e ? entryNumber(e, le) : fallback;
  };
  const str = (tag: number): string | undefined => {
    const e = entries.get(tag);
    return e ? entryString(e) : undefined;
  };
  const width = num(256, 0);
  const height = num(257, 0);
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width <= 0 || height <= 0 || width > 2 ** 31 || height > 2 ** 31) {
    throw new FormatError(`TIFF directory ${page}${subifd >= 0 ? `/subifd ${subifd}` : ''}: bad image size ${width}×${height}`);
  }
  const tileWidth = entries.has(322) ? num(322, 0) : 0;
  const tileHeight = entries.has(323) ? num(323, 0) : 0;
  if ((tileWidth > 0) !== (tileHeight > 0) || tileWidth < 0 || tileHeight < 0 || tileWidth > 65536 || tileHeight > 65536) {
    throw new FormatError(`TIFF directory ${page}: bad tile size ${tileWidth}×${tileHeight}`);
  }
  const xRes = entries.has(282) ? num(282, NaN) : undefined;
  const yRes = entries.has(283) ? num(283, NaN) : undefined;
  return {
    page,
    subifd,
    width,
    height,
    tileWidth,
    tileHeight,
    subfileType: num(254, 0),
    compression: num(259, 1),
    samplesPerPixel: num(277, 1),
    bitsPerSample: num(258, 1),
    photometric: num(262, -1),
    description: str(270),
    software: str(305),
    make: str(271),
    model: str(272),
    dateTime: str(306),
    xResolution: xRes !== undefined && Number.isFinite(xRes) && xRes > 0 ? xRes : undefined,
    yResolution: yRes !== undefined && Number.isFinite(yRes) && yRes > 0 ? yRes : undefined,
    resolutionUnit: entries.has(296) ? num(296, 2) : undefined,
    ndpi: entries.has(NDPI_MARKER_TAG),
    dataEnd: dataEnd(r, entries),
  };
}

/**
 * Reads the directory structure of the TIFF at `path`.
 *
 * @returns the main IFD chain in file order (`page` 0, 1, ...) followed by page 0's
 *          SubIFDs (`subifd` 0, 1, ...).
 * @throws FormatError (`ERR_FORMAT`) for a header, offset, count or size that does
 *         not fit the file or the caps; errors of `fs` (ENOENT, ...) pass through.
 */
export function readTiffDirectories(path: string): TiffInfo {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const probe = new Reader(fd, size, true);
    const header = probe.bytes(0, Math.min(16, size), 'header');
    const flavour = tiffFlavour(header);
    if (!flavour) throw new FormatError('not a TIFF file (bad byte-order mark or magic number)');
    const { littleEndian, bigTiff } = flavour;
    const r = new Reader(fd, size, littleEndian);
    let first: number;
    if (bigTiff) {
      const h = r.view(0, 16, 'BigTIFF header');
      if (h.getUint16(4, littleEndian) !== 8 || h.getUint16(6, littleEndian) !== 0) throw new FormatError('BigTIFF header: offset size must be 8');
      first = readUint(h, 8, 8, littleEndian);
    } else {
      first = r.view(4, 4, 'header').getUint32(0, littleEndian);
    }
    const directories: TiffDirectory[] = [];
    const seen = new Set<number>();
    let subifdOffsets: number[] = [];
    let offset = first;
    while (offset !== 0) {
      if (seen.has(offset)) throw new FormatError(`TIFF IFD chain loops back to offset ${offset}`);
      if (directories.length >= MAX_DIRECTORIES) throw new FormatError(`TIFF has more than ${MAX_DIRECTORIES} directories`);
      seen.add(offset);
      const { entries, next } = readIfd(r, offset, bigTiff);
      const page = directories.length;
      directories.push(toDirectory(r, entries, littleEndian, page, -1));
      const sub = entries.get(330);
      if (page === 0 && sub) subifdOffsets = entryUints(sub, littleEndian, MAX_SUBIFDS);
      offset = next;
    }
    if (directories.length === 0) throw new FormatError('TIFF has no image directory');
    subifdOffsets.forEach((subOffset, index) => {
      if (seen.has(subOffset)) throw new FormatError(`TIFF SubIFD ${index} points at an IFD already read`);
      seen.add(subOffset);
      const { entries } = readIfd(r, subOffset, bigTiff);
      directories.push(toDirectory(r, entries, littleEndian, 0, index));
    });
    return { littleEndian, bigTiff, directories };
  } finally {
    closeSync(fd);
  }
}
