import type { Engine } from '../src/engine.js';
import { claimFresh } from '../services/scheduler/sql/claim.js';
import { flushOutcomes, type Outcome } from '../services/scheduler/sql/outcomes.js';
import { recoverExpiredLeases } from '../services/scheduler/sql/leases.js';
import { startSmtpCatcher } from '../src/smtp-catcher.js';
import { createTestEngine, plainSequelize, rows } from './helpers/db.js';
import { until, untilLockWaiter, userWithContacts } from './helpers/scheduler.js';

/**
 * The outcome write (one statement per batch) against real rows: it applies outcomes only to rows
 * this engine still leases, counts them on the campaign, and completes the campaign at its total.
 */
describe('writing outcomes', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await createTestEngine();
  });
  afterAll(() => engine.close());

  it('applies outcomes only to rows still leased to this engine, and completes the campaign at its total', async () => {
    const u = await userWithContacts(engine, 'Out', 6);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'o',
      from: 'o@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await engine.scheduler.processScheduledTasks(); // generates the queue
    const now = new Date();
    const claimed = await claimFresh(engine.schedulerDb, {
      taskId: c.id,
      cursor: 0,
      limit: 6,
      now,
      owner: 'engine-a',
      until: new Date(now.getTime() + 60_000),
    });
    expect(claimed).toHaveLength(6);
    const ids = claimed.map((r) => Number(r.contact_id));
    // Another engine recovered (and re-leased) two of them meanwhile.
    await engine.apiDb.query(`UPDATE subtasks SET lease_owner = 'engine-b' WHERE task_id = $t AND contact_id = ANY($ids::bigint[])`, {
      bind: { t: c.id, ids: ids.slice(0, 2) },
    });
    const sent = (contactId: number): Outcome => ({
      taskId: c.id,
      contactId,
      status: 'sent',
      serviceId: null,
      at: now,
      messageId: `<${contactId}@example.test>`,
      error: null,
      notBefore: null,
      attempt: 1,
    });
    const first = await flushOutcomes(engine.schedulerDb, 'engine-a', ids.map(sent));
    expect(first).toEqual({ applied: 4, completed: [] });
    const state = await rows<{ contact_id: string; status: string; lease_owner: string | null; message_id: string | null }>(
      engine.apiDb,
      'SELECT contact_id, status, lease_owner, message_id FROM subtasks WHERE task_id = $t ORDER BY contact_id',
      { t: c.id },
    );
    expect(state.map((r) => [Number(r.contact_id), r.status, r.lease_owner])).toEqual(
      ids.map((id, i) => (i < 2 ? [id, 'sending', 'engine-b'] : [id, 'sent', null])),
    );
    expect(state[0]!.message_id).toBeNull();
    // engine-b finishes its two: the counters reach the total and the campaign completes.
    const second = await flushOutcomes(engine.schedulerDb, 'engine-b', ids.slice(0, 2).map(sent));
    expect(second).toEqual({ applied: 2, completed: [c.id] });
    const [task] = await rows<{ status: string; sent_count: number }>(engine.apiDb, 'SELECT status, sent_count FROM tasks WHERE id = $t', {
      t: c.id,
    });
    expect(task).toEqual({ status: 'completed', sent_count: 6 });
    // A late duplicate of an outcome changes nothing.
    expect(await flushOutcomes(engine.schedulerDb, 'engine-a', [sent(ids[3]!)])).toEqual({ applied: 0, completed: [] });
  });

  it('lease recovery completes a campaign through the same counters rule: completed_at set with completed', async () => {
    const u = await userWithContacts(engine, 'Rec', 3);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'r',
      from: 'r@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await engine.scheduler.processScheduledTasks();
    const now = new Date();
    // Leased to an engine that never heartbeats (it died), every message dispatched (at-most-once marks).
    const claimed = await claimFresh(engine.schedulerDb, { taskId: c.id, cursor: 0, limit: 3, now, owner: 'dead-engine', until: now });
    expect(claimed).toHaveLength(3);
    await engine.apiDb.query(`UPDATE subtasks SET message_id = '<m' || contact_id || '@x>' WHERE task_id = $t`, { bind: { t: c.id } });
    const r = await recoverExpiredLeases(engine.schedulerDb, { now, ttlMs: 1000, mode: 'at-most-once' });
    expect(r.unknown).toBeGreaterThanOrEqual(3);
    const [task] = await rows<{ status: string; unknown_count: number; done: boolean }>(
      engine.apiDb,
      'SELECT status, unknown_count, completed_at IS NOT NULL AS done FROM tasks WHERE id = $t',
      { t: c.id },
    );
    expect(task).toEqual({ status: 'completed', unknown_count: 3, done: true });
  });
});

describe('flush', () => {
  it('writes the outcomes that arrive while a write is under way, before it resolves', async () => {
    const engine = await createTestEngine({ schedulerTickMs: 50, concurrencyInitial: 3 });
    const smtp = await startSmtpCatcher({ keep: false });
    const lock = plainSequelize(engine.databaseUrl);
    try {
      const u = await userWithContacts(engine, 'Flush', 200);
      const c = await engine.campaigns.create({
        userId: u.userId,
        name: 'f',
        from: 'f@example.test',
        templates: [u.templateId],
        recipientRule: { type: 'all' },
      });
      await engine.services.create({
        name: 's',
        transport: { host: '127.0.0.1', port: smtp.port },
        sendingRate: 0.02,
        dailyQuota: 1000,
        maxConnections: 3,
      });
      await engine.scheduler.start();
      await until(() => smtp.accepted >= 3, 10_000, 'the first sends');
      // Hold the campaign row: the next write of outcomes (it locks the campaigns' rows first) waits.
      const t = await lock.transaction();
      await lock.query('SELECT 1 FROM tasks WHERE id = $id FOR UPDATE', { bind: { id: c.id }, transaction: t });
      await untilLockWaiter(lock, 'a write waiting on the lock');
      // The other slots send meanwhile (each then waits for its outcome's commit, so at most the
      // service's commit window): their outcomes arrive after the blocked write took its batch.
      await until(() => engine.scheduler.status().pendingOutcomes > 0, 10_000, 'outcomes waiting behind the write');
      const flushed = engine.scheduler.flush();
      await t.commit();
      await flushed;
      expect(engine.scheduler.status().pendingOutcomes).toBe(0);
    } finally {
      await lock.close();
      await engine.close();
      await smtp.stop();
    }
  });
});
