/**
 * A campaign's recipients, one by one: what happened to each (its status and the server's last
 * reply, from the attempt record), and a retry of those that failed or whose outcome is unknown.
 *
 * recipients() pages with a keyset on the queue's primary key (task_id, contact_id): each page is
 * an index range scan that starts where the previous one stopped, so page 1,000 costs what page 1
 * does. The cursor is opaque (base64url of the last contact id seen, versioned). The last reply is
 * one probe of send_attempts_subtask_idx per row of the page.
 *
 * retry() puts failed and/or unknown messages back in the queue, in one transaction:
 *  - the campaign row is locked (the scheduler's outcome writes lock it too, so counters stay exact);
 *  - addresses suppressed since (the user's list or the global one) and contacts no longer active
 *    are left out, and counted;
 *  - the user's credit must cover every message re-queued, taken with the conditional UPDATE that
 *    campaign creation uses (`remaining_quota >= n`): not enough is a QuotaExceededError and
 *    nothing is written;
 *  - the messages go back to `queued` with their attempt count (so the scheduler claims them through
 *    its retry index at once), the campaign's failed/unknown counters go down by as many, and a
 *    completed campaign is sending again. The Message-ID is the subtask's (`<taskId.contactId@...>`),
 *    so a message retried after an unknown outcome can be recognised as a duplicate.
 */
import { z } from 'zod';
import type { ServiceContext } from './context.js';
import type { SubtaskStatus, TaskStatus } from '../models/index.js';
import { ConflictError, NotFoundError, QuotaExceededError, ValidationError } from './kernel/errors.js';
import { queryRows } from './kernel/db-query.js';
import { parseId, parseInput } from './validation.js';

export const SUBTASK_STATUSES = ['queued', 'sending', 'sent', 'failed', 'cancelled', 'unknown'] as const;
export const RETRYABLE_STATUSES = ['failed', 'unknown'] as const;
export type RetryableStatus = (typeof RETRYABLE_STATUSES)[number];

const statusSchema = z.enum(SUBTASK_STATUSES, { error: `must be one of ${SUBTASK_STATUSES.join(', ')}` });

export const recipientsQuerySchema = z.strictObject({
  /** One status or several; all when absent. */
  status: z.union([statusSchema, z.array(statusSchema).min(1, 'must name at least one status')]).optional(),
  /** The previous page's nextCursor. */
  cursor: z.string().max(200, 'must be at most 200 characters').optional(),
  limit: z.number().int().min(1, 'must be at least 1').max(1000, 'must be at most 1000').default(100),
});
export type RecipientsQuery = z.input<typeof recipientsQuerySchema>;

export const retrySchema = z.strictObject({
  statuses: z
    .array(z.enum(RETRYABLE_STATUSES, { error: `must be one of ${RETRYABLE_STATUSES.join(', ')}` }))
    .min(1, 'must name at least one status')
    .default(['failed', 'unknown']),
});
export type RetryInput = z.input<typeof retrySchema>;

export interface LastReply {
  at: Date;
  serviceId: number | null;
  /** The recipient's domain. */
  provider: string | null;
  /** What the server said: accepted, transient, permanent, ambiguous, connection (never reached). */
  result: string;
  code: number | null;
  enhancedCode: string | null;
  text: string | null;
  durationMs: number | null;
}

export interface Recipient {
  contactId: number;
  email: string;
  status: SubtaskStatus;
  attempts: number;
  sentAt: Date | null;
  messageId: string | null;
  lastError: string | null;
  /** The last attempt's reply; null before the first attempt (or with ATTEMPT_RECORDS off, or after retention). */
  lastReply: LastReply | null;
}

export interface RecipientsPage {
  items: Recipient[];
  /** Pass as `cursor` for the next page; null on the last one. */
  nextCursor: string | null;
}

export interface RetryResult {
  campaignId: number;
  status: TaskStatus;
  /** Messages put back in the queue (and credit taken for each). */
  requeued: number;
  /** Of those, how many had failed and how many were unknown. */
  failed: number;
  unknown: number;
  /** Left out: the address is suppressed (the user's list or the global one). */
  skippedSuppressed: number;
  /** Left out: the contact is no longer active (unsubscribed, bounced, deleted). */
  skippedInactive: number;
  /** The user's credit left after the retry. */
  remainingCredit: number;
}

const CURSOR_PREFIX = 'r1.';

export function encodeCursor(contactId: number): string {
  return Buffer.from(`${CURSOR_PREFIX}${contactId}`).toString('base64url');
}

export function decodeCursor(cursor: string): number {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const id = text.startsWith(CURSOR_PREFIX) ? text.slice(CURSOR_PREFIX.length) : '';
  if (!/^\d{1,18}$/.test(id) || encodeCursor(Number(id)) !== cursor) {
    throw new ValidationError([{ path: 'cursor', message: 'is not a cursor this API returned (pass nextCursor as it came)' }]);
  }
  return Number(id);
}

interface RecipientRow {
  contact_id: string;
  email: string;
  status: SubtaskStatus;
  attempts: number;
  sent_at: Date | null;
  message_id: string | null;
  last_error: string | null;
  attempted_at: Date | null;
  a_service_id: number | null;
  provider: string | null;
  result: string | null;
  smtp_code: number | null;
  enhanced_code: string | null;
  reply: string | null;
  duration_ms: number | null;
}

/**
 * One page along the primary key. The status test is a filter on that range scan (no index per
 * status: every index costs at generation), so a page of a rare status reads further; the LIMIT
 * still stops it at the page's end.
 */
export const RECIPIENTS_PAGE_SQL = `
SELECT s.contact_id, s.email, s.status, s.attempts, s.sent_at, s.message_id, s.last_error,
       a.attempted_at, a.service_id AS a_service_id, a.provider, a.result, a.smtp_code, a.enhanced_code, a.reply, a.duration_ms
  FROM (SELECT task_id, contact_id, email, status, attempts, sent_at, message_id, last_error FROM subtasks
         WHERE task_id = $id AND contact_id > $after AND ($statuses::text[] IS NULL OR status = ANY($statuses::text[]))
         ORDER BY contact_id LIMIT $limit) s
  LEFT JOIN LATERAL (
       SELECT attempted_at, service_id, provider, result, smtp_code, enhanced_code, reply, duration_ms FROM send_attempts
        WHERE task_id = s.task_id AND contact_id = s.contact_id ORDER BY attempted_at DESC LIMIT 1) a ON true
 ORDER BY s.contact_id`;

function toRecipient(r: RecipientRow): Recipient {
  return {
    contactId: Number(r.contact_id),
    email: r.email,
    status: r.status,
    attempts: r.attempts,
    sentAt: r.sent_at,
    messageId: r.message_id,
    lastError: r.last_error,
    lastReply:
      r.attempted_at === null
        ? null
        : {
            at: r.attempted_at,
            serviceId: r.a_service_id,
            provider: r.provider,
            result: r.result!,
            code: r.smtp_code,
            enhancedCode: r.enhanced_code,
            text: r.reply,
            durationMs: r.duration_ms,
          },
  };
}

export function createRecipientsApi(ctx: ServiceContext) {
  const db = ctx.apiDb;

  return {
    /** One page of a campaign's recipients in contact-id order, with their status and last reply. */
    async recipients(id: number, query: RecipientsQuery = {}): Promise<RecipientsPage> {
      const campaignId = parseId(id, 'campaignId');
      const p = parseInput(recipientsQuerySchema, query);
      const after = p.cursor !== undefined ? decodeCursor(p.cursor) : 0;
      const [task] = await queryRows(db, 'SELECT id FROM tasks WHERE id = $id', { id: campaignId });
      if (!task) throw new NotFoundError('campaign', campaignId);
      const statuses = p.status === undefined ? null : Array.isArray(p.status) ? [...new Set(p.status)] : [p.status];
      const rows = await queryRows<RecipientRow>(db, RECIPIENTS_PAGE_SQL, { id: campaignId, after, statuses, limit: p.limit + 1 });
      const more = rows.length > p.limit;
      const items = rows.slice(0, p.limit).map(toRecipient);
      return { items, nextCursor: more ? encodeCursor(items[items.length - 1]!.contactId) : null };
    },

    /**
     * Puts the campaign's failed and/or unknown messages back in the queue (see the header). Needs
     * the user's credit for each; never re-queues a suppressed address; keeps the Message-ID.
     */
    async retry(id: number, input: RetryInput = {}): Promise<RetryResult> {
      const campaignId = parseId(id, 'campaignId');
      const p = parseInput(retrySchema, input);
      const statuses = [...new Set(p.statuses)];
      return db.transaction(async (t) => {
        const [task] = await queryRows<{ status: TaskStatus; created_by: number; generated_at: Date | null }>(
          db,
          'SELECT status, created_by, generated_at FROM tasks WHERE id = $id FOR UPDATE',
          { id: campaignId },
          t,
        );
        if (!task) throw new NotFoundError('campaign', campaignId);
        if (task.status === 'cancelled') throw new ConflictError(`cannot retry campaign ${campaignId}: it is cancelled`);
        if (task.generated_at === null) throw new ConflictError(`cannot retry campaign ${campaignId}: its queue is not generated yet`);
        const [n] = await queryRows<{ eligible: number; suppressed: number; inactive: number; remaining: string }>(
          db,
          `WITH cand AS (
             SELECT s.contact_id,
                    EXISTS (SELECT 1 FROM suppressions sp WHERE sp.email = lower(s.email) AND (sp.user_id = s.user_id OR sp.user_id IS NULL)) AS suppressed,
                    COALESCE(c.status = 'active', false) AS active
               FROM subtasks s LEFT JOIN contacts c ON c.id = s.contact_id
              WHERE s.task_id = $id AND s.status = ANY($statuses::text[]))
           SELECT count(*) FILTER (WHERE NOT suppressed AND active)::int AS eligible,
                  count(*) FILTER (WHERE suppressed)::int AS suppressed,
                  count(*) FILTER (WHERE NOT suppressed AND NOT active)::int AS inactive,
                  (SELECT remaining_quota FROM users WHERE id = $user) AS remaining
             FROM cand`,
          { id: campaignId, statuses, user: task.created_by },
          t,
        );
        const want = n!.eligible;
        const base = { campaignId, skippedSuppressed: n!.suppressed, skippedInactive: n!.inactive };
        if (want === 0) return { ...base, status: task.status, requeued: 0, failed: 0, unknown: 0, remainingCredit: Number(n!.remaining) };
        const [credit] = await queryRows<{ remaining_quota: string }>(
          db,
          `UPDATE users SET remaining_quota = remaining_quota - $n, updated_at = now()
            WHERE id = $user AND remaining_quota >= $n RETURNING remaining_quota`,
          { n: want, user: task.created_by },
          t,
        );
        if (!credit) throw new QuotaExceededError(want, Number(n!.remaining));
        const [done] = await queryRows<{ failed: number; unknown: number; status: TaskStatus }>(
          db,
          `WITH re AS (
             UPDATE subtasks s SET status = 'queued', not_before = $now, attempts = GREATEST(s.attempts, 1), last_error = NULL
               FROM subtasks o LEFT JOIN contacts c ON c.id = o.contact_id
              WHERE o.task_id = $id AND o.status = ANY($statuses::text[])
                AND s.task_id = o.task_id AND s.contact_id = o.contact_id
                AND c.status = 'active'
                AND NOT EXISTS (SELECT 1 FROM suppressions sp WHERE sp.email = lower(o.email) AND (sp.user_id = o.user_id OR sp.user_id IS NULL))
             RETURNING o.status AS was),
           n AS (SELECT count(*) FILTER (WHERE was = 'failed')::int AS failed, count(*) FILTER (WHERE was = 'unknown')::int AS unknown FROM re)
           UPDATE tasks t SET failed_count = failed_count - n.failed, unknown_count = unknown_count - n.unknown,
                  status = CASE WHEN t.status = 'completed' THEN 'sending' ELSE t.status END,
                  completed_at = CASE WHEN t.status = 'completed' THEN NULL ELSE t.completed_at END,
                  updated_at = now()
             FROM n WHERE t.id = $id
           RETURNING n.failed, n.unknown, t.status`,
          { id: campaignId, statuses, now: ctx.clock().toJSDate() },
          t,
        );
        if (done!.failed + done!.unknown !== want) {
          // Cannot happen under the campaign lock (only the scheduler moves these rows, and it
          // locks the campaign too); refuse rather than take credit that does not match.
          throw new ConflictError(`campaign ${campaignId} changed during the retry; try again`);
        }
        return {
          ...base,
          status: done!.status,
          requeued: want,
          failed: done!.failed,
          unknown: done!.unknown,
          remainingCredit: Number(credit.remaining_quota),
        };
      });
    },
  };
}
export type RecipientsApi = ReturnType<typeof createRecipientsApi>;
