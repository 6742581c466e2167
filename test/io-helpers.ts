/**
 * Helpers shared by the lib/io tests.
 *
 * Hostile input: a parser fed a truncated or corrupted file must either succeed or
 * throw an Error carrying a stable `code` (never a bare RangeError/TypeError from an
 * unchecked offset, never a hang).
 *
 * Comparisons: HostTensors against fixture tensors read by the independent reader in
 * fixtures-util.ts, and pickle/checkpoint values against the tagged JSON that
 * test/fixtures/gen/checkpoints.py writes for Python values.
 */
import { expect } from 'vitest';
import { toFloat32, typedArrayOf, isHostTensor, type HostDType, type HostTensor } from '../lib/io/host-tensor.js';
import type { FixtureTensor } from './fixtures-util.js';

/** Runs `parse` and returns the thrown error's code, 'ok' if it succeeded, or a description of an uncoded error. */
export function outcomeOf(parse: () => unknown): string {
  try {
    parse();
    return 'ok';
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (error instanceof Error && typeof code === 'string') return code;
    return `uncoded ${(error as Error)?.name}: ${(error as Error)?.message}`;
  }
}

/** Every proper prefix of `bytes` (lengths 0 … n−1) must make `parse` throw a coded error. */
export function expectEveryTruncationFails(bytes: Uint8Array, parse: (truncated: Uint8Array) => unknown, codes = ['ERR_FORMAT']): void {
  const failures: string[] = [];
  for (let length = 0; length < bytes.byteLength; length++) {
    // A fresh copy, so a reader cannot see past the end through the shared buffer.
    const outcome = outcomeOf(() => parse(bytes.slice(0, length)));
    if (!codes.includes(outcome) && failures.length < 5) failures.push(`length ${length}: ${outcome}`);
  }
  expect(failures, failures.join('\n')).toEqual([]);
}

/**
 * Overwrites each byte of `bytes` in turn with a few values (0x00, 0xff, flipped top
 * bit, +1); `parse` must succeed or throw a coded error every time.
 */
export function expectMutationsSafe(bytes: Uint8Array, parse: (mutated: Uint8Array) => unknown, { stride = 1 } = {}): Map<string, number> {
  const outcomes = new Map<string, number>();
  const failures: string[] = [];
  for (let offset = 0; offset < bytes.byteLength; offset += stride) {
    for (const value of new Set([0x00, 0xff, bytes[offset] ^ 0x80, (bytes[offset] + 1) & 0xff])) {
      if (value === bytes[offset]) continue;
      const mutated = bytes.slice();
      mutated[offset] = value;
      const outcome = outcomeOf(() => parse(mutated));
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      if (outcome.startsWith('uncoded') && failures.length < 5) failures.push(`byte ${offset} = 0x${value.toString(16)}: ${outcome}`);
    }
  }
  expect(failures, failures.join('\n')).toEqual([]);
  return outcomes;
}

const SAFETENSORS_NAMES: Record<HostDType, string> = {
  float32: 'F32', float16: 'F16', bfloat16: 'BF16', float64: 'F64', int64: 'I64',
  int32: 'I32', int16: 'I16', int8: 'I8', uint8: 'U8', bool: 'BOOL',
};

/**
 * `actual` equals the fixture tensor exactly: same dtype (unless `widened`, for
 * fixtures that store float16/bfloat16 as float32), same shape, same values.
 */
export function expectTensorMatchesFixture(actual: HostTensor, expected: FixtureTensor, label: string, { widened = false } = {}): void {
  if (!widened) expect(SAFETENSORS_NAMES[actual.dtype], `${label}: dtype`).toBe(expected.dtype);
  expect(actual.shape, `${label}: shape`).toEqual(expected.shape);
  const isFloat = ['F32', 'F16', 'BF16'].includes(expected.dtype);
  const values = isFloat && actual.dtype !== 'float64' ? toFloat32(actual) : typedArrayOf(actual);
  expect(Array.from(values as ArrayLike<number | bigint>), `${label}: values`).toEqual(Array.from(expected.data as ArrayLike<number | bigint>));
}

/** Two HostTensors with the same dtype, shape and bytes. */
export function expectSameTensor(actual: HostTensor | undefined, expected: HostTensor, label: string): void {
  expect(actual, label).toBeDefined();
  expect(actual!.dtype, `${label}: dtype`).toBe(expected.dtype);
  expect(actual!.shape, `${label}: shape`).toEqual(expected.shape);
  expect(Buffer.from(actual!.data).equals(Buffer.from(expected.data)), `${label}: bytes`).toBe(true);
}

/** A pickle or checkpoint value in the generator's tagged JSON (see `tagged_json` in checkpoints.py). */
export function toTagged(value: unknown): unknown {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'bigint') return { bigint: value.toString() };
  if (typeof value === 'number') return Number.isFinite(value) ? value : { float: Number.isNaN(value) ? 'nan' : value > 0 ? 'inf' : '-inf' };
  if (value instanceof Uint8Array) return { bytes: [...value] };
  if (isHostTensor(value)) return { tensor: value.dtype, shape: value.shape };
  if (value instanceof Map) return { dict: [...value].map(([k, v]) => [toTagged(k), toTagged(v)]) };
  if (value instanceof Set) return { set: [...value].map(toTagged).sort() };
  if (Array.isArray(value)) return Object.isFrozen(value) ? { tuple: value.map(toTagged) } : value.map(toTagged);
  return { object: (value as { pickleType?: string }).pickleType };
}
