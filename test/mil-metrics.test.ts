/**
 * Metric functions against scikit-learn / scikit-survival / scipy reference values
 * (test/fixtures/mil/metrics.json, from test/fixtures/gen/mil_metrics.py), the mSTAR
 * repository's survival bins on a real split file, and hand-computed cases: ties, all
 * censored, a class missing from a bootstrap resample.
 */
import { describe, expect, it } from 'vitest';
import {
  argmaxRows, balancedAccuracy, binaryAuc, bootstrap, classificationMetrics, concordanceIndex, f1Score, kaplanMeier, logRankTest,
  percentileSorted, rocAucOvr, survivalBins, survivalMetrics,
} from '../lib/mil/metrics.js';
import { survivalFromLogits } from '../lib/mil/losses.js';
import { readJson } from './fixtures-util.js';

interface Fixture {
  classification: { name: string; classes: number; y: number[]; probs: number[]; pred: number[]; auc?: number; balanced_accuracy: number; f1_macro: number; f1_weighted: number }[];
  cindex: { name: string; event: number[]; time: number[]; risk: number[]; cindex: number; concordant: number; discordant: number; tied_risk: number; tied_time: number }[];
  km: { name: string; time: number[]; event: number[]; steps: number[]; survival: number[] }[];
  logrank: { name: string; time: number[]; event: number[]; group: number[]; statistic: number; pvalue: number }[];
  bins: { name: string; time: number[]; status: number[]; labels: number[]; edges: number[] }[];
}

const fx = readJson<Fixture>('mil', 'metrics.json');

describe('classification metrics vs scikit-learn', () => {
  for (const c of fx.classification) {
    it(c.name, () => {
      expect(Array.from(argmaxRows(c.probs, c.classes))).toEqual(c.pred);
      if (c.auc !== undefined) expect(rocAucOvr(c.y, c.probs, c.classes)).toBeCloseTo(c.auc, 12);
      else expect(Number.isFinite(rocAucOvr(c.y, c.probs, c.classes))).toBe(true); // sklearn raises; we average the defined classes
      expect(balancedAccuracy(c.y, c.pred)).toBeCloseTo(c.balanced_accuracy, 12);
      expect(f1Score(c.y, c.pred, 'macro')).toBeCloseTo(c.f1_macro, 12);
      expect(f1Score(c.y, c.pred, 'weighted')).toBeCloseTo(c.f1_weighted, 12);
    });
  }

  it('hand-computed AUC with ties: half credit for a tied positive/negative pair', () => {
    // positives 0.8, 0.5; negatives 0.5, 0.2: pairs (0.8>0.5, 0.8>0.2, 0.5=0.5 → ½, 0.5>0.2) = 3.5/4
    expect(binaryAuc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2])).toBe(0.875);
    expect(Number.isNaN(binaryAuc([1, 1], [0.1, 0.2]))).toBe(true);
  });

  it('a class missing from y leaves its AUC out of the macro mean', () => {
    // 3 classes, class 1 absent: the mean is over the AUCs of classes 0 and 2.
    const y = [0, 0, 2, 2];
    const probs = [0.7, 0.2, 0.1, 0.6, 0.1, 0.3, 0.2, 0.1, 0.7, 0.3, 0.3, 0.4];
    const auc0 = binaryAuc([1, 1, 0, 0], [0.7, 0.6, 0.2, 0.3]);
    const auc2 = binaryAuc([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.4]);
    expect(rocAucOvr(y, probs, 3)).toBeCloseTo((auc0 + auc2) / 2, 15);
  });
});

describe('bootstrap', () => {
  it('is deterministic for a seed, and matches numpy percentiles', () => {
    expect(percentileSorted([1, 2, 3, 4], 2.5)).toBeCloseTo(1.075, 12);
    expect(percentileSorted([1, 2, 3, 4], 97.5)).toBeCloseTo(3.925, 12);
    const y = Int32Array.from({ length: 30 }, (_, i) => i % 2);
    const probs = Float64Array.from({ length: 60 }, (_, i) => ((i * 7919) % 13) / 13);
    const a = classificationMetrics(y, probs, 2, { resamples: 200, seed: 5 });
    const b = classificationMetrics(y, probs, 2, { resamples: 200, seed: 5 });
    expect(a).toEqual(b);
    expect(a.aucMacro.ciLower).toBeLessThanOrEqual(a.aucMacro.mean);
    expect(a.aucMacro.ciUpper).toBeGreaterThanOrEqual(a.aucMacro.mean);
  });

  it('drops resamples where the metric is undefined (one class missing) and counts them', () => {
    // 1 positive in 12: about (11/12)^12 ≈ 35% of resamples have no positive.
    const positive = Array.from({ length: 12 }, (_, i) => (i === 0 ? 1 : 0));
    const scores = Array.from({ length: 12 }, (_, i) => i / 12);
    const s = bootstrap(12, (idx) => (idx === null ? binaryAuc(positive, scores) : binaryAuc(Array.from(idx, (i) => positive[i]), Array.from(idx, (i) => scores[i]))), { resamples: 1000, seed: 1 });
    expect(s.resamples).toBe(1000);
    expect(s.defined).toBeGreaterThan(500);
    expect(s.defined).toBeLessThan(800);
    expect(Number.isFinite(s.mean)).toBe(true);
  });
});

describe('survival metrics', () => {
  for (const c of fx.cindex) {
    it(`C-index vs scikit-survival: ${c.name}`, () => {
      const r = concordanceIndex(c.event, c.time, c.risk);
      expect(r.cIndex).toBeCloseTo(c.cindex, 12);
      expect([r.concordant, r.discordant, r.tiedRisk, r.tiedTime]).toEqual([c.concordant, c.discordant, c.tied_risk, c.tied_time]);
    });
  }

  it('C-index: hand-computed ties and the undefined cases', () => {
    // Events at 1 (risk 2) and 2 (risk 1), censored at 2 (risk 1): pairs (1,2e): concordant; (1,2c): concordant;
    // (2e, 2c): comparable (event tied with a censoring), tied risk → ½. C = 2.5/3.
    expect(concordanceIndex([1, 1, 0], [1, 2, 2], [2, 1, 1]).cIndex).toBeCloseTo(2.5 / 3, 15);
    expect(Number.isNaN(concordanceIndex([0, 0, 0], [1, 2, 3], [1, 2, 3]).cIndex)).toBe(true); // all censored
    expect(Number.isNaN(concordanceIndex([1], [1], [1]).cIndex)).toBe(true); // one sample
    expect(Number.isNaN(concordanceIndex([1, 1], [3, 3], [1, 2]).cIndex)).toBe(true); // only tied events: no comparable pair
  });

  for (const c of fx.km) {
    it(`Kaplan–Meier vs scipy.stats.ecdf: ${c.name}`, () => {
      const km = kaplanMeier(c.time, c.event);
      // scipy reports S at every distinct time (censorings too); compare at our event steps.
      for (let i = 1; i < km.times.length; i++) {
        const j = c.steps.indexOf(km.times[i]);
        expect(j).toBeGreaterThanOrEqual(0);
        expect(km.survival[i]).toBeCloseTo(c.survival[j], 12);
      }
    });
  }

  for (const c of fx.logrank) {
    it(`log-rank vs scipy.stats.logrank: ${c.name}`, () => {
      const r = logRankTest(c.time, c.event, c.group);
      expect(r.statistic).toBeCloseTo(c.statistic, 9);
      expect(Math.abs(r.pValue - c.pvalue)).toBeLessThan(1e-6 * Math.max(1, c.pvalue) + 1e-9);
    });
  }

  for (const c of fx.bins) {
    it(`time bins vs the repository's disc_label: ${c.name}`, () => {
      const b = survivalBins(c.time, c.status);
      Array.from(b.edges).forEach((e, i) => expect(e).toBeCloseTo(c.edges[i], 9));
      expect(Array.from(b.bins)).toEqual(c.labels);
    });
  }

  it('time bins: an all-censored cohort has no quantiles', () => {
    expect(() => survivalBins([1, 2, 3], [0, 0, 0])).toThrow(/no uncensored/);
  });

  it('risk = −ΣS from logits; survival metrics split risk at the median', () => {
    const s = survivalFromLogits(Float32Array.from([0, 0, 0, 0]), 1, 4);
    expect(Array.from(s.survival)).toEqual([0.5, 0.25, 0.125, 0.0625]);
    expect(s.risk[0]).toBeCloseTo(-0.9375, 12);
    const time = Float64Array.from([1, 2, 3, 4, 5, 6]);
    const event = Int32Array.from([1, 1, 1, 1, 1, 1]);
    const risk = Float64Array.from([6, 5, 4, 3, 2, 1]);
    const m = survivalMetrics(time, event, risk, { resamples: 100, seed: 3 });
    expect(m.cIndex.value).toBe(1);
    expect(m.riskGroups.high).toBe(3);
    expect(m.riskGroups.low).toBe(3);
  });
});
