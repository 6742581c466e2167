/**
 * TransMIL (Shao et al., NeurIPS 2021) exactly as the mSTAR repository defines it
 * (downstream_task/<task>/models/TransMIL/network.py with the Nyström attention of its
 * util.py), which is also mSTAR's Stage-1 slide aggregator. Parameter names match the
 * repository's state dict:
 *
 *   _fc1.0.{weight,bias}                     Linear(D, 512) → ReLU|GELU → Dropout(0.25)
 *   cls_token [1, 1, 512]
 *   layer{1,2}.norm.{weight,bias}            pre-norm
 *   layer{1,2}.attn.to_qkv.weight            [1536, 512], no bias (8 heads × 64)
 *   layer{1,2}.attn.to_out.0.{weight,bias}   Linear(512, 512) → Dropout(0.1)
 *   layer{1,2}.attn.res_conv.weight          [8, 1, 33, 1]
 *   pos_layer.proj{,1,2}.{weight,bias}       PPEG depthwise 7×7, 5×5, 3×3
 *   norm.{weight,bias}, classifier.{weight,bias}
 *
 * forward: h = _fc1(x) [N, 512]; the bag is squared by repeating its first ⌈√N⌉² − N
 * instances; [CLS] is prepended; layer1; PPEG on the ⌈√N⌉×⌈√N⌉ grid; layer2; the [CLS]
 * row after `norm` is the slide embedding and `classifier` maps it to the logits.
 *
 * Memory: every O(N) step is a fused op (lib/mil/ops.ts, lib/mil/nystrom.ts) that saves
 * at most its input, and each layer's input is released as soon as its backward is done;
 * in training only the [CLS] row of layer 2 is computed (the loss reads nothing else).
 */
import { checkPositiveInteger, invalidArgument, rangeError } from '../errors.js';
import { linear } from '../ops/linalg.js';
import { layerNorm } from '../ops/nn.js';
import { Module } from '../nn/module.js';
import { LayerNorm, Linear, uniformTensor } from '../nn/layers.js';
import { fillNormal, nextSeed, uniformGenerator } from '../random.js';
import { noGrad, shapeString, Tensor } from '../tensor.js';
import { Indexed, type MilForwardOptions, type MilOutput } from './abmil.js';
import { TRANSMIL_NYSTROM, transLayer, type NystromConfig, type TransLayerWeights } from './nystrom.js';
import { clsSquarePad, gridSide, instanceProjection, ppeg, type ProjectionActivation } from './ops.js';

const DIM = 512;

/** xavier_normal_ (Glorot & Bengio 2010): N(0, 2 / (fan_in + fan_out)). */
function xavierNormal(shape: [number, number]): Tensor {
  const t = Tensor.empty(shape);
  fillNormal(t.data(), uniformGenerator(nextSeed()), Math.sqrt(2 / (shape[0] + shape[1])));
  return t;
}

/** A Linear initialized as the repository's `initialize_weights` does (xavier normal, zero bias). */
function xavierLinear(inF: number, outF: number, bias = true): Linear {
  const l = new Linear(inF, outF, { bias });
  noGrad(() => {
    l.weight.data().set(xavierNormal([outF, inF]).data());
    l.bias?.data().fill(0);
  });
  return l;
}

/** nn.Conv2d(C, C, k, padding=k//2, groups=C): weight [C, 1, k, k], bias [C], default init U(±1/√(k·k)). */
export class DepthwiseConv2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(readonly channels: number, readonly kernelH: number, readonly kernelW: number = kernelH, { bias = true } = {}) {
    super();
    const bound = 1 / Math.sqrt(kernelH * kernelW);
    this.weight = this.registerParameter('weight', uniformTensor([channels, 1, kernelH, kernelW], bound));
    this.bias = bias ? this.registerParameter('bias', uniformTensor([channels], bound)) : null;
  }
}

/** nystrom-attention's NystromAttention: to_qkv, to_out.0, res_conv. */
export class NystromAttention extends Module {
  readonly toQkv: Linear;
  readonly toOut: Linear;
  readonly resConv: DepthwiseConv2d;
  constructor(readonly dim: number, readonly cfg: NystromConfig) {
    super();
    const inner = cfg.heads * cfg.headDim;
    this.toQkv = this.registerModule('to_qkv', xavierLinear(dim, 3 * inner, false));
    this.toOut = this.registerModule('to_out', new Indexed()).set(0, xavierLinear(inner, dim));
    this.resConv = this.registerModule('res_conv', new DepthwiseConv2d(cfg.heads, cfg.residualKernel, 1, { bias: false }));
  }
}

/** mSTAR's TransLayer: x + attn(norm(x)). */
export class TransLayer extends Module {
  readonly norm: LayerNorm;
  readonly attn: NystromAttention;
  constructor(dim: number, cfg: NystromConfig) {
    super();
    this.norm = this.registerModule('norm', new LayerNorm(dim, cfg.normEps));
    this.attn = this.registerModule('attn', new NystromAttention(dim, cfg));
  }

  weights(): TransLayerWeights {
    return {
      normWeight: this.norm.weight!, normBias: this.norm.bias!, qkvWeight: this.attn.toQkv.weight,
      outWeight: this.attn.toOut.weight, outBias: this.attn.toOut.bias!, resConvWeight: this.attn.resConv.weight,
    };
  }
}

/** TransMIL's positional encoding generator: proj (7×7), proj1 (5×5), proj2 (3×3). */
export class PPEG extends Module {
  readonly proj: DepthwiseConv2d;
  readonly proj1: DepthwiseConv2d;
  readonly proj2: DepthwiseConv2d;
  constructor(dim: number) {
    super();
    this.proj = this.registerModule('proj', new DepthwiseConv2d(dim, 7));
    this.proj1 = this.registerModule('proj1', new DepthwiseConv2d(dim, 5));
    this.proj2 = this.registerModule('proj2', new DepthwiseConv2d(dim, 3));
  }

  /** x [1 + s², C] → [1 + s², C]. */
  forward(x: Tensor, side: number, releaseInputAfterBackward = false): Tensor {
    return ppeg(x, side, {
      w7: this.proj.weight, b7: this.proj.bias!, w5: this.proj1.weight, b5: this.proj1.bias!, w3: this.proj2.weight, b3: this.proj2.bias!,
    }, releaseInputAfterBackward);
  }
}

export interface TransmilConfig {
  inFeatures: number;
  nClasses: number;
  activation?: ProjectionActivation;
  /** Dropout(0.25) after _fc1 (and the layers' to_out dropout 0.1). Default true, as mSTAR trains. */
  dropout?: boolean;
  /** Nyström hyper-parameters (default: the repository's). */
  nystrom?: Partial<NystromConfig>;
  /** Row chunk of the fused layers (memory/speed trade-off; results do not depend on it). */
  chunkRows?: number;
}

export interface TransmilForwardOptions extends MilForwardOptions {
  /** Also return the per-patch tokens after the final norm ([N, 512], Stage 2's re-embedded patches). */
  returnTokens?: boolean;
  /** Compute layer 2's [CLS] attention over the patches (default: true outside training). */
  returnAttention?: boolean;
}

export interface TransmilOutput extends MilOutput {
  /** [N, 512] tokens of the N input patches after layer 2 and the final norm (when asked for). */
  tokens?: Tensor;
}

export class TransMIL extends Module {
  readonly config: Required<Omit<TransmilConfig, 'nystrom'>> & { nystrom: NystromConfig };
  readonly fc1: Linear;
  readonly clsToken: Tensor;
  readonly layer1: TransLayer;
  readonly layer2: TransLayer;
  readonly posLayer: PPEG;
  readonly norm: LayerNorm;
  readonly classifier: Linear;

  constructor(config: TransmilConfig) {
    super();
    checkPositiveInteger('inFeatures', config.inFeatures);
    checkPositiveInteger('nClasses', config.nClasses);
    const activation = config.activation ?? 'relu';
    if (activation !== 'relu' && activation !== 'gelu') throw invalidArgument('activation', "'relu' or 'gelu'", activation);
    const nystrom: NystromConfig = { ...TRANSMIL_NYSTROM, ...config.nystrom };
    this.config = { inFeatures: config.inFeatures, nClasses: config.nClasses, activation, dropout: config.dropout ?? true, chunkRows: config.chunkRows ?? 2048, nystrom };
    // Registration order follows the repository's module order (state dict order).
    this.fc1 = this.registerModule('_fc1', new Indexed()).set(0, xavierLinear(config.inFeatures, DIM));
    this.posLayer = this.registerModule('pos_layer', new PPEG(DIM));
    const cls = Tensor.empty([1, 1, DIM]);
    fillNormal(cls.data(), uniformGenerator(nextSeed()), 1e-6);
    this.clsToken = this.registerParameter('cls_token', cls);
    this.layer1 = this.registerModule('layer1', new TransLayer(DIM, nystrom));
    this.layer2 = this.registerModule('layer2', new TransLayer(DIM, nystrom));
    this.norm = this.registerModule('norm', new LayerNorm(DIM));
    this.classifier = this.registerModule('classifier', xavierLinear(DIM, config.nClasses));
  }

  /** x [N, D] or [1, N, D] (one bag) → logits [1, C], attention [N], embedding [1, 512] (+ tokens). */
  forward(x: Tensor, options: TransmilForwardOptions = {}): TransmilOutput {
    if (options.layout !== undefined && options.layout.offsets.length !== 2) {
      throw rangeError('ERR_UNSUPPORTED', 'TransMIL takes one bag per call (its pinv initialization couples a batch); loop over bags');
    }
    const x2 = x.ndim === 3 && x.shape[0] === 1 ? x.reshape([x.shape[1], x.shape[2]]) : x;
    if (x2.ndim !== 2 || x2.shape[1] !== this.config.inFeatures || x2.shape[0] < 1) {
      throw rangeError('ERR_SHAPE', `TransMIL: x must be [N >= 1, ${this.config.inFeatures}] or [1, N, ${this.config.inFeatures}], got ${shapeString(x.shape)}`);
    }
    const c = this.config;
    const n = x2.shape[0];
    const side = gridSide(n);
    const training = this.training;
    const seed = options.seed ?? nextSeed();
    const wantAttention = options.returnAttention ?? !training;
    const h = instanceProjection(x2, this.fc1.weight, this.fc1.bias, c.activation, c.dropout ? 0.25 : 0, training, seed);
    const h0 = clsSquarePad(h, this.clsToken); // [1 + s², 512]
    if (c.activation === 'relu') h.dispose(); // the fused ReLU projection's backward keeps no reference to it
    const layerOptions = { training, chunkRows: c.chunkRows, releaseInputAfterBackward: true };
    const r1 = transLayer(h0, this.layer1.weights(), c.nystrom, { ...layerOptions, seed: (seed ^ 0x5bd1e995) >>> 0 });
    const h2 = this.posLayer.forward(r1.out, side, true);
    const allRows = options.returnTokens === true || !training;
    const r2 = transLayer(h2, this.layer2.weights(), c.nystrom, {
      ...layerOptions, seed: (seed ^ 0x27d4eb2d) >>> 0, outputRows: allRows ? 'all' : 'first', attentionRow: wantAttention ? 0 : undefined,
    });
    const clsRow = r2.out.shape[0] === 1 ? r2.out : r2.out.slice(0, 0, 1);
    const embedding = layerNorm(clsRow, this.norm.weight, this.norm.bias, this.norm.eps); // [1, 512]
    const logits = linear(embedding, this.classifier.weight, this.classifier.bias);
    let attention = new Float32Array(0);
    if (r2.attention) {
      // Rows 1..s² of the layer are the grid; grid cell t ≥ N repeats patch t − N.
      attention = new Float32Array(n);
      const add = side * side - n;
      for (let t = 0; t < n; t++) attention[t] = r2.attention[1 + t] + (t < add ? r2.attention[1 + n + t] : 0);
    }
    let tokens: Tensor | undefined;
    if (options.returnTokens) {
      tokens = layerNorm(r2.out.slice(0, 1, 1 + n), this.norm.weight, this.norm.bias, this.norm.eps);
    }
    return { logits, attention, embedding, tokens };
  }
}
