/**
 * Finite-difference gradient check for differentiable ops: compares autograd's
 * gradients of L = Σ w ⊙ f(inputs) (fixed random w) with central differences of L
 * evaluated in float32 by the same forward (so tolerances are float32-sized).
 */
import { expect } from 'vitest';
import { noGrad, ops, Tensor, tidy } from '../lib/index.js';
import { expectAllClose, randn } from './helpers.js';

export interface GradcheckInput {
  shape: number[];
  values?: Float32Array;
  /** Leave false for inputs that are not differentiated (e.g. fixed masks). */
  requiresGrad?: boolean;
}

export function gradcheck(
  fn: (inputs: Tensor[]) => Tensor,
  specs: GradcheckInput[],
  { seed = 1, h = 1e-2, atol = 2e-3, rtol = 2e-2, label = 'grad' } = {},
): void {
  tidy(() => {
    const values = specs.map((s, i) => s.values ?? randn(s.shape.reduce((a, b) => a * b, 1), seed + i));
    const make = (i: number, v: Float32Array, grad: boolean): Tensor => {
      const t = Tensor.fromArray(v, specs[i].shape);
      if (grad) t.requireGrad();
      return t;
    };
    const inputs = values.map((v, i) => make(i, v, specs[i].requiresGrad !== false));
    const out = fn(inputs);
    const weights = Tensor.fromArray(randn(out.size, seed + 100), out.shape);
    const loss = ops.sum(ops.mul(out, weights));
    loss.backward();
    const lossAt = (i: number, v: Float32Array): number =>
      tidy(() => noGrad(() => {
        const args = values.map((orig, j) => make(j, j === i ? v : orig, false));
        const o = fn(args);
        const w = o.toFloat32Array();
        const ww = weights.toFloat32Array();
        let s = 0;
        for (let k = 0; k < w.length; k++) s += w[k] * ww[k];
        return s;
      }));
    specs.forEach((spec, i) => {
      if (spec.requiresGrad === false) return;
      const analytic = inputs[i].grad?.toFloat32Array() ?? new Float32Array(values[i].length);
      const numeric = new Float64Array(values[i].length);
      for (let k = 0; k < values[i].length; k++) {
        const plus = values[i].slice();
        plus[k] += h;
        const minus = values[i].slice();
        minus[k] -= h;
        numeric[k] = (lossAt(i, plus) - lossAt(i, minus)) / (2 * h);
      }
      expect(analytic.length).toBe(numeric.length);
      expectAllClose(analytic, numeric, { atol, rtol, label: `${label}: input ${i}` });
      inputs[i].zeroGrad();
    });
  });
}
