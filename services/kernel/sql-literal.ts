/**
 * Bind parameters written into SQL text as quoted literals, for the one kind of statement that
 * cannot take parameters: `COPY (SELECT ...) TO STDOUT` (PostgreSQL's COPY has no parameter
 * slots). Everywhere else values travel as bind parameters.
 *
 * `$name` placeholders (Sequelize's named bind syntax, as used across services/) are replaced by the
 * value's literal: strings through pg's `escapeLiteral` (quotes doubled, backslashes in an E''
 * string, so the text is one literal whatever it holds), numbers only when finite, dates as ISO
 * text, arrays as `ARRAY[...]` of such literals. The SQL around the placeholder keeps its casts
 * (`$ids::bigint[]`), which give the literals their types. A placeholder without a value, or a value
 * of another kind, throws: nothing is ever spliced in as raw text.
 */
import pg from 'pg';
import { SqlLiteralError } from './errors.js';

const PLACEHOLDER = /\$([A-Za-z_][A-Za-z0-9_]*)/g;

export function sqlLiteral(value: unknown, name = 'value'): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'string') return pg.escapeLiteral(value.replace(/\0/g, '\\0'));
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new SqlLiteralError(`$${name}: ${value} is not a finite number`);
    // Negative numbers in parentheses: `-1` after an operator must stay one value.
    return value < 0 ? `(${String(value)})` : String(value);
  }
  if (typeof value === 'bigint') return value < 0n ? `(${String(value)})` : String(value);
  if (typeof value === 'boolean') return value ? 'TRUE' : 'FALSE';
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new SqlLiteralError(`$${name}: invalid date`);
    return pg.escapeLiteral(value.toISOString());
  }
  if (Array.isArray(value)) return `ARRAY[${value.map((v, i) => sqlLiteral(v, `${name}[${i}]`)).join(', ')}]`;
  throw new SqlLiteralError(`$${name}: cannot be written as an SQL literal (${typeof value})`);
}

/** `sql` with each `$name` replaced by the literal of `bind[name]`. */
export function inlineBind(sql: string, bind: Record<string, unknown>): string {
  return sql.replace(PLACEHOLDER, (_, name: string) => {
    if (!Object.hasOwn(bind, name)) throw new SqlLiteralError(`$${name}: no value given`);
    return sqlLiteral(bind[name], name);
  });
}
