/**
 * The maintenance jobs against real PostgreSQL, through the programmatic API (createMaintenance):
 * default schedules, the purge of old data (batches, totals kept), ANALYZE, the index and bloat
 * reports, performance reports, pause/resume/run-now and listing. Time comes from an injected clock.
 */
import { DateTime } from 'luxon';
import pg from 'pg';
import type { Sequelize } from 'sequelize';
import type { EngineCore } from '../src/engine.js';
import { ConflictError, NotFoundError, ValidationError } from '../services/kernel/errors.js';
import { poolUsage } from '../services/kernel/db.js';
import { createMaintenance, type Maintenance, type MaintenanceOptions } from '../services/maintenance/index.js';
import type { CleanupResult } from '../services/maintenance/jobs/cleanup-old-data.js';
import type { IndexReportResult, BloatResult, AnalyzeResult } from '../services/maintenance/jobs/tables.js';
import type { PerformanceReportResult } from '../services/maintenance/jobs/performance-report.js';
import { createTestDatabase, createTestEngineCore, rows, silentLogger } from './helpers/db.js';

let url: string;
let core: EngineCore;
let sql: Sequelize;
const open: Maintenance[] = [];

beforeAll(async () => {
  url = await createTestDatabase();
  core = await createTestEngineCore({ databaseUrl: url, apiPoolMax: 4, apiPoolMin: 0, schedulerPoolMax: 2, schedulerPoolMin: 0 });
  sql = core.apiDb;
});
afterAll(async () => {
  await Promise.all(open.map((m) => m.close()));
  await core.close();
});

/** A maintenance instance on the test database with a clock the test moves. */
function maintenance(start: string, options: MaintenanceOptions = {}, timezone = 'UTC') {
  let now = DateTime.fromISO(start, { setZone: true });
  const m = createMaintenance({
    databaseUrl: url,
    apiDb: core.apiDb,
    schedulerDb: core.schedulerDb,
    logger: silentLogger,
    clock: () => now,
    timezone,
    options,
  });
  open.push(m);
  return { m, setNow: (iso: string) => (now = DateTime.fromISO(iso, { setZone: true })) };
}

const one = async <T>(q: string, bind?: Record<string, unknown>) => (await rows<T>(sql, q, bind))[0]!;

let userId: number;
beforeAll(async () => {
  ({ id: userId } = await one<{ id: number }>(`INSERT INTO users (name, email) VALUES ('Ada', 'ada@example.com') RETURNING id`));
});

async function campaign(status: string, completedAt: string | null, updatedAt: string): Promise<number> {
  const r = await one<{ id: string }>(
    `INSERT INTO tasks (name, status, from_address, created_by, templates, generated_at, completed_at, updated_at)
     VALUES ('c', $status, 'news@example.com', $user, '[1]', $updated, $completed, $updated) RETURNING id`,
    { status, user: userId, completed: completedAt, updated: updatedAt },
  );
  return Number(r.id);
}

/** `n` subtasks: the first `sent` sent, the next `failed` failed, the next `unknown` unknown, the rest cancelled. */
async function subtasks(taskId: number, n: number, sent: number, failed: number, unknown = 0) {
  await sql.query(
    `INSERT INTO subtasks (task_id, contact_id, user_id, email, template_id, status, sent_at)
     SELECT $task, g, $user, 'r' || g || '@example.org', 1,
            CASE WHEN g <= $sent THEN 'sent' WHEN g <= $sent + $failed THEN 'failed'
                 WHEN g <= $sent + $failed + $unknown THEN 'unknown' ELSE 'cancelled' END,
            CASE WHEN g <= $sent THEN '2026-01-01T00:00:00Z'::timestamptz END
       FROM generate_series(1, $n::int) g`,
    { bind: { task: taskId, user: userId, sent, failed, unknown, n } },
  );
}

const countsOf = (taskId: number) =>
  one<{ total: number; sent: number; failed: number; cancelled: number; unknown: number }>(
    `SELECT count(*)::int AS total, count(*) FILTER (WHERE status = 'sent')::int AS sent,
            count(*) FILTER (WHERE status = 'failed')::int AS failed, count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
            count(*) FILTER (WHERE status = 'unknown')::int AS unknown
       FROM subtasks WHERE task_id = $id`,
    { id: taskId },
  );
const storedOf = (taskId: number) =>
  one<{ total: number; sent: number; failed: number; cancelled: number; unknown: number }>(
    `SELECT total_count AS total, sent_count AS sent, failed_count AS failed, cancelled_count AS cancelled, unknown_count AS unknown
       FROM tasks WHERE id = $id`,
    { id: taskId },
  );

/** PostgreSQL's cumulative statistics are flushed by each backend about once a second; ask for it now where possible, then wait for `check`. */
async function statsShow(client: pg.Client, check: () => Promise<boolean>) {
  const { rows: r } = await client.query(`SELECT to_regproc('pg_stat_force_next_flush') IS NOT NULL AS has`);
  if (r[0].has) await client.query('SELECT pg_stat_force_next_flush()');
  for (let i = 0; i < 150 && !(await check()); i++) await new Promise((res) => setTimeout(res, 100));
}

describe('the built-in jobs and their default schedules', () => {
  it('lists all nine jobs, on by default, at their local times (Europe/Paris, the night of the spring-forward change)', () => {
    // Saturday 2026-03-28 12:00 in Paris; the next night loses 02:00-03:00.
    const { m } = maintenance('2026-03-28T12:00:00+01:00', { disabled: ['check_slow_queries'] }, 'Europe/Paris');
    const next = Object.fromEntries(m.list().map((j) => [j.name, j.nextRunAt?.toISOString() ?? null]));
    expect(next).toEqual({
      db_health_check: '2026-03-28T11:03:00.000Z',
      monitor_connection_pool: '2026-03-28T11:05:00.000Z',
      cleanup_connection_pool: '2026-03-28T11:10:00.000Z',
      check_slow_queries: null, // disabled
      analyze_tables: '2026-03-29T01:00:00.000Z', // 02:00 does not exist that night: 03:00 CEST
      index_report: '2026-03-29T01:00:00.000Z', // Sunday 03:00 CEST
      cleanup_old_data: '2026-03-29T02:00:00.000Z', // 04:00 CEST
      check_table_bloat: '2026-03-30T03:00:00.000Z', // Monday 05:00 CEST
      performance_report: '2026-03-29T06:00:00.000Z', // 08:00 CEST
    });
    expect(m.get('check_slow_queries')).toMatchObject({ enabled: false, schedule: 'every 15m' });
    expect(m.get('index_report').schedule).toBe('weekly on Sunday at 03:00 (Europe/Paris)');
    expect(m.get('analyze_tables').schedule).toBe('daily at 02:00 (Europe/Paris)');
    expect(poolUsage(m.db).max).toBe(2);
  });

  it('ticks start the due jobs at their times; their outcomes show in the listing', async () => {
    const { m } = maintenance('2026-03-28T12:00:00+01:00', { disabled: ['cleanup_old_data'] }, 'Europe/Paris');
    const first = m.tick(DateTime.fromISO('2026-03-28T11:03:00Z'));
    expect(first).toMatchObject({ started: ['db_health_check'], skipped: [] });
    await first.done;
    expect(m.get('db_health_check')).toMatchObject({ lastOutcome: 'success', runs: 1, nextRunAt: new Date('2026-03-28T11:06:00Z') });
    // The process then sleeps until the night: the interval jobs' stale runs are skipped (misfire), the nightly jobs run.
    const night = m.tick(DateTime.fromISO('2026-03-29T01:00:00Z'));
    expect(night.started).toEqual(['analyze_tables', 'index_report']);
    expect(night.skipped.map((x) => [x.name, x.reason])).toEqual([
      ['db_health_check', 'misfire'],
      ['monitor_connection_pool', 'misfire'],
      ['cleanup_connection_pool', 'misfire'],
      ['check_slow_queries', 'misfire'],
    ]);
    expect(m.get('monitor_connection_pool')).toMatchObject({ skips: 1, runs: 0, nextRunAt: new Date('2026-03-29T01:05:00Z') });
    const runs = await night.done;
    expect(runs.map((r) => [r.name, r.outcome])).toEqual([
      ['analyze_tables', 'success'],
      ['index_report', 'success'],
    ]);
    const analyze = m.get('analyze_tables');
    expect(analyze).toMatchObject({
      lastOutcome: 'success',
      lastRunAt: new Date('2026-03-29T01:00:00Z'),
      nextRunAt: new Date('2026-03-30T00:00:00Z'),
    });
    expect((analyze.lastResult as AnalyzeResult).tables.map((t) => t.table)).toEqual(['subtasks', 'tasks', 'contacts', 'email_services']);
  });

  it('refuses unknown jobs and bad options with precise messages', () => {
    expect(() => maintenance('2026-01-01T00:00:00Z', { disabled: ['analyse_tables' as never] })).toThrow(
      /options\.disabled\.0: unknown job "analyse_tables"/,
    );
    expect(() => maintenance('2026-01-01T00:00:00Z', { retentionDays: 0 })).toThrow(ValidationError);
    expect(() => maintenance('2026-01-01T00:00:00Z', { schedules: { analyze_tables: { at: '2am' } } })).toThrow(
      /options\.schedules\.analyze_tables\.at/,
    );
    expect(() => maintenance('2026-01-01T00:00:00Z', { poolWarnPct: 90 })).toThrow(/poolWarnPct: must not exceed poolCriticalPct/);
    expect(() => maintenance('2026-01-01T00:00:00Z', {}, 'Europe/Nowhere')).toThrow(/timezone/);
    const { m } = maintenance('2026-01-01T00:00:00Z');
    expect(() => m.get('vacuum_redis_cache')).toThrow(NotFoundError);
  });
});

describe('pause, resume and run now through the API', () => {
  it('pauses, resumes, runs now (refusing to overlap), and lists next run and last outcome', async () => {
    const { m, setNow } = maintenance('2026-06-01T10:00:00Z');
    expect(m.pause('db_health_check')).toMatchObject({ paused: true, nextRunAt: null });
    expect(m.tick(DateTime.fromISO('2026-06-01T10:03:00Z')).started).not.toContain('db_health_check');

    const a = m.runNow('db_health_check');
    await expect(m.runNow('db_health_check')).rejects.toThrow(ConflictError);
    const run = await a;
    expect(run).toMatchObject({
      name: 'db_health_check',
      trigger: 'manual',
      outcome: 'success',
      result: { level: 'ok', latencyMs: expect.any(Number) },
    });

    setNow('2026-06-01T10:04:00Z');
    expect(m.resume('db_health_check')).toMatchObject({
      paused: false,
      nextRunAt: new Date('2026-06-01T10:07:00Z'),
      lastOutcome: 'success',
      lastRunAt: new Date('2026-06-01T10:00:00Z'),
    });
    await expect(m.runNow('no_such_job')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('a failing health check is logged and visible in the status; close() ends the API', async () => {
    const bad = createMaintenance({ databaseUrl: url.replace(/\/[^/]+$/, '/fairsend_no_such_db'), logger: silentLogger });
    const run = await bad.runNow('db_health_check');
    expect(run.outcome).toBe('failure');
    expect(bad.get('db_health_check')).toMatchObject({
      lastOutcome: 'failure',
      lastError: expect.stringMatching(/fairsend_no_such_db/),
      failures: 1,
    });
    await bad.close();
    await bad.close(); // idempotent
    await expect(bad.runNow('db_health_check')).rejects.toMatchObject({ code: 'ENGINE_CLOSED' });
  });
});

describe('cleanup_old_data', () => {
  it('deletes exactly the eligible rows, 1,000 per statement, after storing the campaigns’ final counts', async () => {
    const now = '2026-11-20T04:00:00Z';
    const old = '2026-08-01T00:00:00Z'; // 111 days before
    const recent = '2026-11-01T00:00:00Z';
    const a = await campaign('completed', old, old); // 2,500: 3 statements
    await subtasks(a, 2500, 2000, 300, 7);
    const b = await campaign('cancelled', null, old); // cancelled, no completed_at: by updated_at; 1,200: 2 statements
    await subtasks(b, 1200, 100, 0);
    const c = await campaign('completed', recent, recent); // too recent
    await subtasks(c, 1000, 1000, 0);
    const d = await campaign('sending', null, old); // not finished
    await subtasks(d, 50, 10, 0);
    const e = await campaign('completed', old, '2026-11-19T00:00:00Z'); // completed_at decides, not a later update
    await subtasks(e, 1000, 900, 100); // exactly 1,000: a second statement finds nothing
    await sql.query(
      `INSERT INTO error_logs (error_type, message, first_seen_at, last_seen_at) VALUES
         ('smtp', 'old 1', '2026-01-01', $old), ('smtp', 'old 2', '2026-01-01', $old), ('smtp', 'new', '2026-01-01', $recent)`,
      { bind: { old, recent } },
    );
    await sql.query(`INSERT INTO bounce_event_keys (key, received_at) VALUES ('sendgrid:old', $old), ('sendgrid:new', $recent)`, {
      bind: { old, recent },
    });
    const before = { a: await countsOf(a), b: await countsOf(b), e: await countsOf(e) };
    expect(before.a).toEqual({ total: 2500, sent: 2000, failed: 300, unknown: 7, cancelled: 193 });

    const { m } = maintenance(now);
    const run = await m.runNow('cleanup_old_data');
    expect(run.outcome).toBe('success');
    const r = run.result as CleanupResult;
    expect(r.cutoff).toEqual(new Date('2026-08-22T04:00:00Z'));
    expect(r.campaigns).toEqual([
      { taskId: a, storedCounts: before.a, subtasksDeleted: 2500, deleteStatements: 3 },
      { taskId: b, storedCounts: before.b, subtasksDeleted: 1200, deleteStatements: 2 },
      { taskId: e, storedCounts: before.e, subtasksDeleted: 1000, deleteStatements: 2 },
    ]);
    expect(r).toMatchObject({
      subtasksDeleted: 4700,
      errorLogsDeleted: 2,
      eventKeysDeleted: 1,
      attemptsDeleted: 0,
      deleteStatements: 10,
      interrupted: false,
      level: 'ok',
    });

    // Totals survive the rows; everything else is untouched.
    expect(await storedOf(a)).toEqual(before.a);
    expect(await storedOf(b)).toEqual(before.b);
    expect(await storedOf(e)).toEqual(before.e);
    expect(await rows(sql, 'SELECT task_id, count(*)::int AS n FROM subtasks GROUP BY 1 ORDER BY 1')).toEqual([
      { task_id: String(c), n: 1000 },
      { task_id: String(d), n: 50 },
    ]);
    expect(await rows(sql, 'SELECT message FROM error_logs')).toEqual([{ message: 'new' }]);
    expect(await rows(sql, 'SELECT key FROM bounce_event_keys')).toEqual([{ key: 'sendgrid:new' }]);
    expect(
      await rows(
        sql,
        'SELECT task_id::int AS id, subtasks_deleted::int AS n, finished_at IS NOT NULL AS done FROM purged_campaigns ORDER BY 1',
      ),
    ).toEqual([
      { id: a, n: 2500, done: true },
      { id: b, n: 1200, done: true },
      { id: e, n: 1000, done: true },
    ]);

    // Again: nothing left to do, and the stored totals are not overwritten with zeros.
    const again = (await m.runNow('cleanup_old_data')).result as CleanupResult;
    expect(again).toMatchObject({ campaigns: [], subtasksDeleted: 0, errorLogsDeleted: 0, eventKeysDeleted: 0, deleteStatements: 3 });
    expect(await storedOf(a)).toEqual(before.a);
  });

  it('prunes send attempts older than the retention, batch by batch, and keeps the newer ones', async () => {
    await sql.query(
      `INSERT INTO send_attempts (task_id, contact_id, attempted_at, service_id, provider, result, smtp_code)
       SELECT 999, g, CASE WHEN g <= 2100 THEN timestamptz '2026-08-01T00:00:00Z' ELSE timestamptz '2026-11-19T00:00:00Z' END,
              1, 'example.test', 'accepted', 250
         FROM generate_series(1, 2200) g`,
    );
    const { m } = maintenance('2026-11-20T04:00:00Z');
    const r = (await m.runNow('cleanup_old_data')).result as CleanupResult;
    expect(r.attemptsDeleted).toBe(2100);
    expect(await one(`SELECT count(*)::int AS n, min(contact_id)::int AS first FROM send_attempts WHERE task_id = 999`)).toEqual({
      n: 100,
      first: 2101,
    });
    await sql.query('DELETE FROM send_attempts WHERE task_id = 999');
  });

  it('a purge resumed after an interruption deletes the rest and keeps the counts stored the first time', async () => {
    const f = await campaign('completed', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
    await subtasks(f, 30, 20, 5);
    const { m } = maintenance('2026-11-20T04:00:00Z', { batchSize: 8 });
    // A first run stored the counts, deleted 10 rows, and stopped.
    await sql.query(
      `UPDATE tasks SET total_count = 40, sent_count = 28, failed_count = 7, cancelled_count = 4, unknown_count = 1 WHERE id = $id`,
      {
        bind: { id: f },
      },
    );
    await sql.query(`INSERT INTO purged_campaigns (task_id, subtasks_deleted) VALUES ($id, 10)`, { bind: { id: f } });
    const r = (await m.runNow('cleanup_old_data')).result as CleanupResult;
    expect(r.campaigns).toEqual([{ taskId: f, storedCounts: null, subtasksDeleted: 30, deleteStatements: 4 }]);
    expect(await storedOf(f)).toEqual({ total: 40, sent: 28, failed: 7, cancelled: 4, unknown: 1 });
    expect(await one(`SELECT subtasks_deleted::int AS n FROM purged_campaigns WHERE task_id = $id`, { id: f })).toEqual({ n: 40 });
  });
});

describe('analyze_tables, index_report, check_table_bloat', () => {
  let client: pg.Client;
  beforeAll(async () => {
    client = new pg.Client({ connectionString: url, application_name: 'maintenance-test' });
    await client.connect();
  });
  afterAll(() => client.end());

  it('analyze_tables runs ANALYZE on the hot tables (the planner statistics are written)', async () => {
    await client.query(`CREATE TABLE never_analyzed (x int) WITH (autovacuum_enabled = false)`);
    await client.query(`INSERT INTO never_analyzed SELECT generate_series(1, 500)`);
    const { m } = maintenance('2026-06-01T00:00:00Z', { analyzeTables: ['never_analyzed', 'email_services', 'no_such_table'] });
    const before = await one<{ n: number }>(`SELECT reltuples::int AS n FROM pg_class WHERE relname = 'never_analyzed'`);
    expect(before.n).toBe(-1); // never analyzed
    const r = (await m.runNow('analyze_tables')).result as AnalyzeResult;
    expect(r.level).toBe('warning');
    expect(r.tables.map((t) => [t.table, t.error === undefined])).toEqual([
      ['never_analyzed', true],
      ['email_services', true],
      ['no_such_table', false],
    ]);
    expect(await one(`SELECT reltuples::int AS n FROM pg_class WHERE relname = 'never_analyzed'`)).toEqual({ n: 500 });
  });

  it('index_report lists unused secondary indexes and missing-index candidates, and changes nothing', async () => {
    await client.query(`CREATE INDEX contacts_name_unused_idx ON contacts (name)`);
    await client.query(`CREATE TABLE scanned (id int PRIMARY KEY, v int)`);
    await client.query(`INSERT INTO scanned SELECT g, g % 7 FROM generate_series(1, 3000) g`);
    for (let i = 0; i < 6; i++) await client.query(`SELECT count(*) FROM scanned WHERE v = 3`);
    await statsShow(client, async () => {
      const s = await rows<{ seq: string; live: string }>(
        sql,
        `SELECT seq_scan AS seq, n_live_tup AS live FROM pg_stat_user_tables WHERE relname = 'scanned'`,
      );
      return Number(s[0]?.seq) >= 6 && Number(s[0]?.live) >= 3000;
    });
    const indexesBefore = await rows(sql, `SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`);

    const { m } = maintenance('2026-06-07T03:00:00Z', { indexMinRows: 1000, indexMinSeqScans: 5 });
    const r = (await m.runNow('index_report')).result as IndexReportResult;
    const unused = r.unusedIndexes.map((i) => i.index);
    expect(unused).toContain('contacts_name_unused_idx');
    expect(unused).not.toContain('contacts_pkey'); // primary key
    expect(unused).not.toContain('contacts_user_email_key'); // unique
    expect(r.unusedIndexes.find((i) => i.index === 'contacts_name_unused_idx')).toMatchObject({
      table: 'contacts',
      definition: expect.stringContaining('(name)'),
      bytes: expect.any(Number),
    });
    expect(r.missingIndexCandidates).toEqual(expect.arrayContaining([expect.objectContaining({ table: 'scanned', liveRows: 3000 })]));
    for (const c of r.missingIndexCandidates) {
      expect(c.liveRows).toBeGreaterThanOrEqual(1000);
      expect(c.seqScans).toBeGreaterThanOrEqual(Math.max(5, c.indexScans + 1));
    }
    expect(r.level).toBe('warning');
    expect(await rows(sql, `SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`)).toEqual(indexesBefore);
  });

  it('check_table_bloat warns above 20 % dead tuples', async () => {
    // Autovacuum off on these two, so it cannot clean them up before the job looks.
    await client.query(`CREATE TABLE bloated (x int) WITH (autovacuum_enabled = false)`);
    await client.query(`CREATE TABLE tidy (x int) WITH (autovacuum_enabled = false)`);
    await client.query(`INSERT INTO bloated SELECT generate_series(1, 2000)`);
    await client.query(`INSERT INTO tidy SELECT generate_series(1, 2000)`);
    await client.query(`DELETE FROM bloated WHERE x <= 1000`); // 50 %
    await client.query(`DELETE FROM tidy WHERE x <= 300`); // 15 %
    await statsShow(client, async () => {
      const s = await rows<{ dead: string }>(
        sql,
        `SELECT sum(n_dead_tup) AS dead FROM pg_stat_user_tables WHERE relname IN ('bloated', 'tidy')`,
      );
      return Number(s[0]?.dead) >= 1300;
    });
    const { m } = maintenance('2026-06-08T05:00:00Z');
    const r = (await m.runNow('check_table_bloat')).result as BloatResult;
    expect(r.level).toBe('warning');
    expect(r.tables.find((t) => t.table === 'bloated')).toMatchObject({
      liveRows: 1000,
      deadRows: 1000,
      deadRatio: 0.5,
      warning: true,
      suggestion: 'VACUUM (ANALYZE) "public"."bloated"',
    });
    expect(r.tables.find((t) => t.table === 'tidy')).toMatchObject({ deadRatio: 0.15, warning: false });
  });
});

describe('performance_report', () => {
  it('stores a report (connections, tables, pools, sends and failures per service over the last day) readable through reports()', async () => {
    const svc = async (name: string) =>
      Number(
        (
          await one<{ id: number }>(
            `INSERT INTO email_services (name, transport, sending_rate, daily_quota) VALUES ($name, '{}', 1, 100) RETURNING id`,
            { name },
          )
        ).id,
      );
    const s1 = await svc('relay-one');
    const s2 = await svc('relay-two');
    const t = await campaign('sending', null, '2026-06-01T00:00:00Z');
    // contact ids must be unique per campaign: one block per service and time.
    // As the scheduler writes them: sent_at on sent messages only; a failure keeps the not_before of its last attempt.
    const put = async (from: number, n: number, status: string, service: number, at: string) =>
      sql.query(
        `INSERT INTO subtasks (task_id, contact_id, user_id, email, template_id, status, sent_at, not_before, service_id)
         SELECT $task, g, $user, 'p' || g || '@example.org', 1, $status, CASE WHEN $status = 'sent' THEN $at::timestamptz END,
                CASE WHEN $status = 'sent' THEN $at::timestamptz - interval '1 minute' ELSE $at::timestamptz END, $service
           FROM generate_series($from::int, $to::int) g`,
        { bind: { task: t, user: userId, status, at, service, from, to: from + n - 1 } },
      );
    await put(1, 3, 'sent', s1, '2026-06-09T12:00:00Z');
    await put(10, 2, 'failed', s1, '2026-06-10T07:00:00Z');
    await put(15, 1, 'failed', s1, '2026-06-09T07:59:59Z'); // before the window
    await put(20, 4, 'sent', s1, '2026-06-08T12:00:00Z'); // two days before: outside the window
    await put(30, 1, 'sent', s2, '2026-06-10T07:59:59Z');
    await put(40, 5, 'sent', s2, '2026-06-10T08:00:00Z'); // at the end of the window: outside

    const { m, setNow } = maintenance('2026-06-10T08:00:00Z');
    const run = await m.runNow('performance_report');
    const result = run.result as PerformanceReportResult;
    expect(result.totals).toEqual({ sent: 4, failed: 2 });

    setNow('2026-06-11T08:00:00Z');
    await m.runNow('performance_report');
    const reports = await m.reports(5);
    expect(reports.map((r) => r.createdAt)).toEqual([new Date('2026-06-11T08:00:00Z'), new Date('2026-06-10T08:00:00Z')]);
    const first = reports[1]!;
    expect(first.id).toBe(result.reportId);
    expect(first.report.window).toEqual({ from: '2026-06-09T08:00:00.000Z', to: '2026-06-10T08:00:00.000Z' });
    expect(first.report.services).toEqual([
      { serviceId: s1, name: 'relay-one', sent: 3, failed: 2 },
      { serviceId: s2, name: 'relay-two', sent: 1, failed: 0 },
    ]);
    expect(first.report.pools.map((p) => [p.name, p.max])).toEqual([
      ['api', 4],
      ['scheduler', 2],
      ['prepared', 2],
      ['maintenance', 2],
    ]);
    expect(first.report.tables.map((x) => x.table)).toEqual(
      expect.arrayContaining(['subtasks', 'tasks', 'contacts', 'performance_reports']),
    );
    expect(first.report.connections.byApplication).toEqual(
      expect.arrayContaining([expect.objectContaining({ applicationName: 'fairsend-maintenance', state: 'active' })]),
    );
    expect(first.report.connections.server.max).toBeGreaterThan(0);
    expect(first.report.databaseBytes).toBeGreaterThan(0);
    expect(await m.reports(1)).toHaveLength(1);
    await expect(m.reports(0)).rejects.toThrow(ValidationError);
  });
});
