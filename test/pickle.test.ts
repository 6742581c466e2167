import { describe, expect, it } from 'vitest';
import {
  PickleDict,
  PickleWriter,
  pickleCallable,
  unpickle,
  type PickleValue,
} from '../lib/io/pickle.js';
import { expectCode } from './helpers.js';
import { readJson } from './fixtures-util.js';
import { expectEveryTruncationFails, expectMutationsSafe, toTagged } from './io-helpers.js';

function bytesOf(...parts: Array<string | number[]>): Uint8Array {
  const out: number[] = [];
  for (const part of parts) {
    if (typeof part === 'string') for (const char of part) out.push(char.charCodeAt(0));
    else out.push(...part);
  }
  return Uint8Array.from(out);
}

function hex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g)!.map((pair) => parseInt(pair, 16)));
}

const load = (bytes: Uint8Array): PickleValue => unpickle(bytes).value;

interface PickleFixture {
  value: unknown;
  cases: Array<{ protocol: number; hex: string }>;
}

const fixture = readJson<PickleFixture>('checkpoints', 'pickles.json');

describe('unpickle: what CPython writes', () => {
  for (const { protocol, hex: text } of fixture.cases) {
    it(`reads every plain type at protocol ${protocol}`, () => {
      const value = load(hex(text));
      expect(toTagged(value)).toEqual(fixture.value);
      // The memo keeps shared objects shared.
      const shared = (value as PickleDict).get('shared') as PickleValue[][];
      expect(shared[0]).toBe(shared[1]);
    });
  }

  it('reports the offset after STOP, so pickles can be read back to back', () => {
    const first = hex(fixture.cases[2].hex);
    const both = new Uint8Array(first.byteLength * 2);
    both.set(first);
    both.set(first, first.byteLength);
    const one = unpickle(both);
    expect(one.end).toBe(first.byteLength);
    expect(toTagged(unpickle(both, { offset: one.end }).value)).toEqual(fixture.value);
  });
});

describe('unpickle: opcodes by hand', () => {
  it('handles protocol 0 text opcodes', () => {
    expect(load(bytesOf('I42\n.'))).toBe(42);
    expect(load(bytesOf('I01\n.'))).toBe(true);
    expect(load(bytesOf('L-123456789012345678901L\n.'))).toBe(-123456789012345678901n);
    expect(load(bytesOf('F-2.5e-3\n.'))).toBe(-2.5e-3);
    expect(load(bytesOf("S'a\\nb\\x41'\n."))).toBe('a\nbA');
    expect(load(bytesOf('Vcaf\xe9 \\u2713 \\U0001f600\n.'))).toBe('café ✓ 😀');
    const list = load(bytesOf('(lp0\nI1\naI2\nag0\na.')) as PickleValue[];
    expect(list.slice(0, 2)).toEqual([1, 2]);
    expect(list[2]).toBe(list); // a list that contains itself
    const dict = load(bytesOf('(dp0\nVk\np1\n(I1\nI2\ntp2\ns.')) as PickleDict;
    expect(toTagged(dict)).toEqual({ dict: [['k', { tuple: [1, 2] }]] });
  });

  it('handles stack opcodes: DUP, POP, POP_MARK', () => {
    expect(load(bytesOf([0x4b, 1, 0x32, 0x86, 0x2e]))).toEqual([1, 1]); // BININT1 1, DUP, TUPLE2
    expect(load(bytesOf([0x4b, 1, 0x4b, 2, 0x30, 0x2e]))).toBe(1); // POP
    expect(load(bytesOf([0x4b, 1, 0x28, 0x4b, 2, 0x4b, 3, 0x31, 0x2e]))).toBe(1); // MARK … POP_MARK
    expect(load(bytesOf([0x4b, 1, 0x28, 0x30, 0x2e]))).toBe(1); // POP of a bare MARK
  });

  it('handles protocol 4-5 framing, memoize, 8-byte lengths and sets', () => {
    const payload = bytesOf([0x8c, 3], 'abc', [0x94, 0x68, 0, 0x86, 0x2e]); // SHORT_BINUNICODE, MEMOIZE, BINGET 0, TUPLE2
    const framed = bytesOf([0x80, 4, 0x95], [...new Uint8Array(new BigUint64Array([BigInt(payload.length)]).buffer)], [...payload]);
    expect(load(framed)).toEqual(['abc', 'abc']);
    expect(load(bytesOf([0x8d, 2, 0, 0, 0, 0, 0, 0, 0], 'hi', '.'))).toBe('hi');
    expect(load(bytesOf([0x8e, 2, 0, 0, 0, 0, 0, 0, 0, 9, 8], '.'))).toEqual(Uint8Array.from([9, 8]));
    expect(load(bytesOf([0x96, 1, 0, 0, 0, 0, 0, 0, 0, 7], '.'))).toEqual(Uint8Array.from([7]));
    expect(load(bytesOf([0x8f, 0x28, 0x4b, 1, 0x4b, 2, 0x90, 0x2e]))).toEqual(new Set([1, 2]));
    expect(load(bytesOf([0x28, 0x4b, 3, 0x91, 0x2e]))).toEqual(new Set([3]));
    expect(load(bytesOf([0x8a, 0, 0x2e]))).toBe(0); // LONG1 of zero bytes
    expect(load(bytesOf([0x8a, 2, 0xff, 0x7f, 0x2e]))).toBe(0x7fff);
    expect(load(bytesOf([0x8a, 1, 0xff, 0x2e]))).toBe(-1);
    expect(load(bytesOf([0x8b, 9, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1], [0x2e]))).toBe(1n << 64n); // LONG4
  });

  it('calls allowlisted globals only through our stand-ins', () => {
    const ordered = load(bytesOf('\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00aK\x01u.')) as PickleDict;
    expect(ordered).toBeInstanceOf(PickleDict);
    expect([...ordered]).toEqual([['a', 1]]);
    const encoded = load(bytesOf('\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00\xc3\xbfX\x06\x00\x00\x00latin1\x86R.'));
    expect(encoded).toEqual(Uint8Array.from([0xff]));
    // Caller-supplied globals extend the allowlist.
    const globals = new Map<string, PickleValue>([['my.double', pickleCallable('my.double', (args) => (args[0] as number) * 2)]]);
    expect(unpickle(bytesOf('cmy\ndouble\nK\x15\x85R.'), { globals }).value).toBe(42);
    // BUILD on a dict keeps the state as attributes (a state dict's _metadata).
    const built = load(bytesOf('}}X\x01\x00\x00\x00kK\x01sb.')) as PickleDict;
    expect(toTagged(built.attributes ?? null)).toEqual({ dict: [['k', 1]] });
  });

  it('resolves persistent ids through the callback', () => {
    const seen: PickleValue[] = [];
    const value = unpickle(bytesOf('(X\x01\x00\x00\x00sK\x07tQPabc\n\x86.'), {
      persistentLoad: (pid) => {
        seen.push(pid);
        return `loaded:${JSON.stringify(toTagged(pid))}`;
      },
    }).value;
    expect(seen.map(toTagged)).toEqual([{ tuple: ['s', 7] }, 'abc']);
    expect(value).toEqual(['loaded:{"tuple":["s",7]}', 'loaded:"abc"']);
  });
});

describe('unpickle: refuses to execute', () => {
  const forbidden = (bytes: Uint8Array, message: RegExp): void => {
    expectCode(() => load(bytes), 'ERR_PICKLE_FORBIDDEN');
    expect(() => load(bytes)).toThrow(message);
  };

  it('refuses GLOBAL / STACK_GLOBAL outside the allowlist, naming it', () => {
    // pickle.dumps(os.system) then REDUCE with ('echo pwned',): what a malicious .pth does.
    forbidden(bytesOf('\x80\x02cposix\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.'), /GLOBAL posix\.system is not allowed/);
    forbidden(bytesOf('cos\nsystem\n(S\'ls\'\ntR.'), /GLOBAL os\.system is not allowed/);
    forbidden(bytesOf([0x80, 4, 0x8c, 8], 'builtins', [0x8c, 4], 'eval', [0x93, 0x2e]), /STACK_GLOBAL builtins\.eval is not allowed/);
    forbidden(bytesOf('ctorch\nload\n.'), /GLOBAL torch\.load is not allowed/);
    forbidden(bytesOf('cnumpy.core.multiarray\n_reconstruct\n.'), /GLOBAL numpy\.core\.multiarray\._reconstruct is not allowed/);
  });

  it('refuses object-building opcodes, naming them', () => {
    forbidden(bytesOf('(ios\nsystem\n.'), /opcode INST/);
    forbidden(bytesOf('(o.'), /opcode OBJ/);
    forbidden(bytesOf(')\x81.'), /opcode NEWOBJ /);
    forbidden(bytesOf('\x92.'), /opcode NEWOBJ_EX/);
    forbidden(bytesOf('\x82\x01.'), /opcode EXT1/);
    forbidden(bytesOf('\x83\x01\x00.'), /opcode EXT2/);
    forbidden(bytesOf('\x84\x01\x00\x00\x00.'), /opcode EXT4/);
    forbidden(bytesOf('\x97.'), /opcode NEXT_BUFFER/);
    forbidden(bytesOf('\x98.'), /opcode READONLY_BUFFER/);
  });

  it('refuses REDUCE and BUILD on anything but allowlisted objects', () => {
    forbidden(bytesOf('X\x01\x00\x00\x00a)R.'), /REDUCE of string/);
    forbidden(bytesOf(']]b.'), /BUILD on list/);
    forbidden(bytesOf('\x80\x02N)R.'), /REDUCE of None/);
    forbidden(bytesOf('K\x01Q.'), /BINPERSID/);
    forbidden(bytesOf('Pabc\n.'), /PERSID/);
  });
});

describe('unpickle: malformed input', () => {
  const malformed = (bytes: Uint8Array, message: RegExp): void => {
    expectCode(() => load(bytes), 'ERR_FORMAT');
    expect(() => load(bytes)).toThrow(message);
  };

  it('reports structural errors with ERR_FORMAT', () => {
    malformed(bytesOf([0xff]), /unknown pickle opcode 0xff at offset 0/);
    malformed(bytesOf('K\x01'), /no STOP opcode/);
    malformed(bytesOf('.'), /stack underflow/);
    malformed(bytesOf('t.'), /no MARK/);
    malformed(bytesOf('(.'), /stack underflow/);
    malformed(bytesOf('K\x01a.'), /stack underflow/);
    malformed(bytesOf(')K\x01a.'), /needs a list/);
    malformed(bytesOf(']K\x01s.'), /stack underflow/);
    malformed(bytesOf(']K\x01K\x02s.'), /needs a dict/);
    malformed(bytesOf('}(K\x01u.'), /odd number/);
    malformed(bytesOf('h\x05.'), /memo entry 5 is missing/);
    malformed(bytesOf('q\x00.'), /stack underflow/);
    malformed(bytesOf('\x80\x06.'), /unsupported pickle protocol 6/);
    malformed(bytesOf('X\x00\x00\x00\x10abc.'), /truncated/);
    malformed(bytesOf([0x8d, 0, 0, 0, 0, 0, 0, 0, 0x80], '.'), /exceeds the data/);
    malformed(bytesOf([0x95, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], '.'), /exceeds the data/);
    malformed(bytesOf([0x8b, 0, 0, 0, 0x10], '.'), /too large/);
    malformed(bytesOf('X\x02\x00\x00\x00\xc3\x28.'), /not valid UTF-8/);
    malformed(bytesOf('Iabc\n.'), /bad integer literal/);
    malformed(bytesOf('Fxyz\n.'), /bad float literal/);
    malformed(bytesOf('cposix'), /no end of line/);
    malformed(bytesOf('K\x01K\x02\x93.'), /two strings/);
  });

  it('fails with ERR_FORMAT when truncated at every offset', () => {
    for (const { hex: text } of fixture.cases) expectEveryTruncationFails(hex(text), load);
  });

  it('never throws an uncoded error when any byte is corrupted', () => {
    for (const protocol of [0, 2, 4]) {
      const outcomes = expectMutationsSafe(hex(fixture.cases[protocol].hex), load);
      expect(outcomes.get('ok')).toBeGreaterThan(0);
    }
  });

  it('does not recurse: 200k nested lists load', () => {
    const depth = 200_000;
    const nested = new Uint8Array(2 * depth + 1);
    nested.fill(0x5d, 0, depth); // EMPTY_LIST × depth
    nested.fill(0x61, depth, 2 * depth - 1); // APPEND × (depth − 1)
    nested[2 * depth - 1] = 0x2e;
    let value = load(nested.subarray(0, 2 * depth)) as PickleValue[];
    let levels = 1;
    while (value.length) {
      value = value[0] as PickleValue[];
      levels++;
    }
    expect(levels).toBe(depth);
  });
});

describe('PickleWriter', () => {
  it('writes what unpickle reads back: ints of every width, strings, tuples, globals', () => {
    const ints = [0, 1, 255, 256, 65535, 65536, -1, -129, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 53 - 1, -(2 ** 53 - 1)];
    const bigs = [2n ** 63n, -(2n ** 63n), 2n ** 64n + 5n, -(2n ** 100n), 127n, 128n, -128n, -129n];
    const writer = new PickleWriter().mark();
    for (const value of [...ints, ...bigs]) writer.int(value);
    writer.string('naïve ✓').bool(true).bool(false).intTuple([]).intTuple([1]).intTuple([1, 2]).intTuple([1, 2, 3]).intTuple([4, 5, 6, 7]);
    writer.global('collections', 'OrderedDict').emptyTuple().reduce().tuple().stop();
    const value = load(writer.bytes()) as PickleValue[];
    const expectedBigs = bigs.map((b) => (b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b));
    expect(value.slice(0, ints.length + bigs.length)).toEqual([...ints, ...expectedBigs]);
    expect(toTagged(value.slice(ints.length + bigs.length))).toEqual([
      'naïve ✓', true, false, { tuple: [] }, { tuple: [1] }, { tuple: [1, 2] }, { tuple: [1, 2, 3] }, { tuple: [4, 5, 6, 7] }, { dict: [] },
    ]);
  });
});
