/**
 * When a service runner may start one more send slot (service-runner.ts, mayStartSlot), and when a
 * paced schedule waits on the concurrency alone (starvesOnConcurrency): pure.
 */
import { describe, expect, it } from '@jest/globals';
import {
  HOLD_AHEAD_MS,
  holdsSends,
  LOOKAHEAD_MS,
  lookaheadFor,
  mayStartSlot,
  starvesOnConcurrency,
} from '../services/scheduler/service-runner.js';

const base = { concurrency: 5, maxConnections: 5, commitWindow: 40, active: 0, ahead: 0, committing: 0 };

describe('slot admission', () => {
  it('looks LOOKAHEAD_MS ahead of the schedule: at least two messages, one for services slower than one a second', () => {
    expect(LOOKAHEAD_MS).toBe(20);
    expect(lookaheadFor(2)).toBe(10); // 500 msg/s
    expect(lookaheadFor(10)).toBe(2); // 100 msg/s
    expect(lookaheadFor(50)).toBe(2); // 20 msg/s
    expect(lookaheadFor(999)).toBe(2);
    expect(lookaheadFor(1000)).toBe(1);
    expect(lookaheadFor(60_000)).toBe(1);
  });

  it('paced: the concurrency bounds the sends on the wire, not the slots waiting for their slot', () => {
    // Five on the wire: no more, whatever waits.
    expect(mayStartSlot({ ...base, intervalMs: 2, active: 5, ahead: 0 })).toBe(false);
    // Four on the wire and one waiting: one more may pick its message (counting the waiting one
    // against the concurrency, as for an unpaced service, would refuse it).
    expect(mayStartSlot({ ...base, intervalMs: 2, active: 5, ahead: 1 })).toBe(true);
    expect(mayStartSlot({ ...base, intervalMs: 0, concurrency: 4, active: 4, ahead: 1 })).toBe(false);
    // The lookahead bounds the waiting ones: ten at 500 msg/s, two at 100 msg/s.
    expect(mayStartSlot({ ...base, intervalMs: 2, active: 12, ahead: 9 })).toBe(true);
    expect(mayStartSlot({ ...base, intervalMs: 2, active: 13, ahead: 10 })).toBe(false);
    expect(mayStartSlot({ ...base, maxConnections: 1, intervalMs: 10, active: 3, ahead: 2 })).toBe(false);
    expect(mayStartSlot({ ...base, maxConnections: 1, intervalMs: 10, active: 3, ahead: 1 })).toBe(true);
    // Holding its sends (100 msg/s on five connections), four: one connection left for the wire.
    expect(mayStartSlot({ ...base, intervalMs: 10, active: 5, ahead: 4 })).toBe(false);
    expect(mayStartSlot({ ...base, intervalMs: 10, active: 4, ahead: 3 })).toBe(true);
  });

  it('holds sends where the connections have time to spare: paced, faster than one a second, HOLD_AHEAD_MS covered by all but one', () => {
    expect(HOLD_AHEAD_MS).toBe(40);
    expect(holdsSends(0, 5)).toBe(false); // no rate limit: nothing to hold for
    expect(holdsSends(1000, 5)).toBe(false); // one a second: a message would wait a second mid-DATA
    expect(holdsSends(999, 5)).toBe(true);
    expect(holdsSends(10, 5)).toBe(true); // 100 msg/s: 4 x 10 ms
    expect(holdsSends(2, 5)).toBe(false); // 500 msg/s: 4 x 2 ms = 8 ms of slots
    expect(holdsSends(2, 21)).toBe(true);
    expect(holdsSends(50, 1)).toBe(false); // one connection: holding would keep it from the wire
    expect(holdsSends(40, 2)).toBe(true);
    expect(holdsSends(39.9, 2)).toBe(false);
    // The lookahead then covers HOLD_AHEAD_MS, within the connections less one.
    expect(lookaheadFor(10, 5)).toBe(4);
    expect(lookaheadFor(10, 3)).toBe(2);
    expect(lookaheadFor(20, 5)).toBe(2);
    expect(lookaheadFor(2, 21)).toBe(20);
    expect(lookaheadFor(2, 5)).toBe(lookaheadFor(2));
    expect(lookaheadFor(2000, 5)).toBe(1);
  });

  it('no rate limit: the concurrency running while it scales up; at maxConnections, one more queued behind each connection', () => {
    const scaling = { ...base, intervalMs: 0, concurrency: 2 };
    expect(mayStartSlot({ ...scaling, active: 1, ahead: 1 })).toBe(true);
    expect(mayStartSlot({ ...scaling, active: 2, ahead: 2 })).toBe(false);
    // At the pool's bound: five on the connections and five queued behind them.
    expect(mayStartSlot({ ...base, intervalMs: 0, active: 9, ahead: 4 })).toBe(true);
    expect(mayStartSlot({ ...base, intervalMs: 0, active: 10, ahead: 5 })).toBe(false);
  });

  it('never more than the commit window alive, running or committing (the crash bound)', () => {
    expect(mayStartSlot({ ...base, intervalMs: 2, active: 3, ahead: 2, committing: 37 })).toBe(false);
    expect(mayStartSlot({ ...base, intervalMs: 2, active: 3, ahead: 2, committing: 36 })).toBe(true);
    expect(mayStartSlot({ ...base, intervalMs: 0, active: 1, committing: 39 })).toBe(false);
  });

  it('a paced schedule starves on the concurrency only with every allowed send on the wire and none waiting', () => {
    // Five on the wire, none waiting for its slot, room in the commit window: one more would start.
    const wire = { ...base, intervalMs: 2, active: 5, ahead: 0 };
    expect(starvesOnConcurrency(wire)).toBe(true);
    expect(mayStartSlot(wire)).toBe(false);
    // One already waits for its slot: the pacer, not the concurrency, holds the schedule.
    expect(starvesOnConcurrency({ ...wire, active: 6, ahead: 1 })).toBe(false);
    // Fewer on the wire than the concurrency: a slot may start, nothing starves.
    expect(starvesOnConcurrency({ ...wire, active: 4 })).toBe(false);
    // The commit window is full: a higher concurrency would start nothing (the crash bound holds).
    expect(starvesOnConcurrency({ ...wire, committing: 35 })).toBe(false);
    expect(starvesOnConcurrency({ ...wire, committing: 34 })).toBe(true);
    // No rate limit: the connections' health alone moves the concurrency.
    expect(starvesOnConcurrency({ ...wire, intervalMs: 0 })).toBe(false);
  });

  it('whenever a paced schedule starves, raising the concurrency by one admits a slot', () => {
    let starving = 0;
    for (let active = 0; active <= 12; active++)
      for (let ahead = 0; ahead <= Math.min(active, 3); ahead++)
        for (let committing = 0; committing <= 40 - active; committing += 5)
          for (const concurrency of [1, 2, 5]) {
            const c = { ...base, intervalMs: 10, concurrency, active, ahead, committing };
            if (starvesOnConcurrency(c)) {
              starving++;
              expect(mayStartSlot(c)).toBe(false);
              expect(mayStartSlot({ ...c, concurrency: concurrency + 1 })).toBe(active === concurrency);
            }
          }
    expect(starving).toBeGreaterThan(10);
  });
});
