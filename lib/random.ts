/**
 * Seeds. `manualSeed(s)` makes parameter initialization and dropout masks
 * reproducible; each consumer draws 32-bit seeds from one SplitMix64-style stream.
 */
let state = 0x2545f491n;

const MASK64 = (1n << 64n) - 1n;

/** Resets the global stream. */
export function manualSeed(seed: number): void {
  if (!Number.isSafeInteger(seed)) throw new TypeError(`manualSeed: seed must be a safe integer, got ${seed}`);
  state = BigInt.asUintN(64, BigInt(seed));
}

/** Next 32-bit seed from the global stream (SplitMix64 output, high half). */
export function nextSeed(): number {
  state = (state + 0x9e3779b97f4a7c15n) & MASK64;
  let z = state;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  z = z ^ (z >> 31n);
  return Number(z >> 32n);
}

let initSkipDepth = 0;

/**
 * Runs `build` with parameter initialization skipped: layers start at zero instead of
 * drawing random values (and consume no seeds). For weights that are loaded right
 * after, like torch's `skip_init`; building ViT-L this way takes milliseconds, not seconds.
 */
export function withoutInit<T>(build: () => T): T {
  initSkipDepth++;
  try {
    return build();
  } finally {
    initSkipDepth--;
  }
}

/** True inside `withoutInit`. */
export function initSkipped(): boolean {
  return initSkipDepth > 0;
}

/** A seeded uniform [0, 1) generator (Mulberry32) for host-side sampling. */
export function uniformGenerator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `out` with standard normal samples (Box–Muller) from `uniform`. */
export function fillNormal(out: Float32Array, uniform: () => number, std = 1, mean = 0): Float32Array {
  for (let i = 0; i < out.length; i += 2) {
    const u = Math.max(uniform(), 1e-300);
    const v = uniform();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = mean + r * Math.cos(2 * Math.PI * v);
    if (i + 1 < out.length) out[i + 1] = mean + r * Math.sin(2 * Math.PI * v);
  }
  return out;
}
