/**
 * UTF-8 validation of request bodies and files, so bytes that are not UTF-8 are refused with the
 * line (CSV) or field (JSON) they are in, instead of being decoded to U+FFFD and stored (issue 17).
 *
 * The checker is the WHATWG decoder's state machine (overlong forms, surrogates, code points above
 * U+10FFFF and truncated sequences are all errors), fed chunk by chunk so a character split across
 * two chunks is fine. It counts line feeds as it goes, to name the line of the first bad byte.
 */
import { ValidationError } from './kernel/errors.js';

export const NOT_UTF8 = 'is not valid UTF-8 text (bytes that are not UTF-8 are refused, never replaced)';

export class Utf8Checker {
  private needed = 0;
  private seen = 0;
  private lower = 0x80;
  private upper = 0xbf;
  /** 1-based line of the byte being read. */
  line = 1;
  /** Bytes read so far. */
  offset = 0;
  /** Line and byte offset of the first invalid sequence, once found. */
  bad: { line: number; offset: number } | undefined;

  /** Reads `bytes`; returns false (and records `bad`) at the first invalid sequence. */
  scan(bytes: Uint8Array): boolean {
    if (this.bad) return false;
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      if (this.needed === 0) {
        if (b < 0x80) {
          if (b === 0x0a) this.line++;
          continue;
        }
        if (b >= 0xc2 && b <= 0xdf) this.needed = 1;
        else if (b >= 0xe0 && b <= 0xef) {
          if (b === 0xe0) this.lower = 0xa0;
          if (b === 0xed) this.upper = 0x9f;
          this.needed = 2;
        } else if (b >= 0xf0 && b <= 0xf4) {
          if (b === 0xf0) this.lower = 0x90;
          if (b === 0xf4) this.upper = 0x8f;
          this.needed = 3;
        } else return this.fail(i);
        this.start = this.offset + i;
        continue;
      }
      if (b < this.lower || b > this.upper) return this.fail(i);
      this.lower = 0x80;
      this.upper = 0xbf;
      if (++this.seen === this.needed) this.needed = this.seen = 0;
    }
    this.offset += bytes.length;
    return true;
  }

  /** The end of the input: false when it stops inside a character. */
  finish(): boolean {
    if (this.bad) return false;
    if (this.needed !== 0) {
      this.bad = { line: this.line, offset: this.start };
      return false;
    }
    return true;
  }

  private start = 0;
  private fail(i: number): false {
    this.bad = { line: this.line, offset: this.needed ? this.start : this.offset + i };
    return false;
  }

  /** scan(), throwing a ValidationError naming the line (`line 7`). */
  push(bytes: Uint8Array): void {
    if (!this.scan(bytes)) throw this.error();
  }
  /** finish(), throwing likewise. */
  end(): void {
    if (!this.finish()) throw this.error();
  }
  error(): ValidationError {
    return new ValidationError([{ path: `line ${this.bad!.line}`, message: `${NOT_UTF8} (byte ${this.bad!.offset})` }]);
  }
}
