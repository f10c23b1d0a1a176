/**
 * Request bodies are UTF-8 or refused (issue 17): bytes that are not UTF-8 are a 400 naming where
 * they are, never decoded to U+FFFD and stored.
 *
 * - JSON: the body is decoded with a fatal TextDecoder before JSON.parse (fastify's own parser,
 *   with its prototype-poisoning checks); on a bad byte, the issue names the JSON field the byte
 *   is in (`contacts[1].name`, `subject`, or `a key of contacts[0].attributes`), found by a scan
 *   of the text up to that byte.
 * - Text bodies (CSV, forms): `decodeUtf8Body` names the line.
 */
import type { FastifyRequest } from 'fastify';
import { ValidationError } from '../../services/kernel/errors.js';
import { NOT_UTF8, Utf8Checker } from '../../services/utf8.js';
import type { App } from './context.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * A JSON body larger than this many bytes is not parsed here: the route gets `{ json: JsonUpload }`
     * and reads it element by element (POST /api/contacts: services/contact-json.ts).
     */
    streamJsonAbove?: number;
  }
}

/**
 * A large JSON body as received, parsed later by the route, piece by piece. A class with a private
 * field, so the request walks of the HTTP layer (nesting depth, key renaming) see nothing inside it.
 */
export class JsonUpload {
  readonly #bytes: Buffer;
  constructor(bytes: Buffer) {
    this.#bytes = bytes;
  }
  get bytes(): Buffer {
    return this.#bytes;
  }
}

const fatal = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lossy = new TextDecoder('utf-8', { ignoreBOM: true });

type Frame = { kind: 'object'; key: string | undefined; expectKey: boolean } | { kind: 'array'; index: number };

function pathOf(stack: Frame[]): string {
  let p = '';
  for (const f of stack) {
    if (f.kind === 'array') p += `[${f.index}]`;
    else if (f.key !== undefined) p += /^[A-Za-z_$][\w$]*$/.test(f.key) ? `${p ? '.' : ''}${f.key}` : `[${JSON.stringify(f.key)}]`;
  }
  return p;
}

/**
 * The JSON path (`contacts[1].email`) of the string holding character `at` of the JSON text
 * `text`; `a key of <path>` when it is an object key; '' when `at` is outside any string.
 */
export function jsonPathAt(text: string, at: number): string {
  const stack: Frame[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      let e = i + 1;
      while (e < text.length && text[e] !== '"') e += text[e] === '\\' ? 2 : 1;
      const top = stack.at(-1);
      const isKey = top?.kind === 'object' && top.expectKey;
      if (at > i && at < e) {
        if (isKey) return `a key of ${pathOf(stack) || 'the body'}`;
        return pathOf(stack);
      }
      if (isKey) {
        try {
          top.key = JSON.parse(text.slice(i, e + 1)) as string;
        } catch {
          top.key = text.slice(i + 1, e);
        }
        top.expectKey = false;
      }
      i = e + 1;
      continue;
    }
    if (i >= at) return '';
    if (c === '{') stack.push({ kind: 'object', key: undefined, expectKey: true });
    else if (c === '[') stack.push({ kind: 'array', index: 0 });
    else if (c === '}' || c === ']') stack.pop();
    else if (c === ',') {
      const top = stack.at(-1);
      if (top?.kind === 'array') top.index++;
      else if (top) top.expectKey = true;
    }
    i++;
  }
  return '';
}

/** The ValidationError for bytes that are not UTF-8: `line N` (text) or the JSON field. */
export function notUtf8Error(bytes: Uint8Array, kind: 'json' | 'text'): ValidationError {
  const checker = new Utf8Checker();
  checker.scan(bytes);
  checker.finish();
  const bad = checker.bad ?? { line: 1, offset: 0 };
  if (kind === 'text') return checker.error();
  const at = lossy.decode(bytes.subarray(0, bad.offset)).length;
  const field = jsonPathAt(lossy.decode(bytes), at) || 'body';
  return new ValidationError([{ path: field, message: `${NOT_UTF8} (byte ${bad.offset}, line ${bad.line})` }]);
}

/** The text of a body that must be UTF-8; a ValidationError naming the line otherwise. */
export function decodeUtf8Body(bytes: Buffer): string {
  try {
    return fatal.decode(bytes);
  } catch {
    throw notUtf8Error(bytes, 'text');
  }
}

/**
 * Replaces the scope's JSON parser by one that refuses bytes that are not UTF-8 (naming the
 * field), then parses with fastify's default parser (prototype and constructor poisoning refused).
 */
export function addUtf8JsonParser(app: App): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request: FastifyRequest, body, done) => {
    const bytes = body as Buffer;
    const above = request.routeOptions.config.streamJsonAbove;
    if (above !== undefined && bytes.length > above) {
      done(null, { json: new JsonUpload(bytes) }); // checked for UTF-8 element by element, by the route
      return;
    }
    let text: string;
    try {
      text = fatal.decode(bytes);
    } catch {
      done(notUtf8Error(bytes, 'json'), undefined);
      return;
    }
    parse(request, text, done);
  });
}
