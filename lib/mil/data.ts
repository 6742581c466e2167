/**
 * Cohorts in the mSTAR repository's CSV layouts and bags of patch features from disk.
 *
 * Layouts (examples in test/fixtures/splits/; the mSTAR repository's datasets/):
 * - survival (`datasets/TCGA_Survival.py`): `Study,ID,Event,Status,WSI,split` — one row per
 *   patient; Event = follow-up time (months), Status 1 = event observed (censorship c = 1 − Status);
 *   WSI = `;`-separated feature files of the patient's slides; split train | validation | test
 *   (`val` accepted). Extra columns (e.g. `RNA`) are ignored.
 * - classification (`datasets/Subtyping.py`): `case,slide,label,fold` — one row per slide (or
 *   `;`-separated slides); the rows of one case form one bag; labels become class indices in
 *   sorted order of their names (pandas `Categorical` codes); fold train | val | test
 *   (`validation` accepted).
 * Several slides of one patient are concatenated into one bag in the order listed, as the
 * repository's loaders `torch.cat` them.
 *
 * Feature files: `.pt` (a [N, D] tensor, or a dict holding one), CLAM `.h5` (`features`),
 * or `.safetensors` (tensor `features`, or the only tensor). A slide named without an
 * extension (or whose listed file is missing) is looked up as `<name>.pt`, `.h5`,
 * `.safetensors` in the folder and in its `pt_files/` and `h5_files/` subfolders.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { MstarError } from '../errors.js';
import { readClamFeatures } from '../io/clam.js';
import { toFloat32, isHostTensor, type HostTensor } from '../io/host-tensor.js';
import { readSafetensors } from '../io/safetensors.js';
import { readTorchFile, type CheckpointValue } from '../io/torch.js';

export type TaskKind = 'classification' | 'survival';
export type SplitName = 'train' | 'val' | 'test';

export interface Patient {
  id: string;
  split: SplitName;
  /** Feature files (names as the CSV gives them), in bag order. */
  slides: string[];
  /** Classification: class index. */
  label?: number;
  /** Survival: time, status (1 = event), time bin (filled by the caller). */
  time?: number;
  status?: number;
  bin?: number;
}

export interface Cohort {
  task: TaskKind;
  patients: Patient[];
  /** Classification: class names, index = label. */
  classNames: string[];
}

/** RFC 4180 CSV (quotes, doubled quotes, CRLF); returns rows of cells. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  const src = text.replace(/^\uFEFF/, '');
  for (let i = 0; i < src.length; i++) {
    const ch = src[i];
    if (quoted) {
      if (ch === '"') {
        if (src[i + 1] === '"') {
          cell += '"';
          i++;
        } else {
          quoted = false;
        }
      } else {
        cell += ch;
      }
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === ',') {
      row.push(cell);
      cell = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && src[i + 1] === '\n') i++;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
    } else {
      cell += ch;
    }
  }
  if (cell !== '' || row.length > 0) {
    row.push(cell);
    rows.push(row);
  }
  return rows.filter((r) => r.length > 1 || (r.length === 1 && r[0].trim() !== ''));
}

function normalizeSplit(value: string, where: string): SplitName {
  const v = value.trim().toLowerCase();
  if (v === 'train' || v === 'training') return 'train';
  if (v === 'val' || v === 'validation' || v === 'valid') return 'val';
  if (v === 'test' || v === 'testing') return 'test';
  throw new MstarError('ERR_FORMAT', `${where}: split '${value}' is not train, val/validation or test`);
}

/** Reads a cohort CSV in either mSTAR layout (detected from the header). */
export function readCohort(path: string): Cohort {
  const rows = parseCsv(readFileSync(path, 'utf8'));
  if (rows.length < 2) throw new MstarError('ERR_FORMAT', `${path}: needs a header and at least one row`);
  const header = rows[0].map((h) => h.trim());
  const col = (name: string): number => header.indexOf(name);
  const get = (r: string[], name: string): string => (r[col(name)] ?? '').trim();
  if (['ID', 'Event', 'Status', 'WSI', 'split'].every((c) => col(c) >= 0)) {
    const seen = new Set<string>();
    const patients = rows.slice(1).map((r, i): Patient => {
      const where = `${path}:${i + 2}`;
      const id = get(r, 'ID');
      if (seen.has(id)) throw new MstarError('ERR_FORMAT', `${where}: patient ${id} appears twice (list all slides in one WSI cell, ';'-separated)`);
      seen.add(id);
      const time = Number(get(r, 'Event'));
      const status = Number(get(r, 'Status'));
      if (!Number.isFinite(time)) throw new MstarError('ERR_FORMAT', `${where}: Event '${get(r, 'Event')}' is not a number`);
      if (status !== 0 && status !== 1) throw new MstarError('ERR_FORMAT', `${where}: Status '${get(r, 'Status')}' is not 0 or 1`);
      const slides = get(r, 'WSI').split(';').map((s) => s.trim()).filter((s) => s !== '');
      if (slides.length === 0) throw new MstarError('ERR_FORMAT', `${where}: no WSI listed`);
      return { id, split: normalizeSplit(get(r, 'split'), where), slides, time, status };
    });
    return { task: 'survival', patients, classNames: [] };
  }
  if (['case', 'slide', 'label', 'fold'].every((c) => col(c) >= 0)) {
    const byCase = new Map<string, { split: SplitName; label: string; slides: string[] }>();
    rows.slice(1).forEach((r, i) => {
      const where = `${path}:${i + 2}`;
      const id = get(r, 'case');
      const split = normalizeSplit(get(r, 'fold'), where);
      const label = get(r, 'label');
      const slides = get(r, 'slide').split(';').map((s) => s.trim()).filter((s) => s !== '');
      const entry = byCase.get(id);
      if (entry === undefined) {
        byCase.set(id, { split, label, slides });
      } else {
        if (entry.label !== label || entry.split !== split) {
          throw new MstarError('ERR_FORMAT', `${where}: case ${id} has label/fold ${label}/${split} here but ${entry.label}/${entry.split} on an earlier row`);
        }
        entry.slides.push(...slides);
      }
    });
    const classNames = [...new Set([...byCase.values()].map((e) => e.label))].sort();
    const patients = [...byCase].map(([id, e]): Patient => ({ id, split: e.split, slides: e.slides, label: classNames.indexOf(e.label) }));
    return { task: 'classification', patients, classNames };
  }
  throw new MstarError('ERR_FORMAT', `${path}: header ${header.join(',')} is neither the survival layout (Study,ID,Event,Status,WSI,split) nor the classification layout (case,slide,label,fold)`);
}

const FEATURE_EXTENSIONS = ['.pt', '.h5', '.safetensors'];

/** The feature file of a slide in `folder`, or null when none exists. */
export function resolveFeatureFile(folder: string, slide: string): string | null {
  const ext = extname(slide).toLowerCase();
  const stem = FEATURE_EXTENSIONS.includes(ext) ? slide.slice(0, -ext.length) : slide;
  const names = FEATURE_EXTENSIONS.includes(ext) ? [slide, ...FEATURE_EXTENSIONS.map((e) => stem + e)] : FEATURE_EXTENSIONS.map((e) => slide + e);
  for (const dir of [folder, join(folder, 'pt_files'), join(folder, 'h5_files')]) {
    for (const name of names) {
      const p = join(dir, name);
      if (existsSync(p)) return p;
    }
  }
  return null;
}

/** A bag of instance features, [n, dim] row-major. */
export interface FeatureBag {
  data: Float32Array;
  n: number;
  dim: number;
}

function bagFromHost(t: HostTensor, where: string): FeatureBag {
  const shape = t.shape.length === 3 && t.shape[0] === 1 ? t.shape.slice(1) : t.shape;
  if (shape.length !== 2) throw new MstarError('ERR_FORMAT', `${where}: features must be [N, D] (or [1, N, D]), got [${t.shape.join(', ')}]`);
  return { data: toFloat32(t), n: shape[0], dim: shape[1] };
}

function onlyTensor(value: CheckpointValue, where: string): HostTensor {
  if (isHostTensor(value)) return value;
  if (value instanceof Map) {
    const f = value.get('features');
    if (f !== undefined && isHostTensor(f)) return f;
    const tensors = [...value.values()].filter(isHostTensor);
    if (tensors.length === 1) return tensors[0];
  }
  throw new MstarError('ERR_FORMAT', `${where}: expected a tensor (or a dict with 'features' or exactly one tensor)`);
}

/** Reads one feature file (.pt, .h5 or .safetensors). */
export async function readFeatureBag(path: string): Promise<FeatureBag> {
  const ext = extname(path).toLowerCase();
  if (ext === '.h5') {
    const f = await readClamFeatures(path);
    return { data: f.features, n: f.shape[0], dim: f.shape[1] };
  }
  if (ext === '.safetensors') {
    const { tensors } = readSafetensors(path);
    const t = tensors.get('features') ?? (tensors.size === 1 ? [...tensors.values()][0] : undefined);
    if (t === undefined) throw new MstarError('ERR_FORMAT', `${path}: no 'features' tensor and not exactly one tensor (has ${[...tensors.keys()].join(', ')})`);
    return bagFromHost(t, path);
  }
  return bagFromHost(onlyTensor(readTorchFile(path), path), path);
}

/** Concatenates bags along the instance axis (all must share D). */
export function concatBags(bags: FeatureBag[], where: string): FeatureBag {
  if (bags.length === 1) return bags[0];
  const dim = bags[0].dim;
  let n = 0;
  for (const b of bags) {
    if (b.dim !== dim) throw new MstarError('ERR_FORMAT', `${where}: slides have feature sizes ${dim} and ${b.dim}`);
    n += b.n;
  }
  const data = new Float32Array(n * dim);
  let offset = 0;
  for (const b of bags) {
    data.set(b.data, offset);
    offset += b.data.length;
  }
  return { data, n, dim };
}

/**
 * Loads patients' bags from a features folder, with an in-memory cache up to
 * `cacheBytes` (bags beyond it are re-read each time they are needed).
 */
export class BagStore {
  private readonly cache = new Map<string, FeatureBag>();
  private cachedBytes = 0;
  readonly missing: { patient: string; slide: string }[] = [];

  constructor(readonly folder: string, readonly cacheBytes = 2 * 1024 ** 3) {}

  /** The files of a patient's slides that exist (missing ones are recorded in `missing`). */
  files(patient: Patient): string[] {
    const out: string[] = [];
    for (const slide of patient.slides) {
      const f = resolveFeatureFile(this.folder, slide);
      if (f === null) this.missing.push({ patient: patient.id, slide });
      else out.push(f);
    }
    return out;
  }

  async load(patient: Patient, files: string[]): Promise<FeatureBag> {
    const hit = this.cache.get(patient.id);
    if (hit) return hit;
    const bags: FeatureBag[] = [];
    for (const f of files) bags.push(await readFeatureBag(f));
    const bag = concatBags(bags, `patient ${patient.id}`);
    if (bag.n === 0) throw new MstarError('ERR_FORMAT', `patient ${patient.id}: its feature files hold no instance (${files.map((f) => basename(f)).join(', ')})`);
    if (this.cachedBytes + bag.data.byteLength <= this.cacheBytes) {
      this.cache.set(patient.id, bag);
      this.cachedBytes += bag.data.byteLength;
    }
    return bag;
  }
}
