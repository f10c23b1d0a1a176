/**
 * fairsend's housekeeping: nine maintenance jobs (after the MySQL/Flask design note in
 * ../shared/seeds/002, adapted to PostgreSQL and fairsend's tables) on one in-process runner, with
 * their own small pool. The engine hangs the returned API on `engine.jobs`.
 *
 * Why a third pool: the maintenance pool (max 2, min 0, application_name fairsend-maintenance) is
 * apart from the API pool and the scheduler pool, so a slow ANALYZE or a long purge can never take a
 * connection a web request or a send is waiting for. Its sessions carry a statement_timeout and a
 * lock_timeout: housekeeping gives way rather than queue behind the application's locks. With min 0
 * it holds no connection between runs.
 */
import type { DateTime } from 'luxon';
import { Sequelize } from 'sequelize';
import { APP_NAME_API, APP_NAME_PREPARED, APP_NAME_SCHEDULER } from '../kernel/db.js';
import { preparedPoolOf } from '../kernel/db-prepared.js';
import { ErrorCodes, FairsendError, ValidationError, type FieldIssue } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import { systemClock, type Clock } from '../context.js';
import { isValidZone } from '../quota-day.js';
import { createJobRunner, type JobDefinition, type JobRun, type JobRunner, type JobStatus, type TickReport } from './job-runner.js';
import { cleanupOldData } from './jobs/cleanup-old-data.js';
import { checkSlowQueries, cleanupConnectionPool, dbHealthCheck, monitorConnectionPool, type NamedPool } from './jobs/connections.js';
import { performanceReport, readReports, type PerformanceReport } from './jobs/performance-report.js';
import { analyzeTables, checkTableBloat, indexReport } from './jobs/tables.js';
import { JOB_NAMES, resolveMaintenanceOptions, type JobName, type MaintenanceOptions } from './options.js';

export { JOB_NAMES, DEFAULT_SCHEDULES, MAINTENANCE_DEFAULTS, type JobName, type MaintenanceOptions } from './options.js';
export type { JobRun, JobSkip, JobStatus, JobResult, Level, SkipReason, TickReport } from './job-runner.js';
export type { Schedule } from './schedule.js';
export type { PerformanceReport, PerformanceReportBody, PerformanceReportResult } from './jobs/performance-report.js';
export type { CleanupResult, CampaignPurge } from './jobs/cleanup-old-data.js';
export type { HealthResult, PoolMonitorResult, PoolReport, IdleCleanupResult, SlowQueriesResult, SessionInfo } from './jobs/connections.js';
export type { AnalyzeResult, IndexReportResult, BloatResult, TableBloat } from './jobs/tables.js';

export const APP_NAME_MAINTENANCE = 'fairsend-maintenance';
/** The maintenance pool's size: two, so a job and a status query can run together, never more. */
export const MAINTENANCE_POOL = { max: 2, min: 0, acquire: 30_000, idle: 10_000, evict: 10_000 } as const;

export interface MaintenanceDeps {
  /** The database to look after; the maintenance pool connects here. */
  databaseUrl: string;
  /** The API pool, reported on by monitor_connection_pool and performance_report. */
  apiDb?: Sequelize;
  /** The scheduler pool, likewise. */
  schedulerDb?: Sequelize;
  logger: Logger;
  /** Every schedule decision reads it (default: the system clock). */
  clock?: Clock;
  /** IANA zone of the `{ at: 'HH:mm' }` schedules (default 'UTC'). */
  timezone?: string;
  options?: MaintenanceOptions;
}

export interface Maintenance {
  /** Every job: schedule, enabled, paused, running, next run, last run, duration, outcome, result, error, last skip. */
  list(): JobStatus[];
  /** One job's status; NotFoundError for an unknown name. */
  get(name: string): JobStatus;
  /** Stops scheduling the job (a run in progress finishes). NotFoundError for an unknown name. */
  pause(name: string): JobStatus;
  /** Schedules it again from now (missed runs are not made up). ConflictError when disabled by configuration. */
  resume(name: string): JobStatus;
  /** Runs it now, outside its schedule, and returns the run; ConflictError when it is already running. */
  runNow(name: string): Promise<JobRun>;
  /** Latest `limit` (1..1000, default 10) performance reports, newest first. */
  reports(limit?: number): Promise<PerformanceReport[]>;
  /** Starts the single timer (unref'd). */
  start(): void;
  /** Stops the timer, asks running jobs to stop and waits for them (bounded); the pool stays open. */
  stop(timeoutMs?: number): Promise<{ unfinished: string[] }>;
  /** stop(), then closes the maintenance pool. Idempotent; afterwards calls fail with ENGINE_CLOSED. */
  close(): Promise<void>;
  /** Starts the jobs due at `now` (default: the clock) without waiting for them; for tests and tools. */
  tick(now?: DateTime): TickReport;
  /** The maintenance pool. */
  readonly db: Sequelize;
}

/** The maintenance pool: max 2, min 0, application_name fairsend-maintenance, bounded statements and lock waits. */
export function createMaintenancePool(url: string, o: { statementTimeoutMs: number; lockTimeoutMs: number }, logger?: Logger): Sequelize {
  return new Sequelize(url, {
    dialect: 'postgres',
    pool: { ...MAINTENANCE_POOL },
    logging: logger ? (sql: string) => logger.trace({ sql, pool: APP_NAME_MAINTENANCE }) : false,
    dialectOptions: {
      application_name: APP_NAME_MAINTENANCE,
      statement_timeout: o.statementTimeoutMs,
      lock_timeout: o.lockTimeoutMs,
      // Its own sessions never sit in a transaction: a bug here cannot hold locks for long either.
      idle_in_transaction_session_timeout: 60_000,
    },
  });
}

export function createMaintenance(deps: MaintenanceDeps): Maintenance {
  const timezone = deps.timezone ?? 'UTC';
  const issues: FieldIssue[] = [];
  if (typeof deps.databaseUrl !== 'string' || !/^postgres(ql)?:\/\//.test(deps.databaseUrl)) {
    issues.push({ path: 'databaseUrl', message: 'must be a postgres:// or postgresql:// URL' });
  }
  if (!isValidZone(timezone)) issues.push({ path: 'timezone', message: `must be an IANA time zone, got ${JSON.stringify(timezone)}` });
  if (issues.length) throw new ValidationError(issues);
  const o = resolveMaintenanceOptions(deps.options);
  const clock = deps.clock ?? systemClock;
  const db = createMaintenancePool(deps.databaseUrl, o, deps.logger);

  // The scheduler's prepared statements' pool, when one is attached to it (the engine's is).
  const prepared = deps.schedulerDb && preparedPoolOf(deps.schedulerDb);
  const pools = (): NamedPool[] => [
    ...(deps.apiDb ? [{ name: 'api', applicationName: APP_NAME_API, db: deps.apiDb }] : []),
    ...(deps.schedulerDb ? [{ name: 'scheduler', applicationName: APP_NAME_SCHEDULER, db: deps.schedulerDb }] : []),
    ...(prepared && prepared !== deps.schedulerDb ? [{ name: 'prepared', applicationName: APP_NAME_PREPARED, db: prepared }] : []),
    { name: 'maintenance', applicationName: APP_NAME_MAINTENANCE, db },
  ];
  const definitions: Record<JobName, Omit<JobDefinition, 'schedule'>> = {
    db_health_check: dbHealthCheck(o),
    monitor_connection_pool: monitorConnectionPool(pools, o),
    cleanup_connection_pool: cleanupConnectionPool(o),
    check_slow_queries: checkSlowQueries(o),
    analyze_tables: analyzeTables(o),
    index_report: indexReport(o),
    cleanup_old_data: cleanupOldData(o),
    check_table_bloat: checkTableBloat(o),
    performance_report: performanceReport(pools),
  };
  let runner: JobRunner;
  try {
    runner = createJobRunner({
      jobs: JOB_NAMES.map((name) => ({ ...definitions[name], schedule: o.schedules[name], disabled: o.disabled.includes(name) })),
      db,
      logger: deps.logger,
      clock,
      timezone,
      misfireGraceMs: o.misfireGraceMs,
      maxSleepMs: o.maxSleepMs,
      stopTimeoutMs: o.stopTimeoutMs,
    });
  } catch (err) {
    void db.close();
    throw err;
  }

  let closed: Promise<void> | undefined;
  const open = () => {
    if (closed) throw new FairsendError(ErrorCodes.ENGINE_CLOSED, 'maintenance jobs are closed');
  };
  return {
    list: () => runner.list(),
    get: (name) => runner.status(name),
    pause: (name) => runner.pause(name),
    resume: (name) => runner.resume(name),
    async runNow(name) {
      open();
      return runner.runNow(name);
    },
    async reports(limit) {
      open();
      return readReports(db, limit);
    },
    start() {
      open();
      runner.start();
    },
    stop: (timeoutMs) => runner.stop(timeoutMs),
    close: () =>
      (closed ??= (async () => {
        await runner.stop();
        await db.close();
      })()),
    tick(now) {
      open();
      return runner.tick(now);
    },
    db,
  };
}
