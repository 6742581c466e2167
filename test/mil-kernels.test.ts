/**
 * The fused MIL kernels against plain references: bag attention pooling (ragged, masked,
 * K heads) vs the engine-op composition and finite differences; the depthwise conv vs a
 * float64 loop (forward, both backwards, row-chunked calls); PPEG and the [CLS] square
 * padding; the fused, chunked Nyström TransLayer vs the unfused engine-op reference at
 * sizes and chunkings the PyTorch fixtures do not cover (forward and every gradient).
 */
import { describe, expect, it } from 'vitest';
import { memoryStats, noGrad, ops, Tensor, tidy } from '../lib/index.js';
import { native } from '../lib/native.js';
import { transLayer, type NystromConfig, type TransLayerWeights } from '../lib/mil/nystrom.js';
import { bagAttentionPool, bagAttentionPoolUnfused, clsSquarePad, gridSide, instanceProjection, paddedBags, ppeg, raggedBags } from '../lib/mil/ops.js';
import { gradcheck } from './gradcheck.js';
import { expectAllClose, randn } from './helpers.js';
import { expectRelativeClose } from './mil-helpers.js';
import { transLayerAttentionReference, transLayerReference } from './mil-reference.js';

describe('bag attention pooling', () => {
  it('ragged bags (sizes 5, 1, 17; K = 1 and 3) match softmax + matmul, forward and backward', () => {
    for (const K of [1, 3]) {
      tidy(() => {
        const sizes = [5, 1, 17];
        const T = 23;
        const L = 19;
        const layout = raggedBags(sizes);
        const s1 = Tensor.fromArray(randn(T * K, 1), [T, K]).requireGrad();
        const h1 = Tensor.fromArray(randn(T * L, 2), [T, L]).requireGrad();
        const s2 = Tensor.fromArray(randn(T * K, 1), [T, K]).requireGrad();
        const h2 = Tensor.fromArray(randn(T * L, 2), [T, L]).requireGrad();
        const fused = bagAttentionPool(s1, h1, layout).pooled;
        const plain = bagAttentionPoolUnfused(s2, h2, layout);
        expectAllClose(fused.toFloat32Array(), plain.toFloat32Array(), { atol: 1e-6, rtol: 1e-5, label: 'pooled' });
        const g = Tensor.fromArray(randn(fused.size, 3), fused.shape);
        fused.backward(g);
        plain.backward(g);
        expectAllClose(s1.grad!.toFloat32Array(), s2.grad!.toFloat32Array(), { atol: 1e-6, rtol: 1e-5, label: 'grad scores' });
        expectAllClose(h1.grad!.toFloat32Array(), h2.grad!.toFloat32Array(), { atol: 1e-6, rtol: 1e-5, label: 'grad h' });
      });
    }
  });

  it('a padded batch with a mask equals the ragged bags; padding gets no attention and no gradient', () => {
    tidy(() => {
      const L = 6;
      const lengths = [4, 2];
      const N = 4;
      const mask = Uint8Array.from([1, 1, 1, 1, 1, 1, 0, 0]);
      const sv = randn(8, 5);
      const hv = randn(8 * L, 6);
      const s = Tensor.fromArray(sv, [8]).requireGrad();
      const h = Tensor.fromArray(hv, [8, L]).requireGrad();
      const r = bagAttentionPool(s, h, paddedBags(2, N, mask));
      const att = r.attention.toFloat32Array();
      expect(att[6]).toBe(0);
      expect(att[7]).toBe(0);
      const keep = [0, 1, 2, 3, 4, 5];
      const s2 = Tensor.fromArray(Float32Array.from(keep, (i) => sv[i]), [6]);
      const h2 = Tensor.fromArray(Float32Array.from(keep.flatMap((i) => Array.from(hv.subarray(i * L, (i + 1) * L)))), [6, L]);
      const r2 = bagAttentionPool(s2, h2, raggedBags(lengths));
      expectAllClose(r.pooled.toFloat32Array(), r2.pooled.toFloat32Array(), { atol: 1e-7, rtol: 1e-6, label: 'masked = ragged' });
      ops.sum(r.pooled).backward();
      const gs = s.grad!.toFloat32Array();
      const gh = h.grad!.toFloat32Array();
      expect([gs[6], gs[7]]).toEqual([0, 0]);
      expect(Array.from(gh.subarray(6 * L))).toEqual(new Array(2 * L).fill(0));
    });
  });

  it('an empty bag pools to zero; a bag of one returns its instance', () => {
    tidy(() => {
      const h = Tensor.fromArray(randn(3 * 4, 7), [3, 4]);
      const s = Tensor.fromArray([0.3, -2, 5], [3]);
      const r = bagAttentionPool(s, h, raggedBags([0, 1, 2]));
      const p = r.pooled.toFloat32Array();
      expect(Array.from(p.subarray(0, 4))).toEqual([0, 0, 0, 0]);
      expectAllClose(p.subarray(4, 8), h.toFloat32Array().subarray(0, 4), { atol: 0, rtol: 0, label: 'bag of one' });
    });
  });

  it('gradients match finite differences', () => {
    const layout = raggedBags([3, 4]);
    gradcheck((inputs) => bagAttentionPool(inputs[0], inputs[1], layout).pooled, [{ shape: [7, 2] }, { shape: [7, 5] }], { label: 'bagAttentionPool' });
  });
});

describe('instance projection (Linear → ReLU|GELU → Dropout)', () => {
  it('ReLU (fused epilogue, one byte saved per output) and GELU match the engine ops, forward and backward', () => {
    for (const act of ['relu', 'gelu'] as const) {
      tidy(() => {
        const xv = randn(9 * 5, 90);
        const wv = randn(7 * 5, 91);
        const bv = randn(7, 92);
        const g = Tensor.fromArray(randn(9 * 7, 93), [9, 7]);
        const mk = (v: Float32Array, shape: number[]): Tensor => Tensor.fromArray(v, shape).requireGrad();
        const [x1, w1, b1, x2, w2, b2] = [mk(xv, [9, 5]), mk(wv, [7, 5]), mk(bv, [7]), mk(xv, [9, 5]), mk(wv, [7, 5]), mk(bv, [7])];
        const y1 = instanceProjection(x1, w1, b1, act, 0.25, false);
        const z = ops.linear(x2, w2, b2);
        const y2 = act === 'relu' ? ops.relu(z) : ops.gelu(z);
        expectAllClose(y1.toFloat32Array(), y2.toFloat32Array(), { atol: 1e-6, rtol: 1e-6, label: `${act} forward` });
        y1.backward(g);
        y2.backward(g);
        for (const [a, b, name] of [[x1, x2, 'x'], [w1, w2, 'weight'], [b1, b2, 'bias']] as const) {
          expectAllClose(a.grad!.toFloat32Array(), b.grad!.toFloat32Array(), { atol: 1e-5, rtol: 1e-5, label: `${act} grad ${name}` });
        }
      });
    }
  });

  it('training dropout: kept entries are scaled by 1/(1 − p), the gradient follows the same mask', () => {
    tidy(() => {
      const x = Tensor.fromArray(randn(40 * 8, 94), [40, 8]).requireGrad();
      const w = Tensor.fromArray(randn(16 * 8, 95), [16, 8]).requireGrad();
      const plain = noGrad(() => instanceProjection(x, w, null, 'relu', 0.25, false)).toFloat32Array();
      const y = instanceProjection(x, w, null, 'relu', 0.25, true, 7);
      const yv = y.toFloat32Array();
      let kept = 0;
      for (let i = 0; i < yv.length; i++) {
        if (yv[i] !== 0) {
          kept++;
          expect(yv[i]).toBeCloseTo(plain[i] / 0.75, 5);
        }
      }
      expect(kept).toBeGreaterThan(0);
      expect(kept).toBeLessThan(plain.filter((v) => v > 0).length);
      ops.sum(y).backward();
      // d Σy / dW = Σ over kept, active outputs of x / (1 − p)
      const gw = w.grad!.toFloat32Array();
      const xv = x.toFloat32Array();
      const ref = new Float64Array(16 * 8);
      for (let r = 0; r < 40; r++) for (let o = 0; o < 16; o++) if (yv[r * 16 + o] > 0) for (let k = 0; k < 8; k++) ref[o * 8 + k] += xv[r * 8 + k] / 0.75;
      expectAllClose(gw, ref, { atol: 1e-4, rtol: 1e-5, label: 'weight gradient under dropout' });
    });
  });
});

/** float64 depthwise conv, channels last, same padding: x [B, H, W, C], w [C, kh, kw]. */
function convRef(x: Float32Array, w: Float32Array, bias: Float32Array | null, B: number, H: number, W: number, C: number, kh: number, kw: number): Float64Array {
  const y = new Float64Array(B * H * W * C);
  for (let b = 0; b < B; b++) for (let r = 0; r < H; r++) for (let c0 = 0; c0 < W; c0++) for (let c = 0; c < C; c++) {
    let s = bias ? bias[c] : 0;
    for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) {
      const rr = r + i - (kh >> 1);
      const cc = c0 + j - (kw >> 1);
      if (rr < 0 || rr >= H || cc < 0 || cc >= W) continue;
      s += w[(c * kh + i) * kw + j] * x[((b * H + rr) * W + cc) * C + c];
    }
    y[((b * H + r) * W + c0) * C + c] = s;
  }
  return y;
}

describe('depthwise conv (dwconv2d)', () => {
  const cases = [
    { B: 2, H: 5, W: 6, C: 3, kh: 3, kw: 5 },
    { B: 1, H: 37, W: 1, C: 8, kh: 33, kw: 1 }, // the Nyström residual conv shape
    { B: 1, H: 4, W: 4, C: 65, kh: 7, kw: 7 }, // PPEG: kernel wider than the grid
  ];
  for (const { B, H, W, C, kh, kw } of cases) {
    it(`[${B}, ${H}, ${W}, ${C}] kernel ${kh}×${kw}: forward, input and weight gradients, row chunks`, () => {
      const x = randn(B * H * W * C, 1);
      const w = randn(C * kh * kw, 2);
      const bias = randn(C, 3);
      const g = randn(B * H * W * C, 4);
      const dims = [B, H, W, C, kh, kw];
      const y = new Float32Array(B * H * W * C);
      native().dwconv2dForward(x, 0, H, C, w, bias, y, 0, H, C, dims, 0, H);
      expectAllClose(y, convRef(x, w, bias, B, H, W, C, kh, kw), { atol: 1e-5, rtol: 1e-5, label: 'forward' });
      // gx = conv with the flipped kernel; gw[c,i,j] = Σ g·x(shifted); gb = Σ g.
      const flipped = new Float32Array(w.length);
      for (let c = 0; c < C; c++) for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) flipped[(c * kh + i) * kw + j] = w[(c * kh + kh - 1 - i) * kw + kw - 1 - j];
      const gx = new Float32Array(x.length);
      native().dwconv2dBackwardInput(g, 0, H, C, w, gx, 0, H, C, dims, 0, H);
      expectAllClose(gx, convRef(g, flipped, null, B, H, W, C, kh, kw), { atol: 1e-5, rtol: 1e-5, label: 'input gradient' });
      const gw = new Float32Array(w.length);
      const gb = new Float32Array(C);
      native().dwconv2dBackwardWeight(x, 0, H, C, g, 0, H, C, gw, gb, dims, 0, H);
      const gwRef = new Float64Array(w.length);
      const gbRef = new Float64Array(C);
      for (let b = 0; b < B; b++) for (let r = 0; r < H; r++) for (let c0 = 0; c0 < W; c0++) for (let c = 0; c < C; c++) {
        const gv = g[((b * H + r) * W + c0) * C + c];
        gbRef[c] += gv;
        for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) {
          const rr = r + i - (kh >> 1);
          const cc = c0 + j - (kw >> 1);
          if (rr >= 0 && rr < H && cc >= 0 && cc < W) gwRef[(c * kh + i) * kw + j] += gv * x[((b * H + rr) * W + cc) * C + c];
        }
      }
      expectAllClose(gw, gwRef, { atol: 1e-4, rtol: 1e-5, label: 'weight gradient' });
      expectAllClose(gb, gbRef, { atol: 1e-4, rtol: 1e-5, label: 'bias gradient' });
      if (B === 1) {
        // Row chunks with buffers holding only the rows each call needs.
        const chunk = 3;
        const ph = kh >> 1;
        const yc = new Float32Array(y.length);
        const gwc = new Float32Array(w.length);
        for (let r0 = 0; r0 < H; r0 += chunk) {
          const r1 = Math.min(H, r0 + chunk);
          const a = Math.max(0, r0 - ph);
          const b = Math.min(H, r1 + ph);
          const part = new Float32Array((r1 - r0) * W * C);
          native().dwconv2dForward(x.subarray(a * W * C, b * W * C), a, b - a, C, w, bias, part, r0, r1 - r0, C, dims, r0, r1);
          yc.set(part, r0 * W * C);
          native().dwconv2dBackwardWeight(x.subarray(a * W * C, b * W * C), a, b - a, C, g.subarray(r0 * W * C, r1 * W * C), r0, r1 - r0, C, gwc, null, dims, r0, r1);
        }
        expectAllClose(yc, y, { atol: 0, rtol: 0, label: 'chunked forward' });
        expectAllClose(gwc, gw, { atol: 1e-4, rtol: 1e-5, label: 'chunked weight gradient' });
      }
    });
  }

  it('rejects buffers that lack rows the call needs', () => {
    const x = new Float32Array(10 * 2);
    const y = new Float32Array(2 * 2);
    expect(() => native().dwconv2dForward(x.subarray(0, 4), 4, 2, 2, new Float32Array(2 * 3), null, y, 4, 2, 2, [1, 10, 1, 2, 3, 1], 4, 6))
      .toThrow(/needs rows/);
  });
});

describe('TransMIL token grid', () => {
  it('clsSquarePad repeats the first instances and sends their gradient back', () => {
    expect([1, 2, 4, 5, 10, 16, 17].map(gridSide)).toEqual([1, 2, 2, 3, 4, 4, 5]);
    gradcheck((inputs) => clsSquarePad(inputs[0], inputs[1]), [{ shape: [6, 3] }, { shape: [3] }], { label: 'clsSquarePad' });
  });

  it('PPEG equals cls + (conv7 + conv5 + conv3 + identity) on the grid, and its gradients match finite differences', () => {
    const C = 3;
    const side = 3;
    const specs = [{ shape: [1 + side * side, C] }, { shape: [C, 1, 7, 7] }, { shape: [C] }, { shape: [C, 1, 5, 5] }, { shape: [C] }, { shape: [C, 1, 3, 3] }, { shape: [C] }];
    const f = (t: Tensor[]): Tensor => ppeg(t[0], side, { w7: t[1], b7: t[2], w5: t[3], b5: t[4], w3: t[5], b3: t[6] });
    tidy(() => noGrad(() => {
      const vals = specs.map((s, i) => randn(s.shape.reduce((a, b) => a * b, 1), 20 + i));
      const out = f(vals.map((v, i) => Tensor.fromArray(v, specs[i].shape))).toFloat32Array();
      const grid = vals[0].subarray(C);
      const expected = new Float64Array(grid.length);
      for (const [wi, bi, k] of [[1, 2, 7], [3, 4, 5], [5, 6, 3]]) {
        const r = convRef(grid, vals[wi], vals[bi], 1, side, side, C, k, k);
        for (let i = 0; i < r.length; i++) expected[i] += r[i];
      }
      for (let i = 0; i < grid.length; i++) expected[i] += grid[i];
      expectAllClose(out.subarray(0, C), vals[0].subarray(0, C), { atol: 0, rtol: 0, label: 'cls passes through' });
      expectAllClose(out.subarray(C), expected, { atol: 1e-5, rtol: 1e-5, label: 'grid' });
    }));
    gradcheck(f, specs, { label: 'ppeg' });
  });
});

function smallWeights(C: number, cfg: NystromConfig, seed: number): TransLayerWeights {
  const inner = cfg.heads * cfg.headDim;
  const t = (shape: number[], s: number, scale: number): Tensor => Tensor.fromArray(randn(shape.reduce((a, b) => a * b, 1), s, scale), shape).requireGrad();
  const normWeight = Tensor.fromArray(randn(C, seed, 0.2).map((v) => 1 + v), [C]).requireGrad();
  return {
    normWeight, normBias: t([C], seed + 1, 0.1), qkvWeight: t([3 * inner, C], seed + 2, 0.5), outWeight: t([C, inner], seed + 3, 0.3),
    outBias: t([C], seed + 4, 0.1), resConvWeight: t([cfg.heads, 1, cfg.residualKernel, 1], seed + 5, 0.2),
  };
}

describe('fused Nyström TransLayer vs the unfused engine-op reference', () => {
  const cfg: NystromConfig = { heads: 2, headDim: 4, landmarks: 8, pinvIterations: 6, residualKernel: 5, normEps: 1e-5, dropout: 0.1 };
  const C = 6;
  for (const [n, chunkRows] of [[37, 4096], [37, 5], [8, 3], [3, 2], [1, 1], [64, 16]] as const) {
    it(`n = ${n} (l = ${Math.ceil(n / 8)}, front padding ${8 * Math.ceil(n / 8) - n}), chunks of ${chunkRows}: output and every gradient`, () => {
      tidy(() => {
        const w = smallWeights(C, cfg, 40);
        const xv = randn(n * C, 41);
        const g = Tensor.fromArray(randn(n * C, 42), [n, C]);
        const names = Object.keys(w) as (keyof TransLayerWeights)[];
        const x1 = Tensor.fromArray(xv, [n, C]).requireGrad();
        const fused = transLayer(x1, w, cfg, { chunkRows }).out;
        fused.backward(g);
        const fusedGrads = names.map((k) => w[k].grad!.toFloat32Array());
        const gx1 = x1.grad!.toFloat32Array();
        names.forEach((k) => w[k].zeroGrad());
        const x2 = Tensor.fromArray(xv, [n, C]).requireGrad();
        const ref = transLayerReference(x2, w, cfg);
        ref.backward(g);
        expectAllClose(fused.toFloat32Array(), ref.toFloat32Array(), { atol: 2e-5, rtol: 1e-4, label: 'output' });
        expectRelativeClose(gx1, x2.grad!.toFloat32Array(), 'grad x');
        names.forEach((k, i) => expectRelativeClose(fusedGrads[i], w[k].grad!.toFloat32Array(), `grad ${k}`, 1e-3, 1e-6));
        names.forEach((k) => w[k].zeroGrad());
      });
    });
  }

  it("outputRows 'first' equals row 0 of the full output, and its gradients equal those of a loss on row 0", () => {
    tidy(() => {
      const n = 21;
      const w = smallWeights(C, cfg, 50);
      const xv = randn(n * C, 51);
      const gRow = randn(C, 52);
      const x1 = Tensor.fromArray(xv, [n, C]).requireGrad();
      const first = transLayer(x1, w, cfg, { outputRows: 'first', chunkRows: 4 }).out;
      first.backward(Tensor.fromArray(gRow, [1, C]));
      const gq1 = w.qkvWeight.grad!.toFloat32Array();
      w.qkvWeight.zeroGrad();
      const x2 = Tensor.fromArray(xv, [n, C]).requireGrad();
      const all = transLayer(x2, w, cfg, { chunkRows: 4 }).out;
      const gAll = new Float32Array(n * C);
      gAll.set(gRow);
      all.backward(Tensor.fromArray(gAll, [n, C]));
      expectAllClose(first.toFloat32Array(), all.toFloat32Array().subarray(0, C), { atol: 0, rtol: 0, label: 'row 0' });
      expectRelativeClose(x1.grad!.toFloat32Array(), x2.grad!.toFloat32Array(), 'grad x');
      expectRelativeClose(gq1, w.qkvWeight.grad!.toFloat32Array(), 'grad qkv');
      Object.values(w).forEach((t) => t.zeroGrad());
    });
  });

  it('attentionRow gives row p0 + row of A₁·Z·A₃ averaged over heads (front padding dropped)', () => {
    tidy(() => noGrad(() => {
      for (const [n, row, chunkRows] of [[13, 0, 4], [30, 5, 7]] as const) {
        const w = smallWeights(C, cfg, 80 + n);
        const x = Tensor.fromArray(randn(n * C, 81), [n, C]);
        const r = transLayer(x, w, cfg, { attentionRow: row, chunkRows });
        expectAllClose(r.attention!, transLayerAttentionReference(x, w, cfg, row), { atol: 1e-5, rtol: 1e-4, label: `attention n=${n}` });
      }
    }));
  });

  it('training-mode dropout is reproducible from its seed and the backward uses the same mask', () => {
    tidy(() => {
      const n = 19;
      const w = smallWeights(C, cfg, 60);
      const xv = randn(n * C, 61);
      const run = (chunkRows: number): Float32Array => {
        const x = Tensor.fromArray(xv, [n, C]).requireGrad();
        const out = transLayer(x, w, cfg, { training: true, seed: 1234, chunkRows }).out;
        ops.sum(out).backward();
        Object.values(w).forEach((t) => t.zeroGrad());
        return Float32Array.from([...out.toFloat32Array(), ...x.grad!.toFloat32Array()]);
      };
      const a = run(7);
      expectAllClose(run(7), a, { atol: 0, rtol: 0, label: 'same seed' });
      const evalOut = noGrad(() => transLayer(Tensor.fromArray(xv, [n, C]), w, cfg).out.toFloat32Array());
      let differs = 0;
      for (let i = 0; i < evalOut.length; i++) if (evalOut[i] !== a[i]) differs++;
      expect(differs).toBeGreaterThan(0);
    });
  });

  it('releases its temporaries: memory returns to the baseline after forward + backward', () => {
    const before = memoryStats().bytesInUse;
    tidy(() => {
      const w = smallWeights(C, cfg, 70);
      const x = Tensor.fromArray(randn(40 * C, 71), [40, C]).requireGrad();
      ops.sum(transLayer(x, w, cfg, { chunkRows: 9 }).out).backward();
      Object.values(w).forEach((t) => t.zeroGrad());
      x.zeroGrad();
      Object.values(w).forEach((t) => t.dispose());
    });
    expect(memoryStats().bytesInUse).toBe(before);
  });
});
