/**
 * Pacing by schedule: when each send of one sending service may go (virtual scheduling, as in GCRA).
 *
 * The k-th send is due at t0 + k x interval. Sends wait here in arrival order; each is released
 * (its callback runs synchronously, in the turn the decision is made, so nothing runs between the
 * decision and the send) once its slot has come. Three properties, each asserted in
 * test/pacer.test.ts:
 *
 *   - A late send does not push the later ones back. A send released `late` ms after its slot
 *     keeps that slot, and the next one is due one interval after the slot, not after the late
 *     release: an event loop hiccup is caught up at once instead of being lost for good (the old
 *     gate, "never sooner than the interval after the previous dispatch", lost every hiccup:
 *     100/s achieved 91/s on a busy machine).
 *   - Catching up is bounded: a send keeps at most CATCH_UP x interval of lateness. Later than
 *     that, its slot moves to (release - CATCH_UP x interval). Idle time therefore banks no
 *     credit: after a pause, a quota reset or a restart the next sends come one interval apart,
 *     never in a burst.
 *   - Intervals are fractional milliseconds (0.0333 s stays 33.3 ms; it is not rounded).
 *
 * The guarantee this gives, and the one the tests check at the receiving SMTP server: in any
 * window of k intervals (k >= 1) there are at most k + 1 sends. Proof sketch: every slot is at
 * least one interval after the previous slot, and every send is released within
 * CATCH_UP x interval (< 1 interval) after its slot; a closed window [a, a + kT] holds only sends
 * whose slots lie in (a - T, a + kT], and at most k + 1 slots spaced T apart fit there. The margin
 * left, (1 - CATCH_UP) x interval, absorbs the jitter between the release here and the arrival
 * at the server (connection latency). The bound is checked over windows lasting at least one
 * second (or one interval for services slower than that) by `paceViolations` below.
 *
 * States of a waiting send: waiting -> released (callback ran) | dropped (clear(): the service
 * stopped; the callback runs with `null`, so the caller puts its message and unit back).
 *
 * The clock is injected (PacerClock) so the unit tests drive time and delay callbacks at will.
 */

/** The share of an interval a late send may keep (see above): the rest is the receiver's jitter budget. */
export const CATCH_UP = 0.5;

export interface PacerClock {
  /** Now, in milliseconds with sub-millisecond precision. */
  now(): number;
  /** Calls `fn` after about `ms` (late is fine, early is checked by the caller); returns a cancel. */
  after(ms: number, fn: () => void): () => void;
}

/** Epoch milliseconds with sub-millisecond precision (Date.now() has whole milliseconds). */
export const preciseNow = (): number => performance.timeOrigin + performance.now();

/**
 * The real clock. Timers fire up to a millisecond or two late and resolve whole milliseconds, so a
 * wait sleeps on a timer until about a millisecond before the instant and then yields with
 * setImmediate until it comes (the pacer re-checks the time on every wake-up).
 */
export const realPacerClock: PacerClock = {
  now: preciseNow,
  after(ms, fn) {
    if (ms < 1.5) {
      const h = setImmediate(fn);
      return () => clearImmediate(h);
    }
    const t = setTimeout(fn, Math.floor(ms - 1));
    return () => clearTimeout(t);
  },
};

type Waiter = (at: number | null) => void;

export class Pacer {
  private intervalMs: number;
  /** Due instant of the next slot (ms). */
  private next: number;
  /** The slot of the last release (ms), -Infinity before the first. */
  private lastSlot = -Infinity;
  private readonly queue: { fn: Waiter; since: number }[] = [];
  private cancelWake: (() => void) | undefined;
  /** A callback may queue the next send; the running drain loop takes it. */
  private draining = false;
  /** Sends released so far (for status and tests). */
  released = 0;

  /**
   * @param intervalMs the service's interval (0: no rate limit, every send goes at once)
   * @param notBefore no slot before this instant: after a restart or a takeover, the previous
   *   owner's last send plus one interval
   */
  constructor(
    intervalMs: number,
    private readonly clock: PacerClock = realPacerClock,
    notBefore = -Infinity,
  ) {
    assertInterval(intervalMs);
    this.intervalMs = intervalMs;
    this.next = notBefore;
  }

  get interval(): number {
    return this.intervalMs;
  }

  /** Sends waiting for their slot. */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * A new interval (the service's rate changed). The schedule keeps its anchor: the next slot is
   * one new interval after the last one, so a slower rate applies to the very next send and a
   * faster one does not wait out the old interval.
   */
  setInterval(intervalMs: number): void {
    assertInterval(intervalMs);
    if (intervalMs === this.intervalMs) return;
    this.intervalMs = intervalMs;
    if (this.lastSlot > -Infinity) this.next = this.lastSlot + intervalMs;
    this.rearm();
  }

  /**
   * Re-anchors the schedule on an instant the receiving server saw (pacing on the server's
   * acceptance): the next slot is one interval after `at`, earlier or later than planned.
   */
  anchor(at: number): void {
    this.lastSlot = at;
    this.next = at + this.intervalMs;
    this.rearm();
  }

  /** No slot before `at` (a takeover learned of a later send by the previous owner). */
  holdUntil(at: number): void {
    if (at > this.next) {
      this.next = at;
      this.rearm();
    }
  }

  /**
   * Queues one send: `fn(at)` runs synchronously when its slot comes (`at`: the release instant),
   * or `fn(null)` if the pacer is cleared first.
   */
  schedule(fn: Waiter): void {
    this.queue.push({ fn, since: this.clock.now() });
    if (!this.cancelWake && !this.draining) this.drain();
  }

  /** Drops every waiting send (each callback runs with null). */
  clear(): void {
    this.cancelWake?.();
    this.cancelWake = undefined;
    for (const w of this.queue.splice(0)) w.fn(null);
  }

  private rearm(): void {
    if (!this.cancelWake || this.draining) return;
    this.cancelWake();
    this.cancelWake = undefined;
    this.drain();
  }

  private drain(): void {
    this.draining = true;
    try {
      this.drainLoop();
    } finally {
      this.draining = false;
    }
  }

  private drainLoop(): void {
    while (this.queue.length) {
      const now = this.clock.now();
      if (now < this.next) {
        this.cancelWake = this.clock.after(this.next - now, () => {
          this.cancelWake = undefined;
          this.drain();
        });
        return;
      }
      const w = this.queue.shift()!;
      // The slot this send takes: the one due, unless the send is later than CATCH_UP intervals
      // after it (idle, or a long stall), or arrived after it (idle: no credit for the wait).
      const slot = Math.max(this.next, w.since, now - CATCH_UP * this.intervalMs);
      this.lastSlot = slot;
      this.next = slot + this.intervalMs;
      this.released++;
      w.fn(now);
    }
  }
}

function assertInterval(ms: number): void {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`pacer interval must be a finite number >= 0, got ${ms}`);
}

export interface PaceViolation {
  /** Index (in sorted order) of the first send of the window. */
  from: number;
  /** Sends in the window beyond k + 1. */
  excess: number;
  /** The window's intervals. */
  k: number;
  start: number;
}

/**
 * The receiver-side rule, checked over a list of instants (ms, any order): in every window of k
 * intervals lasting at least `minWindowMs` (one second by default, at least one interval), at most
 * k + 1 sends. Returns the worst violation, or null when the rule holds.
 *
 * A window can be slid right to its first send without losing any, so only windows starting at a
 * send count: with t sorted, the window [t_i, t_i + kT] holds t_{i+m} iff t_{i+m} - t_i <= kT, and
 * it breaks the rule iff it holds t_{i+k+1}, i.e. t_{i+m} - t_i <= (m - 1)T for some m >= kmin + 1.
 * Each start scans forward until the span outgrows the sends by more than a window (beyond that
 * a violation would also show from a later start), so a paced list costs O(n x window).
 */
export function paceViolations(instants: readonly number[], intervalMs: number, minWindowMs = 1000): PaceViolation | null {
  const t = [...instants].sort((a, b) => a - b);
  const n = t.length;
  const T = intervalMs;
  if (T <= 0 || n < 2) return null;
  const kmin = Math.max(1, Math.ceil(minWindowMs / T - 1e-9));
  let worst: PaceViolation | null = null;
  for (let i = 0; i < n; i++) {
    // The window from t_i to t_j lasts k = max(kmin, ceil(span / T)) intervals and holds j - i + 1 sends.
    for (let j = i + kmin + 1; j < n; j++) {
      const span = t[j]! - t[i]!;
      const k = Math.max(kmin, Math.ceil(span / T - 1e-9));
      const count = j - i + 1;
      const excess = count - (k + 1);
      if (excess > 0 && (!worst || excess > worst.excess)) worst = { from: i, excess, k, start: t[i]! };
      // The span has outgrown the sends: a later bunch would also break the rule from a later start.
      if (span > (count + 2) * T + minWindowMs) break;
    }
  }
  return worst;
}
