/**
 * An unfused TransLayer composed from engine ops, step for step as the repository's
 * nystrom-attention code (materialized n×m similarity matrices, (A₁Z)(A₃v) order, the
 * residual conv as 33 shifted copies): the oracle for the fused, chunked lib/mil/nystrom.ts.
 * Memory O(n·m); for tests at small sizes only.
 */
import { ops, Tensor } from '../lib/index.js';
import { moorePenrosePinv, type NystromConfig, type TransLayerWeights } from '../lib/mil/nystrom.js';

export function transLayerReference(x: Tensor, w: TransLayerWeights, cfg: NystromConfig): Tensor {
  return transLayerReferenceParts(x, w, cfg).out;
}

/**
 * The attention row `row` of x pays to every row of x: (A₁·Z·A₃)[p0 + row, p0:] averaged
 * over heads (nystrom-attention's `return_attn` matrix, front padding dropped).
 */
export function transLayerAttentionReference(x: Tensor, w: TransLayerWeights, cfg: NystromConfig, row: number): Float32Array {
  const { attn, p0, n } = transLayerReferenceParts(x, w, cfg);
  const H = cfg.heads;
  const P = p0 + n;
  const a = attn.toFloat32Array(); // [H, P, P]
  const out = new Float32Array(n);
  for (let h = 0; h < H; h++) for (let j = 0; j < n; j++) out[j] += a[(h * P + p0 + row) * P + p0 + j] / H;
  return out;
}

function transLayerReferenceParts(x: Tensor, w: TransLayerWeights, cfg: NystromConfig): { out: Tensor; attn: Tensor; p0: number; n: number } {
  const [n, C] = x.shape;
  const { heads: H, headDim: Dh, landmarks: m, residualKernel: K } = cfg;
  const inner = H * Dh;
  const l = Math.ceil(n / m);
  const P = m * l;
  const p0 = P - n;
  const y = ops.layerNorm(x, w.normWeight, w.normBias, cfg.normEps);
  const yp = p0 > 0 ? ops.concat([Tensor.zeros([p0, C]), y], 0) : y;
  const qkv = ops.linear(yp, w.qkvWeight, null); // [P, 3·inner]
  const head = (part: number): Tensor => qkv.slice(1, part * inner, (part + 1) * inner).reshape([P, H, Dh]).permute([1, 0, 2]); // [H, P, Dh]
  const q = ops.mulScalar(head(0), Dh ** -0.5);
  const k = head(1);
  const v = head(2);
  const landmarks = (t: Tensor): Tensor => ops.mulScalar(ops.sum(t.contiguous().reshape([H, m, l, Dh]), 2), 1 / l);
  const qL = landmarks(q);
  const kL = landmarks(k);
  const a1 = ops.softmax(ops.matmul(q, kL.transpose(1, 2)));
  const a2 = ops.softmax(ops.matmul(qL, kL.transpose(1, 2)));
  const a3 = ops.softmax(ops.matmul(qL, k.transpose(1, 2)));
  const z = moorePenrosePinv(a2, cfg.pinvIterations);
  const a1z = ops.matmul(a1, z);
  let out = ops.matmul(a1z, ops.matmul(a3, v)); // [H, P, Dh]
  const taps = w.resConvWeight.reshape([H, K]);
  const half = Math.floor(K / 2);
  for (let t = 0; t < K; t++) {
    const shift = t - half; // out[i] += w[t]·v[i + shift]
    const parts: Tensor[] = [];
    if (shift < 0) parts.push(Tensor.zeros([H, Math.min(-shift, P), Dh]));
    const from = Math.max(0, shift);
    const to = Math.min(P, P + shift);
    if (to > from) parts.push(v.slice(1, from, to));
    if (shift > 0) parts.push(Tensor.zeros([H, Math.min(shift, P), Dh]));
    const shifted = parts.length === 1 ? parts[0] : ops.concat(parts, 1);
    out = ops.add(out, ops.mul(shifted.slice(1, 0, P), taps.slice(1, t, t + 1).reshape([H, 1, 1])));
  }
  const merged = out.permute([1, 0, 2]).reshape([P, inner]);
  const o = ops.linear(merged, w.outWeight, w.outBias);
  return { out: ops.add(x, o.slice(0, p0, P)), attn: ops.matmul(a1z, a3), p0, n };
}
