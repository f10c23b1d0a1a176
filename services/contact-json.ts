/**
 * A large JSON import read element by element, so that it never holds the event loop: the body
 * (`[ {...}, ... ]` or `{ "contacts": [ ... ] }`) is scanned for the boundaries of its contacts in
 * slices of SLICE_BYTES, yielding to the event loop between slices, and each contact is parsed on
 * its own (secure-json-parse, as fastify's JSON parser: `__proto__` and `constructor.prototype`
 * keys refused). `JSON.parse` of a whole 10 MiB body held the loop for 300-560 ms here.
 *
 * The scanner only tracks what JSON.parse needs to find an element's end: strings (with their
 * escapes) and nesting. Whatever it does not check (a malformed element, a number) the element's
 * own parse refuses, naming `contacts[i]`. Bytes that are not UTF-8 are refused the same way.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import sjson from 'secure-json-parse';
import { ValidationError } from './kernel/errors.js';
import type { SourceRow } from './contact-import.js';
import type { ByteCounter } from './contact-csv.js';

/** Bytes scanned between two yields to the event loop (about a millisecond of work). */
export const SLICE_BYTES = 256 * 1024;

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;

const fatal = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

const refuse = (path: string, message: string) => new ValidationError([{ path, message }]);

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

export interface JsonRowsOptions {
  /** Applied to each parsed contact before validation (the HTTP layer renames snake_case keys). */
  mapRow?: (row: unknown, path: string) => unknown;
  /** Bytes read so far, for the background import's progress. */
  counter?: ByteCounter;
}

/**
 * The contacts of a JSON body, one SourceRow at a time (`at: ['contacts', i]`). A ValidationError
 * for a body that is not one of the two shapes, or a contact that does not parse.
 */
export async function* jsonRows(bytes: Uint8Array, opts: JsonRowsOptions = {}): AsyncGenerator<SourceRow> {
  const n = bytes.length;
  let i = 0;
  let budget = SLICE_BYTES;
  const skipSpace = () => {
    while (i < n && isSpace(bytes[i]!)) i++;
  };
  /** Index just past the string starting at bytes[start] (a quote). */
  const stringEnd = (start: number): number => {
    let j = start + 1;
    while (j < n) {
      const b = bytes[j]!;
      if (b === BACKSLASH) j += 2;
      else if (b === QUOTE) return j + 1;
      else j++;
    }
    throw refuse('body', 'is not valid JSON: a string is not closed');
  };
  if (n >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) i = 3; // a byte-order mark
  skipSpace();
  let wrapped = false;
  if (bytes[i] === OPEN_BRACE) {
    // { "contacts": [ ... ] }, and nothing else: the same fields as the schema for small bodies.
    wrapped = true;
    i++;
    skipSpace();
    if (bytes[i] !== QUOTE) throw refuse('contacts', 'is required');
    const keyEnd = stringEnd(i);
    const key = decode(bytes.subarray(i, keyEnd), 'body');
    if (key !== '"contacts"') throw refuse(safeKey(key), 'is not a field of a contact import (expected "contacts")');
    i = keyEnd;
    skipSpace();
    if (bytes[i] !== COLON) throw refuse('body', 'is not valid JSON: expected ":" after "contacts"');
    i++;
    skipSpace();
  }
  if (bytes[i] !== OPEN_BRACKET) throw refuse('contacts', 'must be an array of contacts');
  i++;
  let index = 0;
  for (;;) {
    skipSpace();
    if (bytes[i] === CLOSE_BRACKET && index === 0) {
      i++;
      break;
    }
    // One element: scan to the comma or bracket that ends it at this level.
    const start = i;
    let depth = 0;
    while (i < n) {
      const b = bytes[i]!;
      if (b === QUOTE) {
        i = stringEnd(i);
        continue;
      }
      if (b === OPEN_BRACE || b === OPEN_BRACKET) depth++;
      else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
        if (depth === 0) break;
        depth--;
      } else if (b === COMMA && depth === 0) break;
      i++;
    }
    if (i >= n) throw refuse(`contacts[${index}]`, 'is not valid JSON: the array is not closed');
    const path = `contacts[${index}]`;
    const text = decode(bytes.subarray(start, i), path);
    let value: unknown;
    try {
      value = sjson.parse(text, null, { protoAction: 'error', constructorAction: 'error' });
    } catch (err) {
      throw refuse(path, `is not valid JSON (${(err as Error).message})`);
    }
    yield { at: ['contacts', index], input: opts.mapRow ? opts.mapRow(value, path) : value };
    index++;
    const end = bytes[i]!;
    i++;
    budget -= i - start;
    if (opts.counter) opts.counter.bytes = i;
    if (budget <= 0) {
      budget = SLICE_BYTES;
      await yieldToLoop();
    }
    if (end === CLOSE_BRACKET) break;
    if (end !== COMMA) throw refuse(path, 'is not valid JSON: expected "," or "]" after it');
  }
  if (index === 0) throw refuse('contacts', 'must hold at least one contact');
  skipSpace();
  if (wrapped) {
    if (bytes[i] === COMMA) throw refuse('body', 'holds a field besides "contacts"');
    if (bytes[i] !== CLOSE_BRACE) throw refuse('body', 'is not valid JSON: expected "}" at the end');
    i++;
    skipSpace();
  }
  if (i < n) throw refuse('body', 'is not valid JSON: text after the end');
  if (opts.counter) opts.counter.bytes = n;
}

function decode(bytes: Uint8Array, path: string): string {
  try {
    return fatal.decode(bytes);
  } catch {
    throw refuse(path, 'is not valid UTF-8');
  }
}

/** A key as an error path: its text, without quotes, cut short. */
function safeKey(quoted: string): string {
  return quoted.slice(1, -1).slice(0, 40) || 'body';
}
