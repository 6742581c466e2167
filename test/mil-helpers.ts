/**
 * Shared helpers of the MIL tests: load the repository's state dicts into our modules,
 * read the parity fixtures, and compare gradients by their relative error.
 */
import { expect } from 'vitest';
import { loadStateDictFile } from '../lib/io/checkpoint.js';
import { toFloat32 } from '../lib/io/host-tensor.js';
import type { Module, StateValue } from '../lib/index.js';
import { fixturePath, readSafetensors, type FixtureTensor } from './fixtures-util.js';

/** Loads a .pth/.safetensors state dict (strict) into a module. */
export function loadWeights(module: Module, ...path: string[]): void {
  const tensors = loadStateDictFile(fixturePath(...path));
  const entries = new Map<string, StateValue>();
  for (const [name, t] of tensors) entries.set(name, { shape: t.shape, values: toFloat32(t) });
  module.loadStateDict(entries);
}

/** Fixture tensors by name as Float32Array. */
export function readExpected(...path: string[]): Map<string, FixtureTensor & { data: Float32Array }> {
  return readSafetensors(...path) as Map<string, FixtureTensor & { data: Float32Array }>;
}

/**
 * Gradient agreement "within 1e-3 relative": every element within
 * 1e-3·(max |ref| + |ref|) + floor and the whole within 1e-3 in relative L2 norm (or
 * within `floor` in L2 when the reference itself is below it). `floor` is for gradients
 * that are exactly zero in exact arithmetic, where both sides are rounding noise — e.g.
 * the bias of the last attention layer: softmax is shift-invariant, so its gradient is
 * 0 and PyTorch reports ~1e-9 of noise.
 */
export function expectRelativeClose(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string, tol = 1e-3, floor = 0): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  let maxRef = 0;
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  const bad: string[] = [];
  let count = 0;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= tol * (maxRef + Math.abs(expected[i])) + floor)) {
      count++;
      if (bad.length < 6) bad.push(`  [${i}] got ${actual[i]}, want ${expected[i]}`);
    }
  }
  const rel = den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
  const normOk = rel <= tol || Math.sqrt(num) <= floor;
  if (count > 0 || !normOk) {
    expect.fail(`${label}: ${count} of ${expected.length} elements off, relative L2 error ${rel.toExponential(2)} (max |ref| ${maxRef.toExponential(2)})\n${bad.join('\n')}`);
  }
}
