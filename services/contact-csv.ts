/**
 * CSV contact files, parsed as a stream (csv-parse), one record at a time, into import rows.
 *
 * A header row names the columns: `email`, `name`, `tags` (separated by `;`), `timezone` and
 * `status` are fields, every other column is an attribute (an empty cell leaves it out). Rows are
 * named by their spreadsheet row (the header is row 1; a quoted line break does not shift the
 * names), so an issue reads `row 5.timezone`.
 *
 * Bytes that are not UTF-8 are refused with the line they are on (`row 7`), never decoded to
 * U+FFFD: see utf8.ts.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CsvError, parse } from 'csv-parse';
import { ValidationError, type FieldIssue } from './kernel/errors.js';
import type { SourceRow } from './contact-import.js';
import { Utf8Checker } from './utf8.js';

const FIELDS = new Set(['email', 'name', 'tags', 'timezone', 'status']);
const ATTRIBUTE_RE = /^[A-Za-z_][\w-]{0,63}$/;

/** Bytes (or text) of a CSV file: a Buffer, a string, or a stream or async iterable of chunks. */
export type CsvSource = string | Uint8Array | NodeJS.ReadableStream | AsyncIterable<Uint8Array | string>;

/** Counts the bytes read, for progress. */
export interface ByteCounter {
  bytes: number;
}

/**
 * Bytes handed to csv-parse at a time. Each chunk is parsed in one synchronous call: csv-parse
 * takes about 5 us a row with `trim` (an idle core; several times that on a loaded one), so 16 KiB
 * (some 400 rows of a typical file) took several milliseconds on a loaded core; 8 KiB halves that.
 */
const CHUNK = 8 * 1024;

/** The source as chunks of at most CHUNK bytes. */
async function* chunks(source: CsvSource): AsyncGenerator<Uint8Array> {
  const split = function* (bytes: Uint8Array) {
    for (let i = 0; i < bytes.length; i += CHUNK) yield bytes.subarray(i, i + CHUNK);
  };
  if (typeof source === 'string' || source instanceof Uint8Array) {
    yield* split(typeof source === 'string' ? Buffer.from(source, 'utf8') : source);
    return;
  }
  for await (const c of source as AsyncIterable<Uint8Array | string>) yield* split(typeof c === 'string' ? Buffer.from(c, 'utf8') : c);
}

function headerIssues(names: string[], repeated: Set<string>): FieldIssue[] {
  // A column named twice would be one key of each record: the last cell would silently win.
  const issues: FieldIssue[] = [...repeated].map((c) => ({
    path: `row 1.${c}`,
    message: 'names a column that the header row already has',
  }));
  if (!names.includes('email')) issues.push({ path: 'row 1', message: 'the header row needs an email column' });
  for (const c of names) {
    if (!FIELDS.has(c) && !ATTRIBUTE_RE.test(c)) {
      issues.push({ path: `row 1.${c}`, message: 'attribute columns are named with letters, digits, _ and - (64 at most)' });
    }
  }
  return issues;
}

function toContact(record: Record<string, string>): Record<string, unknown> {
  const contact: Record<string, unknown> = { email: record.email ?? '' };
  const attributes: Record<string, string> = {};
  for (const [k, v] of Object.entries(record)) {
    if (k === 'email') continue;
    if (k === 'tags')
      contact.tags = v
        .split(';')
        .map((t) => t.trim())
        .filter(Boolean);
    else if (FIELDS.has(k)) {
      if (v !== '') contact[k] = v;
    } else if (v !== '') attributes[k] = v;
  }
  if (Object.keys(attributes).length) contact.attributes = attributes;
  return contact;
}

/**
 * The rows of a CSV file, parsed as they stream in. Throws a ValidationError for a malformed file
 * (naming its row), a bad header (row 1), invalid UTF-8 (its row), or a file without contact rows.
 */
export async function* csvRows(source: CsvSource, counter: ByteCounter = { bytes: 0 }): AsyncGenerator<SourceRow> {
  let names: string[] = [];
  const repeated = new Set<string>();
  const parser = parse({
    columns: (header: string[]) => {
      header.forEach((n, i) => header.indexOf(n) !== i && repeated.add(n));
      names = header;
      return header;
    },
    info: true,
    bom: true,
    skip_empty_lines: true,
    trim: true,
  });
  const utf8 = new Utf8Checker();
  async function* checked() {
    for await (const c of chunks(source)) {
      utf8.push(c);
      counter.bytes += c.length;
      yield c;
    }
    utf8.end();
  }
  // The pipeline's failure (a read error, invalid UTF-8) destroys the parser with it, so the loop
  // below sees it; its promise is observed here so it is never an unhandled rejection.
  const feeding = pipeline(Readable.from(checked(), { objectMode: false }), parser).catch((err: unknown) => err);
  let first = true;
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: Record<string, string>; info: { lines: number } }>) {
      if (first) {
        first = false;
        const issues = headerIssues(names, repeated);
        if (issues.length) throw new ValidationError(issues);
      }
      // A record spanning lines (a quoted newline) is named by its first line.
      let inner = 0;
      for (const v of Object.values(record)) for (let i = v.indexOf('\n'); i !== -1; i = v.indexOf('\n', i + 1)) inner++;
      yield { at: [`row ${info.lines - inner}`], input: toContact(record) };
    }
  } catch (err) {
    throw csvError(err);
  } finally {
    parser.destroy();
    await feeding;
  }
  if (first) throw new ValidationError([{ path: 'csv', message: 'needs a header row and at least one contact row' }]);
}

function csvError(err: unknown): unknown {
  if (err instanceof ValidationError) return err;
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof ValidationError) return cause;
  if (err instanceof CsvError || (err as { code?: string }).code?.startsWith('CSV_')) {
    const e = err as { message?: string; lines?: number };
    return new ValidationError([{ path: e.lines ? `row ${e.lines}` : 'csv', message: e.message ?? 'is not valid CSV' }]);
  }
  return err;
}
