/**
 * The original scheduler routes (../shared/seeds/003): start, stop, pause and resume a task,
 * status, stats. Starting and stopping are for admins; a user may steer, and see the counts of,
 * only their own campaigns.
 */
import { z } from 'zod';
import type { Engine } from '../../engine.js';
import { isAdmin, userOf } from '../auth.js';
import { campaignFor, type App, type RouteContext } from '../context.js';
import { queuedCount, quotaView, schedulerStats, serviceExtras, usableServiceIds } from '../queries.js';
import { campaignStateSchema, errors, statsSchema, statusSchema, taskParams } from '../schemas.js';
import { collectUserStatus, userStatusSchema } from '../user-status.js';

/** The scheduler's status with database figures; `userId` limits services and queued counts to one user's view. */
export async function collectStatus(engine: Engine, ctx: Pick<RouteContext, 'version' | 'queuedCount' | 'sendHistory'>, userId?: number) {
  const s = engine.scheduler.status();
  const history = ctx.sendHistory.window(engine.clock().toMillis());
  const [quota, extras, queued, usable, instances, paused] = await Promise.all([
    engine.services.quota(),
    serviceExtras(engine),
    userId === undefined ? ctx.queuedCount() : queuedCount(engine.apiDb, userId),
    userId === undefined ? undefined : usableServiceIds(engine.apiDb, userId),
    engine.scheduler.instances(),
    engine.breakers.paused(userId === undefined ? {} : { userId }),
  ]);
  const running = new Map(s.services.map((r) => [r.id, r]));
  return {
    uptimeSeconds: Math.round(process.uptime()),
    version: ctx.version,
    isRunning: s.isRunning,
    startedAt: s.startedAt,
    instanceId: s.instanceId,
    deliveryMode: s.deliveryMode,
    activeServices: s.activeServices,
    activeCampaigns: s.activeCampaigns,
    queuedSubtasks: queued,
    bufferedMessages: s.bufferedMessages,
    pendingOutcomes: s.pendingOutcomes,
    processingRate: s.processingRate,
    rateHistory: { bucketSeconds: history.bucketSeconds, startsAt: history.startsAt },
    services: quota
      .filter((q) => !usable || usable.has(q.id))
      .map((q) => {
        const r = running.get(q.id);
        const x = extras.get(q.id);
        return {
          id: q.id,
          name: q.name,
          state: r?.state ?? (q.enabled ? 'stopped' : 'disabled'),
          enabled: q.enabled,
          sendingRate: r?.sendingRate ?? x?.sendingRate ?? 0,
          inFlight: r?.inFlight ?? 0,
          concurrency: r?.concurrency ?? null,
          fairnessLag: r?.fairnessLag ?? null,
          tlsMode: r?.tlsMode ?? x?.tlsMode ?? 'opportunistic',
          certificateChecking: r?.certificateChecking ?? x?.certificateChecking ?? true,
          ...quotaView(q, r?.lastSentAt ?? x?.lastSentAt ?? null),
          sentPerBucket: history.of(q.id),
          // Per mailbox provider: state, rates, the last deferral reply (admins; docs/deliverability.md).
          deliverability: userId === undefined ? (r?.deliverability ?? null) : null,
        };
      }),
    // Which engines run, and which services each owns: other users' services are not named to a user.
    instances: instances.map((i) => ({ ...i, services: usable ? i.services.filter((id) => usable.has(id)) : i.services })),
    pools: engine.pools(),
    sendWorkers: s.sendWorkers,
    pausedCampaigns: paused.campaigns,
    pausedUsers: paused.users,
  };
}

export function schedulerRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  const tags = ['scheduler'];
  const runState = z.object({ isRunning: z.boolean(), instanceId: z.string(), startedAt: z.date().nullable() });
  const state = () => {
    const s = engine.scheduler.status();
    return { isRunning: s.isRunning, instanceId: s.instanceId, startedAt: s.startedAt };
  };

  app.post(
    '/api/scheduler/start',
    {
      config: { auth: 'admin' },
      schema: { tags, summary: 'Start delivery in this process (idempotent)', response: { 200: runState, ...errors(401, 403) } },
    },
    async () => {
      await engine.scheduler.start();
      return state();
    },
  );

  app.post(
    '/api/scheduler/stop',
    {
      config: { auth: 'admin' },
      schema: {
        tags,
        summary: 'Stop delivery gracefully: in-flight sends finish and are recorded (idempotent)',
        response: { 200: runState, ...errors(401, 403) },
      },
    },
    async () => {
      await engine.scheduler.stop();
      return state();
    },
  );

  for (const verb of ['pause', 'resume'] as const) {
    app.post(
      `/api/scheduler/tasks/:task_id/${verb}`,
      {
        schema: {
          tags,
          summary: verb === 'pause' ? 'Pause a campaign (alias of POST /api/campaigns/{id}/pause)' : 'Resume a campaign',
          params: taskParams,
          response: { 200: campaignStateSchema, ...errors(400, 401, 404, 409) },
        },
      },
      async (request) => {
        const c = await campaignFor(engine, request, request.params.taskId);
        await engine.campaigns[verb](c.id);
        return { id: c.id, status: (await engine.campaigns.get(c.id)).status };
      },
    );
  }

  app.get(
    '/api/scheduler/status',
    {
      schema: {
        tags,
        summary: 'Scheduler status: running, queue, send rate, per-service quota and health, pool usage',
        description:
          'A non-admin gets the user view: their own campaigns and queue, the services they may send through (a shared one with its ' +
          'quota only as remaining), and no process details (instance, host, pid, pools, buffers, processing rate).',
        response: { 200: z.union([statusSchema, userStatusSchema]), ...errors(401) },
      },
    },
    async (request) => (isAdmin(request) ? collectStatus(engine, ctx) : collectUserStatus(engine, ctx.version, userOf(request).id)),
  );

  app.get(
    '/api/scheduler/stats',
    {
      schema: {
        tags,
        summary: 'Counts by state per campaign and per service (a user: their own)',
        response: { 200: statsSchema, ...errors(401) },
      },
    },
    async (request) => schedulerStats(engine.apiDb, isAdmin(request) ? undefined : userOf(request).id),
  );
}
