/**
 * An in-process job runner: a registry of named jobs and ONE timer for all of them.
 *
 * Each job is in one of these states, and moves as shown:
 *
 *   disabled (by configuration): never scheduled; listed, and runNow still runs it.
 *   paused  --resume-->  idle (planned for nextRunAt)          idle  --pause-->  paused
 *   idle    --tick at/after nextRunAt, within the grace-->   running --finished--> idle
 *   idle    --tick later than nextRunAt + grace-->           idle (skip 'misfire' recorded)
 *   running --tick at/after nextRunAt-->                     running (skip 'overlap' recorded)
 *
 * Whatever happens at a due tick, nextRunAt moves to the first planned run after the tick, so a stale
 * run is never replayed and several missed runs cost one skip record, not a burst of runs. A job is
 * never started while it is running: the tick skips it, runNow refuses with a ConflictError.
 *
 * The timer sleeps until the earliest nextRunAt, at most `maxSleepMs` (so a clock change or a long
 * suspend is noticed within that bound), and is unref'd: it never keeps the process alive. Tests do
 * not start it: they call `tick(now)` with their own instants.
 *
 * Singleton jobs (about the whole database, not this process: ANALYZE, the purge, the reports) are
 * claimed per planned run in `maintenance_runs` (one INSERT ... ON CONFLICT DO NOTHING), so with
 * several fairsend processes each planned run happens once; the others record a skip 'claimed'.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { DateTime } from 'luxon';
import { QueryTypes, type Sequelize } from 'sequelize';
import { ConflictError, NotFoundError, ValidationError, type FieldIssue } from '../kernel/errors.js';
import { componentLogger, type Logger } from '../kernel/logger.js';
import type { Clock } from '../context.js';
import { isValidZone } from '../quota-day.js';
import { describeSchedule, nextRun, parseSchedule, type ParsedSchedule, type Schedule } from './schedule.js';

/** How bad a job's findings are; picks the log level (info, warn, error). */
export type Level = 'ok' | 'warning' | 'critical';

/** Every job returns a structured result; it is stored as the job's last result and logged. */
export interface JobResult {
  level: Level;
}

export interface JobContext {
  /** The maintenance pool (max 2 connections, application_name fairsend-maintenance). */
  db: Sequelize;
  /** The instant this run started, from the runner's clock, in the runner's time zone. */
  now: DateTime;
  logger: Logger;
  /** Aborted when the runner stops: long jobs check it between their short statements and return early. */
  signal: AbortSignal;
}

export interface JobDefinition<R extends JobResult = JobResult> {
  name: string;
  /** One line for people (listings, the CLI). */
  description?: string;
  schedule: Schedule;
  run(ctx: JobContext): Promise<R>;
  /** A planned run found later than this is skipped (default: the runner's `misfireGraceMs`). */
  misfireGraceMs?: number;
  /** At most one process of the deployment runs each planned run (claimed in maintenance_runs). */
  singleton?: boolean;
  /** Not scheduled; still listed, and runNow still runs it. */
  disabled?: boolean;
}

export type SkipReason = 'misfire' | 'overlap' | 'claimed';

export interface JobSkip {
  reason: SkipReason;
  /** The planned run that did not happen. */
  scheduledFor: Date;
  /** When the runner noticed (the tick's instant). */
  at: Date;
}

export interface JobRun {
  name: string;
  trigger: 'schedule' | 'manual';
  /** The planned run this was (null for runNow). */
  scheduledFor: Date | null;
  startedAt: Date;
  durationMs: number;
  outcome: 'success' | 'failure';
  result: JobResult | null;
  error: string | null;
}

export interface JobStatus {
  name: string;
  description: string;
  /** For people: 'every 3m', 'daily at 02:00 (UTC)', 'weekly on Sunday at 03:00 (Europe/Paris)'. */
  schedule: string;
  /** False when turned off by configuration. */
  enabled: boolean;
  paused: boolean;
  running: boolean;
  /** Null when disabled or paused. */
  nextRunAt: Date | null;
  lastRunAt: Date | null;
  lastDurationMs: number | null;
  lastOutcome: 'success' | 'failure' | null;
  lastResult: JobResult | null;
  lastError: string | null;
  lastSkip: JobSkip | null;
  runs: number;
  failures: number;
  skips: number;
}

export interface TickReport {
  /** Jobs started by this tick. */
  started: string[];
  /** Planned runs skipped by this tick (misfire or overlap). */
  skipped: Array<{ name: string; reason: SkipReason; scheduledFor: Date }>;
  /** Settles when the runs started by this tick have finished (runs claimed elsewhere are left out). */
  done: Promise<JobRun[]>;
}

export interface JobRunnerOptions {
  jobs: readonly JobDefinition[];
  /** The pool handed to jobs, and where singleton runs are claimed. */
  db: Sequelize;
  logger: Logger;
  clock: Clock;
  /** IANA zone in which `{ at }` schedules are read. */
  timezone: string;
  /** A planned run found later than this is skipped and recorded. */
  misfireGraceMs: number;
  /** Longest the timer sleeps before looking again. */
  maxSleepMs: number;
  /** How long stop() waits for running jobs. */
  stopTimeoutMs: number;
  /** Names this process in maintenance_runs (default host:pid:random). */
  instanceId?: string;
}

export interface JobRunner {
  list(): JobStatus[];
  status(name: string): JobStatus;
  pause(name: string): JobStatus;
  resume(name: string): JobStatus;
  /** Runs the job now, outside its schedule; ConflictError when it is already running. */
  runNow(name: string): Promise<JobRun>;
  /** Starts the due jobs at `now` (default: the clock). Never waits for them. */
  tick(now?: DateTime): TickReport;
  /** Arms the timer (planned runs counted from now). */
  start(): void;
  /** Clears the timer, asks running jobs to stop, waits for them at most `timeoutMs`; lists those still running. */
  stop(timeoutMs?: number): Promise<{ unfinished: string[] }>;
  readonly started: boolean;
}

interface JobState {
  def: JobDefinition;
  schedule: ParsedSchedule;
  graceMs: number;
  paused: boolean;
  nextRunAt: number | null;
  running: { promise: Promise<JobRun | null>; controller: AbortController } | null;
  lastRunAt: number | null;
  lastDurationMs: number | null;
  lastOutcome: 'success' | 'failure' | null;
  lastResult: JobResult | null;
  lastError: string | null;
  lastSkip: JobSkip | null;
  runs: number;
  failures: number;
  skips: number;
}

const JOB_NAME = /^[a-z][a-z0-9_]{0,62}$/;
const LOG_METHOD = { ok: 'info', warning: 'warn', critical: 'error' } as const;
const HOUR_MS = 3_600_000;

export function createJobRunner(opts: JobRunnerOptions): JobRunner {
  const issues: FieldIssue[] = [];
  if (!isValidZone(opts.timezone))
    issues.push({ path: 'timezone', message: `must be an IANA time zone, got ${JSON.stringify(opts.timezone)}` });
  const jobs = new Map<string, JobState>();
  opts.jobs.forEach((def, i) => {
    if (!JOB_NAME.test(def.name))
      issues.push({ path: `jobs.${i}.name`, message: `must match ${JOB_NAME}, got ${JSON.stringify(def.name)}` });
    else if (jobs.has(def.name)) issues.push({ path: `jobs.${i}.name`, message: `duplicate job ${def.name}` });
    const parsed = parseSchedule(def.schedule);
    if ('issues' in parsed) {
      for (const issue of parsed.issues)
        issues.push({ path: `${def.name}.schedule${issue.path ? `.${issue.path}` : ''}`, message: issue.message });
      return;
    }
    jobs.set(def.name, {
      def,
      schedule: parsed.schedule,
      graceMs: def.misfireGraceMs ?? opts.misfireGraceMs,
      paused: false,
      nextRunAt: null,
      running: null,
      lastRunAt: null,
      lastDurationMs: null,
      lastOutcome: null,
      lastResult: null,
      lastError: null,
      lastSkip: null,
      runs: 0,
      failures: 0,
      skips: 0,
    });
  });
  if (issues.length) throw new ValidationError(issues);

  const { db, clock, timezone } = opts;
  const logger = componentLogger(opts.logger, 'maintenance');
  const instanceId = opts.instanceId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  let timer: NodeJS.Timeout | undefined;
  let started = false;

  const scheduled = (s: JobState) => !s.def.disabled && !s.paused;
  const plan = (s: JobState, fromMs: number) => {
    s.nextRunAt = scheduled(s) ? nextRun(s.schedule, timezone, fromMs) : null;
  };
  const at = (ms: number | null) => (ms === null ? null : new Date(ms));
  for (const s of jobs.values()) plan(s, clock().toMillis());

  function get(name: string): JobState {
    const s = typeof name === 'string' ? jobs.get(name) : undefined;
    if (!s) throw new NotFoundError('job', name);
    return s;
  }

  function statusOf(s: JobState): JobStatus {
    return {
      name: s.def.name,
      description: s.def.description ?? '',
      schedule: describeSchedule(s.schedule, timezone),
      enabled: !s.def.disabled,
      paused: s.paused,
      running: s.running !== null,
      nextRunAt: at(s.nextRunAt),
      lastRunAt: at(s.lastRunAt),
      lastDurationMs: s.lastDurationMs,
      lastOutcome: s.lastOutcome,
      lastResult: s.lastResult,
      lastError: s.lastError,
      lastSkip: s.lastSkip,
      runs: s.runs,
      failures: s.failures,
      skips: s.skips,
    };
  }

  function recordSkip(s: JobState, reason: SkipReason, scheduledFor: number, nowMs: number): void {
    s.lastSkip = { reason, scheduledFor: new Date(scheduledFor), at: new Date(nowMs) };
    s.skips++;
    const log = { job: s.def.name, reason, scheduledFor: new Date(scheduledFor), lateMs: nowMs - scheduledFor };
    if (reason === 'claimed') logger.debug(log, 'maintenance run skipped: another process claimed it');
    else logger.warn(log, `maintenance run skipped (${reason})`);
  }

  /** One INSERT: true when this process owns the planned run. */
  async function claim(name: string, scheduledFor: number): Promise<boolean> {
    const rows = await db.query(
      `INSERT INTO maintenance_runs (job, scheduled_for, claimed_by) VALUES ($job, $at, $by)
       ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING job`,
      { bind: { job: name, at: new Date(scheduledFor), by: instanceId }, type: QueryTypes.SELECT },
    );
    return rows.length === 1;
  }

  async function finishClaim(run: JobRun): Promise<void> {
    try {
      await db.query(
        `UPDATE maintenance_runs SET finished_at = $finished, outcome = $outcome, duration_ms = $ms, error = $error
          WHERE job = $job AND scheduled_for = $at AND claimed_by = $by`,
        {
          bind: {
            finished: new Date(run.startedAt.getTime() + run.durationMs),
            outcome: run.outcome,
            ms: Math.round(run.durationMs),
            error: run.error,
            job: run.name,
            at: run.scheduledFor,
            by: instanceId,
          },
        },
      );
    } catch (err) {
      logger.warn({ job: run.name, err }, 'could not record the outcome of a maintenance run');
    }
  }

  /** Marks the job running synchronously (so nothing can start it twice), then runs it. */
  function launch(s: JobState, trigger: JobRun['trigger'], scheduledFor: number | null, now: DateTime): Promise<JobRun | null> {
    const controller = new AbortController();
    const promise = execute(s, trigger, scheduledFor, now, controller.signal).finally(() => {
      s.running = null;
      if (started) arm();
    });
    s.running = { promise, controller };
    return promise;
  }

  async function execute(
    s: JobState,
    trigger: JobRun['trigger'],
    scheduledFor: number | null,
    now: DateTime,
    signal: AbortSignal,
  ): Promise<JobRun | null> {
    const name = s.def.name;
    const jobLogger = logger.child({ job: name });
    const t0 = performance.now();
    let result: JobResult | null;
    let error: string | null = null;
    let failure: unknown;
    try {
      if (trigger === 'schedule' && s.def.singleton && scheduledFor !== null && !(await claim(name, scheduledFor))) {
        recordSkip(s, 'claimed', scheduledFor, now.toMillis());
        return null;
      }
      result = await s.def.run({ db, now: now.setZone(timezone), logger: jobLogger, signal });
      if (typeof result !== 'object' || result === null || !(result.level in LOG_METHOD)) {
        throw new Error(`job ${name} returned ${JSON.stringify(result)}: expected an object with level ok, warning or critical`);
      }
    } catch (err) {
      failure = err;
      result = null;
      error = err instanceof Error ? err.message : String(err);
    }
    const run: JobRun = {
      name,
      trigger,
      scheduledFor: at(scheduledFor),
      startedAt: now.toJSDate(),
      durationMs: Math.round((performance.now() - t0) * 10) / 10,
      outcome: error === null ? 'success' : 'failure',
      result,
      error,
    };
    s.runs++;
    s.lastRunAt = now.toMillis();
    s.lastDurationMs = run.durationMs;
    s.lastOutcome = run.outcome;
    s.lastResult = result;
    s.lastError = error;
    if (error !== null) {
      s.failures++;
      jobLogger.error({ err: failure, durationMs: run.durationMs, trigger }, `maintenance job ${name} failed: ${error}`);
    } else {
      // A clean result of a frequent job (hundreds a day) is a debug line; anything else is worth reading.
      const routine = result!.level === 'ok' && s.schedule.kind === 'interval' && s.schedule.everyMs < HOUR_MS;
      const method = routine ? 'debug' : LOG_METHOD[result!.level];
      jobLogger[method]({ result, durationMs: run.durationMs, trigger }, `maintenance job ${name}: ${result!.level}`);
    }
    if (trigger === 'schedule' && s.def.singleton && scheduledFor !== null) await finishClaim(run);
    return run;
  }

  function tick(now: DateTime = clock()): TickReport {
    const nowMs = now.toMillis();
    const report: TickReport = { started: [], skipped: [], done: Promise.resolve([]) };
    const runs: Promise<JobRun | null>[] = [];
    for (const s of jobs.values()) {
      if (!scheduled(s) || s.nextRunAt === null || s.nextRunAt > nowMs) continue;
      const due = s.nextRunAt;
      s.nextRunAt = nextRun(s.schedule, timezone, nowMs, due);
      if (s.running) {
        recordSkip(s, 'overlap', due, nowMs);
        report.skipped.push({ name: s.def.name, reason: 'overlap', scheduledFor: new Date(due) });
      } else if (nowMs - due > s.graceMs) {
        recordSkip(s, 'misfire', due, nowMs);
        report.skipped.push({ name: s.def.name, reason: 'misfire', scheduledFor: new Date(due) });
      } else {
        report.started.push(s.def.name);
        runs.push(launch(s, 'schedule', due, now));
      }
    }
    report.done = Promise.all(runs).then((r) => r.filter((x): x is JobRun => x !== null));
    return report;
  }

  function arm(): void {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (!started) return;
    let earliest = Infinity;
    for (const s of jobs.values()) if (scheduled(s) && s.nextRunAt !== null) earliest = Math.min(earliest, s.nextRunAt);
    const delay = Math.min(Math.max(earliest - clock().toMillis(), 0), opts.maxSleepMs);
    timer = setTimeout(onTimer, delay);
    timer.unref();
  }

  function onTimer(): void {
    timer = undefined;
    try {
      tick(clock());
    } catch (err) {
      // A broken tick must not end the schedule: report it and look again at the next wake-up.
      logger.error({ err }, 'maintenance tick failed');
    }
    arm();
  }

  return {
    list: () => [...jobs.values()].map(statusOf),
    status: (name) => statusOf(get(name)),
    pause(name) {
      const s = get(name);
      s.paused = true;
      s.nextRunAt = null;
      logger.info({ job: name }, 'maintenance job paused');
      arm();
      return statusOf(s);
    },
    resume(name) {
      const s = get(name);
      if (s.def.disabled) throw new ConflictError(`job ${name} is disabled by configuration; it can only be run now`);
      if (s.paused) {
        s.paused = false;
        // Runs missed while paused are not made up: the next one is planned from now.
        plan(s, clock().toMillis());
        logger.info({ job: name, nextRunAt: at(s.nextRunAt) }, 'maintenance job resumed');
        arm();
      }
      return statusOf(s);
    },
    async runNow(name) {
      const s = get(name);
      if (s.running) throw new ConflictError(`job ${name} is already running`);
      return (await launch(s, 'manual', null, clock()))!;
    },
    tick,
    start() {
      if (started) return;
      started = true;
      // Nothing was missed while the runner was not running: plan every job from now.
      const nowMs = clock().toMillis();
      for (const s of jobs.values()) plan(s, nowMs);
      logger.info({ jobs: [...jobs.values()].filter(scheduled).map((s) => s.def.name) }, 'maintenance jobs started');
      arm();
    },
    async stop(timeoutMs = opts.stopTimeoutMs) {
      started = false;
      arm();
      const running = [...jobs.values()].filter((s) => s.running);
      for (const s of running) s.running!.controller.abort();
      if (running.length) {
        let timeout: NodeJS.Timeout | undefined;
        const expired = new Promise<void>((resolve) => {
          timeout = setTimeout(resolve, timeoutMs);
          timeout.unref();
        });
        await Promise.race([Promise.allSettled(running.map((s) => s.running?.promise)), expired]);
        clearTimeout(timeout);
      }
      const unfinished = [...jobs.values()].filter((s) => s.running).map((s) => s.def.name);
      if (unfinished.length) logger.warn({ unfinished, timeoutMs }, 'maintenance jobs still running after stop timeout');
      return { unfinished };
    },
    get started() {
      return started;
    },
  };
}
