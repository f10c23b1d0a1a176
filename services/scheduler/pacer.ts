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
 *   - Catching up is bounded: a send keeps at most catchUpMs(interval) of lateness, the larger of
 *     CATCH_UP x interval and CATCH_UP_MS (what the runner picks ahead of the slots: LOOKAHEAD_MS).
 *     Later than that, its slot moves to (release - catch-up). A send the server's answers hold
 *     (below) takes the slot they allow: that wait is the rule's, not lateness to catch up. A
 *     send that reaches the pacer after its slot (no message was ready) keeps the slot if it came
 *     within the catch-up,
 *     and otherwise starts at its own arrival. Idle time therefore banks no credit: after a
 *     pause, a quota reset or a restart the next sends come one interval apart, never in a burst.
 *     What the schedule lost, and why, is kept in `slip` (status: pacingSlipMs). Half an interval
 *     alone was 1 ms at 500 msg/s: W3 measured 100 to 180 ms a second lost to lateness of 1 to 2
 *     ms (a garbage collection, an outcome write's reply), and answers 3 to 20 ms late moved the
 *     100 msg/s schedule back for good, 1.5 to 2 % of its rate.
 *   - Intervals are fractional milliseconds (0.0333 s stays 33.3 ms; it is not rounded).
 *
 * Pacing on the server's acceptance. The rule is judged where the messages arrive: in any window
 * of k intervals lasting at least one second (or one interval for services slower than that),
 * the receiving server accepts at most k + 1. Between a release here and the server's acceptance
 * lie a connection's set-up (the first message of a new SMTP connection), MAIL/RCPT/DATA round
 * trips, and whatever stalls the sender's or the server's process; a message held up by more than
 * an interval, followed by ones that are not, lands k + 2 in a window. (A service with connections
 * to spare holds its sends: the server has each one but for its end before its release, so the
 * road from release to answer is one round trip; see delivery/held-send.ts and the runner's
 * holdsSends.) So the pacer also keeps each release behind the server's answers: with
 * n = max(1, ceil(1 s / interval)),
 *
 *   - send j is not released before answer(i) + (j - i - 1) x interval, for every i <= j - n - 1
 *     whose answer came (answered(i, at): the instant the sender saw the server's reply);
 *   - send j waits while a send i <= j - n - 1 has no answer yet.
 *
 * Why that is the rule at the server, whatever the delays: the server accepts message i before it
 * answers it (acc(i) <= answer(i)) and message j after it was released (acc(j) >= release(j)), so
 * acc(j) - acc(i) >= release(j) - answer(i) > (j - i - 1) x interval for every pair at least n + 1
 * apart, and a window of k >= n intervals holding k + 2 messages would need such a pair closer
 * than that (paceViolations below checks exactly that). Both instants are measured on monotonic
 * clocks of their own process, so no clock is compared across processes. Pairs closer than n + 1
 * need no bound: any window the rule counts lasts n intervals or more and may hold n + 1.
 *
 * A schedule starts on the server's answer. The first send of a schedule (the first ever, after a
 * restart or a takeover, or the first after an idle second, when the pool's connection may be
 * new) often takes a connection's set-up before the server accepts it; had the second kept its
 * slot, the server would see the two closer than an interval and a short run would read above
 * its rate. So the second send goes no sooner than one interval after the first one's answer,
 * and the schedule goes on from there: one latency lost per start.
 *
 * What it costs: when a message takes longer than an interval from release to answer (a new
 * connection, a stalled server), the sends from n + 1 on behind it move back by the excess, for
 * good: the rule itself demands it (a message late by d at the server leaves a window that can
 * take only what comes d - interval later, and the sends between keep their slots). So does a send
 * released late, by what exceeds an interval: lateness under an interval costs nothing, beyond it
 * the worst of each window (n + 1 sends) is paid once. While answers come within an interval,
 * nothing moves.
 *
 * The same bound keeps the rule on the dispatch side: answer(i) >= release(i), so release(j) -
 * release(i) > (j - i - 1) x interval for every pair at least n + 1 apart, and no window of k >= n
 * intervals holds k + 2 releases. Windows shorter than a second may: after a stall, the sends
 * within the catch-up go back to back (`paceViolations` checks windows of at least one second, or
 * one interval).
 *
 * States of a waiting send: waiting -> released (callback ran) | dropped (clear(): the service
 * stopped; the callback runs with `null`, so the caller puts its message and unit back).
 *
 * The clock is injected (PacerClock) so the unit tests drive time and delay callbacks at will.
 */

/** The share of an interval a late send may keep (see above). */
export const CATCH_UP = 0.5;
/** The lateness a send may keep however short the interval (ms): the runner's LOOKAHEAD_MS. */
export const CATCH_UP_MS = 20;

/** How late a send may go and keep its slot (ms). */
export function catchUpMs(intervalMs: number): number {
  return Math.max(CATCH_UP * intervalMs, CATCH_UP_MS);
}

export interface PacerClock {
  /** Now, in milliseconds with sub-millisecond precision. */
  now(): number;
  /** Calls `fn` after about `ms` (late is fine, early is checked by the caller); returns a cancel. */
  after(ms: number, fn: () => void): () => void;
}

/** Epoch milliseconds with sub-millisecond precision (Date.now() has whole milliseconds). */
export const preciseNow = (): number => performance.timeOrigin + performance.now();

/**
 * The real clock: timers only. A timer resolves whole milliseconds and fires up to a millisecond or
 * so late, so a wait sleeps until about a millisecond before the instant, then one more millisecond
 * (the pacer re-checks the time on every wake-up). A send released up to about a millisecond after
 * its slot keeps the slot (catchUpMs), so this costs no rate. It used to yield with setImmediate
 * through the last millisecond instead: at 500 msg/s (2 ms intervals) that kept the main thread
 * runnable half the time: W3's engine CPU went from 55.6 s to 35.9 s without it (one full run each,
 * same rates at the server within the runs' noise).
 */
export const realPacerClock: PacerClock = {
  now: preciseNow,
  after(ms, fn) {
    const t = setTimeout(fn, Math.max(1, Math.floor(ms - 1)));
    return () => clearTimeout(t);
  },
};

/** Runs when the send may go: `at` is the release instant and `seq` its number (0, 1, ...), or null when dropped. */
type Waiter = (at: number | null, seq: number) => void;

/** Guards the strict inequality of the rule against rounding (ms). */
const ANSWER_MARGIN_MS = 0.01;

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
  /** Sends released so far (for status and tests); the next release's number. */
  released = 0;
  /** Released sends with no answer yet, and the lowest number that may be among them. */
  private readonly unanswered = new Set<number>();
  private oldestUnanswered = 0;
  /** Answers (send number, instant) sorted by number, not yet folded into `answerFloor`. */
  private readonly answers: { seq: number; at: number }[] = [];
  /** max over folded answers of (at - (seq + 1) x interval): send j waits until answerFloor + j x interval. */
  private answerFloor = -Infinity;
  /** A drain stopped on a send with no answer: answered() resumes it. */
  private awaitingAnswer = false;
  /**
   * Where the schedule moved back, in ms summed over the run (each move is time the rate lost for
   * good): `late`, sends released more than the catch-up after their slot (this process was busy);
   * `starved`, sends that reached the pacer after their slot (no message was ready: picking,
   * composing, the connections or the concurrency; gaps of a second or more count as idle, not
   * here); `answers`, sends held back by the server's answers (pacing on acceptance, above).
   */
  readonly slip = { late: 0, starved: 0, answers: 0 };
  /**
   * The send that started the schedule (the first, or the first after an idle second) and its
   * answer: the next send waits for one interval after that answer (see the header).
   */
  private anchor: { seq: number; at: number | null } | null = null;
  /** Instant of the last release (ms). */
  private lastRelease = -Infinity;

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
    // The answers' bound for the next send stays where it was; later sends follow the new interval.
    if (this.answerFloor > -Infinity) this.answerFloor += this.released * (this.intervalMs - intervalMs);
    this.intervalMs = intervalMs;
    if (this.lastSlot > -Infinity) this.next = this.lastSlot + intervalMs;
    this.rearm();
  }

  /**
   * The server answered send `seq` (accepted or refused it) at `at`, as the sender saw it (after
   * the server's acceptance). Every released send must be answered once, also a failed one.
   */
  answered(seq: number, at: number): void {
    if (!this.unanswered.delete(seq)) return;
    if (this.anchor?.seq === seq) this.anchor.at = at;
    if (this.intervalMs > 0) {
      // Answers come nearly in release order (several connections may swap neighbours).
      let i = this.answers.length;
      while (i > 0 && this.answers[i - 1]!.seq > seq) i--;
      this.answers.splice(i, 0, { seq, at });
    }
    if (this.awaitingAnswer && !this.draining) {
      this.awaitingAnswer = false;
      this.drain();
    }
  }

  /**
   * From when a new schedule (another runner, process or engine taking the service over, its
   * slots one interval apart from its first) keeps the rule with the sends of this one: the
   * answers' bound for the next send here, every answer folded (conservative: closer pairs too).
   * The runner holds the service until then when it stops (service-runner.ts, stop()).
   */
  quietAt(): number {
    if (this.intervalMs <= 0) return -Infinity;
    let floor = this.answerFloor;
    for (const a of this.answers) floor = Math.max(floor, a.at - (a.seq + 1) * this.intervalMs);
    return floor + this.released * this.intervalMs + ANSWER_MARGIN_MS;
  }

  /** Sends per window the rule counts: the window lasts at least one second or one interval. */
  private get windowSends(): number {
    return Math.max(1, Math.ceil(1000 / this.intervalMs - 1e-9));
  }

  /**
   * The earliest instant send `seq` may go by the answers of the sends n + 1 or more before it
   * (see the header), or null while one of those has no answer yet.
   */
  private answerBound(seq: number): number | null {
    if (this.intervalMs <= 0) return -Infinity;
    const last = seq - this.windowSends - 1;
    while (this.oldestUnanswered < this.released && !this.unanswered.has(this.oldestUnanswered)) this.oldestUnanswered++;
    if (this.oldestUnanswered <= last) return null;
    let folded = 0;
    for (const a of this.answers) {
      if (a.seq > last) break;
      this.answerFloor = Math.max(this.answerFloor, a.at - (a.seq + 1) * this.intervalMs);
      folded++;
    }
    if (folded) this.answers.splice(0, folded);
    return this.answerFloor + seq * this.intervalMs + ANSWER_MARGIN_MS;
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
    for (const w of this.queue.splice(0)) w.fn(null, -1);
  }

  private rearm(): void {
    if (!this.cancelWake || this.draining) return;
    this.cancelWake();
    this.cancelWake = undefined;
    this.drain();
  }

  private noteSlip(ms: number, cause: 'late' | 'starved' | 'answers'): void {
    if (cause === 'starved' && ms >= IDLE_GAP_MS) return;
    this.slip[cause] += ms;
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
      let bound = this.answerBound(this.released);
      if (bound !== null && this.anchor && this.released === this.anchor.seq + 1) {
        bound = this.anchor.at === null ? null : Math.max(bound, this.anchor.at + this.intervalMs);
      }
      if (bound === null) {
        this.awaitingAnswer = true; // answered() resumes
        return;
      }
      const due = Math.max(this.next, bound);
      if (now < due) {
        this.cancelWake = this.clock.after(due - now, () => {
          this.cancelWake = undefined;
          this.drain();
        });
        return;
      }
      const w = this.queue.shift()!;
      // The slot this send takes: the one due, unless the send goes more than the catch-up after
      // it (this process was busy), or reached the pacer more than the catch-up after it (idle: no
      // credit for the wait). A slot the answers held back starts there: the answers' bound moves
      // every later send too (its floor is a running maximum), so the schedule follows it.
      const tol = catchUpMs(this.intervalMs);
      const held = Math.min(bound, now);
      const arrived = w.since - this.next <= tol ? -Infinity : w.since;
      const slot = Math.max(this.next, arrived, now - tol, held);
      // The first send of the pacer loses nothing (no rate before it), however long after the
      // start or notBefore it comes: the claims and the first composition, not a shortfall.
      if (slot > this.next && this.next > -Infinity && this.released > 0)
        this.noteSlip(slot - this.next, slot === held ? 'answers' : slot === arrived ? 'starved' : 'late');
      this.lastSlot = slot;
      this.next = slot + this.intervalMs;
      const seq = this.released++;
      if (this.intervalMs > 0) {
        this.unanswered.add(seq);
        if (this.anchor && seq > this.anchor.seq) this.anchor = null;
        if (now - this.lastRelease >= IDLE_GAP_MS) this.anchor = { seq, at: null };
      }
      this.lastRelease = now;
      w.fn(now, seq);
    }
  }
}

/** Gaps this long or longer are idle time, not a shortfall of the rate. */
const IDLE_GAP_MS = 1000;

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
