/**
 * Hostile inputs for the "Hostile input" chaos files: fast-check arbitraries of strings and values
 * an attacker (or a careless spreadsheet) sends, mutations of valid bodies, a database fingerprint
 * to prove that a refused input wrote nothing, and a tally of outcomes for the summary table.
 */
import fc from 'fast-check';
import type { Sequelize } from 'sequelize';
import { FairsendError, ErrorCodes } from '../../../services/kernel/errors.js';
import { recordFigures } from '../report.js';

/** Fixed seeds: a failure prints its seed and path, and re-running replays it exactly. */
export const SEEDS = { engine: 20_260_701, api: 20_260_702, auth: 20_260_703 } as const;

/** Strings that break naive code: SQL, JSON and shell metacharacters, LIKE wildcards, jsonb operators. */
export const SQL_META = [
  "'; DROP TABLE contacts; --",
  "' OR '1'='1",
  'Robert"); DELETE FROM tasks;--',
  '%',
  '_',
  '\\',
  '\\x00',
  '$1',
  '$$',
  '?|',
  '?&',
  '@>',
  '::text',
  '/* */',
  '{"a":1}',
  '[1,2]',
  '`rm -rf /`',
  '${process.env}',
  '{{name}}',
  '{{__proto__}}',
  '<script>alert(1)</script>',
  '&amp;',
  'NULL',
  'null',
  'undefined',
  'constructor',
  '__proto__',
];

/** Unicode that must survive a round trip: combining marks, RTL, emoji with joiners, CJK, astral. */
export const UNICODE = [
  'Zoë',
  'José Ñúñez',
  'Ǆemal',
  '北京市',
  'Владимир',
  'שלום',
  'مرحبا',
  '\u202eevil\u202c',
  'e\u0301',
  '👩🏽‍💻',
  '🏳️‍🌈',
  '𝕳𝖊𝖑𝖑𝖔',
  'ﬀ',
  '\u200b',
  '\u00a0',
  'İstanbul',
  'ß',
  '\u2028',
  '\u0085',
];

/** Header injection attempts: CR, LF, CRLF, and the header they try to smuggle. */
export const INJECTIONS = [
  'Hi\r\nBcc: victim@evil.example',
  'Hi\nX-Injected: 1',
  'Hi\rSubject: spoofed',
  '\r\n\r\n<html>body</html>',
  'x\r\n.\r\nMAIL FROM:<a@evil.example>',
  'name\u000d\u000aTo: all@evil.example',
];

/** Characters PostgreSQL cannot store in text or jsonb, or that are not Unicode at all. */
export const UNSTORABLE = ['a\u0000b', '\u0000', 'x\uD800', '\uDFFFy', 'ok\uDBFF'];

/** Addresses: valid unicode local parts and IDN domains, and broken or hostile ones. */
export const GOOD_ADDRESSES = [
  'plain@example.org',
  'UPPER.Case+tag@Example.ORG',
  'josé@example.org',
  'user@bücher.example',
  'пользователь@пример.рф',
  '用户@例子.广告',
  "o'brien@example.org",
  'a.b-c_d@sub.domain.example',
  'x@xn--bcher-kva.example',
];
export const BAD_ADDRESSES = [
  '',
  ' ',
  'no-at-sign',
  '@example.org',
  'a@',
  'a@b',
  'a b@example.org',
  'a@example.org\r\nBcc: v@evil.example',
  'a@example.org, b@example.org',
  '"quoted"@example.org',
  'a@example.org>',
  '<a@example.org>',
  'a\u0000@example.org',
  'x'.repeat(65) + '@example.org',
  'a@' + 'd'.repeat(400) + '.example',
];

const fromList = <T>(xs: readonly T[]) => fc.constantFrom(...xs);

/** Any hostile string: metacharacters, unicode, injections, unstorable, random full unicode, long. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fromList(SQL_META) },
  { weight: 3, arbitrary: fromList(UNICODE) },
  { weight: 2, arbitrary: fromList(INJECTIONS) },
  { weight: 2, arbitrary: fromList(UNSTORABLE) },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 2, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', '   \t ') },
  { weight: 1, arbitrary: fc.integer({ min: 150, max: 1200 }).map((n) => 'L'.repeat(n)) },
  { weight: 1, arbitrary: fc.tuple(fromList(UNICODE), fromList(SQL_META)).map(([a, b]) => `${a} ${b}`) },
);

/** Any JSON-ish value a client may send where something else was expected. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: hostileString },
  {
    weight: 2,
    arbitrary: fc.constantFrom(0, -1, 1.5, -0, 2 ** 31, 2 ** 31 - 1, 2 ** 53, Number.MAX_SAFE_INTEGER + 2, 1e308, -1e308, 5e-324),
  },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, [], {}, [null], { __proto__: null }) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.array(hostileString, { maxLength: 4 }) },
);

/** A valid body with one to three of its fields removed, replaced by hostile values, or joined by unknown ones. */
export function mutated<T extends Record<string, unknown>>(
  valid: fc.Arbitrary<T>,
  fields: readonly string[],
  valueFor: (field: string) => fc.Arbitrary<unknown> = () => hostileValue,
): fc.Arbitrary<Record<string, unknown>> {
  const edit = fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...fields).chain((k) => valueFor(k).map((v) => ({ kind: 'set' as const, k, v }))) },
    { weight: 1, arbitrary: fc.constantFrom(...fields).map((k) => ({ kind: 'delete' as const, k, v: undefined })) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.constantFrom('__proto__', 'constructor', 'extra', 'isAdmin', 'role', 'id'), hostileValue)
        .map(([k, v]) => ({ kind: 'set' as const, k, v })),
    },
  );
  return fc.tuple(valid, fc.array(edit, { minLength: 0, maxLength: 3 })).map(([body, edits]) => {
    const out: Record<string, unknown> = { ...body };
    for (const e of edits) {
      if (e.kind === 'delete') delete out[e.k];
      else Object.defineProperty(out, e.k, { value: e.v, enumerable: true, configurable: true, writable: true });
    }
    return out;
  });
}

/** True when `s` is text PostgreSQL stores as given: no NUL, no lone UTF-16 surrogate. */
export const storable = (s: string) => !s.includes('\u0000') && !/\p{Cs}/u.test(s);

/** Every string (and object key) in a value, to predict whether the value is storable. */
export function stringsIn(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) stringsIn(v, out);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      out.push(k);
      stringsIn(v, out);
    }
  }
  return out;
}

/** The codes a refused programmatic call may carry: all typed, none "unknown". */
export const TYPED_CODES = new Set<string>(Object.values(ErrorCodes));

/** Asserts `err` is a typed fairsend error (stable code, message) and returns its code. */
export function typedCode(err: unknown, what: string): string {
  if (!(err instanceof FairsendError)) {
    const e = err as Error;
    throw new Error(`${what}: expected a FairsendError, got ${e?.constructor?.name ?? typeof err}: ${e?.message ?? String(err)}`);
  }
  if (!TYPED_CODES.has(err.code)) throw new Error(`${what}: unknown error code ${err.code}`);
  if (!err.message) throw new Error(`${what}: error ${err.code} has no message`);
  return err.code;
}

/**
 * A fingerprint of everything a refused input could have written: row counts and an md5 of the
 * rows of every table the API writes (tasks, subtasks, contacts, templates, users, services).
 * Equal before and after a refused call means nothing was written, not even in part.
 */
export async function fingerprint(db: Sequelize): Promise<Record<string, string>> {
  const tables: Record<string, string> = {
    users: 'SELECT id, name, email, role, remaining_quota, timezone, api_token_hash FROM users',
    contacts: 'SELECT id, user_id, email, name, tags, attributes, status, timezone FROM contacts',
    templates: 'SELECT id, user_id, name, subject, html, text FROM templates',
    tasks: 'SELECT id, created_by, name, status, reserved_quota, contacts, templates, recipient_rule FROM tasks',
    subtasks: 'SELECT task_id, contact_id, status FROM subtasks',
    email_services: 'SELECT id, name, transport, sending_rate, daily_quota, enabled FROM email_services',
    user_services: 'SELECT * FROM user_services',
  };
  const parts = Object.entries(tables).map(
    ([name, sql]) => `(SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '-') FROM (${sql}) t) AS ${name}`,
  );
  const [rows] = (await db.query(`SELECT ${parts.join(', ')}`)) as [Record<string, string>[], unknown];
  return rows[0]!;
}

/** Outcome counts of one scenario, for recordFigures. */
export class Tally {
  tried = 0;
  /** Inputs that were hostile (refused, or accepted hostile strings), i.e. faults injected. */
  hostile = 0;
  /** Hostile inputs that ended as documented. */
  survived = 0;
  readonly byStatus = new Map<string | number, number>();
  count(outcome: string | number, hostile: boolean, documented: boolean): void {
    this.tried++;
    if (hostile) {
      this.hostile++;
      if (documented) this.survived++;
    }
    this.byStatus.set(outcome, (this.byStatus.get(outcome) ?? 0) + 1);
  }
  /** Records this input-only scenario's row of the chaos summary (nothing sent, lost or duplicated). */
  record(scenario: string, notes: string): Promise<void> {
    return recordFigures({
      scenario,
      faultsInjected: this.hostile,
      faultsSurvived: this.survived,
      messagesSent: 0,
      lost: 0,
      duplicates: 0,
      duplicateBound: 0,
      inputsTried: this.tried,
      notes,
    });
  }
  /** "201x40 400x120 ..." for the notes column. */
  summary(): string {
    return [...this.byStatus.entries()]
      .sort(([a], [b]) => String(a).localeCompare(String(b)))
      .map(([k, n]) => `${k}x${n}`)
      .join(' ');
  }
}

/** Collects unhandled rejections while a file runs; assert `seen` is empty at the end. */
export function watchUnhandledRejections(): { seen: unknown[]; stop(): void } {
  const seen: unknown[] = [];
  const onRejection = (reason: unknown) => seen.push(reason);
  process.on('unhandledRejection', onRejection);
  return { seen, stop: () => process.off('unhandledRejection', onRejection) };
}
