/**
 * Slide-level evaluation metrics, written to agree with the Python tools the field
 * reports with (scikit-learn, scikit-survival, lifelines), and the survival label
 * discretization of the mSTAR repository.
 *
 * Classification (y: class indices [N], probs: [N, C] row-major):
 * - `rocAucOvr`: sklearn `roc_auc_score(y, probs, multi_class='ovr', average='macro')` (binary:
 *   `roc_auc_score(y, probs[:, 1])`); per class the Mann–Whitney statistic with mid-ranks for
 *   tied scores (= the trapezoidal ROC area). A class with no positive or no negative sample
 *   has no AUC: it is left out of the mean (sklearn raises instead); NaN when none is defined.
 * - `balancedAccuracy`: sklearn `balanced_accuracy_score` (mean recall over the classes present in y).
 * - `f1Score`: sklearn `f1_score(average='macro' | 'weighted')` with its default labels (the classes
 *   present in y or in the predictions) and zero_division 0.
 * Survival:
 * - `survivalBins`: mSTAR's `disc_label` (datasets/TCGA_Survival.py): pandas `qcut` edges (linear
 *   quantiles) of the uncensored times, outer edges replaced by min − 1e-6 and max + 1e-6 over all
 *   times, then `cut(right=False)`: bin k holds edges[k] ≤ t < edges[k+1].
 * - `concordanceIndex`: scikit-survival `concordance_index_censored(event, time, risk, tied_tol=1e-8)`
 *   (Harrell 1996): a pair is comparable when the earlier time is an event (an event is also
 *   comparable to a censored sample at the same time; two events at the same time are not); it is
 *   concordant when the event has the higher risk; risks within tied_tol count ½.
 * - `kaplanMeier`, `logRankTest`: product-limit curves and the two-group log-rank χ² test
 *   (1 degree of freedom), as lifelines `KaplanMeierFitter` / `logrank_test`.
 * Bootstrap: `bootstrap` draws resamples of the rows with replacement from a seeded generator
 * and reports mean, std and the 2.5/97.5 percentiles (numpy's linear interpolation).
 */
import { invalidArgument, rangeError } from '../errors.js';
import { uniformGenerator } from '../random.js';

// ---------------------------------------------------------------------------
// classification
// ---------------------------------------------------------------------------

function checkLabels(y: ArrayLike<number>, classes?: number): void {
  for (let i = 0; i < y.length; i++) {
    if (!Number.isInteger(y[i]) || y[i] < 0 || (classes !== undefined && y[i] >= classes)) {
      throw rangeError('ERR_RANGE', `labels[${i}] = ${y[i]} is not a class index${classes !== undefined ? ` in [0, ${classes})` : ''}`);
    }
  }
}

/**
 * Area under the ROC curve of scores for the positives (Mann–Whitney U / (P·N) with
 * mid-ranks). NaN when there is no positive or no negative.
 */
export function binaryAuc(positive: ArrayLike<boolean | number>, scores: ArrayLike<number>): number {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
  let rankSumPos = 0;
  let nPos = 0;
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && scores[order[j + 1]] === scores[order[i]]) j++;
    const midRank = (i + j) / 2 + 1; // 1-based average rank of the tie group
    for (let k = i; k <= j; k++) {
      if (positive[order[k]]) {
        rankSumPos += midRank;
        nPos++;
      }
    }
    i = j + 1;
  }
  const nNeg = n - nPos;
  if (nPos === 0 || nNeg === 0) return NaN;
  return (rankSumPos - (nPos * (nPos + 1)) / 2) / (nPos * nNeg);
}

/** Macro one-vs-rest ROC AUC of probs [N, C] (binary: AUC of column 1). */
export function rocAucOvr(y: ArrayLike<number>, probs: ArrayLike<number>, classes: number): number {
  checkLabels(y, classes);
  const n = y.length;
  if (probs.length !== n * classes) throw rangeError('ERR_SHAPE', `probs has ${probs.length} values, needs N·C = ${n * classes}`);
  const column = (c: number): Float64Array => Float64Array.from({ length: n }, (_, i) => probs[i * classes + c]);
  if (classes === 2) return binaryAuc(Array.from(y, (v) => v === 1), column(1));
  let total = 0;
  let count = 0;
  for (let c = 0; c < classes; c++) {
    const auc = binaryAuc(Array.from(y, (v) => v === c), column(c));
    if (!Number.isNaN(auc)) {
      total += auc;
      count++;
    }
  }
  return count === 0 ? NaN : total / count;
}

/** Row-wise argmax of [N, C] (first maximum on ties, like numpy). */
export function argmaxRows(probs: ArrayLike<number>, classes: number): Int32Array {
  const n = probs.length / classes;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (probs[i * classes + c] > probs[i * classes + best]) best = c;
    out[i] = best;
  }
  return out;
}

/** sklearn balanced_accuracy_score: mean over classes present in y of recall. */
export function balancedAccuracy(y: ArrayLike<number>, predicted: ArrayLike<number>): number {
  checkLabels(y);
  if (predicted.length !== y.length) throw rangeError('ERR_SHAPE', `${predicted.length} predictions for ${y.length} labels`);
  const support = new Map<number, number>();
  const correct = new Map<number, number>();
  for (let i = 0; i < y.length; i++) {
    support.set(y[i], (support.get(y[i]) ?? 0) + 1);
    if (predicted[i] === y[i]) correct.set(y[i], (correct.get(y[i]) ?? 0) + 1);
  }
  if (support.size === 0) return NaN;
  let total = 0;
  for (const [c, s] of support) total += (correct.get(c) ?? 0) / s;
  return total / support.size;
}

/** sklearn f1_score with average 'macro' or 'weighted' (labels: classes in y ∪ predicted; zero_division 0). */
export function f1Score(y: ArrayLike<number>, predicted: ArrayLike<number>, average: 'macro' | 'weighted'): number {
  checkLabels(y);
  checkLabels(predicted);
  if (predicted.length !== y.length) throw rangeError('ERR_SHAPE', `${predicted.length} predictions for ${y.length} labels`);
  const labels = [...new Set([...Array.from(y), ...Array.from(predicted)])].sort((a, b) => a - b);
  if (labels.length === 0) return NaN;
  let total = 0;
  let weightTotal = 0;
  for (const c of labels) {
    let tp = 0;
    let fp = 0;
    let fn = 0;
    for (let i = 0; i < y.length; i++) {
      if (predicted[i] === c && y[i] === c) tp++;
      else if (predicted[i] === c) fp++;
      else if (y[i] === c) fn++;
    }
    const denom = 2 * tp + fp + fn;
    const f1 = denom === 0 ? 0 : (2 * tp) / denom;
    const weight = average === 'macro' ? 1 : tp + fn;
    total += weight * f1;
    weightTotal += weight;
  }
  return weightTotal === 0 ? 0 : total / weightTotal;
}

// ---------------------------------------------------------------------------
// bootstrap
// ---------------------------------------------------------------------------

export interface BootstrapSummary {
  /** The metric on the full data. */
  value: number;
  /** Mean, std (population, like numpy's default) and 95% percentile interval over the resamples. */
  mean: number;
  std: number;
  ciLower: number;
  ciUpper: number;
  /** Resamples drawn and resamples where the metric was defined (others are left out). */
  resamples: number;
  defined: number;
}

/** numpy.percentile(values, q) with the default linear interpolation; values sorted ascending. */
export function percentileSorted(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = ((sorted.length - 1) * q) / 100;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/**
 * Bootstrap of a metric over N rows: `resamples` draws of N row indices with replacement
 * (seeded Mulberry32), metric(indices) on each. Undefined (NaN) resamples — e.g. a class
 * missing from a resample's labels — are excluded from the statistics and counted.
 */
export function bootstrap(n: number, metric: (indices: Int32Array | null) => number, { resamples = 1000, seed = 0 } = {}): BootstrapSummary {
  if (!Number.isSafeInteger(n) || n < 1) throw invalidArgument('n', 'a positive integer', n);
  const value = metric(null);
  const rng = uniformGenerator(seed >>> 0);
  const scores: number[] = [];
  const idx = new Int32Array(n);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < n; i++) idx[i] = Math.min(n - 1, Math.floor(rng() * n));
    const s = metric(idx);
    if (Number.isFinite(s)) scores.push(s);
  }
  scores.sort((a, b) => a - b);
  const mean = scores.length ? scores.reduce((a, b) => a + b, 0) / scores.length : NaN;
  const std = scores.length ? Math.sqrt(scores.reduce((a, b) => a + (b - mean) ** 2, 0) / scores.length) : NaN;
  return { value, mean, std, ciLower: percentileSorted(scores, 2.5), ciUpper: percentileSorted(scores, 97.5), resamples, defined: scores.length };
}

/** Picks rows of a [N, width] array (indices null = all). */
export function takeRows<T extends Float64Array | Float32Array | Int32Array>(values: T, width: number, indices: Int32Array | null): T {
  if (indices === null) return values;
  const out = new (values.constructor as new (n: number) => T)(indices.length * width);
  for (let i = 0; i < indices.length; i++) out.set(values.subarray(indices[i] * width, (indices[i] + 1) * width), i * width);
  return out;
}

export interface ClassificationMetrics {
  aucMacro: BootstrapSummary;
  balancedAccuracy: BootstrapSummary;
  f1Macro: BootstrapSummary;
  f1Weighted: BootstrapSummary;
  accuracy: number;
  n: number;
}

/** The four classification metrics with 1,000-resample bootstraps (shared resamples per metric via the same seed). */
export function classificationMetrics(y: Int32Array, probs: Float64Array, classes: number, { resamples = 1000, seed = 0 } = {}): ClassificationMetrics {
  const n = y.length;
  const predicted = argmaxRows(probs, classes);
  const run = (f: (yy: Int32Array, pp: Float64Array, pr: Int32Array) => number): BootstrapSummary =>
    bootstrap(n, (idx) => f(takeRows(y, 1, idx), takeRows(probs, classes, idx), takeRows(predicted, 1, idx)), { resamples, seed });
  let correct = 0;
  for (let i = 0; i < n; i++) if (predicted[i] === y[i]) correct++;
  return {
    aucMacro: run((yy, pp) => rocAucOvr(yy, pp, classes)),
    balancedAccuracy: run((yy, _pp, pr) => balancedAccuracy(yy, pr)),
    f1Macro: run((yy, _pp, pr) => f1Score(yy, pr, 'macro')),
    f1Weighted: run((yy, _pp, pr) => f1Score(yy, pr, 'weighted')),
    accuracy: correct / n,
    n,
  };
}

// ---------------------------------------------------------------------------
// survival
// ---------------------------------------------------------------------------

/** numpy.quantile(values, q) (linear) of unsorted values. */
export function quantile(values: ArrayLike<number>, q: number): number {
  return percentileSorted(Float64Array.from(values).sort(), q * 100);
}

export interface SurvivalBinning {
  /** nBins + 1 edges, outer ones extended. */
  edges: Float64Array;
  /** Bin of each sample, in [0, nBins). */
  bins: Int32Array;
}

/**
 * mSTAR's survival label discretization over a whole cohort: times [N], status [N]
 * (1 = event observed). Throws when quantile edges coincide (pandas qcut raises too).
 */
export function survivalBins(times: ArrayLike<number>, status: ArrayLike<number>, nBins = 4, eps = 1e-6): SurvivalBinning {
  const n = times.length;
  if (status.length !== n) throw rangeError('ERR_SHAPE', `${status.length} status values for ${n} times`);
  const uncensored: number[] = [];
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(times[i])) throw rangeError('ERR_RANGE', `times[${i}] = ${times[i]} is not finite`);
    min = Math.min(min, times[i]);
    max = Math.max(max, times[i]);
    if (status[i] === 1) uncensored.push(times[i]);
  }
  if (uncensored.length === 0) throw rangeError('ERR_ARGUMENT', 'survivalBins: no uncensored sample, the quantile bins are undefined');
  const sorted = Float64Array.from(uncensored).sort();
  const edges = new Float64Array(nBins + 1);
  for (let k = 0; k <= nBins; k++) edges[k] = percentileSorted(sorted, (100 * k) / nBins);
  for (let k = 1; k <= nBins; k++) {
    if (!(edges[k] > edges[k - 1])) {
      throw rangeError('ERR_ARGUMENT', `survivalBins: quantile edges ${Array.from(edges).join(', ')} are not distinct (too many tied event times for ${nBins} bins)`);
    }
  }
  edges[0] = min - eps;
  edges[nBins] = max + eps;
  const bins = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let k = 0;
    while (k + 1 < nBins && times[i] >= edges[k + 1]) k++;
    bins[i] = k;
  }
  return { edges, bins };
}

export interface ConcordanceResult {
  cIndex: number;
  concordant: number;
  discordant: number;
  tiedRisk: number;
  tiedTime: number;
}

/**
 * Harrell's C with scikit-survival's rules (see the file header). event: 1 = event
 * observed. NaN (instead of sksurv's exceptions) when fewer than 2 samples, no event,
 * or no comparable pair.
 */
export function concordanceIndex(event: ArrayLike<number | boolean>, time: ArrayLike<number>, risk: ArrayLike<number>, tiedTol = 1e-8): ConcordanceResult {
  const n = time.length;
  if (event.length !== n || risk.length !== n) throw rangeError('ERR_SHAPE', `event ${event.length}, time ${n}, risk ${risk.length}: lengths differ`);
  const nan: ConcordanceResult = { cIndex: NaN, concordant: 0, discordant: 0, tiedRisk: 0, tiedTime: 0 };
  let anyEvent = false;
  for (let i = 0; i < n; i++) if (event[i]) anyEvent = true;
  if (n < 2 || !anyEvent) return nan;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => time[a] - time[b]);
  let concordant = 0;
  let discordant = 0;
  let tiedRisk = 0;
  let tiedTime = 0;
  let numerator = 0;
  let denominator = 0;
  let comparable = false;
  for (let i = 0; i < n - 1; ) {
    let end = i + 1;
    while (end < n && time[order[end]] === time[order[i]]) end++;
    let censoredHere = 0;
    for (let j = i; j < end; j++) if (!event[order[j]]) censoredHere++;
    for (let j = i; j < end; j++) {
      if (!event[order[j]]) continue;
      comparable = true;
      tiedTime += censoredHere;
      const ri = risk[order[j]];
      // Comparable: everything after the tie group, and the censored samples within it.
      const visit = (k: number): void => {
        const rk = risk[order[k]];
        denominator += 1;
        if (Math.abs(rk - ri) <= tiedTol) {
          tiedRisk++;
          numerator += 0.5;
        } else if (rk < ri) {
          concordant++;
          numerator += 1;
        } else {
          discordant++;
        }
      };
      for (let k = i; k < end; k++) if (!event[order[k]]) visit(k);
      for (let k = end; k < n; k++) visit(k);
    }
    i = end;
  }
  if (!comparable || denominator === 0) return { ...nan, tiedTime };
  return { cIndex: numerator / denominator, concordant, discordant, tiedRisk, tiedTime };
}

export interface KaplanMeierCurve {
  /** Distinct times at which the curve steps (event times), ascending, starting with 0. */
  times: Float64Array;
  /** S(t) just after each time (1 at time 0). */
  survival: Float64Array;
  /** Samples at risk just before each time. */
  atRisk: Int32Array;
}

/** Kaplan–Meier product-limit estimate; censorings at an event time count as at risk (lifelines). */
export function kaplanMeier(time: ArrayLike<number>, event: ArrayLike<number | boolean>): KaplanMeierCurve {
  const n = time.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => time[a] - time[b]);
  const times = [0];
  const surv = [1];
  const risk = [n];
  let atRisk = n;
  let s = 1;
  for (let i = 0; i < n; ) {
    let end = i;
    let deaths = 0;
    while (end < n && time[order[end]] === time[order[i]]) {
      if (event[order[end]]) deaths++;
      end++;
    }
    if (deaths > 0) {
      s *= 1 - deaths / atRisk;
      times.push(time[order[i]]);
      surv.push(s);
      risk.push(atRisk);
    }
    atRisk -= end - i;
    i = end;
  }
  return { times: Float64Array.from(times), survival: Float64Array.from(surv), atRisk: Int32Array.from(risk) };
}

/** erfc(x) for x ≥ 0 (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7). */
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? r : 2 - r;
}

export interface LogRankResult {
  statistic: number;
  pValue: number;
}

/** Two-group log-rank test (Mantel 1966): χ² with 1 degree of freedom; group: 0 or 1 per sample. */
export function logRankTest(time: ArrayLike<number>, event: ArrayLike<number | boolean>, group: ArrayLike<number>): LogRankResult {
  const n = time.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => time[a] - time[b]);
  let n1 = 0;
  for (let i = 0; i < n; i++) if (group[i] === 1) n1++;
  let n0 = n - n1;
  let observedMinusExpected = 0;
  let variance = 0;
  for (let i = 0; i < n; ) {
    let end = i;
    let d = 0;
    let d1 = 0;
    let leaving1 = 0;
    while (end < n && time[order[end]] === time[order[i]]) {
      const k = order[end];
      if (event[k]) {
        d++;
        if (group[k] === 1) d1++;
      }
      if (group[k] === 1) leaving1++;
      end++;
    }
    const atRisk = n0 + n1;
    if (d > 0 && atRisk > 0) {
      observedMinusExpected += d1 - (d * n1) / atRisk;
      if (atRisk > 1) variance += (d * (n1 / atRisk) * (n0 / atRisk) * (atRisk - d)) / (atRisk - 1);
    }
    n1 -= leaving1;
    n0 -= end - i - leaving1;
    i = end;
  }
  if (!(variance > 0)) return { statistic: NaN, pValue: NaN };
  const statistic = (observedMinusExpected * observedMinusExpected) / variance;
  return { statistic, pValue: erfc(Math.sqrt(statistic / 2)) };
}

export interface SurvivalMetrics {
  cIndex: BootstrapSummary;
  /** Risk groups split at the median predicted risk: high = risk > median. */
  riskGroups: { medianRisk: number; high: number; low: number; logRank: LogRankResult };
  n: number;
}

/** C-index with a 1,000-resample bootstrap, and the log-rank test of the median risk split. */
export function survivalMetrics(time: Float64Array, event: Int32Array, risk: Float64Array, { resamples = 1000, seed = 0 } = {}): SurvivalMetrics {
  const n = time.length;
  const cIndex = bootstrap(n, (idx) => concordanceIndex(takeRows(event, 1, idx), takeRows(time, 1, idx), takeRows(risk, 1, idx)).cIndex, { resamples, seed });
  const medianRisk = quantile(risk, 0.5);
  const group = Int32Array.from(risk, (r) => (r > medianRisk ? 1 : 0));
  const high = group.reduce((a, b) => a + b, 0);
  return { cIndex, riskGroups: { medianRisk, high, low: n - high, logRank: logRankTest(time, event, group) }, n };
}
