/**
 * The maintenance jobs' names, default schedules and every tunable with its default, in one place,
 * validated at construction (a bad option throws a ValidationError naming it).
 */
import { ValidationError, type FieldIssue } from '../kernel/errors.js';
import { parseSchedule, type Schedule } from './schedule.js';

export const JOB_NAMES = [
  'db_health_check',
  'monitor_connection_pool',
  'cleanup_connection_pool',
  'check_slow_queries',
  'analyze_tables',
  'index_report',
  'cleanup_old_data',
  'check_table_bloat',
  'performance_report',
] as const;
export type JobName = (typeof JOB_NAMES)[number];

/** Each job is on by default with this schedule; `{ at }` times are local to the maintenance time zone. */
export const DEFAULT_SCHEDULES = {
  db_health_check: { every: '3m' },
  monitor_connection_pool: { every: '5m' },
  cleanup_connection_pool: { every: '10m' },
  check_slow_queries: { every: '15m' },
  analyze_tables: { at: '02:00' },
  index_report: { at: '03:00', weekday: 7 },
  cleanup_old_data: { at: '04:00' },
  check_table_bloat: { at: '05:00', weekday: 1 },
  performance_report: { at: '08:00' },
} as const satisfies Record<JobName, Schedule>;

export interface MaintenanceOptions {
  /** Jobs that are not scheduled (still listed; runNow still runs them). Default: none. */
  disabled?: readonly JobName[];
  /** Schedules replacing the defaults above, per job. */
  schedules?: Partial<Record<JobName, Schedule>>;
  /** A planned run found later than this (process suspended, event loop blocked) is skipped and recorded. Default 60 s. */
  misfireGraceMs?: number;
  /** Longest the single timer sleeps before looking at the clock again. Default 60 s. */
  maxSleepMs?: number;
  /** How long stop() waits for running jobs. Default 10 s. */
  stopTimeoutMs?: number;
  /** statement_timeout of the maintenance pool's sessions. Default 5 min. */
  statementTimeoutMs?: number;
  /** lock_timeout of the maintenance pool's sessions: housekeeping gives way rather than queue behind the application. Default 10 s. */
  lockTimeoutMs?: number;
  /** Pool usage above this percentage of its max is a warning. Default 60. */
  poolWarnPct?: number;
  /** Pool usage above this percentage of its max is critical. Default 80. */
  poolCriticalPct?: number;
  /** A fairsend session active or idle in a transaction for longer than this is reported as a suspected leak. Default 2 min. */
  leakThresholdMs?: number;
  /** cleanup_connection_pool ends fairsend's own sessions idle in a transaction for longer than this. Default 60 s. */
  idleInTransactionMs?: number;
  /** check_slow_queries reports queries running longer than this. Default 5 s. */
  slowQueryMs?: number;
  /** db_health_check warns when `SELECT 1` takes longer than this. Default 1 s. */
  healthLatencyWarnMs?: number;
  /** Tables analyze_tables runs ANALYZE on. Default: the hot ones. */
  analyzeTables?: readonly string[];
  /** cleanup_old_data removes what finished or was last seen longer ago than this. Default 90 days. */
  retentionDays?: number;
  /** Rows per DELETE statement of cleanup_old_data. Default 1000. */
  batchSize?: number;
  /** check_table_bloat warns above this dead-tuple ratio. Default 0.2. */
  bloatWarnRatio?: number;
  /** ... for tables of at least this many live + dead tuples (a 3-row table with 1 dead row is not bloated). Default 1000. */
  bloatMinRows?: number;
  /** index_report names tables of at least this many live rows... Default 10,000. */
  indexMinRows?: number;
  /** ...read by at least this many sequential scans, more than by index scans, as missing-index candidates. Default 100. */
  indexMinSeqScans?: number;
}

export type ResolvedMaintenanceOptions = Required<Omit<MaintenanceOptions, 'schedules'>> & { schedules: Record<JobName, Schedule> };

export const MAINTENANCE_DEFAULTS = {
  disabled: [],
  schedules: DEFAULT_SCHEDULES,
  misfireGraceMs: 60_000,
  maxSleepMs: 60_000,
  stopTimeoutMs: 10_000,
  statementTimeoutMs: 300_000,
  lockTimeoutMs: 10_000,
  poolWarnPct: 60,
  poolCriticalPct: 80,
  leakThresholdMs: 120_000,
  idleInTransactionMs: 60_000,
  slowQueryMs: 5_000,
  healthLatencyWarnMs: 1_000,
  analyzeTables: ['subtasks', 'tasks', 'contacts', 'email_services'],
  retentionDays: 90,
  batchSize: 1000,
  bloatWarnRatio: 0.2,
  bloatMinRows: 1000,
  indexMinRows: 10_000,
  indexMinSeqScans: 100,
} as const satisfies ResolvedMaintenanceOptions;

const TABLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
type NumericKey = {
  [K in keyof ResolvedMaintenanceOptions]: ResolvedMaintenanceOptions[K] extends number ? K : never;
}[keyof ResolvedMaintenanceOptions];
/** Smallest allowed value of each numeric option (and whether it must be an integer). */
const NUMERIC: Record<NumericKey, { min: number; max?: number; int: boolean }> = {
  misfireGraceMs: { min: 0, int: true },
  maxSleepMs: { min: 10, int: true },
  stopTimeoutMs: { min: 0, int: true },
  statementTimeoutMs: { min: 0, int: true },
  lockTimeoutMs: { min: 0, int: true },
  poolWarnPct: { min: 0, max: 100, int: false },
  poolCriticalPct: { min: 0, max: 100, int: false },
  leakThresholdMs: { min: 0, int: true },
  idleInTransactionMs: { min: 0, int: true },
  slowQueryMs: { min: 0, int: true },
  healthLatencyWarnMs: { min: 0, int: true },
  retentionDays: { min: 1, int: false },
  batchSize: { min: 1, max: 100_000, int: true },
  bloatWarnRatio: { min: 0, max: 1, int: false },
  bloatMinRows: { min: 0, int: true },
  indexMinRows: { min: 0, int: true },
  indexMinSeqScans: { min: 0, int: true },
};

/** The options with defaults filled in; a ValidationError naming every bad option (paths `options.x`). */
export function resolveMaintenanceOptions(given: MaintenanceOptions = {}): ResolvedMaintenanceOptions {
  const issues: FieldIssue[] = [];
  const o = given as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(key in MAINTENANCE_DEFAULTS)) issues.push({ path: `options.${key}`, message: 'unknown option' });
  }
  const out = { ...MAINTENANCE_DEFAULTS, schedules: { ...DEFAULT_SCHEDULES } } as ResolvedMaintenanceOptions;
  for (const [key, rule] of Object.entries(NUMERIC) as [NumericKey, (typeof NUMERIC)[NumericKey]][]) {
    const v = o[key];
    if (v === undefined) continue;
    if (
      typeof v !== 'number' ||
      !Number.isFinite(v) ||
      v < rule.min ||
      (rule.max !== undefined && v > rule.max) ||
      (rule.int && !Number.isInteger(v))
    ) {
      const range = rule.max !== undefined ? `from ${rule.min} to ${rule.max}` : `>= ${rule.min}`;
      issues.push({
        path: `options.${key}`,
        message: `must be ${rule.int ? 'an integer' : 'a number'} ${range}, got ${JSON.stringify(v)}`,
      });
    } else {
      out[key] = v;
    }
  }
  if (out.poolWarnPct > out.poolCriticalPct) issues.push({ path: 'options.poolWarnPct', message: 'must not exceed poolCriticalPct' });

  if (given.disabled !== undefined) {
    if (!Array.isArray(given.disabled)) issues.push({ path: 'options.disabled', message: 'must be an array of job names' });
    else {
      given.disabled.forEach((name, i) => {
        if (!JOB_NAMES.includes(name))
          issues.push({ path: `options.disabled.${i}`, message: `unknown job ${JSON.stringify(name)}; jobs: ${JOB_NAMES.join(', ')}` });
      });
      out.disabled = [...given.disabled];
    }
  }
  if (given.schedules !== undefined) {
    if (typeof given.schedules !== 'object' || given.schedules === null)
      issues.push({ path: 'options.schedules', message: 'must be an object' });
    else {
      for (const [name, schedule] of Object.entries(given.schedules)) {
        if (!JOB_NAMES.includes(name as JobName)) {
          issues.push({ path: `options.schedules.${name}`, message: `unknown job; jobs: ${JOB_NAMES.join(', ')}` });
          continue;
        }
        const parsed = parseSchedule(schedule);
        if ('issues' in parsed) {
          for (const i of parsed.issues)
            issues.push({ path: `options.schedules.${name}${i.path ? `.${i.path}` : ''}`, message: i.message });
        } else out.schedules[name as JobName] = schedule as Schedule;
      }
    }
  }
  if (given.analyzeTables !== undefined) {
    if (!Array.isArray(given.analyzeTables)) issues.push({ path: 'options.analyzeTables', message: 'must be an array of table names' });
    else {
      given.analyzeTables.forEach((t, i) => {
        if (typeof t !== 'string' || !TABLE_NAME.test(t)) {
          issues.push({ path: `options.analyzeTables.${i}`, message: `must be a lower-case table name, got ${JSON.stringify(t)}` });
        }
      });
      out.analyzeTables = [...given.analyzeTables];
    }
  }
  if (issues.length) throw new ValidationError(issues);
  return out;
}
