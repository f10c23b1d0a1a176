/**
 * QueueScheduler: delivers the pre-generated queues through the sending services.
 *
 * States: stopped -> running (start) -> stopping (stop) -> stopped. While running, one control
 * timer (every SCHEDULER_TICK_MS) keeps the engine in step with the database; each sending service
 * has its own runner with its own timer and rate limiter (service-runner.ts).
 *
 * A control tick, in order:
 *   1. heartbeat (and renew this engine's leases) every HEARTBEAT_MS;
 *   2. generate the queues of due campaigns (exactly once across engines);
 *   3. recover leases that expired (an engine died) every HEARTBEAT_MS;
 *   4. reload services: new ones start, changed ones update, disabled or deleted ones stop;
 *   5. reload campaigns: new sending ones join the rings of the services their user may use;
 *      paused or cancelled ones leave, and their claimed messages are released (or cancelled,
 *      with the user's credit refunded);
 *   6. wake campaigns whose retry backoff or send window has come, and refill low buffers;
 *   7. write the outcomes not written yet (written continuously; this retries a failed write);
 *   8. record why campaigns with work cannot send (no usable service).
 *
 * A subtask moves queued -> sending (claimed, leased to this engine) -> sent | failed | cancelled,
 * or back to queued (retry with backoff, released on pause or shutdown), or to unknown
 * (at-most-once, outcome lost). Outcomes are written continuously (each write starts when the
 * previous commits); a crash loses at most the outcomes of the write under way and the messages in
 * flight, whose leases then expire and are recovered: resent with the same Message-ID under
 * at-least-once, marked unknown under at-most-once. Nothing is dropped silently.
 */
import { checksCertificates, tlsModeOf, type TlsMode } from '../delivery/tls-policy.js';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { DateTime } from 'luxon';
import type { ServiceContext } from '../context.js';
import { buildMessage, compileForSending, type SendableTemplate } from '../delivery/message.js';
import { classifySendError } from '../delivery/classify.js';
import { parseReply, recipientDomain, type SmtpReply } from '../delivery/reply.js';
import { preciseNow } from './pacer.js';
import { isInsideWindow, nextSendTime } from '../send-window.js';
import type { Generator } from '../generation.js';
import { CampaignPool, CampaignState, type Claimed } from './campaign-pool.js';
import type { ConcurrencySnapshot } from './concurrency.js';
import { RateMeter } from './rate-meter.js';
import { ServiceRunner, type Dispatch, type RunnerHost } from './service-runner.js';
import { ServiceLocks } from './service-locks.js';
import * as sql from './sql.js';
import { isConnectionError } from '../kernel/db.js';

export type DeliveryMode = 'at-least-once' | 'at-most-once';

/** While the database is unreachable, the scheduler logs it at most this often. */
const DB_DOWN_LOG_MS = 5000;

export interface SentEvent {
  serviceId: number;
  taskId: number;
  contactId: number;
  email: string;
  messageId: string;
  dispatchedAt: number;
  at: Date;
}

export interface ServiceStatus {
  id: number;
  name: string;
  state: 'running' | 'disabled' | 'unhealthy' | 'exhausted' | 'stopped';
  sendingRate: number;
  /** Sends under way now: handed to the SMTP transport, outcome not known yet (not those waiting for their pacing slot). */
  inFlight: number;
  sent: number;
  campaigns: number;
  sendableCampaigns: number;
  activeUsers: number;
  consecutiveFailures: number;
  exhaustedUntil: Date | null;
  lastSentAt: Date | null;
  /** Dynamic concurrency: current concurrent sends, its bound (maxConnections), the backlog it was decided on. */
  concurrency: ConcurrencySnapshot;
  /** How the connection is protected: implicit TLS, STARTTLS required, or STARTTLS when offered. */
  tlsMode: TlsMode;
  /** False when certificate checking is off (`tlsInsecure` or `tls.rejectUnauthorized: false`). */
  certificateChecking: boolean;
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
  private readonly runners = new Map<number, ServiceRunner>();
  private pool: CampaignPool;
  private templates = new Map<number, SendableTemplate>();
  private outcomes: sql.Outcome[] = [];
  /** Attempt records not written yet: they go with the outcomes, in the same statement. */
  private attempts: sql.Attempt[] = [];
  private errors = new Map<string, { type: string; message: string; serviceId: number | null; count: number; at: Date }>();
  private bounced: number[] = [];
  private flushing: Promise<void> | undefined;
  private controlTimer: NodeJS.Timeout | undefined;
  /** A write is due to start (coalesces the outcomes of one turn of the event loop). */
  private writeKicked = false;
  private ticking: Promise<void> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeating = false;
  /** Every lease of this engine is valid until then (ms, real clock): the last heartbeat plus LEASE_TTL_MS. */
  private leasesValidUntil = 0;
  private running = false;
  private startedAt: Date | null = null;
  private readonly meter = new RateMeter();
  /** Messages not sent because their lease might have lapsed (a stalled engine); see sendOne. */
  private leaseLapses = 0;
  private readonly mode: DeliveryMode;
  private readonly locks: ServiceLocks;
  private locksLost = false;
  /** Database outage: since when (ms), when last logged, connection errors since then. */
  private dbDownSince: number | null = null;
  private dbDownLoggedAt = 0;
  private dbErrors = 0;

  constructor(ctx: ServiceContext, opts: SchedulerOptions) {
    super();
    this.ctx = ctx;
    this.generator = opts.generator;
    this.locks = new ServiceLocks(opts.databaseUrl, ctx.logger, () => (this.locksLost = true));
    this.mode = ctx.config.deliveryMode as DeliveryMode;
    this.pool = this.newPool();
    // An 'error' event with no listener would throw; errors are logged instead.
    this.on('error', () => undefined);
  }

  private newPool(): CampaignPool {
    const { config } = this.ctx;
    return new CampaignPool({
      db: this.ctx.schedulerDb,
      owner: this.instanceId,
      now: () => this.ctx.clock().toJSDate(),
      leaseMs: config.leaseTtlMs,
      claimBatch: config.claimBatchSize,
      budget: 20_000,
      onSendable: (c, sendable) => this.setSendable(c, sendable),
      onError: (err, c) => this.fail(err, `claim for campaign ${c.id}`),
    });
  }

  private now(): DateTime {
    return this.ctx.clock();
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
    return this.running;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.startedAt = new Date();
    this.pool = this.newPool();
    await this.heartbeat().catch((err: unknown) => this.fail(err, 'heartbeat'));
    this.heartbeatTimer = setInterval(
      () => void this.heartbeat().catch((err: unknown) => this.fail(err, 'heartbeat')),
      this.ctx.config.heartbeatMs,
    );
    this.heartbeatTimer.unref();
    await this.tick();
    this.controlTimer = setInterval(() => void this.tick(), this.ctx.config.schedulerTickMs);
    this.controlTimer.unref();
    this.ctx.logger.info({ instanceId: this.instanceId, mode: this.mode }, 'scheduler started');
  }

  /**
   * One control pass (see the header). Ticks never overlap; a failure inside a tick is reported,
   * never allowed to stop the loop. Tests call it directly instead of waiting for the timer.
   */
  tick(): Promise<void> {
    this.ticking ??= this.runTick().finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async runTick(): Promise<void> {
    if (!this.running) return;
    const steps: [string, () => Promise<unknown>][] = [
      ['generate', () => this.generator.processScheduledTasks(this.ctx.config.schedulerBatchSize, this.now())],
      ['services', () => this.syncServices()],
      ['campaigns', () => this.syncCampaigns()],
      ['refill', async () => this.refillDue()],
      // New services start once the campaigns' first claims have landed, so the first round is
      // already fair (a service started earlier would serve whichever buffer filled first).
      ['start services', () => this.startNewRunners()],
      ['flush', () => this.flushOnce()],
      ['wait reasons', () => this.updateWaitReasons()],
      ['concurrency', async () => this.adjustConcurrency()],
    ];
    let clean = true;
    for (const [name, step] of steps) {
      if (!this.running) return;
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
      await sql.heartbeat(this.ctx.schedulerDb, {
        id: this.instanceId,
        host: hostname(),
        pid: process.pid,
        services: [...this.runners.keys()].sort((a, b) => a - b),
      });
      // Stalled past the lease: another engine may have recovered this one's leases and quota
      // holds meanwhile, so the units held locally may be back in the quota. Not used.
      if (this.leasesValidUntil > 0 && sentAt > this.leasesValidUntil) for (const r of this.runners.values()) r.forfeitUnits();
      this.leasesValidUntil = sentAt + this.ctx.config.leaseTtlMs;
      await this.recoverExpired(now);
    } finally {
      this.heartbeating = false;
    }
  }

  private async recoverExpired(now: Date): Promise<void> {
    const recovered = await sql.recoverExpiredLeases(this.ctx.schedulerDb, { now, ttlMs: this.ctx.config.leaseTtlMs, mode: this.mode });
    if (recovered.requeued || recovered.unknown) {
      this.ctx.logger.warn(recovered, 'recovered expired leases');
      for (const c of this.pool.campaigns.values()) c.wakeAt = Math.min(c.wakeAt ?? Infinity, now.getTime());
    }
    // Quota units a dead engine had reserved and not used go back to the quota (the exact ledger).
    const returned = await sql.returnQuotaHolds(this.ctx.schedulerDb, { ttlMs: this.ctx.config.leaseTtlMs });
    if (returned) this.ctx.logger.warn({ units: returned }, 'returned the unused quota units of a stopped engine');
  }

  private runnerHost(): RunnerHost {
    const { config } = this.ctx;
    return {
      db: this.ctx.schedulerDb,
      secrets: this.ctx.secrets,
      instanceId: this.instanceId,
      clock: this.ctx.clock,
      tickMs: Math.min(config.schedulerTickMs, 100),
      unhealthyAfter: config.unhealthyAfter,
      probeBackoffMs: config.probeBackoffMs,
      concurrency: {
        initial: config.concurrencyInitial,
        step: config.concurrencyStep,
        upIntervalMs: config.concurrencyUpMs,
        downIntervalMs: config.concurrencyDownMs,
        healthyLatencyMs: config.concurrencyLatencyMs,
      },
      sendOne: (r, dispatch) => this.sendOne(r, dispatch),
      onError: (err, where) => this.fail(err, where),
      onStateChange: (r) => this.ctx.logger.info({ serviceId: r.id, state: r.state }, 'service state changed'),
      onConcurrencyChange: (r, from) =>
        this.ctx.logger.info(
          { serviceId: r.id, from, to: r.concurrency.current, ...r.concurrency.snapshot() },
          'service concurrency changed',
        ),
    };
  }

  private async syncServices(): Promise<void> {
    if (this.locksLost) {
      // The lock connection died: another engine may own these services now. Stop at once.
      this.locksLost = false;
      await Promise.all([...this.runners.values()].map((r) => this.removeRunner(r, false)));
    }
    const rows = await sql.loadServices(this.ctx.schedulerDb);
    this.serviceRows = rows;
    const seen = new Set<number>();
    for (const row of rows) {
      seen.add(row.id);
      const r = this.runners.get(row.id);
      if (!row.enabled) {
        if (r) await this.removeRunner(r);
        continue;
      }
      // One engine per service: take it only if no live engine holds it.
      if (!r && !(await this.locks.tryAcquire(row.id))) continue;
      if (!r) {
        const runner = new ServiceRunner(row, this.runnerHost());
        this.runners.set(row.id, runner);
        this.newRunners.push(runner);
        for (const c of this.pool.campaigns.values()) this.placeInRing(runner, c);
      } else {
        const before = JSON.stringify([r.row.open_to_all, r.row.user_ids]);
        r.update(row);
        if (before !== JSON.stringify([row.open_to_all, row.user_ids]))
          for (const c of this.pool.campaigns.values()) this.placeInRing(r, c);
      }
    }
    for (const r of [...this.runners.values()]) if (!seen.has(r.id)) await this.removeRunner(r);
  }

  private newRunners: ServiceRunner[] = [];
  private serviceRows: sql.ServiceRow[] = [];

  private async startNewRunners(): Promise<void> {
    if (!this.newRunners.length) return;
    await this.pool.settled();
    for (const r of this.newRunners.splice(0)) {
      if (r.stopped) continue;
      // Claims land in any order; a runner that has not started yet gets its ring rebuilt in
      // campaign order, so the first round follows creation order deterministically.
      for (const c of this.pool.campaigns.values()) r.ring.remove(c.id);
      for (const c of this.pool.campaigns.values()) this.placeInRing(r, c);
      r.start();
      this.ctx.logger.info({ serviceId: r.id, name: r.row.name }, 'service started');
    }
  }

  private async removeRunner(r: ServiceRunner, release = true): Promise<void> {
    this.newRunners = this.newRunners.filter((x) => x !== r);
    // Listed (as 'stopped') until its in-flight sends have finished.
    await r.stop(this.ctx.config.shutdownGraceMs);
    this.runners.delete(r.id);
    this.keepSpent(r.takeSpent().spent);
    if (release) await this.locks.release(r.id);
    // Campaigns no service of this engine can carry any more give their claimed messages back.
    for (const c of this.pool.campaigns.values()) if (!this.carried(c)) this.retire(c, 'queued');
    this.ctx.logger.info({ serviceId: r.id }, 'service stopped');
  }

  /** Is some service this engine runs able to carry this campaign? Only then does it claim messages. */
  private carried(c: CampaignState): boolean {
    for (const r of this.runners.values()) if (r.ring.has(c.id)) return true;
    return false;
  }

  private eligible(r: ServiceRunner, userId: number): boolean {
    return r.row.open_to_all || (r.row.user_ids ?? []).includes(userId);
  }

  /** Puts a campaign into (or takes it out of) a runner's ring according to eligibility and status. */
  private placeInRing(r: ServiceRunner, c: CampaignState): void {
    if (c.status === 'sending' && this.eligible(r, c.userId)) {
      r.ring.upsert({ campaignId: c.id, userId: c.userId, priority: c.priority });
      r.ring.setSendable(c.id, c.size > 0);
      if (c.size > 0) r.pump();
      else this.pool.refill(c);
    } else {
      r.ring.remove(c.id);
    }
  }

  private setSendable(c: CampaignState, sendable: boolean): void {
    for (const r of this.runners.values()) {
      if (!r.ring.has(c.id)) continue;
      r.ring.setSendable(c.id, sendable);
      if (sendable) r.pump();
    }
  }

  private async syncCampaigns(): Promise<void> {
    const rows = await sql.loadActiveCampaigns(this.ctx.schedulerDb, [...this.pool.campaigns.keys()]);
    await this.loadTemplates(rows.filter((r) => r.status === 'sending' && !this.pool.campaigns.has(Number(r.id))).map((r) => Number(r.id)));
    const seen = new Set<number>();
    for (const row of rows) {
      const id = Number(row.id);
      seen.add(id);
      let c = this.pool.campaigns.get(id);
      if (!c) {
        if (row.status !== 'sending') continue;
        c = new CampaignState({
          id,
          name: row.name,
          userId: row.created_by,
          priority: row.priority,
          status: row.status,
          fromAddress: row.from_address,
          fromName: row.from_name,
          sendWindow: row.send_window,
          waitReason: row.wait_reason,
        });
        c.remaining = row.remaining;
        this.pool.campaigns.set(id, c);
        for (const r of this.runners.values()) this.placeInRing(r, c);
        continue;
      }
      c.remaining = row.remaining;
      const statusChanged = c.status !== row.status;
      const priorityChanged = c.priority !== row.priority;
      c.status = row.status;
      c.priority = row.priority;
      if (statusChanged || priorityChanged) for (const r of this.runners.values()) this.placeInRing(r, c);
      if (row.status !== 'sending') this.retire(c, row.status === 'cancelled' ? 'cancelled' : 'queued');
    }
    // Completed (or deleted) campaigns: nothing left to hold.
    for (const c of [...this.pool.campaigns.values()]) {
      if (!seen.has(c.id) || (c.status !== 'sending' && c.size === 0)) {
        if (c.size) this.retire(c, 'queued');
        for (const r of this.runners.values()) r.ring.remove(c.id);
        this.pool.campaigns.delete(c.id);
      }
    }
  }

  private async loadTemplates(taskIds: number[]): Promise<void> {
    if (!taskIds.length) return;
    const [rows] = (await this.ctx.schedulerDb.query(
      `SELECT DISTINCT jsonb_array_elements_text(templates)::int AS id FROM tasks WHERE id = ANY($ids::bigint[])`,
      { bind: { ids: taskIds } },
    )) as [{ id: number }[], unknown];
    const missing = rows.map((r) => r.id).filter((id) => !this.templates.has(id));
    if (!missing.length) return;
    for (const t of await sql.loadTemplates(this.ctx.schedulerDb, missing)) this.templates.set(t.id, compileForSending(t));
  }

  /** Releases a paused campaign's claimed messages (back to queued) or cancels a cancelled one's. */
  private retire(c: CampaignState, as: 'queued' | 'cancelled'): void {
    const at = this.now().toJSDate();
    for (const item of c.drain())
      this.pushOutcome(item, { status: as, serviceId: null, at, messageId: null, error: null, notBefore: null, attempt: 0 });
  }

  /** Each service's backlog (what is left of the sending campaigns it carries) drives its concurrency. */
  private adjustConcurrency(): void {
    if (!this.runners.size) return;
    const backlog = new Map<number, number>();
    for (const c of this.pool.campaigns.values()) {
      if (c.status !== 'sending' || c.remaining === 0) continue;
      for (const r of this.runners.values()) if (r.ring.has(c.id)) backlog.set(r.id, (backlog.get(r.id) ?? 0) + c.remaining);
    }
    for (const r of this.runners.values()) if (r.usable) r.adjustConcurrency(backlog.get(r.id) ?? 0);
  }

  private refillDue(): void {
    const nowMs = this.now().toMillis();
    const low = this.pool.lowWater();
    for (const c of this.pool.campaigns.values()) {
      if (c.status !== 'sending' || !this.carried(c)) continue;
      if (c.wakeAt !== null && c.wakeAt <= nowMs) this.pool.refill(c, true);
      // A drained campaign with messages left (retried by engine.campaigns.retry while it was
      // finishing here) looks again; `remaining` comes from the tick's reload of the campaigns.
      else if (c.wakeAt === null && (!c.drained || c.remaining > 0) && c.size <= low) this.pool.refill(c);
    }
  }

  /** Picks the next message for a runner in fair order. */
  private pick(r: ServiceRunner): { c: CampaignState; item: Claimed } | undefined {
    for (let tries = 0; tries < 16; tries++) {
      const id = r.ring.next();
      if (id === undefined) return undefined;
      const c = this.pool.campaigns.get(id);
      const item = c?.take();
      if (!c || !item) {
        if (c) this.setSendable(c, false);
        else r.ring.remove(id);
        continue;
      }
      if (item.attempts > 0 && item.lastServiceId === r.id && this.otherCarrier(r, c)) {
        // A retry goes to another service when one can take it: the failure may be this
        // service's (a server that times out, or refuses this recipient), and the same one would
        // take the same retry again and again. Back of the buffer; the other service takes it.
        c.add([item]);
        continue;
      }
      if (c.size <= this.pool.lowWater()) this.pool.refill(c);
      if (c.size === 0) this.setSendable(c, false);
      return { c, item };
    }
    return undefined;
  }

  /** Is another usable service of this engine carrying the campaign? */
  private otherCarrier(r: ServiceRunner, c: CampaignState): boolean {
    for (const other of this.runners.values()) if (other !== r && other.usable && other.ring.has(c.id)) return true;
    return false;
  }

  /**
   * Sends one message through `r`. False: nothing was sent and the slot's unit was not touched
   * (the runner keeps it); true: the unit is spent or was given back here.
   */
  private async sendOne(r: ServiceRunner, dispatch: Dispatch): Promise<boolean> {
    const picked = this.pick(r);
    if (!picked) return false;
    const { c, item } = picked;
    const now = this.now();
    const at = now.toJSDate();
    const base = { serviceId: r.id, at, messageId: null, error: null, notBefore: null } as const;
    // Never send on a lease that may have lapsed: another engine may have recovered it and be
    // sending it too. Release it instead (applied only if it is still ours). The margin covers
    // the time this send may take to start.
    const margin = Math.max(200, this.ctx.config.leaseTtlMs / 5);
    if (this.leasesValidUntil - margin < Date.now()) {
      this.pushOutcome(item, { ...base, status: 'queued', serviceId: null, attempt: 0 });
      r.giveBackUnit();
      this.leaseLapses++;
      return true;
    }
    if (!item.contactActive || item.suppressed !== null) {
      // Unsubscribed, bounced or suppressed since the queue was generated: never sent, no quota
      // unit spent, the user's credit refunded (a cancelled outcome). The reason is kept.
      const error = item.suppressed !== null ? `suppressed: ${item.suppressed}` : null;
      this.pushOutcome(item, { ...base, status: 'cancelled', serviceId: null, error, attempt: 0 });
      r.giveBackUnit();
      return true;
    }
    if (c.sendWindow && item.timezone) {
      const w = { start: c.sendWindow.start, end: c.sendWindow.end, ...(c.sendWindow.days ? { days: c.sendWindow.days } : {}) };
      if (!isInsideWindow(w, item.timezone, now)) {
        const next = nextSendTime(w, item.timezone, now).toJSDate();
        this.pushOutcome(item, { ...base, status: 'queued', serviceId: null, notBefore: next, attempt: 0 });
        c.wakeAt = Math.min(c.wakeAt ?? Infinity, next.getTime());
        r.giveBackUnit();
        return true;
      }
    }
    const template = this.templates.get(item.templateId);
    if (!template) {
      // Not loaded yet (a race with a new campaign): put it back and load on the next tick.
      c.putBack(item);
      this.setSendable(c, true);
      return false;
    }
    const { config } = this.ctx;
    let mail: ReturnType<typeof buildMessage>;
    try {
      mail = buildMessage(
        template,
        { id: c.id, name: c.name, fromAddress: c.fromAddress, fromName: c.fromName },
        { taskId: item.taskId, contactId: item.contactId, email: item.email, name: item.name, attributes: item.attributes },
        {
          ...(config.unsubscribeUrlBase ? { unsubscribeBase: config.unsubscribeUrlBase } : {}),
          ...(config.unsubscribeSecret ? { unsubscribeSecret: config.unsubscribeSecret } : {}),
          ...(config.messageIdDomain ? { messageIdDomain: config.messageIdDomain } : {}),
          ...(config.bounceDomain && config.bounceSecret ? { bounceDomain: config.bounceDomain, bounceSecret: config.bounceSecret } : {}),
        },
      );
    } catch (err) {
      // The template cannot render for this recipient (a stored template that does not parse, a
      // render limit): nothing the author did not mean is sent. Failed, never reached a server.
      const message = err instanceof Error ? err.message : String(err);
      this.countError('template', message, r.id, at);
      r.giveBackUnit();
      this.pushOutcome(item, { ...base, status: 'failed', error: `template: ${message}`.slice(0, 1000), attempt: 0 });
      return true;
    }
    if (this.mode === 'at-most-once') {
      const marked = await sql.markDispatched(this.ctx.schedulerDb, {
        taskId: item.taskId,
        contactId: item.contactId,
        messageId: mail.messageId,
        owner: this.instanceId,
      });
      if (!marked) {
        r.giveBackUnit();
        return true; // the lease was lost (recovered elsewhere): not ours to send
      }
    }
    const dispatched = await dispatch(() => r.transport.sendMail(mail));
    if (!dispatched) {
      // The service stopped before the slot came: not sent, the message goes back to its campaign.
      c.putBack(item);
      return false;
    }
    const { at: dispatchedAt, result } = dispatched;
    try {
      const info = (await result) as { response?: unknown } | undefined;
      const sentAt = this.now().toJSDate();
      this.pushAttempt(item, r.id, at, 'accepted', parseReply(typeof info?.response === 'string' ? info.response : null), dispatchedAt);
      this.pushOutcome(item, { ...base, at: sentAt, status: 'sent', messageId: mail.messageId, attempt: 1 });
      r.recordSuccess(sentAt);
      this.meter.add(1);
      const ev: SentEvent = {
        serviceId: r.id,
        taskId: item.taskId,
        contactId: item.contactId,
        email: item.email,
        messageId: mail.messageId,
        dispatchedAt,
        at: sentAt,
      };
      this.emit('sent', ev);
    } catch (err) {
      this.handleFailure(r, c, item, err, mail.messageId, dispatchedAt);
    }
    return true;
  }

  /**
   * Keeps the record of one attempt (written with the next outcome write, in its statement).
   * `dispatchedAt` is the pacer's dispatch time (precise real clock), so the duration is the
   * transport's: from handing the message over to the server's last reply.
   */
  private pushAttempt(item: Claimed, serviceId: number, at: Date, result: sql.AttemptResult, reply: SmtpReply, dispatchedAt: number): void {
    if (!this.ctx.config.attemptRecords) return;
    this.attempts.push({
      taskId: item.taskId,
      contactId: item.contactId,
      at,
      serviceId,
      provider: recipientDomain(item.email),
      result,
      code: reply.code,
      enhanced: reply.enhanced,
      reply: reply.text,
      durationMs: Math.max(0, Math.round(preciseNow() - dispatchedAt)),
    });
  }

  private handleFailure(r: ServiceRunner, c: CampaignState, item: Claimed, err: unknown, messageId: string, dispatchedAt: number): void {
    const f = classifySendError(err);
    const now = this.now();
    const at = now.toJSDate();
    this.countError(f.type, f.message, r.id, at);
    const e = err as { response?: unknown; responseCode?: unknown; message?: unknown } | null;
    const replyText = typeof e?.response === 'string' ? e.response : typeof e?.message === 'string' ? e.message : f.message;
    this.pushAttempt(
      item,
      r.id,
      at,
      f.kind,
      parseReply(replyText, typeof e?.responseCode === 'number' ? e.responseCode : null),
      dispatchedAt,
    );
    if (f.kind === 'connection') this.kickWriter();
    const base = { serviceId: r.id, at, messageId: null, error: `${f.type}: ${f.message}`.slice(0, 1000), notBefore: null } as const;
    const { maxRetries, retryDelayMs } = this.ctx.config;
    const retry = () => {
      if (item.attempts + 1 > maxRetries) return false;
      const notBefore = new Date(at.getTime() + retryDelayMs * 2 ** item.attempts);
      this.pushOutcome(item, { ...base, status: 'queued', notBefore, attempt: 1 });
      c.wakeAt = Math.min(c.wakeAt ?? Infinity, notBefore.getTime());
      return true;
    };
    switch (f.kind) {
      case 'connection':
        // Never reached the server: not an attempt. Back to the front of the campaign's buffer so
        // this or another service sends it; the unit goes back too.
        r.giveBackUnit();
        r.recordFailure(f.message);
        c.putBack(item);
        this.setSendable(c, true);
        break;
      case 'transient':
        r.giveBackUnit();
        if (f.message.startsWith('421')) r.recordFailure(f.message);
        if (!retry()) this.pushOutcome(item, { ...base, status: 'failed', attempt: 1 });
        this.emit('retry', { serviceId: r.id, taskId: item.taskId, contactId: item.contactId, error: f.message });
        break;
      case 'permanent':
        r.giveBackUnit();
        this.pushOutcome(item, { ...base, status: 'failed', attempt: 1 });
        if (f.bounce) this.bounced.push(item.contactId);
        this.emit('failed', { serviceId: r.id, taskId: item.taskId, contactId: item.contactId, error: f.message, bounce: f.bounce });
        break;
      case 'ambiguous':
        // The server may have accepted it. The unit stays used.
        r.recordFailure(f.message);
        if (this.mode === 'at-most-once' || !retry()) {
          this.pushOutcome(item, { ...base, status: 'unknown', messageId, attempt: 1 });
        }
        break;
    }
  }

  private countError(type: string, message: string, serviceId: number, at: Date): void {
    const key = `${type}\u0000${message}`;
    const e = this.errors.get(key);
    if (e) {
      e.count++;
      e.at = at;
    } else {
      this.errors.set(key, { type, message, serviceId, count: 1, at });
    }
  }

  private pushOutcome(item: Claimed, o: Omit<sql.Outcome, 'taskId' | 'contactId'>): void {
    this.outcomes.push({ taskId: item.taskId, contactId: item.contactId, ...o });
    this.kickWriter();
  }

  /**
   * Outcomes are written continuously: a write starts as soon as there is something to write and
   * no write is under way, and the next starts when the previous one commits, with whatever
   * arrived meanwhile. Under load that is group commit (each write carries the sends of the
   * previous write's duration), idle it is one small write per send, and there is never a timer
   * to wait for. So a crash resends at most the messages in flight plus those of the write under
   * way (one commit), before their outcomes are written. A failed write is retried by the next
   * control tick (no hot loop while the database is away).
   */
  private kickWriter(): void {
    if (this.flushing || this.writeKicked) return;
    this.writeKicked = true;
    setImmediate(() => {
      this.writeKicked = false;
      if (this.flushing) return;
      this.flushOnce().catch((err: unknown) => this.fail(err, 'flush'));
    });
  }

  /**
   * Writes every pending outcome (and error counts, bounces) now, including those that arrive
   * while a write is already under way: stop() and engine.scheduler.flush() rely on nothing being
   * left behind.
   */
  async flush(): Promise<void> {
    do await this.flushOnce();
    while (this.outcomes.length || this.attempts.length || this.errors.size || this.bounced.length || this.spentBacklog.length);
  }

  /** One write: joins the write under way, if any. */
  private flushOnce(): Promise<void> {
    // Cleared in a chained finally (a microtask): an inner `finally` would run synchronously when
    // there is nothing to write, before `??=` stores the promise, and leave a stale one behind.
    this.flushing ??= this.writeOutcomes()
      .then(() => {
        // Committed: the next write starts now if outcomes arrived meanwhile.
        if (this.outcomes.length || this.attempts.length) this.kickWriter();
      })
      .finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  /** One write: up to 5000 outcomes, the error counts, the bounces, and the units spent. */
  private async writeOutcomes(): Promise<void> {
    const due = this.outcomes.length || this.attempts.length || this.errors.size || this.bounced.length || this.spentDue();
    if (!due) return;
    const { spent, undo } = this.collectSpent();
    const batch = this.outcomes.splice(0, 5000);
    const attempts = this.attempts.splice(0, 5000);
    const errors = [...this.errors.values()];
    this.errors.clear();
    const bounced = this.bounced.splice(0);
    try {
      if (batch.length || spent.length || attempts.length) {
        const res = await sql.flushOutcomes(this.ctx.schedulerDb, this.instanceId, batch, spent, attempts);
        this.emit('written', { outcomes: batch.length });
        if (res.applied < batch.length) {
          this.ctx.logger.warn({ lost: batch.length - res.applied }, 'outcomes not applied: leases were recovered by another engine');
        }
        for (const id of res.completed) this.ctx.logger.info({ campaignId: id }, 'campaign completed');
      }
      await sql.recordErrors(this.ctx.schedulerDb, errors);
      await sql.markBounced(this.ctx.schedulerDb, bounced);
    } catch (err) {
      // Keep them for the next flush: an outcome is never dropped because the database blinked.
      this.outcomes.unshift(...batch);
      this.attempts.unshift(...attempts);
      for (const e of errors) this.errors.set(`${e.type}\u0000${e.message}`, e);
      this.bounced.push(...bounced);
      undo();
      throw err;
    }
  }

  /** Units spent not written yet: of removed runners, or of a write that failed. */
  private spentBacklog: sql.SpentUnits[] = [];

  private keepSpent(spent: sql.SpentUnits[]): void {
    this.spentBacklog.push(...spent);
  }

  /** Units to write without outcomes: a stopped runner's, or a failed write's. */
  private spentDue(): boolean {
    return this.spentBacklog.length > 0;
  }

  /** Every runner's units to take off the holds (see ServiceRunner.takeSpent), summed per service and day. */
  private collectSpent(): { spent: sql.SpentUnits[]; undo: () => void } {
    const backlog = this.spentBacklog.splice(0);
    const taken = [...this.runners.values()].map((r) => r.takeSpent());
    const sum = new Map<string, sql.SpentUnits>();
    for (const x of [...backlog, ...taken.flatMap((t) => t.spent)]) {
      const key = `${x.serviceId}/${x.day}`;
      const cur = sum.get(key);
      if (cur) cur.n += x.n;
      else sum.set(key, { ...x });
    }
    return {
      spent: [...sum.values()].filter((x) => x.n !== 0),
      undo: () => {
        this.spentBacklog.push(...backlog);
        for (const t of taken) t.undo();
      },
    };
  }

  private lastReasons = new Map<number, string | null>();

  private async updateWaitReasons(): Promise<void> {
    const updates: { id: number; reason: string | null }[] = [];
    for (const c of this.pool.campaigns.values()) {
      if (c.status !== 'sending' || c.drained) continue;
      // Enabled services this user may use; one run by another engine counts as usable (its owner
      // reports on it), one run here is usable unless exhausted or unhealthy.
      const eligible = this.serviceRows.filter((row) => row.enabled && (row.open_to_all || (row.user_ids ?? []).includes(c.userId)));
      const blocked = eligible.map((row) => this.runners.get(row.id)).filter((r): r is ServiceRunner => r !== undefined && !r.usable);
      let reason: string | null = null;
      if (!eligible.length) reason = 'no sending service available: none is enabled for this user';
      else if (blocked.length === eligible.length) {
        reason = `no sending service available: ${blocked
          .map((r) => `${r.row.name} ${r.state}${r.state === 'exhausted' ? ` until ${r.resetAt.toISOString()}` : ''}${whyUnhealthy(r)}`)
          .join(', ')}`;
      }
      if ((this.lastReasons.get(c.id) ?? c.waitReason) !== reason) {
        updates.push({ id: c.id, reason });
        this.lastReasons.set(c.id, reason);
      }
    }
    await sql.setWaitReasons(this.ctx.schedulerDb, updates);
  }

  /**
   * Stops delivery: timers stop, in-flight sends finish (within SHUTDOWN_GRACE_MS), their outcomes
   * are written, claimed but unsent messages are released, unused quota is given back, transports
   * close. Safe to call twice.
   */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.controlTimer) clearInterval(this.controlTimer);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    await this.ticking?.catch(() => undefined);
    const grace = this.ctx.config.shutdownGraceMs;
    await Promise.all([...this.runners.values()].map((r) => r.stop(grace)));
    for (const r of this.runners.values()) this.keepSpent(r.takeSpent().spent);
    this.runners.clear();
    await this.pool.idle();
    for (const c of this.pool.campaigns.values()) this.retire(c, 'queued');
    this.pool.campaigns.clear();
    try {
      await this.flush();
      // Spent units are written: what is left of this engine's holds is unused. Back to the quota.
      await sql.returnQuotaHolds(this.ctx.schedulerDb, { instance: this.instanceId, ttlMs: this.ctx.config.leaseTtlMs });
      await this.locks.close();
      await sql.unregister(this.ctx.schedulerDb, this.instanceId);
    } catch (err) {
      this.fail(err, 'stop');
    }
    this.ctx.logger.info({ instanceId: this.instanceId }, 'scheduler stopped');
  }

  /**
   * Live engines on this database (this one included while it runs): heartbeat within three
   * heartbeat intervals, with the services each one owns. Read from PostgreSQL, so every process
   * answers the same.
   */
  async instances(): Promise<InstanceInfo[]> {
    const rows = await sql.liveInstances(this.ctx.apiDb, this.ctx.config.heartbeatMs * 3);
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
    const services = [...this.runners.values()].map((r): ServiceStatus => ({
      id: r.id,
      name: r.row.name,
      state: r.state,
      sendingRate: r.rate,
      inFlight: r.sending,
      sent: r.sent,
      campaigns: r.ring.size,
      sendableCampaigns: r.ring.sendableCount,
      activeUsers: r.ring.activeUsers,
      consecutiveFailures: r.failures,
      exhaustedUntil: r.exhaustedUntil !== null ? new Date(r.exhaustedUntil) : null,
      lastSentAt: r.lastSentAt,
      concurrency: r.concurrency.snapshot(),
      tlsMode: tlsModeOf(r.row.transport),
      certificateChecking: checksCertificates(r.row.transport),
    }));
    let buffered = 0;
    for (const c of this.pool.campaigns.values()) buffered += c.size;
    return {
      isRunning: this.running,
      instanceId: this.instanceId,
      startedAt: this.startedAt,
      deliveryMode: this.mode,
      activeServices: services.filter((s) => s.state === 'running').length,
      activeCampaigns: this.pool.campaigns.size,
      bufferedMessages: buffered,
      pendingOutcomes: this.outcomes.length,
      leaseLapses: this.leaseLapses,
      processingRate: { perMinute1: this.meter.perMinute(1), perMinute5: this.meter.perMinute(5), perMinute15: this.meter.perMinute(15) },
      services,
    };
  }
}

/** ` (TLS: unable to verify the first certificate)` for an unhealthy service, so a waiting campaign says why. */
function whyUnhealthy(r: ServiceRunner): string {
  return r.state === 'unhealthy' && r.lastError ? ` (${r.lastError.slice(0, 200)})` : '';
}
