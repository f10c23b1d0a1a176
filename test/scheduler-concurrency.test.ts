import { DateTime } from 'luxon';
import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createTestEngine } from './helpers/db.js';
import { STARVED_UP_MS } from '../services/scheduler/concurrency.js';
import { until, userWithContacts } from './helpers/scheduler.js';

/**
 * Dynamic concurrency in a running engine. The up and down intervals are a minute and two, and
 * the scheduler's clock is injected: nothing changes until the test moves the clock, so every
 * step is caused by the test, never by the wall clock.
 */
describe('dynamic concurrency per service (injected clock)', () => {
  let engine: Engine;
  let catcher: SmtpCatcher;
  let now = DateTime.now();
  let peak = 0;
  let sampler: NodeJS.Timeout | undefined;

  beforeEach(async () => {
    now = DateTime.now();
    engine = await createTestEngine({
      clock: () => now,
      schedulerTickMs: 50,
      heartbeatMs: 200,
      concurrencyInitial: 1,
      concurrencyStep: 1,
      concurrencyUpMs: 60_000,
      concurrencyDownMs: 120_000,
      concurrencyLatencyMs: 5_000,
    });
    // A slow server: each message waits 60 ms for its reply, so sends overlap when allowed to.
    catcher = await startSmtpCatcher({ delayMs: 60, keep: false });
  });
  afterEach(async () => {
    if (sampler) clearInterval(sampler);
    await engine.close();
    await catcher.stop();
  });

  const concurrency = (id: number) => engine.scheduler.status().services.find((s) => s.id === id)!.concurrency;
  /** Highest number of sends in flight at once since the last reset, sampled every 5 ms. */
  const watchPeak = (id: number) => {
    sampler = setInterval(() => {
      const s = engine.scheduler.status().services.find((x) => x.id === id);
      if (s) peak = Math.max(peak, s.inFlight);
    }, 5);
  };

  it('scales up by a step per up interval while the backlog is large, bounded by maxConnections, and down when it empties', async () => {
    const u = await userWithContacts(engine, 'Conc', 150);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'c',
      from: 'c@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    const svc = await engine.services.create({
      name: 'slow',
      transport: { host: '127.0.0.1', port: catcher.port },
      sendingRate: 0,
      dailyQuota: 100_000,
      maxConnections: 3,
    });
    await engine.scheduler.start();
    watchPeak(svc.id);
    await until(() => catcher.accepted >= 5, 10_000, 'the first sends');
    expect(concurrency(svc.id)).toMatchObject({ current: 1, max: 3 });
    expect(peak).toBe(1);

    // A minute later (on the injected clock), with 150 queued: one step up, and two sends overlap.
    now = now.plus({ seconds: 60 });
    await until(() => concurrency(svc.id)!.current === 2, 5_000, 'a scale-up to 2');
    expect(concurrency(svc.id)!.backlog).toBeGreaterThan(4);
    expect(concurrency(svc.id)!.lastChange).toBe('up');
    await until(() => peak === 2, 5_000, 'two sends in flight at once');

    // Not again within the interval.
    now = now.plus({ seconds: 30 });
    await engine.scheduler.tick();
    expect(concurrency(svc.id)!.current).toBe(2);

    now = now.plus({ seconds: 30 });
    await until(() => concurrency(svc.id)!.current === 3, 5_000, 'a scale-up to 3');
    // At maxConnections, one more message is queued behind each connection (service-runner.ts,
    // mayStartSlot): three on the connections, three waiting for them.
    await until(() => peak === 6, 5_000, 'six sends in flight at once');

    // maxConnections bounds it.
    now = now.plus({ seconds: 60 });
    await engine.scheduler.tick();
    await engine.scheduler.tick();
    expect(concurrency(svc.id)!.current).toBe(3);
    expect(peak).toBe(6);

    // The campaign completes: the backlog is 0, under half. Down one step per two minutes, to the initial 1.
    await until(async () => (await engine.campaigns.progress(c.id)).status === 'completed', 30_000, 'completion');
    await engine.scheduler.tick();
    expect(concurrency(svc.id)!.current).toBe(3); // the down interval has not passed since the last change
    now = now.plus({ seconds: 120 });
    await until(() => concurrency(svc.id)!.current === 2, 5_000, 'a scale-down to 2');
    expect(concurrency(svc.id)).toMatchObject({ backlog: 0, lastChange: 'down' });
    now = now.plus({ seconds: 60 });
    await engine.scheduler.tick();
    expect(concurrency(svc.id)!.current).toBe(2);
    now = now.plus({ seconds: 60 });
    await until(() => concurrency(svc.id)!.current === 1, 5_000, 'a scale-down to 1');
    now = now.plus({ seconds: 600 });
    await engine.scheduler.tick();
    expect(concurrency(svc.id)!.current).toBe(1);
    expect(catcher.accepted).toBe(150);
  });

  it('raises a paced service’s concurrency when its schedule starves on it, one step per STARVED_UP_MS of the clock', async () => {
    // 50 a second (20 ms apart) against a server that answers after 60 ms: one send at a time
    // makes about 16 a second, so the schedule starves behind the concurrency of 1. The up
    // interval of the backlog rule is a minute: only the starvation raises it, a step each time
    // the test moves the clock by STARVED_UP_MS.
    const u = await userWithContacts(engine, 'Paced', 400);
    await engine.campaigns.create({
      userId: u.userId,
      name: 'paced',
      from: 'p@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    const svc = await engine.services.create({
      name: 'paced',
      transport: { host: '127.0.0.1', port: catcher.port },
      sendingRate: 0.02,
      dailyQuota: 100_000,
      maxConnections: 3,
    });
    await engine.scheduler.start();
    await until(() => catcher.accepted >= 3, 10_000, 'the first sends');
    expect(concurrency(svc.id)).toMatchObject({ current: 1, max: 3 });
    now = now.plus({ milliseconds: STARVED_UP_MS });
    await until(() => concurrency(svc.id)!.current === 2, 5_000, 'a scale-up to 2');
    expect(concurrency(svc.id)!.lastChange).toBe('up');
    now = now.plus({ milliseconds: STARVED_UP_MS });
    await until(() => concurrency(svc.id)!.current === 3, 5_000, 'a scale-up to 3');
    now = now.plus({ milliseconds: STARVED_UP_MS });
    await engine.scheduler.tick();
    expect(concurrency(svc.id)!.current).toBe(3); // maxConnections bounds it
  });

  it('shows the concurrency and the live instances in status', async () => {
    const svc = await engine.services.create({
      name: 'shown',
      transport: { host: '127.0.0.1', port: catcher.port },
      sendingRate: 0,
      dailyQuota: 10,
      maxConnections: 4,
    });
    await engine.scheduler.start();
    await until(() => engine.scheduler.status().services.some((s) => s.id === svc.id), 5_000, 'the service to start');
    expect(concurrency(svc.id)).toEqual({ current: 1, max: 4, backlog: 0, latencyMs: null, lastChange: null });
    // The heartbeat names the services this engine owns.
    await until(async () => (await engine.scheduler.instances())[0]?.services.includes(svc.id) ?? false, 5_000, 'the owned service');
    const instances = await engine.scheduler.instances();
    expect(instances).toHaveLength(1);
    expect(instances[0]).toMatchObject({ id: engine.scheduler.instanceId, pid: process.pid, self: true, services: [svc.id] });
    // A service's maxConnections lowered below the concurrency applies at once.
    await engine.services.update(svc.id, { maxConnections: 1 });
    await until(() => concurrency(svc.id)!.max === 1, 5_000, 'the new bound');
    expect(concurrency(svc.id)!.current).toBe(1);
    await engine.scheduler.stop();
    expect(await engine.scheduler.instances()).toEqual([]);
  });
});
