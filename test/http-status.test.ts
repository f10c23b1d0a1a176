/**
 * Scheduler status, stats and /metrics after real deliveries to an SMTP server on loopback, with
 * every figure checked against counts computed independently with SQL.
 */
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createMetrics } from '../src/http/metrics.js';
import { rows } from './helpers/db.js';
import { httpFixture, type HttpFixture } from './helpers/http.js';
import { until, userWithContacts } from './helpers/scheduler.js';

type Counts = Record<'queued' | 'sending' | 'sent' | 'failed' | 'cancelled' | 'unknown', number>;
const STATES = ['queued', 'sending', 'sent', 'failed', 'cancelled', 'unknown'] as const;

/** Prometheus text -> value of one series (labels given in any order). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}
function sum(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3]);
  }
  return total;
}

describe('scheduler status, stats and metrics over real deliveries', () => {
  let f: HttpFixture;
  let smtp: SmtpCatcher;
  let a: Awaited<ReturnType<typeof userWithContacts>>;
  let aToken: string;
  let services: number[];

  beforeAll(async () => {
    smtp = await startSmtpCatcher({
      // One address refused for good, one refused for now (retried later: it stays queued).
      rcptReply: (to) =>
        to === 'a3@example.test'
          ? { code: 550, message: 'no such user' }
          : to === 'a4@example.test'
            ? { code: 451, message: 'try later' }
            : undefined,
    });
    // Figures are compared with the database right after changes: no reuse of the queue count.
    f = await httpFixture({ engine: { schedulerTickMs: 50 }, http: { queueCountCacheMs: 0 } });
    a = await userWithContacts(f.engine, 'A', 30);
    const b = await userWithContacts(f.engine, 'B', 10);
    aToken = (await f.call('POST', `/api/users/${a.userId}/token`, f.adminToken)).json<{ token: string }>().token;
    await f.engine.campaigns.create({
      userId: a.userId,
      name: 'A big',
      from: 'a@example.test',
      templates: [a.templateId],
      contacts: a.contactIds,
    });
    await f.engine.campaigns.create({
      userId: b.userId,
      name: 'B small',
      from: 'b@example.test',
      templates: [b.templateId],
      contacts: b.contactIds,
    });
    services = [];
    // 20 sends of quota for 40 recipients: the rest stays queued, so every state has a figure.
    for (const [name, quota] of [
      ['s1', 12],
      ['s2', 8],
    ] as const) {
      const res = await f.call('POST', '/api/services', f.adminToken, {
        name,
        transport: { host: '127.0.0.1', port: smtp.port },
        sending_rate: 0,
        daily_quota: quota,
        max_connections: 1,
      });
      services.push(res.json<{ id: number }>().id);
    }
  });
  afterAll(async () => {
    await f.close();
    await smtp.stop();
  });

  it('starts the scheduler (admin), delivers until the quota is spent, and stops it', async () => {
    const started = await f.call('POST', '/api/scheduler/start', f.adminToken);
    expect(started.statusCode).toBe(200);
    expect(started.json()).toMatchObject({ is_running: true, instance_id: f.engine.scheduler.instanceId });
    const running = await f.call('GET', '/api/scheduler/status', f.adminToken);
    const r = running.json<{
      instances: { id: string; pid: number; self: boolean }[];
      services: { concurrency: unknown; fairness_lag: number | null }[];
    }>();
    expect(r).toMatchObject({ is_running: true });
    // This engine is listed among the live instances, and each service it runs shows its concurrency.
    expect(r.instances).toEqual([expect.objectContaining({ id: f.engine.scheduler.instanceId, pid: process.pid, self: true })]);
    for (const svc of r.services) expect(svc.concurrency).toMatchObject({ current: expect.any(Number), max: expect.any(Number) });
    // And its users' worst lag behind a round robin, in turns: never a whole turn.
    for (const svc of r.services) {
      expect(svc.fairness_lag).toEqual(expect.any(Number));
      expect(svc.fairness_lag).toBeGreaterThanOrEqual(0);
      expect(svc.fairness_lag).toBeLessThan(1);
    }
    // Quota is reserved in chunks ahead of the sends: wait for the mail itself.
    await smtp.waitFor(20);
    await until(async () => (await f.engine.services.quota()).every((q) => q.remainingQuota === 0), 30_000, 'both quotas spent');
    const stopped = await f.call('POST', '/api/scheduler/stop', f.adminToken);
    expect(stopped.json()).toMatchObject({ is_running: false });
    expect(smtp.accepted).toBe(20);
  });

  it('reports stats per campaign and per service equal to SQL counts over subtasks', async () => {
    const bySql = await rows<{ task_id: string; status: string; n: number }>(
      f.engine.apiDb,
      'SELECT task_id, status, count(*)::int AS n FROM subtasks GROUP BY task_id, status',
    );
    const expected = new Map<number, Counts>();
    for (const r of bySql) {
      const c = expected.get(Number(r.task_id)) ?? { queued: 0, sending: 0, sent: 0, failed: 0, cancelled: 0, unknown: 0 };
      c[r.status as keyof Counts] = r.n;
      expected.set(Number(r.task_id), c);
    }
    const res = await f.call('GET', '/api/scheduler/stats', f.adminToken);
    expect(res.statusCode).toBe(200);
    const stats = res.json<{
      campaigns: (Counts & { id: number; total: number; name: string })[];
      services: (Counts & { id: number; name: string })[];
    }>();
    expect(stats.campaigns.map((c) => c.name)).toEqual(['A big', 'B small']);
    for (const c of stats.campaigns) {
      const want = expected.get(c.id)!;
      for (const s of STATES) expect([c.name, s, c[s]]).toEqual([c.name, s, want[s]]);
      expect(c.total).toBe(Object.values(want).reduce((x, y) => x + y, 0));
    }
    const totals = stats.campaigns.reduce((t, c) => ({ sent: t.sent + c.sent, failed: t.failed + c.failed }), { sent: 0, failed: 0 });
    expect(totals).toEqual({ sent: 20, failed: 1 });

    const perService = await rows<{ service_id: number; status: string; n: number }>(
      f.engine.apiDb,
      'SELECT service_id, status, count(*)::int AS n FROM subtasks WHERE service_id IS NOT NULL GROUP BY 1, 2',
    );
    for (const s of stats.services) {
      for (const state of STATES) {
        const want = perService.find((r) => r.service_id === s.id && r.status === state)?.n ?? 0;
        expect([s.name, state, s[state]]).toEqual([s.name, state, want]);
      }
    }
    expect(stats.services.map((s) => s.sent).reduce((x, y) => x + y, 0)).toBe(20);

    // A user sees only their own campaign and their own mail per service.
    const mine = (await f.call('GET', '/api/scheduler/stats', aToken)).json<typeof stats>();
    expect(mine.campaigns.map((c) => c.name)).toEqual(['A big']);
    const [aSent] = await rows<{ n: number }>(
      f.engine.apiDb,
      "SELECT count(*)::int AS n FROM subtasks WHERE user_id = $u AND status = 'sent'",
      {
        u: a.userId,
      },
    );
    expect(mine.services.map((s) => s.sent).reduce((x, y) => x + y, 0)).toBe(aSent!.n);
  });

  it('reports status figures equal to the database: queue, quota, rate, pools, version', async () => {
    const res = await f.call('GET', '/api/scheduler/status', f.adminToken);
    expect(res.statusCode).toBe(200);
    const s = res.json<Record<string, unknown> & { services: Record<string, unknown>[] }>();
    const [queued] = await rows<{ n: number }>(f.engine.apiDb, "SELECT count(*)::int AS n FROM subtasks WHERE status = 'queued'");
    expect(queued!.n).toBe(40 - 20 - 1);
    expect(s.queued_subtasks).toBe(queued!.n);
    expect(s.is_running).toBe(false);
    expect(s.version).toBe('0.1.0');
    expect(s.uptime_seconds).toEqual(expect.any(Number));
    expect((s.processing_rate as Record<string, number>).per_minute_1).toBeGreaterThan(0);
    expect(Object.keys(s.processing_rate as object).sort()).toEqual(['per_minute_1', 'per_minute_15', 'per_minute_5']);
    expect(s.pools).toMatchObject({ api: { max: 20 }, scheduler: { max: 5 }, prepared: { max: 5 } });
    // Stopped: this engine unregistered, and no service runs here.
    expect(s.instances).toEqual([]);
    for (const x of s.services) expect(x.concurrency).toBeNull();
    for (const x of s.services) expect(x.fairness_lag).toBeNull();
    const db = await rows<{ id: number; used_quota: number; daily_quota: number; is_healthy: boolean; last_sent_at: Date }>(
      f.engine.apiDb,
      'SELECT id, used_quota, daily_quota, is_healthy, last_sent_at FROM email_services ORDER BY id',
    );
    expect(s.services.map((x) => [x.id, x.used_quota, x.remaining_quota, x.usage_percentage, x.is_healthy])).toEqual(
      db.map((d) => [d.id, d.used_quota, d.daily_quota - d.used_quota, 100, d.is_healthy]),
    );
    for (const x of s.services) expect(x.last_sent).not.toBeNull();

    // A user's status counts only their queued mail.
    const mine = (await f.call('GET', '/api/scheduler/status', aToken)).json<{ queued_subtasks: number }>();
    const [aQueued] = await rows<{ n: number }>(
      f.engine.apiDb,
      "SELECT count(*)::int AS n FROM subtasks WHERE status = 'queued' AND user_id = $u",
      {
        u: a.userId,
      },
    );
    expect(mine.queued_subtasks).toBe(aQueued!.n);
  });

  it('serves the last 15 minutes of sends per service in 10 s buckets, and in flight as sends under way', async () => {
    const s = (await f.call('GET', '/api/scheduler/status', f.adminToken)).json<{
      rate_history: { bucket_seconds: number; starts_at: string };
      services: { id: number; sent_per_bucket: number[]; in_flight: number }[];
    }>();
    expect(s.rate_history.bucket_seconds).toBe(10);
    const start = new Date(s.rate_history.starts_at).getTime();
    expect(start % 10_000).toBe(0);
    // The newest bucket holds now: the window began 89 buckets before it.
    expect(Date.now() - start).toBeGreaterThanOrEqual(89 * 10_000);
    expect(Date.now() - start).toBeLessThan(90 * 10_000 + 5_000);
    for (const id of services) {
      const [sent] = await rows<{ n: number }>(
        f.engine.apiDb,
        "SELECT count(*)::int AS n FROM subtasks WHERE service_id = $id AND status = 'sent'",
        { id },
      );
      const svc = s.services.find((x) => x.id === id)!;
      expect(svc.sent_per_bucket).toHaveLength(90);
      expect(svc.sent_per_bucket.reduce((x, y) => x + y, 0)).toBe(sent!.n);
      expect(svc.in_flight).toBe(0); // stopped: nothing is being sent, though messages were claimed
    }
  });

  it('lists the latest failures from error_logs to admins, with the service name', async () => {
    const res = await f.call('GET', '/api/failures?limit=5', f.adminToken);
    expect(res.statusCode).toBe(200);
    const db = await rows<{ error_type: string; message: string; count: number; service_id: number }>(
      f.engine.apiDb,
      'SELECT error_type, message, count, service_id FROM error_logs ORDER BY last_seen_at DESC, id DESC LIMIT 5',
    );
    expect(db.length).toBeGreaterThan(0);
    const failures = res.json<{
      failures: { error_type: string; message: string; count: number; service_id: number; service_name: string }[];
    }>().failures;
    expect(failures.map((x) => [x.error_type, x.message, x.count, x.service_id])).toEqual(
      db.map((d) => [d.error_type, d.message, d.count, d.service_id]),
    );
    // The permanent refusal of a3 is among them, named by its service.
    expect(failures.find((x) => x.message.includes('550'))).toMatchObject({ service_name: expect.stringMatching(/^s[12]$/) });
    expect((await f.call('GET', '/api/failures', aToken)).statusCode).toBe(403);
    expect((await f.call('GET', '/api/failures?limit=0', f.adminToken)).statusCode).toBe(400);
  });

  it('gives each campaign its owner id and creation time', async () => {
    const list = (await f.call('GET', '/api/campaigns', f.adminToken)).json<{
      campaigns: { name: string; user_id: number; created_at: string }[];
    }>();
    const db = await rows<{ name: string; created_by: number; created_at: Date }>(
      f.engine.apiDb,
      'SELECT name, created_by, created_at FROM tasks',
    );
    expect(list.campaigns.map((c) => [c.name, c.user_id, new Date(c.created_at).getTime()]).sort()).toEqual(
      db.map((d) => [d.name, d.created_by, d.created_at.getTime()]).sort(),
    );
  });

  it('exports Prometheus metrics: sends by outcome, latency, queue depth, quota, pools, ticks', async () => {
    expect((await f.call('GET', '/metrics')).statusCode).toBe(401);
    const res = await f.call('GET', '/metrics', f.adminToken);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    const text = res.body;
    expect(sum(text, 'fairsend_sends_total', { outcome: 'sent' })).toBe(20);
    expect(sum(text, 'fairsend_sends_total', { outcome: 'failed' })).toBe(1);
    expect(sum(text, 'fairsend_sends_total', { outcome: 'retry' })).toBeGreaterThanOrEqual(1);
    expect(sum(text, 'fairsend_send_latency_seconds_count')).toBe(20);
    for (const id of services) {
      const sent = await rows<{ n: number }>(
        f.engine.apiDb,
        "SELECT count(*)::int AS n FROM subtasks WHERE service_id = $id AND status = 'sent'",
        { id },
      );
      expect(sample(text, 'fairsend_sends_total', { service_id: String(id), outcome: 'sent' })).toBe(sent[0]!.n);
      expect(sample(text, 'fairsend_service_remaining_quota', { service_id: String(id) })).toBe(0);
    }
    expect(sample(text, 'fairsend_service_daily_quota', { service: 's1' })).toBe(12);
    const [queued] = await rows<{ n: number }>(f.engine.apiDb, "SELECT count(*)::int AS n FROM subtasks WHERE status = 'queued'");
    expect(sample(text, 'fairsend_queue_depth')).toBe(queued!.n);
    expect(sample(text, 'fairsend_db_pool_max_connections', { pool: 'api' })).toBe(20);
    expect(sample(text, 'fairsend_db_pool_max_connections', { pool: 'scheduler' })).toBe(5);
    expect(sample(text, 'fairsend_scheduler_ticks_total')).toBeGreaterThan(0);
    expect(sample(text, 'fairsend_scheduler_running')).toBe(0);
  });

  it('stops counting once detached (the server detaches on close)', async () => {
    const m = createMetrics(f.engine, { queuedCount: async () => 0, processMetrics: false });
    m.detach();
    await f.engine.scheduler.start();
    await f.engine.scheduler.tick();
    await f.engine.scheduler.stop();
    const ticks = await m.registry.getSingleMetric('fairsend_scheduler_ticks_total')!.get();
    expect(ticks.values.reduce((x, v) => x + v.value, 0)).toBe(0);
    // The server's own metrics still count: the same ticks are there.
    const text = (await f.call('GET', '/metrics', f.adminToken)).body;
    expect(sample(text, 'fairsend_scheduler_ticks_total')).toBeGreaterThan(0);
  });
});
