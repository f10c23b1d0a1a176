/**
 * The HTTP API speaks snake_case JSON (`remaining_quota`, `task_id`, `user_id`), the code speaks
 * camelCase (`remainingQuota`), and the zod schemas in services/validation.ts are camelCase. Rather
 * than keep a second, snake_case copy of every schema, the HTTP layer renames keys at its edge, in
 * one place: request bodies, query strings and params are camelized before the shared schemas
 * validate them, responses are snake-cased after their schemas encode them, issue paths are
 * snake-cased back, and the OpenAPI document gets its property names renamed the same way.
 *
 * A contact's `attributes` are user data, not field names ({{first_name}} must stay first_name),
 * so nothing below an `attributes` key is renamed, in either direction.
 */

const KEEP_KEYS_BELOW = new Set(['attributes']);

/** Names the rule cannot derive: nodemailer's `requireTLS` is `require_tls` on the wire. */
const IRREGULAR_SNAKE: Record<string, string> = { requireTLS: 'require_tls' };
const IRREGULAR_CAMEL: Record<string, string> = Object.fromEntries(Object.entries(IRREGULAR_SNAKE).map(([c, s]) => [s, c]));

export const toCamel = (key: string): string =>
  Object.hasOwn(IRREGULAR_CAMEL, key) ? IRREGULAR_CAMEL[key]! : key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
export const toSnake = (key: string): string =>
  Object.hasOwn(IRREGULAR_SNAKE, key)
    ? IRREGULAR_SNAKE[key]!
    : key.replace(/([a-z0-9])([A-Z])/g, (_, a: string, b: string) => `${a}_${b.toLowerCase()}`).replace(/([a-z])([0-9])/g, '$1_$2');

/** A JSON-style object: its prototype is null or a realm's Object.prototype (parsed bodies may come from another realm). */
function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as object | null;
  return proto === null || Object.getPrototypeOf(proto) === null;
}

/** Two keys of one object that name the same field (`user_id` and `userId`). */
export class DuplicateKeyError extends Error {
  constructor(
    readonly path: string,
    readonly keys: [string, string],
  ) {
    super(`${keys[0]} and ${keys[1]} name the same field`);
    this.name = 'DuplicateKeyError';
  }
}

function renameDeep(value: unknown, rename: (k: string) => string, path = ''): unknown {
  if (Array.isArray(value)) return value.map((v, i) => renameDeep(v, rename, `${path}[${i}]`));
  if (!isPlainObject(value)) return value;
  const out: Record<string, unknown> = {};
  const from = new Map<string, string>();
  for (const [k, v] of Object.entries(value)) {
    const key = rename(k);
    // Never let one spelling silently override another: `{ user_id: me, userId: victim }` must not
    // become whichever came last.
    if (from.has(key)) throw new DuplicateKeyError(path ? `${path}.${k}` : k, [from.get(key)!, k]);
    from.set(key, k);
    out[key] = KEEP_KEYS_BELOW.has(key) ? v : renameDeep(v, rename, path ? `${path}.${k}` : k);
  }
  return out;
}

/** The deepest nesting a request may carry; fairsend's own inputs need 4 levels, attributes a few more. */
export const MAX_DEPTH = 32;

/** Nesting depth of a parsed JSON value, without recursion (a hostile body may nest 500,000 levels). */
export function depthOf(value: unknown, limit = MAX_DEPTH): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    max = Math.max(max, d + 1);
    if (max > limit) return max;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, d + 1]);
  }
  return max;
}

/** Request side: `{ user_id: 1, recipient_rule: { include_tags } }` -> `{ userId, recipientRule: { includeTags } }`. */
export const camelizeKeys = (value: unknown): unknown => renameDeep(value, toCamel);

/** Response side: the reverse. Dates and other non-plain objects are left for JSON.stringify. */
export const snakeKeys = (value: unknown): unknown => renameDeep(value, toSnake);

/** `recipientRule.includeTags[0]` -> `recipient_rule.include_tags[0]` (attribute names untouched). */
export function snakePath(path: string): string {
  const parts = path.split('.');
  let keep = false;
  return parts
    .map((p) => {
      if (keep) return p;
      const out = p.replace(/^[A-Za-z_][A-Za-z0-9_]*/, (name) => toSnake(name));
      if (KEEP_KEYS_BELOW.has(out.replace(/\[.*$/, ''))) keep = true;
      return out;
    })
    .join('.');
}

type JsonSchema = Record<string, unknown>;

/**
 * Renames the property names of a generated JSON schema (and its `required` lists) to snake_case,
 * recursing only where subschemas live, so the OpenAPI document shows what the wire carries.
 */
export function snakeJsonSchema(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(snakeJsonSchema);
  if (!isPlainObject(schema)) return schema;
  const out: JsonSchema = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k === 'properties' && isPlainObject(v)) {
      out[k] = Object.fromEntries(
        Object.entries(v).map(([name, sub]) => [toSnake(name), KEEP_KEYS_BELOW.has(toSnake(name)) ? sub : snakeJsonSchema(sub)]),
      );
    } else if (k === 'required' && Array.isArray(v)) {
      out[k] = v.map((n) => (typeof n === 'string' ? toSnake(n) : n));
    } else if (['items', 'additionalProperties', 'not', 'anyOf', 'oneOf', 'allOf', 'prefixItems'].includes(k)) {
      out[k] = snakeJsonSchema(v);
    } else {
      out[k] = v;
    }
  }
  return out;
}
