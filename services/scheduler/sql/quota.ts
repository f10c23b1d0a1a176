/** The exact quota ledger: reservations, holds per engine instance, releases, returns of a dead engine's holds. */
import type { Sequelize } from 'sequelize';
import { queryRows as q } from '../../kernel/db-query.js';
import { prepare, queryPrepared } from '../../kernel/db-prepared.js';

/** Net quota units one service spent on one quota day since the last write. */
export interface SpentUnits {
  serviceId: number;
  day: string;
  n: number;
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
  const [r] = await queryPrepared<{ granted: number; used_quota: number; daily_quota: number }>(db, RESERVE_QUOTA, p);
  return r ? { granted: r.granted, used: r.used_quota, daily: r.daily_quota } : { granted: 0, used: -1, daily: -1 };
}

/** Prepared (kernel/db-prepared.ts): runs every few sends of a fast service. */
const RESERVE_QUOTA = prepare(
  'fs_reserve_quota',
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
);

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
