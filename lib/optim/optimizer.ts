/**
 * Optimizers over fused native steps (cpp/ops/optim.cc): AdamW and SGD with
 * momentum, as torch.optim defines them; gradient clipping by global norm; state
 * that can be saved and restored exactly (for resumable training).
 */
import { checkFiniteNumber, checkNumberInRange, invalidArgument, MstarError, rangeError } from '../errors.js';
import { native } from '../native.js';
import { globalNorm } from '../ops/reduce.js';
import { keep, Tensor } from '../tensor.js';

export interface OptimizerState {
  step: number;
  lr: number;
  /** Per parameter (by index), named slots (e.g. exp_avg) as plain arrays. */
  slots: Record<string, Float32Array>[];
}

export abstract class Optimizer {
  /** Current learning rate (schedules set it before each step). */
  lr: number;
  /** Steps taken. */
  stepCount = 0;
  protected readonly params: Tensor[];
  protected readonly slots: Map<string, Tensor>[];

  constructor(params: readonly Tensor[], lr: number, protected readonly slotNames: readonly string[]) {
    if (!Array.isArray(params) || params.length === 0) throw invalidArgument('params', 'a non-empty array of parameters', params);
    params.forEach((p, i) => {
      if (!(p instanceof Tensor) || !p.requiresGrad) throw invalidArgument(`params[${i}]`, 'a Tensor that requires grad', p);
    });
    checkNumberInRange('lr', lr, 0, Infinity);
    this.lr = lr;
    this.params = [...params];
    this.slots = this.params.map(() => new Map());
  }

  /** A state slot for parameter i, created zeroed on first use. */
  protected slot(i: number, name: string): Tensor {
    let t = this.slots[i].get(name);
    if (t === undefined) {
      t = keep(Tensor.zeros(this.params[i].shape));
      this.slots[i].set(name, t);
    }
    return t;
  }

  /** Applies one update from the parameters' .grad (parameters without grad are skipped). */
  step(): void {
    this.stepCount++;
    this.params.forEach((p, i) => {
      if (p.grad === null || p.size === 0) return;
      this.update(i, p, p.grad);
    });
  }

  protected abstract update(index: number, param: Tensor, grad: Tensor): void;

  zeroGrad(): void {
    for (const p of this.params) p.zeroGrad();
  }

  /** A copy of the optimizer state (for checkpoints). */
  stateDict(): OptimizerState {
    return {
      step: this.stepCount,
      lr: this.lr,
      slots: this.slots.map((m) => Object.fromEntries([...m].map(([k, t]) => [k, t.toFloat32Array()]))),
    };
  }

  /** Restores a state from stateDict() so training resumes exactly. */
  loadStateDict(state: OptimizerState): void {
    if (!state || !Array.isArray(state.slots) || state.slots.length !== this.params.length) {
      throw rangeError('ERR_STATE_DICT', `optimizer state has ${state?.slots?.length} parameter entries, optimizer has ${this.params.length}`);
    }
    checkFiniteNumber('state.step', state.step);
    state.slots.forEach((slots, i) => {
      for (const [name, values] of Object.entries(slots)) {
        if (!this.slotNames.includes(name)) throw new MstarError('ERR_STATE_DICT', `optimizer state: unknown slot '${name}'`);
        if (values.length !== this.params[i].size) {
          throw rangeError('ERR_STATE_DICT', `optimizer state: slot ${name} of parameter ${i} has ${values.length} values, needs ${this.params[i].size}`);
        }
        this.slot(i, name).data().set(values);
      }
    });
    this.stepCount = state.step;
    this.lr = state.lr;
  }

  /** Frees the state tensors. */
  dispose(): void {
    for (const m of this.slots) {
      for (const t of m.values()) t.dispose();
      m.clear();
    }
  }
}

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** AdamW (Loshchilov & Hutter 2019) with torch.optim.AdamW defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01). */
export class AdamW extends Optimizer {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  weightDecay: number;

  constructor(params: readonly Tensor[], { lr = 1e-3, betas = [0.9, 0.999], eps = 1e-8, weightDecay = 0.01 }: AdamWOptions = {}) {
    super(params, lr, ['exp_avg', 'exp_avg_sq']);
    this.beta1 = checkNumberInRange('betas[0]', betas[0], 0, 1, false, true);
    this.beta2 = checkNumberInRange('betas[1]', betas[1], 0, 1, false, true);
    this.eps = checkNumberInRange('eps', eps, 0, Infinity, true);
    this.weightDecay = checkNumberInRange('weightDecay', weightDecay, 0, Infinity);
  }

  protected update(i: number, p: Tensor, g: Tensor): void {
    native().adamwStep(p.data(), g.data(), this.slot(i, 'exp_avg').data(), this.slot(i, 'exp_avg_sq').data(), p.size,
      this.lr, this.beta1, this.beta2, this.eps, this.weightDecay, this.stepCount);
  }
}

/** Adam: AdamW's update with L2 weight decay folded into the gradient (torch.optim.Adam). */
export class Adam extends AdamW {
  constructor(params: readonly Tensor[], options: AdamWOptions = {}) {
    super(params, { weightDecay: 0, ...options });
  }

  protected override update(i: number, p: Tensor, g: Tensor): void {
    if (this.weightDecay === 0) {
      native().adamwStep(p.data(), g.data(), this.slot(i, 'exp_avg').data(), this.slot(i, 'exp_avg_sq').data(), p.size,
        this.lr, this.beta1, this.beta2, this.eps, 0, this.stepCount);
      return;
    }
    const decayed = new Float32Array(g.data());
    native().axpy(p.data(), decayed, p.size, this.weightDecay);
    native().adamwStep(p.data(), decayed, this.slot(i, 'exp_avg').data(), this.slot(i, 'exp_avg_sq').data(), p.size,
      this.lr, this.beta1, this.beta2, this.eps, 0, this.stepCount);
  }
}

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/** SGD with momentum exactly as torch.optim.SGD. */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;

  constructor(params: readonly Tensor[], { lr, momentum = 0, dampening = 0, weightDecay = 0, nesterov = false }: SGDOptions) {
    super(params, lr, ['momentum_buffer']);
    this.momentum = checkNumberInRange('momentum', momentum, 0, Infinity);
    this.dampening = checkNumberInRange('dampening', dampening, 0, Infinity);
    this.weightDecay = checkNumberInRange('weightDecay', weightDecay, 0, Infinity);
    if (nesterov && (momentum <= 0 || dampening !== 0)) throw rangeError('ERR_ARGUMENT', 'SGD: nesterov needs momentum > 0 and dampening 0');
    this.nesterov = nesterov;
  }

  protected update(i: number, p: Tensor, g: Tensor): void {
    const first = this.momentum !== 0 && !this.slots[i].has('momentum_buffer');
    const buffer = this.momentum !== 0 ? this.slot(i, 'momentum_buffer').data() : null;
    native().sgdStep(p.data(), g.data(), buffer, p.size, this.lr, this.momentum, this.dampening, this.weightDecay, this.nesterov, first);
  }
}

/**
 * Scales gradients so their global L2 norm is at most maxNorm
 * (torch.nn.utils.clip_grad_norm_: factor maxNorm / (norm + 1e-6), only when < 1).
 * Returns the norm before clipping.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  checkNumberInRange('maxNorm', maxNorm, 0, Infinity, true);
  const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
  const norm = globalNorm(grads);
  const factor = maxNorm / (norm + 1e-6);
  if (factor < 1) for (const g of grads) native().affine(g.data(), g.data(), g.size, factor, 0);
  return norm;
}
