/**
 * copyStrided (cpp/ops/copy.cc): strided gather with float32 / float16 / bfloat16
 * conversion, against float64 references at every SIMD level this CPU has: rounding
 * ties to even, NaN, ±Inf, ±0, subnormals, overflow to Inf, every 16-bit pattern;
 * contiguous, transposed (tiled), broadcast (stride 0) and reversed views at odd
 * sizes; thread-count independence; bad input at the boundary.
 */
import { describe, expect, it } from 'vitest';
import { DtypeCode, native } from '../lib/native.js';
import { expectCode, makeRng, randn, simdLevels } from './helpers.js';

const LEVELS = simdLevels();

type Storage = Float32Array | Uint16Array;

// ---- float64 references ----

function roundTiesEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** v rounded to a binary format with `mantissa` fraction bits, minimum normal exponent `emin`, overflow at 2^emaxPlus1. */
function roundToFormat(v: number, mantissa: number, emin: number, emaxPlus1: number): number {
  if (Number.isNaN(v) || v === 0 || !Number.isFinite(v)) return v;
  const a = Math.abs(v);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const q = 2 ** (Math.max(e, emin) - mantissa);
  let r = roundTiesEven(a / q) * q; // a / q is exact: q is a power of two
  if (r >= 2 ** emaxPlus1) r = Infinity;
  return v < 0 ? -r : r;
}
const roundHalf = (v: number) => roundToFormat(v, 10, -14, 16);
const roundBf16 = (v: number) => roundToFormat(v, 7, -126, 128);

function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

const scratchBits = new Uint32Array(1);
const scratchFloat = new Float32Array(scratchBits.buffer);
function bf16ToNumber(b: number): number {
  scratchBits[0] = b << 16;
  return scratchFloat[0];
}

function decode(values: Storage, dtype: DtypeCode): number[] {
  if (dtype === DtypeCode.Float32) return Array.from(values);
  return Array.from(values, dtype === DtypeCode.Float16 ? halfToNumber : bf16ToNumber);
}

function reference(v: number, dtype: DtypeCode): number {
  if (dtype === DtypeCode.Float16) return roundHalf(v);
  if (dtype === DtypeCode.BFloat16) return roundBf16(v);
  return Math.fround(v);
}

/** Exact comparison that also tells −0 from +0 and accepts any NaN for NaN. */
function expectSameValues(actual: number[], expected: number[], label: string): void {
  const bad: string[] = [];
  let count = 0;
  for (let i = 0; i < expected.length; i++) {
    const ok = Number.isNaN(expected[i]) ? Number.isNaN(actual[i]) : Object.is(actual[i], expected[i]);
    if (!ok) {
      count++;
      if (bad.length < 8) bad.push(`  [${i}] got ${actual[i]}, want ${expected[i]}`);
    }
  }
  if (count > 0) expect.fail(`${label}: ${count} of ${expected.length} mismatches\n${bad.join('\n')}`);
}

function storage(dtype: DtypeCode, n: number): Storage {
  return dtype === DtypeCode.Float32 ? new Float32Array(n) : new Uint16Array(n);
}

/** Encodes exactly representable values (outputs of roundHalf / roundBf16) as storage. */
function encode(values: number[], dtype: DtypeCode): Storage {
  const f32 = Float32Array.from(values);
  if (dtype === DtypeCode.Float32) return f32;
  const out = new Uint16Array(values.length);
  native().copyStrided(f32, DtypeCode.Float32, 0, [values.length], [1], out, dtype);
  return out;
}

function copy(src: Storage, srcDtype: DtypeCode, offset: number, shape: number[], strides: number[], dstDtype: DtypeCode) {
  const n = shape.reduce((a, b) => a * b, 1);
  const dst = storage(dstDtype, n);
  if (dstDtype === DtypeCode.Float32) (dst as Float32Array).fill(NaN);
  else dst.fill(0x7e01);
  native().copyStrided(src, srcDtype, offset, shape, strides, dst, dstDtype);
  return dst;
}

/** Reference gather: source values in row-major order of `shape`. */
function gatherRef(src: number[], offset: number, shape: number[], strides: number[]): number[] {
  const n = shape.reduce((a, b) => a * b, 1);
  const out: number[] = [];
  const idx = new Array(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let at = offset;
    for (let d = 0; d < shape.length; d++) at += idx[d] * strides[d];
    out.push(src[at]);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

// Values that exercise every rounding regime of both 16-bit formats.
const SPECIAL = [
  0, -0, 1, -1, Infinity, -Infinity, NaN, 65504, -65504, 65519, 65520, -65520, 65536, 1e5, 3.4028234663852886e38,
  -3.4028234663852886e38, 2 ** -24, 2 ** -25, -(2 ** -25), 1.5 * 2 ** -25, 3 * 2 ** -25, 2 ** -14, 2 ** -14 - 2 ** -25,
  2 ** -14 - 2 ** -24, 6.1e-5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20,
  2 ** -126, 2 ** -133, 1e-40, -1e-45, 2 ** -149, 1.1754942e-38, 3.3895313892515355e38, 3.3961e38, 0.1, 1 / 3,
  -2.5, 1024.5, 2049, 4097,
].map(Math.fround);

const ALL_PATTERNS = new Uint16Array(65536).map((_, i) => i);

/** References for f16 <-> bf16 over every pattern, computed once for all SIMD levels. */
let cross: { halfToBf16: number[]; bf16ToHalf: number[] } | undefined;
function crossReference() {
  cross ??= {
    halfToBf16: Array.from(ALL_PATTERNS, (h) => roundBf16(halfToNumber(h))),
    bf16ToHalf: Array.from(ALL_PATTERNS, (b) => roundHalf(bf16ToNumber(b))),
  };
  return cross;
}

function wideRandom(n: number, seed: number): Float32Array {
  const rng = makeRng(seed);
  const base = randn(n, seed);
  return base.map((v) => v * 2 ** Math.floor(rng() * 60 - 35));
}

describe.each(LEVELS)('copyStrided conversions at simd=%s', (level) => {
  const use = () => native().setSimdLevel(level);

  it.each([DtypeCode.Float16, DtypeCode.BFloat16])('float32 -> dtype %i rounds to nearest even', (dtype) => {
    use();
    const values = Float32Array.from([...SPECIAL, ...wideRandom(4099, 11)]);
    const out = copy(values, DtypeCode.Float32, 0, [values.length], [1], dtype);
    expectSameValues(decode(out, dtype), Array.from(values, (v) => reference(v, dtype)), `f32 -> ${dtype}`);
  });

  it.each([DtypeCode.Float16, DtypeCode.BFloat16])('every 16-bit pattern of dtype %i widens exactly', (dtype) => {
    use();
    const out = copy(ALL_PATTERNS, dtype, 0, [65536], [1], DtypeCode.Float32) as Float32Array;
    expectSameValues(Array.from(out), decode(ALL_PATTERNS, dtype), `${dtype} -> f32`);
  });

  it('float16 <-> bfloat16 rounds once, for every pattern', () => {
    use();
    const toBf = copy(ALL_PATTERNS, DtypeCode.Float16, 0, [65536], [1], DtypeCode.BFloat16);
    expectSameValues(decode(toBf, DtypeCode.BFloat16), crossReference().halfToBf16, 'f16 -> bf16');
    const toHalf = copy(ALL_PATTERNS, DtypeCode.BFloat16, 0, [65536], [1], DtypeCode.Float16);
    expectSameValues(decode(toHalf, DtypeCode.Float16), crossReference().bf16ToHalf, 'bf16 -> f16');
  });

  it('NaN stays NaN with its sign, and identical bits on every SIMD level', () => {
    const values = Float32Array.from([...SPECIAL, ...wideRandom(1000, 5)]);
    const bits = new Uint32Array(values.buffer);
    bits[6] = 0xffc00001; // −NaN with a payload
    const results = LEVELS.map((l) => {
      native().setSimdLevel(l);
      return [DtypeCode.Float16, DtypeCode.BFloat16].map((d) => Array.from(copy(values, DtypeCode.Float32, 0, [values.length], [1], d)));
    });
    use();
    for (const r of results) expect(r).toEqual(results[0]);
    for (const out of results[0]) expect(out[6] & 0x8000).toBe(0x8000);
  });
});

describe('copyStrided layouts', () => {
  const src64 = Array.from(randn(6000, 3));
  const cases: Array<{ name: string; offset: number; shape: number[]; strides: number[] }> = [
    { name: 'empty', offset: 0, shape: [0], strides: [1] },
    { name: 'empty inner', offset: 5, shape: [3, 0], strides: [1, 1] },
    { name: 'scalar (rank 0)', offset: 7, shape: [], strides: [] },
    { name: 'one', offset: 2, shape: [1], strides: [1] },
    { name: 'contiguous 769', offset: 1, shape: [769], strides: [1] },
    { name: 'contiguous 3x65', offset: 0, shape: [3, 65], strides: [65, 1] },
    { name: 'transposed 65x77 (tiled)', offset: 3, shape: [65, 77], strides: [1, 65] },
    { name: 'batched transpose 3x40x33 (tiled)', offset: 0, shape: [3, 40, 33], strides: [1320, 1, 40] },
    { name: 'transposed with reversal', offset: 64 * 70, shape: [65, 70], strides: [-1, -64] },
    { name: 'reversed 769', offset: 768, shape: [769], strides: [-1] },
    { name: 'broadcast row 65x7', offset: 10, shape: [65, 7], strides: [0, 1] },
    { name: 'broadcast column 7x65', offset: 10, shape: [7, 65], strides: [1, 0] },
    { name: 'all broadcast', offset: 4, shape: [3, 5], strides: [0, 0] },
    { name: 'step 3 and size-1 dims', offset: 2, shape: [1, 5, 1, 65], strides: [999, 195, 7, 3] },
    { name: 'permuted 3-d', offset: 0, shape: [5, 3, 7], strides: [1, 35, 5] },
  ];
  const dtypes = [DtypeCode.Float32, DtypeCode.Float16, DtypeCode.BFloat16];

  for (const level of LEVELS) {
    it.each(cases)(`$name at simd=${level}, every dtype pair`, ({ offset, shape, strides }) => {
      native().setSimdLevel(level);
      for (const from of dtypes) {
        // Source values already representable in `from`, so the reference is one rounding.
        const values = src64.map((v) => reference(v, from));
        const src = encode(values, from);
        for (const to of dtypes) {
          const out = copy(src, from, offset, shape, strides, to);
          const want = gatherRef(values, offset, shape, strides).map((v) => reference(v, to));
          expectSameValues(decode(out, to), want, `${from} -> ${to}`);
        }
      }
    });
  }

  it('large copies give the same bits with 1 and 2 threads', () => {
    const threads = native().runtimeInfo().threads;
    const src = randn(300 * 769, 9);
    const run = (t: number, shape: number[], strides: number[], to: DtypeCode) => {
      native().setNumThreads(t);
      return copy(src, DtypeCode.Float32, 0, shape, strides, to);
    };
    try {
      for (const [shape, strides] of [[[300, 769], [769, 1]], [[769, 300], [1, 769]], [[300, 769], [0, 1]]]) {
        for (const to of [DtypeCode.Float32, DtypeCode.Float16]) {
          const one = run(1, shape, strides, to);
          const two = run(2, shape, strides, to);
          expect(Buffer.compare(Buffer.from(one.buffer), Buffer.from(two.buffer)), 'thread counts differ').toBe(0);
          if (to !== DtypeCode.Float32) continue;
          let mismatches = 0; // plain float32 gather reference, typed for speed
          for (let i = 0, n = 0; i < shape[0]; i++) {
            for (let j = 0; j < shape[1]; j++, n++) if (one[n] !== src[i * strides[0] + j * strides[1]]) mismatches++;
          }
          expect(mismatches).toBe(0);
        }
      }
    } finally {
      native().setNumThreads(threads);
    }
  });
});

describe('copyStrided rejects bad input', () => {
  const src = new Float32Array(6);
  const dst = new Float32Array(6);
  const call = (...args: unknown[]) => () => (native().copyStrided as (...a: unknown[]) => void)(...args);

  it('wrong typed-array kinds and dtype codes', () => {
    expectCode(call(new Uint16Array(6), DtypeCode.Float32, 0, [6], [1], dst, DtypeCode.Float32), 'ERR_DTYPE');
    expectCode(call(src, DtypeCode.Float16, 0, [6], [1], dst, DtypeCode.Float32), 'ERR_DTYPE');
    expectCode(call(src, DtypeCode.Float32, 0, [6], [1], dst, DtypeCode.BFloat16), 'ERR_DTYPE');
    expectCode(call(Array.from(src), DtypeCode.Float32, 0, [6], [1], dst, DtypeCode.Float32), 'ERR_DTYPE');
    expectCode(call(src, 3, 0, [6], [1], dst, DtypeCode.Float32), 'ERR_DTYPE');
    expectCode(call(src, 0.5, 0, [6], [1], dst, DtypeCode.Float32), 'ERR_ARGUMENT');
  });

  it('bad shapes, strides and offsets', () => {
    expectCode(call(src, 0, 0, [-1], [1], dst, 0), 'ERR_ARGUMENT');
    expectCode(call(src, 0, 0, [2.5], [1], dst, 0), 'ERR_ARGUMENT');
    expectCode(call(src, 0, 0, [2, 3], [3], dst, 0), 'ERR_SHAPE');
    expectCode(call(src, 0, 0, [6], [1.5], dst, 0), 'ERR_ARGUMENT');
    expectCode(call(src, 0, -1, [6], [1], dst, 0), 'ERR_ARGUMENT');
    expectCode(call(src, 0, 0, 'abc', [1], dst, 0), 'ERR_ARGUMENT');
  });

  it('strided reads past either end of src', () => {
    expectCode(call(src, 0, 0, [7], [1], dst, 0), 'ERR_RANGE');
    expectCode(call(src, 0, 1, [6], [1], dst, 0), 'ERR_RANGE');
    expectCode(call(src, 0, 0, [2, 3], [4, 1], dst, 0), 'ERR_RANGE');
    expectCode(call(src, 0, 1, [3], [-1], dst, 0), 'ERR_RANGE');
    expectCode(call(src, 0, 0, [2, 2], [2 ** 52, -(2 ** 52)], dst, 0), 'ERR_RANGE');
    expectCode(call(src, 0, 0, [2 ** 30, 2 ** 30], [0, 0], dst, 0), 'ERR_SHAPE'); // more than 2^53 elements
    // Empty shapes read nothing, wherever the offset points.
    native().copyStrided(src, 0, 100, [0, 5], [1, 1], dst, 0);
  });

  it('short dst, overlapping buffers, detached buffers', () => {
    expectCode(call(src, 0, 0, [6], [1], new Float32Array(5), 0), 'ERR_SHAPE');
    const shared = new Float32Array(12);
    expectCode(call(shared.subarray(0, 6), 0, 0, [6], [1], shared.subarray(3), 0), 'ERR_ARGUMENT');
    native().copyStrided(shared.subarray(0, 6), 0, 0, [6], [1], shared.subarray(6), 0); // disjoint views are fine
    const buffer = native().alloc(64, true);
    const view = new Float32Array(buffer);
    native().free(buffer);
    expectCode(call(view, 0, 0, [0], [1], dst, 0), 'ERR_DETACHED');
    expectCode(call(src, 0, 0, [0], [1], view, 0), 'ERR_DETACHED');
  });
});
