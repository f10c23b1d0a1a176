/**
 * The scheduler's view of active campaigns: for each one, a small buffer of claimed messages
 * (leased to this engine in the database) that the sending services draw from.
 *
 * A campaign is in one of these states:
 *   - buffered:  buffer not empty; it is sendable in every ring that holds it.
 *   - refilling: buffer empty, a claim is in flight; not sendable until it returns.
 *   - waiting:   the last claim found nothing sendable now; `wakeAt` says when to look again
 *                (a retry's backoff, a send window opening), or never when nothing is queued.
 * Refills start before the buffer runs dry (below the low-water mark), so a campaign with work
 * keeps its turns. Refills are claimed in bulk: the campaigns due for one wait in a queue (in the
 * order they asked, which is the services' ring order once sending), and one statement claims for
 * up to BULK_CLAIM of them at once (sql/claim-many.ts), at most CLAIMS_IN_FLIGHT statements at a
 * time, so refilling thousands of campaigns takes a few statements and never more than a couple of
 * the scheduler pool's connections. A campaign's buffer holds claimSize messages: the pool's
 * budget shared among its campaigns, so at scale each campaign holds only the few messages its
 * share of the service's sends needs before the next refill lands.
 *
 * The claim itself moves idle -> claiming -> idle, asserted (state.ts): never two claims of one
 * campaign at once.
 *
 * Fresh messages are claimed along the primary key after a cursor (the last contact id claimed):
 * each claim reads only new rows. When the cursor reaches the end, the campaign's outlook query
 * says whether anything behind it became sendable (recovered leases, released messages), and the
 * cursor starts over from zero if so.
 *
 * A campaign at its end claims no fresh messages (its cursor is past them all), and claims retries
 * only when one is known due (`retryAt`: this engine's own outcomes, or an outlook's next due
 * time). With its buffer empty and no retry due, what it needs is a look at its outlook alone
 * (finished, messages in flight, something behind the cursor): an ending check. Ending checks wait
 * for the next tick (refillDue), so one statement serves every campaign that ran dry meanwhile.
 * At 10,000 users x 3 campaigns of 2 messages, campaigns run dry one by one as the ring turns,
 * and each ran a bulk claim of its own and the few beside it: a retries claim, a fresh claim and
 * an outlook, about 9,300 of each in one W4 run.
 *
 * The pool also follows the campaigns in the database (sync: new sending campaigns join, paused or
 * cancelled ones release their claimed messages, finished ones leave; only new campaigns and
 * changes come back, not every known campaign's row, and beyond SYNC_PER_TICK campaigns not at
 * every tick) and keeps the compiled templates they use, one compiled copy per distinct content. Where a campaign is carried (the services' rings)
 * is the fleet's business: the pool tells it through the hooks in PoolOptions.
 */
import { createHash } from 'node:crypto';
import type { Sequelize } from 'sequelize';
import type { StoredSendWindow } from '../../models/index.js';
import { compileForSending, type SendableTemplate } from '../delivery/message.js';
import type { ClaimedRow } from './sql/claim.js';
import { campaignOutlooks, claimFreshMany, claimRetriesMany } from './sql/claim-many.js';
import { loadCampaignChanges, loadNewCampaigns, loadTemplates } from './sql/campaigns.js';
import { StateMachine, type Transitions } from './state.js';
import { builtinProvider, otherProvider, type Provider } from '../deliverability/providers.js';

export interface Claimed {
  taskId: number;
  contactId: number;
  email: string;
  templateId: number;
  attempts: number;
  timezone: string | null;
  name: string | null;
  attributes: Record<string, unknown>;
  contactActive: boolean;
  /** Suppressed since generation (re-checked at claim): the entry's reason, null when not suppressed. */
  suppressed: string | null;
  /** The service that made the last attempt; a retry prefers another one. */
  lastServiceId: number | null;
  /** The recipient's mailbox provider (deliverability/providers.ts): the throttle scope of a send. */
  provider: Provider;
}

/** A campaign's claim: idle -> claiming (queued for a bulk claim, or in one) -> idle. One table for all campaigns. */
const CLAIM_EDGES: Transitions<'idle' | 'claiming'> = { idle: ['claiming'], claiming: ['idle'] };

export class CampaignState {
  readonly id: number;
  /** For `{{ campaign.name }}` in templates. */
  name: string;
  userId: number;
  priority: number;
  status: string;
  fromAddress: string;
  fromName: string | null;
  sendWindow: StoredSendWindow | null;
  waitReason: string | null;
  /** Messages without a final state, as of the last control tick (the backlog for concurrency). */
  remaining = 0;
  private buffer: Claimed[] = [];
  private head = 0;
  cursor = 0;
  /**
   * The last fresh claim came back short, or took every message the campaign had unfinished
   * (remaining): the cursor is at the end, so no claim finds anything new before the buffer
   * drains (only retries, which wake the campaign at their own time).
   */
  atEnd = false;
  private readonly claim = new StateMachine<'idle' | 'claiming'>('campaign claim', CLAIM_EDGES, 'idle');
  /** ms epoch at which to look for work again; null: not waiting. */
  wakeAt: number | null = null;
  /**
   * ms epoch at which a queued retry (or a message behind the cursor) is known due: from this
   * engine's outcomes (fleet.ts) or an outlook's next due time; null: none known. A campaign at its
   * end claims retries only once this is due (see the header).
   */
  retryAt: number | null = null;
  /** Nothing queued and nothing in flight here: the campaign is finishing. */
  drained = false;

  constructor(
    row: Pick<CampaignState, 'id' | 'name' | 'userId' | 'priority' | 'status' | 'fromAddress' | 'fromName' | 'sendWindow' | 'waitReason'>,
  ) {
    this.id = row.id;
    this.name = row.name;
    this.userId = row.userId;
    this.priority = row.priority;
    this.status = row.status;
    this.fromAddress = row.fromAddress;
    this.fromName = row.fromName;
    this.sendWindow = row.sendWindow;
    this.waitReason = row.waitReason;
  }

  get size(): number {
    return this.buffer.length - this.head;
  }

  /** A claim is queued or in flight. */
  get refilling(): boolean {
    return this.claim.is('claiming');
  }

  set refilling(on: boolean) {
    this.claim.to(on ? 'claiming' : 'idle');
  }

  take(): Claimed | undefined {
    if (this.head >= this.buffer.length) return undefined;
    const item = this.buffer[this.head++]!;
    if (this.head > 1024 && this.head * 2 > this.buffer.length) {
      this.buffer = this.buffer.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Puts a message back at the front (a pick that could not be sent after all). */
  putBack(item: Claimed): void {
    if (this.head > 0) this.buffer[--this.head] = item;
    else this.buffer.unshift(item);
  }

  add(items: Claimed[]): void {
    if (this.head > 0) {
      this.buffer = this.buffer.slice(this.head);
      this.head = 0;
    }
    this.buffer.push(...items);
  }

  /**
   * Takes the first of the next `scan` buffered messages that `ok` accepts, keeping the others in
   * order (a campaign's next message for a provider that is not throttled).
   */
  takeWhere(ok: (item: Claimed) => boolean, scan: number): Claimed | undefined {
    const end = Math.min(this.buffer.length, this.head + scan);
    for (let i = this.head; i < end; i++) {
      if (!ok(this.buffer[i]!)) continue;
      const [item] = this.buffer.splice(i, 1);
      return item;
    }
    return undefined;
  }

  /** Removes and returns every buffered message that `match` accepts (deferred for a suspended provider). */
  removeWhere(match: (item: Claimed) => boolean): Claimed[] {
    const out: Claimed[] = [];
    const keep: Claimed[] = [];
    for (let i = this.head; i < this.buffer.length; i++) (match(this.buffer[i]!) ? out : keep).push(this.buffer[i]!);
    if (out.length) {
      this.buffer = keep;
      this.head = 0;
    }
    return out;
  }

  /** Empties the buffer (pause, cancel, shutdown), returning what it held. */
  drain(): Claimed[] {
    const out = this.buffer.slice(this.head);
    this.buffer = [];
    this.head = 0;
    return out;
  }
}

export interface PoolOptions {
  db: Sequelize;
  owner: string;
  now: () => Date;
  leaseMs: number;
  claimBatch: number;
  /** Total messages the pool may hold across campaigns; the per-campaign claim shrinks with many campaigns. */
  budget: number;
  onSendable: (c: CampaignState, sendable: boolean) => void;
  onError: (err: unknown, c: CampaignState) => void;
  /** A campaign joined, or its status or priority changed: place it in (or out of) the rings. */
  onPlace: (c: CampaignState) => void;
  /** A campaign left the pool (finished, deleted): out of every ring. */
  onGone: (c: CampaignState) => void;
  /** Claimed messages go back to the queue (pause, shutdown) or are cancelled: written as outcomes. */
  onRelease: (items: Claimed[], as: 'queued' | 'cancelled') => void;
  /** Does some service of this engine carry the campaign? Only then does it claim messages. */
  carried: (c: CampaignState) => boolean;
}

const toClaimed = (taskId: number, r: ClaimedRow): Claimed => ({
  taskId,
  contactId: Number(r.contact_id),
  email: r.email,
  templateId: r.template_id,
  attempts: r.attempts,
  timezone: r.timezone,
  name: r.name,
  attributes: r.attributes ?? {},
  contactActive: r.contact_status === 'active',
  suppressed: r.suppressed ?? null,
  lastServiceId: r.service_id,
  // Rows generated before the provider column have none: the built-in table, without DNS.
  provider: (r.provider as Provider | null) ?? builtinProvider(r.email) ?? otherProvider(r.email),
});

/** How often a campaign with nothing due but messages in flight looks for work again. */
export const IN_FLIGHT_RECHECK_MS = 1000;

/**
 * When a campaign whose claim found nothing due looks again (null: not until a retry or a change
 * wakes it). At its next queued message's time; and while messages are in flight, within
 * IN_FLIGHT_RECHECK_MS too, whatever waits later: one of them may come back as a retry whose
 * outcome committed after this claim's outlook was read, and whose own wake-up was dropped because
 * the campaign was claiming then (fleet.ts). Without the bound, such a retry waited for the later
 * message: up to the end of a 15-minute provider suspension, or of a send window, for a retry due
 * in 300 ms.
 */
export function lookAgainAt(outlook: { nextAt: Date | null; inFlight: number }, nowMs: number): number | null {
  const next = outlook.nextAt ? outlook.nextAt.getTime() : Infinity;
  const at = outlook.inFlight > 0 ? Math.min(next, nowMs + IN_FLIGHT_RECHECK_MS) : next;
  return at === Infinity ? null : at;
}

/** Campaigns claimed for in one statement at most (a few hundred index probes: tens of milliseconds). */
export const BULK_CLAIM = 500;
/** Bulk claims running at once: a couple of the scheduler pool's connections at most. */
const CLAIMS_IN_FLIGHT = 2;
/** The smallest buffer a campaign claims, however many campaigns share the budget. */
const MIN_CLAIM = 2;
/**
 * Campaigns read at every tick: up to SYNC_PER_TICK campaigns the pool reads them at each tick;
 * beyond, every ceil(campaigns / SYNC_PER_TICK) ticks, at most SYNC_GAP_MAX (30,000 campaigns:
 * every 8th tick, 2 s at the default 250 ms), so following the campaigns costs the database a
 * bounded share, and a pause or cancel takes effect within that gap.
 */
const SYNC_PER_TICK = 2_000;
const SYNC_GAP_MAX = 8;

export class CampaignPool {
  readonly campaigns = new Map<number, CampaignState>();
  /** Campaigns waiting for a claim, in the order they asked (each at most once: it is `refilling`). */
  private due: CampaignState[] = [];
  /** Ending checks waiting for the next tick (see the header); `refilling` as those in `due`. */
  private ending: CampaignState[] = [];
  private claimsRunning = 0;
  private idleWaiters: (() => void)[] = [];
  /** Ticks since the campaigns were last read (see SYNC_PER_TICK). */
  private syncSkipped = 0;
  /**
   * Bumped whenever a campaign joins or leaves or its status, priority or backlog changes: what
   * the fleet derives from all campaigns (backlogs, wait reasons) is worked out again only then.
   */
  version = 0;
  private readonly opts: PoolOptions;

  constructor(opts: PoolOptions) {
    this.opts = opts;
  }

  /**
   * Messages claimed per refill: the batch size, shrunk so all campaigns together stay within the
   * budget (each campaign's share of it). With 30,000 campaigns a service serves each one once
   * in 30,000 sends, so a couple of messages cover the time a refill takes.
   */
  get claimSize(): number {
    return Math.max(MIN_CLAIM, Math.min(this.opts.claimBatch, Math.floor(this.opts.budget / Math.max(1, this.campaigns.size))));
  }

  lowWater(): number {
    return Math.max(1, Math.floor(this.claimSize / 2));
  }

  /** Queues a refill unless one is queued or running or the campaign is waiting for later. */
  refill(c: CampaignState, force = false): void {
    if (c.refilling || c.status !== 'sending') return;
    if (!force && c.wakeAt !== null && c.wakeAt > this.opts.now().getTime()) return;
    // The cursor is at the end and messages are still buffered: a claim would find nothing.
    if (!force && c.atEnd && c.size > 0) return;
    c.refilling = true;
    if (this.isEndingCheck(c, this.opts.now().getTime())) {
      this.ending.push(c);
      if (this.ending.length >= BULK_CLAIM) this.flushEnding();
      return;
    }
    this.due.push(c);
    this.startClaims();
  }

  /** At its end, nothing buffered, no retry known due: only its outlook can tell anything new. */
  private isEndingCheck(c: CampaignState, nowMs: number): boolean {
    return c.atEnd && c.size === 0 && !(c.retryAt !== null && c.retryAt <= nowMs);
  }

  /** Queues the waiting ending checks for a bulk claim (which runs their outlook alone). */
  private flushEnding(): void {
    if (!this.ending.length) return;
    this.due.push(...this.ending);
    this.ending = [];
    this.startClaims();
  }

  /** Starts bulk claims for the queued campaigns, up to CLAIMS_IN_FLIGHT at once. */
  private startClaims(): void {
    while (this.claimsRunning < CLAIMS_IN_FLIGHT && this.due.length) {
      const batch = this.due.length <= BULK_CLAIM ? this.due : this.due.slice(0, BULK_CLAIM);
      this.due = this.due.length <= BULK_CLAIM ? [] : this.due.slice(BULK_CLAIM);
      this.claimsRunning++;
      void this.claimBatch(batch).finally(() => {
        this.claimsRunning--;
        this.startClaims();
        if (this.claimsRunning === 0 && !this.due.length) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  private async claimBatch(batch: CampaignState[]): Promise<void> {
    try {
      await this.claimInto(batch.filter((c) => c.status === 'sending' && this.campaigns.get(c.id) === c));
    } catch (err) {
      if (batch[0]) this.opts.onError(err, batch[0]);
      const later = this.opts.now().getTime() + 1000;
      for (const c of batch) c.wakeAt = later;
    } finally {
      for (const c of batch) c.refilling = false;
    }
  }

  /**
   * One bulk claim: due retries of every campaign, then fresh messages for those still short, then
   * the outlook of those that got nothing. Per campaign, the same rules as one claim of its own.
   */
  private async claimInto(cs: CampaignState[]): Promise<void> {
    if (!cs.length) return;
    const limit = this.claimSize;
    const now = this.opts.now();
    const lease = { owner: this.opts.owner, until: new Date(now.getTime() + this.opts.leaseMs), now };
    const got = new Map<number, ClaimedRow[]>();
    const add = (r: ClaimedRow) => {
      const id = Number(r.task_id);
      const list = got.get(id);
      if (list) list.push(r);
      else got.set(id, [r]);
    };
    // Retries: every campaign not at its end (they come before its fresh messages), and those at
    // their end with a retry known due. Fresh messages: only campaigns not at their end.
    const nowMs = now.getTime();
    const retrying = cs.filter((c) => !c.atEnd || (c.retryAt !== null && c.retryAt <= nowMs));
    if (retrying.length) {
      for (const r of await claimRetriesMany(this.opts.db, { taskIds: retrying.map((c) => c.id), limit, ...lease })) add(r);
      // The retries due by now are claimed, unless the limit cut them short; a later one stays known.
      for (const c of retrying) if (c.retryAt !== null && c.retryAt <= nowMs && (got.get(c.id)?.length ?? 0) < limit) c.retryAt = null;
    }
    const short = cs.filter((c) => !c.atEnd && (got.get(c.id)?.length ?? 0) < limit);
    if (short.length) {
      const retried = short.map((c) => got.get(c.id)?.length ?? 0);
      const fresh = new Map<number, ClaimedRow[]>();
      const rows = await claimFreshMany(this.opts.db, {
        taskIds: short.map((c) => c.id),
        cursors: short.map((c) => c.cursor),
        limits: retried.map((n) => limit - n),
        ...lease,
      });
      for (const r of rows) {
        const id = Number(r.task_id);
        const list = fresh.get(id);
        if (list) list.push(r);
        else fresh.set(id, [r]);
      }
      short.forEach((c, i) => {
        const f = fresh.get(c.id) ?? [];
        // In contact-id order (the cursor is the last one claimed), whatever order RETURNING gave.
        if (f.length > 1) f.sort((a, b) => Number(a.contact_id) - Number(b.contact_id));
        if (f.length) c.cursor = Number(f[f.length - 1]!.contact_id);
        // At the end when the claim came back short, or when it took as many fresh messages as the
        // campaign had unfinished at its last read: every fresh message exists from the queue's
        // generation and was counted then, so none is left after the cursor. At 10,000 users x 3
        // campaigns of 2, the first claim takes both messages; without this, the first send
        // refilled the campaign for nothing (a round of claims for every campaign: W4).
        c.atEnd = f.length < limit - retried[i]! || (c.remaining > 0 && f.length >= c.remaining);
        for (const r of f) add(r);
      });
    }
    const empty = cs.filter((c) => !got.has(c.id));
    const outlooks = empty.length
      ? await campaignOutlooks(
          this.opts.db,
          empty.map((c) => c.id),
        )
      : undefined;
    for (const c of cs) {
      const rows = got.get(c.id);
      if (!rows) {
        this.noneClaimed(c, outlooks!.get(c.id) ?? { nextAt: null, inFlight: 0 }, now);
        continue;
      }
      const items = rows.map((r) => toClaimed(c.id, r));
      if (this.campaigns.get(c.id) !== c) {
        // Forgotten while the claim ran (shutdown): the rows go back at once.
        this.opts.onRelease(items, c.status === 'cancelled' ? 'cancelled' : 'queued');
        continue;
      }
      c.wakeAt = null;
      c.drained = false;
      const wasEmpty = c.size === 0;
      // A campaign paused or cancelled while the claim ran keeps its rows until the scheduler releases them.
      c.add(items);
      if (wasEmpty && c.status === 'sending') this.opts.onSendable(c, true);
    }
  }

  /** A claim found nothing for the campaign: when to look again, from its outlook. */
  private noneClaimed(c: CampaignState, outlook: { nextAt: Date | null; inFlight: number }, now: Date): void {
    if (outlook.nextAt && outlook.nextAt.getTime() <= now.getTime()) {
      // Something behind the cursor became sendable: start over from the first contact.
      c.cursor = 0;
      c.atEnd = false;
      c.wakeAt = now.getTime();
      return;
    }
    // Something queued for later (a retry's backoff, a message held for a send window): the wake
    // then claims it (at its end, a campaign claims retries only when one is known due).
    if (outlook.nextAt) c.retryAt = Math.min(c.retryAt ?? Infinity, outlook.nextAt.getTime());
    if (outlook.nextAt === null && c.size > 0) {
      // Nothing queued, messages still buffered: the next look is when the buffer drains (a
      // retry wakes it at its own time), not every second (measured on W1 quick: 3 statements a
      // second for each of 50 campaigns, most of the claims and outlooks of the run).
      c.wakeAt = null;
      c.drained = false;
    } else {
      c.drained = outlook.nextAt === null && outlook.inFlight === 0;
      // Nothing queued, nothing in flight: no backlog left, whatever the last read of the
      // counters said (read again only every few ticks at scale; a retry requested later raises
      // it again there, and the campaign looks again).
      if (c.drained && c.remaining !== 0) {
        c.remaining = 0;
        this.version++;
      }
      // Messages in flight (they may come back as retries): look again within a second rather
      // than on every tick; a retry's own backoff is longer than that anyway.
      c.wakeAt = lookAgainAt(outlook, now.getTime());
    }
  }

  template(id: number): SendableTemplate | undefined {
    return this.templates.get(id);
  }

  /**
   * Follows the campaigns in the database: new sending ones join (their templates loaded first),
   * status and priority changes are applied, paused or cancelled ones release their messages,
   * finished or deleted ones leave. Reads the new campaigns and the known ones that changed
   * (status, priority, backlog), not every known campaign's row.
   */
  async sync(): Promise<void> {
    const gap = Math.min(SYNC_GAP_MAX, Math.ceil(this.campaigns.size / SYNC_PER_TICK));
    if (++this.syncSkipped < gap) return;
    this.syncSkipped = 0;
    const known = [...this.campaigns.values()];
    const changes = known.length
      ? await loadCampaignChanges(this.opts.db, {
          ids: known.map((c) => c.id),
          statuses: known.map((c) => c.status),
          priorities: known.map((c) => c.priority),
          remaining: known.map((c) => c.remaining),
        })
      : [];
    const fresh = await loadNewCampaigns(
      this.opts.db,
      known.map((c) => c.id),
    );
    if (fresh.length || changes.length) this.version++;
    await this.loadTemplates(fresh.flatMap((r) => r.templates ?? []));
    for (const row of fresh) {
      const id = Number(row.id);
      if (this.campaigns.has(id)) continue;
      const c = new CampaignState({
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
      this.campaigns.set(id, c);
      this.opts.onPlace(c);
    }
    for (const row of changes) {
      const c = this.campaigns.get(Number(row.id));
      if (!c) continue;
      if (row.status === null) {
        // Deleted: nothing left to hold (a claim under way first lands; the next tick finds it gone again).
        if (c.size) this.retire(c, 'queued');
        if (!c.refilling) this.forget(c);
        continue;
      }
      c.remaining = row.remaining;
      const changed = c.status !== row.status || c.priority !== row.priority;
      c.status = row.status;
      c.priority = row.priority;
      if (changed) this.opts.onPlace(c);
      if (row.status !== 'sending') {
        this.retire(c, row.status === 'cancelled' ? 'cancelled' : 'queued');
        // Completed, paused or cancelled, and nothing held: it leaves (a resumed one joins again as
        // new). A claim under way lands first; the next tick releases what it brought.
        if (c.size === 0 && !c.refilling) this.forget(c);
      }
    }
  }

  private forget(c: CampaignState): void {
    this.opts.onGone(c);
    this.campaigns.delete(c.id);
  }

  /** Compiled templates by id; templates with the same content share one compiled copy. */
  private readonly templates = new Map<number, SendableTemplate>();
  private readonly compiled = new Map<string, SendableTemplate>();

  private async loadTemplates(ids: number[]): Promise<void> {
    const missing = [...new Set(ids.map(Number))].filter((id) => !this.templates.has(id));
    if (!missing.length) return;
    for (const t of await loadTemplates(this.opts.db, missing)) {
      const key = createHash('sha256')
        .update(JSON.stringify([t.subject, t.html, t.text]))
        .digest('base64');
      let compiled = this.compiled.get(key);
      if (!compiled) this.compiled.set(key, (compiled = compileForSending(t)));
      this.templates.set(t.id, compiled);
    }
  }

  /** Releases a paused campaign's claimed messages (back to queued) or cancels a cancelled one's. */
  retire(c: CampaignState, as: 'queued' | 'cancelled'): void {
    const items = c.drain();
    if (items.length) this.opts.onRelease(items, as);
  }

  /** Wakes campaigns whose wait is over and refills low buffers (of carried campaigns only). */
  refillDue(): void {
    const nowMs = this.opts.now().getTime();
    const low = this.lowWater();
    for (const c of this.campaigns.values()) {
      if (c.refilling || c.status !== 'sending') continue;
      if (c.wakeAt !== null) {
        if (c.wakeAt <= nowMs && this.opts.carried(c)) this.refill(c, true);
      }
      // A drained campaign with messages left (retried by engine.campaigns.retry while it was
      // finishing here) looks again; `remaining` comes from the tick's reload of the campaigns.
      else if ((!c.drained || c.remaining > 0) && c.size <= low && !(c.atEnd && c.size > 0) && this.opts.carried(c)) this.refill(c);
    }
    this.flushEnding();
  }

  /** Messages held in the buffers. */
  get buffered(): number {
    let n = 0;
    for (const c of this.campaigns.values()) n += c.size;
    return n;
  }

  /** Waits until the claims queued so far have landed. */
  settled(): Promise<void> {
    this.flushEnding();
    if (this.claimsRunning === 0 && !this.due.length) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops the queued claims and waits for the running ones (shutdown). */
  async idle(): Promise<void> {
    for (const c of [...this.due, ...this.ending]) c.refilling = false;
    this.due = [];
    this.ending = [];
    await this.settled();
  }
}
