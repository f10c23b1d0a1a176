/**
 * The contact import pipeline: rows in (an array, or a stream such as a CSV file being parsed),
 * validated one at a time, written in batches, all in ONE transaction.
 *
 * - All or nothing. The first invalid row stops the writing; the rest of the input is still read
 *   and validated (up to MAX_ISSUES issues), so the error lists every offending row and field,
 *   then the transaction rolls back: nothing of the import is stored.
 * - Never blocks the event loop. Validation is synchronous, so the loop yields (setImmediate)
 *   whenever YIELD_MS of work has run since the last pause; each batch is one awaited statement.
 *   A 100,000-row CSV keeps the loop's longest pause under 50 ms (test/chaos/import-load.chaos.ts).
 * - Bounded memory. At most one batch of validated rows is held (BATCH rows); what grows with the
 *   input is the result's id list and a set of the ids touched (numbers, about 16 bytes a row).
 * - Time zones are checked through a cache (services/timezones.ts), not one Intl formatter a row.
 *
 * Rows with the same address (case-insensitively) merge as a re-import would: later values win,
 * attributes are merged. Inside a batch they are merged in memory (one statement never touches a
 * row twice); across batches the second statement updates the row the first one wrote.
 */
import { performance } from 'node:perf_hooks';
import { ValidationError, type FieldIssue } from './kernel/errors.js';
import type { ServiceContext } from './context.js';
import { contactInputSchema, issuesFrom, LIMITS, unstorableTextIssues } from './validation.js';

/** One input row and where it came from, for error paths: ['contacts', 3] or ['row 5']. */
export interface SourceRow {
  at: PropertyKey[];
  input: unknown;
}

export interface BulkCreateResult {
  created: number;
  updated: number;
  /** Contact ids in the order of the input rows (rows with the same email share an id). */
  ids: number[];
  /**
   * Existing contacts of the import that are unsubscribed or bounced and stay so: an import never
   * re-activates a contact, even a row saying `status: active`.
   */
  inactive: number;
  /** The first INACTIVE_LISTED of them. */
  inactiveContacts: { id: number; email: string; status: 'unsubscribed' | 'bounced' }[];
}

export interface ImportProgress {
  /** Rows read so far (valid or not). */
  rows: number;
  /** Rows written so far (inside the import's transaction: visible to others only at the end). */
  written: number;
}

export interface ImportOptions {
  /** Called after each batch is written, and when the input is read in full. */
  onProgress?: (p: ImportProgress) => void;
  /** Aborts the import: the transaction rolls back and the call rejects. */
  signal?: AbortSignal;
  /** Most rows one import may hold (default LIMITS.contactsPerBatch). */
  maxRows?: number;
}

/**
 * Rows per INSERT ... ON CONFLICT statement: about 10 ms of PostgreSQL each. Building a batch's
 * JSON and reading its result are synchronous, so the batch is kept small enough for that to stay
 * within a few milliseconds.
 */
export const BATCH = 500;
/**
 * The longest stretch of synchronous validation before the loop yields. Short, because on a loaded
 * machine a stretch of CPU work takes several times as long in wall time (test/chaos/import-load.chaos.ts).
 */
const YIELD_MS = 4;
/** Inactive contacts listed by id in a result (all are counted). */
export const INACTIVE_LISTED = 100;
/** Issues collected before the input stops being read. */
export const MAX_ISSUES = 100;

const UPSERT = `
INSERT INTO contacts (user_id, email, name, tags, attributes, timezone, status)
SELECT $userId, r.email, r.name, COALESCE(r.tags, '[]'), COALESCE(r.attributes, '{}'), r.timezone, COALESCE(r.status, 'active')
FROM jsonb_to_recordset($rows::jsonb) AS r(email text, name text, tags jsonb, attributes jsonb, timezone text, status text)
ON CONFLICT (user_id, lower(email)) DO UPDATE SET
  name       = COALESCE(EXCLUDED.name, contacts.name),
  tags       = CASE WHEN $tagsGiven::jsonb ? lower(EXCLUDED.email) THEN EXCLUDED.tags ELSE contacts.tags END,
  attributes = contacts.attributes || EXCLUDED.attributes,
  timezone   = COALESCE(EXCLUDED.timezone, contacts.timezone),
  -- An import never re-activates: an unsubscribed or bounced contact stays so, whatever the row says
  -- (re-activation is an explicit admin action with a reason). Other changes of status apply.
  status     = CASE WHEN $statusGiven::jsonb ? lower(EXCLUDED.email) AND NOT (contacts.status <> 'active' AND EXCLUDED.status = 'active')
                    THEN EXCLUDED.status ELSE contacts.status END,
  updated_at = now()
RETURNING id, email, lower(email) AS key, (xmax = 0) AS inserted, status`;

type ValidRow = ReturnType<typeof contactInputSchema.parse>;

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Merges rows with the same address (later values win, attributes merged): one row per key. */
function mergeByKey(batch: ValidRow[]): Map<string, ValidRow> {
  const byKey = new Map<string, ValidRow>();
  for (const r of batch) {
    const key = r.email.toLowerCase();
    const prev = byKey.get(key);
    byKey.set(
      key,
      prev
        ? {
            email: r.email,
            name: r.name ?? prev.name,
            tags: r.tags ?? prev.tags,
            attributes: prev.attributes || r.attributes ? { ...prev.attributes, ...r.attributes } : undefined,
            timezone: r.timezone ?? prev.timezone,
            status: r.status ?? prev.status,
          }
        : r,
    );
  }
  return byKey;
}

/** Validates one row: its value, or the issues naming its fields. */
function validate(row: SourceRow): { ok: true; value: ValidRow } | { ok: false; issues: FieldIssue[] } {
  const r = contactInputSchema.safeParse(row.input);
  const text = unstorableTextIssues(row.input, row.at);
  if (r.success && !text.length) return { ok: true, value: r.data };
  return { ok: false, issues: [...(r.success ? [] : issuesFrom(r.error, row.at)), ...text] };
}

/**
 * Imports `rows` for `userId` in one transaction; resolves to the counts and ids, or rejects with
 * a ValidationError naming every bad row (up to MAX_ISSUES) having written nothing.
 */
export async function importContacts(
  ctx: ServiceContext,
  userId: number,
  rows: AsyncIterable<SourceRow> | Iterable<SourceRow>,
  opts: ImportOptions = {},
): Promise<BulkCreateResult> {
  const maxRows = opts.maxRows ?? LIMITS.contactsPerBatch;
  return ctx.apiDb.transaction(async (transaction) => {
    const [[owner]] = (await ctx.apiDb.query('SELECT id FROM users WHERE id = $1 FOR SHARE', {
      bind: [userId],
      transaction,
    })) as [unknown[], unknown];
    if (!owner) throw new ValidationError([{ path: 'userId', message: `user ${userId} not found` }]);

    const issues: FieldIssue[] = [];
    const ids: number[] = [];
    const touched = new Set<number>();
    const inactiveIds = new Set<number>();
    const inactiveContacts: BulkCreateResult['inactiveContacts'] = [];
    let created = 0;
    let seen = 0;
    let batch: ValidRow[] = [];
    let lastPause = performance.now();

    const write = async () => {
      const byKey = mergeByKey(batch);
      const unique = [...byKey.values()];
      const tagsGiven = Object.fromEntries(unique.filter((r) => r.tags).map((r) => [r.email.toLowerCase(), true]));
      const statusGiven = Object.fromEntries(unique.filter((r) => r.status).map((r) => [r.email.toLowerCase(), true]));
      const payload = unique.map((r) => ({
        email: r.email,
        name: r.name ?? null,
        tags: r.tags ? [...new Set(r.tags)] : null,
        attributes: r.attributes ?? null,
        timezone: r.timezone ?? null,
        status: r.status ?? null,
      }));
      const [result] = (await ctx.apiDb.query(UPSERT, {
        bind: { userId, rows: JSON.stringify(payload), tagsGiven: JSON.stringify(tagsGiven), statusGiven: JSON.stringify(statusGiven) },
        transaction,
      })) as [{ id: string; email: string; key: string; inserted: boolean; status: 'active' | 'unsubscribed' | 'bounced' }[], unknown];
      const idByKey = new Map<string, number>();
      for (const r of result) {
        const id = Number(r.id);
        idByKey.set(r.key, id);
        if (r.inserted) created++;
        else if (r.status !== 'active' && !inactiveIds.has(id)) {
          inactiveIds.add(id);
          if (inactiveContacts.length < INACTIVE_LISTED) inactiveContacts.push({ id, email: r.email, status: r.status });
        }
        touched.add(id);
      }
      for (const r of batch) ids.push(idByKey.get(r.email.toLowerCase())!);
      batch = [];
      opts.onProgress?.({ rows: seen, written: ids.length });
      lastPause = performance.now();
    };

    for await (const row of rows) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('import aborted');
      if (++seen > maxRows) {
        issues.push({ path: 'contacts', message: `must hold at most ${maxRows} contacts per call` });
        break;
      }
      const v = validate(row);
      if (!v.ok) {
        issues.push(...v.issues);
        batch = [];
        if (issues.length >= MAX_ISSUES) break;
      } else if (!issues.length) {
        batch.push(v.value);
        if (batch.length >= BATCH) await write();
      }
      if (performance.now() - lastPause > YIELD_MS) {
        await yieldToLoop();
        lastPause = performance.now();
      }
    }
    if (issues.length) throw new ValidationError(issues.slice(0, MAX_ISSUES));
    if (seen === 0) throw new ValidationError([{ path: 'contacts', message: 'must hold at least one contact' }]);
    if (batch.length) await write();
    opts.onProgress?.({ rows: seen, written: ids.length });
    return { created, updated: touched.size - created, ids, inactive: inactiveIds.size, inactiveContacts };
  });
}
