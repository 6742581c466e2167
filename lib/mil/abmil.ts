/**
 * Attention-based MIL heads (Ilse, Tomczak & Welling 2018) with the mSTAR repository's
 * parameter names, so its PyTorch state dicts load unchanged:
 *
 * - `ABMIL` is mSTAR's `DAttention` (downstream_task/survival_prediction/models/AttMIL/network.py,
 *   and the identical diagnosis ABMIL): `feature` = Linear(D, 512) → ReLU|GELU → Dropout(0.25);
 *   `attention` = Linear(512, 128) → Tanh → Linear(128, 1); softmax over the bag;
 *   `classifier` = Linear(512, C). State dict: feature.0.*, attention.0.*, attention.2.*, classifier.0.*.
 * - With `gated: true` the attention branch is CLAM's `Attn_Net_Gated` (mahmoodlab/CLAM
 *   models/model_clam.py): a = Tanh(Linear(512, 128)), b = Sigmoid(Linear(512, 128)) (each
 *   followed by Dropout(0.25) when dropout is on), score = Linear(128, 1)(a ⊙ b). State dict:
 *   feature.0.*, attention_a.0.*, attention_b.0.*, attention_c.*, classifier.0.*.
 *
 * Bags are ragged: instances of several bags may be concatenated ([T, D] with a BagLayout);
 * the softmax over each bag and the weighted sum run in the fused bag-pooling kernel.
 * Unlike the repository (whose `feature.squeeze()` breaks on a bag of one patch), a bag
 * of any size ≥ 1 works.
 */
import { checkPositiveInteger, invalidArgument, rangeError } from '../errors.js';
import { linear } from '../ops/linalg.js';
import { dropout } from '../ops/nn.js';
import { mul, sigmoid, tanh } from '../ops/elementwise.js';
import { Module } from '../nn/module.js';
import { Linear } from '../nn/layers.js';
import { shapeString, Tensor } from '../tensor.js';
import { bagAttentionPool, instanceProjection, singleBag, type BagLayout, type ProjectionActivation } from './ops.js';

/** A container whose children are named 0, 1, 2, … like nn.Sequential's. */
export class Indexed extends Module {
  set<M extends Module>(index: number, module: M): M {
    return this.registerModule(String(index), module);
  }
}

export interface AbmilConfig {
  /** Instance feature size D (1024 for mSTAR features). */
  inFeatures: number;
  /** Output logits C (classes, or 4 time bins for survival). */
  nClasses: number;
  /** 'relu' (the repository's default) or 'gelu'. */
  activation?: ProjectionActivation;
  /** Dropout(0.25) after the projection (and in the gated branches). Default true, as mSTAR trains. */
  dropout?: boolean;
  /** CLAM's gated attention instead of DAttention's tanh attention. */
  gated?: boolean;
  /** Projection size L (512) and attention size (128). */
  hidden?: number;
  attentionHidden?: number;
}

export interface MilOutput {
  /** [B, C] */
  logits: Tensor;
  /** Per-instance attention, [T] for one bag (ragged: concatenated in bag order). Not differentiable. */
  attention: Float32Array;
  /** [B, L] the pooled slide embedding (ABMIL) or the normalized [CLS] token (TransMIL). */
  embedding: Tensor;
}

export interface MilForwardOptions {
  /** How the rows of x form bags (default: one bag). ABMIL only. */
  layout?: BagLayout;
  /** Seed for this step's dropout masks (training); default: the global stream. */
  seed?: number;
}

const DROPOUT_P = 0.25;

export class ABMIL extends Module {
  readonly config: Required<AbmilConfig>;
  /** feature.0 */
  readonly projection: Linear;
  /** attention.0 and attention.2 (DAttention) */
  readonly attention0: Linear | null;
  readonly attention2: Linear | null;
  /** attention_a.0, attention_b.0, attention_c (gated) */
  readonly attentionA: Linear | null;
  readonly attentionB: Linear | null;
  readonly attentionC: Linear | null;
  /** classifier.0 */
  readonly classifier: Linear;

  constructor(config: AbmilConfig) {
    super();
    const c: Required<AbmilConfig> = {
      inFeatures: config.inFeatures, nClasses: config.nClasses, activation: config.activation ?? 'relu', dropout: config.dropout ?? true,
      gated: config.gated ?? false, hidden: config.hidden ?? 512, attentionHidden: config.attentionHidden ?? 128,
    };
    checkPositiveInteger('inFeatures', c.inFeatures);
    checkPositiveInteger('nClasses', c.nClasses);
    if (c.activation !== 'relu' && c.activation !== 'gelu') throw invalidArgument('activation', "'relu' or 'gelu'", c.activation);
    this.config = c;
    this.projection = this.registerModule('feature', new Indexed()).set(0, new Linear(c.inFeatures, c.hidden));
    if (c.gated) {
      this.attention0 = this.attention2 = null;
      this.attentionA = this.registerModule('attention_a', new Indexed()).set(0, new Linear(c.hidden, c.attentionHidden));
      this.attentionB = this.registerModule('attention_b', new Indexed()).set(0, new Linear(c.hidden, c.attentionHidden));
      this.attentionC = this.registerModule('attention_c', new Linear(c.attentionHidden, 1));
    } else {
      this.attentionA = this.attentionB = this.attentionC = null;
      const net = this.registerModule('attention', new Indexed());
      this.attention0 = net.set(0, new Linear(c.hidden, c.attentionHidden));
      this.attention2 = net.set(2, new Linear(c.attentionHidden, 1));
    }
    this.classifier = this.registerModule('classifier', new Indexed()).set(0, new Linear(c.hidden, c.nClasses));
  }

  /**
   * x [N, D] or [1, N, D] (one bag) or [T, D] with `options.layout` (ragged bags) →
   * logits [B, C], attention [T], embedding [B, 512].
   */
  forward(x: Tensor, options: MilForwardOptions = {}): MilOutput {
    const x2 = x.ndim === 3 && x.shape[0] === 1 ? x.reshape([x.shape[1], x.shape[2]]) : x;
    if (x2.ndim !== 2 || x2.shape[1] !== this.config.inFeatures) {
      throw rangeError('ERR_SHAPE', `ABMIL: x must be [N, ${this.config.inFeatures}] or [1, N, ${this.config.inFeatures}], got ${shapeString(x.shape)}`);
    }
    if (x2.shape[0] < 1) throw rangeError('ERR_SHAPE', 'ABMIL: a bag needs at least one instance');
    const layout = options.layout ?? singleBag(x2.shape[0]);
    const c = this.config;
    const p = c.dropout ? DROPOUT_P : 0;
    const fc = this.projection;
    const h = instanceProjection(x2, fc.weight, fc.bias, c.activation, p, this.training, options.seed); // [T, L]
    let scores: Tensor;
    if (c.gated) {
      const la = this.attentionA!;
      const lb = this.attentionB!;
      let a = tanh(linear(h, la.weight, la.bias));
      let b = sigmoid(linear(h, lb.weight, lb.bias));
      if (c.dropout && this.training) {
        a = dropout(a, DROPOUT_P, true);
        b = dropout(b, DROPOUT_P, true);
      }
      scores = linear(mul(a, b), this.attentionC!.weight, this.attentionC!.bias); // [T, 1]
    } else {
      const l0 = this.attention0!;
      const l2 = this.attention2!;
      scores = linear(tanh(linear(h, l0.weight, l0.bias)), l2.weight, l2.bias); // [T, 1]
    }
    const { pooled, attention } = bagAttentionPool(scores, h, layout); // [B, 1, L]
    const embedding = pooled.reshape([pooled.shape[0], c.hidden]);
    const logits = linear(embedding, this.classifier.weight, this.classifier.bias);
    // `attention` stays alive (the pooling's backward reads it); the scope releases it.
    return { logits, attention: attention.toFloat32Array(), embedding };
  }
}
