/**
 * Module: named parameters and sub-modules with PyTorch naming
 * (`blocks.0.attn.qkv.weight`), train/eval modes, and state dicts.
 * Parameters are leaf tensors that no scope owns; `dispose()` frees them.
 */
import { invalidArgument, MstarError, rangeError } from '../errors.js';
import { keep, noGrad, shapeString, Tensor } from '../tensor.js';

/** What loadStateDict found; with strict loading any entry here is an error. */
export interface LoadReport {
  missing: string[];
  unexpected: string[];
  mismatched: { name: string; expected: number[]; got: number[] }[];
}

/** A value a state dict may hold: a Tensor, or plain values with a shape. */
export type StateValue = Tensor | { shape: readonly number[]; values: Float32Array };

export class Module {
  training = true;
  private readonly parametersByName = new Map<string, Tensor>();
  private readonly buffersByName = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();

  /** Registers a trainable parameter (kept out of scopes, requires grad). */
  protected registerParameter(name: string, tensor: Tensor): Tensor {
    keep(tensor);
    tensor.requiresGrad = true;
    this.parametersByName.set(name, tensor);
    return tensor;
  }

  /** Registers a non-trainable tensor saved in the state dict (e.g. running stats). */
  protected registerBuffer(name: string, tensor: Tensor): Tensor {
    keep(tensor);
    this.buffersByName.set(name, tensor);
    return tensor;
  }

  protected registerModule<M extends Module>(name: string, module: M): M {
    this.children.set(name, module);
    return module;
  }

  /** [name, parameter] pairs in registration order, names dotted like PyTorch. */
  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, p] of this.parametersByName) out.push([prefix + n, p]);
    for (const [n, m] of this.children) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }

  namedBuffers(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, b] of this.buffersByName) out.push([prefix + n, b]);
    for (const [n, m] of this.children) out.push(...m.namedBuffers(`${prefix}${n}.`));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ''), this]];
    for (const [n, m] of this.children) out.push(...m.namedModules(`${prefix}${n}.`));
    return out;
  }

  /** Number of trainable scalars. */
  parameterCount(): number {
    return this.parameters().reduce((s, p) => s + p.size, 0);
  }

  train(mode = true): this {
    this.training = mode;
    for (const m of this.children.values()) m.train(mode);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.zeroGrad();
  }

  /** Parameters and buffers by PyTorch name (the module's own tensors, not copies). */
  stateDict(): Map<string, Tensor> {
    return new Map([...this.namedParameters(), ...this.namedBuffers()]);
  }

  /**
   * Copies values into parameters/buffers by name. Strict (default): any missing,
   * unexpected or mis-shaped entry throws ERR_STATE_DICT listing all of them, and
   * nothing is changed. Non-strict: loads what matches and reports the rest.
   * `onCopied(name)` runs after each entry is copied (to release its source early).
   */
  loadStateDict(
    source: Map<string, StateValue> | Record<string, StateValue>,
    { strict = true, onCopied }: { strict?: boolean; onCopied?: (name: string) => void } = {},
  ): LoadReport {
    const entries = source instanceof Map ? source : new Map(Object.entries(source));
    if (!(entries instanceof Map)) throw invalidArgument('source', 'a Map or object of tensors', source);
    const own = this.stateDict();
    const report: LoadReport = { missing: [], unexpected: [], mismatched: [] };
    for (const name of own.keys()) if (!entries.has(name)) report.missing.push(name);
    for (const [name, value] of entries) {
      const target = own.get(name);
      if (target === undefined) {
        report.unexpected.push(name);
        continue;
      }
      const shape = value.shape;
      if (shape.length !== target.shape.length || shape.some((s, i) => s !== target.shape[i])) {
        report.mismatched.push({ name, expected: [...target.shape], got: [...shape] });
      }
    }
    if (strict && (report.missing.length || report.unexpected.length || report.mismatched.length)) {
      const lines = [
        ...report.missing.map((n) => `  missing: ${n}`),
        ...report.unexpected.map((n) => `  unexpected: ${n}`),
        ...report.mismatched.map((m) => `  shape mismatch: ${m.name}: model ${shapeString(m.expected)}, checkpoint ${shapeString(m.got)}`),
      ];
      const shown = lines.slice(0, 40);
      if (lines.length > shown.length) shown.push(`  … and ${lines.length - shown.length} more`);
      const error = new MstarError('ERR_STATE_DICT', `loadStateDict: the state dict does not match the model:\n${shown.join('\n')}`);
      (error as MstarError & { report: LoadReport }).report = report;
      throw error;
    }
    const bad = new Set(report.mismatched.map((m) => m.name));
    noGrad(() => {
      for (const [name, value] of entries) {
        const target = own.get(name);
        if (target === undefined || bad.has(name)) continue;
        const values = value instanceof Tensor ? value.toFloat32Array() : value.values;
        if (values.length !== target.size) throw rangeError('ERR_SHAPE', `loadStateDict: ${name} has ${values.length} values, needs ${target.size}`);
        target.data().set(values);
        onCopied?.(name);
      }
    });
    return report;
  }

  /** Frees every parameter, buffer and gradient now. */
  dispose(): void {
    for (const p of this.parameters()) {
      p.zeroGrad();
      p.dispose();
    }
    for (const [, b] of this.namedBuffers()) b.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
