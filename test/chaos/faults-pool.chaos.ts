/**
 * Pool exhaustion, the original incident (../shared/seeds/000): a task queue held every connection
 * of the pool it shared with the web side, and logins timed out. Here, while a campaign is being
 * delivered, every connection of the scheduler's pools is held (the scheduler pool and the pool of
 * its prepared statements: the claims, the outcome writes), twice:
 *
 *   1. by long queries (pg_sleep), the scheduler's own queries queueing behind them;
 *   2. by transactions left open and idle (connections taken and never given back, the incident's
 *      leak), the scheduler's own queries queueing behind them again.
 *
 * Meanwhile a burst of real HTTP requests (health, token check, reads, a write) must all answer,
 * while the scheduler pool is still saturated. Once the connections come back the scheduler
 * resumes and delivers every recipient exactly once.
 */
import { createLogger } from '../../services/kernel/logger.js';
import { createHttpServer } from '../../src/http/server.js';
import { createToken } from '../../services/auth.js';
import { createTestEngine } from '../helpers/db.js';
import { until, userWithContacts } from '../helpers/scheduler.js';
import { allCompleted, DeliveryLog, finalAccount } from './helpers/faults-common.js';
import { recordFigures } from './report.js';

const POOL_MAX = 3;
const RECIPIENTS = 400;
const HOLD_MS = 6000;

describe('scheduler pool exhaustion', () => {
  const log = new DeliveryLog();
  afterAll(() => log.stop());

  it('API requests answer while every scheduler connection is held; delivery resumes afterwards', async () => {
    const engine = await createTestEngine({ schedulerPoolMax: POOL_MAX, schedulerPoolMin: 0, schedulerTickMs: 50 });
    const http = await createHttpServer(engine, { port: 0, logger: createLogger('silent'), processMetrics: false });
    try {
      const base = await http.listen();
      const admin = await engine.users.create({ name: 'Admin', email: 'admin@example.test', quota: 1000, role: 'admin' });
      const token = await createToken(engine, admin.id);
      const smtp = await log.server();
      const u = await userWithContacts(engine, 'Pool', RECIPIENTS);
      const c = await engine.campaigns.create({
        userId: u.userId,
        name: 'p',
        from: 'p@example.test',
        templates: [u.templateId],
        recipientRule: { type: 'all' },
      });
      await engine.services.create({
        name: 'p',
        transport: { host: '127.0.0.1', port: smtp.port },
        sendingRate: 0.02, // 50 a second: the campaign lasts through both holds
        dailyQuota: 100_000,
        maxConnections: 2,
      });
      await engine.scheduler.start();
      await until(() => log.count >= 20, 30_000, 'the first sends');

      const answered: { what: string; status: number; schedulerBusy: boolean }[] = [];
      const request = async (what: string, method: string, path: string, body?: unknown) => {
        const res = await fetch(`${base}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
          ...(body ? { body: JSON.stringify(body) } : {}),
          signal: AbortSignal.timeout(30_000),
        });
        await res.arrayBuffer();
        answered.push({ what, status: res.status, schedulerBusy: saturated() });
      };
      const burst = (round: number) =>
        Promise.all([
          request('health', 'GET', '/health'),
          request('campaign', 'GET', `/api/campaigns/${c.id}`),
          request('campaigns', 'GET', '/api/campaigns'),
          request('services', 'GET', '/api/services'),
          request('scheduler status', 'GET', '/api/scheduler/status'),
          request('create user', 'POST', '/api/users', { name: `Login ${round}`, email: `login${round}@example.test`, quota: 1 }),
        ]);

      const schedulerPools = [engine.schedulerDb, engine.preparedDb];
      const saturated = () => engine.pools().scheduler.using === POOL_MAX && engine.pools().prepared.using === POOL_MAX;
      const episodes: { name: string; sentDuring: number; requests: number; waiting: number }[] = [];
      for (const episode of ['busy queries', 'leaked idle transactions'] as const) {
        let released: () => void = () => undefined;
        const release = new Promise<void>((r) => (released = r));
        let holds: Promise<unknown>[];
        if (episode === 'busy queries') {
          holds = schedulerPools.flatMap((db) => Array.from({ length: POOL_MAX }, () => db.query(`SELECT pg_sleep(${HOLD_MS / 1000})`)));
        } else {
          holds = schedulerPools.flatMap((db) =>
            Array.from({ length: POOL_MAX }, async () => {
              const t = await db.transaction();
              await db.query('SELECT 1', { transaction: t });
              await release; // idle in transaction until released
              await t.rollback();
            }),
          );
          setTimeout(released, HOLD_MS);
        }
        await until(saturated, 10_000, `${episode}: every scheduler connection held`);
        // The scheduler's own reads, claims and outcome writes queue behind the held connections.
        const waitingNow = () => engine.pools().scheduler.waiting + engine.pools().prepared.waiting;
        await until(() => waitingNow() > 0, 10_000, `${episode}: scheduler queries waiting`);
        const sentBefore = log.count;
        const waiting = waitingNow();
        const before = answered.length;
        for (let round = 0; round < 3; round++) await burst(episodes.length * 10 + round);
        const during = answered.slice(before);
        episodes.push({ name: episode, sentDuring: log.count - sentBefore, requests: during.length, waiting });
        // Every request answered, and while the scheduler pool was still saturated.
        expect(during.filter((a) => a.status >= 300)).toEqual([]);
        expect(during.filter((a) => !a.schedulerBusy)).toEqual([]);
        await Promise.all(holds);
      }

      await until(() => allCompleted(engine.apiDb, [c.id]), 60_000, 'completion after the pool came back');
      const acct = await finalAccount(engine.apiDb, [c.id]);
      const received = log.recipients();
      const duplicates = log.duplicates();
      const lost = acct.open + (RECIPIENTS - received.size);
      console.log(
        `[chaos pool] ${episodes.map((e) => `${e.name}: ${e.requests} requests answered, ${e.waiting} scheduler queries waiting, ${e.sentDuring} sent meanwhile`).join('; ')}; ` +
          `${log.count} accepted, ${duplicates} duplicates, states ${JSON.stringify(acct.byStatus)}`,
      );
      expect(acct.byStatus).toEqual({ sent: RECIPIENTS });
      expect(acct.counterMismatches).toEqual([]);
      expect(received.size).toBe(RECIPIENTS);
      expect(duplicates).toBe(0);
      expect(lost).toBe(0);

      await recordFigures({
        scenario: `scheduler pools held (${POOL_MAX} of ${POOL_MAX} connections each), twice, during delivery`,
        faultsInjected: episodes.length * schedulerPools.length * POOL_MAX,
        faultsSurvived: episodes.length * schedulerPools.length * POOL_MAX,
        messagesSent: log.count,
        lost,
        duplicates,
        duplicateBound: 0,
        inputsTried: 0,
        notes: episodes.map((e) => `${e.name}: ${e.requests}/${e.requests} API requests answered while held`).join('; '),
      });
    } finally {
      await http.close();
      await engine.close();
    }
  });
});
