/**
 * One sending service: its own timer, its own pacing schedule (pacer.ts: the k-th send is due at
 * t0 + k x interval), its own pooled SMTP transport, its own share of its daily quota, and its own
 * FairRing of the campaigns it may carry.
 *
 * The runner owns its send slots end to end: unit -> pick -> pace -> send -> apply the Decision.
 * A slot takes one quota unit (reserved from PostgreSQL in small batches, never beyond the daily
 * quota; the next batch is reserved while half of this one is left, so a fast service never waits
 * on the database in front of its schedule), asks for the next message in fair order (pick.ts,
 * through the host; decided at slot time, so pauses and new campaigns count at once), checks and
 * composes it (send.ts), holds it at the server but for its end when the service has connections to
 * spare (holdsSends, delivery/held-send.ts), waits in the pacer for its slot, sends (or lets the held
 * message's end go), and applies the Decision send.ts
 * makes of the result: the unit is spent or returned here, the health recorded here, the outcome,
 * bounce, error count and events handed to the host. A paced service has at most `concurrency`
 * sends on the wire and at most lookaheadFor(interval) slots that have picked a message and wait
 * for their slot (about LOOKAHEAD_MS worth): a message is never picked much before it can go. A
 * service with no rate limit runs at most `concurrency` slots, twice that once the concurrency is
 * at maxConnections (one message queued behind each connection). See mayStartSlot.
 *
 * The crash bound. A dispatched send's slot stays alive, in `committing`, until the outcome write
 * that carries it commits (OutcomeWriter.pushCommitted), but it leaves the concurrency as soon as
 * the server has answered, so the connection sends the next message meanwhile. What it still
 * counts against is the service's commit window: at most UNCOMMITTED_PER_CONNECTION x
 * maxConnections slots are alive at once (from the unit taken to the outcome committed). A
 * message is held by its slot from the pick to the commit, so what a crash can resend, whether on
 * the wire, waiting for the outcome write or in the write under way, is at most that window per
 * service; and while the database is away, sends stop when the window is full instead of piling
 * outcomes up in memory.
 *
 * A slot's states, asserted (state.ts):
 *
 *   idle -> unit (a quota unit held) -> picked -> paced (held at the server but for its end when the
 *        service holds its sends, holdsSends; then waiting in the pacer) -> sending
 *        -> committing (the outcome written, waiting for its commit) -> done
 *   idle -> done (no unit: exhausted, unusable); unit -> done (nothing to pick: unit returned);
 *   picked -> done (decided before the send); paced -> done (not dispatched: the service stopped)
 *
 * The service's states: running -> exhausted (quota used up; until the next local midnight) ->
 * running; running -> unhealthy (after N consecutive failures that are the service's fault, see
 * classify's serviceFault; probed with transport.verify() on a doubling backoff) -> running;
 * disabled and deleted services stop.
 */
import { DateTime } from 'luxon';
import { classifySendError } from '../delivery/classify.js';
import type { MessageOptions, SendableTemplate } from '../delivery/message.js';
import type { ServiceTransport } from '../delivery/worker-transport.js';
import { ConcurrencyController, type ConcurrencyOptions } from './concurrency.js';
import { Pacer, preciseNow } from './pacer.js';
import { FairRing } from './fair-ring.js';
import { nextQuotaReset, quotaDayOf } from '../quota-day.js';
import { releaseQuota, reserveQuota, type SpentUnits } from './sql/quota.js';
import { saveServiceHealth, type ServiceRow } from './sql/services.js';
import { markDispatched } from './sql/outcomes.js';
import { afterSend, beforeSend, checkDecision, compose, notDispatched, withdrawn, type Decision, type SendPolicy } from './send.js';
import type { Picked } from './pick.js';
import type { CampaignState, Claimed } from './campaign-pool.js';
import { StateMachine, type Transitions } from './state.js';
import type { Sequelize } from 'sequelize';
import type { Keyring } from '../kernel/secrets.js';
import { ServiceShaper, type ReplyDecision, type ShaperOptions } from '../deliverability/shaper.js';
import { resolveShaping, serviceShapingSchema, type ShapingTableInput } from '../deliverability/shaping.js';
import { applyReplyRule } from './send.js';
import { CapLedger } from '../deliverability/cap-ledger.js';
import { capStore } from './sql/caps.js';

/**
 * Hands one message to the transport when the pacer's slot comes: resolves with the dispatch
 * instant and the send's result; with the instant alone when `wanted` said no at the slot (nothing
 * was sent); or null when the service stopped first (nothing was sent).
 */
export type Dispatch = <T>(
  send: () => Promise<T>,
  /** Checked at the slot, before the send: false withdraws the message (its campaign was paused or cancelled meanwhile). */
  wanted: () => boolean,
) => Promise<{ at: number; result: Promise<T> } | { at: number; result?: undefined } | null>;

type SlotState = 'idle' | 'unit' | 'picked' | 'paced' | 'sending' | 'committing' | 'done';
const SLOT: Transitions<SlotState> = {
  idle: ['unit', 'done'],
  unit: ['picked', 'done'],
  picked: ['paced', 'done'],
  paced: ['sending', 'done'],
  sending: ['committing', 'done'],
  committing: ['done'],
  done: [],
};

/** What the host learns of a dispatched send besides the Decision (for the 'sent' event). */
export interface SendInfo {
  dispatchedAt: number;
  messageId: string;
}

export interface RunnerHost {
  db: Sequelize;
  /** Opens the row's stored secrets when the transport is built. */
  secrets: Keyring;
  /** The service's SMTP transport: pooled nodemailer in this thread, or on the send worker threads (SEND_WORKERS). */
  createTransport(row: ServiceRow): ServiceTransport;
  /** The engine instance: quota holds are recorded under it. */
  instanceId: string;
  clock: () => DateTime;
  tickMs: number;
  unhealthyAfter: number;
  probeBackoffMs: number;
  concurrency: ConcurrencyOptions;
  /** The next message for this runner in fair order (pick.ts over the engine's campaigns). */
  pick(runner: ServiceRunner): Picked | undefined;
  /** What a send needs from the engine. */
  policy: SendPolicy;
  messageOptions: MessageOptions;
  template(id: number): SendableTemplate | undefined;
  /** May this engine send on its leases now (its last heartbeat is fresh enough)? */
  leaseValid(): boolean;
  /**
   * The engine's part of a Decision: outcome, error count, bounce, put back or wake, events.
   * For a dispatched send, resolves once its outcome is committed (the slot waits for it).
   */
  record(runner: ServiceRunner, c: CampaignState, item: Claimed, d: Decision, info: SendInfo | null): Promise<void> | undefined;
  onError(err: unknown, where: string): void;
  onStateChange(runner: ServiceRunner): void;
  onConcurrencyChange(runner: ServiceRunner, from: number): void;
  /** The install-wide shaping table (DELIVERABILITY_SHAPING_FILE), under each service's own settings. */
  shapingFile: ShapingTableInput;
  /** A deliverability rule matched a reply: the pair slowed, suspended, or the message alone. */
  onThrottle(runner: ServiceRunner, provider: string, rule: ReplyDecision): void;
}

/**
 * The commit window, per connection of the service (see the header): slots alive at once, from the
 * unit taken until the outcome is committed, at most this times maxConnections. It must cover a
 * service's sends during about two outcome writes (the one under way and the next, which carries
 * them), which under load take 15-30 ms each. With 1 (a slot held until its commit, e569d1b) W1
 * fell to a fifth of its ceiling. Measured with 5 connections, unlimited rate, 10,000 messages,
 * alternating on a loaded machine: 4 per connection made 769, 452 and 545 msg/s (the window full
 * most of the time), 8 made 781, 720 and 717.
 */
export const UNCOMMITTED_PER_CONNECTION = 8;

/**
 * How long ahead of its slot a paced service's message may be picked (ms): enough to ride out a
 * stall of this process (an outcome write's result, a refill, a garbage collection) without the
 * schedule starving, short enough that a pause, a cancel or a new campaign counts at the next
 * slots. W3 at 500 msg/s lost 1-2 s of a 10 s run to starvation with two messages ahead (4 ms).
 */
export const LOOKAHEAD_MS = 20;

/**
 * Paced slots that may have picked a message and wait for their slot: LOOKAHEAD_MS worth, at least
 * 2 (1 for services slower than one a second). A service that holds its sends (holdsSends) looks
 * HOLD_AHEAD_MS ahead, as far as its connections allow with one left for the send on the wire: a
 * held message reaches the pacer only once the server has it but for its end, three round trips
 * after it was picked, and on a busy machine 20 ms did not cover that (W3 at 100 msg/s beside a
 * busy core: about 1 s of the minute starved).
 */
export function lookaheadFor(intervalMs: number, maxConnections = 1): number {
  if (intervalMs >= 1000) return 1;
  const ahead = Math.max(2, Math.ceil(LOOKAHEAD_MS / intervalMs));
  return holdsSends(intervalMs, maxConnections)
    ? Math.max(ahead, Math.min(maxConnections - 1, Math.ceil(HOLD_AHEAD_MS / intervalMs)))
    : ahead;
}

/** A service's slots, as the admission of a new one sees them. */
export interface SlotCounts {
  /** The service's interval (ms; 0: no rate limit). */
  intervalMs: number;
  concurrency: number;
  /** The service's maxConnections (the pool's bound). */
  maxConnections: number;
  commitWindow: number;
  /** Slots from the unit taken to the server's answer (those not dispatched yet included). */
  active: number;
  /** Of `active`, those not dispatched yet (taking a unit, picking, waiting in the pacer). */
  ahead: number;
  /** Slots answered, waiting for their outcome's commit. */
  committing: number;
}

/**
 * May one more slot start? At most commitWindow alive (the crash bound). Paced: at most
 * `concurrency` on the wire (dispatched, not answered) and lookaheadFor(interval) waiting for their
 * slot, so the next messages are picked and composed while earlier sends await their answers and
 * the schedule does not starve behind a busy moment of this process (W3 at 500 msg/s: about half
 * the starvation, with the concurrency counting the waiting slots too). No rate limit: at most
 * `concurrency` slots running, wherever they are; once the concurrency has reached maxConnections
 * (the pool's bound, so the connections in use still follow the concurrency), twice that: one
 * message on each connection and one queued behind it, so a connection that answers takes its
 * next message at once instead of idling while the answer travels to this thread and the next
 * message is picked, composed and handed back (W1: a message every 4.9 ms per connection against
 * the ceiling's 2.9 ms).
 */
export function mayStartSlot(c: SlotCounts): boolean {
  if (c.active + c.committing >= c.commitWindow) return false;
  if (c.intervalMs <= 0) return c.active < c.concurrency + (c.concurrency >= c.maxConnections ? c.concurrency : 0);
  return c.active - c.ahead < c.concurrency && c.ahead < lookaheadFor(c.intervalMs, c.maxConnections);
}

/**
 * Does a paced schedule wait on the concurrency alone? Every send it allows is on the wire, none
 * waits for its slot, and the commit window has room: a higher concurrency would start one more
 * (ConcurrencyController.starved decides whether it goes up). Never for a service without a rate
 * limit: there the concurrency follows the connections' health (adjust).
 */
export function starvesOnConcurrency(c: SlotCounts): boolean {
  return c.intervalMs > 0 && c.ahead === 0 && c.active >= c.concurrency && c.active + c.committing < c.commitWindow;
}

/** Services as slow as this or slower do not hold their sends (holdsSends). */
export const HOLD_MAX_INTERVAL_MS = 1000;
/** How far ahead a service that holds its sends picks them (lookaheadFor), and the connection time it needs for that. */
export const HOLD_AHEAD_MS = 2 * LOOKAHEAD_MS;

/**
 * Does a service hold its sends before their slots (delivery/held-send.ts)? A held send keeps a
 * connection from its envelope to its answer, so holding pays only where the connections have time
 * to spare, and is left to the services that have it:
 *   - paced and faster than one a second: slower, a message would wait up to an interval (a
 *     minute, say) in the middle of DATA, for rates where a late answer costs little anyway;
 *   - connections enough that, one on the wire, the others cover HOLD_AHEAD_MS of slots. Below
 *     that (500 msg/s on 5 connections: 8 ms), holding starved the schedule: W3 alone measured 3.5
 *     and 3.2 s of its minute with no held message ready at the slot, against 2.1 and 1.0 s unheld.
 */
export function holdsSends(intervalMs: number, maxConnections: number): boolean {
  return intervalMs > 0 && intervalMs < HOLD_MAX_INTERVAL_MS && (maxConnections - 1) * intervalMs >= HOLD_AHEAD_MS;
}

/** Sends reserved from the database at once: about one second's worth, at least 1, at most 100. */
export function quotaBatch(sendingRate: number): number {
  return sendingRate <= 0 ? 100 : Math.max(1, Math.min(100, Math.floor(1 / sendingRate)));
}

const MAX_PROBE_BACKOFF_MS = 5 * 60_000;

/** How long a transport replaced by a changed row stays open for the sends already on it (ms). */
const RETIRE_TRANSPORT_MS = 5000;

/** A `date` column as YYYY-MM-DD, whether the driver gave a string or a Date (at local midnight). */
function dayOf(d: string | Date): string {
  return typeof d === 'string' ? d.slice(0, 10) : DateTime.fromJSDate(d).toISODate()!;
}

export class ServiceRunner {
  readonly id: number;
  row: ServiceRow;
  readonly ring = new FairRing();
  readonly pacer: Pacer;
  readonly concurrency: ConcurrencyController;
  /** Throttles per mailbox provider: adaptive, capped, warmed up (deliverability/shaper.ts). */
  readonly shaper: ServiceShaper;
  /** The pairs' hourly, daily and warm-up caps, reserved in PostgreSQL (deliverability/cap-ledger.ts). */
  private readonly caps: CapLedger;
  private shaperKey: string;
  transport: ServiceTransport;
  private transportKey: string;
  /** Transports replaced by a changed row, closing once their sends have had RETIRE_TRANSPORT_MS. */
  private readonly retired = new Map<ServiceTransport, NodeJS.Timeout>();
  private timer: NodeJS.Timeout | undefined;
  private readonly host: RunnerHost;
  /** Quota units reserved in the database and not used yet, and the quota day they belong to. */
  private units = 0;
  private unitsDay = '';
  /**
   * The ledger's side of the units (see sql.ts reserveQuota): of `units`, `prepaid` are already
   * taken off this engine's hold in the database, so a crash counts them as used. Slots take
   * prepaid units first; a unit taken beyond them is `unpaid` until the next outcome write, which
   * takes the unpaid units off the hold and prepays the next few (twice what the last write
   * cycle used, at least twice the concurrency). So the quota is never overshot after a crash
   * (a unit in use is off the hold, except beyond a sudden burst), and what a crash costs is the
   * prepaid units it leaves, a write cycle's worth.
   */
  private prepaid = 0;
  private unpaid = new Map<string, number>();
  private takenSinceWrite = 0;
  private reserving: Promise<void> | undefined;
  private healthWrite: Promise<void> = Promise.resolve();
  private healthError: string | null = null;
  exhaustedUntil: number | null = null;
  healthy: boolean;
  failures: number;
  nextProbeAt: number | null = null;
  private probeBackoff: number;
  private probing = false;
  /** Slots running (from taking a unit to the send's outcome): at most the concurrency. */
  private active = 0;
  /** Slots whose send is over, waiting for their outcome's commit (state `committing`). */
  private committing = 0;
  /** Slots that have not dispatched yet (taking a unit, picking, waiting in the pacer). */
  private ahead = 0;
  private drained: (() => void)[] = [];
  /** Slots holding a unit and a message, from the quota unit taken until the outcome is known (waits in the pacer included). */
  inFlight = 0;
  /** Sends under way now: handed to the transport, outcome not known yet (what status reports as in flight). */
  sending = 0;
  sent = 0;
  /** Sends held at the server but for their end before their slot, then released (delivery/held-send.ts). */
  heldSends = 0;
  private started = false;
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
    this.concurrency = new ConcurrencyController(host.concurrency, row.max_connections, host.clock().toMillis());
    this.pacer = new Pacer(this.intervalMs, undefined, this.firstSlot(row));
    this.transportKey = this.keyOf(row);
    this.transport = this.host.createTransport(row);
    this.shaperKey = this.shaperKeyOf(row);
    this.caps = new CapLedger({
      store: capStore(host.db, row.id),
      now: () => host.clock().toMillis(),
      onReady: () => this.pump(),
      onError: (err) => host.onError(err, `service ${row.id} cap reservation`),
    });
    this.shaper = new ServiceShaper(this.shaperOptions(row));
  }

  private shaperKeyOf(r: ServiceRow): string {
    return JSON.stringify([r.deliverability, r.sending_rate, r.quota_timezone]);
  }

  /** The service's shaping: its own settings (validated when stored; re-checked here) over the install's. */
  private shaperOptions(row: ServiceRow): ShaperOptions {
    const own = serviceShapingSchema.safeParse(row.deliverability ?? {});
    if (!own.success) this.host.onError(own.error, `service ${row.id} deliverability settings (ignored)`);
    const rate = Number(row.sending_rate);
    return {
      shaping: resolveShaping(this.host.shapingFile, own.success ? own.data : null),
      serviceRate: rate > 0 ? 1 / rate : null,
      quotaZone: row.quota_timezone,
      clock: this.host.clock,
      ledger: this.caps,
    };
  }

  get rate(): number {
    return Number(this.row.sending_rate);
  }

  /** The interval in milliseconds, fractional (0.0333 s is 33.3 ms). */
  get intervalMs(): number {
    return this.rate * 1000;
  }

  /**
   * The first slot after this engine took the service over (a start, a restart, a takeover): the
   * previous owner let go of the service lock before this runner was made, so its sends came
   * before now, and one interval from now keeps the schedule. Sooner when the database shows no
   * send for longer than that: `last_sent_at` is the previous owner's last quota reservation, which
   * up to one batch of sends followed.
   */
  private firstSlot(row: ServiceRow): number {
    const now = preciseNow();
    const last = row.last_sent_at ? row.last_sent_at.getTime() : -Infinity;
    return Math.min(now + this.intervalMs, Math.max(now, last + this.intervalMs * quotaBatch(this.rate)));
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
    if (this.shaperKeyOf(row) !== this.shaperKey) {
      this.shaperKey = this.shaperKeyOf(row);
      this.shaper.update(this.shaperOptions(row));
    }
    this.concurrency.setMax(row.max_connections);
    // The schedule keeps its anchor: the next slot is one new interval after the last one.
    if (rateChanged) this.pacer.setInterval(this.intervalMs);
    if (quotaChanged) this.exhaustedUntil = null; // a raised quota takes effect at once
    // Units came back (a dead engine's holds were returned at lease recovery): use them today.
    if (
      this.exhaustedUntil !== null &&
      row.used_quota < row.daily_quota &&
      dayOf(row.quota_day) === quotaDayOf(this.host.clock(), row.quota_timezone)
    )
      this.exhaustedUntil = null;
    if (transportChanged) {
      const old = this.transport;
      this.transport = this.host.createTransport(row);
      this.transportKey = this.keyOf(row);
      // In-flight sends on the old pool finish; then it closes (at the latest when the runner stops).
      const retire = setTimeout(() => {
        this.retired.delete(old);
        old.close();
      }, RETIRE_TRANSPORT_MS);
      retire.unref();
      this.retired.set(old, retire);
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
    const prepaid = this.prepaid;
    this.units = 0;
    this.prepaid = 0;
    try {
      await releaseQuota(this.host.db, { serviceId: this.id, n, day: this.unitsDay, instance: this.host.instanceId });
    } catch (err) {
      this.units += n;
      this.prepaid += prepaid;
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
    this.host.onConcurrencyChange(this, before);
    this.pump();
  }

  /** Slots that may be alive at once, from the unit taken to the outcome committed (the crash bound). */
  get commitWindow(): number {
    return UNCOMMITTED_PER_CONNECTION * Math.max(1, this.row.max_connections);
  }

  /** Slots alive now: running, or waiting for their outcome's commit (at most commitWindow). */
  get uncommitted(): number {
    return this.active + this.committing;
  }

  /** What mayStartSlot and starvesOnConcurrency read. */
  private slotCounts(): SlotCounts {
    return {
      intervalMs: this.intervalMs,
      concurrency: this.concurrency.current,
      maxConnections: Math.max(1, this.row.max_connections),
      commitWindow: this.commitWindow,
      active: this.active,
      ahead: this.ahead,
      committing: this.committing,
    };
  }

  /**
   * Starts slots while there is sendable work and mayStartSlot allows (see the header). When a
   * paced schedule would starve on the concurrency (every allowed send on the wire, none waiting
   * for its slot), the concurrency goes up at once (ConcurrencyController.starved) and more start.
   */
  pump(): void {
    if (!this.started) return;
    for (;;) {
      if (!this.usable || this.ring.sendableCount === 0) return;
      const counts = this.slotCounts();
      if (mayStartSlot(counts)) {
        void this.slot();
        continue;
      }
      if (!starvesOnConcurrency(counts)) return;
      const before = this.concurrency.current;
      if (!this.concurrency.starved(this.host.clock().toMillis())) return;
      this.host.onConcurrencyChange(this, before);
    }
  }

  private async slot(): Promise<void> {
    this.active++;
    this.ahead++;
    const slot = new StateMachine<SlotState>('service slot', SLOT, 'idle');
    let dispatched = false;
    let pumpAfter = false;
    /** Moved from `active` to `committing` (see the header). */
    let leftConcurrency = false;
    const dispatch: Dispatch = (send, wanted) =>
      new Promise((resolve) => {
        this.pacer.schedule((at, seq) => {
          dispatched = true;
          this.ahead--;
          if (at === null) return resolve(null);
          if (!wanted()) {
            // Picked before its campaign was paused or cancelled: nothing goes out, the slot is spent.
            this.pacer.answered(seq, at);
            queueMicrotask(() => this.pump());
            return resolve({ at });
          }
          // Started in the same turn as the pacer's decision: nothing runs between the two.
          const result = send();
          this.sending++;
          const observe = (v: unknown) => {
            // A send worker thread stamps the answer when it sees it; in this thread, it is now.
            const now = preciseNow();
            const stamped = (v as { answeredAt?: unknown } | null)?.answeredAt;
            const answered = typeof stamped === 'number' ? Math.min(now, Math.max(at, stamped)) : now;
            // The server accepted (or refused) it before this instant: the pacer keeps the later
            // sends behind it, so the rule holds where the server counts (pacer.ts, header).
            this.pacer.answered(seq, answered);
            this.sending--;
            this.concurrency.observeLatency(answered - at);
          };
          result.then(observe, observe);
          resolve({ at, result });
          // The next slot picks its message while this one is on the wire.
          queueMicrotask(() => this.pump());
        });
      });
    try {
      if (!this.usable || !(await this.takeUnit())) return slot.to('done');
      slot.to('unit');
      this.inFlight++;
      try {
        const picked = this.host.pick(this);
        if (!picked) {
          this.giveBackUnit(); // nothing to send: the unit is kept for the next slot
          return slot.to('done');
        }
        slot.to('picked');
        // The pair's pace, concurrency and caps count from here (pick.ts asked shaper.blocked).
        const provider = picked.item.provider;
        const begun = this.shaper.begin(provider);
        let unsent = false;
        let committed: Promise<void> | undefined;
        try {
          const { decision, info } = await this.sendPicked(picked, slot, dispatch);
          // The pair's counts and cap units follow the quota unit (send.ts decides): back when the
          // server did not take the message (not sent, refused, never reached; every undispatched
          // Decision returns its unit), kept when it may have it.
          unsent = decision.unit === 'returned';
          // Nothing went out and the message is back in its buffer: no new slot at once (it would
          // pick the same message again before anything changed).
          pumpAfter = !(decision.putBack && info === null);
          committed = this.apply(picked, decision, info);
        } finally {
          this.shaper.end(provider, unsent ? begun : undefined);
        }
        if (committed) {
          // Held until the outcome is in the database (the crash bound, see the header), but out of
          // the concurrency: the connection takes the next message meanwhile.
          slot.to('committing');
          this.active--;
          this.committing++;
          leftConcurrency = true;
          this.pump();
          await committed;
        }
        slot.to('done');
      } finally {
        this.inFlight--;
      }
    } catch (err) {
      if (!this.stopped) this.host.onError(err, `service ${this.id} slot`);
    } finally {
      if (!dispatched) this.ahead--;
      if (leftConcurrency) this.committing--;
      else this.active--;
      if (this.active + this.committing === 0) for (const done of this.drained.splice(0)) done();
      if (pumpAfter) this.pump();
    }
  }

  /** picked -> (checks, compose, mark) -> paced -> sending: the Decision of one message. */
  private async sendPicked(
    { c, item }: Picked,
    slot: StateMachine<SlotState>,
    dispatch: Dispatch,
  ): Promise<{ decision: Decision; info: SendInfo | null }> {
    const now = this.host.clock();
    const early = beforeSend({ item, campaign: c, now, leaseValid: this.host.leaseValid() });
    if (early) return { decision: early, info: null };
    const composed = compose({
      template: this.host.template(item.templateId),
      campaign: c,
      item,
      options: this.host.messageOptions,
      serviceId: this.id,
      at: now.toJSDate(),
    });
    if (composed.decision) return { decision: composed.decision, info: null };
    const { mail } = composed;
    if (this.host.policy.mode === 'at-most-once') {
      const marked = await markDispatched(this.host.db, {
        taskId: item.taskId,
        contactId: item.contactId,
        messageId: mail.messageId,
        owner: this.host.instanceId,
      });
      if (!marked) return { decision: notDispatched('lease lost'), info: null };
    }
    slot.to('paced');
    const base = { item, serviceId: this.id, messageId: mail.messageId, policy: this.host.policy };
    // A paced send fast enough to hold goes to the server up to its end before its slot, and the
    // pacer's release lets the end go (delivery/held-send.ts): from release to answer is then one
    // round trip, and nothing before it can be late. Not to a provider whose pair paces itself
    // (its own rate, or slowed by deferrals): the pair's pace is kept at the pick (pick.ts), and a
    // held send's time from pick to release varies with its three round trips, which would bring
    // the pair's sends closer together at the server than its pace.
    const held =
      holdsSends(this.intervalMs, Math.max(1, this.row.max_connections)) && !this.shaper.pacesOwn(item.provider)
        ? this.transport.hold(mail)
        : null;
    if (held) {
      const since = preciseNow();
      const failed = await held.held.then(
        () => null,
        (error: unknown) => ({ error }),
      );
      if (failed) {
        // Refused or lost before it was held (the envelope, the connection): no slot taken.
        slot.to('sending');
        const info = { dispatchedAt: preciseNow(), messageId: mail.messageId };
        return { decision: this.failedSend(base, item, failed.error, info.dispatchedAt - since), info };
      }
      if (this.stopped) {
        held.drop();
        return { decision: notDispatched('stopped'), info: null };
      }
    }
    // A message picked ahead of its slot (mayStartSlot) goes only if its campaign still sends then.
    const sent = await dispatch(
      held
        ? () => {
            held.release();
            this.heldSends++;
            return held.result;
          }
        : () => this.transport.sendMail(mail),
      () => c.status === 'sending',
    );
    if (!sent || !sent.result) held?.drop();
    if (!sent) return { decision: notDispatched('stopped'), info: null };
    if (!sent.result) return { decision: withdrawn(c.status, this.host.clock().toJSDate()), info: null };
    slot.to('sending');
    const info = { dispatchedAt: sent.at, messageId: mail.messageId };
    try {
      const accepted = (await sent.result) as { response?: unknown } | undefined;
      const at = this.host.clock().toJSDate();
      return {
        decision: afterSend({ ...base, at, failed: false, response: accepted?.response, durationMs: preciseNow() - sent.at }),
        info,
      };
    } catch (error) {
      return { decision: this.failedSend(base, item, error, preciseNow() - sent.at), info };
    }
  }

  /** A failed send's Decision, the receiver's reply read against the deliverability rules (may slow or suspend the pair). */
  private failedSend(
    base: Omit<Parameters<typeof afterSend>[0], 'at' | 'failed' | 'durationMs'>,
    item: Claimed,
    error: unknown,
    durationMs: number,
  ): Decision {
    const at = this.host.clock().toJSDate();
    const d = afterSend({ ...base, at, failed: true, error, durationMs });
    const e = error as { response?: unknown; responseCode?: unknown } | null;
    if (typeof e?.responseCode !== 'number' && typeof e?.response !== 'string') return d;
    const reply = typeof e.response === 'string' ? e.response : String(e.responseCode);
    const rule = this.shaper.onReply(item.provider, reply, typeof e.responseCode === 'number' ? e.responseCode : undefined);
    if (rule.effect !== 'none') this.host.onThrottle(this, item.provider, rule);
    return applyReplyRule(d, rule, { at, retryDelayMs: this.host.policy.retryDelayMs });
  }

  /** Applies a Decision: the unit and the health here, the rest through the host. */
  private apply({ c, item }: Picked, d: Decision, info: SendInfo | null): Promise<void> | undefined {
    checkDecision(d);
    if (d.unit === 'returned') this.giveBackUnit();
    if (d.health === 'ok') this.recordSuccess(d.outcome!.at);
    else if (d.health === 'fault') this.recordFailure(d.error?.message ?? 'failure');
    return this.host.record(this, c, item, d, info);
  }

  /** Takes one unit of the daily quota; reserves a batch from PostgreSQL when none is left locally. */
  private async takeUnit(): Promise<boolean> {
    const now = this.host.clock();
    const today = quotaDayOf(now, this.row.quota_timezone);
    if (today !== this.unitsDay) {
      this.units = 0; // units reserved on another day count for that day; never carry them over
      this.prepaid = 0;
      this.unitsDay = today;
    }
    if (this.units > 0) {
      this.units--;
      this.spend(1);
      // Half the batch left: reserve the next one now, so no slot waits on the database.
      const batch = quotaBatch(this.rate);
      if (batch > 1 && this.units < batch / 2 && !this.reserving && this.exhaustedUntil === null) {
        this.reserving = this.reserve(now, today)
          .catch((err: unknown) => this.host.onError(err, `service ${this.id} quota reservation`))
          .finally(() => (this.reserving = undefined));
      }
      return true;
    }
    if (this.exhaustedUntil !== null) return false;
    this.reserving ??= this.reserve(now, today).finally(() => (this.reserving = undefined));
    await this.reserving;
    // Midnight passed while this slot waited: start over on the new day's quota.
    if (quotaDayOf(this.host.clock(), this.row.quota_timezone) !== today) return this.takeUnit();
    if (this.units > 0) {
      this.units--;
      this.spend(1);
      return true;
    }
    return false;
  }

  /** A unit taken (n = 1) or given back (n = -1). */
  private spend(n: number): void {
    if (n > 0) this.takenSinceWrite++;
    if (n > 0 && this.prepaid > 0) this.prepaid--;
    else if (n < 0 && !((this.unpaid.get(this.unitsDay) ?? 0) > 0)) this.prepaid++;
    else this.unpaid.set(this.unitsDay, (this.unpaid.get(this.unitsDay) ?? 0) + n);
  }

  /**
   * For the outcome write: the units to take off this engine's holds (the unpaid ones, and the
   * next prepaid ones), and how to undo that if the write fails.
   */
  takeSpent(): { spent: SpentUnits[]; undo: () => void } {
    const want = this.stopped ? 0 : Math.max(2 * this.concurrency.current, 2 * this.takenSinceWrite);
    const topUp = Math.max(0, Math.min(want - this.prepaid, this.units - this.prepaid));
    const unpaid = new Map(this.unpaid);
    if (topUp > 0) unpaid.set(this.unitsDay, (unpaid.get(this.unitsDay) ?? 0) + topUp);
    const spent = [...unpaid].filter(([, n]) => n !== 0).map(([day, n]) => ({ serviceId: this.id, day, n }));
    const before = { prepaid: this.prepaid, unpaid: this.unpaid, day: this.unitsDay };
    this.prepaid += topUp;
    this.unpaid = new Map();
    this.takenSinceWrite = 0;
    return {
      spent,
      undo: () => {
        if (this.unitsDay === before.day) this.prepaid = Math.max(0, this.prepaid - topUp);
        for (const [day, n] of before.unpaid) this.unpaid.set(day, (this.unpaid.get(day) ?? 0) + n);
      },
    };
  }

  /**
   * The engine's leases (and so its quota holds) may have been recovered by another engine while
   * it stalled: the units held here may already be back in the quota, so they are not used. What
   * is left of the hold returns at stop (or at recovery).
   */
  forfeitUnits(): void {
    this.units = 0;
    this.prepaid = 0;
  }

  private async reserve(now: DateTime, today: string): Promise<void> {
    const r = await reserveQuota(this.host.db, {
      serviceId: this.id,
      want: quotaBatch(this.rate),
      today,
      now: now.toJSDate(),
      instance: this.host.instanceId,
    });
    // The quota day turned while the reservation ran: those units were counted on the day that
    // ended, and must not be spent on the new one (it would overshoot the new day's quota).
    if (this.unitsDay !== today) return;
    this.units += r.granted;
    // Exhausted once the last local unit is gone too (a reservation ahead may come back empty).
    if (r.granted === 0 && this.units === 0) {
      this.exhaustedUntil = nextQuotaReset(now, this.row.quota_timezone).toMillis();
      this.host.onStateChange(this);
    }
  }

  /** A send the server definitely did not take gives its unit back (used by the next send). */
  private giveBackUnit(): void {
    this.units++;
    this.spend(-1);
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
    // Sends waiting for their slot are not sent: their messages and units go back (see Dispatch).
    this.pacer.clear();
    const drained = this.uncommitted === 0 ? Promise.resolve() : new Promise<void>((r) => this.drained.push(r));
    let timeout: NodeJS.Timeout | undefined;
    const graceEnd = Date.now() + graceMs;
    await Promise.race([drained, new Promise((r) => (timeout = setTimeout(r, graceMs)))]);
    clearTimeout(timeout);
    // The next owner starts a schedule of its own once the lock is free: keep the service until
    // the server's answers allow it (no wait unless the last answers came late; pacer.quietAt).
    const quiet = Math.min(this.pacer.quietAt() - preciseNow(), graceEnd - Date.now());
    if (quiet > 0) await new Promise((r) => setTimeout(r, Math.ceil(quiet)));
    await this.reserving?.catch(() => undefined);
    await this.healthWrite;
    try {
      await releaseQuota(this.host.db, { serviceId: this.id, n: this.units, day: this.unitsDay, instance: this.host.instanceId });
      this.units = 0;
      this.prepaid = 0;
      await this.caps.releaseAll(); // before the service lock goes: the next owner sees the row exact
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
    // Drained (or out of grace): nothing more goes on the replaced transports either.
    for (const [old, retire] of this.retired) {
      clearTimeout(retire);
      old.close();
    }
    this.retired.clear();
    this.transport.close();
  }

  get unitsHeld(): number {
    return this.units;
  }

  get resetAt(): Date {
    return nextQuotaReset(this.host.clock(), this.row.quota_timezone).toJSDate();
  }
}
