import type { Sequelize } from 'sequelize';
import type { Engine } from '../src/engine.js';
import { campaignOutlooks, claimFreshMany, claimRetriesMany } from '../services/scheduler/sql/claim-many.js';
import { CampaignPool } from '../services/scheduler/campaign-pool.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createTestEngine, plainSequelize, rows } from './helpers/db.js';
import { recordSends, until, userWithContacts } from './helpers/scheduler.js';

/**
 * Bulk claims (sql/claim-many.ts, used by the campaign pool): one statement claims for many
 * campaigns, each exactly as many as asked, after its own cursor, never a row another claim holds;
 * and a pool that claims in bulk still serves users round robin, each message once.
 */
describe('bulk claims', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await createTestEngine();
  });
  afterAll(() => engine.close());

  const campaignOf = async (name: string, n: number) => {
    const u = await userWithContacts(engine, name, n);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name,
      from: 'bulk@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    return { id: c.id, contactIds: u.contactIds.map(Number).sort((a, b) => a - b) };
  };
  const lease = (owner: string) => {
    const now = new Date();
    return { now, owner, until: new Date(now.getTime() + 60_000) };
  };
  /** A campaign pool of its own (no scheduler around it) that carries the given campaigns. */
  const poolOf = (o: { db: Sequelize; owner: string; now: () => Date; carried: number[] }) =>
    new CampaignPool({
      db: o.db,
      owner: o.owner,
      now: o.now,
      leaseMs: 60_000,
      claimBatch: 2,
      budget: 1_000,
      onSendable: () => undefined,
      onError: (err) => {
        throw err;
      },
      onPlace: () => undefined,
      onGone: () => undefined,
      onRelease: () => undefined,
      carried: (c) => o.carried.includes(c.id),
    });
  const byTask = (rs: { task_id: string; contact_id: string }[]) => {
    const out = new Map<number, number[]>();
    for (const r of rs) out.set(Number(r.task_id), [...(out.get(Number(r.task_id)) ?? []), Number(r.contact_id)]);
    for (const list of out.values()) list.sort((a, b) => a - b);
    return out;
  };

  it('claims exactly each campaign’s limit after its cursor, skips rows another claim holds, and leases them', async () => {
    const a = await campaignOf('BulkA', 6);
    const b = await campaignOf('BulkB', 6);
    const c = await campaignOf('BulkC', 2);
    await engine.scheduler.processScheduledTasks(); // generates the queues

    // Another engine's transaction holds A's 3rd and 4th messages: the claim skips them, never waits.
    const other = plainSequelize(engine.databaseUrl);
    const t = await other.transaction();
    try {
      await other.query('SELECT 1 FROM subtasks WHERE task_id = $t AND contact_id = ANY($ids::bigint[]) FOR UPDATE', {
        bind: { t: a.id, ids: a.contactIds.slice(2, 4) },
        transaction: t,
      });
      const claimed = await claimFreshMany(engine.schedulerDb, {
        taskIds: [a.id, b.id, c.id],
        cursors: [a.contactIds[0]!, 0, 0],
        limits: [3, 4, 5],
        ...lease('engine-a'),
      });
      const got = byTask(claimed);
      // A: after its cursor (its 1st contact), its 2nd, then 5th and 6th (3rd and 4th held).
      expect(got.get(a.id)).toEqual([a.contactIds[1], a.contactIds[4], a.contactIds[5]]);
      expect(got.get(b.id)).toEqual(b.contactIds.slice(0, 4));
      // C has 2: it gets 2 of the 5 asked.
      expect(got.get(c.id)).toEqual(c.contactIds);
      expect(claimed.every((r) => r.email && r.template_id && r.attempts === 0 && r.contact_status === 'active')).toBe(true);
    } finally {
      await t.rollback();
      await other.close();
    }
    const leased = await rows<{ task_id: string; n: number }>(
      engine.apiDb,
      `SELECT task_id, count(*)::int AS n FROM subtasks WHERE status = 'sending' AND lease_owner = 'engine-a' GROUP BY task_id ORDER BY task_id`,
    );
    expect(leased.map((r) => [Number(r.task_id), r.n])).toEqual([
      [a.id, 3],
      [b.id, 4],
      [c.id, 2],
    ]);

    // A second engine claiming the same campaigns at once gets the rest, none twice.
    const [x, y] = await Promise.all([
      claimFreshMany(engine.schedulerDb, { taskIds: [a.id, b.id], cursors: [0, 0], limits: [10, 10], ...lease('engine-b') }),
      claimFreshMany(engine.schedulerDb, { taskIds: [b.id, a.id], cursors: [0, 0], limits: [10, 10], ...lease('engine-c') }),
    ]);
    const keys = [...x, ...y].map((r) => `${r.task_id}.${r.contact_id}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.sort()).toEqual(
      [
        `${a.id}.${a.contactIds[0]}`,
        `${a.id}.${a.contactIds[2]}`,
        `${a.id}.${a.contactIds[3]}`,
        `${b.id}.${b.contactIds[4]}`,
        `${b.id}.${b.contactIds[5]}`,
      ].sort(),
    );

    // Outlooks: one answer per campaign asked; nothing queued, all in flight.
    const outlooks = await campaignOutlooks(engine.schedulerDb, [a.id, b.id, c.id]);
    expect([...outlooks.entries()].sort((p, q) => p[0] - q[0])).toEqual([
      [a.id, { nextAt: null, inFlight: 6 }],
      [b.id, { nextAt: null, inFlight: 6 }],
      [c.id, { nextAt: null, inFlight: 2 }],
    ]);
  });

  it('a campaign whose first claim takes every message it has left is at its end: the next send claims nothing', async () => {
    const two = await campaignOf('EndTwo', 2);
    const five = await campaignOf('EndFive', 5);
    await engine.scheduler.processScheduledTasks();
    const pool = poolOf({ db: engine.schedulerDb, owner: 'pool-test', now: () => new Date(), carried: [two.id, five.id] });
    await pool.sync();
    const a = pool.campaigns.get(two.id)!;
    const b = pool.campaigns.get(five.id)!;
    expect([a.remaining, b.remaining]).toEqual([2, 5]);
    pool.refillDue();
    await pool.settled();
    // Both claimed 2 (the claim size), so neither came back short; only the 2-recipient one took all it had.
    expect([a.size, b.size]).toEqual([2, 2]);
    expect([a.atEnd, b.atEnd]).toEqual([true, false]);
    // One message each goes out: both are at the low-water mark (1). The one at its end asks for nothing.
    a.take();
    b.take();
    pool.refill(a);
    pool.refill(b);
    expect([a.refilling, b.refilling]).toEqual([false, true]);
    await pool.settled();
    expect([a.size, b.size]).toEqual([1, 3]);
    await pool.idle();
    // The leases go back, so the other tests' claims see these rows as they were.
    await rows(
      engine.schedulerDb,
      `UPDATE subtasks SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL WHERE task_id = ANY($ids::bigint[])`,
      {
        ids: [two.id, five.id],
      },
    );
  });

  it('campaigns run dry at their end wait for the tick, where one outlook serves them all; a due retry or a lapsed lease is still claimed', async () => {
    const cs = [await campaignOf('DryA', 2), await campaignOf('DryB', 2), await campaignOf('DryC', 2)];
    await engine.scheduler.processScheduledTasks();
    const ids = cs.map((c) => c.id);
    // The pool's own connection, whose statements the test reads (the names of the prepared ones).
    const db = plainSequelize(engine.databaseUrl);
    const ran: string[] = [];
    (db as unknown as { options: { logging: unknown } }).options.logging = (sql: string) =>
      ran.push(/^Executing \(prepared (\S+)\)/.exec(sql)?.[1] ?? 'other');
    let nowMs = Date.now();
    const pool = poolOf({ db, owner: 'dry-test', now: () => new Date(nowMs), carried: ids });
    try {
      await pool.sync();
      const st = ids.map((id) => pool.campaigns.get(id)!);
      pool.refillDue();
      await pool.settled();
      expect(st.map((c) => [c.size, c.atEnd])).toEqual([
        [2, true],
        [2, true],
        [2, true],
      ]);
      // All three run dry: each asks for a refill, and nothing runs until the tick.
      ran.length = 0;
      for (const c of st) {
        c.take();
        c.take();
        pool.refill(c);
      }
      expect(st.map((c) => c.refilling)).toEqual([true, true, true]);
      expect(ran).toEqual([]);
      pool.refillDue();
      await pool.settled();
      // One statement: the outlook of all three (no retries or fresh claim). Their messages are in flight.
      expect(ran).toEqual(['fs_campaign_outlooks']);
      expect(st.map((c) => [c.refilling, c.drained, c.wakeAt! - nowMs])).toEqual([
        [false, false, 1000],
        [false, false, 1000],
        [false, false, 1000],
      ]);

      // A sent; B's 1st deferred to a retry due now (this engine's outcome says so: retryAt); C's
      // lease lapsed on its 2nd message, which another engine's recovery put back, never attempted.
      const [a, b, c] = cs;
      await rows(engine.apiDb, `UPDATE subtasks SET status = 'sent', lease_owner = NULL WHERE task_id = $t`, { t: a!.id });
      await rows(engine.apiDb, `UPDATE subtasks SET status = 'sent', lease_owner = NULL WHERE task_id = $t AND contact_id = $c`, {
        t: b!.id,
        c: b!.contactIds[1],
      });
      await rows(
        engine.apiDb,
        `UPDATE subtasks SET status = 'queued', attempts = 1, not_before = now() - interval '1 second', lease_owner = NULL WHERE task_id = $t AND contact_id = $c`,
        { t: b!.id, c: b!.contactIds[0] },
      );
      st[1]!.retryAt = nowMs - 1000;
      await rows(engine.apiDb, `UPDATE subtasks SET status = 'sent', lease_owner = NULL WHERE task_id = $t AND contact_id = $c`, {
        t: c!.id,
        c: c!.contactIds[0],
      });
      await rows(engine.apiDb, `UPDATE subtasks SET status = 'queued', lease_owner = NULL WHERE task_id = $t AND contact_id = $c`, {
        t: c!.id,
        c: c!.contactIds[1],
      });
      ran.length = 0;
      nowMs += 1000;
      pool.refillDue(); // the wake-ups are due
      await pool.settled();
      // B claims its retry at once; A and C look at their outlooks: A is finished, C starts over.
      expect(ran.sort()).toEqual(['fs_campaign_outlooks', 'fs_claim_retries_many']);
      expect(st.map((x) => x.size)).toEqual([0, 1, 0]);
      expect(st[1]!.retryAt).toBeNull();
      expect([st[0]!.drained, st[0]!.wakeAt]).toEqual([true, null]);
      expect([st[2]!.atEnd, st[2]!.cursor, st[2]!.wakeAt]).toEqual([false, 0, nowMs]);
      ran.length = 0;
      pool.refillDue();
      await pool.settled();
      // C claims the message behind its old cursor (retries, then fresh messages from the start).
      expect(ran).toEqual(['fs_claim_retries_many', 'fs_claim_fresh_many']);
      expect(st[2]!.size).toBe(1);
      await pool.idle();
    } finally {
      await rows(
        engine.apiDb,
        `UPDATE subtasks SET status = 'queued', attempts = 0, lease_owner = NULL, lease_expires_at = NULL WHERE task_id = ANY($ids::bigint[])`,
        { ids },
      );
      await db.close();
    }
  });

  it('claims only due retries, at most the limit a campaign, oldest due first', async () => {
    const a = await campaignOf('RetryA', 4);
    const b = await campaignOf('RetryB', 3);
    await engine.scheduler.processScheduledTasks();
    const past = (s: number) => new Date(Date.now() - s * 1000);
    // A: three retries due (at -30 s, -20 s, -10 s), one not yet due; B: one retry due, two never attempted.
    const retry = (task: number, contact: number, notBefore: Date) =>
      engine.apiDb.query('UPDATE subtasks SET attempts = 1, not_before = $nb WHERE task_id = $t AND contact_id = $c', {
        bind: { t: task, c: contact, nb: notBefore },
      });
    await retry(a.id, a.contactIds[0]!, past(10));
    await retry(a.id, a.contactIds[1]!, past(30));
    await retry(a.id, a.contactIds[2]!, past(20));
    await retry(a.id, a.contactIds[3]!, new Date(Date.now() + 60_000));
    await retry(b.id, b.contactIds[0]!, past(5));
    const claimed = await claimRetriesMany(engine.schedulerDb, { taskIds: [a.id, b.id], limit: 2, ...lease('engine-r') });
    const got = byTask(claimed);
    expect(got.get(a.id)).toEqual([a.contactIds[1], a.contactIds[2]].sort((p, q) => p! - q!));
    expect(got.get(b.id)).toEqual([b.contactIds[0]]);
    const outlooks = await campaignOutlooks(engine.schedulerDb, [a.id, b.id]);
    // A: its 1st (due) is still queued; B: its two fresh ones.
    expect(outlooks.get(a.id)!.inFlight).toBe(2);
    expect(outlooks.get(a.id)!.nextAt!.getTime()).toBeLessThanOrEqual(Date.now());
    expect(outlooks.get(b.id)!.inFlight).toBe(1);
  });
});

describe('a pool that claims in bulk', () => {
  let engine: Engine;
  let smtp: SmtpCatcher;
  beforeAll(async () => {
    smtp = await startSmtpCatcher();
    engine = await createTestEngine({ schedulerTickMs: 50 });
  });
  afterAll(async () => {
    await engine.close();
    await smtp.stop();
  });

  it('serves 40 users x 3 campaigns round robin, users then their campaigns, every message once', async () => {
    const USERS = 40;
    const users: { userId: number; campaigns: number[] }[] = [];
    for (let i = 0; i < USERS; i++) {
      const u = await userWithContacts(engine, `Many${i}`, 2);
      const campaigns: number[] = [];
      for (let k = 0; k < 3; k++) {
        const c = await engine.campaigns.create({
          userId: u.userId,
          name: `m${i}c${k}`,
          from: 'many@example.test',
          templates: [u.templateId],
          recipientRule: { type: 'all' },
        });
        campaigns.push(c.id);
      }
      users.push({ userId: u.userId, campaigns });
    }
    await engine.services.create({
      name: 'serial',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 100000,
      maxConnections: 1,
    });
    // Every queue generated before the start, so the service's first round sees every campaign.
    while ((await engine.scheduler.processScheduledTasks(100)).length > 0);
    const sent = recordSends(engine);
    await engine.scheduler.start();
    const total = USERS * 3 * 2;
    await until(
      async () =>
        (await rows<{ n: number }>(engine.apiDb, `SELECT count(*)::int AS n FROM subtasks WHERE status = 'sent'`))[0]!.n === total,
      60_000,
      'all sent',
    );
    await engine.scheduler.stop();
    // Round robin: user i's turn r sends from its campaign r mod 3 (each has 2 messages: rounds 0-5).
    const expected: number[] = [];
    for (let round = 0; round < 6; round++) for (const u of users) expected.push(u.campaigns[round % 3]!);
    expect(sent.map((e) => e.taskId)).toEqual(expected);
    const keys = sent.map((e) => `${e.taskId}.${e.contactId}`);
    expect(new Set(keys).size).toBe(total);
    const done = await rows<{ n: number }>(
      engine.apiDb,
      `SELECT count(*)::int AS n FROM tasks WHERE status = 'completed' AND sent_count = 2`,
    );
    expect(done[0]!.n).toBe(USERS * 3);
  }, 120_000);
});
