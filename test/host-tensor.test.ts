import { describe, expect, it } from 'vitest';
import {
  bfloat16BitsToFloat32,
  checkedProduct,
  elementSize,
  float16BitsToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
  fromFloat32,
  fromTypedArray,
  hostTensor,
  shapeNumel,
  toFloat32,
  toFloat64,
  typedArrayOf,
} from '../lib/io/host-tensor.js';
import { readSafetensors } from '../lib/io/safetensors.js';
import { expectCode } from './helpers.js';
import { fixturePath } from './fixtures-util.js';

describe('HostTensor conversions match torch', () => {
  const { tensors } = readSafetensors(fixturePath('checkpoints', 'float_rounding.safetensors'));
  const x = toFloat32(tensors.get('x')!);

  it('float32 → float16 / bfloat16 round to nearest even exactly like torch (ties, subnormals, overflow, NaN)', () => {
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const ours = fromFloat32(x, [x.length], dtype);
      const torchBits = typedArrayOf(tensors.get(dtype === 'float16' ? 'half' : 'bfloat16')!) as Uint16Array;
      const oursBits = typedArrayOf(ours) as Uint16Array;
      const mismatches: string[] = [];
      for (let i = 0; i < x.length; i++) {
        const bothNaN = Number.isNaN(x[i]);
        if (oursBits[i] !== torchBits[i] && !bothNaN && mismatches.length < 5) {
          mismatches.push(`${x[i]}: ours 0x${oursBits[i].toString(16)}, torch 0x${torchBits[i].toString(16)}`);
        }
      }
      expect(mismatches, dtype).toEqual([]);
      // Widening back is exact.
      expect(Array.from(toFloat32(ours))).toEqual(Array.from(toFloat32(tensors.get(dtype === 'float16' ? 'half' : 'bfloat16')!)));
    }
  });

  it('float64 and int64 conversions', () => {
    expect(Array.from(toFloat64(fromFloat32(x, [x.length], 'float64')))).toEqual(Array.from(toFloat64(tensors.get('double')!)));
    const finite = toFloat32(tensors.get('x_finite')!);
    expect(typedArrayOf(fromFloat32(finite, [finite.length], 'int64'))).toEqual(typedArrayOf(tensors.get('long')!));
  });

  it('scalar helpers agree with the bulk paths', () => {
    expect(float16BitsToFloat32(0x3c00)).toBe(1);
    expect(float16BitsToFloat32(0x0001)).toBe(2 ** -24);
    expect(float16BitsToFloat32(0xfc00)).toBe(-Infinity);
    expect(bfloat16BitsToFloat32(0x3f80)).toBe(1);
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00); // rounds up to inf
    expect(float32ToFloat16Bits(65519.99)).toBe(0x7bff);
    expect(float32ToBfloat16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie to even
    expect(float32ToBfloat16Bits(Number.NaN) & 0x7fc0).toBe(0x7fc0);
  });
});

describe('HostTensor records', () => {
  it('checks shapes and byte lengths', () => {
    expect(shapeNumel([])).toBe(1);
    expect(shapeNumel([2, 0, 5])).toBe(0);
    expect(checkedProduct([2 ** 26, 2 ** 26])).toBe(2 ** 52);
    expect(checkedProduct([2 ** 27, 2 ** 27])).toBeUndefined();
    expect(checkedProduct([2 ** 40, 2 ** 20])).toBeUndefined();
    expect(checkedProduct([2 ** 50, 2 ** 50, 0])).toBe(0);
    expect(checkedProduct([-1])).toBeUndefined();
    expect(checkedProduct([1.5])).toBeUndefined();
    expectCode(() => shapeNumel([-1]), 'ERR_SHAPE');
    expectCode(() => hostTensor('float32', [2], new Uint8Array(7)), 'ERR_SHAPE');
    expectCode(() => hostTensor('float8' as 'float32', [2], new Uint8Array(2)), 'ERR_DTYPE');
    expect(elementSize('bfloat16')).toBe(2);
  });

  it('views typed arrays without copying and copies only when unaligned', () => {
    const values = Float32Array.of(1, 2, 3);
    const tensor = fromFloat32(values, [3]);
    expect(tensor.data.buffer).toBe(values.buffer);
    expect(toFloat32(tensor)).toEqual(values);
    expect(toFloat32(tensor).buffer).toBe(values.buffer);
    const unaligned = new Uint8Array(13);
    unaligned.set(new Uint8Array(values.buffer), 1);
    const shifted = hostTensor('float32', [3], unaligned.subarray(1));
    expect(Array.from(toFloat32(shifted))).toEqual([1, 2, 3]);
    expect(typedArrayOf(fromTypedArray(BigInt64Array.of(-5n), [1]))).toEqual(BigInt64Array.of(-5n));
    expect(Array.from(toFloat32(fromTypedArray(Uint8Array.of(0, 2), [2], { asBool: true })))).toEqual([0, 1]);
    expect(Array.from(toFloat32(fromFloat32(Float32Array.of(-2.7, 3.9, 0), [3], 'int8')))).toEqual([-2, 3, 0]);
    expect(Array.from(fromFloat32(Float32Array.of(0, -0.5, 2), [3], 'bool').data)).toEqual([0, 1, 1]);
  });
});
