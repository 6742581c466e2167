/**
 * A pickle reader that never executes anything.
 *
 * Python's pickle format is a small stack machine whose GLOBAL/REDUCE opcodes
 * import and call arbitrary Python callables, which is how a `.pth` file can run
 * `os.system`. This VM implements the data opcodes of protocols 0–5 (ints, floats,
 * strings, bytes, lists, tuples, dicts, sets, the memo, frames) and resolves
 * GLOBAL / STACK_GLOBAL only through an allowlist of our own TypeScript stand-ins:
 *
 * - always: `collections.OrderedDict`, `builtins.set` / `frozenset` / `bytearray`
 *   and `_codecs.encode` (how protocol 2 writes Python 3 `bytes`), with their
 *   Python 2 `__builtin__` spellings;
 * - whatever the caller adds in `options.globals` (lib/io/torch.ts adds
 *   `torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, ...).
 *
 * Anything else is an `ERR_PICKLE_FORBIDDEN` error naming it, raised when the
 * GLOBAL is read (`GLOBAL posix.system is not allowed`), before anything could be
 * called. Opcodes that build arbitrary objects (INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT*)
 * or need out-of-band buffers are refused the same way. Malformed input (truncated,
 * stack underflow, bad lengths, unknown opcodes) is `ERR_FORMAT`. Every length is
 * checked against the bytes left before it is used; the machine never recurses,
 * so hostile nesting cannot overflow the JS stack.
 *
 * Value mapping: None → null, bool → boolean, int → number (bigint beyond 2^53),
 * float → number, str → string, bytes/bytearray → Uint8Array (a view into the input),
 * list → array, tuple → frozen array, dict → PickleDict (a Map keeping insertion
 * order), set/frozenset → Set, allowlisted objects → PickleObject.
 */
import { FormatError, forbiddenError } from './errors.js';

/** An object made by an allowlisted global (a torch storage type, a tensor reference, a callable, ...). */
export interface PickleObject {
  /** What it stands for, for error messages: 'torch.FloatStorage', 'tensor', ... */
  readonly pickleType: string;
  /** Applies a BUILD state; absent means BUILD on this object is refused. */
  setState?(state: PickleValue): void;
}

/** An allowlisted callable: REDUCE calls `call` with the argument tuple. */
export interface PickleCallable extends PickleObject {
  call(args: readonly PickleValue[]): PickleValue;
}

export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | readonly PickleValue[]
  | PickleDict
  | Set<PickleValue>
  | PickleObject;

/** A Python dict (or OrderedDict): insertion-ordered; string and number keys compare by value. */
export class PickleDict extends Map<PickleValue, PickleValue> {
  /** Instance attributes set by BUILD (e.g. a torch state dict's `_metadata`). */
  attributes?: PickleValue;
}

export interface UnpickleOptions {
  /** Byte offset where the pickle starts (legacy torch files hold several pickles back to back). */
  offset?: number;
  /** Extra allowlisted globals, keyed `module.name`. */
  globals?: ReadonlyMap<string, PickleValue>;
  /** Resolves PERSID / BINPERSID ids; without it persistent ids are refused. */
  persistentLoad?: (pid: PickleValue) => PickleValue;
}

export interface UnpickleResult {
  value: PickleValue;
  /** Offset just past the STOP opcode. */
  end: number;
}

/** True for a Python tuple (tuples are frozen arrays; lists are not). */
export function isPickleTuple(value: PickleValue): value is readonly PickleValue[] {
  return Array.isArray(value) && Object.isFrozen(value);
}

export function isPickleObject(value: unknown): value is PickleObject {
  return typeof value === 'object' && value !== null && typeof (value as PickleObject).pickleType === 'string';
}

/** An allowlisted callable named `qualifiedName` implemented by `call`. */
export function pickleCallable(qualifiedName: string, call: (args: readonly PickleValue[]) => PickleValue): PickleCallable {
  return { pickleType: qualifiedName, call };
}

/** A short description of a value for error messages. */
export function describePickleValue(value: PickleValue): string {
  if (value === null) return 'None';
  if (isPickleObject(value)) return value.pickleType;
  if (value instanceof PickleDict) return 'dict';
  if (value instanceof Set) return 'set';
  if (value instanceof Uint8Array) return 'bytes';
  if (Array.isArray(value)) return isPickleTuple(value) ? 'tuple' : 'list';
  return typeof value;
}

// ---------------------------------------------------------------------------------
// The plain-data allowlist

function tuple(items: PickleValue[]): readonly PickleValue[] {
  return Object.freeze(items);
}

function argAt(args: readonly PickleValue[], index: number, callee: string): PickleValue {
  if (index >= args.length) throw new FormatError(`${callee} expects at least ${index + 1} arguments, got ${args.length}`);
  return args[index];
}

function iterableItems(value: PickleValue, callee: string): readonly PickleValue[] {
  if (Array.isArray(value)) return value;
  if (value instanceof Set) return [...value];
  if (value instanceof PickleDict) return [...value.keys()];
  throw new FormatError(`${callee} expects an iterable, got ${describePickleValue(value)}`);
}

function latin1Bytes(text: string, callee: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0xff) throw new FormatError(`${callee}: character U+${code.toString(16)} is not latin-1`);
    bytes[i] = code;
  }
  return bytes;
}

const makeOrderedDict = pickleCallable('collections.OrderedDict', (args) => {
  const dict = new PickleDict();
  if (args.length === 0) return dict;
  for (const pair of iterableItems(args[0], 'collections.OrderedDict')) {
    if (!Array.isArray(pair) || pair.length !== 2) throw new FormatError('collections.OrderedDict expects (key, value) pairs');
    dict.set(pair[0], pair[1]);
  }
  return dict;
});

const makeSet = pickleCallable('builtins.set', (args) => new Set(args.length ? iterableItems(args[0], 'set') : []));

const makeFrozenSet = pickleCallable('builtins.frozenset', (args) =>
  new Set(args.length ? iterableItems(args[0], 'frozenset') : []),
);

/** `_codecs.encode(text, 'latin1')`: how protocol 2 pickles Python 3 `bytes`. */
const encodeText = pickleCallable('_codecs.encode', (args) => {
  const text = argAt(args, 0, '_codecs.encode');
  const encoding = args.length > 1 ? args[1] : 'utf-8';
  if (typeof text !== 'string' || typeof encoding !== 'string') throw new FormatError('_codecs.encode expects (str, str)');
  const normalized = encoding.toLowerCase().replace(/[-_]/g, '');
  if (normalized === 'latin1' || normalized === 'iso88591') return latin1Bytes(text, '_codecs.encode');
  if (normalized === 'utf8') return new TextEncoder().encode(text);
  throw new FormatError(`_codecs.encode: encoding ${encoding} is not supported`);
});

/** `bytearray()`, `bytearray(bytes)` or protocol 2's `bytearray(text, 'latin-1')`. */
const makeByteArray = pickleCallable('builtins.bytearray', (args) => {
  if (args.length === 0) return new Uint8Array(0);
  const source = args[0];
  if (source instanceof Uint8Array) return source.slice();
  if (typeof source === 'string') return latin1Bytes(source, 'bytearray');
  throw new FormatError(`bytearray expects bytes or str, got ${describePickleValue(source)}`);
});

/** Globals any pickle may name: plain containers and byte strings, no code. */
export const PLAIN_DATA_GLOBALS: ReadonlyMap<string, PickleValue> = new Map<string, PickleValue>([
  ['collections.OrderedDict', makeOrderedDict],
  ['builtins.set', makeSet],
  ['builtins.frozenset', makeFrozenSet],
  ['builtins.bytearray', makeByteArray],
  ['__builtin__.set', makeSet],
  ['__builtin__.frozenset', makeFrozenSet],
  ['__builtin__.bytearray', makeByteArray],
  ['_codecs.encode', encodeText],
]);

// ---------------------------------------------------------------------------------
// Opcodes

/** Opcode byte → name, for every opcode of protocols 0–5. */
const OPCODE_NAMES: ReadonlyMap<number, string> = new Map(
  (
    [
      ['(', 'MARK'], ['.', 'STOP'], ['0', 'POP'], ['1', 'POP_MARK'], ['2', 'DUP'], ['F', 'FLOAT'],
      ['I', 'INT'], ['J', 'BININT'], ['K', 'BININT1'], ['L', 'LONG'], ['M', 'BININT2'], ['N', 'NONE'],
      ['P', 'PERSID'], ['Q', 'BINPERSID'], ['R', 'REDUCE'], ['S', 'STRING'], ['T', 'BINSTRING'],
      ['U', 'SHORT_BINSTRING'], ['V', 'UNICODE'], ['X', 'BINUNICODE'], ['a', 'APPEND'], ['b', 'BUILD'],
      ['c', 'GLOBAL'], ['d', 'DICT'], ['}', 'EMPTY_DICT'], ['e', 'APPENDS'], ['g', 'GET'], ['h', 'BINGET'],
      ['i', 'INST'], ['j', 'LONG_BINGET'], ['l', 'LIST'], [']', 'EMPTY_LIST'], ['o', 'OBJ'], ['p', 'PUT'],
      ['q', 'BINPUT'], ['r', 'LONG_BINPUT'], ['s', 'SETITEM'], ['t', 'TUPLE'], [')', 'EMPTY_TUPLE'],
      ['u', 'SETITEMS'], ['G', 'BINFLOAT'], ['\x80', 'PROTO'], ['\x81', 'NEWOBJ'], ['\x82', 'EXT1'],
      ['\x83', 'EXT2'], ['\x84', 'EXT4'], ['\x85', 'TUPLE1'], ['\x86', 'TUPLE2'], ['\x87', 'TUPLE3'],
      ['\x88', 'NEWTRUE'], ['\x89', 'NEWFALSE'], ['\x8a', 'LONG1'], ['\x8b', 'LONG4'], ['B', 'BINBYTES'],
      ['C', 'SHORT_BINBYTES'], ['\x8c', 'SHORT_BINUNICODE'], ['\x8d', 'BINUNICODE8'], ['\x8e', 'BINBYTES8'],
      ['\x8f', 'EMPTY_SET'], ['\x90', 'ADDITEMS'], ['\x91', 'FROZENSET'], ['\x92', 'NEWOBJ_EX'],
      ['\x93', 'STACK_GLOBAL'], ['\x94', 'MEMOIZE'], ['\x95', 'FRAME'], ['\x96', 'BYTEARRAY8'],
      ['\x97', 'NEXT_BUFFER'], ['\x98', 'READONLY_BUFFER'],
    ] as const
  ).map(([char, name]) => [char.charCodeAt(0), name]),
);

/** Opcodes that construct arbitrary objects or need out-of-band data: never allowed. */
const FORBIDDEN_OPCODES: ReadonlySet<string> = new Set([
  'INST', 'OBJ', 'NEWOBJ', 'NEWOBJ_EX', 'EXT1', 'EXT2', 'EXT4', 'NEXT_BUFFER', 'READONLY_BUFFER',
]);

/** Longest LONG4 integer accepted (bytes); Python has no limit, a state dict never needs one. */
const MAX_LONG_BYTES = 1024;

const utf8 = new TextDecoder('utf-8', { fatal: true });

// ---------------------------------------------------------------------------------
// The machine

/**
 * Unpickles one pickle from `bytes` (starting at `options.offset`) without executing
 * anything; returns the value and the offset after its STOP opcode.
 */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions = {}): UnpickleResult {
  return new Unpickler(bytes, options).run();
}

class Unpickler {
  private position: number;
  private opcodeStart = 0;
  private opcodeName = '';
  private stack: PickleValue[] = [];
  private readonly marks: number[] = [];
  private readonly memo = new Map<number, PickleValue>();
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly options: UnpickleOptions,
  ) {
    this.position = options.offset ?? 0;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (!Number.isSafeInteger(this.position) || this.position < 0 || this.position > bytes.byteLength) {
      throw new RangeError(`offset ${this.position} is outside the ${bytes.byteLength}-byte input`);
    }
  }

  run(): UnpickleResult {
    for (;;) {
      this.opcodeStart = this.position;
      if (this.position >= this.bytes.byteLength) {
        throw new FormatError(`pickle truncated: no STOP opcode before the end of the data (offset ${this.position})`);
      }
      const opcode = this.bytes[this.position++];
      const name = OPCODE_NAMES.get(opcode);
      if (name === undefined) {
        throw new FormatError(`unknown pickle opcode 0x${opcode.toString(16).padStart(2, '0')} at offset ${this.opcodeStart}`);
      }
      this.opcodeName = name;
      if (FORBIDDEN_OPCODES.has(name)) throw forbiddenError(`opcode ${name} (0x${opcode.toString(16)})`);
      if (name === 'STOP') {
        return { value: this.pop(), end: this.position };
      }
      this.execute(name);
    }
  }

  private execute(name: string): void {
    switch (name) {
      // --- framing and protocol
      case 'PROTO': {
        const protocol = this.readUint8();
        if (protocol > 5) throw new FormatError(`unsupported pickle protocol ${protocol}`);
        return;
      }
      case 'FRAME': {
        const frameLength = this.readUint64('frame length');
        this.require(frameLength, 'frame');
        return; // frames only group opcodes; the bytes follow inline
      }
      // --- stack manipulation
      case 'MARK':
        this.marks.push(this.stack.length);
        return;
      case 'POP':
        // Like CPython: pop the top item, or the last MARK when nothing is above it.
        if (this.stack.length > (this.marks.at(-1) ?? 0)) this.stack.pop();
        else this.popMark();
        return;
      case 'POP_MARK':
        this.popMark();
        return;
      case 'DUP':
        this.push(this.peek());
        return;
      // --- constants and numbers
      case 'NONE':
        return this.push(null);
      case 'NEWTRUE':
        return this.push(true);
      case 'NEWFALSE':
        return this.push(false);
      case 'BININT':
        return this.push(this.readInt32());
      case 'BININT1':
        return this.push(this.readUint8());
      case 'BININT2':
        return this.push(this.readUint16());
      case 'LONG1':
        return this.push(this.readLong(this.readUint8()));
      case 'LONG4':
        return this.push(this.readLong(this.readUint32()));
      case 'BINFLOAT': {
        this.require(8, 'BINFLOAT');
        const value = this.view.getFloat64(this.position, false);
        this.position += 8;
        return this.push(value);
      }
      case 'INT':
        return this.push(this.parseTextInt(this.readLine()));
      case 'LONG':
        return this.push(this.parseTextInt(this.readLine().replace(/L$/, '')));
      case 'FLOAT': {
        const text = this.readLine();
        const value = Number(text);
        if (text.trim() === '' || (Number.isNaN(value) && !/^[-+]?nan$/i.test(text))) {
          throw this.formatError(`bad float literal ${JSON.stringify(text)}`);
        }
        return this.push(value);
      }
      // --- strings and bytes
      case 'BINUNICODE':
        return this.push(this.decodeUtf8(this.readBytes(this.readUint32())));
      case 'SHORT_BINUNICODE':
        return this.push(this.decodeUtf8(this.readBytes(this.readUint8())));
      case 'BINUNICODE8':
        return this.push(this.decodeUtf8(this.readBytes(this.readUint64('string length'))));
      case 'UNICODE':
        return this.push(decodeRawUnicodeEscape(this.readLine(), (message) => this.formatError(message)));
      case 'BINSTRING':
        return this.push(this.decodeUtf8(this.readBytes(this.readInt32NonNegative())));
      case 'SHORT_BINSTRING':
        return this.push(this.decodeUtf8(this.readBytes(this.readUint8())));
      case 'STRING':
        return this.push(this.decodeUtf8(decodeQuotedString(this.readLine(), (message) => this.formatError(message))));
      case 'BINBYTES':
        return this.push(this.readBytes(this.readUint32()));
      case 'SHORT_BINBYTES':
        return this.push(this.readBytes(this.readUint8()));
      case 'BINBYTES8':
        return this.push(this.readBytes(this.readUint64('bytes length')));
      case 'BYTEARRAY8':
        return this.push(this.readBytes(this.readUint64('bytearray length')).slice());
      // --- containers
      case 'EMPTY_TUPLE':
        return this.push(tuple([]));
      case 'TUPLE1':
        return this.push(tuple(this.popN(1)));
      case 'TUPLE2':
        return this.push(tuple(this.popN(2)));
      case 'TUPLE3':
        return this.push(tuple(this.popN(3)));
      case 'TUPLE':
        return this.push(tuple(this.popMark()));
      case 'EMPTY_LIST':
        return this.push([]);
      case 'LIST':
        return this.push(this.popMark());
      case 'APPEND': {
        const item = this.pop();
        this.listOnTop().push(item);
        return;
      }
      case 'APPENDS': {
        const items = this.popMark();
        const list = this.listOnTop();
        for (const item of items) list.push(item);
        return;
      }
      case 'EMPTY_DICT':
        return this.push(new PickleDict());
      case 'DICT': {
        const items = this.popMark();
        const dict = new PickleDict();
        this.setPairs(dict, items);
        return this.push(dict);
      }
      case 'SETITEM': {
        const value = this.pop();
        const key = this.pop();
        this.dictOnTop().set(key, value);
        return;
      }
      case 'SETITEMS': {
        const items = this.popMark();
        this.setPairs(this.dictOnTop(), items);
        return;
      }
      case 'EMPTY_SET':
        return this.push(new Set());
      case 'ADDITEMS': {
        const items = this.popMark();
        const set = this.peek();
        if (!(set instanceof Set)) throw this.formatError(`ADDITEMS needs a set, found ${describePickleValue(set)}`);
        for (const item of items) set.add(item);
        return;
      }
      case 'FROZENSET':
        return this.push(new Set(this.popMark()));
      // --- memo
      case 'BINPUT':
        return this.memoPut(this.readUint8());
      case 'LONG_BINPUT':
        return this.memoPut(this.readUint32());
      case 'PUT':
        return this.memoPut(this.parseMemoIndex(this.readLine()));
      case 'MEMOIZE':
        return this.memoPut(this.memo.size);
      case 'BINGET':
        return this.memoGet(this.readUint8());
      case 'LONG_BINGET':
        return this.memoGet(this.readUint32());
      case 'GET':
        return this.memoGet(this.parseMemoIndex(this.readLine()));
      // --- globals, calls, persistent ids
      case 'GLOBAL': {
        const module = this.readLine();
        const qualname = this.readLine();
        return this.push(this.resolveGlobal('GLOBAL', module, qualname));
      }
      case 'STACK_GLOBAL': {
        const qualname = this.pop();
        const module = this.pop();
        if (typeof module !== 'string' || typeof qualname !== 'string') {
          throw this.formatError('STACK_GLOBAL needs two strings (module, name)');
        }
        return this.push(this.resolveGlobal('STACK_GLOBAL', module, qualname));
      }
      case 'REDUCE': {
        const args = this.pop();
        const callee = this.pop();
        if (!Array.isArray(args)) throw this.formatError(`REDUCE arguments must be a tuple, got ${describePickleValue(args)}`);
        if (!isPickleObject(callee) || typeof (callee as PickleCallable).call !== 'function') {
          throw forbiddenError(`REDUCE of ${describePickleValue(callee)}`);
        }
        return this.push((callee as PickleCallable).call(args));
      }
      case 'BUILD': {
        const state = this.pop();
        const target = this.peek();
        if (target instanceof PickleDict) {
          target.attributes = state;
          return;
        }
        if (isPickleObject(target) && target.setState) {
          target.setState(state);
          return;
        }
        throw forbiddenError(`BUILD on ${describePickleValue(target)}`);
      }
      case 'BINPERSID':
        return this.push(this.persistentLoad(this.pop()));
      case 'PERSID':
        return this.push(this.persistentLoad(this.readLine()));
    }
    throw this.formatError(`opcode ${name} is not implemented`);
  }

  // --- stack helpers

  private formatError(message: string): FormatError {
    return new FormatError(`pickle ${this.opcodeName} at offset ${this.opcodeStart}: ${message}`);
  }

  private push(value: PickleValue): void {
    this.stack.push(value);
  }

  private pop(): PickleValue {
    const floor = this.marks.at(-1) ?? 0;
    if (this.stack.length <= floor) throw this.formatError('stack underflow');
    return this.stack.pop() as PickleValue;
  }

  private peek(): PickleValue {
    const floor = this.marks.at(-1) ?? 0;
    if (this.stack.length <= floor) throw this.formatError('stack underflow');
    return this.stack[this.stack.length - 1];
  }

  private popN(count: number): PickleValue[] {
    const floor = this.marks.at(-1) ?? 0;
    if (this.stack.length - count < floor) throw this.formatError('stack underflow');
    return this.stack.splice(this.stack.length - count, count);
  }

  /** Pops everything above the last MARK (and the mark). */
  private popMark(): PickleValue[] {
    const mark = this.marks.pop();
    if (mark === undefined) throw this.formatError('no MARK on the stack');
    return this.stack.splice(mark);
  }

  private listOnTop(): PickleValue[] {
    const list = this.peek();
    if (!Array.isArray(list) || Object.isFrozen(list)) throw this.formatError(`needs a list, found ${describePickleValue(list)}`);
    return list as PickleValue[];
  }

  private dictOnTop(): PickleDict {
    const dict = this.peek();
    if (!(dict instanceof PickleDict)) throw this.formatError(`needs a dict, found ${describePickleValue(dict)}`);
    return dict;
  }

  private setPairs(dict: PickleDict, items: PickleValue[]): void {
    if (items.length % 2 !== 0) throw this.formatError('odd number of items for key/value pairs');
    for (let i = 0; i < items.length; i += 2) dict.set(items[i], items[i + 1]);
  }

  private memoPut(index: number): void {
    this.memo.set(index, this.peek());
  }

  private memoGet(index: number): void {
    if (!this.memo.has(index)) throw this.formatError(`memo entry ${index} is missing`);
    this.push(this.memo.get(index) as PickleValue);
  }

  private resolveGlobal(opcode: string, module: string, qualname: string): PickleValue {
    const key = `${module}.${qualname}`;
    const value = this.options.globals?.get(key) ?? PLAIN_DATA_GLOBALS.get(key);
    if (value === undefined) throw forbiddenError(`${opcode} ${key}`);
    return value;
  }

  private persistentLoad(pid: PickleValue): PickleValue {
    if (!this.options.persistentLoad) throw forbiddenError(`${this.opcodeName} (this reader takes no persistent ids)`);
    return this.options.persistentLoad(pid);
  }

  // --- readers (every length is checked against the bytes left)

  private require(count: number, what: string): void {
    if (count > this.bytes.byteLength - this.position) {
      throw new FormatError(
        `pickle truncated: ${what} at offset ${this.opcodeStart} needs ${count} bytes, ${this.bytes.byteLength - this.position} left`,
      );
    }
  }

  private readUint8(): number {
    this.require(1, this.opcodeName);
    return this.bytes[this.position++];
  }

  private readUint16(): number {
    this.require(2, this.opcodeName);
    const value = this.view.getUint16(this.position, true);
    this.position += 2;
    return value;
  }

  private readUint32(): number {
    this.require(4, this.opcodeName);
    const value = this.view.getUint32(this.position, true);
    this.position += 4;
    return value;
  }

  private readInt32(): number {
    this.require(4, this.opcodeName);
    const value = this.view.getInt32(this.position, true);
    this.position += 4;
    return value;
  }

  private readInt32NonNegative(): number {
    const value = this.readInt32();
    if (value < 0) throw this.formatError(`negative length ${value}`);
    return value;
  }

  private readUint64(what: string): number {
    this.require(8, this.opcodeName);
    const value = this.view.getBigUint64(this.position, true);
    this.position += 8;
    if (value > BigInt(this.bytes.byteLength)) throw this.formatError(`${what} ${value} exceeds the data`);
    return Number(value);
  }

  /** A view of the next `count` bytes (no copy). */
  private readBytes(count: number): Uint8Array {
    this.require(count, this.opcodeName);
    const view = this.bytes.subarray(this.position, this.position + count);
    this.position += count;
    return view;
  }

  /** A newline-terminated ASCII/latin-1 line (text opcodes), without the newline. */
  private readLine(): string {
    const newline = this.bytes.indexOf(0x0a, this.position);
    if (newline < 0) throw new FormatError(`pickle truncated: ${this.opcodeName} at offset ${this.opcodeStart} has no end of line`);
    let line = '';
    for (let i = this.position; i < newline; i++) line += String.fromCharCode(this.bytes[i]);
    this.position = newline + 1;
    return line;
  }

  private decodeUtf8(bytes: Uint8Array): string {
    try {
      return utf8.decode(bytes);
    } catch {
      throw this.formatError('string is not valid UTF-8');
    }
  }

  /** Little-endian two's-complement integer of `length` bytes (LONG1/LONG4). */
  private readLong(length: number): number | bigint {
    if (length > MAX_LONG_BYTES) throw this.formatError(`integer of ${length} bytes is too large`);
    const bytes = this.readBytes(length);
    if (length === 0) return 0;
    let hex = '';
    for (let i = length - 1; i >= 0; i--) hex += bytes[i].toString(16).padStart(2, '0');
    let value = BigInt(`0x${hex}`);
    if (bytes[length - 1] & 0x80) value -= 1n << BigInt(8 * length);
    return narrowInteger(value);
  }

  private parseTextInt(text: string): number | bigint | boolean {
    if (text === '01') return true; // protocol 0 spells booleans as INT 01 / 00
    if (text === '00') return false;
    if (!/^[-+]?\d+$/.test(text) || text.length > MAX_LONG_BYTES) throw this.formatError(`bad integer literal ${JSON.stringify(text)}`);
    return narrowInteger(BigInt(text));
  }

  private parseMemoIndex(text: string): number {
    if (!/^\d{1,15}$/.test(text)) throw this.formatError(`bad memo index ${JSON.stringify(text)}`);
    return Number(text);
  }
}

/** A number when it is a safe integer, else the bigint. */
function narrowInteger(value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

/** Python 2 `repr` of a str (protocol 0 STRING): quotes and backslash escapes → bytes. */
function decodeQuotedString(line: string, fail: (message: string) => FormatError): Uint8Array {
  const quote = line[0];
  if (line.length < 2 || (quote !== "'" && quote !== '"') || line[line.length - 1] !== quote) {
    throw fail('STRING argument is not a quoted string');
  }
  const body = line.slice(1, -1);
  const out: number[] = [];
  const simpleEscapes: Record<string, number> = { n: 10, r: 13, t: 9, '\\': 92, "'": 39, '"': 34, a: 7, b: 8, f: 12, v: 11, '0': 0 };
  for (let i = 0; i < body.length; i++) {
    const char = body[i];
    if (char !== '\\') {
      out.push(body.charCodeAt(i) & 0xff);
      continue;
    }
    const next = body[++i];
    if (next === 'x' && /^[0-9a-fA-F]{2}$/.test(body.slice(i + 1, i + 3))) {
      out.push(parseInt(body.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (next !== undefined && next in simpleEscapes) {
      out.push(simpleEscapes[next]);
    } else {
      throw fail(`unsupported escape \\${next ?? ''} in STRING`);
    }
  }
  return Uint8Array.from(out);
}

/** Python's raw-unicode-escape (protocol 0 UNICODE): \uXXXX and \UXXXXXXXX escapes, latin-1 otherwise. */
function decodeRawUnicodeEscape(line: string, fail: (message: string) => FormatError): string {
  return line.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_match, short?: string, long?: string) => {
    const codePoint = parseInt(short ?? long ?? '', 16);
    if (codePoint > 0x10ffff) throw fail(`code point U+${codePoint.toString(16)} is out of range`);
    return String.fromCodePoint(codePoint);
  });
}

// ---------------------------------------------------------------------------------
// Writing (protocol 2, the subset torch.save uses for a state dict)

/**
 * Emits a protocol 2 pickle opcode by opcode. Methods return `this` so a structure
 * reads in the order its opcodes appear: `w.mark().string('a').int(1).tuple()`.
 */
export class PickleWriter {
  private readonly chunks: Uint8Array[] = [];
  private readonly encoder = new TextEncoder();

  constructor() {
    this.op(0x80, 2); // PROTO 2
  }

  private op(...bytes: number[]): this {
    this.chunks.push(Uint8Array.from(bytes));
    return this;
  }

  private raw(bytes: Uint8Array): this {
    this.chunks.push(bytes);
    return this;
  }

  mark(): this {
    return this.op(0x28);
  }

  /** TUPLE: everything since the last mark. */
  tuple(): this {
    return this.op(0x74);
  }

  emptyTuple(): this {
    return this.op(0x29);
  }

  /** A tuple of integers (EMPTY_TUPLE, TUPLE1..3 or MARK … TUPLE). */
  intTuple(values: readonly number[]): this {
    if (values.length === 0) return this.emptyTuple();
    if (values.length > 3) this.mark();
    for (const value of values) this.int(value);
    if (values.length > 3) return this.tuple();
    return this.op([0x85, 0x86, 0x87][values.length - 1]);
  }

  bool(value: boolean): this {
    return this.op(value ? 0x88 : 0x89);
  }

  /** The shortest integer opcode: BININT1, BININT2, BININT, or LONG1 beyond 32 bits. */
  int(value: number | bigint): this {
    if (typeof value === 'number') {
      if (!Number.isSafeInteger(value)) throw new RangeError(`pickle int must be a safe integer, got ${value}`);
      if (value >= 0 && value < 0x100) return this.op(0x4b, value);
      if (value >= 0 && value < 0x10000) return this.op(0x4d, value & 0xff, value >>> 8);
      if (value >= -0x80000000 && value < 0x80000000) {
        const bytes = new Uint8Array(5);
        bytes[0] = 0x4a;
        new DataView(bytes.buffer).setInt32(1, value, true);
        return this.raw(bytes);
      }
    }
    return this.raw(long1Bytes(BigInt(value)));
  }

  /** BINUNICODE (UTF-8). */
  string(value: string): this {
    const text = this.encoder.encode(value);
    const header = new Uint8Array(5);
    header[0] = 0x58;
    new DataView(header.buffer).setUint32(1, text.byteLength, true);
    return this.raw(header).raw(text);
  }

  /** GLOBAL `module.name` (the reader must allowlist it). */
  global(module: string, name: string): this {
    return this.op(0x63).raw(this.encoder.encode(`${module}\n${name}\n`));
  }

  reduce(): this {
    return this.op(0x52);
  }

  binPersId(): this {
    return this.op(0x51);
  }

  /** SETITEMS: key/value pairs since the last mark into the dict below it. */
  setItems(): this {
    return this.op(0x75);
  }

  stop(): this {
    return this.op(0x2e);
  }

  bytes(): Uint8Array {
    const total = this.chunks.reduce((sum, chunk) => sum + chunk.byteLength, 0);
    const out = new Uint8Array(total);
    let offset = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, offset);
      offset += chunk.byteLength;
    }
    return out;
  }
}

/** LONG1: a length byte and the minimal little-endian two's-complement bytes. */
function long1Bytes(value: bigint): Uint8Array {
  const bytes: number[] = [];
  let rest = value;
  for (;;) {
    const byte = Number(BigInt.asUintN(8, rest));
    bytes.push(byte);
    rest >>= 8n;
    const signSettled = (rest === 0n && (byte & 0x80) === 0) || (rest === -1n && (byte & 0x80) !== 0);
    if (signSettled) break;
  }
  if (bytes.length > 255) throw new RangeError('integer too large for LONG1');
  return Uint8Array.from([0x8a, bytes.length, ...bytes]);
}
