/**
 * Background contact imports: a large import runs after the call that started it has returned,
 * and its progress is polled (`engine.contacts.getImport(userId, id)`, `GET /api/contacts/imports/:id`).
 *
 * States: running -> completed | failed. The process running a job writes its progress to
 * contact_imports at most once a second and at least every HEARTBEAT_MS (a heartbeat). A job
 * whose process died (no heartbeat for STALE_MS) is shown as failed, code IMPORT_INTERRUPTED: its
 * transaction died with the connection, so nothing of it was written. Closing the engine aborts
 * the jobs it runs the same way (each rolls back, and is recorded as failed).
 *
 * The job's input stays in the memory of the process running it (at most the HTTP import body
 * limit, 10 MiB by default, for the HTTP API); rows are never copied to the database except by the
 * import itself, in one transaction.
 */
import { FairsendError, NotFoundError, ValidationError, type FieldIssue } from './kernel/errors.js';
import type { ServiceContext } from './context.js';
import { importContacts, type BulkCreateResult, type ImportOptions, type SourceRow } from './contact-import.js';
import { parseId } from './validation.js';

export const HEARTBEAT_MS = 5000;
export const STALE_MS = 60_000;
const PROGRESS_EVERY_MS = 1000;

export interface ImportJobView {
  id: number;
  userId: number;
  format: 'csv' | 'json';
  status: 'running' | 'completed' | 'failed';
  rowsRead: number;
  /** Rows in the input when known (JSON); null for a CSV stream. */
  rowsTotal: number | null;
  bytesRead: number;
  /** Size of the input in bytes when known. */
  bytesTotal: number | null;
  /** Progress from 0 to 100, by rows when their total is known, else by bytes; null when neither is. */
  percent: number | null;
  /** When completed: what was written (ids are not kept for background imports). */
  result: Pick<BulkCreateResult, 'created' | 'updated' | 'inactive'> | null;
  /** When failed: the error, with every issue for bad input (row and field). */
  error: { code: string; message: string; issues?: FieldIssue[] } | null;
  createdAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

interface Row {
  id: string;
  user_id: number;
  format: 'csv' | 'json';
  status: ImportJobView['status'];
  rows_read: number;
  rows_total: number | null;
  bytes_read: string;
  bytes_total: string | null;
  result: ImportJobView['result'];
  error: ImportJobView['error'];
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
  stale: boolean;
}

function toView(r: Row): ImportJobView {
  const bytesRead = Number(r.bytes_read);
  const bytesTotal = r.bytes_total === null ? null : Number(r.bytes_total);
  const interrupted = r.status === 'running' && r.stale;
  const done = r.status === 'completed';
  const percent = done
    ? 100
    : r.rows_total
      ? Math.min(99, Math.floor((100 * r.rows_read) / r.rows_total))
      : bytesTotal
        ? Math.min(99, Math.floor((100 * bytesRead) / bytesTotal))
        : null;
  return {
    id: Number(r.id),
    userId: r.user_id,
    format: r.format,
    status: interrupted ? 'failed' : r.status,
    rowsRead: r.rows_read,
    rowsTotal: r.rows_total,
    bytesRead,
    bytesTotal,
    percent,
    result: r.result,
    error: interrupted
      ? {
          code: 'IMPORT_INTERRUPTED',
          message: 'the process running this import stopped before it finished; nothing of it was written',
        }
      : r.error,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    finishedAt: r.finished_at,
  };
}

const SELECT = `SELECT *, (status = 'running' AND updated_at < now() - make_interval(secs => $staleSecs)) AS stale FROM contact_imports`;

/** What a background import reads: rows, and (for a byte stream) a live count of bytes read. */
export interface JobInput {
  format: 'csv' | 'json';
  rows: AsyncIterable<SourceRow> | Iterable<SourceRow>;
  rowsTotal?: number;
  bytesTotal?: number;
  bytes?: { bytes: number };
}

function errorOf(err: unknown): NonNullable<ImportJobView['error']> {
  if (err instanceof ValidationError) return { code: err.code, message: err.message, issues: err.issues };
  if (err instanceof FairsendError) return { code: err.code, message: err.message };
  return { code: 'INTERNAL', message: 'the import failed; nothing of it was written (see the server log)' };
}

export function createImportJobs(ctx: ServiceContext) {
  const running = new Map<number, { abort: AbortController; done: Promise<void> }>();
  const staleSecs = STALE_MS / 1000;

  const save = (id: number, fields: Record<string, unknown>) =>
    ctx.apiDb.query(
      `UPDATE contact_imports SET rows_read = $rows, bytes_read = $bytes, status = $status, result = $result::jsonb,
         error = $error::jsonb, finished_at = CASE WHEN $status = 'running' THEN NULL ELSE now() END, updated_at = now()
       WHERE id = $id`,
      { bind: { id, ...fields } },
    );

  async function run(id: number, userId: number, input: JobInput, opts: ImportOptions, abort: AbortController): Promise<void> {
    let rows = 0;
    let lastSaved = 0;
    const progress = () => ({ rows, bytes: input.bytes?.bytes ?? 0, status: 'running', result: null, error: null });
    const heartbeat = setInterval(() => {
      lastSaved = Date.now();
      save(id, progress()).catch((err: unknown) => ctx.logger.warn({ err, importId: id }, 'import progress not saved'));
    }, HEARTBEAT_MS);
    heartbeat.unref();
    try {
      const result = await importContacts(ctx, userId, input.rows, {
        ...opts,
        signal: abort.signal,
        onProgress: (p) => {
          rows = p.rows;
          opts.onProgress?.(p);
          if (Date.now() - lastSaved < PROGRESS_EVERY_MS) return;
          lastSaved = Date.now();
          save(id, progress()).catch((err: unknown) => ctx.logger.warn({ err, importId: id }, 'import progress not saved'));
        },
      });
      clearInterval(heartbeat);
      await save(id, {
        ...progress(),
        status: 'completed',
        result: JSON.stringify({ created: result.created, updated: result.updated, inactive: result.inactive }),
      });
      ctx.logger.info({ importId: id, userId, created: result.created, updated: result.updated }, 'contact import completed');
    } catch (err) {
      clearInterval(heartbeat);
      if (!(err instanceof FairsendError)) ctx.logger.error({ err, importId: id, userId }, 'contact import failed');
      await save(id, { ...progress(), status: 'failed', error: JSON.stringify(errorOf(err)) }).catch((e: unknown) =>
        ctx.logger.warn({ err: e, importId: id }, 'import outcome not saved'),
      );
    }
  }

  return {
    /** Starts `input` as a background import of `userId`'s contacts; resolves once it is recorded. */
    async start(userId: number, input: JobInput, opts: ImportOptions = {}): Promise<ImportJobView> {
      parseId(userId, 'userId');
      const [[row]] = (await ctx.apiDb.query(
        `INSERT INTO contact_imports (user_id, format, rows_total, bytes_total) VALUES ($userId, $format, $rowsTotal, $bytesTotal)
         RETURNING *, false AS stale`,
        { bind: { userId, format: input.format, rowsTotal: input.rowsTotal ?? null, bytesTotal: input.bytesTotal ?? null } },
      )) as [Row[], unknown];
      const id = Number(row!.id);
      const abort = new AbortController();
      const done = run(id, userId, input, opts, abort).finally(() => running.delete(id));
      running.set(id, { abort, done });
      return toView(row!);
    },

    /** Job `id`; with `userId`, only when it is that user's (NotFoundError otherwise, as for a missing one). */
    async get(id: number, userId?: number): Promise<ImportJobView> {
      const [[row]] = (await ctx.apiDb.query(`${SELECT} WHERE id = $id AND ($userId::int IS NULL OR user_id = $userId)`, {
        bind: { id: parseId(id, 'importId'), userId: userId === undefined ? null : parseId(userId, 'userId'), staleSecs },
      })) as [Row[], unknown];
      if (!row) throw new NotFoundError('import', id);
      return toView(row);
    },

    /** Resolves when the job `id` run by this process has ended (at once if it is not running here). */
    async settled(id: number): Promise<void> {
      await running.get(id)?.done;
    },

    /** Aborts every job this process runs (each rolls back and is recorded as failed) and waits for them. */
    async close(): Promise<void> {
      const all = [...running.values()];
      for (const j of all)
        j.abort.abort(new FairsendError('ENGINE_CLOSED', 'the engine was closed during the import; nothing of it was written'));
      await Promise.allSettled(all.map((j) => j.done));
    },
  };
}
export type ImportJobs = ReturnType<typeof createImportJobs>;
