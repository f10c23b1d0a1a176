/**
 * Unsubscribes (RFC 8058 one-click, and complaints from services/bounces.ts): the contact stops
 * being active and its queued mail in every live campaign of its owner is cancelled at once, with
 * the owner's credit refunded, in one transaction.
 *
 * Cancelling is one statement (cancelQueuedMail): it finds the owner's campaigns that can still
 * send (scheduled, sending, paused), cancels their queued subtasks for the contact through the
 * subtasks primary key (task_id, contact_id), adds the counts to tasks.cancelled_count (completing
 * a sending campaign whose counters reach its total, as the scheduler's outcome flush does), and
 * refunds users.remaining_quota. Subtasks already claimed by a scheduler ('sending') are not
 * touched here: the scheduler checks the contact's status before sending and cancels them itself.
 * A row claimed concurrently is re-checked by PostgreSQL after its lock and skipped, so nothing is
 * counted twice.
 */
import type { Sequelize, Transaction } from 'sequelize';
import { verifyUnsubscribeToken } from './delivery/unsubscribe.js';
import { suppress } from './suppressions.js';
import { recordStatusEvent, type UnsubscribeMethod } from './contact-status.js';
import { applyCounters } from './scheduler/sql/counters.js';

export interface CancelResult {
  /** Queued subtasks cancelled. */
  cancelled: number;
  /** Credit given back to the contacts' owners (one unit per cancelled subtask). */
  refunded: number;
  /** Campaigns that had mail cancelled. */
  campaigns: number[];
}

/**
 * Cancels the queued mail of `contactIds` in every campaign of their owners that can still send.
 * Pass the caller's transaction: the contact's status change and the cancellation commit together.
 */
export async function cancelQueuedMail(db: Sequelize, contactIds: number[], transaction: Transaction): Promise<CancelResult> {
  if (!contactIds.length) return { cancelled: 0, refunded: 0, campaigns: [] };
  const [rows] = (await db.query(
    `WITH owners AS (SELECT DISTINCT user_id FROM contacts WHERE id = ANY($contacts::bigint[])),
     live AS (
       SELECT array_agg(t.id) AS ids FROM tasks t
        WHERE t.created_by IN (SELECT user_id FROM owners) AND t.status IN ('sending', 'scheduled', 'paused')),
     cancelled AS (
       UPDATE subtasks s SET status = 'cancelled', last_error = 'recipient unsubscribed or bounced'
        WHERE s.task_id = ANY((SELECT ids FROM live)::bigint[]) AND s.contact_id = ANY($contacts::bigint[]) AND s.status = 'queued'
       RETURNING s.task_id),
     per_task AS (SELECT task_id, count(*)::int AS n FROM cancelled GROUP BY task_id),
     t AS (
       ${applyCounters(`(SELECT task_id, 0 AS sent, 0 AS failed, n AS cancelled, 0 AS unknown FROM per_task)`)}
       RETURNING tasks.id, tasks.created_by, d.cancelled AS n),
     refund AS (
       UPDATE users SET remaining_quota = remaining_quota + r.n, updated_at = now()
         FROM (SELECT created_by, sum(n)::int AS n FROM t GROUP BY created_by) r
        WHERE users.id = r.created_by
       RETURNING r.n)
     SELECT (SELECT count(*) FROM cancelled)::int AS cancelled,
            (SELECT COALESCE(sum(n), 0) FROM refund)::int AS refunded,
            (SELECT COALESCE(array_agg(id ORDER BY id), '{}') FROM t) AS campaigns`,
    { bind: { contacts: contactIds }, transaction },
  )) as [{ cancelled: number; refunded: number; campaigns: (string | number)[] }[], unknown];
  const r = rows[0]!;
  return { cancelled: r.cancelled, refunded: r.refunded, campaigns: r.campaigns.map(Number) };
}

export interface UnsubscribeTarget {
  contactId: number;
  taskId: number;
  email: string;
  status: 'active' | 'unsubscribed' | 'bounced';
  campaignName: string | null;
}

/**
 * Who a token names, without changing anything (the confirmation page). Undefined: forged,
 * altered, or naming a contact or a campaign (of the contact's owner) that does not exist.
 */
export async function describeUnsubscribeToken(db: Sequelize, secret: string, token: string): Promise<UnsubscribeTarget | undefined> {
  const v = verifyUnsubscribeToken(secret, token);
  if (!v || v.contactId > Number.MAX_SAFE_INTEGER || v.taskId > Number.MAX_SAFE_INTEGER) return undefined;
  const [rows] = (await db.query(
    `SELECT c.id, c.email, c.status, t.name AS campaign
       FROM contacts c JOIN tasks t ON t.id = $taskId AND t.created_by = c.user_id
      WHERE c.id = $contactId`,
    { bind: { contactId: v.contactId, taskId: v.taskId } },
  )) as [{ id: string; email: string; status: UnsubscribeTarget['status']; campaign: string | null }[], unknown];
  const c = rows[0];
  if (!c) return undefined;
  return { contactId: v.contactId, taskId: v.taskId, email: c.email, status: c.status, campaignName: c.campaign };
}

export interface UnsubscribeResult extends CancelResult {
  contactId: number;
  email: string;
  /** False when the contact was already unsubscribed or bounced (the call is idempotent). */
  changed: boolean;
}

/**
 * Marks the contact unsubscribed (a bounced contact stays bounced) and cancels its queued mail in
 * every live campaign, in one transaction.
 */
export async function unsubscribeContact(
  db: Sequelize,
  contactId: number,
  how: { method: UnsubscribeMethod; taskId?: number | null } = { method: 'api' },
): Promise<UnsubscribeResult | undefined> {
  return db.transaction(async (transaction) => {
    const [rows] = (await db.query(
      `WITH c AS (SELECT id, status AS old FROM contacts WHERE id = $id FOR UPDATE)
       UPDATE contacts SET status = CASE WHEN contacts.status = 'active' THEN 'unsubscribed' ELSE contacts.status END, updated_at = now()
         FROM c WHERE contacts.id = c.id
       RETURNING contacts.email, contacts.user_id, c.old`,
      { bind: { id: contactId }, transaction },
    )) as [{ email: string; user_id: number; old: string }[], unknown];
    const row = rows[0];
    if (!row) return undefined;
    if (row.old === 'active') {
      await recordStatusEvent(
        db,
        {
          contactId,
          userId: row.user_id,
          email: row.email,
          from: 'active',
          to: 'unsubscribed',
          method: how.method,
          taskId: how.taskId ?? null,
        },
        transaction,
      );
    }
    // The address goes on its owner's suppression list too: a re-import cannot bring it back.
    await suppress(db, [{ userId: row.user_id, email: row.email, reason: 'unsubscribe', source: 'unsubscribe' }], transaction);
    const cancelled = await cancelQueuedMail(db, [contactId], transaction);
    return { contactId, email: row.email, changed: row.old === 'active', ...cancelled };
  });
}

/**
 * Verifies a one-click token and unsubscribes its contact, recording the campaign and `method`
 * (the one-click POST or the page's button). Undefined: the token is forged or altered, or names
 * a contact or a campaign of its owner that does not exist.
 */
export async function unsubscribeByToken(
  db: Sequelize,
  secret: string,
  token: string,
  method: 'one_click' | 'page' = 'one_click',
): Promise<UnsubscribeResult | undefined> {
  const target = await describeUnsubscribeToken(db, secret, token);
  if (!target) return undefined;
  return unsubscribeContact(db, target.contactId, { method, taskId: target.taskId });
}
