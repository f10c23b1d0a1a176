/**
 * Gathers the input of the completion forecast (forecast.ts) for some campaigns and runs it: five
 * set-based reads whatever the number of campaigns (the campaigns; their remaining messages by
 * provider and window zone, counted on the subtasks' primary key as progress() counts them; the
 * enabled services; the other sending campaigns' remaining work, from the counters on tasks; the
 * cap ledger's current windows, `delivery_counts`: every engine's reservations against hourly,
 * daily and warm-up caps), and the live throttles and counts of the services this process runs
 * (the scheduler's status).
 *
 * A service this process does not run is taken as normal on every provider: the throttles live in
 * the sending process (docs/deliverability.md). Its capped pairs' counts come from the ledger.
 */
import { DateTime } from 'luxon';
import type { ServiceContext } from './context.js';
import { queryRows } from './kernel/db-query.js';
import { forecastCompletion, type ForecastPair, type ForecastReason, type ForecastService } from './forecast.js';
import { loadShapingFile, resolveShaping, serviceShapingSchema, type ShapingTableInput } from './deliverability/shaping.js';
import type { ScopeStatus, WarmupStatus } from './deliverability/shaper.js';
import { quotaDayExpired } from './quota-day.js';
import type { StoredSendWindow, TaskStatus } from '../models/index.js';
import type { Provider } from './deliverability/providers.js';

/** The throttles and counts per service id of the services this process runs (the scheduler's status). */
export type LiveDeliverability = () => Map<number, { providers: ScopeStatus[]; warmup: WarmupStatus[] }>;

export interface CampaignForecast {
  /** The expected completion; null when nothing can send the rest now (`reason`). An estimate. */
  completesAt: Date | null;
  /** Why completesAt is null: paused, no usable service, blocked, or beyond the 60-day horizon. */
  reason: ForecastReason | 'paused' | null;
  /** The campaign's expected rate now, msg/s (0 while it waits for a window, a cap or its start). */
  ratePerSecond: number;
}

interface CampaignRow {
  id: string;
  created_by: number;
  status: TaskStatus;
  generated: boolean;
  scheduled_at: Date;
  timezone: string;
  send_window: StoredSendWindow | null;
  reserved_quota: number;
}

interface ServiceRow {
  id: number;
  sending_rate: string;
  daily_quota: number;
  used_quota: number;
  quota_day: string;
  quota_timezone: string;
  deliverability: unknown;
  open_to_all: boolean;
  user_ids: number[] | null;
}

export function createForecaster(ctx: ServiceContext, live?: LiveDeliverability) {
  let file: ShapingTableInput | undefined;
  const shapingFile = () => {
    try {
      file ??= loadShapingFile(ctx.config.shapingFile);
    } catch {
      file = {}; // the scheduler refuses and reports a bad file; the forecast uses the defaults
    }
    return file;
  };

  function toService(
    row: ServiceRow,
    now: DateTime,
    state: ReturnType<LiveDeliverability> | undefined,
    ledger: { provider: string; scope: 'hour' | 'day' | 'warmup'; sent: number }[],
  ): ForecastService {
    const own = serviceShapingSchema.safeParse(row.deliverability ?? {});
    const shaping = resolveShaping(shapingFile(), own.success ? own.data : null);
    const d = state?.get(Number(row.id));
    const pairs: Record<string, ForecastPair> = {};
    for (const p of d?.providers ?? []) {
      pairs[p.provider] = {
        state: p.state,
        rate: p.rate ?? p.configuredRate ?? shaping.adaptive.unlimitedBaseRate,
        suspendedUntil: p.suspendedUntil ? Date.parse(p.suspendedUntil) : null,
        quietSince: p.lastDeferral ? Date.parse(p.lastDeferral.at) : now.toMillis(),
        sentThisHour: p.sentThisHour,
        sentToday: p.sentToday,
      };
    }
    // The cap ledger's rows (every engine's reservations in the current windows) where they say more.
    const warmupSent = new Map<string, number>();
    for (const r of ledger) {
      if (r.scope === 'warmup') {
        warmupSent.set(r.provider, Number(r.sent));
        continue;
      }
      const pair = (pairs[r.provider] ??= {
        state: 'normal',
        rate: shaping.adaptive.unlimitedBaseRate,
        suspendedUntil: null,
        quietSince: now.toMillis(),
        sentThisHour: 0,
        sentToday: 0,
      });
      if (r.scope === 'hour') pair.sentThisHour = Math.max(pair.sentThisHour, Number(r.sent));
      else pair.sentToday = Math.max(pair.sentToday, Number(r.sent));
    }
    const liveWarmup = d?.warmup.length === shaping.warmup.length ? d.warmup : undefined;
    return {
      id: Number(row.id),
      interval: Number(row.sending_rate),
      dailyQuota: Number(row.daily_quota),
      usedToday: quotaDayExpired(row.quota_day, now, row.quota_timezone) ? 0 : Number(row.used_quota),
      quotaZone: row.quota_timezone,
      limits: (provider) => shaping.limitsFor(provider as Provider),
      adaptive: shaping.adaptive,
      warmup: shaping.warmup.map((schedule, i) => ({
        schedule,
        sentToday: Math.max(liveWarmup?.[i]?.sentToday ?? 0, warmupSent.get(schedule.provider ?? '*') ?? 0),
      })),
      pairs,
      others: [],
    };
  }

  /** Recent forecasts by campaign, with when they were made (real ms): a poller's page reuses them. */
  const recent = new Map<number, { at: number; value: CampaignForecast | undefined }>();

  /**
   * Forecasts of the given campaigns that are scheduled, sending or paused (others are left out).
   * With `maxAgeMs`, one made within that time (real clock) is reused: a forecast costs about a
   * millisecond for a campaign to a few providers, up to tens for a hundred buckets, a hundred
   * other campaigns and an hourly cap over two weeks (docs/deliverability.md), and the dashboard
   * polls a page of 200 campaigns every 1.5 s.
   */
  async function forecast(ids: number[], opts: { maxAgeMs?: number } = {}): Promise<Map<number, CampaignForecast>> {
    const maxAge = opts.maxAgeMs ?? 0;
    const real = Date.now();
    for (const [id, r] of recent) if (real - r.at > maxAge) recent.delete(id);
    const out = new Map<number, CampaignForecast>();
    const fresh = ids.filter((id) => {
      const r = maxAge > 0 ? recent.get(id) : undefined;
      if (r?.value) out.set(id, r.value);
      return !r;
    });
    if (fresh.length) {
      const made = await compute(fresh);
      for (const id of fresh) {
        const value = made.get(id);
        if (value) out.set(id, value);
        if (maxAge > 0) recent.set(id, { at: real, value });
      }
    }
    return out;
  }

  async function compute(ids: number[]): Promise<Map<number, CampaignForecast>> {
    const out = new Map<number, CampaignForecast>();
    if (!ids.length) return out;
    const now = ctx.clock();
    const campaigns = await queryRows<CampaignRow>(
      ctx.apiDb,
      `SELECT id, created_by, status, generated_at IS NOT NULL AS generated, scheduled_at, timezone, send_window, reserved_quota
         FROM tasks WHERE id = ANY($ids::bigint[]) AND status IN ('scheduled', 'sending', 'paused')`,
      { ids },
    );
    const active = campaigns.filter((c) => c.status !== 'paused');
    for (const c of campaigns) if (c.status === 'paused') out.set(Number(c.id), { completesAt: null, reason: 'paused', ratePerSecond: 0 });
    if (!active.length) return out;
    const generated = active.filter((c) => c.generated).map((c) => Number(c.id));
    const [remaining, services, sending, ledger] = await Promise.all([
      generated.length
        ? queryRows<{ task_id: string; provider: string | null; zone: string; n: number }>(
            ctx.apiDb,
            `SELECT s.task_id, s.provider, COALESCE(s.timezone, t.timezone) AS zone, count(*)::int AS n
               FROM subtasks s JOIN tasks t ON t.id = s.task_id
              WHERE s.task_id = ANY($ids::bigint[]) AND s.status IN ('queued', 'sending')
              GROUP BY 1, 2, 3`,
            { ids: generated },
          )
        : [],
      queryRows<ServiceRow>(
        ctx.apiDb,
        `SELECT s.id, s.sending_rate, s.daily_quota, s.used_quota, s.quota_day::text AS quota_day, s.quota_timezone, s.deliverability,
                s.open_to_all, ARRAY(SELECT us.user_id FROM user_services us WHERE us.service_id = s.id) AS user_ids
           FROM email_services s WHERE s.enabled ORDER BY s.id`,
        {},
      ),
      queryRows<{ id: string; created_by: number; remaining: number }>(
        ctx.apiDb,
        `SELECT id, created_by,
                GREATEST(0, total_count - sent_count - failed_count - cancelled_count - unknown_count)::int AS remaining
           FROM tasks WHERE status = 'sending' AND generated_at IS NOT NULL`,
        {},
      ),
      // The current window of each capped pair (deliverability/cap-ledger.ts): the earliest not ended.
      queryRows<{ service_id: number; provider: string; scope: 'hour' | 'day' | 'warmup'; sent: number }>(
        ctx.apiDb,
        `SELECT DISTINCT ON (service_id, provider, scope) service_id, provider, scope, sent
           FROM delivery_counts WHERE ends_at > $now ORDER BY service_id, provider, scope, ends_at`,
        { now: now.toJSDate() },
      ),
    ]);
    const state = live?.();
    const usable = (s: ServiceRow, userId: number) => s.open_to_all || (s.user_ids ?? []).map(Number).includes(Number(userId));
    const base = new Map(
      services.map((s) => [
        Number(s.id),
        toService(
          s,
          now,
          state,
          ledger.filter((r) => Number(r.service_id) === Number(s.id)),
        ),
      ]),
    );
    for (const c of active) {
      const id = Number(c.id);
      const fixedZone = c.send_window && c.send_window.timezone !== 'recipient' ? c.send_window.timezone : undefined;
      const buckets = c.generated
        ? remaining.filter((r) => Number(r.task_id) === id).map((r) => ({ provider: r.provider, zone: r.zone, count: Number(r.n) }))
        : [{ provider: null, zone: fixedZone ?? c.timezone, count: Number(c.reserved_quota) }];
      const mine = services
        .filter((s) => usable(s, c.created_by))
        .map((s) => ({
          ...base.get(Number(s.id))!,
          others: sending
            .filter((o) => Number(o.id) !== id && usable(s, o.created_by))
            .map((o) => ({ campaignId: Number(o.id), userId: Number(o.created_by), remaining: Number(o.remaining) })),
        }));
      const w = c.send_window;
      const f = forecastCompletion({
        now,
        ...(c.generated ? {} : { startAt: DateTime.fromJSDate(new Date(c.scheduled_at)) }),
        userId: Number(c.created_by),
        remaining: buckets,
        window: w ? { start: w.start, end: w.end, ...(w.days ? { days: w.days } : {}) } : null,
        services: mine,
      });
      out.set(id, { completesAt: f.completesAt?.toJSDate() ?? null, reason: f.reason, ratePerSecond: f.ratePerSecond });
    }
    return out;
  }

  return { forecast };
}
