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
 * keeps its turns. Claims run through one p-queue with a small concurrency, so refilling thousands
 * of campaigns never takes more than a couple of the scheduler pool's connections.
 *
 * The claim itself moves idle -> claiming -> idle, asserted (state.ts): never two claims of one
 * campaign at once.
 *
 * Fresh messages are claimed along the primary key after a cursor (the last contact id claimed):
 * each claim reads only new rows. When the cursor reaches the end, the campaign's outlook query
 * says whether anything behind it became sendable (recovered leases, released messages), and the
 * cursor starts over from zero if so.
 *
 * The pool also follows the campaigns in the database (sync: new sending campaigns join, paused or
 * cancelled ones release their claimed messages, finished ones leave) and keeps the compiled
 * templates they use. Where a campaign is carried (the services' rings) is the fleet's business:
 * the pool tells it through the hooks in PoolOptions.
 */
import PQueue from 'p-queue';
import type { Sequelize } from 'sequelize';
import type { StoredSendWindow } from '../../models/index.js';
import { compileForSending, type SendableTemplate } from '../delivery/message.js';
import { campaignOutlook, claimFresh, claimRetries, type ClaimedRow } from './sql/claim.js';
import { loadActiveCampaigns, loadTemplates, templatesOf } from './sql/campaigns.js';
import { StateMachine } from './state.js';
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
   * The last fresh claim came back short: the cursor is at the end, so no claim finds anything
   * new before the buffer drains (only retries, which wake the campaign at their own time).
   */
  atEnd = false;
  private readonly claim = new StateMachine<'idle' | 'claiming'>('campaign claim', { idle: ['claiming'], claiming: ['idle'] }, 'idle');
  /** ms epoch at which to look for work again; null: not waiting. */
  wakeAt: number | null = null;
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

  /** A claim is in flight. */
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

const toClaimed =
  (taskId: number) =>
  (r: ClaimedRow): Claimed => ({
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

/** How often a campaign with nothing queued but messages in flight looks for work again. */
const IN_FLIGHT_RECHECK_MS = 1000;

export class CampaignPool {
  readonly campaigns = new Map<number, CampaignState>();
  private readonly claims = new PQueue({ concurrency: 2 });
  private readonly opts: PoolOptions;

  constructor(opts: PoolOptions) {
    this.opts = opts;
  }

  /** Messages claimed per refill: the batch size, shrunk so all campaigns together stay within budget. */
  get claimSize(): number {
    return Math.max(4, Math.min(this.opts.claimBatch, Math.floor(this.opts.budget / Math.max(1, this.campaigns.size))));
  }

  lowWater(): number {
    return Math.max(1, Math.floor(this.claimSize / 2));
  }

  /** Starts a refill unless one is running or the campaign is waiting for later. */
  refill(c: CampaignState, force = false): void {
    if (c.refilling || c.status !== 'sending') return;
    if (!force && c.wakeAt !== null && c.wakeAt > this.opts.now().getTime()) return;
    // The cursor is at the end and messages are still buffered: a claim would find nothing.
    if (!force && c.atEnd && c.size > 0) return;
    c.refilling = true;
    void this.claims.add(async () => {
      try {
        await this.claimInto(c);
      } catch (err) {
        this.opts.onError(err, c);
        c.wakeAt = this.opts.now().getTime() + 1000;
      } finally {
        c.refilling = false;
      }
    });
  }

  private async claimInto(c: CampaignState): Promise<void> {
    if (c.status !== 'sending' || !this.campaigns.has(c.id)) return;
    const limit = this.claimSize;
    const now = this.opts.now();
    const lease = { owner: this.opts.owner, until: new Date(now.getTime() + this.opts.leaseMs), now };
    const rows = await claimRetries(this.opts.db, { taskId: c.id, limit, ...lease });
    if (rows.length < limit) {
      const fresh = await claimFresh(this.opts.db, { taskId: c.id, cursor: c.cursor, limit: limit - rows.length, ...lease });
      if (fresh.length) c.cursor = Number(fresh[fresh.length - 1]!.contact_id);
      c.atEnd = fresh.length < limit - rows.length;
      rows.push(...fresh);
    }
    if (rows.length === 0) {
      const outlook = await campaignOutlook(this.opts.db, c.id);
      if (outlook.nextAt && outlook.nextAt.getTime() <= now.getTime()) {
        // Something behind the cursor became sendable: start over from the first contact.
        c.cursor = 0;
        c.atEnd = false;
        c.wakeAt = now.getTime();
      } else if (outlook.nextAt === null && c.size > 0) {
        // Nothing queued, messages still buffered: the next look is when the buffer drains (a
        // retry wakes it at its own time), not every second (measured on W1 quick: 3 statements a
        // second for each of 50 campaigns, most of the claims and outlooks of the run).
        c.wakeAt = null;
        c.drained = false;
      } else {
        c.drained = outlook.nextAt === null && outlook.inFlight === 0;
        // Nothing queued but messages in flight (they may come back as retries): look again in a
        // second rather than on every tick; a retry's own backoff is longer than that anyway.
        c.wakeAt = outlook.nextAt ? outlook.nextAt.getTime() : c.drained ? null : now.getTime() + IN_FLIGHT_RECHECK_MS;
      }
      return;
    }
    c.wakeAt = null;
    c.drained = false;
    const wasEmpty = c.size === 0;
    // A campaign paused or cancelled while the claim ran keeps its rows until the scheduler releases them.
    c.add(rows.map(toClaimed(c.id)));
    if (wasEmpty && c.status === 'sending') this.opts.onSendable(c, true);
  }

  template(id: number): SendableTemplate | undefined {
    return this.templates.get(id);
  }

  /**
   * Follows the campaigns in the database: new sending ones join (their templates loaded first),
   * status and priority changes are applied, paused or cancelled ones release their messages,
   * finished or deleted ones leave.
   */
  async sync(): Promise<void> {
    const rows = await loadActiveCampaigns(this.opts.db, [...this.campaigns.keys()]);
    await this.loadTemplates(rows.filter((r) => r.status === 'sending' && !this.campaigns.has(Number(r.id))).map((r) => Number(r.id)));
    const seen = new Set<number>();
    for (const row of rows) {
      const id = Number(row.id);
      seen.add(id);
      let c = this.campaigns.get(id);
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
        this.campaigns.set(id, c);
        this.opts.onPlace(c);
        continue;
      }
      c.remaining = row.remaining;
      const changed = c.status !== row.status || c.priority !== row.priority;
      c.status = row.status;
      c.priority = row.priority;
      if (changed) this.opts.onPlace(c);
      if (row.status !== 'sending') this.retire(c, row.status === 'cancelled' ? 'cancelled' : 'queued');
    }
    // Completed (or deleted) campaigns: nothing left to hold.
    for (const c of [...this.campaigns.values()]) {
      if (!seen.has(c.id) || (c.status !== 'sending' && c.size === 0)) {
        if (c.size) this.retire(c, 'queued');
        this.opts.onGone(c);
        this.campaigns.delete(c.id);
      }
    }
  }

  private readonly templates = new Map<number, SendableTemplate>();

  private async loadTemplates(taskIds: number[]): Promise<void> {
    if (!taskIds.length) return;
    const missing = (await templatesOf(this.opts.db, taskIds)).filter((id) => !this.templates.has(id));
    if (!missing.length) return;
    for (const t of await loadTemplates(this.opts.db, missing)) this.templates.set(t.id, compileForSending(t));
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
      if (c.status !== 'sending' || !this.opts.carried(c)) continue;
      if (c.wakeAt !== null && c.wakeAt <= nowMs) this.refill(c, true);
      // A drained campaign with messages left (retried by engine.campaigns.retry while it was
      // finishing here) looks again; `remaining` comes from the tick's reload of the campaigns.
      else if (c.wakeAt === null && (!c.drained || c.remaining > 0) && c.size <= low) this.refill(c);
    }
  }

  /** Messages held in the buffers. */
  get buffered(): number {
    let n = 0;
    for (const c of this.campaigns.values()) n += c.size;
    return n;
  }

  /** Waits until the claims queued so far have landed. */
  settled(): Promise<void> {
    return this.claims.onIdle();
  }

  /** Waits for running claims (shutdown). */
  async idle(): Promise<void> {
    this.claims.clear();
    await this.claims.onIdle();
  }
}
