/**
 * Dynamic concurrency of one sending service (the executor scaling of
 * ../shared/seeds/001_adcbe310e2c338d4.txt, applied to SMTP sends):
 *
 *   - up by `step` when the backlog exceeds twice the current concurrency and sends are healthy
 *     (the average latency is under `healthyLatencyMs` and the last sends did not fail), at most
 *     once per `upIntervalMs`;
 *   - down by `step` when the backlog falls under half the current concurrency, at most once per
 *     `downIntervalMs` (longer: a backlog that comes and goes should not make the pool flap);
 *   - up by `step` at once when a paced service's schedule waits on the concurrency (starved():
 *     every allowed send on the wire and none ready for the next slot), healthy and at most once
 *     per STARVED_UP_MS: the pacer, not the connections, is what limits a paced service's rate,
 *     and a ramp of one step a second left W3's 100 msg/s service (latency 10-30 ms) with 2 sends
 *     on the wire for its first second, 2 to 7 % of a 10-second run lost;
 *   - never under the initial concurrency (an idle service starts its next campaign at once) nor
 *     over maxConnections; a lower maxConnections applies at once.
 *
 * Pure: the caller passes the time (the scheduler's injectable clock) and the observations, so
 * the policy is tested without sleeping.
 */

export interface ConcurrencyOptions {
  /** Concurrency a service starts with (bounded by its maxConnections). */
  initial: number;
  /** Sends added or removed per change. */
  step: number;
  /** Least time between two scale-ups, and since the last change. */
  upIntervalMs: number;
  /** Least time between two scale-downs, and since the last change. */
  downIntervalMs: number;
  /** Average send latency at or above which the service does not scale up. */
  healthyLatencyMs: number;
}

export interface ConcurrencySnapshot {
  current: number;
  max: number;
  backlog: number;
  /** Exponentially weighted average send latency (ms); null before the first send. */
  latencyMs: number | null;
  lastChange: 'up' | 'down' | null;
}

/** Weight of the newest latency sample in the moving average. */
const LATENCY_WEIGHT = 0.2;
/** Least time between two scale-ups for a starved schedule: long enough for the new sends to answer. */
export const STARVED_UP_MS = 100;

export class ConcurrencyController {
  private value: number;
  private max: number;
  private floor: number;
  private latency: number | null = null;
  private failedRecently = false;
  private backlog = 0;
  private lastUpAt: number;
  private lastDownAt: number;
  private lastChange: 'up' | 'down' | null = null;

  constructor(
    private readonly opts: ConcurrencyOptions,
    maxConnections: number,
    now: number,
  ) {
    this.max = Math.max(1, maxConnections);
    this.floor = Math.max(1, Math.min(opts.initial, this.max));
    this.value = this.floor;
    this.lastUpAt = now;
    this.lastDownAt = now;
  }

  get current(): number {
    return this.value;
  }

  /** A send finished: its latency, from dispatch to the server's reply (ms). */
  observeLatency(latencyMs: number): void {
    this.latency = this.latency === null ? latencyMs : this.latency + LATENCY_WEIGHT * (latencyMs - this.latency);
  }

  /** The last send failed at the connection or server (true), or succeeded (false). */
  setFailing(failing: boolean): void {
    this.failedRecently = failing;
  }

  /** maxConnections changed: the bound applies at once. */
  setMax(maxConnections: number): void {
    this.max = Math.max(1, maxConnections);
    this.floor = Math.max(1, Math.min(this.opts.initial, this.max));
    this.value = Math.max(this.floor, Math.min(this.value, this.max));
  }

  get healthy(): boolean {
    return !this.failedRecently && (this.latency === null || this.latency < this.opts.healthyLatencyMs);
  }

  /**
   * A paced service's schedule waits on the concurrency (every allowed send on the wire, none
   * waiting for its slot, sendable work left): up by `step` if healthy, under maxConnections and
   * no scale-up in the last STARVED_UP_MS. Returns whether it went up.
   */
  starved(now: number): boolean {
    if (!this.healthy || this.value >= this.max || now - this.lastUpAt < STARVED_UP_MS) return false;
    this.stepUp(now);
    return true;
  }

  /** Up by one step, at most maxConnections; the last scale-up for both rules. */
  private stepUp(now: number): void {
    this.value = Math.min(this.max, this.value + this.opts.step);
    this.lastUpAt = now;
    this.lastChange = 'up';
  }

  /** Decides with the current backlog at `now`; returns the concurrency to use. */
  adjust(backlog: number, now: number): number {
    this.backlog = backlog;
    const { step, upIntervalMs, downIntervalMs } = this.opts;
    const sinceChange = now - Math.max(this.lastUpAt, this.lastDownAt);
    if (
      backlog > this.value * 2 &&
      this.healthy &&
      this.value < this.max &&
      now - this.lastUpAt >= upIntervalMs &&
      sinceChange >= upIntervalMs
    ) {
      this.stepUp(now);
    } else if (
      backlog < this.value / 2 &&
      this.value > this.floor &&
      now - this.lastDownAt >= downIntervalMs &&
      sinceChange >= downIntervalMs
    ) {
      this.value = Math.max(this.floor, this.value - step);
      this.lastDownAt = now;
      this.lastChange = 'down';
    }
    return this.value;
  }

  snapshot(): ConcurrencySnapshot {
    return {
      current: this.value,
      max: this.max,
      backlog: this.backlog,
      latencyMs: this.latency === null ? null : Math.round(this.latency),
      lastChange: this.lastChange,
    };
  }
}
