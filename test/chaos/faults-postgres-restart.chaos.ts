/**
 * PostgreSQL restarted in the middle of sending. A dedicated embedded cluster (not the suite's
 * shared one) holds the engine's database; while a campaign is being delivered the cluster is
 * stopped, kept down for a seeded 3 to 6 s, and started again, twice. Checked:
 *
 *   - while the database is away, the HTTP API answers 503 DATABASE_UNAVAILABLE (health, reads,
 *     a write) instead of hanging;
 *   - the engine reconnects by itself (its pools, its service-lock connection) and resumes
 *     sending within seconds of the database coming back (bound: 30 s; measured and printed);
 *   - nothing is lost: every recipient ends `sent` and was received, the campaign counters agree
 *     with the rows, and nothing was sent twice (one engine, no crash: no duplicate is allowed).
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../../src/embedded-postgres.js';
import type { Engine } from '../../src/engine.js';
import { createHttpServer, type HttpServer } from '../../src/http/server.js';
import { createLogger } from '../../services/kernel/logger.js';
import { createToken } from '../../services/auth.js';
import { createTestEngine } from '../helpers/db.js';
import { LogSink } from '../helpers/http.js';
import { freePort } from '../helpers/test-cluster.js';
import { until, userWithContacts } from '../helpers/scheduler.js';
import { allCompleted, DeliveryLog, finalAccount } from './helpers/faults-common.js';
import { scenarioRng } from './helpers/faults-random.js';
import { recordFigures } from './report.js';

const RECIPIENTS = 2000;
const RESTARTS = 2;
const RESUME_BOUND_MS = 30_000;

describe('PostgreSQL restarted mid-send', () => {
  const log = new DeliveryLog();
  let dir: string | undefined;
  let cluster: EmbeddedPostgresHandle | undefined;
  let engine: Engine | undefined;
  let http: HttpServer | undefined;
  afterAll(async () => {
    await http?.close().catch(() => undefined);
    await engine?.close().catch(() => undefined);
    await log.stop();
    await cluster?.stop().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reconnects by itself, loses nothing, resumes within seconds, and the API answers 503 meanwhile', async () => {
    const rng = scenarioRng('postgres restart');
    dir = await mkdtemp(join(tmpdir(), 'fairsend-chaos-pg-'));
    await chmod(dir, 0o755); // PostgreSQL runs as the postgres user when we are root
    const port = await freePort();
    const start = () => startEmbeddedPostgres({ dataDir: join(dir!, 'data'), port });
    cluster = await start();
    const admin = new pg.Client({ connectionString: cluster.url('postgres') });
    await admin.connect();
    await admin.query('CREATE DATABASE chaos');
    await admin.end();

    // createEngine migrates the new database (migrateUp) before anything else.
    // The engine's own log: an outage must not flood it (one line per failed step and tick before).
    const logs = new LogSink();
    engine = await createTestEngine({
      databaseUrl: cluster.url('chaos'),
      logger: createLogger('warn', logs),
      schedulerTickMs: 100,
      heartbeatMs: 500,
      leaseTtlMs: 5000,
      apiPoolAcquireMs: 5000,
      schedulerPoolAcquireMs: 5000,
    });
    http = await createHttpServer(engine, { port: 0, logger: createLogger('silent'), processMetrics: false, healthTimeoutMs: 2000 });
    const base = await http.listen();
    const adminUser = await engine.users.create({ name: 'Admin', email: 'admin@example.test', quota: 10, role: 'admin' });
    const token = await createToken(engine, adminUser.id);
    const smtp = await log.server();
    const u = await userWithContacts(engine, 'Restart', RECIPIENTS);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'r',
      from: 'r@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await engine.services.create({
      name: 'r',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0.01, // 100 a second: the campaign lasts through both restarts
      dailyQuota: 100_000,
      maxConnections: 3,
    });
    const errors: string[] = [];
    engine.scheduler.on('error', (e) => errors.push(e instanceof Error ? e.message : String(e)));
    await engine.scheduler.start();

    const call = async (path: string, method = 'GET', body?: unknown) => {
      const t0 = Date.now();
      try {
        const res = await fetch(`${base}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
          ...(body ? { body: JSON.stringify(body) } : {}),
          signal: AbortSignal.timeout(30_000),
        });
        const text = await res.text();
        let code: string | undefined;
        try {
          // API errors carry error.code; /health says which part is unavailable.
          const body = JSON.parse(text) as { error?: { code?: string }; database?: string };
          code = body.error?.code ?? (body.database ? `database ${body.database}` : undefined);
        } catch {
          code = undefined;
        }
        return { path, status: res.status, code, ms: Date.now() - t0 };
      } catch (err) {
        return { path, status: 0, code: (err as Error).name, ms: Date.now() - t0 };
      }
    };

    const tally = (answers: { path: string; status: number; code?: string | undefined }[]) => {
      const t: Record<string, number> = {};
      for (const a of answers) {
        const k = `${a.path.replace(/\/\d+$/, '/:id')} ${a.status} ${a.code ?? ''}`.trim();
        t[k] = (t[k] ?? 0) + 1;
      }
      return t;
    };
    const tallyMsgs = (lines: Record<string, unknown>[]) => {
      const t: Record<string, number> = {};
      for (const l of lines) t[String(l.msg)] = (t[String(l.msg)] ?? 0) + 1;
      return t;
    };
    const outages: { downMs: number; resumeMs: number; answers: Awaited<ReturnType<typeof call>>[] }[] = [];
    for (let i = 0; i < RESTARTS; i++) {
      await until(() => log.count >= ((i + 1) * RECIPIENTS) / (RESTARTS + 2), 60_000, `sends before restart ${i + 1}`);
      const downMs = rng.int(3000, 6000);
      log.era = i * 2 + 1;
      await cluster.stop();
      const downAt = Date.now();
      // While it is away: every answer is a 503, none hangs.
      const answers = [];
      while (Date.now() - downAt < downMs - 1000) {
        if (answers.length) await new Promise((r) => setTimeout(r, 100));
        answers.push(
          ...(await Promise.all([
            call('/health'),
            call(`/api/campaigns/${c.id}`),
            call('/api/services'),
            call('/api/users', 'POST', { name: `During ${i}`, email: `during${i}-${answers.length}@example.test`, quota: 1 }),
          ])),
        );
      }
      const left = downMs - (Date.now() - downAt);
      if (left > 0) await new Promise((r) => setTimeout(r, left));
      cluster = await start();
      const upAt = Date.now();
      log.era = i * 2 + 2;
      await until(() => log.accepted.some((a) => a.at > upAt), RESUME_BOUND_MS, `sending again after restart ${i + 1}`);
      const resumeMs = Math.min(...log.accepted.filter((a) => a.at > upAt).map((a) => a.at)) - upAt;
      outages.push({ downMs: upAt - downAt, resumeMs, answers });
      console.log(
        `[chaos postgres] restart ${i + 1}: down ${upAt - downAt} ms, sending again ${resumeMs} ms after it came back; ` +
          `answers while down: ${JSON.stringify(tally(answers))}, slowest ${Math.max(...answers.map((a) => a.ms))} ms`,
      );
    }

    await until(() => allCompleted(engine!.apiDb, [c.id]), 120_000, 'completion after the restarts');
    const acct = await finalAccount(engine.apiDb, [c.id]);
    const received = log.recipients();
    const duplicates = log.duplicates();
    const lost = acct.open + (RECIPIENTS - received.size) + (RECIPIENTS - (acct.byStatus.sent ?? 0));
    const answers = outages.flatMap((o) => o.answers);
    const logLines = logs.lines();
    const errorLines = logLines.filter((l) => Number(l.level) >= 50);
    const backAgain = logLines.filter((l) => l.msg === 'scheduler: database reachable again');
    console.log(
      `[chaos postgres] seed ${rng.seed}; ${log.count} accepted, ${received.size} distinct, ${duplicates} duplicates; states ${JSON.stringify(acct.byStatus)}; ` +
        `${answers.length} API answers while down (slowest ${Math.max(...answers.map((a) => a.ms))} ms); ${errors.length} scheduler errors reported, ${errorLines.length} error lines logged ` +
        `(${JSON.stringify(tallyMsgs(errorLines))}), ${backAgain.length} 'reachable again'`,
    );

    expect(answers.length).toBeGreaterThan(0);
    for (const a of answers)
      expect({ path: a.path, status: a.status, code: a.code }).toEqual({ path: a.path, status: 503, code: expect.any(String) });
    for (const a of answers) expect(a.code).toBe(a.path === '/health' ? 'database error' : 'DATABASE_UNAVAILABLE');
    for (const o of outages) expect(o.resumeMs).toBeLessThan(RESUME_BOUND_MS);
    // The outage is logged, not flooded: a few lines each (going, every 5 s while down, the lock
    // connection lost), and the recovery once.
    expect(errorLines.length).toBeLessThanOrEqual(RESTARTS * 8);
    expect(backAgain.length).toBeGreaterThanOrEqual(RESTARTS);
    expect(acct.byStatus).toEqual({ sent: RECIPIENTS });
    expect(acct.counterMismatches).toEqual([]);
    expect(received.size).toBe(RECIPIENTS);
    expect(duplicates).toBe(0);
    expect(lost).toBe(0);
    // After the restarts the API answers normally again.
    expect((await call(`/api/campaigns/${c.id}`)).status).toBe(200);

    await recordFigures({
      scenario: `PostgreSQL stopped and restarted mid-send, ${RESTARTS} times`,
      faultsInjected: RESTARTS,
      faultsSurvived: RESTARTS,
      messagesSent: log.count,
      lost,
      duplicates,
      duplicateBound: 0,
      inputsTried: 0,
      notes:
        `seed ${rng.seed}; ${outages.map((o, i) => `restart ${i + 1}: down ${(o.downMs / 1000).toFixed(1)} s, resumed ${(o.resumeMs / 1000).toFixed(1)} s after`).join('; ')}; ` +
        `${answers.length} API calls while down: all 503, slowest ${Math.max(...answers.map((a) => a.ms))} ms`,
    });
  });
});
