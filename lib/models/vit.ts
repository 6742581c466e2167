/**
 * The mSTAR patch encoder: a timm VisionTransformer (`vit_large_patch16_224` with
 * init_values 1e-5, num_classes 0, dynamic_img_size True), with timm's parameter
 * names so `mSTAR.pth` loads unchanged.
 *
 *   x [B, 3, H, W]
 *   → patch_embed (16×16 stride-16 conv, done as one GEMM over non-overlapping patches) [B, gh·gw, D]
 *   → prepend cls_token, add pos_embed (resampled bicubic-antialiased when gh×gw ≠ the trained grid)
 *   → depth × Block: x += ls1 ⊙ attn(norm1(x)); x += ls2 ⊙ mlp(norm2(x))   (pre-norm, LayerNorm eps 1e-6)
 *   → norm → token 0 ([CLS]) = features [B, D]
 *
 * Reference: timm `models/vision_transformer.py` (VisionTransformer, Block, Attention, LayerScale)
 * and `layers/patch_embed.py` (dynamic_img_size → NHWC output, strict size off).
 */
import { z } from 'zod';
import { MstarError, rangeError } from '../errors.js';
import { Module } from '../nn/module.js';
import { LayerNorm, Linear, uniformTensor } from '../nn/layers.js';
import { add, mul } from '../ops/elementwise.js';
import { linear } from '../ops/linalg.js';
import { attention } from '../ops/nn.js';
import { concat } from '../ops/shape.js';
import { isGradEnabled, keep, shapeString, Tensor, tidy } from '../tensor.js';
import { resampleAbsPosEmbed } from './pos-embed.js';

/** ViT hyper-parameters (timm `model_args` names in snake_case map onto these). */
export interface VitConfig {
  imgSize: number;
  patchSize: number;
  inChans: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  qkvBias: boolean;
  /** LayerScale init value; null disables LayerScale (timm init_values=None). */
  initValues: number | null;
  /** Resample the position grid for inputs of other sizes. */
  dynamicImgSize: boolean;
  /** LayerNorm eps (timm uses 1e-6 for ViTs). */
  normEps: number;
}

/** mSTAR's released encoder: timm vit_large_patch16_224, init_values 1e-5, dynamic_img_size. */
export const MSTAR_VIT_L16: VitConfig = {
  imgSize: 224,
  patchSize: 16,
  inChans: 3,
  embedDim: 1024,
  depth: 24,
  numHeads: 16,
  mlpRatio: 4,
  qkvBias: true,
  initValues: 1e-5,
  dynamicImgSize: true,
  normEps: 1e-6,
};

const positiveInt = z.number().int().positive();

/** timm `model_args` as found in config.json; unknown keys that change the architecture are refused. */
const timmModelArgs = z
  .object({
    img_size: z.union([positiveInt, z.tuple([positiveInt, positiveInt])]).optional(),
    patch_size: positiveInt.optional(),
    in_chans: positiveInt.optional(),
    embed_dim: positiveInt.optional(),
    depth: positiveInt.optional(),
    num_heads: positiveInt.optional(),
    mlp_ratio: z.number().positive().optional(),
    qkv_bias: z.boolean().optional(),
    init_values: z.number().positive().nullable().optional(),
    dynamic_img_size: z.boolean().optional(),
    num_classes: z.literal(0).optional(),
    global_pool: z.literal('token').optional(),
    class_token: z.literal(true).optional(),
    no_embed_class: z.literal(false).optional(),
    reg_tokens: z.literal(0).optional(),
    pre_norm: z.literal(false).optional(),
    fc_norm: z.union([z.literal(false), z.null()]).optional(),
    qk_norm: z.literal(false).optional(),
    drop_rate: z.number().optional(),
    drop_path_rate: z.number().optional(),
    attn_drop_rate: z.number().optional(),
    proj_drop_rate: z.number().optional(),
    pos_drop_rate: z.number().optional(),
  })
  .strict();

/**
 * Reads a timm-style config (`{ model_args: {...} }`, or the model_args object itself)
 * over mSTAR's defaults. Unsupported architecture options give ERR_FORMAT naming them.
 */
export function vitConfigFromTimm(json: unknown): VitConfig {
  const source = json !== null && typeof json === 'object' && 'model_args' in json ? (json as { model_args: unknown }).model_args : json;
  const parsed = timmModelArgs.safeParse(source ?? {});
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new MstarError('ERR_FORMAT', `ViT config: unsupported or invalid model_args (${issues})`);
  }
  const a = parsed.data;
  const imgSize = Array.isArray(a.img_size) ? a.img_size : [a.img_size ?? MSTAR_VIT_L16.imgSize, a.img_size ?? MSTAR_VIT_L16.imgSize];
  if (imgSize[0] !== imgSize[1]) throw new MstarError('ERR_FORMAT', 'ViT config: non-square img_size is not supported');
  const config: VitConfig = {
    imgSize: imgSize[0],
    patchSize: a.patch_size ?? MSTAR_VIT_L16.patchSize,
    inChans: a.in_chans ?? MSTAR_VIT_L16.inChans,
    embedDim: a.embed_dim ?? MSTAR_VIT_L16.embedDim,
    depth: a.depth ?? MSTAR_VIT_L16.depth,
    numHeads: a.num_heads ?? MSTAR_VIT_L16.numHeads,
    mlpRatio: a.mlp_ratio ?? MSTAR_VIT_L16.mlpRatio,
    qkvBias: a.qkv_bias ?? true,
    initValues: a.init_values === undefined ? MSTAR_VIT_L16.initValues : a.init_values,
    dynamicImgSize: a.dynamic_img_size ?? MSTAR_VIT_L16.dynamicImgSize,
    normEps: 1e-6,
  };
  checkVitConfig(config);
  return config;
}

function checkVitConfig(c: VitConfig): void {
  if (c.embedDim % c.numHeads !== 0) throw new MstarError('ERR_FORMAT', `ViT config: embed_dim ${c.embedDim} is not divisible by num_heads ${c.numHeads}`);
  if (c.imgSize % c.patchSize !== 0) throw new MstarError('ERR_FORMAT', `ViT config: img_size ${c.imgSize} is not a multiple of patch_size ${c.patchSize}`);
  const hidden = c.embedDim * c.mlpRatio;
  if (!Number.isInteger(hidden)) throw new MstarError('ERR_FORMAT', `ViT config: embed_dim·mlp_ratio = ${hidden} is not an integer`);
}

/** timm Mlp: fc1 → GELU → fc2. */
class Mlp extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(dim: number, hidden: number) {
    super();
    this.fc1 = this.registerModule('fc1', new Linear(dim, hidden));
    this.fc2 = this.registerModule('fc2', new Linear(hidden, dim));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.fc1.forward(x, 'gelu'));
  }
}

/** timm Attention: fused qkv projection, per-head SDPA (tiled kernel), output projection. */
class Attention extends Module {
  readonly qkv: Linear;
  readonly proj: Linear;
  constructor(readonly dim: number, readonly numHeads: number, qkvBias: boolean) {
    super();
    this.qkv = this.registerModule('qkv', new Linear(dim, 3 * dim, { bias: qkvBias }));
    this.proj = this.registerModule('proj', new Linear(dim, dim));
  }
  /** x [B, N, D] → [B, N, D] */
  forward(x: Tensor): Tensor {
    const [B, N, D] = x.shape;
    const H = this.numHeads;
    // [B, N, 3, H, Dh] viewed as three [B, H, N, Dh] tensors, read in place by the kernel.
    const heads = this.qkv.forward(x).reshape([B, N, 3, H, D / H]).permute([2, 0, 3, 1, 4]);
    const q = heads.slice(0, 0, 1).squeeze(0);
    const k = heads.slice(0, 1, 2).squeeze(0);
    const v = heads.slice(0, 2, 3).squeeze(0);
    const out = attention(q, k, v); // view of [B, N, H, Dh]
    return this.proj.forward(out.transpose(1, 2).reshape([B, N, D]));
  }
}

/** timm LayerScale: x ⊙ gamma. */
class LayerScale extends Module {
  readonly gamma: Tensor;
  constructor(dim: number, init: number) {
    super();
    this.gamma = this.registerParameter('gamma', Tensor.full([dim], init));
  }
  forward(x: Tensor): Tensor {
    return mul(x, this.gamma);
  }
}

/** timm Block (pre-norm). */
class Block extends Module {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  readonly ls1: LayerScale | null;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  readonly ls2: LayerScale | null;
  constructor(c: VitConfig) {
    super();
    this.norm1 = this.registerModule('norm1', new LayerNorm(c.embedDim, c.normEps));
    this.attn = this.registerModule('attn', new Attention(c.embedDim, c.numHeads, c.qkvBias));
    this.ls1 = c.initValues === null ? null : this.registerModule('ls1', new LayerScale(c.embedDim, c.initValues));
    this.norm2 = this.registerModule('norm2', new LayerNorm(c.embedDim, c.normEps));
    this.mlp = this.registerModule('mlp', new Mlp(c.embedDim, c.embedDim * c.mlpRatio));
    this.ls2 = c.initValues === null ? null : this.registerModule('ls2', new LayerScale(c.embedDim, c.initValues));
  }
  forward(x: Tensor): Tensor {
    const a = this.attn.forward(this.norm1.forward(x));
    const h = add(x, this.ls1 ? this.ls1.forward(a) : a);
    const m = this.mlp.forward(this.norm2.forward(h));
    return add(h, this.ls2 ? this.ls2.forward(m) : m);
  }
}

/** What a forward pass returns. */
export interface VitOutput {
  /** [B, D]: the [CLS] token after the final norm (timm's forward with num_classes 0). */
  features: Tensor;
  /** [B, 1 + gh·gw, D] after the final norm, when requested. */
  tokens?: Tensor;
  /** [B, 1 + gh·gw, D] output of block `blockIndex` (before the final norm), when requested. */
  blockTokens?: Tensor;
}

export interface VitForwardOptions {
  returnTokens?: boolean;
  /** Also return the tokens after this block (0-based; negative counts from the end). */
  blockIndex?: number;
}

/** timm PatchEmbed as a module with timm's names (proj.weight [D, C, p, p], proj.bias [D]). */
class PatchEmbed extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(readonly patchSize: number, readonly inChans: number, readonly embedDim: number) {
    super();
    const proj = this.registerModule('proj', new ConvWeights(embedDim, inChans, patchSize));
    this.weight = proj.weight;
    this.bias = proj.bias;
  }
  /** x [B, C, H, W] → [B, gh, gw, D] (H, W multiples of the patch size). */
  forward(x: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const p = this.patchSize;
    const gh = H / p;
    const gw = W / p;
    // Non-overlapping patches: the conv's im2col is a permutation, then one GEMM.
    const patches = x.reshape([B, C, gh, p, gw, p]).permute([0, 2, 4, 1, 3, 5]).reshape([B * gh * gw, C * p * p]);
    const w = this.weight.reshape([this.embedDim, C * p * p]);
    return linear(patches, w, this.bias).reshape([B, gh, gw, this.embedDim]);
  }
}

/** A conv's weight [out, in, k, k] and bias [out] under timm's `proj` name; torch.nn.Conv2d init. */
class ConvWeights extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(out: number, inChans: number, k: number) {
    super();
    const bound = 1 / Math.sqrt(inChans * k * k);
    this.weight = this.registerParameter('weight', uniformTensor([out, inChans, k, k], bound));
    this.bias = this.registerParameter('bias', uniformTensor([out], bound));
  }
}

export class VisionTransformer extends Module {
  readonly config: VitConfig;
  readonly clsToken: Tensor;
  readonly posEmbed: Tensor;
  readonly patchEmbed: PatchEmbed;
  readonly blocks: Block[];
  readonly norm: LayerNorm;
  /** The trained position grid (img_size / patch_size). */
  readonly gridSize: number;
  private readonly posCache = new Map<string, Tensor>();

  constructor(config: VitConfig = MSTAR_VIT_L16) {
    super();
    checkVitConfig(config);
    this.config = config;
    const D = config.embedDim;
    this.gridSize = config.imgSize / config.patchSize;
    this.clsToken = this.registerParameter('cls_token', Tensor.zeros([1, 1, D]));
    this.posEmbed = this.registerParameter('pos_embed', Tensor.zeros([1, 1 + this.gridSize * this.gridSize, D]));
    this.patchEmbed = this.registerModule('patch_embed', new PatchEmbed(config.patchSize, config.inChans, D));
    this.blocks = [];
    for (let i = 0; i < config.depth; i++) this.blocks.push(this.registerModule(`blocks.${i}`, new Block(config)));
    this.norm = this.registerModule('norm', new LayerNorm(D, config.normEps));
  }

  override loadStateDict(...args: Parameters<Module['loadStateDict']>): ReturnType<Module['loadStateDict']> {
    this.clearPosCache();
    return super.loadStateDict(...args);
  }

  private clearPosCache(): void {
    for (const t of this.posCache.values()) t.dispose();
    this.posCache.clear();
  }

  override dispose(): void {
    this.clearPosCache();
    super.dispose();
  }

  /** pos_embed for a gh×gw grid: [1, 1 + gh·gw, D] (resampled like timm, cached in inference). */
  positionEmbedding(gh: number, gw: number): Tensor {
    const g = this.gridSize;
    if (gh === g && gw === g) return this.posEmbed;
    if (!this.config.dynamicImgSize) {
      throw rangeError('ERR_SHAPE', `ViT: input grid ${gh}×${gw} ≠ trained grid ${g}×${g} and dynamic_img_size is off`);
    }
    if (this.posEmbed.requiresGrad && this.training) {
      throw new MstarError('ERR_UNSUPPORTED', 'ViT: training at a resampled position grid is not supported (the resampling has no backward yet)');
    }
    const key = `${gh}x${gw}`;
    let cached = this.posCache.get(key);
    if (cached === undefined) {
      const D = this.config.embedDim;
      const table = resampleAbsPosEmbed(this.posEmbed.toFloat32Array(), [gh, gw], [g, g], D, 1);
      cached = keep(Tensor.fromArray(table, [1, 1 + gh * gw, D])); // owned by the cache, not the caller's scope
      this.posCache.set(key, cached);
    }
    return cached;
  }

  /**
   * x [B, 3, H, W] (H, W multiples of the patch size) → features [B, D], and optionally tokens.
   */
  forward(x: Tensor, { returnTokens = false, blockIndex }: VitForwardOptions = {}): VitOutput {
    const c = this.config;
    if (x.ndim !== 4 || x.shape[1] !== c.inChans) throw rangeError('ERR_SHAPE', `ViT: input must be [B, ${c.inChans}, H, W], got ${shapeString(x.shape)}`);
    const [B, , H, W] = x.shape;
    if (H % c.patchSize !== 0 || W % c.patchSize !== 0 || H === 0 || W === 0) {
      throw rangeError('ERR_SHAPE', `ViT: input ${H}×${W} is not a (non-empty) multiple of the patch size ${c.patchSize}`);
    }
    let block = blockIndex;
    if (block !== undefined) {
      if (!Number.isInteger(block) || block < -c.depth || block >= c.depth) throw rangeError('ERR_ARGUMENT', `blockIndex ${block} is out of range for depth ${c.depth}`);
      if (block < 0) block += c.depth;
    }
    const gh = H / c.patchSize;
    const gw = W / c.patchSize;
    const D = c.embedDim;
    const patches = this.patchEmbed.forward(x).reshape([B, gh * gw, D]);
    const cls = this.clsToken.expand([B, 1, D]);
    let h = add(concat([cls, patches], 1), this.positionEmbedding(gh, gw));
    let blockTokens: Tensor | undefined;
    const inference = !isGradEnabled();
    this.blocks.forEach((b, i) => {
      if (inference) {
        // Without autograd nothing needs a block's intermediates (or its input) once the
        // block is done: free them at once, so the working set stays one block deep and
        // the allocator hands the same memory to every block (ViT-L at batch 16: ~0.3 GB,
        // where keeping every block's intermediates would take ~8 GB, faulted in afresh).
        const input = h;
        h = tidy(() => b.forward(input));
        if (input !== blockTokens) input.dispose();
      } else {
        h = b.forward(h);
      }
      if (i === block) blockTokens = h;
    });
    const tokens = this.norm.forward(h);
    const features = tokens.slice(1, 0, 1).reshape([B, D]);
    const out: VitOutput = { features };
    if (returnTokens) out.tokens = tokens;
    if (blockTokens) out.blockTokens = blockTokens;
    return out;
  }
}
