import { DateTime } from 'luxon';
import type { Engine } from '../src/engine.js';
import { DUE_TASK_SQL } from '../services/generation.js';
import { createTestDatabase, createTestEngine, explainNodes, rows } from './helpers/db.js';
import { userWithContacts } from './helpers/scheduler.js';

describe('queue pre-generation', () => {
  let url: string;
  let a: Engine;
  let b: Engine;
  let user: number;
  let tpl: number;
  beforeAll(async () => {
    url = await createTestDatabase();
    a = await createTestEngine({ databaseUrl: url });
    b = await createTestEngine({ databaseUrl: url });
    user = (await a.users.create({ name: 'G', email: 'g@example.test', quota: 1_000_000, timezone: 'Europe/Paris' })).id;
    tpl = (await a.templates.create(user, { name: 't', subject: 's', text: 'x' })).id;
    await a.apiDb.query(
      `INSERT INTO contacts (user_id, email, tags) SELECT $u, 'r' || g || '@example.test', '["all"]' FROM generate_series(1, 5000) g`,
      { bind: { u: user } },
    );
  });
  afterAll(async () => {
    await a.close();
    await b.close();
  });

  it('generates each due campaign exactly once when two engines race, in contact-id order, in one go', async () => {
    const campaigns = [];
    for (let i = 0; i < 6; i++) {
      campaigns.push(
        await a.campaigns.create({ userId: user, name: `c${i}`, from: 'g@example.test', templates: [tpl], recipientRule: { type: 'all' } }),
      );
    }
    const [ra, rb] = await Promise.all([a.scheduler.processScheduledTasks(), b.scheduler.processScheduledTasks()]);
    const generatedIds = [...ra, ...rb].map((r) => r.taskId).sort((x, y) => x - y);
    expect(generatedIds).toEqual(campaigns.map((c) => c.id));
    for (const r of [...ra, ...rb]) expect(r.generated).toBe(5000);
    const counts = await rows<{ task_id: string; n: number; ordered: boolean }>(
      a.apiDb,
      `SELECT task_id, count(*)::int AS n,
              bool_and(prev IS NULL OR contact_id > prev) AS ordered
         FROM (SELECT task_id, contact_id, lag(contact_id) OVER (PARTITION BY task_id ORDER BY ctid) AS prev FROM subtasks) s
        GROUP BY task_id ORDER BY task_id`,
    );
    expect(counts.map((c) => [Number(c.task_id), c.n, c.ordered])).toEqual(campaigns.map((c) => [c.id, 5000, true]));
    // Nothing left to generate; a third pass is a no-op.
    expect(await a.scheduler.processScheduledTasks()).toEqual([]);
    expect((await a.campaigns.progress(campaigns[0]!.id)).status).toBe('sending');
    expect((await a.users.get(user)).remainingQuota).toBe(1_000_000 - 6 * 5000);
    for (const c of campaigns) await a.campaigns.cancel(c.id);
  });

  it('queues only what the credit covers when contacts grew after creation, refunds when they shrank, and says so', async () => {
    const small = (await a.users.create({ name: 'S', email: 's@example.test', quota: 3 })).id;
    const t = (await a.templates.create(small, { name: 't', subject: 's', text: 'x' })).id;
    const made = await a.contacts.bulkCreate(small, [{ email: 's1@example.test' }, { email: 's2@example.test' }]);
    const c = await a.campaigns.create({
      userId: small,
      name: 'grow',
      from: 's@example.test',
      templates: [t],
      recipientRule: { type: 'all' },
    });
    expect((await a.users.get(small)).remainingQuota).toBe(1);
    await a.contacts.bulkCreate(small, [{ email: 's3@example.test' }, { email: 's4@example.test' }]);
    const [r] = await a.scheduler.processScheduledTasks();
    expect(r).toMatchObject({ taskId: c.id, generated: 3, cutOff: 1 });
    expect((await a.users.get(small)).remainingQuota).toBe(0);
    expect((await a.campaigns.progress(c.id)).waitReason).toBe("1 recipients matched beyond the user's credit and were not queued");

    await a.users.addQuota(small, 5);
    const c2 = await a.campaigns.create({ userId: small, name: 'shrink', from: 's@example.test', templates: [t], contacts: made.ids });
    await a.contacts.setStatus(small, made.ids[0]!, 'unsubscribed');
    expect((await a.scheduler.processScheduledTasks())[0]).toMatchObject({ taskId: c2.id, generated: 1, cutOff: 0 });
    // 5 - 2 reserved + 1 refunded at generation, + 1: the unsubscribe (an API one) also cancelled the
    // contact's queued message in 'grow' at once and refunded it.
    expect((await a.users.get(small)).remainingQuota).toBe(5);
    expect(await a.subscriptions.history(made.ids[0]!)).toMatchObject([{ method: 'api', fromStatus: 'active', toStatus: 'unsubscribed' }]);
  });

  it('gives each recipient the earliest send time of the window in their own zone', async () => {
    // Friday 2026-11-27 20:00 UTC: Saturday 05:00 in Tokyo, Friday 15:00 in New York, Friday 21:00 in Paris.
    const now = DateTime.fromISO('2026-11-27T20:00:00Z');
    const e = await createTestEngine({ databaseUrl: url, clock: () => now });
    try {
      const w = (await e.users.create({ name: 'W', email: 'w@example.test', quota: 10, timezone: 'Europe/Paris' })).id;
      const t = (await e.templates.create(w, { name: 't', subject: 's', text: 'x' })).id;
      await e.contacts.bulkCreate(w, [
        { email: 'tokyo@example.test', timezone: 'Asia/Tokyo' },
        { email: 'ny@example.test', timezone: 'America/New_York' },
        { email: 'paris@example.test' }, // falls back to the user's zone
      ]);
      const c = await e.campaigns.create({
        userId: w,
        name: 'window',
        from: 'w@example.test',
        templates: [t],
        recipientRule: { type: 'all' },
        sendWindow: { start: '09:00', end: '17:00', days: [1, 2, 3, 4, 5] },
      });
      await e.scheduler.processScheduledTasks();
      const got = await rows<{ email: string; not_before: Date; timezone: string }>(
        e.apiDb,
        'SELECT email, not_before, timezone FROM subtasks WHERE task_id = $id ORDER BY email',
        { id: c.id },
      );
      expect(got.map((r) => [r.email, r.not_before.toISOString(), r.timezone])).toEqual([
        ['ny@example.test', '2026-11-27T20:00:00.000Z', 'America/New_York'], // inside the window: now
        ['paris@example.test', '2026-11-30T08:00:00.000Z', 'Europe/Paris'], // Monday 09:00 Paris
        ['tokyo@example.test', '2026-11-30T00:00:00.000Z', 'Asia/Tokyo'], // Monday 09:00 Tokyo
      ]);
    } finally {
      await e.close();
    }
  });
});

describe('the due campaign pick', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await createTestEngine();
  });
  afterAll(() => engine.close());

  it('reads the first due campaigns in order and stops, however many are due', async () => {
    const u = await userWithContacts(engine, 'D', 1);
    const first = await engine.campaigns.create({
      userId: u.userId,
      name: 'c',
      from: 'd@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    // 5,000 more due campaigns like it (rows written directly: only the pick is measured here).
    await engine.apiDb.query(
      `INSERT INTO tasks (name, status, scheduled_at, timezone, from_address, created_by, contacts, templates, recipient_rule)
       SELECT name || g, status, scheduled_at - make_interval(secs => g % 7), timezone, from_address, created_by, contacts, templates, recipient_rule
         FROM tasks, generate_series(1, 5000) g WHERE id = $id`,
      { bind: { id: first.id } },
    );
    await engine.apiDb.query('ANALYZE tasks');
    const all = await explainNodes(engine.apiDb, DUE_TASK_SQL, { now: new Date() });
    // No sort of every due campaign: the index gives them in the pick's order.
    expect(all.map((n) => n['Node Type']).filter((t) => /Sort/.test(t))).toEqual([]);
    const scans = all.filter((n) => n['Relation Name'] === 'tasks');
    expect(scans).toHaveLength(1);
    expect(scans[0]!['Node Type']).toMatch(/Index/);
    expect(scans[0]!['Actual Rows']).toBeLessThanOrEqual(2);
    // And it is the right one: the earliest scheduled, then the lowest id.
    const [picked] = await rows<{ id: string }>(engine.apiDb, DUE_TASK_SQL, { now: new Date() });
    const [expected] = await rows<{ id: string }>(
      engine.apiDb,
      `SELECT id FROM tasks WHERE status = 'scheduled' AND generated_at IS NULL ORDER BY scheduled_at, id LIMIT 1`,
    );
    expect(picked!.id).toBe(expected!.id);
  });
});
