/**
 * The job runner: schedules at the right local times (across DST), intervals, weekly jobs, misfire
 * grace, no overlap, pause/resume/run-now, and one unref'd timer for all jobs. Time is driven by
 * tick(now) and an injected clock (or jest's fake timers for the timer itself); nothing sleeps.
 */
import { jest } from '@jest/globals';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { DateTime } from 'luxon';
import type { Sequelize } from 'sequelize';
import { createLogger } from '../services/kernel/logger.js';
import { ConflictError, NotFoundError, ValidationError } from '../services/kernel/errors.js';
import { createJobRunner, type JobDefinition, type JobResult, type JobRunnerOptions } from '../services/maintenance/job-runner.js';
import { nextRun, parseSchedule, type ParsedSchedule, type Schedule } from '../services/maintenance/schedule.js';
import { createTestDatabase, plainSequelize, rows, silentLogger } from './helpers/db.js';

let db: Sequelize;
beforeAll(async () => {
  db = plainSequelize(await createTestDatabase());
});
afterAll(() => db.close());

const PARIS = 'Europe/Paris';
const ok = async (): Promise<JobResult> => ({ level: 'ok' });

function runnerAt(start: string, jobs: JobDefinition[], extra: Partial<JobRunnerOptions> = {}) {
  let nowMs = DateTime.fromISO(start, { setZone: true }).toMillis();
  const runner = createJobRunner({
    jobs,
    db,
    logger: silentLogger,
    clock: () => DateTime.fromMillis(nowMs),
    timezone: extra.timezone ?? PARIS,
    misfireGraceMs: 60_000,
    maxSleepMs: 60_000,
    stopTimeoutMs: 1_000,
    ...extra,
  });
  return { runner, setNow: (iso: string) => (nowMs = DateTime.fromISO(iso, { setZone: true }).toMillis()) };
}

/** Ticks every `stepMs` from `from` to `to` (inclusive), waiting for each tick's runs; returns the local start times of `name`. */
async function simulate(runner: ReturnType<typeof createJobRunner>, name: string, from: string, to: string, stepMs: number, zone = PARIS) {
  const starts: string[] = [];
  const end = DateTime.fromISO(to, { setZone: true }).toMillis();
  for (let t = DateTime.fromISO(from, { setZone: true }).toMillis(); t <= end; t += stepMs) {
    const report = runner.tick(DateTime.fromMillis(t));
    if (report.started.includes(name)) starts.push(DateTime.fromMillis(t, { zone }).toISO({ suppressMilliseconds: true })!);
    await report.done;
  }
  return starts;
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const MINUTE = 60_000;

describe('schedules in local time', () => {
  it('a daily 02:30 job in Europe/Paris runs at 03:00 on the spring-forward day (2026-03-29)', async () => {
    const { runner } = runnerAt('2026-03-28T00:00:00+01:00', [{ name: 'nightly', schedule: { at: '02:30' }, run: ok }]);
    expect(runner.status('nightly').nextRunAt).toEqual(new Date('2026-03-28T01:30:00Z'));
    const starts = await simulate(runner, 'nightly', '2026-03-28T00:00:00+01:00', '2026-03-31T00:00:00+02:00', MINUTE);
    expect(starts).toEqual(['2026-03-28T02:30:00+01:00', '2026-03-29T03:00:00+02:00', '2026-03-30T02:30:00+02:00']);
  });

  it('runs the same job once on the fall-back day (2026-10-25), when 02:30 happens twice', async () => {
    const { runner } = runnerAt('2026-10-24T00:00:00+02:00', [{ name: 'nightly', schedule: { at: '02:30' }, run: ok }]);
    const starts = await simulate(runner, 'nightly', '2026-10-24T00:00:00+02:00', '2026-10-27T00:00:00+01:00', MINUTE);
    expect(starts).toEqual(['2026-10-24T02:30:00+02:00', '2026-10-25T02:30:00+02:00', '2026-10-26T02:30:00+01:00']);
  });

  it('weekly jobs run on their ISO weekday only, at the local time, across the DST change', async () => {
    const { runner } = runnerAt('2026-03-20T00:00:00+01:00', [{ name: 'sunday', schedule: { at: '03:00', weekday: 7 }, run: ok }]);
    const starts = await simulate(runner, 'sunday', '2026-03-20T00:00:00+01:00', '2026-04-13T00:00:00+02:00', 5 * MINUTE);
    expect(starts).toEqual([
      '2026-03-22T03:00:00+01:00',
      '2026-03-29T03:00:00+02:00',
      '2026-04-05T03:00:00+02:00',
      '2026-04-12T03:00:00+02:00',
    ]);
    for (const s of starts) expect(DateTime.fromISO(s, { setZone: true }).weekday).toBe(7);
  });

  it('intervals repeat on their cadence (string and millisecond forms)', async () => {
    const { runner } = runnerAt('2026-06-01T10:00:00Z', [
      { name: 'three', schedule: { every: '3m' }, run: ok },
      { name: 'ms', schedule: { every: 4 * MINUTE }, run: ok },
    ]);
    const starts = await simulate(runner, 'three', '2026-06-01T10:00:00Z', '2026-06-01T10:15:00Z', 30_000, 'UTC');
    expect(starts).toEqual(['10:03', '10:06', '10:09', '10:12', '10:15'].map((t) => `2026-06-01T${t}:00Z`));
    expect(runner.status('ms').runs).toBe(3);
    expect(runner.status('three').nextRunAt).toEqual(new Date('2026-06-01T10:18:00Z'));
  });

  it('every daily run instant is one per local day, at the wall time or, when it does not exist, at the end of the gap (property)', () => {
    const zones = ['Europe/Paris', 'America/New_York', 'America/Santiago', 'Australia/Lord_Howe', 'Asia/Tokyo', 'America/Havana'];
    fc.assert(
      fc.property(
        fc.constantFrom(...zones),
        fc.integer({ min: Date.UTC(2025, 0, 1), max: Date.UTC(2027, 0, 1) }),
        fc.integer({ min: 0, max: 23 }),
        fc.integer({ min: 0, max: 59 }),
        (zone, start, hh, mm) => {
          const at = `${String(hh).padStart(2, '0')}:${String(mm).padStart(2, '0')}`;
          const parsed = parseSchedule({ at });
          if (!('schedule' in parsed)) throw new Error('bad schedule');
          const s: ParsedSchedule = parsed.schedule;
          let prev = start;
          let prevDay: DateTime | undefined;
          for (let i = 0; i < 10; i++) {
            const t = nextRun(s, zone, prev);
            expect(t).toBeGreaterThan(prev);
            const local = DateTime.fromMillis(t, { zone });
            if (local.toFormat('HH:mm') !== at) {
              // The wall time was skipped: the run is at a transition (the offset changes at that instant).
              expect(DateTime.fromMillis(t - 1, { zone }).offset).not.toBe(local.offset);
            }
            const day = local.startOf('day');
            if (prevDay) expect(day.diff(prevDay, 'days').days).toBeCloseTo(1, 0);
            prevDay = day;
            prev = t;
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('misfire grace', () => {
  it('skips a run found later than the grace, records it, and plans the next one', async () => {
    const { runner } = runnerAt('2026-06-01T10:00:00Z', [{ name: 'job', schedule: { every: '1m' }, run: ok }], { misfireGraceMs: 30_000 });
    // The event loop was blocked for 91 s: the 10:01 run is 31 s stale.
    const late = runner.tick(DateTime.fromISO('2026-06-01T10:01:31Z'));
    expect(late.started).toEqual([]);
    expect(late.skipped).toEqual([{ name: 'job', reason: 'misfire', scheduledFor: new Date('2026-06-01T10:01:00Z') }]);
    let st = runner.status('job');
    expect(st).toMatchObject({ runs: 0, skips: 1, nextRunAt: new Date('2026-06-01T10:02:00Z') });
    expect(st.lastSkip).toEqual({
      reason: 'misfire',
      scheduledFor: new Date('2026-06-01T10:01:00Z'),
      at: new Date('2026-06-01T10:01:31Z'),
    });

    // Within the grace it runs.
    const onTime = runner.tick(DateTime.fromISO('2026-06-01T10:02:20Z'));
    expect(onTime.started).toEqual(['job']);
    await onTime.done;

    // Ten missed runs (the process was suspended): one skip, not a burst of ten runs.
    const suspended = runner.tick(DateTime.fromISO('2026-06-01T10:12:40Z'));
    expect(suspended.started).toEqual([]);
    st = runner.status('job');
    expect(st).toMatchObject({ runs: 1, skips: 2, nextRunAt: new Date('2026-06-01T10:13:00Z') });
  });

  it('a daily run missed by more than the grace waits for the next day', async () => {
    const { runner } = runnerAt('2026-06-01T00:00:00Z', [{ name: 'daily', schedule: { at: '04:00' }, run: ok }], { timezone: 'UTC' });
    expect(runner.tick(DateTime.fromISO('2026-06-01T04:02:00Z')).skipped).toHaveLength(1);
    expect(runner.status('daily').nextRunAt).toEqual(new Date('2026-06-02T04:00:00Z'));
    const r = runner.tick(DateTime.fromISO('2026-06-02T04:00:30Z'));
    expect(r.started).toEqual(['daily']);
    const [run] = await r.done;
    expect(run).toMatchObject({ name: 'daily', trigger: 'schedule', scheduledFor: new Date('2026-06-02T04:00:00Z'), outcome: 'success' });
  });
});

describe('no overlap', () => {
  it('a job still running is not started again by tick or runNow', async () => {
    const gates: ReturnType<typeof deferred<JobResult>>[] = [];
    let calls = 0;
    const job: JobDefinition = {
      name: 'slow',
      schedule: { every: '1m' },
      run: () => {
        calls++;
        const d = deferred<JobResult>();
        gates.push(d);
        return d.promise;
      },
    };
    const { runner } = runnerAt('2026-06-01T10:00:00Z', [job]);
    const first = runner.tick(DateTime.fromISO('2026-06-01T10:01:00Z'));
    expect(first.started).toEqual(['slow']);
    expect(runner.status('slow').running).toBe(true);

    const second = runner.tick(DateTime.fromISO('2026-06-01T10:02:00Z'));
    expect(second.started).toEqual([]);
    expect(second.skipped).toEqual([{ name: 'slow', reason: 'overlap', scheduledFor: new Date('2026-06-01T10:02:00Z') }]);
    await expect(runner.runNow('slow')).rejects.toThrow(ConflictError);
    await expect(runner.runNow('slow')).rejects.toMatchObject({ code: 'CONFLICT', message: 'job slow is already running' });
    expect(calls).toBe(1);

    gates[0]!.resolve({ level: 'ok' });
    await first.done;
    expect(runner.status('slow')).toMatchObject({ running: false, runs: 1, lastOutcome: 'success', skips: 1 });

    // Two run-now calls in the same turn: the second is refused.
    const a = runner.runNow('slow');
    const b = runner.runNow('slow');
    await expect(b).rejects.toThrow(ConflictError);
    gates[1]!.resolve({ level: 'warning' });
    expect(await a).toMatchObject({ trigger: 'manual', scheduledFor: null, outcome: 'success', result: { level: 'warning' } });
    expect(calls).toBe(2);
  });
});

describe('pause, resume, run now, listing', () => {
  it('lists every job; pause stops it, resume plans it from now, runNow runs it outside its schedule', async () => {
    const { runner, setNow } = runnerAt('2026-06-01T10:00:00+02:00', [
      { name: 'a', description: 'first', schedule: { every: '5m' }, run: async () => ({ level: 'ok', n: 1 }) as JobResult },
      { name: 'b', schedule: { at: '02:00', weekday: 1 }, run: ok },
      { name: 'off', schedule: { every: '1m' }, run: ok, disabled: true },
    ]);
    expect(runner.list()).toEqual([
      expect.objectContaining({ name: 'a', description: 'first', schedule: 'every 5m', enabled: true, paused: false, running: false }),
      expect.objectContaining({
        name: 'b',
        schedule: 'weekly on Monday at 02:00 (Europe/Paris)',
        nextRunAt: new Date('2026-06-08T00:00:00Z'),
      }),
      expect.objectContaining({ name: 'off', enabled: false, nextRunAt: null }),
    ]);
    expect(runner.status('a')).toMatchObject({ nextRunAt: new Date('2026-06-01T08:05:00Z'), lastRunAt: null, lastOutcome: null, runs: 0 });

    expect(runner.pause('a')).toMatchObject({ paused: true, nextRunAt: null });
    expect(runner.tick(DateTime.fromISO('2026-06-01T08:05:00Z')).started).toEqual([]);

    setNow('2026-06-01T08:07:00Z');
    expect(runner.resume('a')).toMatchObject({ paused: false, nextRunAt: new Date('2026-06-01T08:12:00Z') });
    expect(runner.tick(DateTime.fromISO('2026-06-01T08:11:59Z')).started).toEqual([]);
    await runner.tick(DateTime.fromISO('2026-06-01T08:12:00Z')).done;
    const st = runner.status('a');
    expect(st).toMatchObject({
      lastRunAt: new Date('2026-06-01T08:12:00Z'),
      lastOutcome: 'success',
      lastResult: { level: 'ok', n: 1 },
      lastError: null,
    });
    expect(st.lastDurationMs).toEqual(expect.any(Number));

    // Run now: a paused or disabled job runs too; the schedule is not moved.
    runner.pause('b');
    expect(await runner.runNow('b')).toMatchObject({ name: 'b', outcome: 'success' });
    expect(await runner.runNow('off')).toMatchObject({ name: 'off', outcome: 'success' });
    expect(runner.status('b')).toMatchObject({ paused: true, runs: 1, nextRunAt: null });
    expect(() => runner.resume('off')).toThrow(ConflictError);

    expect(() => runner.pause('nope')).toThrow(NotFoundError);
    expect(() => runner.resume('nope')).toThrow(expect.objectContaining({ code: 'NOT_FOUND', message: 'job nope not found' }));
    await expect(runner.runNow('nope')).rejects.toThrow(NotFoundError);
  });

  it('a failing job is recorded as such, logged with pino, and runs again at its next time', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        cb();
      },
    });
    let fail = true;
    const { runner } = runnerAt(
      '2026-06-01T10:00:00Z',
      [
        {
          name: 'flaky',
          schedule: { every: '1m' },
          run: async () => {
            if (fail) throw new Error('connection refused');
            return { level: 'warning' };
          },
        },
      ],
      { logger: createLogger('info', sink) },
    );
    const [run] = await runner.tick(DateTime.fromISO('2026-06-01T10:01:00Z')).done;
    expect(run).toMatchObject({ outcome: 'failure', error: 'connection refused', result: null });
    expect(runner.status('flaky')).toMatchObject({ lastOutcome: 'failure', lastError: 'connection refused', failures: 1 });
    fail = false;
    await runner.tick(DateTime.fromISO('2026-06-01T10:02:00Z')).done;
    expect(runner.status('flaky')).toMatchObject({
      lastOutcome: 'success',
      lastError: null,
      lastResult: { level: 'warning' },
      runs: 2,
      failures: 1,
    });
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          level: 50,
          job: 'flaky',
          component: 'maintenance',
          msg: 'maintenance job flaky failed: connection refused',
        }),
        expect.objectContaining({ level: 40, job: 'flaky', result: { level: 'warning' } }),
      ]),
    );
  });

  it('refuses bad definitions at construction, naming each', () => {
    const make =
      (jobs: JobDefinition[], timezone = 'UTC') =>
      () =>
        createJobRunner({
          jobs,
          db,
          logger: silentLogger,
          clock: () => DateTime.now(),
          timezone,
          misfireGraceMs: 0,
          maxSleepMs: 1000,
          stopTimeoutMs: 0,
        });
    expect(make([{ name: 'x', schedule: { every: '3 parsecs' }, run: ok }])).toThrow(ValidationError);
    expect(make([{ name: 'x', schedule: { at: '25:00' } as Schedule, run: ok }])).toThrow(/x\.schedule\.at: must be a local time HH:mm/);
    expect(make([{ name: 'x', schedule: { at: '02:00', weekday: 0 }, run: ok }])).toThrow(/weekday: must be an ISO weekday/);
    expect(make([{ name: 'x', schedule: { every: 10 }, run: ok }])).toThrow(/at least 1s/);
    expect(make([{ name: 'x', schedule: { every: '1m' }, run: ok }], 'Mars/Olympus')).toThrow(/timezone/);
    expect(
      make([
        { name: 'x', schedule: { every: '1m' }, run: ok },
        { name: 'x', schedule: { every: '1m' }, run: ok },
      ]),
    ).toThrow(/duplicate job x/);
  });
});

describe('singleton jobs', () => {
  it('two processes ticking the same planned run: one runs it, the other records a skip (claimed)', async () => {
    let runs = 0;
    const job = (): JobDefinition => ({
      name: 'report',
      schedule: { at: '08:00' },
      singleton: true,
      run: async () => {
        runs++;
        return { level: 'ok' };
      },
    });
    const one = runnerAt('2026-06-01T00:00:00Z', [job()], { timezone: 'UTC', instanceId: 'one' }).runner;
    const two = runnerAt('2026-06-01T00:00:00Z', [job()], { timezone: 'UTC', instanceId: 'two' }).runner;
    const at = DateTime.fromISO('2026-06-01T08:00:00Z');
    const [a, b] = await Promise.all([one.tick(at).done, two.tick(at).done]);
    expect(runs).toBe(1);
    expect(a.length + b.length).toBe(1);
    const loser = a.length ? two : one;
    expect(loser.status('report').lastSkip).toMatchObject({ reason: 'claimed', scheduledFor: new Date('2026-06-01T08:00:00Z') });
    expect(await rows(db, `SELECT job, claimed_by, outcome FROM maintenance_runs WHERE job = 'report'`)).toEqual([
      { job: 'report', claimed_by: a.length ? 'one' : 'two', outcome: 'success' },
    ]);
    // runNow is an explicit request: it is not claimed.
    await one.runNow('report');
    await two.runNow('report');
    expect(runs).toBe(3);
  });
});

describe('the timer', () => {
  afterEach(() => {
    // In this order: the spy wraps the fake setTimeout, so restoring it after useRealTimers would put the fake back.
    jest.restoreAllMocks();
    jest.useRealTimers();
  });

  it('is one unref’d timer for all jobs, sleeping until the earliest run (capped), cleared by stop()', async () => {
    jest.useFakeTimers({ now: Date.parse('2026-06-01T10:00:00Z'), doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    const spy = jest.spyOn(globalThis, 'setTimeout');
    const counts = { a: 0, b: 0 };
    const count = (k: keyof typeof counts) => async (): Promise<JobResult> => {
      counts[k]++;
      return { level: 'ok' };
    };
    const runner = createJobRunner({
      jobs: [
        { name: 'a', schedule: { every: '3m' }, run: count('a') },
        { name: 'b', schedule: { every: '20s' }, run: count('b') },
        { name: 'c', schedule: { at: '23:00' }, run: ok },
      ],
      db,
      logger: silentLogger,
      clock: () => DateTime.fromMillis(Date.now()),
      timezone: 'UTC',
      misfireGraceMs: 5_000,
      maxSleepMs: 60_000,
      stopTimeoutMs: 1_000,
    });
    expect(jest.getTimerCount()).toBe(0);
    runner.start();
    expect(jest.getTimerCount()).toBe(1);
    expect(spy).toHaveBeenLastCalledWith(expect.any(Function), 20_000);
    const timer = spy.mock.results.at(-1)!.value as NodeJS.Timeout;
    expect(timer.hasRef()).toBe(false);

    await jest.advanceTimersByTimeAsync(9 * MINUTE);
    expect(counts).toEqual({ a: 3, b: 27 });
    expect(jest.getTimerCount()).toBe(1);
    expect(runner.status('c').runs).toBe(0);

    // With only far jobs left, it sleeps at most maxSleepMs and looks again.
    runner.pause('a');
    runner.pause('b');
    expect(spy).toHaveBeenLastCalledWith(expect.any(Function), 60_000);
    expect(jest.getTimerCount()).toBe(1);
    for (const call of spy.mock.results) expect((call.value as NodeJS.Timeout).hasRef()).toBe(false);

    expect(await runner.stop()).toEqual({ unfinished: [] });
    expect(jest.getTimerCount()).toBe(0);
    expect(runner.started).toBe(false);
  });

  it('stop() asks running jobs to stop and waits for them, at most the timeout', async () => {
    const gate = deferred<JobResult>();
    let aborted = false;
    const { runner } = runnerAt('2026-06-01T10:00:00Z', [
      {
        name: 'long',
        schedule: { every: '1h' },
        run: ({ signal }) => {
          signal.addEventListener('abort', () => (aborted = true));
          return gate.promise;
        },
      },
    ]);
    const run = runner.runNow('long');
    expect(await runner.stop(50)).toEqual({ unfinished: ['long'] });
    expect(aborted).toBe(true);
    const stopping = runner.stop(10_000);
    gate.resolve({ level: 'ok' });
    expect(await stopping).toEqual({ unfinished: [] });
    expect(await run).toMatchObject({ outcome: 'success' });
  });
});

describe('schedule arithmetic', () => {
  it('keeps an interval on its cadence after a late tick', () => {
    const s = parseSchedule({ every: '10m' });
    if (!('schedule' in s)) throw new Error('bad');
    const t0 = Date.parse('2026-06-01T10:00:00Z');
    expect(nextRun(s.schedule, 'UTC', t0 + 23 * MINUTE, t0)).toBe(t0 + 30 * MINUTE);
    expect(nextRun(s.schedule, 'UTC', t0)).toBe(t0 + 10 * MINUTE);
  });
});
