/**
 * One sending service: its own timer, its own rate limiter (bottleneck: `minTime` is the service's
 * `sending_rate`, `maxConcurrent` its dynamic concurrency; a plain p-queue when it has no rate
 * limit, see slot-limiter.ts), its own pooled SMTP transport, its own share of its daily quota, and
 * its own FairRing of the campaigns it may carry.
 *
 * Each slot submitted to the limiter, when the limiter starts it: takes one quota unit (reserved
 * from PostgreSQL in small batches, never beyond the daily quota), asks the ring for the next
 * campaign (fair order is decided at dispatch time, so pauses and new campaigns count at once),
 * and sends that campaign's next message. The timer keeps a few slots queued while there is work;
 * a finished slot queues the next one, so a fast service is self-clocked and a slow one waits on
 * `minTime` alone.
 *
 * States: running -> exhausted (quota used up; until the next local midnight) -> running;
 * running -> unhealthy (after N consecutive connection or server failures; probed with
 * transport.verify() on a doubling backoff) -> running; disabled and deleted services stop.
 */
import type { Transporter } from 'nodemailer';
import type { DateTime } from 'luxon';
import { classifySendError } from '../delivery/classify.js';
import { createServiceTransport } from '../delivery/transport.js';
import { ConcurrencyController, type ConcurrencyOptions } from './concurrency.js';
import { createSlotLimiter, type SlotLimiter } from './slot-limiter.js';
import { FairRing } from '../fair-ring.js';
import { nextQuotaReset, quotaDayOf } from '../quota-day.js';
import { releaseQuota, reserveQuota, saveServiceHealth, type ServiceRow } from './sql.js';
import type { Sequelize } from 'sequelize';
import type { Keyring } from '../kernel/secrets.js';

export interface RunnerHost {
  db: Sequelize;
  /** Opens the row's stored secrets when the transport is built. */
  secrets: Keyring;
  clock: () => DateTime;
  tickMs: number;
  unhealthyAfter: number;
  probeBackoffMs: number;
  concurrency: ConcurrencyOptions;
  /** Sends one message through this runner; resolves when its outcome is known. False: nothing to send. */
  sendOne(runner: ServiceRunner): Promise<boolean>;
  onError(err: unknown, where: string): void;
  onStateChange(runner: ServiceRunner): void;
  onConcurrencyChange(runner: ServiceRunner, from: number): void;
}

/** Sends reserved from the database at once: about one second's worth, at least 1, at most 100. */
export function quotaBatch(sendingRate: number): number {
  return sendingRate <= 0 ? 100 : Math.max(1, Math.min(100, Math.floor(1 / sendingRate)));
}

const MAX_PROBE_BACKOFF_MS = 5 * 60_000;

/** Services sending more often than this get the precise (yielding) end of the dispatch wait. */
const SPIN_BELOW_MS = 250;

/** Epoch milliseconds with sub-millisecond precision (Date.now() has whole milliseconds). */
const preciseNow = (): number => performance.timeOrigin + performance.now();

export class ServiceRunner {
  readonly id: number;
  row: ServiceRow;
  readonly ring = new FairRing();
  private limiter: SlotLimiter;
  readonly concurrency: ConcurrencyController;
  transport: Transporter;
  private transportKey: string;
  private timer: NodeJS.Timeout | undefined;
  private readonly host: RunnerHost;
  /** Quota units reserved in the database and not used yet, and the quota day they belong to. */
  private units = 0;
  private unitsDay = '';
  private reserving: Promise<void> | undefined;
  private healthWrite: Promise<void> = Promise.resolve();
  private healthError: string | null = null;
  exhaustedUntil: number | null = null;
  healthy: boolean;
  failures: number;
  nextProbeAt: number | null = null;
  private probeBackoff: number;
  private probing = false;
  /** No dispatch before this instant (ms): the service's interval, also across restarts. */
  private notBefore: number;
  inFlight = 0;
  sent = 0;
  private started = false;
  private lastSlotAt = 0;
  private lastDispatchAt = 0;
  private releasing = false;
  lastSentAt: Date | null;
  stopped = false;

  constructor(row: ServiceRow, host: RunnerHost) {
    this.id = row.id;
    this.row = row;
    this.host = host;
    this.healthy = row.is_healthy;
    this.failures = row.consecutive_failures;
    this.probeBackoff = host.probeBackoffMs;
    this.lastSentAt = row.last_sent_at;
    if (!this.healthy) this.nextProbeAt = Date.now();
    // Keep the interval across a restart: the last reservation was followed by up to one batch of sends.
    const last = row.last_sent_at ? row.last_sent_at.getTime() : 0;
    this.notBefore = last + this.rate * 1000 * quotaBatch(this.rate);
    this.concurrency = new ConcurrencyController(host.concurrency, row.max_connections, host.clock().toMillis());
    this.limiter = createSlotLimiter(this.minTime, this.concurrency.current);
    this.transportKey = this.keyOf(row);
    this.transport = createServiceTransport(row.transport, row.max_connections, row.dkim, this.host.secrets);
  }

  get rate(): number {
    return Number(this.row.sending_rate);
  }

  private get minTime(): number {
    return Math.round(this.rate * 1000);
  }

  private keyOf(r: ServiceRow): string {
    return JSON.stringify([r.transport, r.max_connections, r.dkim]);
  }

  /** May this service take work now? */
  get usable(): boolean {
    return !this.stopped && this.row.enabled && this.healthy && this.exhaustedUntil === null;
  }

  /** Why not, for status and campaign wait reasons. */
  get state(): 'running' | 'disabled' | 'unhealthy' | 'exhausted' | 'stopped' {
    if (this.stopped) return 'stopped';
    if (!this.row.enabled) return 'disabled';
    if (!this.healthy) return 'unhealthy';
    if (this.exhaustedUntil !== null) return 'exhausted';
    return 'running';
  }

  /** The failure that made it unhealthy, or the last probe's (for campaign wait reasons). */
  get lastError(): string | null {
    return this.healthError;
  }

  start(): void {
    this.started = true;
    this.timer = setInterval(() => this.tick(), this.host.tickMs);
    this.timer.unref();
    this.tick();
  }

  /** Applies a changed row (rate, quota, connections, transport, enabled) without losing state. */
  update(row: ServiceRow): void {
    const rateChanged = Number(row.sending_rate) !== this.rate || row.max_connections !== this.row.max_connections;
    const quotaChanged = row.daily_quota !== this.row.daily_quota || row.quota_timezone !== this.row.quota_timezone;
    const transportChanged = this.keyOf(row) !== this.transportKey;
    this.row = row;
    this.concurrency.setMax(row.max_connections);
    if (rateChanged) {
      // A slot already queued waits with the old interval (a 60 s service would ignore a new
      // 0.02 s rate for a minute): replace the limiter, and keep the interval since the last send.
      void this.limiter.stop();
      this.limiter = createSlotLimiter(this.minTime, this.concurrency.current);
      if (this.lastSlotAt > 0) this.notBefore = this.lastSlotAt + this.minTime;
    }
    if (quotaChanged) this.exhaustedUntil = null; // a raised quota takes effect at once
    if (transportChanged) {
      const old = this.transport;
      this.transport = createServiceTransport(row.transport, row.max_connections, row.dkim, this.host.secrets);
      this.transportKey = this.keyOf(row);
      setTimeout(() => old.close(), 5000).unref(); // let in-flight sends on the old pool finish
      this.healthy = true;
      this.failures = 0;
      this.nextProbeAt = null;
    }
  }

  /** The service timer: leave exhaustion at reset, probe when unhealthy, keep slots queued. */
  tick(): void {
    if (this.stopped) return;
    const now = this.host.clock().toMillis();
    if (this.exhaustedUntil !== null && now >= this.exhaustedUntil) {
      this.exhaustedUntil = null;
      this.host.onStateChange(this);
    }
    if (!this.healthy && !this.probing && this.nextProbeAt !== null && Date.now() >= this.nextProbeAt) void this.probe();
    // Reserved units this runner cannot use now (unhealthy, disabled, or no work) go back to the
    // database, so the quota shown is the quota really used and other engines may use the rest.
    if (this.units > 0 && !this.reserving && !this.releasing && (!this.usable || this.ring.sendableCount === 0) && this.inFlight === 0) {
      void this.releaseUnits();
    }
    this.pump();
  }

  private async releaseUnits(): Promise<void> {
    this.releasing = true;
    const n = this.units;
    this.units = 0;
    try {
      await releaseQuota(this.host.db, { serviceId: this.id, n, day: this.unitsDay });
    } catch (err) {
      this.units += n;
      this.host.onError(err, `service ${this.id} quota release`);
    } finally {
      this.releasing = false;
    }
  }

  /**
   * Scales the concurrent sends with the backlog (messages left in the campaigns this service
   * carries); see concurrency.ts for the policy. Called by the scheduler's control tick.
   */
  adjustConcurrency(backlog: number): void {
    const before = this.concurrency.current;
    const after = this.concurrency.adjust(backlog, this.host.clock().toMillis());
    if (after === before) return;
    this.limiter.setConcurrency(after);
    this.host.onConcurrencyChange(this, before);
    this.pump();
  }

  /** Queues slots while there is sendable work, keeping the limiter's queue short. */
  pump(): void {
    // Slots wait in the gate for their instant; only a bound far ahead (a restart) holds them back.
    if (!this.started || !this.usable || this.notBefore - Date.now() > 1000 || this.ring.sendableCount === 0) return;
    const pending = this.limiter.pending;
    // Twice the concurrency: every connection busy, and one slot ready behind each. (Bounding this by
    // the number of sendable campaigns, as before, held a single campaign to two connections.)
    const target = this.concurrency.current * 2;
    for (let i = pending; i < target; i++) {
      this.limiter
        .schedule(() => this.slot())
        .then((didSend) => {
          if (didSend) this.pump();
        })
        .catch((err: unknown) => {
          if (!this.stopped) this.host.onError(err, `service ${this.id} slot`);
        });
    }
  }

  private async slot(): Promise<boolean> {
    if (!this.usable) return false;
    if (!(await this.takeUnit())) return false;
    this.inFlight++;
    try {
      const sent = await this.host.sendOne(this);
      if (!sent) this.units++; // nothing was picked: keep the unit for the next slot
      return sent;
    } finally {
      this.inFlight--;
    }
  }

  /** Takes one unit of the daily quota; reserves a batch from PostgreSQL when none is left locally. */
  private async takeUnit(): Promise<boolean> {
    const now = this.host.clock();
    const today = quotaDayOf(now, this.row.quota_timezone);
    if (today !== this.unitsDay) {
      this.units = 0; // units reserved on another day count for that day; never carry them over
      this.unitsDay = today;
    }
    if (this.units > 0) {
      this.units--;
      return true;
    }
    if (this.exhaustedUntil !== null) return false;
    this.reserving ??= this.reserve(now, today).finally(() => (this.reserving = undefined));
    await this.reserving;
    // Midnight passed while this slot waited: start over on the new day's quota.
    if (quotaDayOf(this.host.clock(), this.row.quota_timezone) !== today) return this.takeUnit();
    if (this.units > 0) {
      this.units--;
      return true;
    }
    return false;
  }

  private async reserve(now: DateTime, today: string): Promise<void> {
    const r = await reserveQuota(this.host.db, { serviceId: this.id, want: quotaBatch(this.rate), today, now: now.toJSDate() });
    // The quota day turned while the reservation ran: those units were counted on the day that
    // ended, and must not be spent on the new one (it would overshoot the new day's quota).
    if (this.unitsDay !== today) return;
    this.units += r.granted;
    if (r.granted === 0) {
      this.exhaustedUntil = nextQuotaReset(now, this.row.quota_timezone).toMillis();
      this.host.onStateChange(this);
    }
  }

  /**
   * The exact interval: bottleneck spaces slot starts, but a slot may wait on a quota reservation
   * before it dispatches, and the next one may not; and a busy event loop can hold one dispatch
   * until the next is due. So every dispatch passes this gate, which compares with the previous
   * dispatch as it really happened (and with the restart bound), and waits out the difference.
   *
   * The gate reads a sub-millisecond clock and, for intervals under SPIN_BELOW_MS, sleeps on a
   * timer only until about a millisecond before the instant and then yields with setImmediate
   * until it comes: timers fire up to a millisecond or two late, and since no send may come
   * sooner than the interval after the previous one, each late dispatch would push every later
   * one back (measured: a 100/s service achieved 89/s on timers alone).
   */
  async dispatch<T>(send: () => Promise<T>): Promise<{ at: number; result: Promise<T> }> {
    for (;;) {
      const now = preciseNow();
      const earliest = Math.max(this.notBefore, this.lastDispatchAt + this.minTime);
      if (now >= earliest) {
        this.lastDispatchAt = now;
        this.lastSlotAt = now;
        // Started in the same turn as the decision: nothing runs between the check and the send.
        const result = send();
        const observe = () => this.concurrency.observeLatency(preciseNow() - now);
        result.then(observe, observe);
        return { at: now, result };
      }
      const wait = earliest - now;
      if (this.minTime < SPIN_BELOW_MS && wait < 2) await new Promise((r) => setImmediate(r));
      else await new Promise((r) => setTimeout(r, this.minTime < SPIN_BELOW_MS ? Math.floor(wait - 1) : Math.ceil(wait)));
    }
  }

  /** A send the server definitely did not take gives its unit back (used by the next send). */
  giveBackUnit(): void {
    this.units++;
  }

  recordSuccess(at: Date): void {
    this.sent++;
    this.lastSentAt = at;
    this.concurrency.setFailing(false);
    // Only a message really sent proves the service works: the probe backoff starts over here.
    this.probeBackoff = this.host.probeBackoffMs;
    if (this.failures > 0) {
      this.failures = 0;
      void this.persistHealth(null);
    }
  }

  /** A connection or server failure: after `unhealthyAfter` in a row, stop and probe. */
  recordFailure(message: string): void {
    this.failures++;
    this.concurrency.setFailing(true);
    if (this.healthy && this.failures >= this.host.unhealthyAfter) {
      this.healthy = false;
      this.nextProbeAt = Date.now() + this.probeBackoff;
      this.host.onStateChange(this);
    }
    void this.persistHealth(message);
  }

  private async probe(): Promise<void> {
    this.probing = true;
    try {
      await this.transport.verify();
      this.healthy = true;
      this.failures = 0;
      this.nextProbeAt = null;
      // A server can pass the connection check and still fail every send: if it turns unhealthy
      // again before one message gets through, the next probe waits twice as long.
      this.probeBackoff = Math.min(this.probeBackoff * 2, MAX_PROBE_BACKOFF_MS);
      await this.persistHealth(null);
      this.host.onStateChange(this);
      this.pump();
    } catch (err) {
      this.probeBackoff = Math.min(this.probeBackoff * 2, MAX_PROBE_BACKOFF_MS);
      this.nextProbeAt = Date.now() + this.probeBackoff;
      // Classified as a send's failure would be, so a TLS failure still says `TLS: ...`.
      await this.persistHealth(classifySendError(err).message);
    } finally {
      this.probing = false;
    }
  }

  /**
   * Writes the health state. Writes are chained, and each one writes the state as it is when it
   * runs: two writes racing on two pool connections could otherwise land out of order and leave
   * the row saying healthy after the runner turned unhealthy.
   */
  private persistHealth(error: string | null): Promise<void> {
    this.healthError = error?.slice(0, 1000) ?? null;
    this.healthWrite = this.healthWrite.then(async () => {
      try {
        await saveServiceHealth(this.host.db, {
          id: this.id,
          healthy: this.healthy,
          failures: this.failures,
          error: this.healthError,
          nextProbeAt: this.nextProbeAt ? new Date(this.nextProbeAt) : null,
          lastSentAt: this.lastSentAt,
        });
      } catch (err) {
        this.host.onError(err, `service ${this.id} health`);
      }
    });
    return this.healthWrite;
  }

  /** Stops taking work, waits for in-flight sends (bounded), gives back unused quota, closes the pool. */
  async stop(graceMs: number): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const drained = this.limiter.stop();
    let timeout: NodeJS.Timeout | undefined;
    await Promise.race([drained, new Promise((r) => (timeout = setTimeout(r, graceMs)))]);
    clearTimeout(timeout);
    await this.reserving?.catch(() => undefined);
    await this.healthWrite;
    try {
      await releaseQuota(this.host.db, { serviceId: this.id, n: this.units, day: this.unitsDay });
      this.units = 0;
      await saveServiceHealth(this.host.db, {
        id: this.id,
        healthy: this.healthy,
        failures: this.failures,
        error: null,
        nextProbeAt: null,
        lastSentAt: this.lastSentAt,
      });
    } catch (err) {
      this.host.onError(err, `service ${this.id} stop`);
    }
    this.transport.close();
  }

  get unitsHeld(): number {
    return this.units;
  }

  get resetAt(): Date {
    return nextQuotaReset(this.host.clock(), this.row.quota_timezone).toJSDate();
  }
}
