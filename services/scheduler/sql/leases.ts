/** Leases and engine liveness: heartbeats, live instances, recovery of a dead engine's leases. */
import type { Sequelize } from 'sequelize';
import { queryRows as q } from '../../kernel/db-query.js';
import { applyCounters } from './counters.js';

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
     -- At-most-once: a dispatched message becomes unknown, a final state; the campaign may complete.
     t AS (
       ${applyCounters(`(SELECT task_id, 0 AS sent, 0 AS failed, 0 AS cancelled, count(*)::int AS unknown
                           FROM rec WHERE status = 'unknown' GROUP BY task_id)`)}
       RETURNING tasks.id)
     SELECT count(*) FILTER (WHERE status = 'queued')::int AS requeued, count(*) FILTER (WHERE status = 'unknown')::int AS unknown,
            (SELECT count(*) FROM t) AS tasks
       FROM rec`,
    { now: p.now, ttlMs: p.ttlMs, mode: p.mode },
  );
  return { requeued: r?.requeued ?? 0, unknown: r?.unknown ?? 0 };
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
