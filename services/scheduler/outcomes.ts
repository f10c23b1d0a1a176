/**
 * The outcome writer: every message's outcome, the attempt records, the error counts, the bounces
 * and the quota units spent reach PostgreSQL here, in one statement per write (sql/outcomes.ts flushOutcomes).
 *
 * Written continuously: a write starts as soon as there is something to write and no write is
 * under way (coalescing what one turn of the event loop produced), and the next starts when the
 * previous one commits, with whatever arrived meanwhile. Under load that is group commit (each
 * write carries the sends of the previous write's duration); idle, one small write per send; never
 * a timer to wait for. A send slot waits for its outcome's commit (pushCommitted), and a service
 * has at most its commit window of slots alive (service-runner.ts): that is the crash bound, and
 * the back-pressure on sends while writes are slow. A failed write keeps everything for the next
 * (the control tick retries; no hot loop while the database is away).
 *
 * States, asserted (state.ts):  idle -> kicked (a write is due this turn) -> writing -> idle
 *                               idle -> writing (a direct flush) -> idle
 */
import type { Sequelize } from 'sequelize';
import type { Logger } from '../kernel/logger.js';
import { StateMachine } from './state.js';
import { flushOutcomes, markBounced, recordErrors, type Attempt, type Outcome } from './sql/outcomes.js';
import type { SpentUnits } from './sql/quota.js';
import type { Claimed } from './campaign-pool.js';
import type { AttemptFields, OutcomeFields } from './send.js';

/** Outcomes per write at most. */
const WRITE_BATCH = 5000;

export interface ErrorCount {
  type: string;
  message: string;
  serviceId: number | null;
  count: number;
  at: Date;
}

export interface OutcomeWriterOptions {
  db: Sequelize;
  owner: string;
  logger: Logger;
  /** The units the running services took or gave back since the last write (see ServiceRunner.takeSpent). */
  collectSpent(): { spent: SpentUnits[]; undo: () => void }[];
  /** A write committed, carrying `outcomes` outcomes. */
  onWritten(outcomes: number): void;
  onError(err: unknown, where: string): void;
}

export class OutcomeWriter {
  private outcomes: Outcome[] = [];
  /** Waiting for the commit of an outcome (parallel to `outcomes`: the same index). */
  private waiters: ((() => void) | undefined)[] = [];
  /** Attempt records not written yet: they go with the outcomes, in the same statement. */
  private attempts: Attempt[] = [];
  private errors = new Map<string, ErrorCount>();
  private bounced: number[] = [];
  /** Units spent not written yet: of removed runners, or of a write that failed. */
  private spentBacklog: SpentUnits[] = [];
  private writing: Promise<void> | undefined;
  private readonly machine = new StateMachine<'idle' | 'kicked' | 'writing'>(
    'outcome writer',
    { idle: ['kicked', 'writing'], kicked: ['writing', 'idle'], writing: ['idle'] },
    'idle',
  );

  constructor(private readonly opts: OutcomeWriterOptions) {}

  get pending(): number {
    return this.outcomes.length;
  }

  push(item: Pick<Claimed, 'taskId' | 'contactId'>, o: OutcomeFields): void {
    this.outcomes.push({ taskId: item.taskId, contactId: item.contactId, ...o });
    this.waiters.push(undefined);
    this.kick();
  }

  /**
   * Pushes an outcome and resolves once it is committed. A send slot waits for this before it
   * ends (service-runner.ts), so a message is held by its slot from the pick until its outcome is
   * in the database: what a crash can resend is at most the services' commit windows, whether the
   * message was on the wire, waiting for the write, or in the write under way. A failed write
   * keeps the outcome, and the slot waits for the write that succeeds.
   */
  pushCommitted(item: Pick<Claimed, 'taskId' | 'contactId'>, o: OutcomeFields): Promise<void> {
    return new Promise((resolve) => {
      this.outcomes.push({ taskId: item.taskId, contactId: item.contactId, ...o });
      this.waiters.push(resolve);
      this.kick();
    });
  }

  /** Keeps the record of one attempt (written by the next outcome write, in its statement). */
  pushAttempt(item: Pick<Claimed, 'taskId' | 'contactId'>, a: AttemptFields): void {
    this.attempts.push({ taskId: item.taskId, contactId: item.contactId, ...a });
    this.kick();
  }

  countError(type: string, message: string, serviceId: number | null, at: Date): void {
    const key = `${type}\u0000${message}`;
    const e = this.errors.get(key);
    if (e) {
      e.count++;
      e.at = at;
    } else {
      this.errors.set(key, { type, message, serviceId, count: 1, at });
    }
  }

  bounce(contactId: number): void {
    this.bounced.push(contactId);
  }

  keepSpent(spent: SpentUnits[]): void {
    this.spentBacklog.push(...spent);
  }

  private get due(): boolean {
    return (
      this.outcomes.length > 0 ||
      this.attempts.length > 0 ||
      this.errors.size > 0 ||
      this.bounced.length > 0 ||
      this.spentBacklog.length > 0
    );
  }

  /** A write is due: starts it in the next turn unless one is under way or already due. */
  private kick(): void {
    if (!this.machine.is('idle')) return;
    this.machine.to('kicked');
    setImmediate(() => {
      if (!this.machine.is('kicked')) return; // a direct flush took it
      this.machine.to('idle');
      this.flushOnce().catch((err: unknown) => this.opts.onError(err, 'flush'));
    });
  }

  /**
   * Writes every pending outcome (and error counts, bounces, spent units) now, including those
   * that arrive while a write is under way: stop() and engine.scheduler.flush() rely on nothing
   * being left behind.
   */
  async flush(): Promise<void> {
    do await this.flushOnce();
    while (this.due);
  }

  /** One write; joins the write under way, if any. */
  flushOnce(): Promise<void> {
    if (this.writing) return this.writing;
    if (this.machine.is('kicked')) this.machine.to('idle');
    this.machine.to('writing');
    // Cleared in a chained finally (a microtask), so a write with nothing to do cannot clear it
    // before it is stored.
    this.writing = this.write()
      .finally(() => {
        this.writing = undefined;
        this.machine.to('idle');
      })
      .then(() => {
        // Committed: the next write starts now if outcomes arrived meanwhile.
        if (this.outcomes.length || this.attempts.length) this.kick();
      });
    return this.writing;
  }

  /** One write: up to WRITE_BATCH outcomes, the error counts, the bounces, the units spent. */
  private async write(): Promise<void> {
    if (!this.due) return;
    const taken = this.opts.collectSpent();
    const backlog = this.spentBacklog.splice(0);
    const spent = sumSpent([...backlog, ...taken.flatMap((t) => t.spent)]);
    const undoSpent = () => {
      this.spentBacklog.push(...backlog);
      for (const t of taken) t.undo();
    };
    const batch = this.outcomes.splice(0, WRITE_BATCH);
    const waiting = this.waiters.splice(0, WRITE_BATCH);
    const attempts = this.attempts.splice(0, WRITE_BATCH);
    const errors = [...this.errors.values()];
    this.errors.clear();
    const bounced = this.bounced.splice(0);
    try {
      if (batch.length || spent.length || attempts.length) {
        const res = await flushOutcomes(this.opts.db, this.opts.owner, batch, spent, attempts);
        this.opts.onWritten(batch.length);
        for (const done of waiting) done?.();
        if (res.applied < batch.length) {
          this.opts.logger.warn({ lost: batch.length - res.applied }, 'outcomes not applied: leases were recovered by another engine');
        }
        for (const id of res.completed) this.opts.logger.info({ campaignId: id }, 'campaign completed');
      }
      await recordErrors(this.opts.db, errors);
      await markBounced(this.opts.db, bounced);
    } catch (err) {
      // Kept for the next write: an outcome is never dropped because the database blinked.
      this.outcomes.unshift(...batch);
      this.waiters.unshift(...waiting);
      this.attempts.unshift(...attempts);
      for (const e of errors) this.errors.set(`${e.type}\u0000${e.message}`, e);
      this.bounced.push(...bounced);
      undoSpent();
      throw err;
    }
  }
}

/** Units summed per service and quota day, zeros left out. */
export function sumSpent(list: SpentUnits[]): SpentUnits[] {
  const sum = new Map<string, SpentUnits>();
  for (const x of list) {
    const key = `${x.serviceId}/${x.day}`;
    const cur = sum.get(key);
    if (cur) cur.n += x.n;
    else sum.set(key, { ...x });
  }
  return [...sum.values()].filter((x) => x.n !== 0);
}
