/**
 * The connection jobs: health, pool usage and leaks, idle-in-transaction sessions, slow queries.
 *
 * Everything here reads pg_stat_activity for THIS database only (`datname = current_database()`):
 * fairsend's sessions are told apart by their application_name (fairsend-api, fairsend-scheduler, fairsend-prepared,
 * fairsend-maintenance), and another fairsend deployment on the same server is not ours to judge.
 * Durations come from the server's clock (now() - xact_start etc.): they measure real time held.
 */
import type { Sequelize } from 'sequelize';
import { poolUsage } from '../../kernel/db.js';
import type { JobDefinition, JobResult, Level } from '../job-runner.js';
import { elapsedMs, select } from '../sql.js';

/** Prefix of every fairsend pool's application_name; cleanup never touches a session without it. */
export const FAIRSEND_APP_PREFIX = 'fairsend-';

export interface NamedPool {
  /** 'api', 'scheduler', 'maintenance'. */
  name: string;
  applicationName: string;
  db: Sequelize;
}

export interface SessionInfo {
  pid: number;
  applicationName: string;
  state: string | null;
  /** Seconds in the current state (idle in transaction) or since the transaction or query began (active). */
  seconds: number;
  /** First 200 characters of the session's current or last query. */
  query: string;
}

const worst = (levels: Level[]): Level => (levels.includes('critical') ? 'critical' : levels.includes('warning') ? 'warning' : 'ok');

// ---------------------------------------------------------------------------------------------- health

export interface HealthResult extends JobResult {
  latencyMs: number;
}

/** `SELECT 1` on the maintenance pool, timed; a failure fails the run (logged, and shown in the job's status). */
export function dbHealthCheck(opts: { healthLatencyWarnMs: number }): Omit<JobDefinition<HealthResult>, 'schedule'> {
  return {
    name: 'db_health_check',
    description: 'SELECT 1 with its latency',
    async run({ db }) {
      const t0 = performance.now();
      await db.query('SELECT 1');
      const latencyMs = elapsedMs(t0);
      return { level: latencyMs > opts.healthLatencyWarnMs ? 'warning' : 'ok', latencyMs };
    },
  };
}

// ------------------------------------------------------------------------------------------ pool monitor

export interface PoolReport {
  name: string;
  applicationName: string;
  max: number;
  size: number;
  using: number;
  available: number;
  waiting: number;
  /** using / max, in percent. */
  usagePct: number;
  level: Level;
  /** Connections the server sees from this application_name on this database. */
  serverConnections: number;
}

export interface PoolMonitorResult extends JobResult {
  pools: PoolReport[];
  /** Every client connection of the server against max_connections. */
  server: { connections: number; maxConnections: number; usagePct: number; level: Level };
  /** fairsend's sessions on this database by application_name and state. */
  sessions: Array<{ applicationName: string; state: string | null; count: number }>;
  suspectedLeaks: SessionInfo[];
}

export interface PoolMonitorOptions {
  poolWarnPct: number;
  poolCriticalPct: number;
  leakThresholdMs: number;
}

export function levelOf(pct: number, o: { poolWarnPct: number; poolCriticalPct: number }): Level {
  return pct > o.poolCriticalPct ? 'critical' : pct > o.poolWarnPct ? 'warning' : 'ok';
}

const pct = (part: number, whole: number) => (whole > 0 ? Math.round((part / whole) * 1000) / 10 : 0);

/**
 * Usage of each of fairsend's pools (client side, sequelize-pool's counters) next to what the server
 * sees (server side, pg_stat_activity), and sessions held active or idle in a transaction for longer
 * than `leakThresholdMs`: a request that checked out a connection and never gave it back shows up
 * there, while the pool only knows the connection is "in use".
 */
export function monitorConnectionPool(
  pools: () => NamedPool[],
  opts: PoolMonitorOptions,
): Omit<JobDefinition<PoolMonitorResult>, 'schedule'> {
  return {
    name: 'monitor_connection_pool',
    description: `pool usage (warning above ${opts.poolWarnPct} %, critical above ${opts.poolCriticalPct} %) and suspected connection leaks`,
    async run({ db }) {
      const sessions = (
        await select<{ application_name: string; state: string | null; n: number }>(
          db,
          `SELECT application_name, state, count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND starts_with(application_name, $prefix)
            GROUP BY 1, 2 ORDER BY 1, 2`,
          { prefix: FAIRSEND_APP_PREFIX },
        )
      ).map((r) => ({ applicationName: r.application_name, state: r.state, count: r.n }));
      const [server] = await select<{ n: number; max: number }>(
        db,
        `SELECT count(*)::int AS n, current_setting('max_connections')::int AS max FROM pg_stat_activity WHERE backend_type = 'client backend'`,
      );
      const leaks = await select<SessionRow>(
        db,
        `SELECT pid, application_name, state, extract(epoch FROM now() - coalesce(xact_start, query_start))::float8 AS seconds,
                left(query, 200) AS query
           FROM pg_stat_activity
          WHERE datname = current_database() AND starts_with(application_name, $prefix) AND pid <> pg_backend_pid()
            AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')
            AND coalesce(xact_start, query_start) <= now() - make_interval(secs => $secs)
          ORDER BY seconds DESC`,
        { prefix: FAIRSEND_APP_PREFIX, secs: opts.leakThresholdMs / 1000 },
      );
      const poolReports = pools().map(({ name, applicationName, db: pool }): PoolReport => {
        const u = poolUsage(pool);
        const usagePct = pct(u.using, u.max);
        const serverConnections = sessions.filter((s) => s.applicationName === applicationName).reduce((a, s) => a + s.count, 0);
        return { name, applicationName, ...u, usagePct, level: levelOf(usagePct, opts), serverConnections };
      });
      const serverPct = pct(server!.n, server!.max);
      const serverReport = { connections: server!.n, maxConnections: server!.max, usagePct: serverPct, level: levelOf(serverPct, opts) };
      const suspectedLeaks = leaks.map(toSession);
      const level = worst([...poolReports.map((p) => p.level), serverReport.level, suspectedLeaks.length ? 'warning' : 'ok']);
      return { level, pools: poolReports, server: serverReport, sessions, suspectedLeaks };
    },
  };
}

interface SessionRow {
  pid: number;
  application_name: string;
  state: string | null;
  seconds: number;
  query: string | null;
}

const toSession = (r: SessionRow): SessionInfo => ({
  pid: r.pid,
  applicationName: r.application_name,
  state: r.state,
  seconds: Math.round(r.seconds * 10) / 10,
  query: r.query ?? '',
});

// --------------------------------------------------------------------------------- idle in transaction

export interface IdleCleanupResult extends JobResult {
  thresholdMs: number;
  /** The sessions found idle in a transaction too long; `terminated` is pg_terminate_backend's answer. */
  sessions: Array<SessionInfo & { terminated: boolean }>;
}

/**
 * Ends fairsend's OWN sessions idle in a transaction for longer than `idleInTransactionMs`: they hold
 * a pool connection and their locks, and keep VACUUM from removing dead rows, while nothing happens.
 * Only sessions whose application_name starts with 'fairsend-' on this database, never another
 * application's, never this job's own session. Selection and termination are one statement, so the
 * window in which a session could leave the state in between is microseconds; its pool sees the
 * connection fail and replaces it (sequelize marks a connection invalid on a socket error).
 */
export function cleanupConnectionPool(opts: { idleInTransactionMs: number }): Omit<JobDefinition<IdleCleanupResult>, 'schedule'> {
  return {
    name: 'cleanup_connection_pool',
    description: `ends fairsend's own sessions idle in a transaction for over ${opts.idleInTransactionMs / 1000} s`,
    async run({ db, logger }) {
      const rows = await select<SessionRow & { terminated: boolean }>(
        db,
        `SELECT pid, application_name, state, extract(epoch FROM now() - state_change)::float8 AS seconds,
                left(query, 200) AS query, pg_terminate_backend(pid) AS terminated
           FROM pg_stat_activity
          WHERE datname = current_database() AND starts_with(application_name, $prefix) AND pid <> pg_backend_pid()
            AND state IN ('idle in transaction', 'idle in transaction (aborted)')
            AND state_change <= now() - make_interval(secs => $secs)`,
        { prefix: FAIRSEND_APP_PREFIX, secs: opts.idleInTransactionMs / 1000 },
      );
      const sessions = rows.map((r) => ({ ...toSession(r), terminated: r.terminated }));
      for (const s of sessions) logger.warn(s, `ended session ${s.pid} (${s.applicationName}) idle in transaction for ${s.seconds} s`);
      return { level: sessions.length ? 'warning' : 'ok', thresholdMs: opts.idleInTransactionMs, sessions };
    },
  };
}

// ------------------------------------------------------------------------------------------ slow queries

export interface SlowQueriesResult extends JobResult {
  thresholdMs: number;
  queries: SessionInfo[];
}

/** Queries on this database running for longer than `slowQueryMs` (any application; not this job's own). */
export function checkSlowQueries(opts: { slowQueryMs: number }): Omit<JobDefinition<SlowQueriesResult>, 'schedule'> {
  return {
    name: 'check_slow_queries',
    description: `queries running for over ${opts.slowQueryMs / 1000} s`,
    async run({ db }) {
      const rows = await select<SessionRow>(
        db,
        `SELECT pid, application_name, state, extract(epoch FROM now() - query_start)::float8 AS seconds, left(query, 200) AS query
           FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
            AND state IN ('active', 'fastpath function call')
            AND query_start <= now() - make_interval(secs => $secs)
          ORDER BY query_start`,
        { secs: opts.slowQueryMs / 1000 },
      );
      const queries = rows.map(toSession);
      return { level: queries.length ? 'warning' : 'ok', thresholdMs: opts.slowQueryMs, queries };
    },
  };
}
