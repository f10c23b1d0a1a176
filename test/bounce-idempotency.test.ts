/**
 * A bounce or complaint report delivered twice is applied once, by the key its sender gave it
 * (services/bounces.ts, bounce_event_keys): the API's `eventId`, a provider's event id, a report's
 * Message-ID. Without a key, each delivery is applied. Against real PostgreSQL, read back with SQL.
 */
import type { Engine } from '../src/engine.js';
import { createTestEngine, rows } from './helpers/db.js';

describe('bounce reports applied once per key', () => {
  let engine: Engine;
  let taskId: number;

  beforeAll(async () => {
    engine = await createTestEngine({ softBounceLimit: 2 });
    const userId = (await engine.users.create({ name: 'N', email: 'n@news.example', quota: 100 })).id;
    const made = await engine.contacts.bulkCreate(userId, [{ email: 'full@example.org' }, { email: 'angry@example.org' }]);
    const tpl = await engine.templates.create(userId, { name: 't', subject: 's', text: 'x' });
    taskId = (await engine.campaigns.create({ userId, name: 'c', from: 'n@news.example', templates: [tpl.id], contacts: made.ids })).id;
    await engine.scheduler.processScheduledTasks();
  });
  afterAll(async () => {
    await engine.close();
  });

  const count = async (sql: string) => (await rows<{ n: number }>(engine.apiDb, sql))[0]!.n;
  const softRows = () => count(`SELECT count(*)::int AS n FROM bounce_events WHERE email = 'full@example.org'`);

  it('skips an event whose eventId was applied before, and one given twice in a report', async () => {
    const soft = {
      type: 'soft_bounce' as const,
      email: 'full@example.org',
      campaignId: taskId,
      reason: '452 mailbox full',
      eventId: 'e-1',
    };
    expect(await engine.bounces.record([soft, soft])).toMatchObject({ events: 2, duplicates: 1, softBounces: 1, suppressed: 0 });
    // Sent again (the caller's retry): nothing counts twice, so the limit of 2 is not reached.
    expect(await engine.bounces.record([soft])).toMatchObject({ events: 1, duplicates: 1, softBounces: 0, suppressed: 0 });
    expect(await softRows()).toBe(1);
    expect(await count(`SELECT count::int AS n FROM error_logs WHERE error_type = 'soft_bounce'`)).toBe(1);
    // A new event for the same address is new: the second soft bounce reaches the limit.
    expect(await engine.bounces.record([{ ...soft, eventId: 'e-2' }])).toMatchObject({ duplicates: 0, softBounces: 1, suppressed: 1 });
    expect(await softRows()).toBe(2);
  });

  it('applies a complaint once when two deliveries of it race', async () => {
    const complaint = { type: 'complaint' as const, email: 'angry@example.org', campaignId: taskId, eventId: 'c-1' };
    const [a, b] = await Promise.all([engine.bounces.record([complaint]), engine.bounces.record([complaint])]);
    expect([a.duplicates, b.duplicates].sort()).toEqual([0, 1]);
    expect(await count(`SELECT complaint_count AS n FROM tasks WHERE id = ${taskId}`)).toBe(1);
    expect(await count(`SELECT count(*)::int AS n FROM bounce_events WHERE type = 'complaint'`)).toBe(1);
  });

  it('keys an id per source, type and address; events without an id are applied each time', async () => {
    const other = { type: 'soft_bounce' as const, email: 'full@example.org', reason: 'greylisted', eventId: 'e-1' };
    // Same id from another source (a service's webhook secret): another sender's event.
    expect(await engine.bounces.record([other], 'webhook:service-9')).toMatchObject({ duplicates: 0 });
    // Same id and source, another type: not the same event.
    expect(await engine.bounces.record([{ ...other, type: 'complaint' }], 'webhook:service-9')).toMatchObject({ duplicates: 0 });
    const before = await softRows();
    const { eventId: _drop, ...unkeyed } = other;
    await engine.bounces.record([unkeyed]);
    await engine.bounces.record([unkeyed]);
    expect(await softRows()).toBe(before + 2);
  });

  it('refuses an empty or overlong eventId, naming the field, and writes nothing', async () => {
    const before = await count('SELECT count(*)::int AS n FROM bounce_events');
    const bad = { type: 'hard_bounce' as const, email: 'x@example.org', eventId: '' };
    await expect(engine.bounces.record([bad])).rejects.toMatchObject({
      code: 'VALIDATION',
      issues: [{ path: 'events[0].eventId', message: 'must not be empty' }],
    });
    await expect(engine.bounces.record([{ ...bad, eventId: 'x'.repeat(201) }])).rejects.toMatchObject({
      issues: [{ path: 'events[0].eventId', message: 'must be at most 200 characters' }],
    });
    expect(await count('SELECT count(*)::int AS n FROM bounce_events')).toBe(before);
    expect(await count('SELECT count(*)::int AS n FROM bounce_event_keys')).toBe(5);
  });
});
