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
/** The prefixes of a pause_reason written by applyBreakers. */
export const COMPLAINT_BREAKER_PREFIX = 'complaint breaker: ';
export const HARD_BOUNCE_BREAKER_PREFIX = 'hard-bounce breaker: ';

/** Why a campaign is paused, as a fixed set (for metrics labels and filters); `manual` has no reason. */
export const PAUSE_CAUSES = ['complaint_breaker', 'hard_bounce_breaker', 'user_pause', 'manual'] as const;
export type PauseCause = (typeof PAUSE_CAUSES)[number];

export function pauseCause(reason: string | null | undefined): PauseCause {
  if (!reason) return 'manual';
  if (reason.startsWith(COMPLAINT_BREAKER_PREFIX)) return 'complaint_breaker';
  if (reason.startsWith(HARD_BOUNCE_BREAKER_PREFIX)) return 'hard_bounce_breaker';
  if (reason.startsWith(USER_PAUSE_PREFIX)) return 'user_pause';
  return 'manual';
}

export interface PausedCampaign {
  id: number;
  userId: number;
  name: string;
  cause: PauseCause;
  /** The breaker's or user pause's words, with the figures; null for a campaign paused by hand. */
  reason: string | null;
}
export interface PausedUser {
  id: number;
  name: string;
  reason: string;
}

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

export interface PauseOverview {
  /** Paused campaigns by cause (every cause present, 0 when none). */
  byCause: Record<PauseCause, number>;
  /** Campaigns a breaker paused (at most 500, oldest first). */
  tripped: { id: number; name: string; breaker: 'complaint' | 'hard_bounce' }[];
  /** Users paused across campaigns. */
  usersPaused: number;
}

/** The figures metrics need, in one statement (a scrape's cost). */
export async function pauseOverview(db: Sequelize): Promise<PauseOverview> {
  const rows = await queryRows<{ kind: string; id: string | null; name: string | null; n: number }>(
    db,
    `WITH p AS (
       SELECT id, name, CASE WHEN starts_with(pause_reason, $c) THEN 'complaint_breaker'
                              WHEN starts_with(pause_reason, $h) THEN 'hard_bounce_breaker'
                              WHEN starts_with(pause_reason, $u) THEN 'user_pause' ELSE 'manual' END AS cause
         FROM tasks WHERE status = 'paused')
     SELECT cause AS kind, NULL::bigint AS id, NULL AS name, count(*)::int AS n FROM p GROUP BY cause
     UNION ALL
     (SELECT cause, id, name, 1 FROM p WHERE cause IN ('complaint_breaker', 'hard_bounce_breaker') ORDER BY id LIMIT 500)
     UNION ALL
     SELECT 'users', NULL, NULL, count(*)::int FROM users WHERE paused_reason IS NOT NULL`,
    { c: COMPLAINT_BREAKER_PREFIX, h: HARD_BOUNCE_BREAKER_PREFIX, u: USER_PAUSE_PREFIX },
  );
  const byCause = Object.fromEntries(PAUSE_CAUSES.map((c) => [c, 0])) as Record<PauseCause, number>;
  const tripped: PauseOverview['tripped'] = [];
  let usersPaused = 0;
  for (const r of rows) {
    if (r.kind === 'users') usersPaused = r.n;
    else if (r.id !== null)
      tripped.push({ id: Number(r.id), name: r.name ?? '', breaker: r.kind === 'complaint_breaker' ? 'complaint' : 'hard_bounce' });
    else byCause[r.kind as PauseCause] = r.n;
  }
  return { byCause, tripped, usersPaused };
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

    /**
     * What is paused and why: campaigns with status paused (a breaker, a user pause, or by hand) and
     * users paused across campaigns; `userId` limits both to one user. Oldest campaign first.
     */
    async paused(opts: { userId?: number } = {}): Promise<{ campaigns: PausedCampaign[]; users: PausedUser[] }> {
      const userId = opts.userId ?? null;
      const [campaigns, users] = await Promise.all([
        queryRows<{ id: string; created_by: number; name: string; pause_reason: string | null }>(
          db,
          `SELECT id, created_by, name, pause_reason FROM tasks
            WHERE status = 'paused' AND ($userId::int IS NULL OR created_by = $userId) ORDER BY id LIMIT 1000`,
          { userId },
        ),
        queryRows<{ id: number; name: string; paused_reason: string }>(
          db,
          `SELECT id, name, paused_reason FROM users
            WHERE paused_reason IS NOT NULL AND ($userId::int IS NULL OR id = $userId) ORDER BY id LIMIT 1000`,
          { userId },
        ),
      ]);
      return {
        campaigns: campaigns.map((c) => ({
          id: Number(c.id),
          userId: Number(c.created_by),
          name: c.name,
          cause: pauseCause(c.pause_reason),
          reason: c.pause_reason,
        })),
        users: users.map((u) => ({ id: Number(u.id), name: u.name, reason: u.paused_reason })),
      };
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
