/** Learning-rate schedules. */
import { checkNonNegativeInteger, checkNumberInRange, rangeError } from '../errors.js';
import type { Optimizer } from './optimizer.js';

export interface WarmupCosineOptions {
  baseLr: number;
  /** Steps of linear warmup from 0 (exclusive) to baseLr. */
  warmupSteps: number;
  /** Total steps; after warmup the rate follows a half cosine to minLr at totalSteps. */
  totalSteps: number;
  minLr?: number;
}

/**
 * Linear warmup then cosine decay:
 *   step < warmup: baseLr · (step + 1) / warmup
 *   else: minLr + (baseLr − minLr) · ½ (1 + cos(π · (step − warmup) / (total − warmup)))
 * Steps past totalSteps stay at minLr.
 */
export function warmupCosine({ baseLr, warmupSteps, totalSteps, minLr = 0 }: WarmupCosineOptions): (step: number) => number {
  checkNumberInRange('baseLr', baseLr, 0, Infinity);
  checkNumberInRange('minLr', minLr, 0, baseLr);
  checkNonNegativeInteger('warmupSteps', warmupSteps);
  checkNonNegativeInteger('totalSteps', totalSteps);
  if (warmupSteps > totalSteps) throw rangeError('ERR_ARGUMENT', `warmupSteps ${warmupSteps} > totalSteps ${totalSteps}`);
  return (step: number) => {
    if (step < warmupSteps) return (baseLr * (step + 1)) / warmupSteps;
    const span = totalSteps - warmupSteps;
    if (span <= 0 || step >= totalSteps) return minLr;
    const progress = (step - warmupSteps) / span;
    return minLr + (baseLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}

/** Sets optimizer.lr from a schedule before each step: call `step()` once per optimizer step. */
export class LRScheduler {
  private current = 0;
  constructor(private readonly optimizer: Optimizer, private readonly schedule: (step: number) => number) {
    this.optimizer.lr = schedule(0);
  }

  step(): number {
    this.current++;
    this.optimizer.lr = this.schedule(this.current);
    return this.optimizer.lr;
  }

  get lastStep(): number {
    return this.current;
  }

  /** Jumps to a step (resume). */
  setStep(step: number): void {
    this.current = checkNonNegativeInteger('step', step);
    this.optimizer.lr = this.schedule(step);
  }
}
