/**
 * The fleet: this engine's service runners. It follows the sending services in the database
 * (new ones start, changed ones update, disabled or deleted ones stop), holds their ownership
 * locks (one engine per service), places campaigns in the rings of the services that may carry
 * them, answers the runners' picks (pick.ts) and applies the engine's part of their Decisions
 * (outcomes, error counts, bounces, events), and records why a campaign with work cannot send.
 *
 * A runner moves through the fleet as:  new (lock taken, not started) -> started -> removed
 * (stopped, its spent units kept for the next write, its lock released). A new runner starts once
 * the campaigns' first claims have landed, so its first round is already fair. Asserted per
 * runner (state.ts).
 */
import type { EventEmitter } from 'node:events';
import type { ServiceContext } from '../context.js';
import type { CampaignPool, CampaignState, Claimed } from './campaign-pool.js';
import type { OutcomeWriter } from './outcomes.js';
import { pick, type Picked } from './pick.js';
import { deferred, type DeliveryMode, type Decision } from './send.js';
import { loadShapingFile, type ShapingTableInput } from '../deliverability/shaping.js';
import { ServiceRunner, type RunnerHost, type SendInfo } from './service-runner.js';
import type { ServiceLocks } from './service-locks.js';
import { loadServices, type ServiceRow } from './sql/services.js';
import { setWaitReasons } from './sql/campaigns.js';
import type { SpentUnits } from './sql/quota.js';
import { RateMeter } from './rate-meter.js';
import { StateMachine } from './state.js';
import { createServiceTransport, localTransport } from '../delivery/transport.js';
import type { SendWorkerPool } from '../delivery/worker-transport.js';

export interface SentEvent {
  serviceId: number;
  taskId: number;
  contactId: number;
  email: string;
  messageId: string;
  dispatchedAt: number;
  at: Date;
}

export interface FleetOptions {
  ctx: ServiceContext;
  instanceId: string;
  mode: DeliveryMode;
  locks: ServiceLocks;
  outcomes: OutcomeWriter;
  /** Events: sent, retry, failed. */
  events: EventEmitter;
  /** May this engine send on its leases now? */
  leaseValid(): boolean;
  onError(err: unknown, where: string): void;
  /** The send worker threads of this run, if SMTP work runs off the main thread (SEND_WORKERS). */
  sendPool(): SendWorkerPool | undefined;
}

type RunnerPhase = 'new' | 'started' | 'removed';

/** Wait reasons: a pass over every campaign at least once in this many (see updateWaitReasons). */
const REASONS_FULL_EVERY = 20;

export class Fleet {
  readonly runners = new Map<number, ServiceRunner>();
  private readonly phases = new Map<ServiceRunner, StateMachine<RunnerPhase>>();
  private serviceRows: ServiceRow[] = [];
  private lastReasons = new Map<number, string | null>();
  /** The lock connection died: stop every runner on the next sync. */
  locksLost = false;
  /** The campaigns (set by the scheduler at each start). */
  pool!: CampaignPool;
  readonly meter = new RateMeter();
  /** Messages released unsent because their lease might have lapsed (the engine was stalled). */
  leaseLapses = 0;
  /** Messages sent back to the queue because their (service, provider) pair was blocked for a while. */
  deferred = 0;
  /** DELIVERABILITY_SHAPING_FILE, read once (a bad file stops the engine at start with the field named). */
  private readonly shapingFile: ShapingTableInput;

  constructor(private readonly opts: FleetOptions) {
    this.shapingFile = loadShapingFile(opts.ctx.config.shapingFile);
  }

  private phase(r: ServiceRunner): StateMachine<RunnerPhase> {
    let m = this.phases.get(r);
    if (!m)
      this.phases.set(
        r,
        (m = new StateMachine<RunnerPhase>(`runner ${r.id}`, { new: ['started', 'removed'], started: ['removed'], removed: [] }, 'new')),
      );
    return m;
  }

  private host(): RunnerHost {
    const { ctx } = this.opts;
    const { config } = ctx;
    return {
      db: ctx.schedulerDb,
      secrets: ctx.secrets,
      createTransport: (row) => {
        const pool = this.opts.sendPool();
        return pool
          ? pool.transport(row.transport, row.max_connections, row.dkim, ctx.secrets)
          : localTransport(createServiceTransport(row.transport, row.max_connections, row.dkim, ctx.secrets));
      },
      instanceId: this.opts.instanceId,
      clock: ctx.clock,
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
      pick: (r) => this.pick(r),
      policy: { mode: this.opts.mode, maxRetries: config.maxRetries, retryDelayMs: config.retryDelayMs },
      messageOptions: {
        ...(config.unsubscribeUrlBase ? { unsubscribeBase: config.unsubscribeUrlBase } : {}),
        ...(config.unsubscribeSecret ? { unsubscribeSecret: config.unsubscribeSecret } : {}),
        ...(config.messageIdDomain ? { messageIdDomain: config.messageIdDomain } : {}),
        ...(config.bounceDomain && config.bounceSecret ? { bounceDomain: config.bounceDomain, bounceSecret: config.bounceSecret } : {}),
      },
      template: (id) => this.pool.template(id),
      leaseValid: () => this.opts.leaseValid(),
      record: (r, c, item, d, info) => this.record(r, c, item, d, info),
      onError: (err, where) => this.opts.onError(err, where),
      onStateChange: (r) => ctx.logger.info({ serviceId: r.id, state: r.state }, 'service state changed'),
      shapingFile: this.shapingFile,
      onThrottle: (r, provider, rule) =>
        ctx.logger.warn(
          {
            serviceId: r.id,
            provider,
            rule: rule.rule?.name,
            effect: rule.effect,
            ...(rule.retryAt ? { until: new Date(rule.retryAt) } : {}),
          },
          'deliverability rule matched a reply',
        ),
      onConcurrencyChange: (r, from) =>
        ctx.logger.info({ serviceId: r.id, from, to: r.concurrency.current, ...r.concurrency.snapshot() }, 'service concurrency changed'),
    };
  }

  /** The fair pick for one runner (pick.ts) over this engine's campaigns. */
  private pick(r: ServiceRunner): Picked | undefined {
    return pick({
      serviceId: r.id,
      ring: r.ring,
      campaign: (id) => this.pool.campaigns.get(id),
      otherCarrier: (c) => this.otherCarrier(r, c),
      lowWater: this.pool.lowWater(),
      setSendable: (c, on) => this.setSendable(c, on),
      refill: (c) => this.pool.refill(c),
      blocked: (provider) => r.shaper.blocked(provider),
      defer: (c, items, until) => this.defer(r, c, items, until),
      now: () => this.opts.ctx.clock().toMillis(),
    });
  }

  /** Messages of a pair blocked for a while go back to the queue until it opens (pick.ts): an outcome each. */
  private defer(r: ServiceRunner, c: CampaignState, items: Claimed[], until: number): void {
    const at = this.opts.ctx.clock().toJSDate();
    for (const item of items) this.record(r, c, item, deferred(at, new Date(until)), null);
    this.deferred += items.length;
  }

  /** The engine's part of a runner's Decision (the runner has applied the unit and the health). */
  private record(r: ServiceRunner, c: CampaignState, item: Claimed, d: Decision, info: SendInfo | null): Promise<void> | undefined {
    const { outcomes, events } = this.opts;
    const at = d.outcome?.at ?? this.opts.ctx.clock().toJSDate();
    if (d.error) outcomes.countError(d.error.type, d.error.message, r.id, at);
    if (d.attempt && this.opts.ctx.config.attemptRecords) outcomes.pushAttempt(item, d.attempt);
    // The outcome of a dispatched send: its slot waits for the commit (see OutcomeWriter.pushCommitted).
    const committed = d.outcome
      ? info
        ? outcomes.pushCommitted(item, d.outcome)
        : (outcomes.push(item, d.outcome), undefined)
      : undefined;
    if (d.bounce) outcomes.bounce(item.contactId);
    if (d.leaseLapse) this.leaseLapses++;
    if (d.wakeAt !== null) c.wakeAt = Math.min(c.wakeAt ?? Infinity, d.wakeAt);
    // A retry's due time wakes a campaign that waits (nothing sendable before it). A campaign that
    // still refills (wakeAt null, not drained) must not wait for it: the retry's backoff is its
    // own, and a refill once it is due claims it (claimRetries).
    if (d.retryAt !== null && (c.wakeAt !== null || c.drained)) c.wakeAt = Math.min(c.wakeAt ?? Infinity, d.retryAt);
    // And a campaign at its end claims retries only once one is known due (campaign-pool.ts).
    if (d.retryAt !== null) c.retryAt = Math.min(c.retryAt ?? Infinity, d.retryAt);
    if (d.putBack) {
      c.putBack(item);
      this.setSendable(c, true);
    }
    const ids = { serviceId: r.id, taskId: item.taskId, contactId: item.contactId };
    if (d.event === 'sent' && info) {
      this.meter.add(1);
      const ev: SentEvent = { ...ids, email: item.email, messageId: info.messageId, dispatchedAt: info.dispatchedAt, at };
      events.emit('sent', ev);
    } else if (d.event === 'retry') events.emit('retry', { ...ids, error: d.error?.message });
    else if (d.event === 'failed') events.emit('failed', { ...ids, error: d.error?.message, bounce: d.bounce });
    return committed;
  }

  async syncServices(): Promise<void> {
    if (this.locksLost) {
      // The lock connection died: another engine may own these services now. Stop at once.
      this.locksLost = false;
      await Promise.all([...this.runners.values()].map((r) => this.removeRunner(r, false)));
    }
    const rows = await loadServices(this.opts.ctx.schedulerDb);
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
      if (!r && !(await this.opts.locks.tryAcquire(row.id))) continue;
      if (!r) {
        const runner = new ServiceRunner(row, this.host());
        this.phase(runner);
        this.runners.set(row.id, runner);
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

  /** Starts the runners not started yet, once the claims queued so far have landed. */
  async startNewRunners(): Promise<void> {
    const fresh = [...this.runners.values()].filter((r) => this.phase(r).is('new'));
    if (!fresh.length) return;
    await this.pool.settled();
    for (const r of fresh) {
      if (r.stopped || !this.phase(r).is('new')) continue;
      // Claims land in any order; a runner that has not started yet gets its ring rebuilt in
      // campaign order, so the first round follows creation order deterministically.
      for (const c of this.pool.campaigns.values()) r.ring.remove(c.id);
      for (const c of this.pool.campaigns.values()) this.placeInRing(r, c);
      this.phase(r).to('started');
      r.start();
      this.opts.ctx.logger.info({ serviceId: r.id, name: r.row.name }, 'service started');
    }
  }

  private async removeRunner(r: ServiceRunner, release = true): Promise<void> {
    if (this.phase(r).is('removed')) return;
    this.phase(r).to('removed');
    // Listed (as 'stopped') until its in-flight sends have finished.
    await r.stop(this.opts.ctx.config.shutdownGraceMs);
    this.runners.delete(r.id);
    this.phases.delete(r);
    this.opts.outcomes.keepSpent(r.takeSpent().spent);
    if (release) await this.opts.locks.release(r.id);
    // Campaigns no service of this engine can carry any more give their claimed messages back.
    for (const c of this.pool.campaigns.values()) if (!this.carried(c)) this.pool.retire(c, 'queued');
    this.opts.ctx.logger.info({ serviceId: r.id }, 'service stopped');
  }

  /** Stops every runner (shutdown): in-flight sends finish within `graceMs`; spent units are kept for the last write. */
  async stopAll(graceMs: number): Promise<void> {
    await Promise.all([...this.runners.values()].map((r) => r.stop(graceMs)));
    for (const r of this.runners.values()) this.opts.outcomes.keepSpent(r.takeSpent().spent);
    this.runners.clear();
    this.phases.clear();
  }

  /** Every runner's units to take off the holds since the last write (for the outcome writer). */
  collectSpent(): { spent: SpentUnits[]; undo: () => void }[] {
    return [...this.runners.values()].map((r) => r.takeSpent());
  }

  /** Is some service this engine runs able to carry this campaign? Only then does it claim messages. */
  carried(c: CampaignState): boolean {
    for (const r of this.runners.values()) if (r.ring.has(c.id)) return true;
    return false;
  }

  private eligible(r: ServiceRunner, userId: number): boolean {
    return r.row.open_to_all || (r.row.user_ids ?? []).includes(userId);
  }

  /** Puts a campaign into (or takes it out of) every runner's ring according to eligibility and status. */
  place(c: CampaignState): void {
    this.placedSince.add(c);
    for (const r of this.runners.values()) this.placeInRing(r, c);
  }

  /** A campaign left: out of every ring. */
  remove(c: CampaignState): void {
    this.placements++;
    this.placedSince.delete(c);
    for (const r of this.runners.values()) r.ring.remove(c.id);
    this.lastReasons.delete(c.id);
  }

  private placeInRing(r: ServiceRunner, c: CampaignState): void {
    this.placements++;
    if (c.status === 'sending' && this.eligible(r, c.userId)) {
      r.ring.upsert({ campaignId: c.id, userId: c.userId, priority: c.priority });
      r.ring.setSendable(c.id, c.size > 0);
      if (c.size > 0) r.pump();
      else this.pool.refill(c);
    } else {
      r.ring.remove(c.id);
    }
  }

  setSendable(c: CampaignState, sendable: boolean): void {
    for (const r of this.runners.values()) {
      if (!r.ring.has(c.id)) continue;
      r.ring.setSendable(c.id, sendable);
      if (sendable) r.pump();
    }
  }

  /** Is another usable service of this engine carrying the campaign? */
  private otherCarrier(r: ServiceRunner, c: CampaignState): boolean {
    for (const other of this.runners.values()) if (other !== r && other.usable && other.ring.has(c.id)) return true;
    return false;
  }

  /** Units held by runners may be back in the quota (the engine stalled past its leases): not used. */
  forfeitUnits(): void {
    for (const r of this.runners.values()) r.forfeitUnits();
  }

  /** Each service's backlog (what is left of the sending campaigns it carries) drives its concurrency. */
  adjustConcurrency(): void {
    if (!this.runners.size) return;
    // Summed over every campaign only when a campaign or the set of runners changed since (30,000
    // campaigns x the runners at every tick was a tenth of the engine's time at 10,000 users).
    const key = `${this.pool.version}:${this.placements}:${[...this.runners.keys()].join(',')}`;
    if (key !== this.backlogKey) {
      const backlog = new Map<number, number>();
      for (const c of this.pool.campaigns.values()) {
        if (c.status !== 'sending' || c.remaining === 0) continue;
        for (const r of this.runners.values()) if (r.ring.has(c.id)) backlog.set(r.id, (backlog.get(r.id) ?? 0) + c.remaining);
      }
      this.backlog = backlog;
      this.backlogKey = key;
    }
    for (const r of this.runners.values()) if (r.usable) r.adjustConcurrency(this.backlog.get(r.id) ?? 0);
  }

  private backlog = new Map<number, number>();
  private backlogKey = '';
  /** Bumped when a campaign is placed in or taken out of the rings. */
  private placements = 0;
  /** Campaigns placed since the last wait-reason pass (the others keep theirs while the services do). */
  private placedSince = new Set<CampaignState>();
  private reasonsKey = '';
  private reasonPasses = 0;

  /** Records why campaigns with work cannot send (no usable service), when that changes. */
  async updateWaitReasons(): Promise<void> {
    const updates: { id: number; reason: string | null }[] = [];
    // A reason depends on the user and the services only. While the services and their states are
    // as at the last pass, only campaigns placed since are looked at; otherwise all of them, each
    // user's reason worked out once (10,000 users x 3 campaigns: 10,000 times, not 30,000).
    const key = JSON.stringify([
      this.serviceRows.map((row) => [row.id, row.name, row.enabled, row.open_to_all, row.user_ids]),
      [...this.runners.values()].map((r) => [r.id, r.usable, r.state, r.state === 'exhausted' ? r.resetAt.getTime() : 0, whyUnhealthy(r)]),
    ]);
    // And every REASONS_FULL_EVERY passes all of them anyway (a campaign that drained and came back
    // is looked at again within that many ticks).
    const all = key !== this.reasonsKey || ++this.reasonPasses % REASONS_FULL_EVERY === 0;
    this.reasonsKey = key;
    const campaigns = all ? this.pool.campaigns.values() : [...this.placedSince].filter((c) => this.pool.campaigns.get(c.id) === c);
    this.placedSince.clear();
    const byUser = new Map<number, string | null>();
    for (const c of campaigns) {
      if (c.status !== 'sending' || c.drained) continue;
      let reason = byUser.get(c.userId);
      if (reason === undefined) byUser.set(c.userId, (reason = this.waitReason(c.userId)));
      if ((this.lastReasons.get(c.id) ?? c.waitReason) !== reason) {
        updates.push({ id: c.id, reason });
        this.lastReasons.set(c.id, reason);
      }
    }
    await setWaitReasons(this.opts.ctx.schedulerDb, updates);
  }

  /** Why a user's campaigns cannot send now (no usable service), or null when they can. */
  private waitReason(userId: number): string | null {
    // Enabled services this user may use; one run by another engine counts as usable (its owner
    // reports on it), one run here is usable unless exhausted or unhealthy.
    const eligible = this.serviceRows.filter((row) => row.enabled && (row.open_to_all || (row.user_ids ?? []).includes(userId)));
    const blocked = eligible.map((row) => this.runners.get(row.id)).filter((r): r is ServiceRunner => r !== undefined && !r.usable);
    if (!eligible.length) return 'no sending service available: none is enabled for this user';
    if (blocked.length < eligible.length) return null;
    return `no sending service available: ${blocked
      .map((r) => `${r.row.name} ${r.state}${r.state === 'exhausted' ? ` until ${r.resetAt.toISOString()}` : ''}${whyUnhealthy(r)}`)
      .join(', ')}`;
  }
}

/** ` (TLS: unable to verify the first certificate)` for an unhealthy service, so a waiting campaign says why. */
function whyUnhealthy(r: ServiceRunner): string {
  return r.state === 'unhealthy' && r.lastError ? ` (${r.lastError.slice(0, 200)})` : '';
}
