/**
 * Evaluation plots as PNG: an SVG document is built here and rasterized by sharp
 * (librsvg). ROC curves (one-vs-rest per class) and Kaplan–Meier curves of the
 * predicted low/high risk groups with the log-rank p-value.
 */
import sharp from 'sharp';
import { kaplanMeier, type KaplanMeierCurve } from './metrics.js';

const W = 640;
const H = 480;
const M = { left: 70, right: 20, top: 40, bottom: 60 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] as string);
}

interface Series {
  label: string;
  points: [number, number][];
  step?: boolean;
}

/** A line chart with axes in [x0, x1] × [0, 1]. */
function chartSvg(title: string, xLabel: string, yLabel: string, xMax: number, series: Series[], diagonal: boolean, note?: string): string {
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const sx = (x: number): number => M.left + (xMax > 0 ? (x / xMax) * pw : 0);
  const sy = (y: number): number => M.top + (1 - y) * ph;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" font-family="sans-serif" font-size="16" text-anchor="middle">${esc(title)}</text>`,
    `<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="black"/>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const fx = (xMax * i) / 5;
    const fy = i / 5;
    parts.push(`<line x1="${sx(fx)}" y1="${M.top + ph}" x2="${sx(fx)}" y2="${M.top + ph + 5}" stroke="black"/>`);
    parts.push(`<text x="${sx(fx)}" y="${M.top + ph + 20}" font-family="sans-serif" font-size="12" text-anchor="middle">${Number(fx.toPrecision(3))}</text>`);
    parts.push(`<line x1="${M.left - 5}" y1="${sy(fy)}" x2="${M.left}" y2="${sy(fy)}" stroke="black"/>`);
    parts.push(`<text x="${M.left - 8}" y="${sy(fy) + 4}" font-family="sans-serif" font-size="12" text-anchor="end">${fy.toFixed(1)}</text>`);
  }
  parts.push(`<text x="${M.left + pw / 2}" y="${H - 15}" font-family="sans-serif" font-size="14" text-anchor="middle">${esc(xLabel)}</text>`);
  parts.push(`<text x="18" y="${M.top + ph / 2}" font-family="sans-serif" font-size="14" text-anchor="middle" transform="rotate(-90 18 ${M.top + ph / 2})">${esc(yLabel)}</text>`);
  if (diagonal) parts.push(`<line x1="${sx(0)}" y1="${sy(0)}" x2="${sx(xMax)}" y2="${sy(1)}" stroke="#999" stroke-dasharray="4 4"/>`);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts: string[] = [];
    s.points.forEach(([x, y], k) => {
      if (s.step && k > 0) pts.push(`${sx(x).toFixed(2)},${sy(s.points[k - 1][1]).toFixed(2)}`);
      pts.push(`${sx(x).toFixed(2)},${sy(y).toFixed(2)}`);
    });
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(' ')}"/>`);
    const ly = M.top + ph - 12 - 18 * (series.length - 1 - i);
    parts.push(`<line x1="${W - M.right - 190}" y1="${ly - 4}" x2="${W - M.right - 170}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`);
    parts.push(`<text x="${W - M.right - 165}" y="${ly}" font-family="sans-serif" font-size="12">${esc(s.label)}</text>`);
  });
  if (note) parts.push(`<text x="${M.left + 10}" y="${M.top + 20}" font-family="sans-serif" font-size="13">${esc(note)}</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}

/** ROC points (fpr, tpr) of scores for the positives, thresholds at every distinct score. */
export function rocCurve(positive: ArrayLike<boolean>, scores: ArrayLike<number>): [number, number][] {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  let p = 0;
  for (let i = 0; i < n; i++) if (positive[i]) p++;
  const q = n - p;
  const pts: [number, number][] = [[0, 0]];
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < n; ) {
    let j = i;
    while (j < n && scores[order[j]] === scores[order[i]]) {
      if (positive[order[j]]) tp++;
      else fp++;
      j++;
    }
    pts.push([q ? fp / q : 0, p ? tp / p : 0]);
    i = j;
  }
  return pts;
}

async function writePng(svg: string, path: string): Promise<void> {
  await sharp(Buffer.from(svg)).png().toFile(path);
}

/** One-vs-rest ROC curves of probs [N, C] (binary: the positive class only). */
export async function writeRocPng(path: string, y: ArrayLike<number>, probs: ArrayLike<number>, classNames: string[], title: string, aucs?: number[]): Promise<string> {
  const C = classNames.length;
  const classes = C === 2 ? [1] : Array.from({ length: C }, (_, c) => c);
  const series: Series[] = classes.map((c) => {
    const scores = Array.from({ length: y.length }, (_, i) => probs[i * C + c]);
    const auc = aucs?.[c];
    return { label: `${classNames[c]}${auc !== undefined && Number.isFinite(auc) ? ` (AUC ${auc.toFixed(3)})` : ''}`, points: rocCurve(Array.from(y, (v) => v === c), scores) };
  });
  const svg = chartSvg(title, 'False positive rate', 'True positive rate', 1, series, true);
  await writePng(svg, path);
  return svg;
}

/** Kaplan–Meier curves of the low- and high-risk groups (group 1 = high) with the log-rank p. */
export async function writeKaplanMeierPng(path: string, time: ArrayLike<number>, event: ArrayLike<number>, group: ArrayLike<number>, pValue: number, title: string): Promise<string> {
  const curve = (g: number): KaplanMeierCurve => {
    const idx = Array.from({ length: time.length }, (_, i) => i).filter((i) => group[i] === g);
    return kaplanMeier(idx.map((i) => time[i]), idx.map((i) => event[i]));
  };
  let tMax = 0;
  for (let i = 0; i < time.length; i++) tMax = Math.max(tMax, time[i]);
  const toSeries = (c: KaplanMeierCurve, label: string, count: number): Series => {
    const points: [number, number][] = Array.from(c.times, (t, i) => [t, c.survival[i]] as [number, number]);
    points.push([tMax, c.survival[c.survival.length - 1]]);
    return { label: `${label} (n=${count})`, points, step: true };
  };
  let nHigh = 0;
  for (let i = 0; i < group.length; i++) if (group[i] === 1) nHigh++;
  const series = [toSeries(curve(0), 'low risk', group.length - nHigh), toSeries(curve(1), 'high risk', nHigh)];
  const note = Number.isFinite(pValue) ? `log-rank p = ${pValue < 1e-4 ? pValue.toExponential(2) : pValue.toFixed(4)}` : 'log-rank p undefined';
  const svg = chartSvg(title, 'Time', 'Survival probability', tMax, series, false, note);
  await writePng(svg, path);
  return svg;
}
