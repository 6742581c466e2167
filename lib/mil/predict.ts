/**
 * Applies a trained MIL head to bags of features: our best.safetensors or a PyTorch
 * state dict of the mSTAR repository's DAttention / TransMIL (names as in
 * lib/mil/abmil.ts and lib/mil/transmil.ts). Bags are `.pt`, `.h5` or `.safetensors`
 * feature files (tensor `features`, or the only tensor). Output: a safetensors file with
 * `logits` [B, C] in argument order and `attention.<i>` [N_i] per bag (ABMIL: the softmax
 * weights; TransMIL: layer 2's [CLS] attention over the patches).
 */
import { MstarError } from '../errors.js';
import { loadStateDictFile } from '../io/checkpoint.js';
import { releaseFileBytes } from '../io/files.js';
import { fromFloat32, toFloat32, type HostTensor } from '../io/host-tensor.js';
import { writeSafetensors } from '../io/safetensors.js';
import { withoutInit } from '../random.js';
import { noGrad, Tensor, tidy } from '../tensor.js';
import { readFeatureBag } from './data.js';
import { buildMilModel, type MilModel, type MilModelKind } from './train.js';

export interface PredictMilOptions {
  /** 'abmil' (gated is detected from the weights), 'abmil-gated' or 'transmil'. */
  model: MilModelKind;
  weights: string;
  /** Checked against the weights when given. */
  nClasses?: number;
  /** Feature files, one bag each. */
  bags: string[];
  /** Output .safetensors path (omit to only return the results). */
  out?: string;
  chunkRows?: number;
}

export interface PredictMilResult {
  /** [B, C] row-major. */
  logits: Float32Array;
  nClasses: number;
  attention: Float32Array[];
}

/** Builds the head the weights describe and loads them (strict). */
export function loadMilModel(kind: MilModelKind, weights: string, nClasses?: number, chunkRows?: number): MilModel {
  const sd = loadStateDictFile(weights);
  const need = (name: string): HostTensor => {
    const t = sd.get(name);
    if (t === undefined) throw new MstarError('ERR_STATE_DICT', `${weights}: no ${name} (is this a ${kind} state dict?)`);
    return t;
  };
  let model: MilModel;
  let classes: number;
  if (kind === 'transmil') {
    classes = need('classifier.weight').shape[0];
    model = withoutInit(() => buildMilModel('transmil', need('_fc1.0.weight').shape[1], classes, { chunkRows }));
  } else {
    classes = need('classifier.0.weight').shape[0];
    const gated = kind === 'abmil-gated' || sd.has('attention_a.0.weight');
    model = withoutInit(() => buildMilModel(gated ? 'abmil-gated' : 'abmil', need('feature.0.weight').shape[1], classes));
  }
  if (nClasses !== undefined && nClasses !== classes) {
    model.dispose();
    throw new MstarError('ERR_STATE_DICT', `${weights}: the classifier has ${classes} outputs, --n-classes says ${nClasses}`);
  }
  model.loadStateDict(new Map([...sd].map(([n, t]) => [n, { shape: t.shape, values: toFloat32(t) }])));
  releaseFileBytes(sd.values());
  model.eval();
  return model;
}

export async function predictMil(options: PredictMilOptions): Promise<PredictMilResult> {
  if (options.bags.length === 0) throw new MstarError('ERR_ARGUMENT', 'predict-mil: no bag given');
  const model = loadMilModel(options.model, options.weights, options.nClasses, options.chunkRows);
  try {
    const rows: Float32Array[] = [];
    const attention: Float32Array[] = [];
    for (const path of options.bags) {
      const bag = await readFeatureBag(path);
      if (bag.dim !== model.config.inFeatures) throw new MstarError('ERR_SHAPE', `${path}: features are ${bag.dim}-d, the model takes ${model.config.inFeatures}`);
      if (bag.n === 0) throw new MstarError('ERR_SHAPE', `${path}: the bag is empty`);
      tidy(() => noGrad(() => {
        const out = model.forward(Tensor.fromArray(bag.data, [bag.n, bag.dim]));
        rows.push(out.logits.toFloat32Array());
        attention.push(out.attention);
      }));
    }
    const nClasses = rows[0].length;
    const logits = new Float32Array(rows.length * nClasses);
    rows.forEach((r, i) => logits.set(r, i * nClasses));
    if (options.out) {
      const tensors: Record<string, HostTensor> = { logits: fromFloat32(logits, [rows.length, nClasses]) };
      attention.forEach((a, i) => (tensors[`attention.${i}`] = fromFloat32(a, [a.length])));
      writeSafetensors(options.out, tensors, { bags: JSON.stringify(options.bags), model: options.model, weights: options.weights });
    }
    return { logits, nClasses, attention };
  } finally {
    model.dispose();
  }
}
