import { DateTime } from 'luxon';
import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createLogger } from '../services/kernel/logger.js';
import { createTestEngine, plainSequelize, rows } from './helpers/db.js';
import { LogSink } from './helpers/http.js';
import { until, untilLockWaiter, userWithContacts } from './helpers/scheduler.js';

/**
 * An unhealthy service is probed on a doubling backoff. A server that passes the probe (it greets
 * and answers EHLO) but refuses every message must not be let back in at the base interval again
 * and again: each time it fails again before one message gets through, the next probe waits twice
 * as long. A real send resets it.
 */
describe('service health and probing', () => {
  let engine: Engine;
  let smtp: SmtpCatcher;
  let refuse = true;
  const logs = new LogSink();
  beforeEach(async () => {
    refuse = true;
    engine = await createTestEngine({
      logger: createLogger('info', logs),
      schedulerTickMs: 50,
      unhealthyAfter: 2,
      probeBackoffMs: 150,
      retryDelayMs: 60_000,
    });
    smtp = await startSmtpCatcher({ rcptReply: () => (refuse ? { code: 421, message: 'Too busy, try later' } : undefined) });
  });
  afterEach(async () => {
    await engine.close();
    await smtp.stop();
  });

  it('doubles the wait before each probe while the service keeps failing after passing it, and recovers on a real send', async () => {
    const u = await userWithContacts(engine, 'Health', 40);
    await engine.campaigns.create({
      userId: u.userId,
      name: 'h',
      from: 'h@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    const svc = await engine.services.create({
      name: 'flaky',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 1000,
      maxConnections: 1,
    });
    // Unhealthy periods, from the state changes the engine logs (timed when they happen, so a
    // loaded machine can only lengthen them).
    const periods = () => {
      const changes = logs
        .lines()
        .filter((l) => l.msg === 'service state changed' && l.serviceId === svc.id)
        .map((l) => ({ state: l.state as string, time: Number(l.time) }));
      const out: number[] = [];
      let since: number | null = null;
      for (const ch of changes) {
        if (ch.state === 'unhealthy' && since === null) since = ch.time;
        if (ch.state === 'running' && since !== null) {
          out.push(ch.time - since);
          since = null;
        }
      }
      return out;
    };
    await engine.scheduler.start();
    await until(() => periods().length >= 3, 20_000, 'three unhealthy periods');
    // The next probe waits 150 ms, then 300, then 600: each time the service passed the probe and
    // failed again before a message got through. (Before, every period was the base 150 ms.)
    const [p1, p2, p3] = periods();
    expect(p1!).toBeGreaterThanOrEqual(150);
    expect(p2!).toBeGreaterThanOrEqual(300);
    expect(p3!).toBeGreaterThanOrEqual(600);
    expect(smtp.accepted).toBe(0);

    // The server takes mail again: the next probe lets the service back, and it delivers.
    refuse = false;
    await until(() => smtp.accepted >= 3, 20_000, 'deliveries after recovery');
    expect(engine.scheduler.status().services.find((x) => x.id === svc.id)).toMatchObject({ state: 'running', consecutiveFailures: 0 });
  });
});

describe('retries and services', () => {
  let engine: Engine;
  const catchers: SmtpCatcher[] = [];
  afterEach(async () => {
    await engine.close();
    await Promise.all(catchers.splice(0).map((c) => c.stop()));
  });

  it('sends a retry through another service when one carries the campaign', async () => {
    engine = await createTestEngine({ schedulerTickMs: 50, retryDelayMs: 1500, maxRetries: 3 });
    // "a" refuses one recipient for now (451); "b" accepts everything.
    const a = await startSmtpCatcher({
      rcptReply: (to) => (to === 'retry1@example.test' ? { code: 451, message: 'Try again later' } : undefined),
    });
    const b = await startSmtpCatcher();
    catchers.push(a, b);
    const attemptsOnA: string[] = [];
    const u = await userWithContacts(engine, 'Retry', 1);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'r',
      from: 'r@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    const svc = (name: string, port: number) =>
      engine.services.create({ name, transport: { host: '127.0.0.1', port }, sendingRate: 0, dailyQuota: 100, maxConnections: 1 });
    const sa = await svc('a', a.port);
    engine.scheduler.on('retry', (e) => attemptsOnA.push(String((e as { serviceId: number }).serviceId)));
    await engine.scheduler.start();
    await until(() => attemptsOnA.length === 1, 10_000, 'the first attempt, refused by a');
    // A second service joins before the retry is due (1.5 s): the retry must go there.
    await svc('b', b.port);
    await until(async () => (await engine.campaigns.progress(c.id)).status === 'completed', 15_000, 'completion');
    expect(attemptsOnA).toEqual([String(sa.id)]);
    expect(b.accepted).toBe(1);
    expect(a.accepted).toBe(0);
    const [row] = await rows<{ status: string; attempts: number }>(
      engine.apiDb,
      'SELECT status, attempts FROM subtasks WHERE task_id = $t',
      { t: c.id },
    );
    expect(row).toEqual({ status: 'sent', attempts: 2 });
  });
});

describe('quota day turning during a reservation', () => {
  it('never spends units reserved on the day that ended on the new day', async () => {
    let now = DateTime.fromISO('2030-01-01T23:59:58Z');
    const engine = await createTestEngine({ clock: () => now, schedulerTickMs: 50 });
    const smtp = await startSmtpCatcher({ keep: false });
    const lock = plainSequelize(engine.databaseUrl);
    try {
      const u = await userWithContacts(engine, 'Midnight', 100);
      await engine.campaigns.create({
        userId: u.userId,
        name: 'm',
        from: 'm@example.test',
        templates: [u.templateId],
        recipientRule: { type: 'all' },
      });
      // 20 a second: quota is reserved 20 units at a time. A daily quota of 30.
      const svc = await engine.services.create({
        name: 'daily30',
        transport: { host: '127.0.0.1', port: smtp.port },
        sendingRate: 0.05,
        dailyQuota: 30,
        quotaTimezone: 'UTC',
        maxConnections: 2,
      });
      // Hold the service row: the first reservation (for January 1st) waits on the lock.
      const t = await lock.transaction();
      await lock.query('SELECT 1 FROM email_services WHERE id = $id FOR UPDATE', { bind: { id: svc.id }, transaction: t });
      await engine.scheduler.start();
      await untilLockWaiter(lock, 'a reservation waiting on the lock');
      // Midnight passes while it waits; then it completes, for the day that has ended.
      now = DateTime.fromISO('2030-01-02T00:00:01Z');
      await t.commit();
      await until(() => smtp.accepted >= 30, 20_000, 'the new day’s 30 sends');
      await new Promise((r) => setTimeout(r, 1500)); // 30 more would take 1.5 s at 20/s
      // January 2nd's 30 and nothing more: the 20 units reserved for January 1st were not spent on it.
      expect(smtp.accepted).toBe(30);
      const [row] = await rows<{ used_quota: number; quota_day: string }>(
        engine.apiDb,
        "SELECT used_quota, to_char(quota_day, 'YYYY-MM-DD') AS quota_day FROM email_services WHERE id = $id",
        { id: svc.id },
      );
      expect(row).toEqual({ used_quota: 30, quota_day: '2030-01-02' });
    } finally {
      await lock.close();
      await engine.close();
      await smtp.stop();
    }
  });
});
