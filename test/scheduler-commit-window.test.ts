import { UNCOMMITTED_PER_CONNECTION } from '../services/scheduler/service-runner.js';
import { startSmtpCatcher } from '../src/smtp-catcher.js';
import { createTestEngine, plainSequelize, rows } from './helpers/db.js';
import { until, untilLockWaiter, userWithContacts } from './helpers/scheduler.js';

/**
 * The crash bound (service-runner.ts, docs/delivery.md): a service never has more than its commit
 * window (UNCOMMITTED_PER_CONNECTION x maxConnections) of messages sent, or being sent, whose
 * outcome is not committed. Checked at the SMTP server while the outcome write is held on a row
 * lock: the server gets the window's worth beyond the committed outcomes, and not one more.
 */
describe('the commit window', () => {
  it('stops sending at the window while the outcome write is blocked (counted at the server), and resumes when it commits', async () => {
    const engine = await createTestEngine({ schedulerTickMs: 50, concurrencyInitial: 2 });
    const smtp = await startSmtpCatcher({ keep: false });
    const lock = plainSequelize(engine.databaseUrl);
    const RECIPIENTS = 150;
    const CONNECTIONS = 2;
    const window = UNCOMMITTED_PER_CONNECTION * CONNECTIONS;
    try {
      const u = await userWithContacts(engine, 'Window', RECIPIENTS);
      const c = await engine.campaigns.create({
        userId: u.userId,
        name: 'w',
        from: 'w@example.test',
        templates: [u.templateId],
        recipientRule: { type: 'all' },
      });
      await engine.services.create({
        name: 'w',
        transport: { host: '127.0.0.1', port: smtp.port },
        sendingRate: 0, // as fast as the server takes them: only the window can stop the sends
        dailyQuota: 1000,
        maxConnections: CONNECTIONS,
      });
      await engine.scheduler.start();
      await until(() => smtp.accepted >= 5, 10_000, 'the first sends');
      expect(smtp.accepted).toBeLessThan(RECIPIENTS - 2 * window); // room left to overshoot

      // Hold the campaign row: the next outcome write (it locks the campaigns' rows first) waits,
      // and no outcome commits until the lock goes.
      const t = await lock.transaction();
      await lock.query('SELECT 1 FROM tasks WHERE id = $id FOR UPDATE', { bind: { id: c.id }, transaction: t });
      await untilLockWaiter(lock, 'an outcome write waiting on the lock');
      const [task] = await rows<{ sent_count: number }>(engine.apiDb, 'SELECT sent_count FROM tasks WHERE id = $t', { t: c.id });
      const committed = task!.sent_count;

      await until(() => smtp.accepted - committed >= window, 10_000, 'the server reaching the window');
      const service = () => engine.scheduler.status().services[0]!;
      await until(
        () => service().uncommitted === window && service().inFlight === 0,
        10_000,
        'every slot of the window waiting for its commit',
      );
      // An opportunity to overshoot: the service's timer pumps its slots every 50 ms.
      await new Promise((r) => setTimeout(r, 400));
      expect(service().commitWindow).toBe(window);
      expect(smtp.accepted - committed).toBe(window);
      expect(service().uncommitted).toBe(window);

      await t.commit();
      await until(async () => (await engine.campaigns.progress(c.id)).status === 'completed', 30_000, 'completion after the write');
      expect(smtp.accepted).toBe(RECIPIENTS); // every one once: the held slots went on, none resent
    } finally {
      await lock.close();
      await engine.close();
      await smtp.stop();
    }
  }, 60_000);
});
