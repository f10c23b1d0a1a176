/**
 * Tenant isolation of GET /api/scheduler/status (issue #17): a plain user sees only their own
 * campaigns and the services they may use, no host, pid, instance or pool details, and a shared
 * service's quota only as remaining. An admin still sees everything. Real PostgreSQL, inject().
 */
import { hostname } from 'node:os';
import { httpFixture, type HttpFixture } from './helpers/http.js';
import { userWithContacts } from './helpers/scheduler.js';
import { deliverabilityFor } from '../src/http/user-status.js';
import type { ScopeStatus } from '../services/deliverability/shaper.js';

describe('scheduler status seen by a plain user', () => {
  let f: HttpFixture;
  afterAll(() => f?.close());

  it('shows a user their own campaigns and usable services only, without process details or shared quotas', async () => {
    f = await httpFixture();
    const alice = await f.user('Alice', 100);
    const bob = await userWithContacts(f.engine, 'Bob', 3, { quota: 100 });
    const svc = (name: string, userIds?: number[]) =>
      f.engine.services.create({
        name,
        transport: { host: '127.0.0.1', port: 2525 },
        sendingRate: 1,
        dailyQuota: 500,
        ...(userIds ? { userIds } : {}),
      });
    const open = await svc('open-relay');
    const mine = await svc('alice-private', [alice.id]);
    const shared = await svc('alice-and-bob', [alice.id, bob.userId]);
    await svc('bob-private-relay', [bob.userId]);
    await f.engine.apiDb.query("UPDATE email_services SET used_quota = 120, quota_day = (now() AT TIME ZONE 'UTC')::date");
    await f.engine.campaigns.create({
      userId: bob.userId,
      name: 'bob-secret-campaign',
      from: 'b@example.test',
      templates: [bob.templateId],
      contacts: bob.contactIds,
    });
    await f.engine.scheduler.processScheduledTasks();
    // Bob's campaign tripped a breaker: Alice's status must not list it.
    await f.engine.apiDb.query(
      "UPDATE tasks SET status = 'paused', pause_reason = 'complaint breaker: 4 complaints of 1000 sent' WHERE name = 'bob-secret-campaign'",
    );

    const res = await f.call('GET', '/api/scheduler/status', alice.token);
    expect(res.statusCode).toBe(200);
    const body = res.json<Record<string, unknown> & { services: Record<string, unknown>[] }>();
    expect(Object.keys(body).sort()).toEqual([
      'account_pause',
      'active_campaigns',
      'delivery_mode',
      'is_running',
      'paused_campaigns',
      'queued_subtasks',
      'services',
      'version',
    ]);
    expect(body.paused_campaigns).toEqual([]); // their own only: none of Bob's
    expect(body.active_campaigns).toBe(0); // Bob's campaign, not Alice's
    expect(body.queued_subtasks).toBe(0);
    expect(body.services.map((s) => s.name)).toEqual(['open-relay', 'alice-private', 'alice-and-bob']);
    const byId = new Map(body.services.map((s) => [s.id, s]));
    for (const id of [open.id, shared.id]) {
      expect(byId.get(id)).toMatchObject({ shared: true, remaining_quota: 380 });
      expect(byId.get(id)).not.toHaveProperty('daily_quota');
      expect(byId.get(id)).not.toHaveProperty('used_quota');
    }
    expect(byId.get(mine.id)).toMatchObject({ shared: false, remaining_quota: 380, daily_quota: 500, used_quota: 120 });
    for (const leak of [
      'bob-private-relay',
      'bob-secret-campaign',
      hostname(),
      String(process.pid),
      f.engine.scheduler.instanceId,
      'pools',
      'instances',
      'processing_rate',
      'buffered',
    ])
      expect([leak, res.body.includes(leak)]).toEqual([leak, false]);

    const admin = await f.call('GET', '/api/scheduler/status', f.adminToken);
    const all = admin.json<{ services: unknown[]; active_campaigns: number; instance_id: string; pools: unknown }>();
    expect(all.services).toHaveLength(4);
    expect(all.instance_id).toBe(f.engine.scheduler.instanceId);
    expect(all.pools).toBeDefined();
    expect(admin.body).toContain('bob-private-relay');
  });
});

describe("a service's throttles seen by a plain user", () => {
  const google: ScopeStatus = {
    provider: 'google',
    state: 'suspended',
    rate: 25,
    configuredRate: 50,
    suspendedUntil: '2026-11-30T10:15:00.000Z',
    lastDeferral: { rule: 'gmail-4.7.28-rate-limited', reply: '421 4.7.28 <bob@gmail.com> unusual rate', at: '2026-11-30T10:00:00.000Z' },
    deferrals: 3,
    inFlight: 2,
    limits: { ratePerSecond: null, concurrency: 20, hourly: null, daily: 1000 },
    sentThisHour: 40,
    sentToday: 400,
    warmup: { day: 3, cap: 500, sentToday: 400 },
    blocked: 'suspended',
  };
  const d = { providers: [google], warmup: [{ provider: null, day: 3, date: '2026-11-30', cap: 500, sentToday: 400 }] };

  it('on a shared service: state, rates, rule and warm-up, without send counts or the reply text', () => {
    const seen = deliverabilityFor(d, true)!;
    expect(seen.providers[0]).toEqual({
      provider: 'google',
      state: 'suspended',
      rate: 25,
      configuredRate: 50,
      suspendedUntil: '2026-11-30T10:15:00.000Z',
      lastDeferral: { rule: 'gmail-4.7.28-rate-limited', at: '2026-11-30T10:00:00.000Z' },
      deferrals: 3,
      limits: google.limits,
      warmup: { day: 3, cap: 500 },
      blocked: 'suspended',
    });
    expect(seen.warmup).toEqual([{ provider: null, day: 3, date: '2026-11-30', cap: 500 }]);
    expect(JSON.stringify(seen)).not.toContain('bob@gmail.com');
  });

  it('on a service listed for them alone: all of it; none when this process does not run it', () => {
    expect(deliverabilityFor(d, false)).toEqual(d);
    expect(deliverabilityFor(undefined, true)).toBeNull();
  });
});
