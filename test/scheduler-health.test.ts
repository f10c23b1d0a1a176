import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createTestEngine } from './helpers/db.js';
import { until, userWithContacts } from './helpers/scheduler.js';

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
  beforeEach(async () => {
    refuse = true;
    engine = await createTestEngine({ schedulerTickMs: 50, unhealthyAfter: 2, probeBackoffMs: 150, retryDelayMs: 60_000 });
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
    // Unhealthy periods, from the state changes seen every 5 ms.
    const periods: number[] = [];
    let since: number | null = null;
    const watch = setInterval(() => {
      const s = engine.scheduler.status().services.find((x) => x.id === svc.id);
      if (s?.state === 'unhealthy' && since === null) since = Date.now();
      if (s?.state === 'running' && since !== null) {
        periods.push(Date.now() - since);
        since = null;
      }
    }, 5);
    try {
      await engine.scheduler.start();
      await until(() => periods.length >= 3, 20_000, 'three unhealthy periods');
      // 150 ms, then 300, then 600 (each plus a tick or two); before the fix every period was ~150 ms.
      expect(periods[1]!).toBeGreaterThan(periods[0]! * 1.5);
      expect(periods[2]!).toBeGreaterThan(periods[0]! * 2.5);
      expect(smtp.accepted).toBe(0);

      // The server takes mail again: the next probe lets the service back, and it delivers.
      refuse = false;
      await until(() => smtp.accepted >= 3, 20_000, 'deliveries after recovery');
      expect(engine.scheduler.status().services.find((x) => x.id === svc.id)).toMatchObject({ state: 'running', consecutiveFailures: 0 });
    } finally {
      clearInterval(watch);
    }
  });
});
