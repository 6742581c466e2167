/**
 * Errors raised while reading or writing files. Every error a reader throws for
 * bad input carries a stable `code`, so callers (and tests) can tell a damaged or
 * hostile file from a bug:
 *
 * - `ERR_FORMAT`            the bytes do not follow the format (truncated, a size or
 *                           offset out of range, bad JSON, an unknown opcode, ...).
 * - `ERR_PICKLE_FORBIDDEN`  a pickle asks for an opcode or a global outside the
 *                           allowlist; the message names it (`GLOBAL posix.system is not allowed`).
 * - `ERR_DTYPE`             a well-formed file holds a dtype this package cannot represent.
 */

export type IoErrorCode = 'ERR_FORMAT' | 'ERR_PICKLE_FORBIDDEN' | 'ERR_DTYPE';

/** A file (or a value about to be written) that does not follow its format. */
export class FormatError extends Error {
  readonly code: IoErrorCode;

  constructor(message: string, code: IoErrorCode = 'ERR_FORMAT', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FormatError';
    this.code = code;
  }
}

/** `ERR_PICKLE_FORBIDDEN` error for a disallowed opcode or global: `${what} is not allowed`. */
export function forbiddenError(what: string): FormatError {
  return new FormatError(
    `${what} is not allowed (the file asks to run code or build an object outside the state-dict allowlist; nothing was executed)`,
    'ERR_PICKLE_FORBIDDEN',
  );
}

/**
 * Attaches a stable `code` to any error, for errors that are not about file formats
 * (`withCode(new RangeError('...'), 'ERR_SHAPE')`).
 */
export function withCode<E extends Error>(error: E, code: string): E & { code: string } {
  return Object.assign(error, { code });
}

/** Throws `ERR_FORMAT` with `message` unless `condition` holds. */
export function check(condition: boolean, message: string | (() => string)): asserts condition {
  if (!condition) throw new FormatError(typeof message === 'string' ? message : message());
}

/**
 * Runs `parse` and prefixes the message of any FormatError with `source` (a file
 * path), so an error says which file was bad.
 */
export function withSource<T>(source: string | undefined, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (source !== undefined && error instanceof FormatError && !error.message.startsWith(source)) {
      error.message = `${source}: ${error.message}`;
    }
    throw error;
  }
}
