/**
 * A strict JSON parser with the acceptance rules of serde_json, the parser behind the
 * safetensors reference implementation (RFC 8259 exactly: no comments, no trailing
 * commas, no leading zeros, no raw control characters in strings, no lone
 * surrogates, nesting at most 127 deep, only whitespace after the value).
 *
 * Unlike JSON.parse it keeps what a typed reader must see: numbers stay as their
 * source text (so `2.0` is not mistaken for the integer 2, and integers beyond 2^53
 * stay exact), and objects keep every entry in order, duplicates included.
 * It never recurses beyond the depth limit, so hostile nesting cannot overflow the stack.
 */
import { FormatError } from './errors.js';

/** A JSON number as written in the source. */
export class JsonNumber {
  constructor(readonly text: string) {}

  /** True for an integer literal (no fraction, no exponent). */
  get isInteger(): boolean {
    return /^-?\d+$/.test(this.text);
  }
}

/** A JSON object: its entries in source order, duplicates kept. */
export class JsonObject {
  constructor(readonly entries: Array<[string, JsonValue]>) {}
}

export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;

/** serde_json's recursion limit: 128 counted down before each check, so 127 nested arrays/objects. */
const MAX_DEPTH = 127;

/** Parses `text` as one JSON value; FormatError (ERR_FORMAT) with the offset on any deviation. */
export function parseStrictJson(text: string): JsonValue {
  const parser = new StrictJsonParser(text);
  parser.skipWhitespace();
  const value = parser.parseValue(MAX_DEPTH);
  parser.skipWhitespace();
  if (!parser.atEnd()) throw parser.error('trailing characters after the JSON value');
  return value;
}

class StrictJsonParser {
  private position = 0;

  constructor(private readonly text: string) {}

  atEnd(): boolean {
    return this.position >= this.text.length;
  }

  error(message: string): FormatError {
    return new FormatError(`invalid JSON at character ${this.position}: ${message}`);
  }

  skipWhitespace(): void {
    for (;;) {
      const c = this.text.charCodeAt(this.position);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.position++;
      else return;
    }
  }

  parseValue(depthLeft: number): JsonValue {
    const c = this.text[this.position];
    switch (c) {
      case '{':
        return this.parseObject(depthLeft);
      case '[':
        return this.parseArray(depthLeft);
      case '"':
        return this.parseString();
      case 't':
        return this.parseLiteral('true', true);
      case 'f':
        return this.parseLiteral('false', false);
      case 'n':
        return this.parseLiteral('null', null);
      case undefined:
        throw this.error('unexpected end of input');
      default:
        if (c === '-' || (c >= '0' && c <= '9')) return this.parseNumber();
        throw this.error(`unexpected character ${JSON.stringify(c)}`);
    }
  }

  private enter(depthLeft: number): number {
    if (depthLeft <= 0) throw this.error('recursion limit exceeded');
    this.position++;
    this.skipWhitespace();
    return depthLeft - 1;
  }

  private parseObject(depthLeft: number): JsonObject {
    const innerDepth = this.enter(depthLeft);
    const entries: Array<[string, JsonValue]> = [];
    if (this.text[this.position] === '}') {
      this.position++;
      return new JsonObject(entries);
    }
    for (;;) {
      if (this.text[this.position] !== '"') throw this.error('expected a string key');
      const key = this.parseString();
      this.skipWhitespace();
      if (this.text[this.position] !== ':') throw this.error("expected ':' after an object key");
      this.position++;
      this.skipWhitespace();
      entries.push([key, this.parseValue(innerDepth)]);
      this.skipWhitespace();
      const next = this.text[this.position++];
      if (next === '}') return new JsonObject(entries);
      if (next !== ',') throw this.error("expected ',' or '}' in an object");
      this.skipWhitespace();
    }
  }

  private parseArray(depthLeft: number): JsonValue[] {
    const innerDepth = this.enter(depthLeft);
    const items: JsonValue[] = [];
    if (this.text[this.position] === ']') {
      this.position++;
      return items;
    }
    for (;;) {
      items.push(this.parseValue(innerDepth));
      this.skipWhitespace();
      const next = this.text[this.position++];
      if (next === ']') return items;
      if (next !== ',') throw this.error("expected ',' or ']' in an array");
      this.skipWhitespace();
    }
  }

  private parseLiteral<T>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.position)) throw this.error(`expected ${word}`);
    this.position += word.length;
    return value;
  }

  private parseNumber(): JsonNumber {
    const match = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
    match.lastIndex = this.position;
    const found = match.exec(this.text);
    if (!found || found[0] === '-' || found[0].length === 0) throw this.error('invalid number');
    this.position += found[0].length;
    const after = this.text[this.position];
    if (after !== undefined && /[0-9.eE+-]/.test(after)) throw this.error('invalid number');
    return new JsonNumber(found[0]);
  }

  private parseString(): string {
    this.position++; // opening quote
    let result = '';
    let runStart = this.position;
    for (;;) {
      const c = this.text.charCodeAt(this.position);
      if (Number.isNaN(c)) throw this.error('unterminated string');
      if (c === 0x22) {
        result += this.text.slice(runStart, this.position);
        this.position++;
        return result;
      }
      if (c < 0x20) throw this.error('control character in a string');
      if (c >= 0xd800 && c <= 0xdfff) {
        // Raw surrogates come only from a UTF-16 pair (the text was valid UTF-8).
        this.position++;
        continue;
      }
      if (c !== 0x5c) {
        this.position++;
        continue;
      }
      result += this.text.slice(runStart, this.position);
      this.position++;
      result += this.parseEscape();
      runStart = this.position;
    }
  }

  private parseEscape(): string {
    const c = this.text[this.position++];
    switch (c) {
      case '"':
        return '"';
      case '\\':
        return '\\';
      case '/':
        return '/';
      case 'b':
        return '\b';
      case 'f':
        return '\f';
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 't':
        return '\t';
      case 'u': {
        const unit = this.parseHex4();
        if (unit >= 0xdc00 && unit <= 0xdfff) throw this.error('lone trailing surrogate in hex escape');
        if (unit < 0xd800 || unit > 0xdbff) return String.fromCharCode(unit);
        if (this.text.slice(this.position, this.position + 2) !== '\\u') throw this.error('lone leading surrogate in hex escape');
        this.position += 2;
        const low = this.parseHex4();
        if (low < 0xdc00 || low > 0xdfff) throw this.error('lone leading surrogate in hex escape');
        return String.fromCharCode(unit, low);
      }
      default:
        throw this.error('invalid escape');
    }
  }

  private parseHex4(): number {
    const digits = this.text.slice(this.position, this.position + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) throw this.error('invalid \\u escape');
    this.position += 4;
    return parseInt(digits, 16);
  }
}
