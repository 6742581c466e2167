/**
 * Whole-slide image reading: `openSlide(path) → Slide` with OpenSlide's model of a
 * slide (levels with dimensions and downsamples, properties, `readRegion` in level-0
 * coordinates, thumbnails), over pluggable backends.
 *
 * Backends implement `SlideBackend`. This file ships the fallback backend `sharp`
 * (libvips, bundled with sharp): pyramidal TIFF and Aperio SVS read as TIFF pages,
 * plain TIFF, JPEG and PNG as single-level slides. An OpenSlide backend (native
 * addon, when libopenslide was present at build time) registers itself with
 * `registerSlideBackend` and is then preferred.
 *
 * Conventions, following OpenSlide (openslide.c, openslide-python lowlevel.py) and
 * openslide-python + CLAM usage (`read_region(...).convert('RGB')`):
 * - `readRegion(x, y, level, w, h)`: (x, y) is the top-left corner in LEVEL-0
 *   pixels, (w, h) the size in pixels OF `level`; the result is RGB [h, w, 3] uint8.
 * - Pixels outside the slide are what openslide-python + `.convert('RGB')` gives for
 *   OpenSlide's transparent ARGB 0: black (0, 0, 0). `OpenSlideOptions.background`
 *   changes it. A region lying entirely outside the slide is an `ERR_RANGE` error.
 * - Level downsample = (w0/w + h0/h) / 2 (openslide_open); best level for a
 *   downsample = the last level whose downsample is ≤ it (openslide_get_best_level_for_downsample).
 * - Properties use OpenSlide's names: `openslide.vendor`, `openslide.mpp-x`,
 *   `openslide.objective-power`, `openslide.level[i].*`, `tiff.*`, `aperio.*`.
 *
 * Errors carry a stable `code`: `ERR_FORMAT` (not a slide we can read, damaged
 * header), `ERR_SLIDE_READ` (missing file, I/O or decode failure, closed slide),
 * `ERR_RANGE` (bad level, size or a region outside the slide), `ERR_ARGUMENT`.
 */
import { openSync, readSync, closeSync, statSync } from 'node:fs';
import { basename, extname } from 'node:path';
import sharp, { type Metadata, type Sharp } from 'sharp';
import { FormatError, withCode } from './errors.js';
import { readTiffDirectories, tiffFlavour, type TiffDirectory } from './tiff.js';

/** An 8-bit RGB image: `data` is [height, width, 3] row-major, interleaved. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Microns per pixel at level 0. */
export interface Mpp {
  x: number;
  y: number;
}

export interface OpenSlideOptions {
  /** Backend name (`'sharp'`, `'openslide'`) or `'auto'` (default): the first available that opens the file. */
  backend?: string;
  /** RGB written for pixels outside the slide (default [0, 0, 0], what CLAM sees through OpenSlide). */
  background?: readonly [number, number, number];
  /**
   * Levels stored without tiles (JPEG, PNG, stripped TIFF) are decoded once and kept
   * in memory when they fit in this many bytes (default 768 MiB); larger ones are
   * decoded per region (correct, but slow for JPEG/PNG).
   */
  decodeCacheBytes?: number;
  /**
   * Decoded tiles of tiled levels are kept in an LRU cache of this many bytes (default
   * 64 MiB), so neighbouring patches (CLAM grids overlap TIFF tiles) decode each tile once.
   */
  tileCacheBytes?: number;
}

/**
 * What a backend returns for an open file. Arguments reaching it are validated by
 * `Slide`: integer coordinates, `0 ≤ level < levelCount`, w, h ≥ 1, and a region that
 * overlaps the level.
 */
export interface SlideHandle {
  /** [levelCount] of [width, height] in pixels, level 0 first, widths decreasing. */
  readonly levelDimensions: readonly (readonly [number, number])[];
  /** [levelCount] downsample of each level relative to level 0 (level 0: 1). */
  readonly levelDownsamples: readonly number[];
  /** Vendor and format properties, OpenSlide names. */
  readonly properties: Readonly<Record<string, string>>;
  /** RGB [h, w, 3] of the region at (x, y) level-0, size (w, h) at `level`; outside pixels = `background`. */
  readRegion(x: number, y: number, level: number, w: number, h: number, background: readonly [number, number, number]): Promise<Uint8Array>;
  /** Whole slide resized to exactly (width, height), drawn from `level`. */
  thumbnail(level: number, width: number, height: number): Promise<RgbImage>;
  close(): void;
}

/** A way of reading slides; registered with `registerSlideBackend`. */
export interface SlideBackend {
  readonly name: string;
  /** Null when the backend can be used on this machine, else the reason it cannot. */
  unavailableReason(): string | null;
  /** Cheap test on the path and the first 64 bytes: is this file worth trying? */
  canOpen(path: string, header: Uint8Array): boolean;
  /** Opens the file; throws `ERR_FORMAT` when it is not a slide this backend reads. */
  open(path: string, options: Required<Pick<OpenSlideOptions, 'decodeCacheBytes' | 'tileCacheBytes'>>): Promise<SlideHandle>;
}

/** Largest region one `readRegion` call may return (bytes of RGB). */
const MAX_REGION_BYTES = 1 << 30;
const DEFAULT_DECODE_CACHE_BYTES = 768 * 1024 * 1024;
const DEFAULT_TILE_CACHE_BYTES = 64 * 1024 * 1024;
/** Regions spanning more tiles than this bypass the tile cache (whole-level reads). */
const MAX_CACHED_TILES_PER_READ = 64;

function readError(message: string, cause?: unknown): Error & { code: string } {
  return withCode(new Error(message, cause === undefined ? undefined : { cause }), 'ERR_SLIDE_READ');
}

function rangeErr(message: string): RangeError & { code: string } {
  return withCode(new RangeError(message), 'ERR_RANGE');
}

function argumentError(name: string, what: string, value: unknown): TypeError & { code: string } {
  return withCode(new TypeError(`Expected ${name} to be ${what} but received ${String(value)}`), 'ERR_ARGUMENT');
}

function checkInt(name: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw argumentError(name, 'an integer', value);
  if (value < min) throw rangeErr(`Expected ${name} to be ≥ ${min} but received ${value}`);
  return value;
}

/**
 * OpenSlide's level choice: the last level whose downsample is ≤ `downsample`
 * (level 0 when `downsample` is below every level's).
 */
export function bestLevelForDownsample(levelDownsamples: readonly number[], downsample: number): number {
  if (!(downsample >= levelDownsamples[0])) return 0;
  for (let i = 1; i < levelDownsamples.length; i++) if (downsample < levelDownsamples[i]) return i - 1;
  return levelDownsamples.length - 1;
}

/** An open whole-slide image. Not thread-bound; reads may run concurrently. */
export class Slide {
  /** File name without extension, as CLAM names its outputs. */
  readonly name: string;
  readonly levelCount: number;
  readonly levelDimensions: readonly (readonly [number, number])[];
  readonly levelDownsamples: readonly number[];
  readonly properties: Readonly<Record<string, string>>;
  /** Level-0 microns per pixel, when the file states it (Aperio `MPP`, TIFF resolution in cm/inch). */
  readonly mpp?: Mpp;
  private handle: SlideHandle | undefined;
  private readonly background: readonly [number, number, number];

  constructor(
    readonly path: string,
    /** Name of the backend that opened the file. */
    readonly backend: string,
    handle: SlideHandle,
    background: readonly [number, number, number],
  ) {
    this.handle = handle;
    this.name = basename(path, extname(path));
    this.levelDimensions = handle.levelDimensions;
    this.levelDownsamples = handle.levelDownsamples;
    this.levelCount = handle.levelDimensions.length;
    this.properties = handle.properties;
    this.background = background;
    const mx = Number(handle.properties['openslide.mpp-x']);
    const my = Number(handle.properties['openslide.mpp-y']);
    if (Number.isFinite(mx) && mx > 0 && Number.isFinite(my) && my > 0) this.mpp = { x: mx, y: my };
  }

  /** Level-0 [width, height]. */
  get dimensions(): readonly [number, number] {
    return this.levelDimensions[0];
  }

  /** OpenSlide `get_best_level_for_downsample`. */
  getBestLevelForDownsample(downsample: number): number {
    if (typeof downsample !== 'number' || Number.isNaN(downsample)) throw argumentError('downsample', 'a number', downsample);
    return bestLevelForDownsample(this.levelDownsamples, downsample);
  }

  private open(): SlideHandle {
    if (!this.handle) throw readError(`${this.path}: the slide is closed`);
    return this.handle;
  }

  private checkLevel(level: unknown): number {
    const l = checkInt('level', level, 0);
    if (l >= this.levelCount) throw rangeErr(`level ${l} is out of range: ${this.path} has ${this.levelCount} level(s)`);
    return l;
  }

  /**
   * Reads a region like OpenSlide `read_region`.
   *
   * @param x, y  top-left corner in level-0 pixels (may be negative)
   * @param level pyramid level
   * @param w, h  size in pixels of `level`
   * @returns RGB [h, w, 3]; pixels outside the slide are the `background` colour
   * @throws ERR_RANGE when the region lies entirely outside the slide, the level does
   *         not exist or the region exceeds 1 GiB; ERR_SLIDE_READ when decoding fails.
   */
  async readRegion(x: number, y: number, level: number, w: number, h: number): Promise<RgbImage> {
    const handle = this.open();
    checkInt('x', x, Number.MIN_SAFE_INTEGER);
    checkInt('y', y, Number.MIN_SAFE_INTEGER);
    const l = this.checkLevel(level);
    checkInt('w', w, 1);
    checkInt('h', h, 1);
    if (w * h * 3 > MAX_REGION_BYTES) throw rangeErr(`region ${w}×${h} exceeds the ${MAX_REGION_BYTES}-byte limit of one read`);
    const ds = this.levelDownsamples[l];
    const [lw, lh] = this.levelDimensions[l];
    const lx = Math.trunc(x / ds);
    const ly = Math.trunc(y / ds);
    if (lx >= lw || ly >= lh || lx + w <= 0 || ly + h <= 0) {
      throw rangeErr(
        `region (${x}, ${y}) level ${l} size ${w}×${h} lies entirely outside ${this.path} (level ${l} is ${lw}×${lh}, level 0 ${this.dimensions[0]}×${this.dimensions[1]})`,
      );
    }
    const data = await handle.readRegion(x, y, l, w, h, this.background);
    return { width: w, height: h, data };
  }

  /** The whole of `level` as RGB (for segmentation); refuses more than 1 GiB. */
  async readLevel(level: number): Promise<RgbImage> {
    const l = this.checkLevel(level);
    const [w, h] = this.levelDimensions[l];
    return this.readRegion(0, 0, l, w, h);
  }

  /**
   * The whole slide scaled to fit in maxSize × maxSize, aspect kept, never enlarged
   * (openslide-python `get_thumbnail`: best level for the downsample, then resized).
   */
  async thumbnail(maxSize: number): Promise<RgbImage> {
    const handle = this.open();
    checkInt('maxSize', maxSize, 1);
    const [w0, h0] = this.dimensions;
    const scale = Math.min(1, maxSize / w0, maxSize / h0);
    const tw = Math.max(1, Math.round(w0 * scale));
    const th = Math.max(1, Math.round(h0 * scale));
    const level = bestLevelForDownsample(this.levelDownsamples, Math.max(w0 / tw, h0 / th));
    return handle.thumbnail(level, tw, th);
  }

  /** Releases the backend's resources; later reads throw ERR_SLIDE_READ. */
  close(): void {
    this.handle?.close();
    this.handle = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

// ---------------------------------------------------------------------------------
// Backend registry

const registry: { backend: SlideBackend; priority: number }[] = [];

/**
 * Adds a backend. Higher `priority` is tried first by `openSlide(..., {backend: 'auto'})`;
 * the built-in `sharp` backend has priority 0, an OpenSlide backend should use 10.
 */
export function registerSlideBackend(backend: SlideBackend, priority = 0): void {
  const at = registry.findIndex((r) => r.backend.name === backend.name);
  if (at >= 0) registry.splice(at, 1);
  registry.push({ backend, priority });
  registry.sort((a, b) => b.priority - a.priority);
}

/** Names of the backends usable on this machine, in the order `auto` tries them (e.g. `['openslide', 'sharp']`). */
export function availableSlideBackends(): string[] {
  return registry.filter(({ backend }) => backend.unavailableReason() === null).map(({ backend }) => backend.name);
}

/** Every registered backend, in the order `auto` tries them, with the reason it cannot be used. */
export function slideBackendStatus(): { name: string; available: boolean; reason?: string }[] {
  return registry.map(({ backend }) => {
    const reason = backend.unavailableReason();
    return reason === null ? { name: backend.name, available: true } : { name: backend.name, available: false, reason };
  });
}

function readHeader(path: string): Uint8Array {
  let fd: number;
  try {
    if (!statSync(path).isFile()) throw readError(`${path}: not a regular file`);
    fd = openSync(path, 'r');
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_SLIDE_READ') throw error;
    throw readError(`cannot open slide ${path}: ${(error as Error).message}`, error);
  }
  try {
    const header = new Uint8Array(64);
    const n = readSync(fd, header, 0, 64, 0);
    return header.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens a whole-slide image.
 *
 * @throws ERR_SLIDE_READ when the file is missing or unreadable, ERR_FORMAT when no
 *         backend reads it (the message says what each backend said).
 */
export async function openSlide(path: string, options: OpenSlideOptions = {}): Promise<Slide> {
  if (typeof path !== 'string' || path.length === 0) throw argumentError('path', 'a non-empty string', path);
  const background = options.background ?? [0, 0, 0];
  if (background.length !== 3 || background.some((c) => !Number.isInteger(c) || c < 0 || c > 255)) {
    throw argumentError('background', 'three integers in [0, 255]', background);
  }
  const decodeCacheBytes = options.decodeCacheBytes ?? DEFAULT_DECODE_CACHE_BYTES;
  checkInt('decodeCacheBytes', decodeCacheBytes, 0);
  const tileCacheBytes = options.tileCacheBytes ?? DEFAULT_TILE_CACHE_BYTES;
  checkInt('tileCacheBytes', tileCacheBytes, 0);
  const wanted = options.backend ?? 'auto';
  const header = readHeader(path);
  const candidates = registry.filter(({ backend }) => wanted === 'auto' || backend.name === wanted);
  if (candidates.length === 0) {
    throw argumentError('backend', `one of ${['auto', ...registry.map((r) => r.backend.name)].join(', ')}`, wanted);
  }
  const failures: string[] = [];
  let lastError: unknown;
  for (const { backend } of candidates) {
    const reason = backend.unavailableReason();
    if (reason !== null) {
      failures.push(`${backend.name}: unavailable (${reason})`);
      continue;
    }
    if (!backend.canOpen(path, header)) {
      failures.push(`${backend.name}: not a format it reads`);
      continue;
    }
    try {
      const handle = await backend.open(path, { decodeCacheBytes, tileCacheBytes });
      return new Slide(path, backend.name, handle, background);
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code !== 'ERR_FORMAT' && code !== 'ERR_SLIDE_READ') throw error;
      lastError = error;
      failures.push(`${backend.name}: ${(error as Error).message}`);
    }
  }
  const message = `cannot read ${path} as a slide:\n  ${failures.join('\n  ')}`;
  if ((lastError as { code?: string } | undefined)?.code === 'ERR_SLIDE_READ') throw readError(message, lastError);
  throw new FormatError(message, 'ERR_FORMAT', { cause: lastError });
}

// ---------------------------------------------------------------------------------
// The sharp (libvips) backend

/** How libvips addresses one level: a page of the main IFD chain and optionally a SubIFD. */
interface SharpLevel {
  width: number;
  height: number;
  page: number;
  subifd: number;
  tiled: boolean;
  tileWidth: number;
  tileHeight: number;
}

const JPEG_MAGIC = [0xff, 0xd8, 0xff];
const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function startsWith(header: Uint8Array, magic: number[]): boolean {
  return magic.every((b, i) => header[i] === b);
}

/** Microns per pixel allowed from a TIFF resolution tag; outside, the tag is taken as a placeholder (72 dpi, 1 px/mm). */
const PLAUSIBLE_MPP: readonly [number, number] = [0.01, 100];

/**
 * Picks pyramid levels among TIFF directories, as OpenSlide's generic-tiff and aperio
 * drivers do: level 0 is page 0; when it is tiled, every other tiled directory that is
 * smaller and has level 0's aspect ratio is a level. This drops an SVS's stripped
 * thumbnail, label and macro pages and transparency masks (NewSubfileType bit 2).
 */
export function pickPyramidLevels(directories: readonly TiffDirectory[]): TiffDirectory[] {
  const base = directories[0];
  const levels = [base];
  if (base.tileWidth > 0) {
    for (const d of directories.slice(1)) {
      if (d.tileWidth === 0 || (d.subfileType & 4) !== 0) continue;
      if (d.width >= base.width || d.height >= base.height) continue;
      const predictedHeight = (base.height * d.width) / base.width;
      if (Math.abs(d.height - predictedHeight) > Math.max(2, 0.02 * d.height)) continue;
      levels.push(d);
    }
  }
  levels.sort((a, b) => b.width - a.width);
  return levels.filter((d, i) => i === 0 || d.width !== levels[i - 1].width);
}

/** Aperio ImageDescription: `header|key = value|key = value...` (openslide aperio.c). */
export function parseAperioDescription(description: string): Record<string, string> {
  const out: Record<string, string> = {};
  const parts = description.split('|');
  for (const part of parts.slice(1)) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim();
    if (key.length > 0) out[`aperio.${key}`] = part.slice(eq + 1).trim();
  }
  return out;
}

/**
 * Level-0 microns per pixel from the `tiff.XResolution`, `tiff.YResolution` and
 * `tiff.ResolutionUnit` properties, as OpenSlide ≥ 4.0's tiff.c derives it: only when the
 * unit is centimeter or inch, and (our addition) only within PLAUSIBLE_MPP, since writers
 * leave placeholders such as 72 dpi. Used by the sharp backend, and by the OpenSlide
 * backend when libopenslide < 4.0 does not report mpp for generic TIFF.
 */
export function mppFromTiffResolution(props: Readonly<Record<string, string>>): Mpp | undefined {
  const unit = props['tiff.ResolutionUnit'];
  const perUnit = unit === 'centimeter' ? 10000 : unit === 'inch' ? 25400 : 0;
  const xres = Number(props['tiff.XResolution']);
  const yres = Number(props['tiff.YResolution']);
  if (perUnit === 0 || !(xres > 0) || !(yres > 0)) return undefined;
  const x = perUnit / xres;
  const y = perUnit / yres;
  const ok = (v: number): boolean => v >= PLAUSIBLE_MPP[0] && v <= PLAUSIBLE_MPP[1];
  return ok(x) && ok(y) ? { x, y } : undefined;
}

function tiffProperties(levels: readonly TiffDirectory[]): Record<string, string> {
  const base = levels[0];
  const props: Record<string, string> = {};
  const put = (key: string, value: string | number | undefined): void => {
    if (value !== undefined) props[key] = String(value);
  };
  put('tiff.ImageDescription', base.description);
  put('tiff.Software', base.software);
  put('tiff.Make', base.make);
  put('tiff.Model', base.model);
  put('tiff.DateTime', base.dateTime);
  put('tiff.XResolution', base.xResolution);
  put('tiff.YResolution', base.yResolution);
  if (base.resolutionUnit !== undefined) props['tiff.ResolutionUnit'] = base.resolutionUnit === 3 ? 'centimeter' : base.resolutionUnit === 2 ? 'inch' : 'none';
  const aperio = base.description?.startsWith('Aperio') ?? false;
  if (aperio) {
    props['openslide.vendor'] = 'aperio';
    Object.assign(props, parseAperioDescription(base.description ?? ''));
    const mpp = Number(props['aperio.MPP']);
    if (Number.isFinite(mpp) && mpp > 0) {
      props['openslide.mpp-x'] = String(mpp);
      props['openslide.mpp-y'] = String(mpp);
    }
    if (props['aperio.AppMag'] !== undefined) props['openslide.objective-power'] = props['aperio.AppMag'];
  } else {
    props['openslide.vendor'] = 'generic-tiff';
    const mpp = mppFromTiffResolution(props);
    if (mpp) {
      props['openslide.mpp-x'] = String(mpp.x);
      props['openslide.mpp-y'] = String(mpp.y);
    }
  }
  return props;
}

function levelProperties(props: Record<string, string>, levels: readonly SharpLevel[], downsamples: readonly number[]): void {
  props['openslide.level-count'] = String(levels.length);
  levels.forEach((l, i) => {
    props[`openslide.level[${i}].width`] = String(l.width);
    props[`openslide.level[${i}].height`] = String(l.height);
    props[`openslide.level[${i}].downsample`] = String(downsamples[i]);
    if (l.tiled) {
      props[`openslide.level[${i}].tile-width`] = String(l.tileWidth);
      props[`openslide.level[${i}].tile-height`] = String(l.tileHeight);
    }
  });
}

/** Interleaved pixels with 1–4 channels → RGB (grey replicated, alpha dropped as PIL `convert('RGB')` does). */
function toRgb(data: Uint8Array, pixels: number, channels: number): Uint8Array {
  if (channels === 3) return data;
  const out = new Uint8Array(pixels * 3);
  for (let i = 0; i < pixels; i++) {
    const s = i * channels;
    if (channels >= 3) {
      out[i * 3] = data[s];
      out[i * 3 + 1] = data[s + 1];
      out[i * 3 + 2] = data[s + 2];
    } else {
      out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = data[s];
    }
  }
  return out;
}

/** A byte-bounded least-recently-used map (Map keeps insertion order; a hit re-inserts). */
class LruBytes {
  private readonly map = new Map<string, Uint8Array>();
  private bytes = 0;
  constructor(readonly capacity: number) {}

  get(key: string): Uint8Array | undefined {
    const v = this.map.get(key);
    if (v) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  set(key: string, value: Uint8Array): void {
    if (value.byteLength > this.capacity) return;
    const old = this.map.get(key);
    if (old) {
      this.bytes -= old.byteLength;
      this.map.delete(key);
    }
    this.map.set(key, value);
    this.bytes += value.byteLength;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.capacity) break;
      this.map.delete(k);
      this.bytes -= v.byteLength;
    }
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }
}

class SharpSlideHandle implements SlideHandle {
  readonly levelDimensions: readonly (readonly [number, number])[];
  readonly levelDownsamples: readonly number[];
  /** Whole decoded untiled levels (JPEG, PNG, stripped TIFF), filled on first use. */
  private readonly decoded = new Map<number, Promise<Uint8Array>>();
  /** Decoded TIFF tiles, key `level:tx:ty`, RGB [tileH', tileW', 3] clipped at the level edge. */
  private readonly tiles: LruBytes;
  /** Tiles being decoded right now, so concurrent reads of neighbours share one libvips call. */
  private readonly inflight = new Map<string, Promise<Map<string, Uint8Array>>>();
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly levels: readonly SharpLevel[],
    readonly properties: Readonly<Record<string, string>>,
    private readonly decodeCacheBytes: number,
    tileCacheBytes: number,
  ) {
    this.tiles = new LruBytes(tileCacheBytes);
    this.levelDimensions = levels.map((l) => [l.width, l.height] as const);
    const [w0, h0] = this.levelDimensions[0];
    this.levelDownsamples = levels.map((l, i) => (i === 0 ? 1 : (w0 / l.width + h0 / l.height) / 2));
  }

  /** A fresh libvips pipeline on one level (libvips caches the open file between calls). */
  private pipeline(level: number): Sharp {
    const l = this.levels[level];
    return sharp(this.path, {
      page: l.page,
      ...(l.subifd >= 0 ? { tiff: { subifd: l.subifd } } : {}),
      limitInputPixels: false,
      failOn: 'error',
    });
  }

  private async decode(pipeline: Sharp, what: string): Promise<{ data: Uint8Array; width: number; height: number }> {
    try {
      const { data, info } = await pipeline.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
      const pixels = info.width * info.height;
      if (data.length !== pixels * info.channels) throw new Error(`decoder returned ${data.length} bytes for ${info.width}×${info.height}×${info.channels}`);
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      return { data: toRgb(bytes, pixels, info.channels), width: info.width, height: info.height };
    } catch (error) {
      throw readError(`${this.path}: cannot decode ${what}: ${(error as Error).message}`, error);
    }
  }

  private wholeLevel(level: number): Promise<Uint8Array> | undefined {
    const l = this.levels[level];
    if (l.tiled || l.width * l.height * 3 > this.decodeCacheBytes) return undefined;
    let p = this.decoded.get(level);
    if (!p) {
      p = this.decode(this.pipeline(level), `level ${level}`).then((r) => r.data);
      this.decoded.set(level, p);
      p.catch(() => this.decoded.delete(level));
    }
    return p;
  }

  /** RGB of the in-bounds rectangle [lx, lx+w) × [ly, ly+h) of `level`. */
  private async readRect(level: number, lx: number, ly: number, w: number, h: number): Promise<Uint8Array> {
    const whole = this.wholeLevel(level);
    if (whole) {
      const src = await whole;
      const lw = this.levels[level].width;
      if (lx === 0 && ly === 0 && w === lw && h === this.levels[level].height) return src.slice();
      const out = new Uint8Array(w * h * 3);
      for (let r = 0; r < h; r++) out.set(src.subarray(((ly + r) * lw + lx) * 3, ((ly + r) * lw + lx + w) * 3), r * w * 3);
      return out;
    }
    const l = this.levels[level];
    if (!l.tiled) return this.extract(level, lx, ly, w, h);
    const tx0 = Math.floor(lx / l.tileWidth);
    const ty0 = Math.floor(ly / l.tileHeight);
    const tx1 = Math.floor((lx + w - 1) / l.tileWidth);
    const ty1 = Math.floor((ly + h - 1) / l.tileHeight);
    if ((tx1 - tx0 + 1) * (ty1 - ty0 + 1) > MAX_CACHED_TILES_PER_READ || this.tiles.capacity === 0) {
      return this.extract(level, lx, ly, w, h);
    }
    // Tiles this region needs; the missing ones are decoded by one libvips call on their bounding box.
    const got = new Map<string, Uint8Array>();
    const waits = new Set<Promise<Map<string, Uint8Array>>>();
    let mx0 = Infinity;
    let my0 = Infinity;
    let mx1 = -1;
    let my1 = -1;
    for (let ty = ty0; ty <= ty1; ty++) {
      for (let tx = tx0; tx <= tx1; tx++) {
        const key = `${level}:${tx}:${ty}`;
        const tile = this.tiles.get(key);
        const pending = this.inflight.get(key);
        if (tile) got.set(key, tile);
        else if (pending) waits.add(pending);
        else {
          mx0 = Math.min(mx0, tx);
          mx1 = Math.max(mx1, tx);
          my0 = Math.min(my0, ty);
          my1 = Math.max(my1, ty);
        }
      }
    }
    if (mx1 >= 0) waits.add(this.decodeTiles(level, mx0, my0, mx1, my1));
    for (const block of await Promise.all(waits)) {
      for (const [key, tile] of block) got.set(key, tile);
    }
    const out = new Uint8Array(w * h * 3);
    for (let ty = ty0; ty <= ty1; ty++) {
      for (let tx = tx0; tx <= tx1; tx++) {
        const tile = got.get(`${level}:${tx}:${ty}`) as Uint8Array;
        const ox = tx * l.tileWidth; // tile origin in level pixels
        const oy = ty * l.tileHeight;
        const cw = Math.min(l.tileWidth, l.width - ox); // stored width (clipped at the right edge)
        // Overlap [ax, bx) × [ay, by) of this tile with the region.
        const ax = Math.max(ox, lx);
        const ay = Math.max(oy, ly);
        const bx = Math.min(ox + cw, lx + w);
        const by = Math.min(oy + l.tileHeight, ly + h);
        for (let y = ay; y < by; y++) {
          out.set(tile.subarray(((y - oy) * cw + (ax - ox)) * 3, ((y - oy) * cw + (bx - ox)) * 3), ((y - ly) * w + (ax - lx)) * 3);
        }
      }
    }
    return out;
  }

  /**
   * Decodes tiles [tx0..tx1] × [ty0..ty1] of `level` with one libvips call, caches them
   * and returns them by key; concurrent readers of the same tiles share the call.
   */
  private decodeTiles(level: number, tx0: number, ty0: number, tx1: number, ty1: number): Promise<Map<string, Uint8Array>> {
    const l = this.levels[level];
    const keys: string[] = [];
    for (let ty = ty0; ty <= ty1; ty++) for (let tx = tx0; tx <= tx1; tx++) keys.push(`${level}:${tx}:${ty}`);
    const work = (async () => {
      const bx = tx0 * l.tileWidth;
      const by = ty0 * l.tileHeight;
      const bw = Math.min((tx1 + 1) * l.tileWidth, l.width) - bx;
      const bh = Math.min((ty1 + 1) * l.tileHeight, l.height) - by;
      const block = await this.extract(level, bx, by, bw, bh);
      const tiles = new Map<string, Uint8Array>();
      for (let ty = ty0; ty <= ty1; ty++) {
        for (let tx = tx0; tx <= tx1; tx++) {
          const cx = tx * l.tileWidth - bx;
          const cy = ty * l.tileHeight - by;
          const cw = Math.min(l.tileWidth, bw - cx);
          const ch = Math.min(l.tileHeight, bh - cy);
          const tile = new Uint8Array(cw * ch * 3);
          for (let r = 0; r < ch; r++) tile.set(block.subarray(((cy + r) * bw + cx) * 3, ((cy + r) * bw + cx + cw) * 3), r * cw * 3);
          const key = `${level}:${tx}:${ty}`;
          this.tiles.set(key, tile);
          tiles.set(key, tile);
        }
      }
      return tiles;
    })();
    for (const key of keys) this.inflight.set(key, work);
    const done = (): void => {
      for (const key of keys) if (this.inflight.get(key) === work) this.inflight.delete(key);
    };
    work.then(done, done);
    return work;
  }

  /** One libvips call: RGB of the in-bounds rectangle. */
  private async extract(level: number, lx: number, ly: number, w: number, h: number): Promise<Uint8Array> {
    const { data, width, height } = await this.decode(this.pipeline(level).extract({ left: lx, top: ly, width: w, height: h }), `level ${level} region`);
    if (width !== w || height !== h) throw readError(`${this.path}: decoder returned ${width}×${height} for a ${w}×${h} region`);
    return data;
  }

  async readRegion(x: number, y: number, level: number, w: number, h: number, background: readonly [number, number, number]): Promise<Uint8Array> {
    if (this.closed) throw readError(`${this.path}: the slide is closed`);
    const ds = this.levelDownsamples[level];
    const { width: lw, height: lh } = this.levels[level];
    // OpenSlide: negative origins pad by trunc(-x / ds) pixels; positive ones start at x / ds.
    const lx = Math.trunc(x / ds);
    const ly = Math.trunc(y / ds);
    const x0 = Math.max(lx, 0);
    const y0 = Math.max(ly, 0);
    const x1 = Math.min(lx + w, lw);
    const y1 = Math.min(ly + h, lh);
    const inside = await this.readRect(level, x0, y0, x1 - x0, y1 - y0);
    if (x0 === lx && y0 === ly && x1 - x0 === w && y1 - y0 === h) return inside;
    const out = new Uint8Array(w * h * 3);
    if (background[0] !== 0 || background[1] !== 0 || background[2] !== 0) {
      for (let i = 0; i < w * h; i++) out.set(background, i * 3);
    }
    const iw = x1 - x0;
    for (let r = 0; r < y1 - y0; r++) {
      out.set(inside.subarray(r * iw * 3, (r + 1) * iw * 3), ((y0 - ly + r) * w + (x0 - lx)) * 3);
    }
    return out;
  }

  async thumbnail(level: number, width: number, height: number): Promise<RgbImage> {
    if (this.closed) throw readError(`${this.path}: the slide is closed`);
    const whole = this.wholeLevel(level);
    const l = this.levels[level];
    const source = whole ? sharp(await whole, { raw: { width: l.width, height: l.height, channels: 3 } }) : this.pipeline(level);
    const r = await this.decode(source.resize(width, height, { fit: 'fill' }), 'thumbnail');
    return { width: r.width, height: r.height, data: r.data };
  }

  close(): void {
    this.closed = true;
    this.decoded.clear();
    this.tiles.clear();
  }
}

/** libvips through sharp: TIFF pages (pyramidal TIFF, SVS), JPEG and PNG. Always available. */
export const sharpSlideBackend: SlideBackend = {
  name: 'sharp',
  unavailableReason: () => null,
  canOpen: (_path, header) => tiffFlavour(header) !== undefined || startsWith(header, JPEG_MAGIC) || startsWith(header, PNG_MAGIC),
  async open(path, { decodeCacheBytes, tileCacheBytes }) {
    const header = readHeader(path);
    if (tiffFlavour(header)) {
      let directories: TiffDirectory[];
      try {
        directories = readTiffDirectories(path).directories;
      } catch (error) {
        if (error instanceof FormatError) throw error;
        throw readError(`${path}: ${(error as Error).message}`, error);
      }
      if (directories.some((d) => d.ndpi)) {
        throw new FormatError(`${path} is a Hamamatsu NDPI file; it needs the OpenSlide backend (build with libopenslide installed)`);
      }
      const picked = pickPyramidLevels(directories);
      const fileSize = statSync(path).size;
      const cut = picked.find((d) => d.dataEnd > fileSize);
      if (cut) {
        // libvips would decode the missing tiles as black without an error.
        throw new FormatError(`${path} is truncated: the tiles of its ${cut.width}×${cut.height} level end at byte ${cut.dataEnd}, the file has ${fileSize} bytes`);
      }
      const levels: SharpLevel[] = picked.map((d) => ({
        width: d.width,
        height: d.height,
        page: d.page,
        subifd: d.subifd,
        tiled: d.tileWidth > 0,
        tileWidth: d.tileWidth,
        tileHeight: d.tileHeight,
      }));
      // Let libvips confirm it can decode level 0 (codec, sample format) before we promise anything.
      try {
        const meta = await sharp(path, { page: levels[0].page, limitInputPixels: false }).metadata();
        if (meta.width !== levels[0].width || meta.height !== levels[0].height) {
          throw new FormatError(`${path}: libvips sees level 0 as ${meta.width}×${meta.height}, the TIFF header says ${levels[0].width}×${levels[0].height}`);
        }
      } catch (error) {
        if (error instanceof FormatError) throw error;
        throw new FormatError(`${path}: libvips cannot read it: ${(error as Error).message}`, 'ERR_FORMAT', { cause: error });
      }
      const props = tiffProperties(picked);
      const handle = new SharpSlideHandle(path, levels, props, decodeCacheBytes, tileCacheBytes);
      levelProperties(props, levels, handle.levelDownsamples);
      return handle;
    }
    let meta: Metadata;
    try {
      meta = await sharp(path, { limitInputPixels: false }).metadata();
    } catch (error) {
      throw new FormatError(`${path}: not a readable JPEG/PNG: ${(error as Error).message}`, 'ERR_FORMAT', { cause: error });
    }
    const width = meta.width ?? 0;
    const height = meta.height ?? 0;
    if (!(width > 0 && height > 0)) throw new FormatError(`${path}: bad image size ${width}×${height}`);
    const levels: SharpLevel[] = [{ width, height, page: 0, subifd: -1, tiled: false, tileWidth: 0, tileHeight: 0 }];
    const props: Record<string, string> = { 'openslide.vendor': 'generic-image', 'mstar.format': String(meta.format) };
    const handle = new SharpSlideHandle(path, levels, props, decodeCacheBytes, tileCacheBytes);
    levelProperties(props, levels, handle.levelDownsamples);
    return handle;
  },
};

registerSlideBackend(sharpSlideBackend, 0);
