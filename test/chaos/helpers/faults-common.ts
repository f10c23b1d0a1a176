/**
 * Shared by the fault scenarios: SMTP servers that count every accepted Message-ID (with the
 * time and the "era" it arrived in, e.g. which engine process was alive), and the end-of-run
 * accounting read from PostgreSQL: one final state per recipient, campaign counters that agree
 * with the rows, and which recipients reached a server.
 */
import type { Sequelize } from 'sequelize';
import { startSmtpCatcher, type SmtpCatcher, type SmtpCatcherOptions } from '../../../src/smtp-catcher.js';
import { rows } from '../../helpers/db.js';

const MESSAGE_ID = /^Message-ID: (.*)\r$/im;

export function messageIdOf(raw: Buffer): string {
  return MESSAGE_ID.exec(raw.subarray(0, 8192).toString('latin1'))?.[1] ?? '(none)';
}

/** Every acceptance of every server: Message-ID, recipient, when, and the era it happened in. */
export interface Acceptance {
  messageId: string;
  to: string;
  at: number;
  era: number;
  server: number;
}

export class DeliveryLog {
  readonly accepted: Acceptance[] = [];
  readonly catchers: SmtpCatcher[] = [];
  /** Set by the scenario: e.g. the index of the engine process alive now. */
  era = 0;

  /** Starts a server whose acceptances are logged here (messages are not kept: ids only). */
  async server(opts: Omit<SmtpCatcherOptions, 'onAccept' | 'keep'> = {}): Promise<SmtpCatcher> {
    const index = this.catchers.length;
    const c = await startSmtpCatcher({
      ...opts,
      keep: false,
      onAccept: (m) =>
        this.accepted.push({ messageId: messageIdOf(m.raw), to: m.to[0] ?? '', at: Date.now(), era: this.era, server: index }),
    });
    this.catchers.push(c);
    return c;
  }

  get count(): number {
    return this.accepted.length;
  }

  /** Times each Message-ID was accepted. */
  counts(): Map<string, number> {
    const m = new Map<string, number>();
    for (const a of this.accepted) m.set(a.messageId, (m.get(a.messageId) ?? 0) + 1);
    return m;
  }

  /** Acceptances beyond the first of each Message-ID. */
  duplicates(): number {
    let n = 0;
    for (const k of this.counts().values()) n += k - 1;
    return n;
  }

  /** Duplicates by the era of the FIRST acceptance: what each crash (or fault) caused. */
  duplicatesByEra(): Map<number, number> {
    const first = new Map<string, number>();
    const out = new Map<number, number>();
    for (const a of this.accepted) {
      const era = first.get(a.messageId);
      if (era === undefined) first.set(a.messageId, a.era);
      else out.set(era, (out.get(era) ?? 0) + 1);
    }
    return out;
  }

  recipients(): Set<string> {
    return new Set(this.accepted.map((a) => a.to.toLowerCase()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.catchers.splice(0).map((c) => c.stop()));
  }
}

export interface FinalAccount {
  total: number;
  byStatus: Record<string, number>;
  /** Rows not in a final state (queued, sending). */
  open: number;
  /** Campaign counters (sent/failed/cancelled/unknown) that disagree with the rows. */
  counterMismatches: { taskId: number; counters: number[]; rows: number[] }[];
  /** Recipients (email, lower case) with their status. */
  statusOf: Map<string, string>;
}

/** Reads every subtask of `taskIds` and checks the campaign counters against the rows. */
export async function finalAccount(db: Sequelize, taskIds: number[]): Promise<FinalAccount> {
  const subtasks = await rows<{ email: string; status: string }>(
    db,
    'SELECT lower(email) AS email, status FROM subtasks WHERE task_id = ANY($ids::bigint[])',
    { ids: taskIds },
  );
  const byStatus: Record<string, number> = {};
  const statusOf = new Map<string, string>();
  for (const s of subtasks) {
    byStatus[s.status] = (byStatus[s.status] ?? 0) + 1;
    statusOf.set(s.email, s.status);
  }
  const tasks = await rows<{ id: string; c: number[]; r: number[] }>(
    db,
    `SELECT t.id,
            ARRAY[t.sent_count, t.failed_count, t.cancelled_count, t.unknown_count]::int[] AS c,
            ARRAY[count(*) FILTER (WHERE s.status = 'sent'), count(*) FILTER (WHERE s.status = 'failed'),
                  count(*) FILTER (WHERE s.status = 'cancelled'), count(*) FILTER (WHERE s.status = 'unknown')]::int[] AS r
       FROM tasks t JOIN subtasks s ON s.task_id = t.id
      WHERE t.id = ANY($ids::bigint[]) GROUP BY t.id ORDER BY t.id`,
    { ids: taskIds },
  );
  return {
    total: subtasks.length,
    byStatus,
    open: (byStatus.queued ?? 0) + (byStatus.sending ?? 0),
    counterMismatches: tasks.filter((t) => t.c.join() !== t.r.join()).map((t) => ({ taskId: Number(t.id), counters: t.c, rows: t.r })),
    statusOf,
  };
}

/** True when every campaign in `taskIds` is completed. */
export async function allCompleted(db: Sequelize, taskIds: number[]): Promise<boolean> {
  const r = await rows<{ n: number }>(db, `SELECT count(*)::int AS n FROM tasks WHERE id = ANY($ids::bigint[]) AND status <> 'completed'`, {
    ids: taskIds,
  });
  return r[0]!.n === 0;
}
