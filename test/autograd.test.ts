import { describe, expect, it } from 'vitest';
import {
  AdamW, clipGradNorm, keep, LayerNorm, Linear, manualSeed, memoryStats, MultiheadAttention, noGrad, ops, SGD, Tensor, tidy,
} from '../lib/index.js';
import { gradcheck } from './gradcheck.js';
import { expectAllClose, expectCode, randn } from './helpers.js';

describe('autograd through ops (finite differences)', () => {
  it('elementwise unary ops', () => {
    for (const [name, f] of Object.entries({
      relu: ops.relu, gelu: ops.gelu, tanh: ops.tanh, sigmoid: ops.sigmoid, exp: ops.exp, neg: ops.neg, square: ops.square, abs: ops.abs,
    })) {
      gradcheck(([x]) => f(x), [{ shape: [3, 5] }], { label: name, seed: 7 });
    }
    const positive = Float32Array.from(randn(15, 3), (v) => Math.abs(v) + 0.5);
    gradcheck(([x]) => ops.log(x), [{ shape: [3, 5], values: positive }], { label: 'log' });
    gradcheck(([x]) => ops.sqrt(x), [{ shape: [3, 5], values: positive }], { label: 'sqrt' });
  });

  it('broadcasting binary ops reduce gradients to input shapes', () => {
    const away = Float32Array.from(randn(4, 9), (v) => (v >= 0 ? v + 0.5 : v - 0.5));
    gradcheck(([a, b]) => ops.add(a, b), [{ shape: [2, 3, 4] }, { shape: [4] }], { label: 'add' });
    gradcheck(([a, b]) => ops.sub(a, b), [{ shape: [2, 1, 4] }, { shape: [3, 1] }], { label: 'sub' });
    gradcheck(([a, b]) => ops.mul(a, b), [{ shape: [2, 3, 4] }, { shape: [1, 3, 1] }], { label: 'mul' });
    gradcheck(([a, b]) => ops.div(a, b), [{ shape: [3, 4] }, { shape: [4], values: away }], { label: 'div' });
    gradcheck(([a, b]) => ops.maximum(a, b), [{ shape: [3, 4] }, { shape: [3, 4] }], { label: 'maximum' });
  });

  it('matmul with batch broadcasting and transposed views', () => {
    gradcheck(([a, b]) => ops.matmul(a, b), [{ shape: [3, 5] }, { shape: [5, 4] }], { label: 'matmul 2d' });
    gradcheck(([a, b]) => ops.matmul(a, b), [{ shape: [2, 3, 5] }, { shape: [5, 4] }], { label: 'matmul batch×2d' });
    gradcheck(([a, b]) => ops.matmul(a.transpose(-1, -2), b), [{ shape: [2, 5, 3] }, { shape: [2, 5, 4] }], { label: 'matmul aᵀ' });
    gradcheck(([a, b]) => ops.matmul(a, b), [{ shape: [5] }, { shape: [5, 2] }], { label: 'matmul vector' });
  });

  it('linear (with and without bias, with activation)', () => {
    gradcheck(([x, w, b]) => ops.linear(x, w, b), [{ shape: [2, 3, 6] }, { shape: [4, 6] }, { shape: [4] }], { label: 'linear' });
    gradcheck(([x, w]) => ops.linear(x, w, null, 'gelu'), [{ shape: [5, 6] }, { shape: [4, 6] }], { label: 'linear gelu' });
  });

  it('reductions', () => {
    gradcheck(([x]) => ops.sum(x, 1), [{ shape: [3, 4, 2] }], { label: 'sum dim' });
    gradcheck(([x]) => ops.mean(x, [0, 2], true), [{ shape: [3, 4, 2] }], { label: 'mean dims' });
    gradcheck(([x]) => ops.max(x, 1).values, [{ shape: [3, 4, 2] }], { label: 'max' });
  });

  it('softmax, log-softmax, cross-entropy, layer norm', () => {
    gradcheck(([x]) => ops.softmax(x, -1), [{ shape: [3, 5] }], { label: 'softmax' });
    gradcheck(([x]) => ops.logSoftmax(x, 0), [{ shape: [3, 5] }], { label: 'logSoftmax dim 0' });
    gradcheck(([x]) => ops.crossEntropy(x, [1, 0, 4]), [{ shape: [3, 5] }], { label: 'crossEntropy' });
    gradcheck(([x]) => ops.crossEntropy(x, [1, -100, 4], { reduction: 'sum' }), [{ shape: [3, 5] }], { label: 'crossEntropy ignore' });
    gradcheck(([x, w, b]) => ops.layerNorm(x, w, b, 1e-5), [{ shape: [4, 7] }, { shape: [7] }, { shape: [7] }], { label: 'layerNorm' });
  });

  it('views, concat, stack, index select', () => {
    gradcheck(([x]) => x.permute([2, 0, 1]).contiguous(), [{ shape: [2, 3, 4] }], { label: 'permute' });
    gradcheck(([x]) => x.slice(1, 1, 3), [{ shape: [2, 4, 3] }], { label: 'slice' });
    gradcheck(([x]) => x.expand([3, 2, 4]), [{ shape: [2, 1] }], { label: 'expand' });
    gradcheck(([a, b]) => ops.concat([a, b], 1), [{ shape: [2, 3] }, { shape: [2, 2] }], { label: 'concat' });
    gradcheck(([a, b]) => ops.stack([a, b], 0), [{ shape: [2, 3] }, { shape: [2, 3] }], { label: 'stack' });
    gradcheck(([x]) => ops.indexSelect(x, 0, [2, 0, 2]), [{ shape: [3, 4] }], { label: 'indexSelect' });
  });

  it('attention through fused qkv views', () => {
    gradcheck(([qkv]) => {
      const heads = qkv.reshape([1, 5, 3, 2, 4]).permute([2, 0, 3, 1, 4]);
      const q = heads.slice(0, 0, 1).squeeze(0);
      const k = heads.slice(0, 1, 2).squeeze(0);
      const v = heads.slice(0, 2, 3).squeeze(0);
      return ops.attention(q, k, v);
    }, [{ shape: [1, 5, 24] }], { label: 'attention' });
    const mask = Uint8Array.from([1, 0, 1, 1, 0, 1, 1, 1]);
    gradcheck(([q, k, v]) => ops.attention(q, k, v, { keyMask: mask }), [{ shape: [2, 1, 3, 4] }, { shape: [2, 1, 4, 4] }, { shape: [2, 1, 4, 4] }], { label: 'attention masked' });
  });

  it('a tensor used twice accumulates both gradients', () => {
    tidy(() => {
      const x = Tensor.fromArray([1, 2, 3]).requireGrad();
      const y = ops.sum(ops.mul(x, x)); // d/dx = 2x
      y.backward();
      expectAllClose(x.grad!.toFloat32Array(), [2, 4, 6]);
      x.zeroGrad();
    });
  });

  it('backward twice through the same graph is an error', () => {
    tidy(() => {
      const x = Tensor.fromArray([1, 2]).requireGrad();
      const y = ops.sum(ops.square(x));
      y.backward();
      expectCode(() => y.backward(), 'ERR_AUTOGRAD');
      x.zeroGrad();
    });
  });

  it('noGrad records nothing', () => {
    tidy(() => {
      const x = Tensor.fromArray([1, 2]).requireGrad();
      const y = noGrad(() => ops.square(x));
      expect(y.requiresGrad).toBe(false);
      expect(y.gradFn).toBeNull();
    });
  });
});

describe('training', () => {
  it('a 2-layer MLP learns XOR', () => {
    manualSeed(3);
    const l1 = new Linear(2, 8);
    const l2 = new Linear(8, 2);
    const params = [...l1.parameters(), ...l2.parameters()];
    const opt = new AdamW(params, { lr: 0.05, weightDecay: 0 });
    const x = keep(Tensor.fromArray([0, 0, 0, 1, 1, 0, 1, 1], [4, 2]));
    const y = [0, 1, 1, 0];
    let loss = Infinity;
    for (let step = 0; step < 300; step++) {
      loss = tidy(() => {
        const l = ops.crossEntropy(l2.forward(l1.forward(x, 'relu')), y);
        opt.zeroGrad();
        l.backward();
        opt.step();
        return l.item();
      });
    }
    expect(loss).toBeLessThan(0.05);
    const predicted = tidy(() => noGrad(() => {
      const logits = l2.forward(l1.forward(x, 'relu')).toFloat32Array();
      return [0, 1, 2, 3].map((i) => (logits[2 * i + 1] > logits[2 * i] ? 1 : 0));
    }));
    expect(predicted).toEqual(y);
    x.dispose();
    l1.dispose();
    l2.dispose();
    opt.dispose();
  });

  it("a small transformer classifier's loss falls, and native memory returns to baseline after 100 steps", () => {
    manualSeed(11);
    const before = memoryStats().bytesInUse;
    const dim = 16;
    const embed = new Linear(4, dim);
    const norm1 = new LayerNorm(dim);
    const attn = new MultiheadAttention(dim, 2);
    const norm2 = new LayerNorm(dim);
    const head = new Linear(dim, 3);
    const modules = [embed, norm1, attn, norm2, head];
    const params = modules.flatMap((m) => m.parameters());
    const opt = new AdamW(params, { lr: 3e-3 });
    // Class = which of the first 3 features has the largest mean over the sequence.
    const B = 8, N = 6;
    const data = randn(B * N * 4, 5);
    const labels = Array.from({ length: B }, (_, b) => {
      const means = [0, 1, 2].map((f) => { let s = 0; for (let n = 0; n < N; n++) s += data[(b * N + n) * 4 + f]; return s; });
      return means.indexOf(Math.max(...means));
    });
    const x = keep(Tensor.fromArray(data, [B, N, 4]));
    const afterSetup = memoryStats().bytesInUse;
    const losses: number[] = [];
    for (let step = 0; step < 100; step++) {
      losses.push(tidy(() => {
        const h = embed.forward(x);
        const a = ops.add(h, attn.forward(norm1.forward(h)));
        const pooled = ops.mean(norm2.forward(a), 1);
        const loss = ops.crossEntropy(head.forward(pooled), labels);
        opt.zeroGrad();
        loss.backward();
        clipGradNorm(params, 1.0);
        opt.step();
        return loss.item();
      }));
    }
    const first = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
    const last = losses.slice(-5).reduce((a, b) => a + b) / 5;
    expect(last).toBeLessThan(first * 0.5);
    // After the loop: parameters, their grads and the optimizer slots are what remains.
    const slotsAndGrads = params.reduce((s, p) => s + p.size * 4 * 3, 0);
    expect(memoryStats().bytesInUse).toBe(afterSetup + slotsAndGrads);
    opt.zeroGrad();
    opt.dispose();
    for (const m of modules) m.dispose();
    x.dispose();
    expect(memoryStats().bytesInUse).toBe(before);
  });

  it('SGD with momentum and AdamW state round-trip exactly', () => {
    manualSeed(2);
    const run = (resumeAt: number | null): Float32Array => {
      manualSeed(2);
      const layer = new Linear(3, 2);
      let opt = new SGD(layer.parameters(), { lr: 0.1, momentum: 0.9 });
      const x = keep(Tensor.fromArray(randn(12, 1), [4, 3]));
      for (let step = 0; step < 6; step++) {
        if (step === resumeAt) {
          const state = opt.stateDict();
          opt.dispose();
          opt = new SGD(layer.parameters(), { lr: 0.1, momentum: 0.9 });
          opt.loadStateDict(state);
        }
        tidy(() => {
          const loss = ops.sum(ops.square(layer.forward(x)));
          opt.zeroGrad();
          loss.backward();
          opt.step();
        });
      }
      const w = layer.weight.toFloat32Array();
      opt.zeroGrad();
      opt.dispose();
      layer.dispose();
      x.dispose();
      return w;
    };
    expect(run(3)).toEqual(run(null));
  });
});
