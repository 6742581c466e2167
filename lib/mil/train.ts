/**
 * Training and evaluation of MIL heads on frozen patch features, following the mSTAR
 * repository's downstream engines (downstream_task/diagnosis_preidction/models/<model>/engine.py,
 * downstream_task/survival_prediction/models/<model>/engine.py):
 *
 * - one bag (patient) per step, Adam (default, as the repository) or AdamW, lr 2e-4,
 *   weight decay 1e-5, CosineAnnealingLR(T_max = epochs, eta_min = 0) stepped per epoch;
 * - classification: cross-entropy; model selection on the validation macro AUC;
 *   survival: 4 time bins from the uncensored-time quartiles of the whole cohort,
 *   NLLSurvLoss(alpha = 0), risk = −ΣS, model selection on the validation C-index;
 * - a new best strictly improves the validation metric; training stops after `patience`
 *   epochs without improvement (the diagnosis engine's rule, 10);
 * - unlike the repository's survival script (which selects on validation + test), the
 *   test split is never looked at during training: it is scored once, with the best
 *   validation checkpoint, at the end.
 *
 * Determinism and resume: parameter init comes from `manualSeed(seed)`; the epoch's bag
 * order and every step's dropout masks come from (seed, epoch, step) alone; after every
 * epoch the model, the optimizer state and the run's history are written atomically to
 * `<out>/last.safetensors`. A run started again on the same `out` continues after the last
 * completed epoch and ends with the same weights and metrics as an uninterrupted run.
 *
 * Outputs in `out`: metrics.json, predictions.csv (validation and test patients),
 * best.safetensors (the best model; PyTorch parameter names, loadable by the repository),
 * roc.png (classification) or km.png (survival), last.safetensors (resume state).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { MstarError, invalidArgument } from '../errors.js';
import { fromFloat32, toFloat32 } from '../io/host-tensor.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { writeFileAtomically } from '../io/atomic.js';
import { crossEntropy } from '../ops/nn.js';
import { Adam, AdamW, type Optimizer } from '../optim/optimizer.js';
import { warmupCosine } from '../optim/schedule.js';
import { manualSeed, uniformGenerator } from '../random.js';
import { noGrad, Tensor, tidy } from '../tensor.js';
import { ABMIL } from './abmil.js';
import { BagStore, readCohort, type Cohort, type Patient, type TaskKind } from './data.js';
import { nllSurvLoss, survivalFromLogits } from './losses.js';
import { binaryAuc, classificationMetrics, concordanceIndex, rocAucOvr, survivalBins, survivalMetrics, type ClassificationMetrics, type SurvivalMetrics } from './metrics.js';
import { writeKaplanMeierPng, writeRocPng } from './plots.js';
import { TransMIL } from './transmil.js';

export type MilModelKind = 'abmil' | 'abmil-gated' | 'transmil';
export type MilModel = ABMIL | TransMIL;

export interface BuildModelOptions {
  activation?: 'relu' | 'gelu';
  dropout?: boolean;
  chunkRows?: number;
}

/** A head by name: 'abmil' (DAttention), 'abmil-gated' (CLAM gated attention) or 'transmil'. */
export function buildMilModel(kind: MilModelKind, inFeatures: number, nClasses: number, options: BuildModelOptions = {}): MilModel {
  switch (kind) {
    case 'abmil':
      return new ABMIL({ inFeatures, nClasses, activation: options.activation, dropout: options.dropout });
    case 'abmil-gated':
      return new ABMIL({ inFeatures, nClasses, activation: options.activation, dropout: options.dropout, gated: true });
    case 'transmil':
      return new TransMIL({ inFeatures, nClasses, activation: options.activation, dropout: options.dropout, chunkRows: options.chunkRows });
    default:
      throw invalidArgument('model', "'abmil', 'abmil-gated' or 'transmil'", kind);
  }
}

export interface TrainMilOptions {
  /** Cohort CSV in an mSTAR layout. */
  csv: string;
  /** Folder of feature files (.pt, .h5, .safetensors). */
  features: string;
  /** Output folder (created). */
  out: string;
  model?: MilModelKind;
  /** Checked against the CSV layout when given. */
  task?: TaskKind;
  epochs?: number;
  lr?: number;
  weightDecay?: number;
  optimizer?: 'adam' | 'adamw';
  scheduler?: 'cosine' | 'none';
  /** Epochs without validation improvement before stopping (0: never stop early). */
  patience?: number;
  seed?: number;
  /** Survival time bins (the repository uses 4). */
  bins?: number;
  /** Bootstrap resamples for the confidence intervals. */
  bootstrap?: number;
  activation?: 'relu' | 'gelu';
  dropout?: boolean;
  /** Continue from <out>/last.safetensors when it exists (default true). */
  resume?: boolean;
  /** Bytes of features kept in memory between epochs. */
  cacheBytes?: number;
  chunkRows?: number;
  /** Called after each epoch (and may throw to stop, e.g. in tests). */
  onEpoch?: (record: EpochRecord) => void;
  /** Free-form log lines (default: none). */
  log?: (line: string) => void;
}

export interface EpochRecord {
  epoch: number;
  epochs: number;
  trainLoss: number;
  /** Training-set metric from the epoch's own predictions (AUC or C-index). */
  trainMetric: number;
  valLoss: number;
  valMetric: number;
  bestEpoch: number;
  bestMetric: number;
  lr: number;
  seconds: number;
  improved: boolean;
}

export interface TrainMilResult {
  outDir: string;
  task: TaskKind;
  bestEpoch: number;
  epochsRun: number;
  metrics: MilMetricsFile;
}

export interface MilMetricsFile {
  task: TaskKind;
  model: MilModelKind;
  classNames?: string[];
  binEdges?: number[];
  selection: { split: 'val'; metric: string; bestEpoch: number; value: number };
  epochsRun: number;
  stoppedEarly: boolean;
  val: ClassificationMetrics | SurvivalMetrics | null;
  test: ClassificationMetrics | SurvivalMetrics | null;
  history: EpochRecord[];
  counts: Record<string, number>;
  missing: { patient: string; slide: string }[];
  config: Record<string, unknown>;
}

/** 32-bit mix of integers (for seeds derived from (seed, epoch, step)). */
export function mixSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
    h = Math.imul(h ^ (h >>> 12), 0x297a2d39) >>> 0;
    h = (h ^ (h >>> 15)) >>> 0;
  }
  return h >>> 0;
}

function shuffled<T>(items: T[], seed: number): T[] {
  const out = [...items];
  const rng = uniformGenerator(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

interface Prepared {
  patient: Patient;
  files: string[];
}

interface EvalResult {
  loss: number;
  /** Classification: probs [N, C]; survival: S [N, K]. */
  outputs: Float64Array;
  risk: Float64Array;
  metric: number;
}

/** Everything a run needs to score one bag. */
class Runner {
  constructor(readonly model: MilModel, readonly task: TaskKind, readonly nOut: number, readonly store: BagStore) {}

  /** Forward (+ backward when `train`) of one patient; returns the loss and the head's outputs. */
  async step(p: Prepared, train: boolean, seed: number): Promise<{ loss: number; out: Float64Array; risk: number }> {
    const bag = await this.store.load(p.patient, p.files);
    return tidy(() => {
      const x = Tensor.fromArray(bag.data, [bag.n, bag.dim]);
      const run = (): { loss: Tensor; logits: Float32Array } => {
        const { logits } = this.model.forward(x, { seed });
        const loss = this.task === 'classification'
          ? crossEntropy(logits, [p.patient.label!])
          : nllSurvLoss(logits, [p.patient.bin!], [1 - p.patient.status!]);
        return { loss, logits: logits.toFloat32Array() };
      };
      const { loss, logits } = train ? run() : noGrad(run);
      if (train) loss.backward();
      const value = loss.item();
      if (this.task === 'classification') {
        let mx = -Infinity;
        for (const v of logits) mx = Math.max(mx, v);
        let s = 0;
        const e = Array.from(logits, (v) => Math.exp(v - mx));
        for (const v of e) s += v;
        return { loss: value, out: Float64Array.from(e, (v) => v / s), risk: 0 };
      }
      const surv = survivalFromLogits(logits, 1, this.nOut);
      return { loss: value, out: Float64Array.from(surv.survival), risk: surv.risk[0] };
    });
  }

  metric(patients: Patient[], outputs: Float64Array, risk: Float64Array): number {
    if (patients.length === 0) return NaN;
    if (this.task === 'classification') return rocAucOvr(patients.map((p) => p.label!), outputs, this.nOut);
    return concordanceIndex(patients.map((p) => p.status!), patients.map((p) => p.time!), risk).cIndex;
  }

  async evaluate(items: Prepared[]): Promise<EvalResult> {
    this.model.eval();
    const outputs = new Float64Array(items.length * this.nOut);
    const risk = new Float64Array(items.length);
    let loss = 0;
    for (let i = 0; i < items.length; i++) {
      const r = await this.step(items[i], false, 0);
      outputs.set(r.out, i * this.nOut);
      risk[i] = r.risk;
      loss += r.loss;
    }
    return { loss: items.length ? loss / items.length : NaN, outputs, risk, metric: this.metric(items.map((it) => it.patient), outputs, risk) };
  }
}

interface ResumeState {
  epochsDone: number;
  bestEpoch: number;
  bestMetric: number;
  sinceBest: number;
  history: EpochRecord[];
  fingerprint: string;
}

function saveLast(path: string, model: MilModel, optimizer: Optimizer, state: ResumeState): void {
  const tensors: Record<string, ReturnType<typeof fromFloat32>> = {};
  for (const [name, p] of model.namedParameters()) tensors[`model/${name}`] = fromFloat32(p.toFloat32Array(), p.shape);
  const opt = optimizer.stateDict();
  opt.slots.forEach((slots, i) => {
    for (const [slot, values] of Object.entries(slots)) tensors[`optim/${i}/${slot}`] = fromFloat32(values, [values.length]);
  });
  writeSafetensors(path, tensors, { state: JSON.stringify({ ...state, optimizerStep: opt.step, optimizerLr: opt.lr }) });
}

function loadLast(path: string, model: MilModel, optimizer: Optimizer, fingerprint: string): ResumeState {
  const { tensors, metadata } = readSafetensors(path);
  const state = JSON.parse(metadata.state ?? '{}') as ResumeState & { optimizerStep: number; optimizerLr: number };
  if (state.fingerprint !== fingerprint) {
    throw new MstarError('ERR_STATE_DICT', `${path} was written by a run with different settings; use another --out or delete it`);
  }
  const weights = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const [name, t] of tensors) if (name.startsWith('model/')) weights.set(name.slice(6), { shape: t.shape, values: toFloat32(t) });
  model.loadStateDict(weights);
  const slots: Record<string, Float32Array>[] = model.parameters().map(() => ({}));
  for (const [name, t] of tensors) {
    const m = /^optim\/(\d+)\/(.+)$/.exec(name);
    if (m) slots[Number(m[1])][m[2]] = toFloat32(t);
  }
  optimizer.loadStateDict({ step: state.optimizerStep, lr: state.optimizerLr, slots });
  return state;
}

function saveBest(path: string, model: MilModel, meta: Record<string, unknown>): void {
  const tensors: Record<string, ReturnType<typeof fromFloat32>> = {};
  for (const [name, p] of model.namedParameters()) tensors[name] = fromFloat32(p.toFloat32Array(), p.shape);
  writeSafetensors(path, tensors, { mstar_mil: JSON.stringify(meta) });
}

/** Loads best.safetensors weights (our own format) into a model. */
function loadBest(path: string, model: MilModel): void {
  const { tensors } = readSafetensors(path);
  model.loadStateDict(new Map([...tensors].map(([n, t]) => [n, { shape: t.shape, values: toFloat32(t) }])));
}

function csvCell(v: string | number): string {
  const s = typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(8)) : v;
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Trains a MIL head on a cohort (see the file header). */
export async function trainMil(options: TrainMilOptions): Promise<TrainMilResult> {
  const o = {
    model: 'abmil' as MilModelKind, epochs: 20, lr: 2e-4, weightDecay: 1e-5, optimizer: 'adam' as const, scheduler: 'cosine' as const,
    patience: 10, seed: 1, bins: 4, bootstrap: 1000, activation: 'relu' as const, dropout: true, resume: true,
    cacheBytes: 2 * 1024 ** 3, chunkRows: 2048, ...options,
  };
  const log = o.log ?? (() => undefined);
  const cohort: Cohort = readCohort(o.csv);
  if (o.task !== undefined && o.task !== cohort.task) throw new MstarError('ERR_ARGUMENT', `--task ${o.task} but ${o.csv} is in the ${cohort.task} layout`);
  const task = cohort.task;
  let binEdges: number[] | undefined;
  if (task === 'survival') {
    // Bins over the whole cohort, as the repository's disc_label does.
    const b = survivalBins(cohort.patients.map((p) => p.time!), cohort.patients.map((p) => p.status!), o.bins);
    cohort.patients.forEach((p, i) => (p.bin = b.bins[i]));
    binEdges = Array.from(b.edges);
  }
  const nOut = task === 'classification' ? cohort.classNames.length : o.bins;
  if (task === 'classification' && nOut < 2) throw new MstarError('ERR_ARGUMENT', `${o.csv}: needs at least two classes, found ${cohort.classNames.join(', ')}`);
  const store = new BagStore(o.features, o.cacheBytes);
  const prepared = (split: string): Prepared[] =>
    cohort.patients.filter((p) => p.split === split).map((patient) => ({ patient, files: store.files(patient) })).filter((p) => p.files.length > 0);
  const train = prepared('train');
  const val = prepared('val');
  const test = prepared('test');
  if (store.missing.length) log(`warning: ${store.missing.length} slide(s) have no feature file in ${o.features} (first: ${store.missing[0].slide}); patients without any are skipped`);
  if (train.length === 0) throw new MstarError('ERR_ARGUMENT', `no training patient has features in ${o.features}`);
  const first = await store.load(train[0].patient, train[0].files);
  mkdirSync(o.out, { recursive: true });

  manualSeed(o.seed);
  const model = buildMilModel(o.model, first.dim, nOut, { activation: o.activation, dropout: o.dropout, chunkRows: o.chunkRows });
  const optimizer = o.optimizer === 'adamw'
    ? new AdamW(model.parameters(), { lr: o.lr, weightDecay: o.weightDecay })
    : new Adam(model.parameters(), { lr: o.lr, weightDecay: o.weightDecay });
  const schedule = o.scheduler === 'cosine' ? warmupCosine({ baseLr: o.lr, warmupSteps: 0, totalSteps: o.epochs }) : () => o.lr;
  const config = {
    csv: o.csv, features: o.features, model: o.model, epochs: o.epochs, lr: o.lr, weightDecay: o.weightDecay, optimizer: o.optimizer,
    scheduler: o.scheduler, patience: o.patience, seed: o.seed, bins: o.bins, bootstrap: o.bootstrap, activation: o.activation, dropout: o.dropout,
  };
  const fingerprint = JSON.stringify({ ...config, inFeatures: first.dim, nOut, train: train.length, val: val.length });
  const lastPath = join(o.out, 'last.safetensors');
  const bestPath = join(o.out, 'best.safetensors');
  const runner = new Runner(model, task, nOut, store);
  const metricName = task === 'classification' ? 'macro AUC' : 'C-index';
  let state: ResumeState = { epochsDone: 0, bestEpoch: -1, bestMetric: -Infinity, sinceBest: 0, history: [], fingerprint };
  if (o.resume && existsSync(lastPath)) {
    state = loadLast(lastPath, model, optimizer, fingerprint);
    log(`resuming after epoch ${state.epochsDone} (best ${metricName} ${state.bestMetric.toFixed(4)} at epoch ${state.bestEpoch})`);
  }
  const bestMeta = { task, model: o.model, inFeatures: first.dim, nClasses: nOut, classNames: cohort.classNames, binEdges };

  try {
    let stoppedEarly = o.patience > 0 && state.sinceBest >= o.patience;
    for (let epoch = state.epochsDone; epoch < o.epochs && !stoppedEarly; epoch++) {
      const t0 = performance.now();
      optimizer.lr = schedule(epoch);
      model.train();
      const order = shuffled(train, mixSeed(o.seed, epoch, 0x5eed));
      const outputs = new Float64Array(order.length * nOut);
      const risk = new Float64Array(order.length);
      let lossSum = 0;
      for (let i = 0; i < order.length; i++) {
        const r = await runner.step(order[i], true, mixSeed(o.seed, epoch, i));
        optimizer.step();
        optimizer.zeroGrad();
        lossSum += r.loss;
        outputs.set(r.out, i * nOut);
        risk[i] = r.risk;
      }
      const trainMetric = runner.metric(order.map((p) => p.patient), outputs, risk);
      const v = val.length > 0 ? await runner.evaluate(val) : null;
      const valMetric = v ? v.metric : NaN;
      // Without a validation split every epoch is "best" (the last one is kept).
      const improved = v === null || (Number.isFinite(valMetric) && valMetric > state.bestMetric);
      if (improved) {
        state.bestEpoch = epoch;
        state.bestMetric = v === null ? NaN : valMetric;
        state.sinceBest = 0;
        saveBest(bestPath, model, { ...bestMeta, epoch, valMetric });
      } else {
        state.sinceBest++;
      }
      const record: EpochRecord = {
        epoch: epoch + 1, epochs: o.epochs, trainLoss: lossSum / order.length, trainMetric, valLoss: v ? v.loss : NaN, valMetric,
        bestEpoch: state.bestEpoch + 1, bestMetric: state.bestMetric, lr: optimizer.lr, seconds: (performance.now() - t0) / 1000, improved,
      };
      state.history.push(record);
      state.epochsDone = epoch + 1;
      saveLast(lastPath, model, optimizer, state);
      stoppedEarly = o.patience > 0 && state.sinceBest >= o.patience;
      log(`epoch ${record.epoch}/${o.epochs}  train loss ${record.trainLoss.toFixed(4)}  train ${metricName} ${trainMetric.toFixed(4)}  ` +
        `val loss ${record.valLoss.toFixed(4)}  val ${metricName} ${valMetric.toFixed(4)}${improved ? ' *' : ''}  lr ${record.lr.toExponential(2)}  ${record.seconds.toFixed(1)}s`);
      o.onEpoch?.(record);
    }

    // ---- final evaluation with the best validation checkpoint ----
    loadBest(bestPath, model);
    const evalSplit = async (items: Prepared[], split: string): Promise<{ res: EvalResult; items: Prepared[] } | null> =>
      items.length ? { res: await runner.evaluate(items), items } : (log(`note: no ${split} patients`), null);
    const vRes = await evalSplit(val, 'validation');
    const tRes = await evalSplit(test, 'test');
    const bs = { resamples: o.bootstrap, seed: o.seed };
    const summarize = (r: { res: EvalResult; items: Prepared[] } | null): ClassificationMetrics | SurvivalMetrics | null => {
      if (r === null) return null;
      const ps = r.items.map((it) => it.patient);
      if (task === 'classification') return classificationMetrics(Int32Array.from(ps, (p) => p.label!), r.res.outputs, nOut, bs);
      return survivalMetrics(Float64Array.from(ps, (p) => p.time!), Int32Array.from(ps, (p) => p.status!), r.res.risk, bs);
    };
    const valMetrics = summarize(vRes);
    const testMetrics = summarize(tRes);

    // predictions.csv
    const header = task === 'classification'
      ? ['patient', 'split', 'label', 'label_name', 'pred', 'pred_name', ...cohort.classNames.map((c) => `prob_${c}`)]
      : ['patient', 'split', 'time', 'status', 'bin', 'risk', 'risk_group', ...Array.from({ length: nOut }, (_, k) => `S_${k}`)];
    const lines = [header.map(csvCell).join(',')];
    for (const [r, split, m] of [[vRes, 'val', valMetrics], [tRes, 'test', testMetrics]] as const) {
      if (r === null) continue;
      r.items.forEach((it, i) => {
        const p = it.patient;
        const out = Array.from(r.res.outputs.subarray(i * nOut, (i + 1) * nOut));
        if (task === 'classification') {
          const pred = out.indexOf(Math.max(...out));
          lines.push([p.id, split, p.label!, cohort.classNames[p.label!], pred, cohort.classNames[pred], ...out].map(csvCell).join(','));
        } else {
          const median = (m as SurvivalMetrics).riskGroups.medianRisk;
          lines.push([p.id, split, p.time!, p.status!, p.bin!, r.res.risk[i], r.res.risk[i] > median ? 'high' : 'low', ...out].map(csvCell).join(','));
        }
      });
    }
    await writeFileAtomically(join(o.out, 'predictions.csv'), lines.join('\n') + '\n');

    // plots (test split; validation when there is no test split)
    const plotSet = tRes ?? vRes;
    if (plotSet) {
      const ps = plotSet.items.map((it) => it.patient);
      const splitName = tRes ? 'test' : 'validation';
      if (task === 'classification') {
        const y = ps.map((p) => p.label!);
        const aucs = cohort.classNames.map((_, c) => binaryAuc(y.map((v) => v === c), ps.map((_, i) => plotSet.res.outputs[i * nOut + c])));
        await writeRocPng(join(o.out, 'roc.png'), y, plotSet.res.outputs, cohort.classNames, `ROC (${splitName}, best epoch ${state.bestEpoch + 1})`, aucs);
      } else {
        const m = (tRes ? testMetrics : valMetrics) as SurvivalMetrics;
        const group = Array.from(plotSet.res.risk, (r) => (r > m.riskGroups.medianRisk ? 1 : 0));
        await writeKaplanMeierPng(join(o.out, 'km.png'), ps.map((p) => p.time!), ps.map((p) => p.status!), group, m.riskGroups.logRank.pValue,
          `Kaplan–Meier by predicted risk (${splitName})`);
      }
    }

    const metrics: MilMetricsFile = {
      task, model: o.model, classNames: task === 'classification' ? cohort.classNames : undefined, binEdges,
      selection: { split: 'val', metric: metricName, bestEpoch: state.bestEpoch + 1, value: state.bestMetric },
      epochsRun: state.epochsDone, stoppedEarly: o.patience > 0 && state.sinceBest >= o.patience,
      val: valMetrics, test: testMetrics, history: state.history,
      counts: { train: train.length, val: val.length, test: test.length },
      missing: store.missing, config,
    };
    await writeFileAtomically(join(o.out, 'metrics.json'), JSON.stringify(metrics, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
    return { outDir: o.out, task, bestEpoch: state.bestEpoch + 1, epochsRun: state.epochsDone, metrics };
  } finally {
    optimizer.dispose();
    model.dispose();
  }
}
