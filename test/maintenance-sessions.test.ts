/**
 * The session jobs against real PostgreSQL sessions: the pool monitor's thresholds and leak
 * suspicion, the idle-in-transaction cleanup (fairsend's own sessions only), the slow-query check.
 * These look at real durations on the server (pg_stat_activity); the waits below poll the server
 * until a session has aged past a threshold, they never wait for a schedule.
 */
import { DateTime } from 'luxon';
import pg from 'pg';
import type { Transaction } from 'sequelize';
import type { EngineCore } from '../src/engine.js';
import { createMaintenance, type Maintenance, type MaintenanceOptions } from '../services/maintenance/index.js';
import type { IdleCleanupResult, PoolMonitorResult, SlowQueriesResult } from '../services/maintenance/jobs/connections.js';
import { createTestDatabase, createTestEngineCore, rows, silentLogger } from './helpers/db.js';

let url: string;
let core: EngineCore;
const open: Maintenance[] = [];
const clients: pg.Client[] = [];

beforeAll(async () => {
  url = await createTestDatabase();
  core = await createTestEngineCore({ databaseUrl: url, apiPoolMax: 5, apiPoolMin: 0, schedulerPoolMax: 5, schedulerPoolMin: 0 });
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(open.map((m) => m.close()));
  await core.close();
});

function maintenance(options: MaintenanceOptions = {}) {
  const m = createMaintenance({
    databaseUrl: url,
    apiDb: core.apiDb,
    schedulerDb: core.schedulerDb,
    logger: silentLogger,
    clock: () => DateTime.fromISO('2026-06-01T10:00:00Z'),
    options,
  });
  open.push(m);
  return m;
}

async function client(applicationName: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url, application_name: applicationName });
  // A terminated session emits 'error' on its client; without a listener that would crash the test process.
  c.on('error', () => undefined);
  await c.connect();
  clients.push(c);
  return c;
}

async function pidOf(c: pg.Client): Promise<number> {
  return (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
}

/** Polls pg_stat_activity until `pid` has been in `state` for more than `seconds` (server time). */
async function aged(pid: number, state: string, seconds: number, since: 'state_change' | 'query_start' = 'state_change') {
  for (let i = 0; i < 200; i++) {
    const r = await rows<{ ok: boolean }>(
      core.apiDb,
      `SELECT state = $state AND ${since} < now() - make_interval(secs => $secs) AS ok FROM pg_stat_activity WHERE pid = $pid`,
      { pid, state, secs: seconds },
    );
    if (r[0]?.ok) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`session ${pid} never aged past ${seconds} s in state ${state}`);
}

describe('monitor_connection_pool', () => {
  it('is ok at 60 %, warns above 60 %, is critical above 80 %, and reports long-held sessions as suspected leaks', async () => {
    const m = maintenance({ leakThresholdMs: 0 });
    const held: Transaction[] = [];
    const hold = async (db: EngineCore['apiDb'], n: number) => {
      for (let i = 0; i < n; i++) held.push(await db.transaction());
    };
    const release = async () => {
      await Promise.all(held.splice(0).map((t) => t.rollback()));
    };
    try {
      await hold(core.apiDb, 3); // 3 / 5 = 60 %: not above
      let r = (await m.runNow('monitor_connection_pool')).result as PoolMonitorResult;
      expect(r.pools.find((p) => p.name === 'api')).toMatchObject({
        using: 3,
        max: 5,
        usagePct: 60,
        level: 'ok',
        applicationName: 'fairsend-api',
      });

      await hold(core.apiDb, 1); // 80 %: warning
      await hold(core.schedulerDb, 5); // 100 %: critical
      r = (await m.runNow('monitor_connection_pool')).result as PoolMonitorResult;
      expect(r.pools.map((p) => [p.name, p.usagePct, p.level])).toEqual([
        ['api', 80, 'warning'],
        ['scheduler', 100, 'critical'],
        ['prepared', 0, 'ok'],
        ['maintenance', 0, 'ok'], // read between its own queries
      ]);
      expect(r.level).toBe('critical');
      // The server sees the same sessions, idle in their transactions...
      expect(r.pools.find((p) => p.name === 'scheduler')!.serverConnections).toBe(5);
      expect(r.sessions).toEqual(
        expect.arrayContaining([
          { applicationName: 'fairsend-api', state: 'idle in transaction', count: 4 },
          { applicationName: 'fairsend-scheduler', state: 'idle in transaction', count: 5 },
        ]),
      );
      // ... and, past the (here zero) threshold, every one of them is a suspected leak.
      expect(
        r.suspectedLeaks
          .filter((s) => s.state === 'idle in transaction')
          .map((s) => s.applicationName)
          .sort(),
      ).toEqual([...Array<string>(4).fill('fairsend-api'), ...Array<string>(5).fill('fairsend-scheduler')]);

      await release();
      r = (await m.runNow('monitor_connection_pool')).result as PoolMonitorResult;
      expect(r.pools.map((p) => p.level)).toEqual(['ok', 'ok', 'ok', 'ok']);
      expect(r.suspectedLeaks).toEqual([]);
      expect(r.level).toBe('ok');
    } finally {
      await release();
    }
  });

  it('does not call a session held for less than the threshold a leak', async () => {
    const m = maintenance(); // default: 2 minutes
    const t = await core.apiDb.transaction();
    try {
      const r = (await m.runNow('monitor_connection_pool')).result as PoolMonitorResult;
      expect(r.suspectedLeaks).toEqual([]);
      expect(r.pools.find((p) => p.name === 'api')!.using).toBe(1);
    } finally {
      await t.rollback();
    }
  });
});

describe('cleanup_connection_pool', () => {
  it("ends only fairsend's own sessions idle in a transaction longer than the threshold", async () => {
    const ours = await client('fairsend-api');
    const other = await client('other-app');
    await ours.query('BEGIN');
    await other.query('BEGIN');
    const [oursPid, otherPid] = [await pidOf(ours), await pidOf(other)];
    await aged(oursPid, 'idle in transaction', 1);
    await aged(otherPid, 'idle in transaction', 1);
    // A fairsend session that has just become idle in its transaction is left alone.
    const young = await client('fairsend-scheduler');
    await young.query('BEGIN');
    const youngPid = await pidOf(young);

    const m = maintenance({ idleInTransactionMs: 1000 });
    const run = await m.runNow('cleanup_connection_pool');
    const r = run.result as IdleCleanupResult;
    expect(r.level).toBe('warning');
    expect(r.sessions).toEqual([
      expect.objectContaining({
        pid: oursPid,
        applicationName: 'fairsend-api',
        state: 'idle in transaction',
        terminated: true,
        query: 'SELECT pg_backend_pid() AS pid',
      }),
    ]);
    expect(r.sessions[0]!.seconds).toBeGreaterThanOrEqual(1);

    // The fairsend session is gone; the other application's and the young one are still there.
    for (let i = 0; i < 100; i++) {
      const left = await rows(core.apiDb, 'SELECT 1 FROM pg_stat_activity WHERE pid = $pid', { pid: oursPid });
      if (!left.length) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    const alive = await rows<{ pid: number }>(core.apiDb, 'SELECT pid FROM pg_stat_activity WHERE pid = ANY($pids::int[])', {
      pids: [oursPid, otherPid, youngPid],
    });
    expect(alive.map((a) => a.pid).sort()).toEqual([otherPid, youngPid].sort());
    await expect(ours.query('SELECT 1')).rejects.toThrow();
    await expect(other.query('SELECT 1')).resolves.toBeDefined();
    await other.query('ROLLBACK');
    await young.query('ROLLBACK');

    // Nothing left to end: ok.
    expect(((await m.runNow('cleanup_connection_pool')).result as IdleCleanupResult).sessions).toEqual([]);
  });
});

describe('check_slow_queries', () => {
  it('finds a query running for more than 5 s on another connection', async () => {
    const c = await client('fairsend-scheduler');
    const pid = await pidOf(c);
    const sleeping = c.query('SELECT pg_sleep(6) /* slow on purpose */');
    try {
      const m = maintenance();
      // Fast before it crosses the threshold...
      await aged(pid, 'active', 0, 'query_start');
      let r = (await m.runNow('check_slow_queries')).result as SlowQueriesResult;
      expect(r.queries.map((q) => q.pid)).not.toContain(pid);
      // ... reported after.
      await aged(pid, 'active', 5, 'query_start');
      r = (await m.runNow('check_slow_queries')).result as SlowQueriesResult;
      expect(r.level).toBe('warning');
      expect(r.thresholdMs).toBe(5000);
      expect(r.queries).toEqual([
        expect.objectContaining({
          pid,
          applicationName: 'fairsend-scheduler',
          state: 'active',
          query: 'SELECT pg_sleep(6) /* slow on purpose */',
        }),
      ]);
      expect(r.queries[0]!.seconds).toBeGreaterThanOrEqual(5);
    } finally {
      await sleeping;
    }
    const after = (await maintenance().runNow('check_slow_queries')).result as SlowQueriesResult;
    expect(after).toMatchObject({ level: 'ok', queries: [] });
  });

  it('cuts the reported query to its first 200 characters', async () => {
    const c = await client('long-sql');
    const pid = await pidOf(c);
    const padding = 'x'.repeat(400);
    const sleeping = c.query(`SELECT pg_sleep(1.5), '${padding}'`);
    try {
      await aged(pid, 'active', 0.5, 'query_start');
      const r = (await maintenance({ slowQueryMs: 500 }).runNow('check_slow_queries')).result as SlowQueriesResult;
      const q = r.queries.find((x) => x.pid === pid)!;
      expect(q.query).toHaveLength(200);
      expect(q.query.startsWith('SELECT pg_sleep(1.5)')).toBe(true);
    } finally {
      await sleeping;
    }
  });
});
