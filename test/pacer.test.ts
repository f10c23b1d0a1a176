/**
 * The pacing schedule as pure code: an injected clock whose callbacks fire late by whatever the
 * test says (a busy event loop), and the k + 1 rule checked over the release instants.
 */
import fc from 'fast-check';
import { CATCH_UP, CATCH_UP_MS, catchUpMs, Pacer, paceViolations, type PacerClock } from '../services/scheduler/pacer.js';

/** A clock the test drives: timers fire at their instant plus `delay()` (a late event loop). */
class FakeClock implements PacerClock {
  t = 0;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private ids = 0;
  delay: () => number = () => 0;
  now(): number {
    return this.t;
  }
  after(ms: number, fn: () => void): () => void {
    const id = ++this.ids;
    this.timers.push({ at: this.t + ms, fn, id });
    return () => (this.timers = this.timers.filter((x) => x.id !== id));
  }
  /**
   * Runs timers due until `end` (each fired late by delay()), then sets the time to `end`; or stops
   * at the timer after which `stop()` holds, leaving the time there.
   */
  runUntil(end: number, stop?: () => boolean): void {
    for (;;) {
      if (stop?.()) return;
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = Math.max(this.t, next.at + this.delay());
      next.fn();
    }
    this.t = Math.max(this.t, end);
  }
}

/**
 * A service with work: keeps `ahead` sends waiting, queues the next one as each is released. The
 * server answers each at once (servedService below has a server that takes time).
 */
function busyService(p: Pacer, ahead: number, total: number): number[] {
  const released: number[] = [];
  let queued = 0;
  const one = () => {
    queued++;
    p.schedule((at, seq) => {
      if (at === null) return;
      released.push(at);
      p.answered(seq, at);
      if (queued < total) one();
    });
  };
  for (let i = 0; i < ahead && queued < total; i++) one();
  return released;
}

/**
 * A service whose sends a server answers `latency(seq)` ms after their release (the clock's timers
 * add their own delay); the server accepts each at a point between release and answer
 * (`where(seq)`, 0..1). Returns the release and acceptance instants.
 */
function servedService(
  p: Pacer,
  clock: FakeClock,
  total: number,
  latency: (seq: number) => number,
  where: (seq: number) => number = () => 1,
): { released: number[]; accepted: number[] } {
  const released: number[] = [];
  const accepted: number[] = [];
  let queued = 0;
  const one = () => {
    queued++;
    p.schedule((at, seq) => {
      if (at === null) return;
      released.push(at);
      clock.after(latency(seq), () => {
        const answered = clock.now();
        accepted.push(at + where(seq) * (answered - at));
        p.answered(seq, answered);
      });
      if (queued < total) one();
    });
  };
  one();
  return { released, accepted };
}

describe('pacer', () => {
  it('releases the k-th send at t0 + k x interval', () => {
    const clock = new FakeClock();
    const released = busyService(new Pacer(10, clock), 1, 5);
    clock.runUntil(1000);
    expect(released).toEqual([0, 10, 20, 30, 40]);
  });

  it('catches up after a late dispatch: the late send does not push the later ones back', () => {
    const clock = new FakeClock();
    const delays = [0, 4, 0, 0]; // the wake-up for the slot at 20 comes 4 ms late
    let i = 0;
    clock.delay = () => delays[i++] ?? 0;
    const released = busyService(new Pacer(10, clock), 1, 6);
    clock.runUntil(1000);
    expect(released).toEqual([0, 10, 24, 30, 40, 50]);
  });

  it('paces on the server’s answers: a send answered late moves the sends from n + 1 behind it back by the excess', () => {
    // 10 a second: n = 10 sends per one-second window. Send 2 is answered at 550 instead of within
    // its interval; sends 3-12 keep their slots; send 13 goes no sooner than 550 + 10 intervals,
    // and the schedule continues from there.
    const clock = new FakeClock();
    const { released } = servedService(new Pacer(100, clock), clock, 16, (seq) => (seq === 2 ? 350 : 0));
    clock.runUntil(5000);
    expect(released.slice(0, 13)).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200]);
    expect(released.slice(13).map((t) => Math.round(t))).toEqual([1550, 1650, 1750]);
  });

  it('waits for a missing answer: send j does not go while send j - n - 1 has none', () => {
    const clock = new FakeClock();
    const { released } = servedService(new Pacer(100, clock), clock, 15, (seq) => (seq === 2 ? 2000 : 0));
    clock.runUntil(1900);
    expect(released).toHaveLength(13); // sends 0-12; send 13 waits for send 2's answer (at 2200)
    clock.runUntil(10_000);
    expect(released.slice(13).map((t) => Math.round(t))).toEqual([3200, 3300]);
  });

  it('starts the schedule on the server’s answer: a slow first message does not bring the second closer at the server', () => {
    // Send 0 opens a connection (TLS, EHLO) and is answered 47 ms after its release; had send 1
    // kept its slot at 50, the server would see the two 3 ms apart. It waits one interval after
    // that answer instead, and the schedule goes on from there.
    const clock = new FakeClock();
    const { released, accepted } = servedService(new Pacer(50, clock), clock, 5, (seq) => (seq === 0 ? 47 : 1));
    clock.runUntil(1000);
    expect(released).toEqual([0, 97, 147, 197, 247]);
    expect(accepted[1]! - accepted[0]!).toBeGreaterThanOrEqual(50);
  });

  it('anchors again after an idle second, and not after a shorter pause', () => {
    const clock = new FakeClock();
    const p = new Pacer(100, clock);
    const a = servedService(p, clock, 2, () => 30);
    clock.runUntil(500);
    expect(a.released).toEqual([0, 130]); // send 1: one interval after send 0's answer at 30
    const b = servedService(p, clock, 2, () => 30); // queued at 500: 370 ms idle, no new anchor
    clock.runUntil(1000);
    expect(b.released).toEqual([500, 600]);
    clock.runUntil(3000);
    const c = servedService(p, clock, 2, () => 30); // after 2.4 s idle: the schedule starts again
    clock.runUntil(4000);
    expect(c.released).toEqual([3000, 3130]);
  });

  it('keeps the slot of a send that reaches it within the catch-up, as one released late does', () => {
    const clock = new FakeClock();
    const p = new Pacer(10, clock);
    const released: number[] = [];
    const send = () => p.schedule((at, seq) => (released.push(at!), p.answered(seq, at!)));
    send(); // 0
    expect(catchUpMs(10)).toBe(CATCH_UP_MS); // 20 ms: more than half of the 10 ms interval
    clock.runUntil(14); // the next message is ready 4 ms after its slot at 10
    send();
    clock.runUntil(20);
    send(); // its slot is 20: the late one kept its slot at 10
    clock.runUntil(55); // 25 ms after its slot at 30, beyond the catch-up: idle, it takes its own instant
    send();
    clock.runUntil(100);
    expect(released).toEqual([0, 14, 20, 55]);
    expect(p.slip.starved).toBe(25);
  });

  it('moves nothing while answers come within an interval, once the schedule started', () => {
    const clock = new FakeClock();
    const { released } = servedService(new Pacer(20, clock), clock, 200, (seq) => [3, 19.9, 0.5, 12][seq % 4]!);
    clock.runUntil(10_000);
    // Send 1 waits one interval after send 0's answer (at 3); from there every send keeps its slot.
    expect(released[0]).toBe(0);
    released.slice(1).forEach((t, k) => expect(t).toBeCloseTo(3 + (k + 1) * 20, 6));
  });

  it('holds the k + 1 rule at the server over random latencies, stalls and acceptance points (property)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.double({ min: 1, max: 20, noNaN: true }), fc.double({ min: 20, max: 1500, noNaN: true })),
        // Release-to-answer latencies: mostly short, some longer than an interval (a new connection,
        // a stalled server), some far longer.
        fc.array(
          fc.oneof(
            fc.double({ min: 0, max: 2, noNaN: true }),
            fc.double({ min: 0, max: 60, noNaN: true }),
            fc.double({ min: 0, max: 1500, noNaN: true }),
          ),
          {
            minLength: 1,
            maxLength: 40,
          },
        ),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.oneof(fc.constant(0), fc.double({ min: 0, max: 100, noNaN: true })), { minLength: 1, maxLength: 20 }),
        (interval, latencies, points, jitter) => {
          const clock = new FakeClock();
          let i = 0;
          clock.delay = () => jitter[i++ % jitter.length]!;
          const total = Math.min(300, Math.ceil(3000 / interval) + 5);
          const { released, accepted } = servedService(
            new Pacer(interval, clock),
            clock,
            total,
            (seq) => latencies[seq % latencies.length]!,
            (seq) => points[seq % points.length]!,
          );
          clock.runUntil(total * (interval + 1700) + 10_000);
          expect(accepted).toHaveLength(total);
          expect(paceViolations(accepted, interval)).toBeNull();
          expect(paceViolations(released, interval)).toBeNull();
        },
      ),
      { numRuns: 200 },
    );
  });

  it('hands over to a new schedule: a second pacer from quietAt() keeps the rule with the first one’s sends (property)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.double({ min: 1, max: 20, noNaN: true }), fc.double({ min: 20, max: 1500, noNaN: true })),
        fc.array(fc.oneof(fc.double({ min: 0, max: 2, noNaN: true }), fc.double({ min: 0, max: 1500, noNaN: true })), {
          minLength: 1,
          maxLength: 30,
        }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 30 }),
        fc.integer({ min: 1, max: 200 }),
        (interval, latencies, points, first) => {
          const clock = new FakeClock();
          const latency = (seq: number) => latencies[seq % latencies.length]!;
          const where = (seq: number) => points[seq % points.length]!;
          const old = new Pacer(interval, clock);
          const a = servedService(old, clock, first, latency, where);
          // The old owner stops as soon as every send is answered, and holds the service until quietAt().
          clock.runUntil(first * (interval + 1600) + 10_000, () => a.accepted.length === first);
          expect(a.accepted).toHaveLength(first);
          const taken = Math.max(clock.now(), old.quietAt());
          clock.runUntil(taken);
          const b = servedService(
            new Pacer(interval, clock, taken),
            clock,
            100,
            (seq) => latency(seq + 7),
            (seq) => where(seq + 3),
          );
          clock.runUntil(taken + 100 * (interval + 1600) + 10_000);
          expect(b.accepted).toHaveLength(100);
          expect(paceViolations([...a.accepted, ...b.accepted], interval)).toBeNull();
        },
      ),
      { numRuns: 200 },
    );
  });

  it('banks nothing after idle: sends after a pause come one interval apart', () => {
    const clock = new FakeClock();
    const p = new Pacer(10, clock);
    const first = busyService(p, 1, 2);
    clock.runUntil(500);
    expect(first).toEqual([0, 10]);
    const after = busyService(p, 3, 4); // three waiting at once after 490 ms of idle
    clock.runUntil(1000);
    expect(after).toEqual([500, 510, 520, 530]);
  });

  it('keeps at most the catch-up after a long stall: no burst of the other missed slots', () => {
    for (const interval of [10, 100]) {
      const clock = new FakeClock();
      const delays = [0, 4.5 * interval]; // the slot at 2 intervals is released 4.5 intervals late
      let i = 0;
      clock.delay = () => delays[i++] ?? 0;
      const released = busyService(new Pacer(interval, clock), 2, 8);
      clock.runUntil(100 * interval);
      const stall = 6.5 * interval;
      expect(released.slice(0, 3)).toEqual([0, interval, stall]);
      // The late send keeps the catch-up (CATCH_UP_MS at 10 ms, CATCH_UP of an interval at 100):
      // its slot is stall - catch-up, and the sends whose slots that leaves behind `stall` go at once.
      const tol = catchUpMs(interval);
      expect(tol).toBe(Math.max(CATCH_UP * interval, CATCH_UP_MS));
      const slots = [3, 4, 5, 6, 7].map((k) => stall - tol + (k - 2) * interval);
      expect(released.slice(3)).toEqual(slots.map((t) => Math.max(t, stall)));
    }
  });

  it('keeps sub-millisecond intervals: 30 a second is 33.33 ms, not 33 or 34', () => {
    const clock = new FakeClock();
    const released = busyService(new Pacer(1000 / 30, clock), 1, 301);
    clock.runUntil(20_000);
    expect(released[300]).toBeCloseTo(10_000, 6);
  });

  it('waits for notBefore (a restart or takeover), and a rate change keeps the anchor', () => {
    const clock = new FakeClock();
    const p = new Pacer(100, clock, 250);
    const released = busyService(p, 1, 3);
    clock.runUntil(300);
    expect(released).toEqual([250]);
    // A first send later than notBefore is no shortfall of the rate.
    const other = new FakeClock();
    const late = new Pacer(100, other, 250);
    other.runUntil(700);
    expect(busyService(late, 1, 1)).toEqual([700]);
    expect(late.slip).toEqual({ late: 0, starved: 0, answers: 0 });
    p.setInterval(20); // faster: the next is due 20 ms after the last slot, not after the old 100
    clock.runUntil(1000);
    // The waiting send is already 30 ms past the new slot (270): it keeps the catch-up (20 ms) of
    // it, so its slot is 280 and the next one's 300.
    expect(released).toEqual([250, 300, 300]);
  });

  it('drops waiting sends on clear(): their callbacks see null', () => {
    const clock = new FakeClock();
    const p = new Pacer(1000, clock);
    const seen: (number | null)[] = [];
    p.schedule((at) => seen.push(at));
    p.schedule((at) => seen.push(at));
    expect(p.waiting).toBe(1);
    p.clear();
    expect(seen).toEqual([0, null]);
    clock.runUntil(5000);
    expect(seen).toEqual([0, null]);
  });

  it('refuses a negative or non-finite interval', () => {
    expect(() => new Pacer(-1)).toThrow(RangeError);
    expect(() => new Pacer(Number.NaN)).toThrow(RangeError);
  });

  it('holds the k + 1 rule in every window of >= 1 s (or one interval) over random jitter, and keeps the rate', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.double({ min: 0.5, max: 20, noNaN: true }), fc.double({ min: 20, max: 3000, noNaN: true })),
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 200, noNaN: true })), {
          minLength: 1,
          maxLength: 50,
        }),
        (interval, ahead, jitter) => {
          const clock = new FakeClock();
          let i = 0;
          clock.delay = () => jitter[i++ % jitter.length]!;
          const total = Math.min(400, Math.ceil(4000 / interval) + 5);
          const released = busyService(new Pacer(interval, clock), ahead, total);
          clock.runUntil(total * interval + 200 * total);
          expect(released).toHaveLength(total);
          expect(paceViolations(released, interval)).toBeNull();
          // Never sooner than the schedule: the k-th release is at or after k intervals.
          released.forEach((t, k) => expect(t).toBeGreaterThanOrEqual(k * interval - 1e-6));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('loses no time to jitter under the catch-up: beyond an interval, the worst lateness of each window moves the schedule, not each late send', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 1, max: 100, noNaN: true }),
        fc.array(fc.double({ min: 0, max: 0.99, noNaN: true }), { minLength: 1 }),
        (interval, j) => {
          const clock = new FakeClock();
          let i = 0;
          const delays = j.map((x) => x * catchUpMs(interval));
          clock.delay = () => delays[i++ % delays.length]!;
          const p = new Pacer(interval, clock);
          const released = busyService(p, 1, 200);
          clock.runUntil(400 * interval);
          expect(released).toHaveLength(200);
          // Every wake-up is late by less than the catch-up: none moves the schedule as lateness.
          expect(p.slip.late).toBe(0);
          // A release later than an interval moves the sends one window (n + 1 sends) behind it
          // (the rule's own bound, pacer.ts header): by the worst such lateness in each window,
          // not by the sum of them (plus the bound's 0.01 ms margin, once per window).
          const worst = Math.max(...delays);
          const windows = Math.ceil(200 / (Math.ceil(1000 / interval - 1e-9) + 1)) + 1;
          const bound = worst + windows * (Math.max(0, worst - interval) + 0.01) + 1e-6;
          released.forEach((t, k) => expect(t - k * interval).toBeLessThanOrEqual(bound));
        },
      ),
    );
  });
});

describe('paceViolations', () => {
  /** Every window [t_i, t_i + kT] for every k with kT >= max(minWindow, T): the plain definition. */
  function brute(t: number[], T: number, minWindow: number): number {
    const s = [...t].sort((a, b) => a - b);
    const kmin = Math.max(1, Math.ceil(minWindow / T - 1e-9));
    let worst = 0;
    for (let i = 0; i < s.length; i++)
      for (let k = kmin; k === kmin || s[i]! + (k - 1) * T <= s[s.length - 1]!; k++) {
        const n = s.filter((x) => x >= s[i]! && x <= s[i]! + k * T).length;
        worst = Math.max(worst, n - (k + 1));
      }
    return worst;
  }

  it('agrees with the plain definition on random lists', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 40 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 0, max: 100 }),
        (t, T, minWindow) => {
          const v = paceViolations(t, T, minWindow);
          expect(v?.excess ?? 0).toBe(brute(t, T, minWindow));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('finds a burst of two extra sends in a one-second window', () => {
    const t = Array.from({ length: 101 }, (_, k) => k * 10);
    expect(paceViolations(t, 10)).toBeNull();
    expect(paceViolations([...t, 500], 10)?.excess).toBe(1);
  });
});
