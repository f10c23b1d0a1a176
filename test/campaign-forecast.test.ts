/**
 * The completion forecast read back from `campaigns.progress()` on real PostgreSQL, with an
 * injected clock: the campaign's queue as generated, its service's rate and quota, another user's
 * campaign sharing the service, the daily quota that pushes the rest past midnight, a send window,
 * a paused campaign; and over HTTP on the campaign and in the campaign list.
 */
import { DateTime } from 'luxon';
import type { Engine } from '../src/engine.js';
import { rows } from './helpers/db.js';
import { httpFixture, type HttpFixture } from './helpers/http.js';
import { userWithContacts } from './helpers/scheduler.js';

describe('campaigns.progress() forecast', () => {
  let engine: Engine;
  let f: HttpFixture;
  let now = DateTime.fromISO('2026-11-30T10:00:00Z', { zone: 'UTC' });
  const iso = (d: Date | null | undefined) => (d ? DateTime.fromJSDate(d).toUTC().toISO({ suppressMilliseconds: true }) : d);

  beforeAll(async () => {
    f = await httpFixture({ engine: { clock: () => now } });
    engine = f.engine;
  });
  afterAll(async () => {
    await f?.close();
  });

  async function campaign(name: string, n: number, extra: Record<string, unknown> = {}) {
    const u = await userWithContacts(engine, name, n);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name,
      from: `${name.toLowerCase()}@example.test`,
      templates: [u.templateId],
      contacts: u.contactIds,
      scheduledAt: now.toISO()!,
      ...extra,
    });
    return c.id;
  }

  it('reads the rate, the fair share, the daily quota and its reset, a window and a pause from the database', async () => {
    const service = await engine.services.create({
      name: 'one-a-second',
      transport: { host: '127.0.0.1', port: 2525 },
      sendingRate: 1,
      dailyQuota: 10_000,
    });
    const alice = await campaign('Alice', 100);

    // Before generation: the recipients reserved, from the scheduled time.
    const before = await engine.campaigns.progress(alice);
    expect(before.status).toBe('scheduled');
    expect(iso(before.forecast!.completesAt)).toBe('2026-11-30T10:01:40Z');
    await engine.scheduler.processScheduledTasks();
    const alone = await engine.campaigns.progress(alice);
    expect(alone).toMatchObject({ status: 'sending', queued: 100 });
    expect(iso(alone.forecast!.completesAt)).toBe('2026-11-30T10:01:40Z');
    expect(alone.forecast!.ratePerSecond).toBeCloseTo(1);
    // Pollers that do not show it (the progress log) ask for none.
    expect((await engine.campaigns.progress(alice, { forecast: false })).forecast).toBeNull();

    // Bob's 50 share the service: half each until Bob is done (100 s), then Alice's last 50 at 1/s.
    const bob = await campaign('Bob', 50);
    await engine.scheduler.processScheduledTasks();
    const shared = await engine.campaigns.progress(alice);
    expect(iso(shared.forecast!.completesAt)).toBe('2026-11-30T10:02:30Z');
    expect(shared.forecast!.ratePerSecond).toBeCloseTo(0.5);
    expect(iso((await engine.campaigns.progress(bob)).forecast!.completesAt)).toBe('2026-11-30T10:01:40Z');

    // 120 left of today's quota: it runs out after 120 s with 30 of Alice's left, sent after midnight (UTC).
    await rows(engine.apiDb, 'UPDATE email_services SET daily_quota = 200, used_quota = 80, quota_day = $day WHERE id = $id', {
      day: '2026-11-30',
      id: service.id,
    });
    expect(iso((await engine.campaigns.progress(alice)).forecast!.completesAt)).toBe('2026-12-01T00:00:30Z');

    // Messages sent are no longer remaining: 40 of Alice's marked sent (the counters too).
    await rows(
      engine.apiDb,
      `WITH s AS (UPDATE subtasks SET status = 'sent' WHERE ctid IN (SELECT ctid FROM subtasks WHERE task_id = $id LIMIT 40) RETURNING 1)
       UPDATE tasks SET sent_count = (SELECT count(*) FROM s) WHERE id = $id`,
      { id: alice },
    );
    await rows(engine.apiDb, 'UPDATE email_services SET daily_quota = 10000, used_quota = 0 WHERE id = $id', { id: service.id });
    // 60 left, 50 of Bob's: 0.5/s each for 100 s, then Alice's last 10 at 1/s.
    expect(iso((await engine.campaigns.progress(alice)).forecast!.completesAt)).toBe('2026-11-30T10:01:50Z');

    // Paused: nothing will send it.
    await engine.campaigns.pause(bob);
    expect((await engine.campaigns.progress(bob)).forecast).toEqual({ completesAt: null, reason: 'paused', ratePerSecond: 0 });
    // With Bob paused Alice has the service to herself.
    expect(iso((await engine.campaigns.progress(alice)).forecast!.completesAt)).toBe('2026-11-30T10:01:00Z');

    // A send window in a fixed zone that opened an hour ago and closes in 30 s: the rest tomorrow at 09:00.
    now = DateTime.fromISO('2026-11-30T09:59:30Z', { zone: 'UTC' });
    const carol = await campaign('Carol', 40, { sendWindow: { start: '09:00', end: '10:00', timezone: 'UTC' } });
    await engine.scheduler.processScheduledTasks();
    const windowed = await engine.campaigns.progress(carol);
    // Alice (60) and Carol (40) share: 15 each by 10:00, Carol's 25 from 09:00 the next day.
    expect(iso(windowed.forecast!.completesAt)).toBe('2026-12-01T09:00:25Z');

    // Over HTTP: on the campaign, and on each row of the list (snake_case).
    type Body = {
      id: number;
      progress: { forecast: { completes_at: string | null; reason: string | null; rate_per_second: number } | null };
    };
    const one = (await f.call('GET', `/api/campaigns/${carol}`, f.adminToken)).json<Body>();
    expect(one.progress.forecast).toEqual({ completes_at: '2026-12-01T09:00:25.000Z', reason: null, rate_per_second: 0.5 });
    const list = (await f.call('GET', '/api/campaigns', f.adminToken)).json<{ campaigns: Body[] }>();
    const byId = new Map(list.campaigns.map((c) => [c.id, c.progress.forecast]));
    expect(byId.get(carol)).toEqual(one.progress.forecast);
    expect(byId.get(bob)).toEqual({ completes_at: null, reason: 'paused', rate_per_second: 0 });
    // Alice's forecast takes Carol's 40 as sendable throughout (other campaigns' windows are not
    // modelled: the pessimistic reading): 0.5/s for 80 s, then Alice's last 20 at 1/s.
    expect(byId.get(alice)!.completes_at).toBe('2026-11-30T10:01:10.000Z');

    // A daily cap for the recipients' provider, and the cap ledger (every engine's reservations)
    // says 990 of it are used today: 10 now, Carol's other 30 after midnight in the quota zone.
    await engine.campaigns.pause(alice);
    await engine.services.update(service.id, { deliverability: { providers: { other: { daily: 1000 } } } });
    await rows(
      engine.apiDb,
      `INSERT INTO delivery_counts (service_id, provider, scope, bucket, sent, ends_at)
       VALUES ($id, 'other:example.test', 'day', '2026-11-30', 990, '2026-12-01T00:00:00Z')`,
      { id: service.id },
    );
    now = DateTime.fromISO('2026-11-30T20:00:00Z', { zone: 'UTC' });
    await rows(engine.apiDb, 'UPDATE tasks SET send_window = NULL WHERE id = $id', { id: carol });
    expect(iso((await engine.campaigns.progress(carol)).forecast!.completesAt)).toBe('2026-12-01T00:00:30Z');
    // Without the ledger's row: all 40 today.
    await rows(engine.apiDb, 'DELETE FROM delivery_counts');
    expect(iso((await engine.campaigns.progress(carol)).forecast!.completesAt)).toBe('2026-11-30T20:00:40Z');

    // Finished campaigns have no forecast.
    await engine.campaigns.cancel(carol);
    expect((await engine.campaigns.progress(carol)).forecast).toBeNull();
  });
});
