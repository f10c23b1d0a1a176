/**
 * The read-side SQL of the HTTP API: scheduler status and stats, campaign lists with progress,
 * which services a user may use. Each is one set-based statement; none loops over rows.
 *
 * Counts: `queued` and `sending` exist only as subtask states, so they are counted on subtasks.
 * Final states (sent, failed, cancelled, unknown) come from the counters on tasks, which every
 * writer (the scheduler's outcome flush, campaign cancellation, unsubscribes, lease recovery)
 * updates in the same statement as the subtasks, and which survive the maintenance purge of old
 * subtasks. Before a campaign's queue is generated its total is the recipients reserved.
 */
import type { Sequelize } from 'sequelize';
import type { Engine } from '../engine.js';
import type { ServiceQuota } from '../../services/sending-services.js';
import type { CampaignProgress } from '../../services/campaigns.js';
import { queryRows } from '../../services/kernel/db-query.js';
import { checksCertificates, tlsModeOf, type TlsMode } from '../../services/delivery/tls-policy.js';
import type { TransportConfig } from '../../models/index.js';

const q = queryRows;

/** A campaign's counts by state: the same shape engine.campaigns.progress() reports. */
export type Counts = Pick<CampaignProgress, 'total' | 'queued' | 'sending' | 'sent' | 'failed' | 'cancelled' | 'unknown'>;

export interface CampaignStats extends Counts {
  id: number;
  userId: number;
  name: string;
  status: string;
}

const CAMPAIGN_COUNTS = `
  t.id, t.created_by, t.name, t.status, t.wait_reason, t.pause_reason,
  CASE WHEN t.generated_at IS NULL THEN t.reserved_quota ELSE t.total_count END AS total,
  CASE WHEN t.generated_at IS NULL AND t.status NOT IN ('cancelled', 'completed') THEN t.reserved_quota ELSE COALESCE(s.queued, 0) END AS queued,
  COALESCE(s.sending, 0) AS sending,
  t.sent_count AS sent, t.failed_count AS failed, t.cancelled_count AS cancelled, t.unknown_count AS unknown`;

const LIVE_SUBTASKS = `
  SELECT task_id,
         count(*) FILTER (WHERE status = 'queued')::int AS queued,
         count(*) FILTER (WHERE status = 'sending')::int AS sending
    FROM subtasks WHERE task_id = ANY($ids::bigint[]) AND status IN ('queued', 'sending')
   GROUP BY task_id`;

type CountRow = {
  id: string;
  created_by: number;
  name: string;
  status: string;
  wait_reason: string | null;
  pause_reason: string | null;
  total: number;
  queued: number;
  sending: number;
  sent: number;
  failed: number;
  cancelled: number;
  unknown: number;
};

const toCounts = (r: CountRow) => ({
  total: Number(r.total),
  queued: Number(r.queued),
  sending: Number(r.sending),
  sent: Number(r.sent),
  failed: Number(r.failed),
  cancelled: Number(r.cancelled),
  unknown: Number(r.unknown),
});

export function percentDone(c: Counts): number {
  if (c.total === 0) return 100;
  return Math.min(100, Math.round(((c.sent + c.failed + c.cancelled + c.unknown) / c.total) * 1000) / 10);
}

/** Progress of the given campaigns (one statement; subtasks are read through their primary key). */
export async function campaignCounts(
  db: Sequelize,
  ids: number[],
): Promise<Map<number, Counts & { waitReason: string | null; pauseReason: string | null }>> {
  if (!ids.length) return new Map();
  const rows = await q<CountRow>(
    db,
    `WITH s AS (${LIVE_SUBTASKS})
     SELECT ${CAMPAIGN_COUNTS} FROM tasks t LEFT JOIN s ON s.task_id = t.id WHERE t.id = ANY($ids::bigint[])`,
    { ids },
  );
  return new Map(rows.map((r) => [Number(r.id), { ...toCounts(r), waitReason: r.wait_reason, pauseReason: r.pause_reason }]));
}

/** Stats by campaign and by service; `userId` restricts both to that user's campaigns and mail. */
export async function schedulerStats(db: Sequelize, userId?: number): Promise<{ campaigns: CampaignStats[]; services: ServiceStats[] }> {
  const mine = userId !== undefined;
  const campaigns = await q<CountRow>(
    db,
    `WITH s AS (
       SELECT task_id,
              count(*) FILTER (WHERE status = 'queued')::int AS queued,
              count(*) FILTER (WHERE status = 'sending')::int AS sending
         FROM subtasks WHERE status IN ('queued', 'sending') ${mine ? 'AND user_id = $userId' : ''}
        GROUP BY task_id)
     SELECT ${CAMPAIGN_COUNTS} FROM tasks t LEFT JOIN s ON s.task_id = t.id
      ${mine ? 'WHERE t.created_by = $userId' : ''} ORDER BY t.id`,
    mine ? { userId } : {},
  );
  const services = await q<
    { id: number; name: string | null } & Record<'queued' | 'sending' | 'sent' | 'failed' | 'cancelled' | 'unknown', number>
  >(
    db,
    `SELECT s.service_id AS id, e.name,
            count(*) FILTER (WHERE s.status = 'queued')::int AS queued,
            count(*) FILTER (WHERE s.status = 'sending')::int AS sending,
            count(*) FILTER (WHERE s.status = 'sent')::int AS sent,
            count(*) FILTER (WHERE s.status = 'failed')::int AS failed,
            count(*) FILTER (WHERE s.status = 'cancelled')::int AS cancelled,
            count(*) FILTER (WHERE s.status = 'unknown')::int AS unknown
       FROM subtasks s LEFT JOIN email_services e ON e.id = s.service_id
      WHERE s.service_id IS NOT NULL ${mine ? 'AND s.user_id = $userId' : ''}
      GROUP BY s.service_id, e.name ORDER BY s.service_id`,
    mine ? { userId } : {},
  );
  return {
    campaigns: campaigns.map((r) => ({ id: Number(r.id), userId: Number(r.created_by), name: r.name, status: r.status, ...toCounts(r) })),
    services: services.map((r) => ({ ...r, id: Number(r.id) })),
  };
}

export interface ServiceStats {
  id: number;
  name: string | null;
  queued: number;
  sending: number;
  sent: number;
  failed: number;
  cancelled: number;
  unknown: number;
}

/** Ids of the services `userId` may send through (open to all, or linked to the user). */
export async function usableServiceIds(db: Sequelize, userId: number): Promise<Set<number>> {
  const rows = await q<{ id: number }>(
    db,
    `SELECT id FROM email_services WHERE open_to_all OR id IN (SELECT service_id FROM user_services WHERE user_id = $userId)`,
    { userId },
  );
  return new Set(rows.map((r) => Number(r.id)));
}

/** Queued subtasks: all, or one user's (one count; subtasks has no status index, see the cache in server.ts). */
export async function queuedCount(db: Sequelize, userId?: number): Promise<number> {
  const [r] = await q<{ n: string }>(
    db,
    `SELECT count(*) AS n FROM subtasks WHERE status = 'queued' ${userId !== undefined ? 'AND user_id = $userId' : ''}`,
    userId !== undefined ? { userId } : {},
  );
  return Number(r?.n ?? 0);
}

/** The HTTP quota fields of a service. */
export function quotaView(q: ServiceQuota, lastSentAt: Date | null) {
  return {
    dailyQuota: q.dailyQuota,
    usedQuota: q.usedQuota,
    remainingQuota: q.remainingQuota,
    usagePercentage: q.dailyQuota > 0 ? Math.round((q.usedQuota / q.dailyQuota) * 1000) / 10 : 0,
    resetsAt: q.resetsAt,
    lastSent: lastSentAt,
    isHealthy: q.healthy,
  };
}

/** What the quota view does not carry: each service's `last_sent_at` and configured `sending_rate`. */
export interface ServiceExtras {
  lastSentAt: Date | null;
  sendingRate: number;
  tlsMode: TlsMode;
  certificateChecking: boolean;
}

/** Per service, what the status shows besides quota: pace, last send, TLS mode (no secret leaves this function). */
export async function serviceExtras(engine: Pick<Engine, 'apiDb'>): Promise<Map<number, ServiceExtras>> {
  const rows = await q<{ id: number; last_sent_at: Date | null; sending_rate: string; transport: TransportConfig }>(
    engine.apiDb,
    'SELECT id, last_sent_at, sending_rate, transport FROM email_services',
  );
  return new Map(
    rows.map((r) => [
      Number(r.id),
      {
        lastSentAt: r.last_sent_at,
        sendingRate: Number(r.sending_rate),
        tlsMode: tlsModeOf(r.transport),
        certificateChecking: checksCertificates(r.transport),
      },
    ]),
  );
}
