/**
 * /metrics as Prometheus sees it: `promtool check metrics` (Debian's prometheus package; .ci/run
 * installs it) accepts the whole exposition, Node's process metrics included, with no warning;
 * the send and quota series name their service; the pool gauge keeps its limit apart; a `metrics`
 * token may scrape and do nothing else; METRICS_AUTH=false opens /metrics to anyone.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/index.js';
import { authenticate } from '../services/auth.js';
import { createLogger } from '../services/kernel/logger.js';
import { createHttpServer } from '../src/http/server.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createTestDatabase, createTestEngine, rows } from './helpers/db.js';
import { httpFixture, type HttpFixture } from './helpers/http.js';
import { until, userWithContacts } from './helpers/scheduler.js';

const PROMTOOL = '/usr/bin/promtool';

/** Runs `promtool check metrics` on `text`: its exit code and everything it printed. */
function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d: Buffer) => (output += d.toString()));
    p.stderr.on('data', (d: Buffer) => (output += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, output }));
    p.stdin.end(text);
  });
}

/** Prometheus text -> the label sets of one metric's series, with their values. */
function series(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    out.push({
      labels: Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!])),
      value: Number(m[3]),
    });
  }
  return out;
}

describe('/metrics', () => {
  let f: HttpFixture;
  let smtp: SmtpCatcher;
  let serviceId: number;

  beforeAll(async () => {
    // One address refused for good: the failed outcome has a series too.
    smtp = await startSmtpCatcher({ rcptReply: (to) => (to === 'm2@example.test' ? { code: 550, message: 'no such user' } : undefined) });
    f = await httpFixture({ engine: { schedulerTickMs: 50 }, http: { processMetrics: true, queueCountCacheMs: 0 } });
    const m = await userWithContacts(f.engine, 'M', 4);
    await f.engine.campaigns.create({
      userId: m.userId,
      name: 'M',
      from: 'm@example.test',
      templates: [m.templateId],
      contacts: m.contactIds,
    });
    serviceId = (
      await f.engine.services.create({
        name: 'relay-eu',
        transport: { host: '127.0.0.1', port: smtp.port },
        sendingRate: 0,
        dailyQuota: 50,
      })
    ).id;
    await f.engine.scheduler.start();
    await until(
      async () => (await rows(f.engine.apiDb, "SELECT 1 FROM subtasks WHERE status IN ('queued', 'sending')")).length === 0,
      20_000,
      'all four sent or failed',
    );
    await f.engine.scheduler.stop();
  });
  afterAll(async () => {
    await f.close();
    await smtp.stop();
  });

  it('passes promtool check metrics with no warning, process metrics included', async () => {
    expect(existsSync(PROMTOOL)).toBe(true); // apt-get install -y prometheus (.ci/run does)
    const text = (await f.call('GET', '/metrics', f.adminToken)).body;
    expect(text).toContain('fairsend_nodejs_active_handles{');
    expect(text).not.toMatch(/^fairsend_nodejs_active_\w+_total/m);
    expect(text).toContain('# TYPE fairsend_service_fairness_lag_turns gauge');
    expect(await promtool(text)).toEqual({ code: 0, output: '' });
    // The check can fail: a gauge named like a counter is reported.
    const bad = '# HELP x_total A gauge.\n# TYPE x_total gauge\nx_total 1\n';
    expect((await promtool(bad)).code).not.toBe(0);
  });

  it('names the service on the send and quota series, and keeps the pool limit out of the state label', async () => {
    const text = (await f.call('GET', '/metrics', f.adminToken)).body;
    const id = String(serviceId);
    expect(series(text, 'fairsend_sends_total').sort((a, b) => a.labels.outcome!.localeCompare(b.labels.outcome!))).toEqual([
      { labels: { service_id: id, service: 'relay-eu', outcome: 'failed' }, value: 1 },
      { labels: { service_id: id, service: 'relay-eu', outcome: 'sent' }, value: 3 },
    ]);
    for (const name of ['fairsend_service_remaining_quota', 'fairsend_service_used_quota', 'fairsend_service_daily_quota']) {
      expect(series(text, name)).toEqual([expect.objectContaining({ labels: { service_id: id, service: 'relay-eu' } })]);
    }
    expect(series(text, 'fairsend_service_daily_quota')[0]!.value).toBe(50);

    const pool = series(text, 'fairsend_db_pool_connections');
    expect(new Set(pool.map((s) => s.labels.state))).toEqual(new Set(['using', 'available']));
    const pools = f.engine.pools();
    expect(series(text, 'fairsend_db_pool_max_connections')).toEqual([
      { labels: { pool: 'api' }, value: pools.api.max },
      { labels: { pool: 'scheduler' }, value: pools.scheduler.max },
      { labels: { pool: 'prepared' }, value: pools.prepared.max },
    ]);
    expect(series(text, 'fairsend_db_pool_waiting_requests').map((s) => s.labels.pool)).toEqual(['api', 'scheduler', 'prepared']);
  });

  it('lets a metrics token scrape and nothing else; a user token may not scrape', async () => {
    const created = await f.call('POST', '/api/users', f.adminToken, {
      name: 'Prometheus',
      email: 'prom@example.test',
      quota: 0,
      role: 'metrics',
    });
    expect(created.statusCode).toBe(201);
    const { user, token } = created.json<{ user: { role: string }; token: string }>();
    expect(user.role).toBe('metrics');
    expect((await f.call('GET', '/metrics', token)).statusCode).toBe(200);
    for (const [method, url] of [
      ['GET', '/api/me'],
      ['GET', '/api/scheduler/status'],
      ['GET', '/api/campaigns'],
      ['GET', '/api/users'],
      ['POST', '/api/scheduler/stop'],
    ] as const) {
      const res = await f.call(method, url, token);
      expect([url, res.statusCode, res.json<{ error: { code: string } }>().error.code]).toEqual([url, 403, 'FORBIDDEN']);
    }
    const plain = await f.user('Plain');
    expect((await f.call('GET', '/metrics', plain.token)).statusCode).toBe(403);
    expect((await f.call('GET', '/metrics')).statusCode).toBe(401);
    expect(
      (await f.call('POST', '/api/users', f.adminToken, { name: 'X', email: 'x@example.test', quota: 0, role: 'root' })).statusCode,
    ).toBe(400);
  });

  it('creates a metrics user from the CLI', async () => {
    let out = '';
    const stdout = new Writable({
      write(chunk: Buffer, _enc, cb) {
        out += chunk.toString();
        cb();
      },
    });
    const code = await runCli(
      ['node', 'fairsend', 'users', 'create', '--name', 'Scraper', '--email', 'scraper@example.test', '--role', 'metrics'],
      {
        stdout,
        stderr: new Writable({ write: (_c, _e, cb) => cb() }),
        env: { DATABASE_URL: f.engine.config.databaseUrl!, LOG_LEVEL: 'silent' },
      },
    );
    expect(code).toBe(0);
    const token = /api token \(shown once, store it now\): (fst_\S+)/.exec(out)![1]!;
    expect(await authenticate(f.engine, token)).toMatchObject({ email: 'scraper@example.test', role: 'metrics' });
    expect((await f.call('GET', '/metrics', token)).statusCode).toBe(200);
  });

  it('serves /metrics without a token when METRICS_AUTH=false, and needs one by default', async () => {
    const url = await createTestDatabase();
    for (const [env, open] of [
      [{ METRICS_AUTH: 'false' }, true],
      [{}, false],
    ] as const) {
      const engine = await createTestEngine({ databaseUrl: url, env });
      const server = await createHttpServer(engine, { logger: createLogger('silent'), processMetrics: false });
      try {
        const res = await server.app.inject({ method: 'GET', url: '/metrics' });
        expect([env, res.statusCode]).toEqual([env, open ? 200 : 401]);
        if (open) expect(res.body).toContain('fairsend_queue_depth');
      } finally {
        await server.close();
        await engine.close();
      }
    }
  });
});
