/**
 * Safety breakers: a campaign pauses itself when its recipients complain or bounce too much, before
 * the sender's reputation is gone. Gmail and Yahoo ask bulk senders to keep complaints under 0.3 %;
 * a hard-bounce rate over a few percent means a stale list.
 *
 * States of a campaign's breaker:
 *
 *   armed --(complaints / sent > complaintPercent, or hard bounces / sent > hardBouncePercent,
 *            with sent >= minSent)--> tripped: status 'paused', pause_reason says which and the figures
 *   tripped --(campaigns.resume)--> armed: pause_reason cleared; the next report that finds the rate
 *            still over the threshold trips it again
 *
 * The breakers are evaluated where the counts change (services/bounces.ts, in the report's
 * transaction), so a trip is never later than the report that caused it. The scheduler sees the
 * paused status at its next campaign refresh, as for a manual pause.
 *
 * A user can also be paused across campaigns (pauseUser): every campaign of theirs that could send
 * is paused with a reason naming the user pause, new campaigns are not generated while it lasts, and
 * resumeUser resumes exactly the campaigns it paused.
 */
import type { Sequelize, Transaction } from 'sequelize';
import { queryRows } from './kernel/db-query.js';
import { NotFoundError } from './kernel/errors.js';
import type { ServiceContext } from './context.js';

export interface BreakerPolicy {
  /** Complaints over sent, in percent (default 0.3). */
  complaintPercent: number;
  /** Hard bounces over sent, in percent (default 5). */
  hardBouncePercent: number;
  /** Sent messages needed before a breaker may trip (default 1000). */
  minSent: number;
}

export const BREAKER_DEFAULTS = { complaintPercent: 0.3, hardBouncePercent: 5, minSent: 1000 } as const satisfies BreakerPolicy;

export interface BreakerTrip {
  campaignId: number;
  reason: string;
}

/** The prefix of a pause_reason written by pauseUser: resumeUser resumes those campaigns only. */
export const USER_PAUSE_PREFIX = 'user paused: ';

/** Trips the breakers of `taskIds` whose rates are over the policy; returns the campaigns paused. */
export async function applyBreakers(db: Sequelize, taskIds: number[], p: BreakerPolicy, transaction: Transaction): Promise<BreakerTrip[]> {
  if (!taskIds.length) return [];
  const rows = await queryRows<{ id: string; pause_reason: string }>(
    db,
    `WITH over AS (
       SELECT id,
              CASE WHEN complaint_count * 100.0 > $cp::numeric * sent_count
                   THEN format('complaint breaker: %s complaints of %s sent (%s %%, limit %s %%)',
                               complaint_count, sent_count, round(complaint_count * 100.0 / sent_count, 2), $cp::numeric)
                   ELSE format('hard-bounce breaker: %s hard bounces of %s sent (%s %%, limit %s %%)',
                               hard_bounce_count, sent_count, round(hard_bounce_count * 100.0 / sent_count, 2), $hp::numeric) END AS reason
         FROM tasks
        WHERE id = ANY($ids::bigint[]) AND status IN ('scheduled', 'sending') AND sent_count > 0 AND sent_count >= $min
          AND (complaint_count * 100.0 > $cp::numeric * sent_count OR hard_bounce_count * 100.0 > $hp::numeric * sent_count)
        FOR UPDATE)
     UPDATE tasks SET status = 'paused', pause_reason = over.reason, updated_at = now()
       FROM over WHERE tasks.id = over.id
     RETURNING tasks.id, tasks.pause_reason`,
    { ids: taskIds, cp: p.complaintPercent, hp: p.hardBouncePercent, min: p.minSent },
    transaction,
  );
  return rows.map((r) => ({ campaignId: Number(r.id), reason: r.pause_reason }));
}

export function createBreakersApi(ctx: ServiceContext) {
  const db = ctx.apiDb;
  return {
    /** The policy in force (from BREAKER_* configuration). */
    policy(): BreakerPolicy {
      return {
        complaintPercent: ctx.config.breakerComplaintPercent,
        hardBouncePercent: ctx.config.breakerHardBouncePercent,
        minSent: ctx.config.breakerMinSent,
      };
    },

    /** Pauses every campaign of the user that could send, and keeps new ones from being generated. */
    async pauseUser(userId: number, reason = 'paused by an admin'): Promise<{ campaigns: number[] }> {
      return db.transaction(async (t) => {
        const u = await queryRows(
          db,
          'UPDATE users SET paused_reason = $reason, updated_at = now() WHERE id = $id RETURNING id',
          { id: userId, reason: reason.slice(0, 480) },
          t,
        );
        if (!u.length) throw new NotFoundError('user', userId);
        const rows = await queryRows<{ id: string }>(
          db,
          `UPDATE tasks SET status = 'paused', pause_reason = $reason, updated_at = now()
            WHERE created_by = $id AND status IN ('scheduled', 'sending') RETURNING id`,
          { id: userId, reason: `${USER_PAUSE_PREFIX}${reason}`.slice(0, 500) },
          t,
        );
        return { campaigns: rows.map((r) => Number(r.id)).sort((a, b) => a - b) };
      });
    },

    /** Lifts a user pause and resumes the campaigns it paused (campaigns paused otherwise stay paused). */
    async resumeUser(userId: number): Promise<{ campaigns: number[] }> {
      return db.transaction(async (t) => {
        const u = await queryRows(
          db,
          'UPDATE users SET paused_reason = NULL, updated_at = now() WHERE id = $id RETURNING id',
          { id: userId },
          t,
        );
        if (!u.length) throw new NotFoundError('user', userId);
        const rows = await queryRows<{ id: string }>(
          db,
          `UPDATE tasks SET status = CASE WHEN generated_at IS NULL THEN 'scheduled' ELSE 'sending' END, pause_reason = NULL, updated_at = now()
            WHERE created_by = $id AND status = 'paused' AND starts_with(pause_reason, $prefix) RETURNING id`,
          { id: userId, prefix: USER_PAUSE_PREFIX },
          t,
        );
        return { campaigns: rows.map((r) => Number(r.id)).sort((a, b) => a - b) };
      });
    },

    /** Why the user is paused, or null. */
    async userPause(userId: number): Promise<string | null> {
      const [u] = await queryRows<{ paused_reason: string | null }>(db, 'SELECT paused_reason FROM users WHERE id = $id', { id: userId });
      if (!u) throw new NotFoundError('user', userId);
      return u.paused_reason;
    },
  };
}
export type BreakersApi = ReturnType<typeof createBreakersApi>;
