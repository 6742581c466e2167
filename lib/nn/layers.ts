/** Standard layers with PyTorch parameter names and initializations. */
import { checkNumberInRange, checkPositiveInteger, invalidArgument, rangeError, typeError } from '../errors.js';
import { linear, type LinearActivation } from '../ops/linalg.js';
import { attention, dropout, layerNorm } from '../ops/nn.js';
import { initSkipped, nextSeed, uniformGenerator } from '../random.js';
import { shapeString, Tensor } from '../tensor.js';
import { Module } from './module.js';

/** U(−bound, bound) tensor from the global seed stream (zeros inside `withoutInit`). */
export function uniformTensor(shape: number[], bound: number): Tensor {
  if (initSkipped()) return Tensor.zeros(shape);
  const t = Tensor.empty(shape);
  const rng = uniformGenerator(nextSeed());
  const d = t.data();
  for (let i = 0; i < d.length; i++) d[i] = (2 * rng() - 1) * bound;
  return t;
}

/**
 * y = x Wᵀ + b. weight [out, in], bias [out]; initialized like torch.nn.Linear
 * (kaiming_uniform with a = √5 → U(±1/√in), bias U(±1/√in)).
 */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, { bias = true } = {}) {
    super();
    checkPositiveInteger('inFeatures', inFeatures);
    checkPositiveInteger('outFeatures', outFeatures);
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.registerParameter('weight', uniformTensor([outFeatures, inFeatures], bound));
    this.bias = bias ? this.registerParameter('bias', uniformTensor([outFeatures], bound)) : null;
  }

  /** x [..., in] → [..., out], with an optional fused activation. */
  forward(x: Tensor, activation: LinearActivation = 'none'): Tensor {
    return linear(x, this.weight, this.bias, activation);
  }
}

/** LayerNorm over the last dim: weight (ones) and bias (zeros) [dim]. */
export class LayerNorm extends Module {
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;

  constructor(readonly dim: number, readonly eps = 1e-5, { elementwiseAffine = true } = {}) {
    super();
    checkPositiveInteger('dim', dim);
    checkNumberInRange('eps', eps, 0, Infinity, true);
    this.weight = elementwiseAffine ? this.registerParameter('weight', Tensor.full([dim], 1)) : null;
    this.bias = elementwiseAffine ? this.registerParameter('bias', Tensor.zeros([dim])) : null;
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** Inverted dropout, active in training mode only. */
export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
    checkNumberInRange('p', p, 0, 1);
  }

  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training);
  }
}

export interface MultiheadAttentionForwardOptions {
  /** Uint8Array [B, Nk]: 1 = ignore this key (torch's key_padding_mask convention). */
  keyPaddingMask?: Uint8Array | null;
}

/**
 * torch.nn.MultiheadAttention with batch_first=True and its parameter names
 * (in_proj_weight [3E, E], in_proj_bias [3E], out_proj.weight [E, E], out_proj.bias [E]),
 * over the tiled attention kernel.
 */
export class MultiheadAttention extends Module {
  readonly inProjWeight: Tensor;
  readonly inProjBias: Tensor | null;
  readonly outProj: Linear;
  readonly headDim: number;

  constructor(readonly embedDim: number, readonly numHeads: number, { bias = true, dropout: p = 0 } = {}) {
    super();
    checkPositiveInteger('embedDim', embedDim);
    checkPositiveInteger('numHeads', numHeads);
    if (embedDim % numHeads !== 0) throw rangeError('ERR_ARGUMENT', `embedDim ${embedDim} is not divisible by numHeads ${numHeads}`);
    if (p !== 0) throw typeError('ERR_UNSUPPORTED', 'MultiheadAttention: attention-weight dropout is not supported (the tiled kernel never forms the weights)');
    this.headDim = embedDim / numHeads;
    // torch: xavier_uniform_ on in_proj_weight, zeros on the biases.
    const bound = Math.sqrt(6 / (embedDim + 3 * embedDim));
    this.inProjWeight = this.registerParameter('in_proj_weight', uniformTensor([3 * embedDim, embedDim], bound));
    this.inProjBias = bias ? this.registerParameter('in_proj_bias', Tensor.zeros([3 * embedDim])) : null;
    this.outProj = this.registerModule('out_proj', new Linear(embedDim, embedDim, { bias }));
    if (this.outProj.bias) this.outProj.bias.data().fill(0);
  }

  /** query [B, Nq, E], key/value [B, Nk, E] → [B, Nq, E]. Self-attention when key/value are omitted. */
  forward(query: Tensor, key?: Tensor, value?: Tensor, { keyPaddingMask = null }: MultiheadAttentionForwardOptions = {}): Tensor {
    if (!(query instanceof Tensor)) throw invalidArgument('query', 'a Tensor', query);
    const E = this.embedDim;
    const H = this.numHeads;
    const Dh = this.headDim;
    if (query.ndim !== 3 || query.shape[2] !== E) throw rangeError('ERR_SHAPE', `MultiheadAttention: query must be [B, N, ${E}], got ${shapeString(query.shape)}`);
    const B = query.shape[0];
    const Nq = query.shape[1];
    let q: Tensor, k: Tensor, v: Tensor;
    const temporaries: Tensor[] = [];
    if (key === undefined && value === undefined) {
      const qkv = linear(query, this.inProjWeight, this.inProjBias).reshape([B, Nq, 3, H, Dh]);
      const heads = qkv.permute([2, 0, 3, 1, 4]); // [3, B, H, N, Dh] views
      q = heads.slice(0, 0, 1).squeeze(0);
      k = heads.slice(0, 1, 2).squeeze(0);
      v = heads.slice(0, 2, 3).squeeze(0);
    } else {
      if (!(key instanceof Tensor) || !(value instanceof Tensor)) throw invalidArgument('key/value', 'Tensors (or both omitted)', key);
      const project = (x: Tensor, part: number): Tensor => {
        const w = this.inProjWeight.slice(0, part * E, (part + 1) * E);
        const b = this.inProjBias ? this.inProjBias.slice(0, part * E, (part + 1) * E) : null;
        temporaries.push(w);
        if (b) temporaries.push(b);
        return linear(x, w, b).reshape([x.shape[0], x.shape[1], H, Dh]).transpose(1, 2);
      };
      q = project(query, 0);
      k = project(key, 1);
      v = project(value, 2);
    }
    let keyMask: Uint8Array | null = null;
    if (keyPaddingMask !== null) {
      if (!(keyPaddingMask instanceof Uint8Array)) throw typeError('ERR_DTYPE', 'keyPaddingMask must be a Uint8Array [B, Nk]');
      keyMask = keyPaddingMask.map((m) => (m ? 0 : 1));
    }
    const heads = attention(q, k, v, { keyMask });
    const merged = heads.transpose(1, 2).reshape([B, Nq, E]);
    return this.outProj.forward(merged);
  }
}
