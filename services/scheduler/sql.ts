/**
 * Every statement the scheduler runs, in one place. All of them are set-based: a claim takes up to
 * CLAIM_BATCH_SIZE rows of one campaign in one statement, and the outcomes of every send since the
 * last tick are written back in one statement, whatever their number. Nothing here runs per send
 * except the quota reservation of a service slower than one send a second.
 */
import type { Sequelize, Transaction } from 'sequelize';
import { queryRows } from '../kernel/db-query.js';

export interface ClaimedRow {
  contact_id: string;
  email: string;
  template_id: number;
  attempts: number;
  timezone: string | null;
  name: string | null;
  attributes: Record<string, unknown> | null;
  contact_status: string | null;
  /** The service of the last attempt (null when never attempted). */
  service_id: number | null;
  /** Why the address is suppressed now (the reason of a suppression entry of the user's or the global list), null when not. */
  suppressed: string | null;
}

const q = queryRows;

// The suppression list is re-checked here, at claim: an address suppressed after the queue was
// generated (a bounce, a complaint, an entry added by hand) comes back flagged and is not sent. One
// probe of suppressions_email_idx per claimed row, matched as generation matches (lower(email)).
const CLAIM_RETURNING = `
  FROM picked LEFT JOIN contacts c ON c.id = picked.contact_id
 WHERE s.task_id = picked.task_id AND s.contact_id = picked.contact_id
RETURNING s.contact_id, s.email, s.template_id, s.attempts, s.timezone, s.service_id, c.name, c.attributes, c.status AS contact_status,
          (SELECT sp.reason || CASE WHEN sp.user_id IS NULL THEN ' (global list)' ELSE '' END FROM suppressions sp
            WHERE sp.email = lower(s.email) AND (sp.user_id = s.user_id OR sp.user_id IS NULL)
            ORDER BY sp.user_id NULLS LAST LIMIT 1) AS suppressed`;

/**
 * Claims fresh messages (never attempted) of one campaign after `cursor`, in contact-id order, along
 * the primary key (task_id, contact_id). SKIP LOCKED: another engine claiming the same campaign at
 * the same moment takes other rows, never the same ones. The contact's name and attributes come
 * with the claim, so sending needs no further read.
 */
export function claimFresh(
  db: Sequelize,
  p: { taskId: number; cursor: number; limit: number; now: Date; owner: string; until: Date },
): Promise<ClaimedRow[]> {
  return q(
    db,
    `WITH picked AS (
       SELECT task_id, contact_id FROM subtasks
        WHERE task_id = $taskId AND contact_id > $cursor AND status = 'queued' AND attempts = 0 AND not_before <= $now
        ORDER BY contact_id LIMIT $limit FOR UPDATE SKIP LOCKED)
     UPDATE subtasks s SET status = 'sending', lease_owner = $owner, lease_expires_at = $until ${CLAIM_RETURNING}`,
    p,
  );
}

/** Claims due retries of one campaign (the small partial index subtasks_retries_idx). */
export function claimRetries(
  db: Sequelize,
  p: { taskId: number; limit: number; now: Date; owner: string; until: Date },
): Promise<ClaimedRow[]> {
  return q(
    db,
    `WITH picked AS (
       SELECT task_id, contact_id FROM subtasks
        WHERE task_id = $taskId AND status = 'queued' AND attempts > 0 AND not_before <= $now
        ORDER BY not_before LIMIT $limit FOR UPDATE SKIP LOCKED)
     UPDATE subtasks s SET status = 'sending', lease_owner = $owner, lease_expires_at = $until ${CLAIM_RETURNING}`,
    p,
  );
}

/**
 * When a campaign's claims come back empty: the earliest time something of it becomes sendable
 * (null: nothing queued) and how many are in flight. Scans the campaign's key range once; it runs
 * only when the cursor has reached the end, not per send.
 */
export async function campaignOutlook(db: Sequelize, taskId: number): Promise<{ nextAt: Date | null; inFlight: number }> {
  const [r] = await q<{ next_at: Date | null; in_flight: number }>(
    db,
    `SELECT min(not_before) FILTER (WHERE status = 'queued') AS next_at, count(*) FILTER (WHERE status = 'sending')::int AS in_flight
       FROM subtasks WHERE task_id = $taskId AND status IN ('queued', 'sending')`,
    { taskId },
  );
  return { nextAt: r?.next_at ?? null, inFlight: r?.in_flight ?? 0 };
}

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
 * Writes a batch of outcomes in ONE statement: the subtasks (only rows still leased to `owner`,
 * so a lease recovered by another engine is never overwritten), the campaigns' counters, the
 * completion of campaigns whose counters reach their total, and the refund of the users' credit
 * for cancelled messages, and the attempt records (send_attempts) of the sends since the last write.
 * In the same transaction, the quota units spent since the last write
 * leave this engine's holds (`spent`: net units taken per service and quota day, possibly
 * negative when units taken earlier came back), so what a crash leaves in a hold is what the
 * engine had not used as of its last commit.
 */
export async function flushOutcomes(
  db: Sequelize,
  owner: string,
  outcomes: Outcome[],
  spent: SpentUnits[] = [],
  attempts: Attempt[] = [],
): Promise<FlushResult> {
  const col = <K extends keyof Outcome>(k: K) => outcomes.map((o) => o[k]);
  const taskIds = [...new Set(outcomes.map((o) => o.taskId))];
  return db.transaction(async (t) => {
    if (!outcomes.length) {
      if (attempts.length) await q(db, `WITH ${ATTEMPTS_CTE} SELECT 1`, attemptBinds(attempts), t);
      await spendHolds(db, owner, spent, t);
      return { applied: 0, completed: [] };
    }
    // Every engine's flush updates the same campaign counters: lock those rows in id order first,
    // so concurrent flushes queue behind each other instead of deadlocking (measured: 135
    // deadlocks in a three-engine run before this, each stalling a flush for deadlock_timeout).
    await q(db, 'SELECT id FROM tasks WHERE id = ANY($ids::bigint[]) ORDER BY id FOR UPDATE', { ids: taskIds }, t);
    // Batch-sized lookups by primary key, whatever the statistics say (see flushLocked).
    await db.query('SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL enable_seqscan = off', { transaction: t });
    const res = await flushLocked(db, owner, col, attempts, t);
    // Last: the hold rows stay locked (against this engine's own reservations) only until the commit.
    await spendHolds(db, owner, spent, t);
    return res;
  });
}

/** Net quota units one service spent on one quota day since the last write. */
export interface SpentUnits {
  serviceId: number;
  day: string;
  n: number;
}

async function spendHolds(db: Sequelize, owner: string, spent: SpentUnits[], t: Transaction): Promise<void> {
  const nonZero = spent.filter((x) => x.n !== 0);
  if (!nonZero.length) return;
  await q(
    db,
    `UPDATE quota_holds h SET units = GREATEST(0, h.units - x.n)
       FROM unnest($svc::int[], $day::date[], $n::int[]) AS x(svc, day, n)
      WHERE h.instance_id = $owner AND h.service_id = x.svc AND h.day = x.day`,
    { owner, svc: nonZero.map((x) => x.serviceId), day: nonZero.map((x) => x.day), n: nonZero.map((x) => x.n) },
    t,
  );
}

/**
 * The attempt records of a write, inserted by the outcome write's own statement (a data-modifying
 * CTE runs whether or not the query reads it). Recorded whether or not the outcome is applied: the
 * attempt happened even if another engine recovered the lease meanwhile.
 */
const ATTEMPTS_CTE = `att AS (
       INSERT INTO send_attempts (task_id, contact_id, attempted_at, service_id, provider, result, smtp_code, enhanced_code, reply, duration_ms)
       SELECT * FROM unnest($aTask::bigint[], $aContact::bigint[], $aAt::timestamptz[], $aSvc::int[], $aProv::text[], $aRes::text[],
                            $aCode::smallint[], $aEnh::text[], $aReply::text[], $aMs::int[]))`;

function attemptBinds(attempts: Attempt[]): Record<string, unknown[]> {
  const col = <K extends keyof Attempt>(k: K) => attempts.map((a) => a[k]);
  return {
    aTask: col('taskId'),
    aContact: col('contactId'),
    aAt: col('at'),
    aSvc: col('serviceId'),
    aProv: col('provider'),
    aRes: col('result'),
    aCode: col('code'),
    aEnh: col('enhanced'),
    aReply: col('reply'),
    aMs: col('durationMs'),
  };
}

async function flushLocked(
  db: Sequelize,
  owner: string,
  col: <K extends keyof Outcome>(k: K) => Outcome[K][],
  attempts: Attempt[],
  transaction: Transaction,
): Promise<FlushResult> {
  const [r] = await q<{ applied: number; completed: string[] | null }>(
    db,
    `WITH ${attempts.length ? `${ATTEMPTS_CTE},` : ''}
     u AS (
       SELECT * FROM unnest($task::bigint[], $contact::bigint[], $status::text[], $svc::int[], $at::timestamptz[],
                            $mid::text[], $err::text[], $nb::timestamptz[], $inc::int[])
         AS u(task_id, contact_id, status, svc, at, mid, err, nb, inc)),
     -- Each row is found by its primary key (the join methods are pinned in flushOutcomes), then
     -- updated by its physical address if this engine still holds its lease. No condition on
     -- the lease or the status may reach the planner as a filter on subtasks: its statistics,
     -- taken before the claims, say no row is leased, so it would scan the leased rows (or the
     -- table) first and loop over the batch for each (measured: 26 ms for 6 outcomes with 2,751
     -- leased, 3.4 s for 475). A row whose lease another engine recovered in the meantime is
     -- not owned, or fails the ctid recheck, and is not applied.
     target AS MATERIALIZED (
       SELECT s.ctid AS tid, (s.lease_owner = $owner AND s.status = 'sending') AS owned, u.*
         FROM u JOIN subtasks s ON s.task_id = u.task_id AND s.contact_id = u.contact_id),
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
        WHERE s.ctid = u.tid AND u.owned
       RETURNING s.task_id, s.status),
     counts AS (
       SELECT task_id,
              count(*) FILTER (WHERE status = 'sent')::int AS sent,
              count(*) FILTER (WHERE status = 'failed')::int AS failed,
              count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
              count(*) FILTER (WHERE status = 'unknown')::int AS unknown
         FROM upd GROUP BY task_id),
     t AS (
       UPDATE tasks SET sent_count = sent_count + c.sent, failed_count = failed_count + c.failed,
              cancelled_count = cancelled_count + c.cancelled, unknown_count = unknown_count + c.unknown,
              status = CASE WHEN tasks.status = 'sending'
                             AND sent_count + failed_count + cancelled_count + unknown_count + c.sent + c.failed + c.cancelled + c.unknown >= total_count
                            THEN 'completed' ELSE tasks.status END,
              completed_at = CASE WHEN tasks.status = 'sending'
                             AND sent_count + failed_count + cancelled_count + unknown_count + c.sent + c.failed + c.cancelled + c.unknown >= total_count
                            THEN now() ELSE completed_at END,
              updated_at = now()
         FROM counts c WHERE tasks.id = c.task_id
       RETURNING tasks.id, tasks.status, tasks.created_by, c.cancelled),
     refund AS (
       UPDATE users SET remaining_quota = remaining_quota + r.n
         FROM (SELECT created_by, sum(cancelled)::int AS n FROM t WHERE cancelled > 0 GROUP BY created_by) r
        WHERE users.id = r.created_by RETURNING users.id)
     SELECT (SELECT count(*)::int FROM upd) AS applied,
            (SELECT array_agg(id) FROM t WHERE status = 'completed') AS completed,
            (SELECT count(*) FROM refund) AS refunds`,
    {
      owner,
      task: col('taskId'),
      contact: col('contactId'),
      status: col('status'),
      svc: col('serviceId'),
      at: col('at'),
      mid: col('messageId'),
      err: col('error'),
      nb: col('notBefore'),
      inc: col('attempt'),
      ...(attempts.length ? attemptBinds(attempts) : {}),
    },
    transaction,
  );
  return { applied: r?.applied ?? 0, completed: (r?.completed ?? []).map(Number) };
}

/** Counts repeated errors: one row per (type, message), `count` incremented. */
export async function recordErrors(
  db: Sequelize,
  errors: { type: string; message: string; serviceId: number | null; count: number; at: Date }[],
): Promise<void> {
  if (!errors.length) return;
  await q(
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
  await q(db, `UPDATE contacts SET status = 'bounced', updated_at = now() WHERE id = ANY($ids::bigint[]) AND status = 'active'`, {
    ids: contactIds,
  });
}

/**
 * Reserves up to `want` sends of a service's daily quota, atomically: the row is locked, the day
 * rolled over when the service-local date has changed, and the grant capped at what is left, so
 * the quota can never be overshot by any number of concurrent reservers in any number of
 * processes. Returns the number granted (0: exhausted). `last_sent_at` records the reservation
 * time: the first of the granted sends follows at once, so a restarted engine can keep the
 * service's interval.
 *
 * The exact ledger: the grant is also recorded as this engine's hold (quota_holds), in the same
 * statement. The hold shrinks as units are spent (flushOutcomes) or given back (releaseQuota), and
 * what is left of a dead engine's hold returns to the quota at lease recovery (recoverQuotaHolds).
 * Why holds per engine rather than reserving inside the claim: a claim takes messages of one
 * campaign, and which service sends each one is decided later, at the fair pick, by whichever of
 * the engine's services comes first; a claim cannot know whose quota to reserve.
 */
export async function reserveQuota(
  db: Sequelize,
  p: { serviceId: number; want: number; today: string; now: Date; instance: string },
): Promise<{ granted: number; used: number; daily: number }> {
  const [r] = await q<{ granted: number; used_quota: number; daily_quota: number }>(
    db,
    `WITH cur AS (
       SELECT id, daily_quota, CASE WHEN quota_day < $today::date THEN 0 ELSE used_quota END AS used
         FROM email_services WHERE id = $serviceId AND enabled FOR UPDATE),
     upd AS (
       UPDATE email_services s
          SET used_quota = cur.used + LEAST($want, cur.daily_quota - cur.used),
              quota_day = GREATEST(s.quota_day, $today::date),
              last_sent_at = $now
         FROM cur
        WHERE s.id = cur.id AND cur.used < cur.daily_quota
       RETURNING LEAST($want, cur.daily_quota - cur.used)::int AS granted, s.used_quota, s.daily_quota),
     hold AS (
       INSERT INTO quota_holds (instance_id, service_id, day, units)
       SELECT $instance, $serviceId, $today::date, granted FROM upd WHERE granted > 0
       ON CONFLICT (instance_id, service_id, day) DO UPDATE SET units = quota_holds.units + EXCLUDED.units)
     SELECT * FROM upd`,
    p,
  );
  return r ? { granted: r.granted, used: r.used_quota, daily: r.daily_quota } : { granted: 0, used: -1, daily: -1 };
}

/** Gives back reserved but unused sends (idle, graceful stop), on the same quota day only; the hold shrinks with it. */
export async function releaseQuota(db: Sequelize, p: { serviceId: number; n: number; day: string; instance: string }): Promise<void> {
  if (p.n <= 0) return;
  await q(
    db,
    `WITH h AS (
       UPDATE quota_holds SET units = GREATEST(0, units - $n)
        WHERE instance_id = $instance AND service_id = $serviceId AND day = $day::date)
     UPDATE email_services SET used_quota = GREATEST(0, used_quota - $n) WHERE id = $serviceId AND quota_day = $day::date`,
    p,
  );
}

/**
 * Returns the holds of engines that are gone to the quota: those of `instance` (a clean stop,
 * after its last outcomes and spent units are written), or, without it, those of every engine
 * whose heartbeat is older than `ttlMs` (lease recovery; judged on the database's clock like the
 * leases). Only on the quota day the hold belongs to. Returns the units given back.
 */
export async function returnQuotaHolds(db: Sequelize, p: { instance?: string; ttlMs: number }): Promise<number> {
  const [r] = await q<{ returned: number }>(
    db,
    `WITH gone AS (
       DELETE FROM quota_holds h
        WHERE CASE WHEN $instance::text IS NOT NULL THEN h.instance_id = $instance::text
                   ELSE NOT EXISTS (SELECT 1 FROM scheduler_instances i
                                     WHERE i.id = h.instance_id AND i.heartbeat_at > now() - make_interval(secs => $ttlMs / 1000.0)) END
       RETURNING service_id, day, units),
     back AS (
       UPDATE email_services s SET used_quota = GREATEST(0, s.used_quota - g.n)
         FROM (SELECT service_id, day, sum(units)::int AS n FROM gone GROUP BY service_id, day) g
        WHERE s.id = g.service_id AND s.quota_day = g.day
       RETURNING s.id)
     SELECT COALESCE(sum(units), 0)::int AS returned FROM gone`,
    { instance: p.instance ?? null, ttlMs: p.ttlMs },
  );
  return r?.returned ?? 0;
}

/**
 * A lease belongs to a dead engine when its owner has not heartbeated for `ttlMs` (judged on the
 * database's clock, so engines on several machines need not agree on the time). Under
 * at-least-once those messages are queued again (counted as an attempt, so they go through the
 * retry index); under at-most-once a message whose dispatch was recorded (message_id set before
 * sending) becomes `unknown` and is never resent; one never dispatched is queued again. Claimed
 * with SKIP LOCKED so two engines never recover the same row.
 */
export async function recoverExpiredLeases(
  db: Sequelize,
  p: { now: Date; ttlMs: number; mode: 'at-least-once' | 'at-most-once' },
): Promise<{ requeued: number; unknown: number }> {
  const [r] = await q<{ requeued: number; unknown: number }>(
    db,
    `WITH expired AS (
       SELECT s.task_id, s.contact_id FROM subtasks s
        WHERE s.status = 'sending'
          AND NOT EXISTS (SELECT 1 FROM scheduler_instances i
                           WHERE i.id = s.lease_owner AND i.heartbeat_at > now() - make_interval(secs => $ttlMs / 1000.0))
        FOR UPDATE OF s SKIP LOCKED),
     rec AS (
       UPDATE subtasks s
          SET status = CASE WHEN $mode = 'at-most-once' AND s.message_id IS NOT NULL THEN 'unknown' ELSE 'queued' END,
              attempts = s.attempts + 1, not_before = $now, lease_owner = NULL, lease_expires_at = NULL,
              last_error = 'lease expired: the engine holding it stopped'
         FROM expired WHERE s.task_id = expired.task_id AND s.contact_id = expired.contact_id
       RETURNING s.task_id, s.status),
     t AS (
       UPDATE tasks SET unknown_count = unknown_count + x.n,
              status = CASE WHEN status = 'sending' AND sent_count + failed_count + cancelled_count + unknown_count + x.n >= total_count
                            THEN 'completed' ELSE status END
         FROM (SELECT task_id, count(*)::int AS n FROM rec WHERE status = 'unknown' GROUP BY task_id) x
        WHERE tasks.id = x.task_id RETURNING tasks.id)
     SELECT count(*) FILTER (WHERE status = 'queued')::int AS requeued, count(*) FILTER (WHERE status = 'unknown')::int AS unknown,
            (SELECT count(*) FROM t) AS tasks
       FROM rec`,
    { now: p.now, ttlMs: p.ttlMs, mode: p.mode },
  );
  return { requeued: r?.requeued ?? 0, unknown: r?.unknown ?? 0 };
}

/** Records a dispatch before it happens (at-most-once): a recovered lease with a message_id is never resent. */
export async function markDispatched(
  db: Sequelize,
  p: { taskId: number; contactId: number; messageId: string; owner: string },
): Promise<boolean> {
  const rows = await q(
    db,
    `UPDATE subtasks SET message_id = $messageId WHERE task_id = $taskId AND contact_id = $contactId AND status = 'sending' AND lease_owner = $owner
     RETURNING 1`,
    p,
  );
  return rows.length === 1;
}

/**
 * The engine's heartbeat: one row. It keeps every lease of the engine alive (recovery looks at
 * the owner's heartbeat, not at each row), so a heartbeat never touches, or waits on, subtasks.
 */
export async function heartbeat(db: Sequelize, p: { id: string; host: string; pid: number; services: number[] }): Promise<void> {
  await q(
    db,
    `INSERT INTO scheduler_instances (id, host, pid, services) VALUES ($id, $host, $pid, $services::int[])
     ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), services = EXCLUDED.services`,
    p,
  );
}

export interface InstanceRow {
  id: string;
  host: string;
  pid: number;
  started_at: Date;
  heartbeat_at: Date;
  services: number[];
}

/**
 * Engines whose heartbeat is fresher than `withinMs` on the database's clock (the same judge as
 * lease recovery and service takeover), oldest first.
 */
export function liveInstances(db: Sequelize, withinMs: number): Promise<InstanceRow[]> {
  return q(
    db,
    `SELECT id, host, pid, started_at, heartbeat_at, services FROM scheduler_instances
      WHERE heartbeat_at > now() - make_interval(secs => $s / 1000.0)
      ORDER BY started_at, id`,
    { s: withinMs },
  );
}

export async function unregister(db: Sequelize, id: string): Promise<void> {
  await q(db, 'DELETE FROM scheduler_instances WHERE id = $id', { id });
}

export interface ServiceRow {
  id: number;
  name: string;
  transport: import('../../models/index.js').TransportConfig;
  sending_rate: string;
  daily_quota: number;
  used_quota: number;
  quota_day: string;
  quota_timezone: string;
  max_connections: number;
  open_to_all: boolean;
  enabled: boolean;
  dkim: import('../../models/index.js').DkimConfig | null;
  is_healthy: boolean;
  consecutive_failures: number;
  last_sent_at: Date | null;
  user_ids: number[] | null;
  updated_at: Date;
}

export function loadServices(db: Sequelize): Promise<ServiceRow[]> {
  return q(
    db,
    `SELECT s.*, (SELECT array_agg(us.user_id ORDER BY us.user_id) FROM user_services us WHERE us.service_id = s.id) AS user_ids
       FROM email_services s ORDER BY s.id`,
    {},
  );
}

export interface CampaignRow {
  id: string;
  name: string;
  created_by: number;
  priority: number;
  status: string;
  from_address: string;
  from_name: string | null;
  send_window: import('../../models/index.js').StoredSendWindow | null;
  wait_reason: string | null;
  /** Messages without a final state yet (queued, or sending): the campaign's backlog. */
  remaining: number;
}

/** Campaigns the scheduler must know about: sending ones, and paused/cancelled ones it may still hold. */
export function loadActiveCampaigns(db: Sequelize, knownIds: number[]): Promise<CampaignRow[]> {
  return q(
    db,
    `SELECT id, name, created_by, priority, status, from_address, from_name, send_window, wait_reason,
            GREATEST(total_count - sent_count - failed_count - cancelled_count - unknown_count, 0)::int AS remaining
       FROM tasks
      WHERE status = 'sending' OR id = ANY($known::bigint[])
      ORDER BY id`,
    { known: knownIds },
  );
}

export function loadTemplates(
  db: Sequelize,
  ids: number[],
): Promise<{ id: number; subject: string; html: string | null; text: string | null }[]> {
  return q(db, 'SELECT id, subject, html, text FROM templates WHERE id = ANY($ids::int[])', { ids });
}

export async function setWaitReasons(db: Sequelize, updates: { id: number; reason: string | null }[]): Promise<void> {
  if (!updates.length) return;
  await q(
    db,
    `UPDATE tasks SET wait_reason = u.reason FROM unnest($ids::bigint[], $reasons::text[]) AS u(id, reason) WHERE tasks.id = u.id`,
    { ids: updates.map((u) => u.id), reasons: updates.map((u) => u.reason) },
  );
}

export async function saveServiceHealth(
  db: Sequelize,
  p: { id: number; healthy: boolean; failures: number; error: string | null; nextProbeAt: Date | null; lastSentAt: Date | null },
): Promise<void> {
  await q(
    db,
    `UPDATE email_services SET is_healthy = $healthy, consecutive_failures = $failures,
            last_error = COALESCE($error, last_error), last_error_at = CASE WHEN $error::text IS NULL THEN last_error_at ELSE now() END,
            next_probe_at = $nextProbeAt, last_sent_at = GREATEST(last_sent_at, $lastSentAt::timestamptz)
      WHERE id = $id`,
    p,
  );
}
