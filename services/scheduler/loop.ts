/**
 * QueueScheduler: delivers the pre-generated queues through the sending services. This file is
 * the loop only: start, stop, the control tick, the heartbeat, status. The work is done by:
 *
 *   fleet.ts           the service runners, their locks, service sync, picks, wait reasons
 *   campaign-pool.ts   the campaigns, their buffers of claimed messages, refills, templates
 *   outcomes.ts        the outcome writer (continuous, one commit at a time)
 *   service-runner.ts  one service's slots: unit -> pick (pick.ts) -> pace (pacer.ts) -> send -> Decision (send.ts)
 *   sql/               one file per group of statements; sql/counters.ts is the one counters/completion rule
 *
 * Imports run one way: loop -> fleet, outcomes -> service-runner -> pick, send, pacer ->
 * campaign-pool, fair-ring -> sql -> kernel.
 *
 * The scheduler's states, asserted (state.ts):  stopped -> running (start) -> stopping (stop) -> stopped
 *
 * A control tick (every SCHEDULER_TICK_MS, never two at once), in order:
 *   1. generate the queues of due campaigns (exactly once across engines);
 *   2. reload services: new ones start, changed ones update, disabled or deleted ones stop;
 *   3. reload campaigns: new sending ones join the rings of the services their user may use;
 *      paused or cancelled ones leave, and their claimed messages are released (or cancelled,
 *      with the user's credit refunded);
 *   4. wake campaigns whose retry backoff or send window has come, and refill low buffers;
 *   5. start new services once the campaigns' first claims have landed;
 *   6. write the outcomes not written yet (written continuously; this retries a failed write);
 *   7. record why campaigns with work cannot send (no usable service); 8. adjust concurrency.
 * The heartbeat (every HEARTBEAT_MS, on its own timer) renews this engine's leases and recovers
 * the leases and quota holds of engines that stopped.
 *
 * A subtask moves queued -> sending (claimed, leased to this engine) -> sent | failed | cancelled,
 * or back to queued (retry with backoff, released on pause or shutdown), or to unknown
 * (at-most-once, outcome lost). A crash loses at most the outcomes of the write under way and the
 * messages in flight, whose leases then expire and are recovered: resent with the same Message-ID
 * under at-least-once, marked unknown under at-most-once. Nothing is dropped silently.
 */
import { checksCertificates, tlsModeOf, type TlsMode } from '../delivery/tls-policy.js';
import { EventEmitter } from 'node:events';
import { availableParallelism, hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { DateTime } from 'luxon';
import type { ServiceContext } from '../context.js';
import type { Generator } from '../generation.js';
import { CampaignPool } from './campaign-pool.js';
import type { ConcurrencySnapshot } from './concurrency.js';
import { Fleet } from './fleet.js';
import { OutcomeWriter } from './outcomes.js';
import type { DeliveryMode } from './send.js';
import { ServiceLocks } from './service-locks.js';
import type { ScopeStatus, WarmupStatus } from '../deliverability/shaper.js';
import { heartbeat, liveInstances, recoverExpiredLeases, unregister } from './sql/leases.js';
import { returnQuotaHolds } from './sql/quota.js';
import { StateMachine } from './state.js';
import { isConnectionError } from '../kernel/db.js';
import { resolveSendWorkers, SendWorkerPool, type SendWorkerStatus } from '../delivery/worker-transport.js';

export type { DeliveryMode } from './send.js';
export type { SentEvent } from './fleet.js';

/** While the database is unreachable, the scheduler logs it at most this often. */
const DB_DOWN_LOG_MS = 5000;

export interface ServiceStatus {
  id: number;
  name: string;
  state: 'running' | 'disabled' | 'unhealthy' | 'exhausted' | 'stopped';
  sendingRate: number;
  /** Sends under way now: handed to the SMTP transport, outcome not known yet (not those waiting for their pacing slot). */
  inFlight: number;
  /**
   * Send slots alive: from the quota unit taken until the outcome is committed (on the wire, or
   * sent and waiting for the outcome write). The messages a crash could resend are among them.
   * Never more than `commitWindow`.
   */
  uncommitted: number;
  /** The crash bound of this service: UNCOMMITTED_PER_CONNECTION x maxConnections (service-runner.ts). */
  commitWindow: number;
  sent: number;
  campaigns: number;
  sendableCampaigns: number;
  activeUsers: number;
  consecutiveFailures: number;
  exhaustedUntil: Date | null;
  lastSentAt: Date | null;
  /**
   * Fairness: the largest lag of a user behind an ideal round robin on this service, in turns
   * (turns owed while the user had sendable work, minus turns got). Below 1 for a perfect round robin.
   */
  fairnessLag: number;
  /**
   * Where the pacing schedule lost time since this engine took the service (ms, pacer.ts slip): sends
   * released late because this process was busy, sends with no message ready at their slot, and
   * sends held back by the server's answers. Their sum over the time running is the rate's shortfall.
   */
  pacingSlipMs: { late: number; starved: number; answers: number };
  /**
   * Sends held at the server but for their end before their slot, then released, since this engine
   * took the service (delivery/held-send.ts; only services with connections to spare hold).
   */
  heldSends: number;
  /** Dynamic concurrency: current concurrent sends, its bound (maxConnections), the backlog it was decided on. */
  concurrency: ConcurrencySnapshot;
  /** How the connection is protected: implicit TLS, STARTTLS required, or STARTTLS when offered. */
  tlsMode: TlsMode;
  /** False when certificate checking is off (`tlsInsecure` or `tls.rejectUnauthorized: false`). */
  certificateChecking: boolean;
  /**
   * Per mailbox provider this service has sent to: its state (normal, slowed, suspended until ...),
   * rate in force against configured, last deferral reply, deferrals, caps and counts; and the
   * service's warm-up schedules with today's day and cap (docs/deliverability.md).
   */
  deliverability: { providers: ScopeStatus[]; warmup: WarmupStatus[] };
}

export interface SchedulerStatus {
  isRunning: boolean;
  instanceId: string;
  startedAt: Date | null;
  deliveryMode: DeliveryMode;
  activeServices: number;
  activeCampaigns: number;
  bufferedMessages: number;
  pendingOutcomes: number;
  /** Messages released unsent because their lease might have lapsed (the engine was stalled). */
  leaseLapses: number;
  /** Messages sent back to the queue (not_before) because their (service, provider) pair was blocked for a while. */
  deferredByThrottle: number;
  /** The send worker threads (SEND_WORKERS; threads 0: SMTP work on the main thread), their restarts and lost sends. */
  sendWorkers: SendWorkerStatus;
  processingRate: { perMinute1: number; perMinute5: number; perMinute15: number };
  services: ServiceStatus[];
}

export interface InstanceInfo {
  id: string;
  host: string;
  pid: number;
  startedAt: Date;
  heartbeatAt: Date;
  /** Sending services the engine owns (as of its last heartbeat). */
  services: number[];
  /** This process. */
  self: boolean;
}

export interface SchedulerOptions {
  generator: Generator;
  /** Connection string for the service-ownership lock connection. */
  databaseUrl: string;
}

export class QueueScheduler extends EventEmitter {
  readonly instanceId = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  private readonly ctx: ServiceContext;
  private readonly generator: Generator;
  private readonly machine = new StateMachine<'stopped' | 'running' | 'stopping'>(
    'scheduler',
    { stopped: ['running'], running: ['stopping'], stopping: ['stopped'] },
    'stopped',
  );
  private readonly fleet: Fleet;
  private readonly outcomes: OutcomeWriter;
  private pool: CampaignPool;
  private controlTimer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  /** The pass queued behind the one under way (see tick). */
  private nextTick: Promise<void> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeating = false;
  /** Every lease of this engine is valid until then (ms, real clock): the last heartbeat plus LEASE_TTL_MS. */
  private leasesValidUntil = 0;
  private startedAt: Date | null = null;
  private readonly mode: DeliveryMode;
  private readonly locks: ServiceLocks;
  /** The send worker threads of the current run (kept after stop for its status). */
  sendPool: SendWorkerPool | undefined;
  /** Database outage: since when (ms), when last logged, connection errors since then. */
  private dbDownSince: number | null = null;
  private dbDownLoggedAt = 0;
  private dbErrors = 0;

  constructor(ctx: ServiceContext, opts: SchedulerOptions) {
    super();
    this.ctx = ctx;
    this.generator = opts.generator;
    this.mode = ctx.config.deliveryMode as DeliveryMode;
    this.locks = new ServiceLocks(opts.databaseUrl, ctx.logger, () => (this.fleet.locksLost = true));
    this.outcomes = new OutcomeWriter({
      db: ctx.schedulerDb,
      owner: this.instanceId,
      logger: ctx.logger,
      collectSpent: () => this.fleet.collectSpent(),
      onWritten: (outcomes) => this.emit('written', { outcomes }),
      onError: (err, where) => this.fail(err, where),
    });
    this.fleet = new Fleet({
      ctx,
      instanceId: this.instanceId,
      mode: this.mode,
      locks: this.locks,
      outcomes: this.outcomes,
      events: this,
      leaseValid: () => this.leaseValid(),
      onError: (err, where) => this.fail(err, where),
      sendPool: () => this.sendPool,
    });
    this.pool = this.newPool();
    // An 'error' event with no listener would throw; errors are logged instead.
    this.on('error', () => undefined);
  }

  private newPool(): CampaignPool {
    const { config } = this.ctx;
    const pool = new CampaignPool({
      db: this.ctx.schedulerDb,
      owner: this.instanceId,
      now: () => this.ctx.clock().toJSDate(),
      leaseMs: config.leaseTtlMs,
      claimBatch: config.claimBatchSize,
      budget: 20_000,
      onSendable: (c, sendable) => this.fleet.setSendable(c, sendable),
      onError: (err, c) => this.fail(err, `claim for campaign ${c.id}`),
      onPlace: (c) => this.fleet.place(c),
      onGone: (c) => this.fleet.remove(c),
      onRelease: (items, as) => {
        const at = this.now().toJSDate();
        for (const item of items)
          this.outcomes.push(item, { status: as, serviceId: null, at, messageId: null, error: null, notBefore: null, attempt: 0 });
      },
      carried: (c) => this.fleet.carried(c),
    });
    this.fleet.pool = pool;
    return pool;
  }

  private now(): DateTime {
    return this.ctx.clock();
  }

  /**
   * Never send on a lease that may have lapsed: another engine may have recovered it and be
   * sending it too. The margin covers the time a send may take to start.
   */
  private leaseValid(): boolean {
    const margin = Math.max(200, this.ctx.config.leaseTtlMs / 5);
    return this.leasesValidUntil - margin >= Date.now();
  }

  private fail(err: unknown, where: string): void {
    this.emit('error', err);
    if (isConnectionError(err)) {
      // The database is away: every step of every tick fails the same way (hundreds of errors in
      // a few seconds). One line when it goes, then one a DB_DOWN_LOG_MS with the count, and one
      // when a tick runs clean again.
      this.dbErrors++;
      const now = Date.now();
      if (this.dbDownSince !== null && now - this.dbDownLoggedAt < DB_DOWN_LOG_MS) return;
      this.dbDownSince ??= now;
      this.dbDownLoggedAt = now;
      this.ctx.logger.error({ err, where, errors: this.dbErrors }, 'scheduler: database unreachable, retrying every tick');
      this.dbErrors = 0;
      return;
    }
    this.ctx.logger.error({ err, where }, 'scheduler error');
  }

  get isRunning(): boolean {
    return this.machine.is('running');
  }

  async start(): Promise<void> {
    if (!this.machine.is('stopped')) return;
    this.machine.to('running');
    this.startedAt = new Date();
    this.pool = this.newPool();
    const threads = resolveSendWorkers(this.ctx.config.sendWorkers, availableParallelism());
    this.sendPool = threads > 0 ? new SendWorkerPool({ threads, logger: this.ctx.logger }) : undefined;
    await this.heartbeat().catch((err: unknown) => this.fail(err, 'heartbeat'));
    this.heartbeatTimer = setInterval(
      () => void this.heartbeat().catch((err: unknown) => this.fail(err, 'heartbeat')),
      this.ctx.config.heartbeatMs,
    );
    this.heartbeatTimer.unref();
    await this.tick();
    this.controlTimer = setInterval(() => void this.pass(), this.ctx.config.schedulerTickMs);
    this.controlTimer.unref();
    this.ctx.logger.info({ instanceId: this.instanceId, mode: this.mode }, 'scheduler started');
  }

  /**
   * One control pass (see the header), begun after this call: what was committed before it (a
   * pause, a new campaign) is seen when it resolves. Ticks never overlap: a call during a pass
   * queues one more after it, shared by every call made meanwhile (the pass under way may have
   * read the campaigns before the caller's change). A failure inside a tick is reported, never
   * allowed to stop the loop. Tests call it directly instead of waiting for the timer.
   */
  tick(): Promise<void> {
    if (!this.ticking) return this.pass();
    this.nextTick ??= this.ticking.then(() => {
      this.nextTick = undefined;
      return this.pass();
    });
    return this.nextTick;
  }

  /** The timer's pass: joins the one under way, if any (a pass longer than the period skips a beat). */
  private pass(): Promise<void> {
    this.ticking ??= this.runTick().finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async runTick(): Promise<void> {
    if (!this.isRunning) return;
    const steps: [string, () => Promise<unknown>][] = [
      ['generate', () => this.generator.processScheduledTasks(this.ctx.config.schedulerBatchSize, this.now())],
      ['services', () => this.fleet.syncServices()],
      ['campaigns', () => this.pool.sync()],
      ['refill', async () => this.pool.refillDue()],
      // New services start once the campaigns' first claims have landed, so the first round is
      // already fair (a service started earlier would serve whichever buffer filled first).
      ['start services', () => this.fleet.startNewRunners()],
      ['flush', () => this.outcomes.flushOnce()],
      ['wait reasons', () => this.fleet.updateWaitReasons()],
      ['concurrency', async () => this.fleet.adjustConcurrency()],
    ];
    let clean = true;
    for (const [name, step] of steps) {
      if (!this.isRunning) return;
      try {
        await step();
      } catch (err) {
        clean = false;
        this.fail(err, `tick: ${name}`);
      }
    }
    if (clean && this.dbDownSince !== null) {
      this.ctx.logger.warn({ downMs: Date.now() - this.dbDownSince }, 'scheduler: database reachable again');
      this.dbDownSince = null;
      this.dbErrors = 0;
    }
    this.emit('tick');
  }

  /**
   * Heartbeat: renew every lease this engine holds, then recover expired ones. On its own timer,
   * not inside the tick: a tick may wait on claims or a slow flush, and leases must not lapse
   * while it does.
   */
  private async heartbeat(): Promise<void> {
    if (this.heartbeating) return;
    this.heartbeating = true;
    try {
      // Leases live as long as this heartbeat is fresh on the database's clock: real elapsed time,
      // so the guard reads the real clock too, not the (injectable) scheduling clock.
      const sentAt = Date.now();
      const now = this.now().toJSDate();
      await heartbeat(this.ctx.schedulerDb, {
        id: this.instanceId,
        host: hostname(),
        pid: process.pid,
        services: [...this.fleet.runners.keys()].sort((a, b) => a - b),
      });
      // Stalled past the lease: another engine may have recovered this one's leases and quota
      // holds meanwhile, so the units held locally may be back in the quota. Not used.
      if (this.leasesValidUntil > 0 && sentAt > this.leasesValidUntil) this.fleet.forfeitUnits();
      this.leasesValidUntil = sentAt + this.ctx.config.leaseTtlMs;
      await this.recoverExpired(now);
    } finally {
      this.heartbeating = false;
    }
  }

  private async recoverExpired(now: Date): Promise<void> {
    const recovered = await recoverExpiredLeases(this.ctx.schedulerDb, { now, ttlMs: this.ctx.config.leaseTtlMs, mode: this.mode });
    if (recovered.requeued || recovered.unknown) {
      this.ctx.logger.warn(recovered, 'recovered expired leases');
      for (const c of this.pool.campaigns.values()) c.wakeAt = Math.min(c.wakeAt ?? Infinity, now.getTime());
    }
    // Quota units a dead engine had reserved and not used go back to the quota (the exact ledger).
    const returned = await returnQuotaHolds(this.ctx.schedulerDb, { ttlMs: this.ctx.config.leaseTtlMs });
    if (returned) this.ctx.logger.warn({ units: returned }, 'returned the unused quota units of a stopped engine');
  }

  /** Writes every pending outcome now (see OutcomeWriter.flush). */
  flush(): Promise<void> {
    return this.outcomes.flush();
  }

  /**
   * Stops delivery: timers stop, in-flight sends finish (within SHUTDOWN_GRACE_MS), their outcomes
   * are written, claimed but unsent messages are released, unused quota is given back, transports
   * close. Safe to call twice.
   */
  async stop(): Promise<void> {
    if (!this.machine.is('running')) return;
    this.machine.to('stopping');
    if (this.controlTimer) clearInterval(this.controlTimer);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    await this.nextTick?.catch(() => undefined);
    await this.ticking?.catch(() => undefined);
    await this.fleet.stopAll(this.ctx.config.shutdownGraceMs);
    await this.sendPool?.close();
    await this.pool.idle();
    for (const c of this.pool.campaigns.values()) this.pool.retire(c, 'queued');
    this.pool.campaigns.clear();
    try {
      await this.outcomes.flush();
      // Spent units are written: what is left of this engine's holds is unused. Back to the quota.
      await returnQuotaHolds(this.ctx.schedulerDb, { instance: this.instanceId, ttlMs: this.ctx.config.leaseTtlMs });
    } catch (err) {
      this.fail(err, 'stop');
    }
    // The services go free even when the writes above failed: another engine takes them over and
    // recovers what was left, as after a crash. After the writes, so none starts before they commit.
    await this.locks.close();
    try {
      await unregister(this.ctx.schedulerDb, this.instanceId);
    } catch (err) {
      this.fail(err, 'stop');
    }
    this.machine.to('stopped');
    this.ctx.logger.info({ instanceId: this.instanceId }, 'scheduler stopped');
  }

  /**
   * Live engines on this database (this one included while it runs): heartbeat within three
   * heartbeat intervals, with the services each one owns. Read from PostgreSQL, so every process
   * answers the same.
   */
  async instances(): Promise<InstanceInfo[]> {
    const rows = await liveInstances(this.ctx.apiDb, this.ctx.config.heartbeatMs * 3);
    return rows.map((r) => ({
      id: r.id,
      host: r.host,
      pid: r.pid,
      startedAt: r.started_at,
      heartbeatAt: r.heartbeat_at,
      services: r.services.map(Number),
      self: r.id === this.instanceId,
    }));
  }

  status(): SchedulerStatus {
    const services = [...this.fleet.runners.values()].map((r): ServiceStatus => ({
      id: r.id,
      name: r.row.name,
      state: r.state,
      sendingRate: r.rate,
      inFlight: r.sending,
      uncommitted: r.uncommitted,
      commitWindow: r.commitWindow,
      sent: r.sent,
      campaigns: r.ring.size,
      sendableCampaigns: r.ring.sendableCount,
      activeUsers: r.ring.activeUsers,
      fairnessLag: r.ring.worstLag(),
      pacingSlipMs: { ...r.pacer.slip },
      heldSends: r.heldSends,
      consecutiveFailures: r.failures,
      exhaustedUntil: r.exhaustedUntil !== null ? new Date(r.exhaustedUntil) : null,
      lastSentAt: r.lastSentAt,
      concurrency: r.concurrency.snapshot(),
      tlsMode: tlsModeOf(r.row.transport),
      certificateChecking: checksCertificates(r.row.transport),
      deliverability: { providers: r.shaper.status(), warmup: r.shaper.warmupStatus() },
    }));
    const { meter } = this.fleet;
    return {
      isRunning: this.isRunning,
      instanceId: this.instanceId,
      startedAt: this.startedAt,
      deliveryMode: this.mode,
      activeServices: services.filter((s) => s.state === 'running').length,
      activeCampaigns: this.pool.campaigns.size,
      bufferedMessages: this.pool.buffered,
      pendingOutcomes: this.outcomes.pending,
      leaseLapses: this.fleet.leaseLapses,
      deferredByThrottle: this.fleet.deferred,
      sendWorkers: this.sendPool?.status() ?? { threads: 0, restarts: 0, lostSends: 0, lastCrash: null },
      processingRate: { perMinute1: meter.perMinute(1), perMinute5: meter.perMinute(5), perMinute15: meter.perMinute(15) },
      services,
    };
  }
}
