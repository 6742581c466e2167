/**
 * `mstar extract`: per-slide patch features, as CLAM's extract_features_fp.py
 * writes them, from slides and their CLAM coordinate files.
 *
 * For each slide `<name>.<ext>`:
 *   coords  `<coordsDir>/<name>.h5` (`mstar tile`) or `<coordsDir>/patches/<name>.h5`
 *           (CLAM's create_patches_fp.py layout): `coords` [N, 2] level-0 with attrs
 *           `patch_size`, `patch_level`
 *   read    `read_region((x, y), patch_level, (patch_size, patch_size))` → RGB, mSTAR
 *           transform (Resize(224) PIL-exact, ToTensor, Normalize) → [N, 3, 224, 224]
 *   embed   the patch encoder in batches → features [N, D] float32
 *   write   `<outDir>/h5_files/<name>.h5` (`features` float32 [N, D], `coords` int64 [N, 2])
 *           and `<outDir>/pt_files/<name>.pt` (one tensor [N, D] float32, what
 *           `torch.save(features)` writes; `torch.load(weights_only=True)` reads it)
 *
 * Pipeline: reading and transforming run in worker threads (lib/wsi/reader-pool.ts)
 * while the encoder runs on the main thread. Batches are dispatched in order across
 * slides — the next slide is prepared (coords checked against the slide) and its
 * first batches read while the current one is still being embedded — with at most
 * `prefetchBatches` batches read but not yet embedded (a bounded queue: memory stays
 * at prefetchBatches · B · 3·224·224 · 4 bytes).
 *
 * Robustness: every output is written under a temporary name and renamed when
 * complete (lib/io/atomic.ts, lib/io/files.ts), h5 first, pt second, so a killed run
 * leaves no truncated file; a rerun skips slides whose outputs all exist, rebuilds a
 * missing pt from its h5 (or h5 from pt + coords) without re-embedding, and removes
 * the temporaries dead runs left. A slide that cannot be processed (unreadable or
 * corrupt slide, missing or damaged coords, coords outside the slide) is reported
 * and skipped; the summary lists every outcome.
 */
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { checkPositiveInteger, invalidArgument } from '../errors.js';
import { PatchEncoder, loadPatchEncoder } from '../encoder.js';
import { removeStaleTemporaries } from '../io/atomic.js';
import { readClamCoords, readClamFeatures, writeClamCoords, writeClamFeatures, type ClamCoords } from '../io/clam.js';
import { withCode } from '../io/errors.js';
import { fromFloat32, isHostTensor, toFloat32 } from '../io/host-tensor.js';
import '../io/slide-openslide.js';
import { openSlide, type Slide } from '../io/slide.js';
import { readTorchFile, writeTorchTensor } from '../io/torch.js';
import { Tensor, tidy } from '../tensor.js';
import { MSTAR_INPUT_SIZE, transformedPatchElements } from './patches.js';
import { PatchReaderPool, defaultReaderCount } from './reader-pool.js';
import { tileSlide, type TileOptions } from './tile.js';

export type FeatureFormat = 'h5' | 'pt';

/** File extensions taken as slides when `ext` is not given (OpenSlide's formats, TIFF, JPEG, PNG). */
export const SLIDE_EXTENSIONS: readonly string[] = ['.svs', '.tif', '.tiff', '.ndpi', '.vms', '.vmu', '.scn', '.mrxs', '.bif', '.svslide', '.jpg', '.jpeg', '.png'];

export interface ExtractOptions {
  /** Folder of slides (with `ext`, or every file with a slide extension). Exclusive with `slides`. */
  slidesDir?: string;
  /** Slide paths. Exclusive with `slidesDir`. */
  slides?: readonly string[];
  /** Extension filter for `slidesDir` (`.svs` or `svs`). */
  ext?: string;
  /** Coordinates: `mstar tile`'s folder (`DIR/<slide>.h5`) or CLAM's (`DIR/patches/<slide>.h5`). */
  coordsDir: string;
  /** Output folder: `h5_files/` and `pt_files/` are created in it. */
  outDir: string;
  /** Encoder weights (`.pth`/`.pt`/`.safetensors`, timm names), loaded with `loadPatchEncoder`. */
  weights?: string;
  /** With `weights`: a timm-style config.json path or object (default mSTAR's ViT-L/16). */
  config?: string | object;
  /** An encoder already loaded (instead of `weights`); not disposed by this function. */
  encoder?: PatchEncoder;
  /** Patches per forward pass (default 64). */
  batchSize?: number;
  /** Outputs (default both). */
  formats?: readonly FeatureFormat[];
  /**
   * Segment and tile slides whose coordinates are missing (writing them to
   * `<coordsDir>/<slide>.h5`); `true` uses tileSlide's defaults, an object passes options.
   */
  tileOnTheFly?: boolean | TileOptions;
  /** Slide backend (`'auto'` default, `'openslide'`, `'sharp'`). */
  backend?: string;
  /** Reader threads (default half the cores, 1–4). */
  readers?: number;
  /** Batches read ahead of the encoder, at most (default readers + 2). */
  prefetchBatches?: number;
  /** Skip slides whose outputs exist (default true); false recomputes them. */
  skipExisting?: boolean;
  /** After each batch. */
  onProgress?: (progress: ExtractProgress) => void;
  /** After each slide, whatever its outcome. */
  onSlide?: (outcome: ExtractSlideOutcome) => void;
}

export interface ExtractProgress {
  /** Slide being embedded, its position among the slides this run embeds, and how many that is. */
  slide: string;
  slideIndex: number;
  slideCount: number;
  /** Patches of this slide embedded / its total. */
  done: number;
  total: number;
  /** Patches embedded in this run / planned (grows when a slide is tiled on the fly). */
  overallDone: number;
  overallTotal: number;
  /** Throughput of this run so far (patches per second of wall time since the first batch). */
  patchesPerSecond: number;
  /** Seconds left for this slide / for the run, at that rate. */
  slideEtaSeconds: number;
  etaSeconds: number;
}

export interface ExtractSlideOutcome {
  path: string;
  name: string;
  /** `done`: embedded; `recovered`: a missing output rebuilt from the other; `skipped`: outputs existed. */
  status: 'done' | 'recovered' | 'skipped' | 'failed';
  /** Outputs written or found. */
  h5?: string;
  pt?: string;
  /** N. */
  patches?: number;
  seconds?: number;
  /** Where the coordinates came from (tiled on the fly: the file written). */
  coords?: string;
  error?: { code: string; message: string };
}

export interface ExtractSummary {
  results: ExtractSlideOutcome[];
  done: number;
  recovered: number;
  skipped: number;
  failed: number;
  /** Patches embedded in this run. */
  patches: number;
  seconds: number;
  /** Feature dimension D (0 when nothing was embedded). */
  dim: number;
  /** Seconds spent in the encoder, and waiting for the readers after the run's first batch (pipeline stalls). */
  encoderSeconds: number;
  readWaitSeconds: number;
}

function argError(message: string): RangeError & { code: string } {
  return withCode(new RangeError(message), 'ERR_ARGUMENT');
}

function slideError(code: string, message: string): Error & { code: string } {
  return withCode(new Error(message), code);
}

/** `.svs`, `SVS`, `svs` → `.svs`. */
function normalizeExt(ext: string): string {
  return (ext.startsWith('.') ? ext : `.${ext}`).toLowerCase();
}

/** Regular files in `dir` with extension `ext` (or any of SLIDE_EXTENSIONS), sorted by name. */
export function listSlides(dir: string, ext?: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    throw withCode(new Error(`cannot list slides in ${dir}: ${(error as Error).message}`, { cause: error }), 'ERR_NOT_FOUND');
  }
  const wanted = ext === undefined ? SLIDE_EXTENSIONS : [normalizeExt(ext)];
  return names
    .filter((n) => !n.startsWith('.') && wanted.includes(extname(n).toLowerCase()))
    .sort()
    .map((n) => join(dir, n))
    .filter((p) => statSync(p).isFile());
}

/** `<coordsDir>/<name>.h5` or `<coordsDir>/patches/<name>.h5`, whichever exists first. */
export function findCoordsFile(coordsDir: string, name: string): string | undefined {
  return [join(coordsDir, `${name}.h5`), join(coordsDir, 'patches', `${name}.h5`)].find((p) => existsSync(p));
}

/** Output paths of one slide. */
export function featurePaths(outDir: string, name: string): Record<FeatureFormat, string> {
  return { h5: join(outDir, 'h5_files', `${name}.h5`), pt: join(outDir, 'pt_files', `${name}.pt`) };
}

/** Geometry and coordinates of a slide ready to be read. */
interface Prepared {
  coords: BigInt64Array;
  count: number;
  level: number;
  size: number;
  /** Backend that opened it on the main thread; the workers use the same. */
  backend: string;
  batches: number;
  coordsPath: string;
}

/** A slide to embed. */
interface Task {
  path: string;
  name: string;
  outputs: Partial<Record<FeatureFormat, string>>;
  /** Read during planning, or undefined when it is to be tiled on the fly. */
  coords?: ClamCoords;
  coordsPath?: string;
  /** Set when a batch failed: no more batches are dispatched for it. */
  failed: boolean;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined); // rejections are observed when awaited; never unhandled
  return { promise, resolve, reject };
}

function errorInfo(error: unknown): { code: string; message: string } {
  const e = error as Error & { code?: string };
  return { code: typeof e.code === 'string' ? e.code : 'ERR_UNKNOWN', message: e.message ?? String(error) };
}

/**
 * Checks that the coordinates fit the slide: the patch level exists and every patch
 * overlaps the slide (CLAM pads patches past the right and bottom edges, so partial
 * overlap is fine; `Slide.readRegion` refuses a region entirely outside).
 * @throws ERR_RANGE naming the first bad row and how many there are
 */
export function checkCoordsFitSlide(slide: Pick<Slide, 'levelCount' | 'levelDimensions' | 'levelDownsamples' | 'path'>, coords: BigInt64Array, level: number, size: number): void {
  if (level >= slide.levelCount) {
    throw slideError('ERR_RANGE', `patch_level ${level} does not exist: ${slide.path} has ${slide.levelCount} level(s)`);
  }
  const ds = slide.levelDownsamples[level];
  const [lw, lh] = slide.levelDimensions[level];
  let bad = 0;
  let first = -1;
  for (let i = 0; i < coords.length / 2; i++) {
    const lx = Math.trunc(Number(coords[2 * i]) / ds);
    const ly = Math.trunc(Number(coords[2 * i + 1]) / ds);
    if (lx >= lw || ly >= lh || lx + size <= 0 || ly + size <= 0) {
      bad++;
      if (first < 0) first = i;
    }
  }
  if (bad > 0) {
    const [w0, h0] = slide.levelDimensions[0];
    throw slideError(
      'ERR_RANGE',
      `${bad} of ${coords.length / 2} patches lie outside the slide (first: row ${first}, (x, y) = (${coords[2 * first]}, ${coords[2 * first + 1]}), ` +
        `${size} px at level ${level}; the slide is ${w0}×${h0} at level 0) — are these the coordinates of another slide?`,
    );
  }
}

/**
 * Extracts features for every slide; see the file header. Never throws for a slide's
 * problem (it is reported in the summary); throws for bad options and encoder failures.
 *
 * @returns one outcome per slide, in input order, and totals
 */
export async function extractFeatures(options: ExtractOptions): Promise<ExtractSummary> {
  const started = performance.now();
  const { coordsDir, outDir, onProgress, onSlide } = options;
  // ---- options: the caller's mistakes, refused before any work
  if ((options.slidesDir === undefined) === (options.slides === undefined)) throw argError('pass exactly one of slidesDir and slides');
  if (typeof coordsDir !== 'string' || coordsDir.length === 0) throw invalidArgument('coordsDir', 'a folder path', coordsDir);
  if (typeof outDir !== 'string' || outDir.length === 0) throw invalidArgument('outDir', 'a folder path', outDir);
  if (!options.encoder && (typeof options.weights !== 'string' || options.weights.length === 0)) throw argError('pass weights (a weights file) or encoder');
  const batchSize = checkPositiveInteger('batchSize', options.batchSize ?? 64);
  const formats = [...new Set(options.formats ?? (['h5', 'pt'] as const))];
  if (formats.length === 0 || formats.some((f) => f !== 'h5' && f !== 'pt')) throw argError(`formats must be a non-empty subset of h5, pt; got ${formats.join(', ')}`);
  const readers = checkPositiveInteger('readers', options.readers ?? defaultReaderCount());
  const prefetch = checkPositiveInteger('prefetchBatches', options.prefetchBatches ?? readers + 2);
  const skipExisting = options.skipExisting ?? true;
  const tileOptions: TileOptions | undefined = options.tileOnTheFly === true ? {} : options.tileOnTheFly || undefined;
  if (options.ext !== undefined && (typeof options.ext !== 'string' || options.ext.replace(/^\./, '').length === 0)) throw invalidArgument('ext', "an extension such as '.svs'", options.ext);
  const paths = options.slides ? [...options.slides] : listSlides(options.slidesDir as string, options.ext);
  if (!existsSync(coordsDir) && !tileOptions) throw withCode(new Error(`coordinates folder ${coordsDir} does not exist (run mstar tile first, or pass tileOnTheFly)`), 'ERR_NOT_FOUND');

  for (const f of formats) {
    const dir = join(outDir, f === 'h5' ? 'h5_files' : 'pt_files');
    mkdirSync(dir, { recursive: true });
    removeStaleTemporaries(dir);
  }

  // ---- plan: skip, recover, fail early, or embed
  const results: ExtractSlideOutcome[] = new Array(paths.length);
  const finish = (index: number, outcome: ExtractSlideOutcome): void => {
    results[index] = outcome;
    onSlide?.(outcome);
  };
  const tasks: { index: number; task: Task }[] = [];
  const seen = new Map<string, string>();
  for (let index = 0; index < paths.length; index++) {
    const planned = await planSlide(paths[index], seen, { coordsDir, outDir, formats, skipExisting, canTile: tileOptions !== undefined });
    if ('status' in planned) finish(index, planned);
    else tasks.push({ index, task: planned });
  }

  const summary = (): ExtractSummary => {
    const count = (s: ExtractSlideOutcome['status']): number => results.filter((r) => r.status === s).length;
    return {
      results,
      done: count('done'),
      recovered: count('recovered'),
      skipped: count('skipped'),
      failed: count('failed'),
      patches: overallDone,
      seconds: (performance.now() - started) / 1000,
      dim,
      encoderSeconds: encoderMs / 1000,
      readWaitSeconds: waitMs / 1000,
    };
  };
  let overallDone = 0;
  let dim = 0;
  let encoderMs = 0;
  let waitMs = 0;
  if (tasks.length === 0) return summary();

  // ---- embed
  const encoder = options.encoder ?? (await loadPatchEncoder(options.weights as string, { config: options.config }));
  dim = encoder.dim;
  const pool = new PatchReaderPool({ workers: readers });
  let overallTotal = tasks.reduce((sum, { task }) => sum + (task.coords?.count ?? 0), 0);
  const prepared = tasks.map(() => deferred<Prepared>());
  const batchResults = new Map<string, Deferred<Float32Array>>();
  const batchResult = (t: number, b: number): Deferred<Float32Array> => {
    const key = `${t}:${b}`;
    let d = batchResults.get(key);
    if (!d) {
      d = deferred<Float32Array>();
      batchResults.set(key, d);
    }
    return d;
  };
  const dispatched = tasks.map(() => 0);
  let queued = 0; // dispatched, not yet consumed
  let wakeProducer: (() => void) | undefined;
  let stopped = false;
  const consumed = (): void => {
    queued--;
    const wake = wakeProducer;
    wakeProducer = undefined;
    wake?.();
  };

  const prepare = async (task: Task): Promise<Prepared> => {
    let slide: Slide | undefined;
    try {
      slide = await openSlide(task.path, { backend: options.backend });
      let coordsPath = task.coordsPath as string;
      if (!task.coords) {
        // Tile on the fly, and keep the coordinates for the next run.
        mkdirSync(coordsDir, { recursive: true });
        coordsPath = join(coordsDir, `${task.name}.h5`);
        const tiled = await tileSlide(slide, { ...tileOptions, savePath: resolve(coordsDir) });
        await writeClamCoords(coordsPath, tiled.coords, tiled.attrs);
        task.coords = { coords: tiled.coords, count: tiled.count, attrs: tiled.attrs };
        task.coordsPath = coordsPath;
        overallTotal += tiled.count;
      }
      const { level, size } = patchGeometry(task.coords, coordsPath);
      checkCoordsFitSlide(slide, task.coords.coords, level, size);
      return { coords: task.coords.coords, count: task.coords.count, level, size, backend: slide.backend, batches: Math.ceil(task.coords.count / batchSize), coordsPath };
    } finally {
      slide?.close();
    }
  };

  // Producer: prepares slides in order and dispatches their batches, keeping at most `prefetch` queued.
  const produce = async (): Promise<void> => {
    for (let t = 0; t < tasks.length && !stopped; t++) {
      const { task } = tasks[t];
      let p: Prepared;
      try {
        p = await prepare(task);
        prepared[t].resolve(p);
      } catch (error) {
        prepared[t].reject(error);
        continue;
      }
      for (let b = 0; b < p.batches; b++) {
        while (queued >= prefetch && !stopped && !task.failed) await new Promise<void>((wake) => (wakeProducer = wake));
        if (stopped || task.failed) break;
        const start = b * batchSize;
        const end = Math.min(p.count, start + batchSize);
        const coords = Float64Array.from(p.coords.subarray(2 * start, 2 * end), Number);
        const d = batchResult(t, b);
        queued++;
        dispatched[t] = b + 1;
        pool.read({ path: task.path, backend: p.backend, level: p.level, size: p.size, coords }).then(d.resolve, d.reject);
      }
    }
  };

  const per = transformedPatchElements(MSTAR_INPUT_SIZE); // every patch becomes [3, 224, 224]
  let firstBatchAt = 0;
  // A bug in the producer must not leave the consumer waiting for a batch that never comes.
  const producerFailed = deferred<never>();
  const producer = produce().catch((error: unknown) => producerFailed.reject(error));
  const settled = <T>(promise: Promise<T>): Promise<T> => Promise.race([promise, producerFailed.promise]);
  try {
    for (let t = 0; t < tasks.length; t++) {
      const { index, task } = tasks[t];
      const t0 = performance.now();
      let p: Prepared;
      try {
        p = await settled(prepared[t].promise);
      } catch (error) {
        finish(index, { path: task.path, name: task.name, status: 'failed', coords: task.coordsPath, error: errorInfo(error) });
        continue;
      }
      const features = new Float32Array(p.count * dim);
      let done = 0;
      let failure: unknown;
      for (let b = 0; b < p.batches; b++) {
        const d = batchResult(t, b);
        let batch: Float32Array;
        const waitStart = performance.now();
        try {
          batch = await settled(d.promise);
        } catch (error) {
          failure = error;
          break;
        } finally {
          batchResults.delete(`${t}:${b}`);
          consumed();
        }
        const rows = Math.min(batchSize, p.count - b * batchSize);
        const embedStart = performance.now();
        if (firstBatchAt === 0) firstBatchAt = embedStart;
        else waitMs += embedStart - waitStart;
        tidy(() => {
          const out = encoder.embedTensor(Tensor.fromArray(batch.subarray(0, rows * per), [rows, 3, MSTAR_INPUT_SIZE, MSTAR_INPUT_SIZE]));
          features.set(out.data(), b * batchSize * dim);
        });
        encoderMs += performance.now() - embedStart;
        pool.recycle(batch);
        done += rows;
        overallDone += rows;
        if (onProgress) {
          const seconds = (performance.now() - firstBatchAt) / 1000;
          const rate = seconds > 0 ? overallDone / seconds : 0;
          onProgress({
            slide: task.name,
            slideIndex: t,
            slideCount: tasks.length,
            done,
            total: p.count,
            overallDone,
            overallTotal,
            patchesPerSecond: rate,
            slideEtaSeconds: rate > 0 ? (p.count - done) / rate : Infinity,
            etaSeconds: rate > 0 ? (overallTotal - overallDone) / rate : Infinity,
          });
        }
      }
      if (failure !== undefined) {
        // Stop reading this slide; batches already in flight are dropped when they land.
        task.failed = true;
        for (let b = 0; b < dispatched[t]; b++) {
          const d = batchResults.get(`${t}:${b}`);
          if (!d) continue;
          batchResults.delete(`${t}:${b}`);
          d.promise.then((batch) => pool.recycle(batch), () => undefined).finally(consumed);
        }
        wakeProducer?.();
        pool.release(task.path);
        finish(index, { path: task.path, name: task.name, status: 'failed', coords: p.coordsPath, patches: p.count, error: errorInfo(failure) });
        continue;
      }
      pool.release(task.path);
      try {
        await writeOutputs(task.outputs, features, p.count, dim, p.coords);
        finish(index, { path: task.path, name: task.name, status: 'done', ...task.outputs, coords: p.coordsPath, patches: p.count, seconds: (performance.now() - t0) / 1000 });
      } catch (error) {
        finish(index, { path: task.path, name: task.name, status: 'failed', coords: p.coordsPath, patches: p.count, error: errorInfo(error) });
      }
    }
  } finally {
    stopped = true;
    wakeProducer?.();
    await producer;
    await pool.close();
    if (!options.encoder) encoder.dispose();
  }
  return summary();
}

/**
 * Decides what to do with one slide before any embedding: a finished outcome (skipped,
 * rebuilt from an existing output, or failed: duplicate name, missing or unreadable
 * coordinates), or a task whose coordinates are read (or left to tile on the fly).
 */
async function planSlide(
  path: string,
  seen: Map<string, string>,
  { coordsDir, outDir, formats, skipExisting, canTile }: { coordsDir: string; outDir: string; formats: readonly FeatureFormat[]; skipExisting: boolean; canTile: boolean },
): Promise<Task | ExtractSlideOutcome> {
  const name = basename(path, extname(path));
  const all = featurePaths(outDir, name);
  const outputs: Partial<Record<FeatureFormat, string>> = {};
  for (const f of formats) outputs[f] = all[f];
  const earlier = seen.get(name);
  seen.set(name, path);
  if (earlier !== undefined) {
    return { path, name, status: 'failed', error: { code: 'ERR_DUPLICATE', message: `${path} and ${earlier} would both write ${name}.h5/.pt` } };
  }
  const present = formats.filter((f) => existsSync(all[f]));
  if (skipExisting && present.length === formats.length) return { path, name, status: 'skipped', ...outputs };
  const coordsPath = findCoordsFile(coordsDir, name);
  if (skipExisting && present.length > 0) {
    const t0 = performance.now();
    try {
      const patches = await recoverOutputs(all, formats, present, coordsPath);
      return { path, name, status: 'recovered', ...outputs, patches, seconds: (performance.now() - t0) / 1000 };
    } catch {
      // The existing output is unusable: embed again.
    }
  }
  const task: Task = { path, name, outputs, coordsPath, failed: false };
  if (coordsPath === undefined) {
    if (canTile) return task;
    const tried = `neither ${join(coordsDir, `${name}.h5`)} nor ${join(coordsDir, 'patches', `${name}.h5`)} exists`;
    return { path, name, status: 'failed', error: { code: 'ERR_NOT_FOUND', message: `no coordinates for ${name}: ${tried} (run mstar tile, or pass --tile-on-the-fly)` } };
  }
  try {
    task.coords = await readClamCoords(coordsPath);
    patchGeometry(task.coords, coordsPath);
  } catch (error) {
    return { path, name, status: 'failed', coords: coordsPath, error: errorInfo(error) };
  }
  return task;
}

/** patch_level and patch_size of a coordinate file; both are required. */
function patchGeometry(coords: ClamCoords, path: string): { level: number; size: number } {
  const { patch_level: level, patch_size: size } = coords.attrs;
  if (size === undefined || level === undefined) {
    throw withCode(new Error(`${path}: the coords dataset lacks the ${size === undefined ? 'patch_size' : 'patch_level'} attribute CLAM writes`), 'ERR_FORMAT');
  }
  return { level, size };
}

/** Writes the requested outputs, h5 first (each atomically). */
async function writeOutputs(outputs: Partial<Record<FeatureFormat, string>>, features: Float32Array, n: number, dim: number, coords: BigInt64Array): Promise<void> {
  if (outputs.h5) await writeClamFeatures(outputs.h5, features, [n, dim], coords);
  if (outputs.pt) writeTorchTensor(outputs.pt, fromFloat32(features, [n, dim]));
}

/**
 * Rebuilds missing outputs of a slide from one that exists (a run killed between the
 * two renames): pt from h5, or h5 from pt plus the coordinates file.
 * @returns N
 */
async function recoverOutputs(
  all: Record<FeatureFormat, string>,
  formats: readonly FeatureFormat[],
  present: readonly FeatureFormat[],
  coordsPath: string | undefined,
): Promise<number> {
  let features: Float32Array;
  let shape: [number, number];
  let coords: BigInt64Array | undefined;
  if (present.includes('h5')) {
    const h5 = await readClamFeatures(all.h5);
    ({ features, shape, coords } = h5);
  } else {
    const tensor = readTorchFile(all.pt);
    if (!isHostTensor(tensor) || tensor.shape.length !== 2) throw slideError('ERR_FORMAT', `${all.pt} does not hold one [N, D] tensor`);
    features = toFloat32(tensor);
    shape = [tensor.shape[0], tensor.shape[1]];
  }
  for (const f of formats) {
    if (present.includes(f)) continue;
    if (f === 'pt') writeTorchTensor(all.pt, fromFloat32(features, shape));
    else {
      if (!coords) {
        if (coordsPath === undefined) throw slideError('ERR_NOT_FOUND', 'no coordinates to rebuild the h5 from');
        coords = (await readClamCoords(coordsPath)).coords;
      }
      await writeClamFeatures(all.h5, features, shape, coords);
    }
  }
  return shape[0];
}
