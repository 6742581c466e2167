/**
 * The discrete-time survival head of the mSTAR repository (after Zadeh & Schmid 2021,
 * "Bias in cross-entropy-based training of deep survival networks", as in
 * mahmoodlab's PORPOISE/MCAT; mSTAR downstream_task/survival_prediction/utils/loss.py):
 *
 *   hazards = sigmoid(logits)            [B, K]   (K time bins)
 *   S       = cumprod(1 − hazards)       [B, K]   survival after each bin
 *   risk    = −Σ_k S_k
 *
 * and its negative log-likelihood `nll_loss` (NLLSurvLoss(alpha=0) in mSTAR's training):
 * with S₋₁ = 1 prepended (S_pad[j] = S_{j−1}), bin Y and censorship c (1 = censored):
 *   uncensored = −(1 − c)·(log max(S_pad[Y], eps) + log max(h_Y, eps))
 *   censored   = −c·log max(S_pad[Y + 1], eps)
 *   loss = mean over the batch of (1 − α)(censored + uncensored) + α·uncensored,  eps = 1e-7.
 */
import { invalidArgument, rangeError } from '../errors.js';
import { checkTensor, withContiguous } from '../ops/util.js';
import { recordOp, shapeString, Tensor } from '../tensor.js';

export interface SurvivalCurves {
  /** [B, K] sigmoid(logits) */
  hazards: Float32Array;
  /** [B, K] cumprod(1 − hazards) */
  survival: Float32Array;
  /** [B] −Σ_k S_k (higher = worse prognosis) */
  risk: Float64Array;
}

/** hazards, S and risk from logits [B, K], in float32 like the reference (cumprod in bin order). */
export function survivalFromLogits(logits: Float32Array, batch: number, bins: number): SurvivalCurves {
  const hazards = new Float32Array(batch * bins);
  const survival = new Float32Array(batch * bins);
  const risk = new Float64Array(batch);
  for (let b = 0; b < batch; b++) {
    let s = 1;
    let total = 0;
    for (let k = 0; k < bins; k++) {
      const h = Math.fround(1 / (1 + Math.exp(-logits[b * bins + k])));
      hazards[b * bins + k] = h;
      s = Math.fround(s * Math.fround(1 - h));
      survival[b * bins + k] = s;
      total += s;
    }
    risk[b] = -total;
  }
  return { hazards, survival, risk };
}

/**
 * NLL survival loss on logits [B, K]; bins [B] in [0, K), censorship [B] (1 = censored,
 * i.e. Status 0). Differentiable with respect to the logits (computed in float64; clamped
 * terms pass no gradient, like torch.clamp).
 */
export function nllSurvLoss(logits: Tensor, bins: ArrayLike<number>, censorship: ArrayLike<number>, { alpha = 0, eps = 1e-7 } = {}): Tensor {
  checkTensor('logits', logits);
  if (logits.ndim !== 2) throw rangeError('ERR_SHAPE', `nllSurvLoss: logits must be [B, K], got ${shapeString(logits.shape)}`);
  const [B, K] = logits.shape;
  if (bins.length !== B || censorship.length !== B) throw rangeError('ERR_SHAPE', `nllSurvLoss: ${bins.length} bins and ${censorship.length} censorship values for ${B} rows`);
  for (let b = 0; b < B; b++) {
    if (!Number.isInteger(bins[b]) || bins[b] < 0 || bins[b] >= K) throw rangeError('ERR_RANGE', `nllSurvLoss: bins[${b}] = ${bins[b]} is not in [0, ${K})`);
    if (censorship[b] !== 0 && censorship[b] !== 1) throw invalidArgument(`censorship[${b}]`, '0 or 1', censorship[b]);
  }
  const z = withContiguous(logits, (c) => c.data().slice());
  const grad = new Float64Array(B * K);
  let total = 0;
  for (let b = 0; b < B; b++) {
    const y = bins[b];
    const c = censorship[b];
    const h = new Float64Array(K);
    const logOneMinusH = new Float64Array(K);
    for (let k = 0; k < K; k++) {
      const v = z[b * K + k];
      h[k] = 1 / (1 + Math.exp(-v));
      logOneMinusH[k] = Math.log1p(-h[k]);
    }
    // log S_pad[j] = Σ_{k<j} log(1 − h_k); d/dz_k log(1 − h_k) = −h_k; d/dz_y log h_y = 1 − h_y.
    const logSPad = (j: number): number => {
      let s = 0;
      for (let k = 0; k < j; k++) s += logOneMinusH[k];
      return s;
    };
    const addLogS = (j: number, weight: number): number => {
      const ls = logSPad(j);
      if (Math.exp(ls) < eps) return Math.log(eps) * weight;
      for (let k = 0; k < j; k++) grad[b * K + k] += (weight * -h[k]) / B;
      return ls * weight;
    };
    const addLogH = (weight: number): number => {
      if (h[y] < eps) return Math.log(eps) * weight;
      grad[b * K + y] += (weight * (1 - h[y])) / B;
      return Math.log(h[y]) * weight;
    };
    // uncensored and censored parts, weights as in the loss: −(1−α+α)(1−c) = −(1−c); −(1−α)c.
    let row = 0;
    row += addLogS(y, -(1 - c));
    row += addLogH(-(1 - c));
    row += addLogS(y + 1, -(1 - alpha) * c);
    total += row;
  }
  const out = Tensor.scalar(total / B);
  return recordOp('nllSurvLoss', [logits], out, (g) => {
    const s = g.item();
    const gl = Tensor.empty([B, K]);
    const d = gl.data();
    for (let i = 0; i < d.length; i++) d[i] = grad[i] * s;
    return [gl];
  });
}
