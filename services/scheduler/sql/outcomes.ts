/**
 * The outcome write: one statement per batch of outcomes (subtasks, campaign counters through the
 * shared fragment in counters.ts, completion, refunds), plus error counts, bounces and the
 * at-most-once dispatch mark.
 */
import type { Sequelize } from 'sequelize';
import { queryRows } from '../../kernel/db-query.js';
import { prepare, queryPrepared as q, type PreparedStatement } from '../../kernel/db-prepared.js';
import { applyCounters } from './counters.js';
import type { SpentUnits } from './quota.js';

export type OutcomeStatus = 'sent' | 'failed' | 'queued' | 'cancelled' | 'unknown';

export interface Outcome {
  taskId: number;
  contactId: number;
  status: OutcomeStatus;
  serviceId: number | null;
  at: Date;
  messageId: string | null;
  error: string | null;
  /** For 'queued': when it may be sent again. */
  notBefore: Date | null;
  /** 1 when this outcome ends an attempt (sent, failed, retry, unknown), 0 when the message was only released. */
  attempt: 0 | 1;
}

/** What the server said to one attempt (sql for send_attempts; see the migration a-send-attempts). */
export type AttemptResult = 'accepted' | 'transient' | 'permanent' | 'ambiguous' | 'connection';

export interface Attempt {
  taskId: number;
  contactId: number;
  at: Date;
  serviceId: number;
  /** The recipient's domain. */
  provider: string | null;
  /** The recipient's mailbox provider (`google`, `other:acme.com`), as stored at generation. */
  mailboxProvider: string | null;
  result: AttemptResult;
  code: number | null;
  enhanced: string | null;
  reply: string | null;
  durationMs: number | null;
}

export interface FlushResult {
  applied: number;
  completed: number[];
}

/**
 * Writes a batch of outcomes in ONE statement, which is also its own transaction (one round trip,
 * no BEGIN, SET or COMMIT of its own): the subtasks (only rows still leased to `owner`, so a lease
 * recovered by another engine is never overwritten), the campaigns' counters, the completion of
 * campaigns whose counters reach their total, the refund of the users' credit for cancelled
 * messages, and the attempt records (send_attempts) of the sends since the last write. In the same
 * statement, the quota units spent since the last write leave this engine's holds (`spent`: net
 * units taken per service and quota day, possibly negative when units taken earlier came back), so
 * what a crash leaves in a hold is what the engine had not used as of its last commit.
 */
export async function flushOutcomes(
  db: Sequelize,
  owner: string,
  outcomes: Outcome[],
  spent: SpentUnits[] = [],
  attempts: Attempt[] = [],
): Promise<FlushResult> {
  const holds = spent.filter((x) => x.n !== 0);
  const binds = {
    owner,
    ...(attempts.length ? attemptBinds(attempts) : {}),
    ...(holds.length ? { hSvc: holds.map((x) => x.serviceId), hDay: holds.map((x) => x.day), hN: holds.map((x) => x.n) } : {}),
  };
  if (!outcomes.length) {
    if (attempts.length || holds.length) await q(db, outcomeStatement(false, attempts.length > 0, holds.length > 0), binds);
    return { applied: 0, completed: [] };
  }
  const col = <K extends keyof Outcome>(k: K) => outcomes.map((o) => o[k]);
  const [r] = await q<{ applied: number; completed: string[] | null }>(db, outcomeStatement(true, attempts.length > 0, holds.length > 0), {
    ...binds,
    ids: [...new Set(outcomes.map((o) => o.taskId))],
    task: col('taskId'),
    contact: col('contactId'),
    status: col('status'),
    svc: col('serviceId'),
    at: col('at'),
    mid: col('messageId'),
    err: col('error'),
    nb: col('notBefore'),
    inc: col('attempt'),
  });
  return { applied: r?.applied ?? 0, completed: (r?.completed ?? []).map(Number) };
}

/**
 * The outcome write's statement, in its variants (with or without outcomes, attempt records, spent
 * units): each a named prepared statement (kernel/db-prepared.ts), so PostgreSQL plans it about once
 * per connection rather than on every write (the planning of this many-CTE statement cost more
 * PostgreSQL CPU than its execution: docs/performance.md).
 */
const statements = new Map<string, PreparedStatement>();
function outcomeStatement(withOutcomes: boolean, withAttempts: boolean, withHolds: boolean): PreparedStatement {
  const key = `fs_outcomes_${withOutcomes ? 'o' : ''}${withAttempts ? 'a' : ''}${withHolds ? 'h' : ''}`;
  let stmt = statements.get(key);
  if (!stmt) {
    const ctes = [...(withAttempts ? [ATTEMPTS_CTE] : []), ...(withHolds ? [HOLDS_CTE] : [])];
    stmt = prepare(key, withOutcomes ? OUTCOMES_SQL(ctes) : `WITH ${ctes.join(',\n')} SELECT 1`);
    statements.set(key, stmt);
  }
  return stmt;
}

const OUTCOMES_SQL = (ctes: string[]) =>
  `WITH ${ctes.map((c) => `${c},`).join('\n')}
     -- Every engine's write updates the same campaign counters: their rows are locked in id order
     -- first (the one-time filter of target below runs this before anything else), so
     -- concurrent writes queue behind each other instead of deadlocking (measured: 135 deadlocks
     -- in a three-engine run before the ordered lock, each stalling a write for deadlock_timeout).
     lk AS MATERIALIZED (SELECT id FROM tasks WHERE id = ANY($ids::bigint[]) ORDER BY id FOR UPDATE),
     u AS (
       SELECT * FROM unnest($task::bigint[], $contact::bigint[], $status::text[], $svc::int[], $at::timestamptz[],
                            $mid::text[], $err::text[], $nb::timestamptz[], $inc::int[])
         AS u(task_id, contact_id, status, svc, at, mid, err, nb, inc)),
     -- Each row is found by its primary key, one index probe per outcome (a LATERAL ... LIMIT 1
     -- the planner cannot turn into a join), then updated by its physical address (a TID scan) if
     -- this engine still holds its lease. No condition on the lease or the status may reach the
     -- planner as a filter on subtasks: its statistics, taken before the claims, say no row is
     -- leased, so it would scan the leased rows (or the table) first and loop over the batch for
     -- each (measured: 26 ms for 6 outcomes with 2,751 leased, 3.4 s for 475). A row whose lease
     -- another engine recovered in the meantime is not owned, or fails the ctid recheck, and is
     -- not applied.
     target AS MATERIALIZED (
       SELECT s.tid, s.owned, u.*
         FROM u CROSS JOIN LATERAL (
                SELECT s.ctid AS tid, (s.lease_owner = $owner AND s.status = 'sending') AS owned
                  FROM subtasks s WHERE s.task_id = u.task_id AND s.contact_id = u.contact_id LIMIT 1) s
        WHERE (SELECT count(*) FROM lk) >= 0),
     upd AS (
       UPDATE subtasks s SET status = u.status,
              service_id = COALESCE(u.svc, s.service_id),
              sent_at = CASE WHEN u.status = 'sent' THEN u.at ELSE s.sent_at END,
              message_id = COALESCE(u.mid, s.message_id),
              last_error = COALESCE(u.err, s.last_error),
              not_before = COALESCE(u.nb, s.not_before),
              attempts = s.attempts + u.inc,
              lease_owner = NULL, lease_expires_at = NULL
         FROM target u
        WHERE s.ctid = ANY (ARRAY(SELECT tid FROM target WHERE owned)) AND s.ctid = u.tid AND u.owned
       RETURNING s.task_id, s.status),
     counts AS (
       SELECT task_id,
              count(*) FILTER (WHERE status = 'sent')::int AS sent,
              count(*) FILTER (WHERE status = 'failed')::int AS failed,
              count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
              count(*) FILTER (WHERE status = 'unknown')::int AS unknown
         FROM upd GROUP BY task_id),
     t AS (
       ${applyCounters('counts')}
       RETURNING tasks.id, tasks.status, tasks.created_by, d.cancelled),
     refund AS (
       UPDATE users SET remaining_quota = remaining_quota + r.n
         FROM (SELECT created_by, sum(cancelled)::int AS n FROM t WHERE cancelled > 0 GROUP BY created_by) r
        WHERE users.id = r.created_by RETURNING users.id)
     SELECT (SELECT count(*)::int FROM upd) AS applied,
            (SELECT array_agg(id) FROM t WHERE status = 'completed') AS completed,
            (SELECT count(*) FROM refund) AS refunds`;

/**
 * The attempt records of a write, inserted by the outcome write's own statement (a data-modifying
 * CTE runs whether or not the query reads it). Recorded whether or not the outcome is applied: the
 * attempt happened even if another engine recovered the lease meanwhile.
 */
const ATTEMPTS_CTE = `att AS (
       INSERT INTO send_attempts (task_id, contact_id, attempted_at, service_id, provider, mailbox_provider, result, smtp_code, enhanced_code, reply, duration_ms)
       SELECT * FROM unnest($aTask::bigint[], $aContact::bigint[], $aAt::timestamptz[], $aSvc::int[], $aProv::text[], $aMbx::text[], $aRes::text[],
                            $aCode::smallint[], $aEnh::text[], $aReply::text[], $aMs::int[]))`;

/**
 * The units spent since the last write leave this engine's holds (sql/quota.ts), in the outcome
 * write's statement: the hold rows are this engine's own, locked only until that statement commits.
 */
const HOLDS_CTE = `holds AS (
       UPDATE quota_holds h SET units = GREATEST(0, h.units - x.n)
         FROM unnest($hSvc::int[], $hDay::date[], $hN::int[]) AS x(svc, day, n)
        WHERE h.instance_id = $owner AND h.service_id = x.svc AND h.day = x.day)`;

function attemptBinds(attempts: Attempt[]): Record<string, unknown[]> {
  const col = <K extends keyof Attempt>(k: K) => attempts.map((a) => a[k]);
  return {
    aTask: col('taskId'),
    aContact: col('contactId'),
    aAt: col('at'),
    aSvc: col('serviceId'),
    aProv: col('provider'),
    aMbx: col('mailboxProvider'),
    aRes: col('result'),
    aCode: col('code'),
    aEnh: col('enhanced'),
    aReply: col('reply'),
    aMs: col('durationMs'),
  };
}

/** Counts repeated errors: one row per (type, message), `count` incremented. */
export async function recordErrors(
  db: Sequelize,
  errors: { type: string; message: string; serviceId: number | null; count: number; at: Date }[],
): Promise<void> {
  if (!errors.length) return;
  await queryRows(
    db,
    `INSERT INTO error_logs (error_type, message, count, service_id, first_seen_at, last_seen_at)
     SELECT t, m, n, s, a, a FROM unnest($t::text[], $m::text[], $n::int[], $s::int[], $a::timestamptz[]) AS e(t, m, n, s, a)
     ON CONFLICT (error_type, message) DO UPDATE
       SET count = error_logs.count + EXCLUDED.count, last_seen_at = EXCLUDED.last_seen_at, service_id = EXCLUDED.service_id`,
    {
      t: errors.map((e) => e.type.slice(0, 100)),
      m: errors.map((e) => e.message.slice(0, 1000)),
      n: errors.map((e) => e.count),
      s: errors.map((e) => e.serviceId),
      a: errors.map((e) => e.at),
    },
  );
}

export async function markBounced(db: Sequelize, contactIds: number[]): Promise<void> {
  if (!contactIds.length) return;
  await queryRows(db, `UPDATE contacts SET status = 'bounced', updated_at = now() WHERE id = ANY($ids::bigint[]) AND status = 'active'`, {
    ids: contactIds,
  });
}

/** Records a dispatch before it happens (at-most-once): a recovered lease with a message_id is never resent. */
export async function markDispatched(
  db: Sequelize,
  p: { taskId: number; contactId: number; messageId: string; owner: string },
): Promise<boolean> {
  const rows = await q(db, MARK_DISPATCHED, p);
  return rows.length === 1;
}

/** Once per message in at-most-once mode: prepared. */
const MARK_DISPATCHED = prepare(
  'fs_mark_dispatched',
  `UPDATE subtasks SET message_id = $messageId WHERE task_id = $taskId AND contact_id = $contactId AND status = 'sending' AND lease_owner = $owner
   RETURNING 1`,
);
