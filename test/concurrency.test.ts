import fc from 'fast-check';
import { ConcurrencyController, STARVED_UP_MS, type ConcurrencyOptions } from '../services/scheduler/concurrency.js';

const opts: ConcurrencyOptions = { initial: 2, step: 2, upIntervalMs: 1000, downIntervalMs: 5000, healthyLatencyMs: 500 };

describe('dynamic concurrency policy (pure, times passed in)', () => {
  it('starts at the initial concurrency, bounded by maxConnections', () => {
    expect(new ConcurrencyController(opts, 10, 0).current).toBe(2);
    expect(new ConcurrencyController(opts, 1, 0).current).toBe(1);
  });

  it('scales up by a step once per up interval while the backlog exceeds twice the concurrency', () => {
    const c = new ConcurrencyController(opts, 7, 0);
    expect(c.adjust(100, 999)).toBe(2); // the interval has not passed since start
    expect(c.adjust(100, 1000)).toBe(4);
    expect(c.adjust(100, 1500)).toBe(4); // not twice within an interval
    expect(c.adjust(100, 2000)).toBe(6);
    expect(c.adjust(100, 3000)).toBe(7); // bounded by maxConnections, not 8
    expect(c.adjust(100, 9000)).toBe(7);
    expect(c.snapshot()).toMatchObject({ current: 7, max: 7, backlog: 100, lastChange: 'up' });
  });

  it('scales up at once when a paced schedule starves on it: a step per STARVED_UP_MS, healthy, at most maxConnections', () => {
    const c = new ConcurrencyController(opts, 5, 0);
    expect(c.starved(0)).toBe(false); // the start counts as a change: not within STARVED_UP_MS of it
    expect(c.current).toBe(2);
    expect(c.starved(STARVED_UP_MS)).toBe(true);
    expect(c.snapshot()).toMatchObject({ current: 4, lastChange: 'up' });
    expect(c.starved(STARVED_UP_MS + 50)).toBe(false); // not twice within STARVED_UP_MS
    expect(c.starved(2 * STARVED_UP_MS)).toBe(true);
    expect(c.current).toBe(5); // bounded by maxConnections, not 6
    expect(c.starved(10 * STARVED_UP_MS)).toBe(false);
    expect(c.current).toBe(5);
    // The up interval of adjust() counts from the last scale-up, whichever made it.
    const d = new ConcurrencyController(opts, 10, 0);
    expect(d.starved(STARVED_UP_MS)).toBe(true);
    expect(d.adjust(100, 1000)).toBe(4);
    expect(d.adjust(100, STARVED_UP_MS + 1000)).toBe(6);
  });

  it('does not scale up a starved schedule while latency is unhealthy or the last send failed', () => {
    const slow = new ConcurrencyController(opts, 10, 0);
    slow.observeLatency(800);
    expect(slow.starved(STARVED_UP_MS)).toBe(false);
    const failing = new ConcurrencyController(opts, 10, 0);
    failing.setFailing(true);
    expect(failing.starved(STARVED_UP_MS)).toBe(false);
    expect([slow.current, failing.current]).toEqual([2, 2]);
  });

  it('does not scale up on a backlog of at most twice the concurrency', () => {
    const c = new ConcurrencyController(opts, 10, 0);
    expect(c.adjust(4, 10_000)).toBe(2);
    expect(c.adjust(5, 10_000)).toBe(4);
  });

  it('does not scale up while latency is unhealthy or the last send failed', () => {
    const slow = new ConcurrencyController(opts, 10, 0);
    slow.observeLatency(800);
    expect(slow.adjust(100, 1000)).toBe(2);
    // The moving average comes back under the bound after healthy sends.
    for (let i = 0; i < 20; i++) slow.observeLatency(20);
    expect(slow.snapshot().latencyMs).toBeLessThan(500);
    expect(slow.adjust(100, 2000)).toBe(4);

    const failing = new ConcurrencyController(opts, 10, 0);
    failing.setFailing(true);
    expect(failing.adjust(100, 1000)).toBe(2);
    failing.setFailing(false);
    expect(failing.adjust(100, 1000)).toBe(4);
  });

  it('scales down by a step once per (longer) down interval when the backlog falls under half, never under the initial', () => {
    const c = new ConcurrencyController(opts, 10, 0);
    for (let t = 1000; t <= 4000; t += 1000) c.adjust(100, t);
    expect(c.current).toBe(10);
    expect(c.adjust(4, 4000 + 4999)).toBe(10); // the down interval counts from the last change
    expect(c.adjust(4, 9000)).toBe(8);
    expect(c.adjust(0, 9000 + 1000)).toBe(8); // the up interval does not apply to going down
    expect(c.adjust(0, 14_000)).toBe(6);
    expect(c.adjust(0, 19_000)).toBe(4);
    expect(c.adjust(0, 24_000)).toBe(2);
    expect(c.adjust(0, 99_000)).toBe(2); // the floor
    expect(c.snapshot().lastChange).toBe('down');
  });

  it('holds between half and twice the concurrency (no flapping)', () => {
    const c = new ConcurrencyController(opts, 10, 0);
    c.adjust(100, 1000);
    expect(c.current).toBe(4);
    for (let t = 2000; t < 100_000; t += 1000) expect(c.adjust(2 + (t % 7), t)).toBe(4);
  });

  it('applies a lowered maxConnections at once', () => {
    const c = new ConcurrencyController(opts, 10, 0);
    c.adjust(100, 1000);
    c.adjust(100, 2000);
    expect(c.current).toBe(6);
    c.setMax(3);
    expect(c.current).toBe(3);
    expect(c.adjust(100, 10_000)).toBe(3);
  });

  it('stays within [min(initial, max), max] and changes by at most one step per decision, whatever happens', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.record({ backlog: fc.nat(200), dt: fc.nat(6000), latency: fc.nat(1000), fail: fc.boolean() }), { maxLength: 60 }),
        (max, steps) => {
          const c = new ConcurrencyController(opts, max, 0);
          let t = 0;
          let last = c.current;
          for (const s of steps) {
            t += s.dt;
            c.observeLatency(s.latency);
            c.setFailing(s.fail);
            const v = c.adjust(s.backlog, t);
            expect(v).toBeGreaterThanOrEqual(Math.min(opts.initial, max));
            expect(v).toBeLessThanOrEqual(max);
            expect(Math.abs(v - last)).toBeLessThanOrEqual(opts.step);
            if (v > last) expect(s.backlog).toBeGreaterThan(last * 2);
            if (v < last) expect(s.backlog).toBeLessThan(last / 2);
            last = v;
          }
        },
      ),
      { seed: 8, numRuns: 300 },
    );
  });
});
