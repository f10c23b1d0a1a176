/**
 * Stopping the scheduler when its last writes fail (the database refuses them): the service-lock
 * connection still closes, so the services' advisory locks are free for another engine at once,
 * as after a crash, and no connection outlives the stop.
 */
import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { LOCK_SPACE } from '../services/scheduler/service-locks.js';
import { createTestEngine, rows } from './helpers/db.js';
import { until, userWithContacts } from './helpers/scheduler.js';

describe('scheduler stop', () => {
  let engine: Engine;
  let catcher: SmtpCatcher;
  beforeEach(async () => {
    catcher = await startSmtpCatcher();
  });
  afterEach(async () => {
    await engine.close();
    await catcher.stop();
  });

  /** One service sending to the catcher at `sendingRate`, and a user's campaign of `n` for it. */
  async function sendingCampaign(name: string, sendingRate: number, n: number) {
    const svc = await engine.services.create({
      name: 'svc',
      transport: { host: '127.0.0.1', port: catcher.port },
      sendingRate,
      dailyQuota: 1000,
      maxConnections: 1,
    });
    const u = await userWithContacts(engine, name, n);
    await engine.campaigns.create({
      userId: u.userId,
      name,
      from: 's@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    return svc;
  }

  it('closes the service-lock connection even when returning the quota holds fails', async () => {
    engine = await createTestEngine({ schedulerTickMs: 50 });
    await sendingCampaign('Stop', 0.01, 50);
    const errors: unknown[] = [];
    engine.scheduler.on('error', (err) => errors.push(err));
    await engine.scheduler.start();
    const lockSessions = async () =>
      (
        await rows<{ n: number }>(
          engine.apiDb,
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'fairsend-locks' AND datname = current_database()`,
        )
      )[0]!.n;
    await until(async () => catcher.messages.length > 0 && (await lockSessions()) === 1, 20_000, 'a send and the lock connection');

    // The table the holds go back from is away: the stop's last write fails.
    await engine.apiDb.query('ALTER TABLE quota_holds RENAME TO quota_holds_away');
    try {
      await engine.scheduler.stop();
      // The failure is reported (a tick that ran meanwhile may report it too), nothing else.
      expect(errors.length).toBeGreaterThan(0);
      for (const e of errors) expect(String(e)).toMatch(/relation "quota_holds" does not exist/);
      await until(async () => (await lockSessions()) === 0, 5_000, 'the lock connection closed');
      // fairsend's service locks in this test's database (other test files hold theirs meanwhile).
      const held = await rows<{ n: number }>(
        engine.apiDb,
        `SELECT count(*)::int AS n FROM pg_locks
          WHERE locktype = 'advisory' AND classid = $space::int::oid
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        { space: LOCK_SPACE },
      );
      expect(held[0]!.n).toBe(0);
    } finally {
      await engine.apiDb.query('ALTER TABLE quota_holds_away RENAME TO quota_holds');
    }
  });

  // SEND_WORKERS=0: the transports live in this thread (with send workers, their threads end too).
  it.each(['0', '1'])(
    'closes a transport replaced by a changed row at the stop, not at its retirement timer (SEND_WORKERS=%s)',
    async (workers) => {
      engine = await createTestEngine({ schedulerTickMs: 50, env: { SEND_WORKERS: workers } });
      const next = await startSmtpCatcher();
      try {
        const svc = await sendingCampaign('Moved', 0.05, 200);
        await engine.scheduler.start();
        await until(() => catcher.messages.length > 0, 20_000, 'a send to the first server');
        await engine.services.update(svc.id, { transport: { host: '127.0.0.1', port: next.port } });
        await until(() => next.messages.length > 0, 20_000, 'a send to the new server');
        // The old pool stays open for the sends that were on it.
        expect(catcher.openConnections).toBeGreaterThan(0);
        await engine.scheduler.stop();
        await until(() => catcher.openConnections === 0 && next.openConnections === 0, 3_000, 'both servers without connections');
      } finally {
        await next.stop();
      }
    },
  );
});
