/**
 * What a plain user sees of the scheduler (`GET /api/scheduler/status` with a user token): their
 * own campaigns and queue, and the services they may send through, with no process details (no
 * instance id, host, pid, pools, buffers or processing rate: those describe every user's
 * traffic). A service shared with other users (open to all, or listed for someone else too) shows
 * its quota only as what remains today; one listed for this user alone shows its whole quota.
 */
import { z } from 'zod';
import type { Engine } from '../engine.js';
import { queryRows } from '../../services/kernel/db-query.js';
import { pausedCampaignsSchema, userDeliverabilitySchema } from './schemas.js';
import type { ServiceStatus } from '../../services/scheduler/loop.js';

export const userStatusSchema = z.object({
  version: z.string(),
  isRunning: z.boolean(),
  deliveryMode: z.string(),
  activeCampaigns: z.number().describe('Your campaigns that are sending'),
  queuedSubtasks: z.number().describe('Your messages waiting in the database'),
  pausedCampaigns: pausedCampaignsSchema,
  accountPause: z.string().nullable().describe('Why an admin paused your account across campaigns; null when it is not'),
  services: z.array(
    z.object({
      id: z.number(),
      name: z.string(),
      state: z.string(),
      enabled: z.boolean(),
      sendingRate: z.number(),
      isHealthy: z.boolean(),
      shared: z.boolean().describe('Other users may send through it too: its quota shows only as remaining'),
      remainingQuota: z.number(),
      resetsAt: z.date(),
      dailyQuota: z.number().optional().describe('Only for a service listed for you alone'),
      usedQuota: z.number().optional().describe('Only for a service listed for you alone'),
      deliverability: userDeliverabilitySchema
        .nullable()
        .describe(
          'Throttles per mailbox provider; on a shared service without send counts or reply texts. Null when this process does not run the service',
        ),
    }),
  ),
});

export async function collectUserStatus(engine: Engine, version: string, userId: number): Promise<z.infer<typeof userStatusSchema>> {
  const s = engine.scheduler.status();
  const [quota, usable, [mine], paused] = await Promise.all([
    engine.services.quota(),
    queryRows<{ id: number; shared: boolean; sending_rate: string }>(
      engine.apiDb,
      `SELECT s.id, s.sending_rate,
              (s.open_to_all OR EXISTS (SELECT 1 FROM user_services o WHERE o.service_id = s.id AND o.user_id <> $userId)) AS shared
         FROM email_services s
        WHERE s.open_to_all OR s.id IN (SELECT service_id FROM user_services WHERE user_id = $userId)`,
      { userId },
    ),
    queryRows<{ active: number; queued: number }>(
      engine.apiDb,
      `SELECT (SELECT count(*) FROM tasks WHERE created_by = $userId AND status = 'sending')::int AS active,
              (SELECT count(*) FROM subtasks s JOIN tasks t ON t.id = s.task_id WHERE t.created_by = $userId AND s.status = 'queued')::int AS queued`,
      { userId },
    ),
    engine.breakers.paused({ userId }),
  ]);
  const allowed = new Map(usable.map((u) => [Number(u.id), u]));
  const running = new Map(s.services.map((r) => [r.id, r]));
  return {
    version,
    isRunning: s.isRunning,
    deliveryMode: s.deliveryMode,
    activeCampaigns: mine!.active,
    queuedSubtasks: mine!.queued,
    pausedCampaigns: paused.campaigns,
    accountPause: paused.users[0]?.reason ?? null,
    services: quota
      .filter((q) => allowed.has(q.id))
      .map((q) => {
        const u = allowed.get(q.id)!;
        return {
          id: q.id,
          name: q.name,
          state: running.get(q.id)?.state ?? (q.enabled ? 'stopped' : 'disabled'),
          enabled: q.enabled,
          sendingRate: Number(u.sending_rate),
          isHealthy: q.healthy,
          shared: u.shared,
          remainingQuota: q.remainingQuota,
          resetsAt: q.resetsAt,
          ...(u.shared ? {} : { dailyQuota: q.dailyQuota, usedQuota: q.usedQuota }),
          deliverability: deliverabilityFor(running.get(q.id)?.deliverability, u.shared),
        };
      }),
  };
}

/**
 * A service's per-provider state as a user may see it. On a shared service the counts of sends
 * (other users' traffic, as its quota shows only as remaining) and the deferral reply's text (it
 * may quote another user's recipient) are left out; the state, rates, rule and warm-up stay.
 */
export function deliverabilityFor(
  d: ServiceStatus['deliverability'] | undefined,
  shared: boolean,
): z.infer<typeof userDeliverabilitySchema> | null {
  if (!d) return null;
  if (!shared) return d;
  return {
    providers: d.providers.map(({ inFlight: _i, sentThisHour: _h, sentToday: _d, lastDeferral, warmup, ...rest }) => ({
      ...rest,
      lastDeferral: lastDeferral ? { rule: lastDeferral.rule, at: lastDeferral.at } : null,
      warmup: warmup ? { day: warmup.day, cap: warmup.cap } : null,
    })),
    warmup: d.warmup.map(({ sentToday: _s, ...rest }) => rest),
  };
}
