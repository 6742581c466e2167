/**
 * Position-embedding resampling vs PyTorch 2.13 `F.interpolate(bicubic, antialias=True)` through timm's
 * `resample_abs_pos_embed` layout (fixtures from test/fixtures/gen/preprocess.py): square and non-square grids,
 * growing, shrinking, one axis unchanged, 1×1 grids. Bit-exact against both the AVX2/AVX512 kernel (default)
 * and the DEFAULT kernel (`fusedMultiplyAdd: false`); the 1e-6 tolerance check runs first for readable failures.
 */
import { describe, expect, it } from 'vitest';
import { resampleAbsPosEmbed, resamplePosEmbed } from '../lib/models/pos-embed.js';
import { expectAllClose, expectCode, maxAbsDiff, randn } from './helpers.js';
import { readJson, readSafetensors } from './fixtures-util.js';

interface PosCase {
  name: string;
  old: [number, number];
  new: [number, number];
  channels: number;
}
const manifest = readJson<{ cases: PosCase[] }>('preprocess', 'pos_embed_cases.json');
const tensors = readSafetensors('preprocess', 'pos_embed.safetensors');

/**
 * Float64 reference of the antialiased Keys-cubic resampling (Pillow/PyTorch rule, a = −0.5), written
 * independently of the float32 implementation: it bounds how far float32 rounding may drift.
 */
function referenceF64(grid: Float32Array, [gh, gw]: number[], [nh, nw]: number[], c: number): Float64Array {
  const cubic = (x: number): number => {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  };
  const taps = (inSize: number, outSize: number): { lo: number; w: number[] }[] => {
    const scale = inSize / outSize;
    const fs = Math.max(scale, 1);
    const support = 2 * fs;
    return Array.from({ length: outSize }, (_, i) => {
      const center = scale * (i + 0.5);
      const lo = Math.max(Math.trunc(center - support + 0.5), 0);
      const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
      const w: number[] = [];
      for (let j = lo; j < hi; j++) w.push(cubic((j - center + 0.5) / fs));
      const s = w.reduce((p, q) => p + q, 0);
      return { lo, w: w.map((v) => v / s) };
    });
  };
  const tx = gw === nw ? null : taps(gw, nw);
  const ty = gh === nh ? null : taps(gh, nh);
  const out = new Float64Array(nh * nw * c);
  for (let y = 0; y < nh; y++) {
    for (let x = 0; x < nw; x++) {
      for (let k = 0; k < c; k++) {
        let acc = 0;
        const ys = ty ? ty[y].w.map((w, j) => [ty[y].lo + j, w]) : [[y, 1]];
        const xs = tx ? tx[x].w.map((w, j) => [tx[x].lo + j, w]) : [[x, 1]];
        for (const [yy, wy] of ys) for (const [xx, wx] of xs) acc += wy * wx * grid[(yy * gw + xx) * c + k];
        out[(y * nw + x) * c + k] = acc;
      }
    }
  }
  return out;
}

describe('resamplePosEmbed vs torch F.interpolate(bicubic, antialias=True)', () => {
  for (const c of manifest.cases) {
    it(`${c.name} (C=${c.channels}): bit-exact vs the AVX2/AVX512 and DEFAULT kernels`, () => {
      const input = tensors.get(`${c.name}.input`)!.data as Float32Array;
      const want = tensors.get(`${c.name}.output`)!.data as Float32Array;
      const wantDefault = tensors.get(`${c.name}.output_default`)!.data as Float32Array;
      const got = resamplePosEmbed(input, c.old, c.new, c.channels);
      expect(got.length).toBe(c.new[0] * c.new[1] * c.channels);
      expectAllClose(got, want, { atol: 1e-6, rtol: 0, label: c.name });
      expect(maxAbsDiff(got, want), `${c.name}: not bit-exact`).toBe(0);
      const plain = resamplePosEmbed(input, c.old, c.new, c.channels, { fusedMultiplyAdd: false });
      expect(maxAbsDiff(plain, wantDefault), `${c.name}: DEFAULT kernel`).toBe(0);
      // An independent float64 evaluation agrees to float32 rounding.
      expectAllClose(got, referenceF64(input, c.old, c.new, c.channels), { atol: 1e-5, rtol: 0, label: `${c.name} vs f64` });
    });
  }
});

describe('resamplePosEmbed basics', () => {
  it('identity when sizes are equal (a copy)', () => {
    const grid = randn(14 * 14 * 16, 5);
    const out = resamplePosEmbed(grid, [14, 14], [14, 14], 16);
    expect(out).not.toBe(grid);
    expect(maxAbsDiff(out, grid)).toBe(0);
  });

  it('constant grids stay constant (weights normalised), growing and shrinking', () => {
    const grid = new Float32Array(7 * 5 * 3).fill(0.25);
    for (const size of [[16, 9], [2, 3], [7, 1], [1, 5]] as const) {
      const out = resamplePosEmbed(grid, [7, 5], size, 3);
      expectAllClose(out, new Float32Array(out.length).fill(0.25), { atol: 1e-7, rtol: 0 });
    }
  });

  it('resampleAbsPosEmbed keeps prefix tokens and resamples the grid', () => {
    const c = 8;
    const table = randn((1 + 14 * 14) * c, 9);
    const out = resampleAbsPosEmbed(table, [16, 12], [14, 14], c, 1);
    expect(out.length).toBe((1 + 16 * 12) * c);
    expect(maxAbsDiff(out.subarray(0, c), table.subarray(0, c))).toBe(0);
    expect(maxAbsDiff(out.subarray(c), resamplePosEmbed(table.subarray(c), [14, 14], [16, 12], c))).toBe(0);
    expect(maxAbsDiff(resampleAbsPosEmbed(table, [14, 14], [14, 14], c), table)).toBe(0);
  });

  it('validates shapes with codes', () => {
    expectCode(() => resamplePosEmbed(new Float32Array(10), [2, 2], [3, 3], 3), 'ERR_SHAPE');
    expectCode(() => resamplePosEmbed(new Float32Array(12), [2, 2], [0, 3], 3), 'ERR_ARGUMENT');
    expectCode(() => resampleAbsPosEmbed(new Float32Array(12), [3, 3], [2, 2], 3, 1), 'ERR_SHAPE');
  });
});
