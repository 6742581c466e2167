/**
 * Errors with a stable `code`, in the style of Node's own: callers branch on
 * `error.code`, people read the message (which names the parameter, the value and
 * what to do).
 */
export type ErrorCode =
  | 'ERR_ARGUMENT'
  | 'ERR_SHAPE'
  | 'ERR_DTYPE'
  | 'ERR_RANGE'
  | 'ERR_DETACHED'
  | 'ERR_DISPOSED'
  | 'ERR_FORMAT'
  | 'ERR_STATE_DICT'
  | 'ERR_UNSUPPORTED'
  | 'ERR_AUTOGRAD'
  | 'ERR_NATIVE_LOAD'
  | 'ERR_BENCH_MISMATCH';

export class MstarError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'MstarError';
    this.code = code;
  }
}

/** TypeError with a code: the argument has the wrong kind. */
export function typeError(code: ErrorCode, message: string): TypeError & { code: ErrorCode } {
  const error = new TypeError(message) as TypeError & { code: ErrorCode };
  error.code = code;
  return error;
}

/** RangeError with a code: the argument has the right kind but a bad value. */
export function rangeError(code: ErrorCode, message: string): RangeError & { code: ErrorCode } {
  const error = new RangeError(message) as RangeError & { code: ErrorCode };
  error.code = code;
  return error;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name} of length ${(value as unknown as ArrayLike<unknown>).length}`;
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  return String(value);
}

/** "Expected <name> to be <what> but received <value>" (sharp's invalidParameterError shape). */
export function invalidArgument(name: string, what: string, value: unknown): TypeError & { code: ErrorCode } {
  return typeError('ERR_ARGUMENT', `Expected ${name} to be ${what} but received ${describe(value)}`);
}

export function isNonNegativeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export function checkNonNegativeInteger(name: string, value: unknown): number {
  if (!isNonNegativeInteger(value)) {
    throw typeof value === 'number'
      ? rangeError('ERR_ARGUMENT', `Expected ${name} to be a non-negative integer but received ${describe(value)}`)
      : invalidArgument(name, 'a non-negative integer', value);
  }
  return value;
}

export function checkPositiveInteger(name: string, value: unknown): number {
  if (!(typeof value === 'number' && Number.isSafeInteger(value) && value > 0)) {
    throw typeof value === 'number'
      ? rangeError('ERR_ARGUMENT', `Expected ${name} to be a positive integer but received ${describe(value)}`)
      : invalidArgument(name, 'a positive integer', value);
  }
  return value;
}

export function checkFiniteNumber(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw invalidArgument(name, 'a finite number', value);
  return value;
}

/** A number in [lo, hi] (inclusive flags configurable). */
export function checkNumberInRange(name: string, value: unknown, lo: number, hi: number, loOpen = false, hiOpen = false): number {
  checkFiniteNumber(name, value);
  const v = value as number;
  if ((loOpen ? v <= lo : v < lo) || (hiOpen ? v >= hi : v > hi)) {
    throw rangeError('ERR_ARGUMENT', `Expected ${name} to be in ${loOpen ? '(' : '['}${lo}, ${hi}${hiOpen ? ')' : ']'} but received ${v}`);
  }
  return v;
}
