/**
 * How contacts leave and come back: every unsubscribe is recorded (when, from which campaign, and
 * how: the RFC 8058 one-click POST, the confirmation page's button, the API, a complaint), and an
 * unsubscribed or bounced contact comes back only through `reactivate`: an admin's explicit action
 * with a reason, recorded too. Setting a contact `active` any other way is refused
 * (contacts.setStatus), and an import never re-activates.
 *
 * The rows are in contact_status_events (one per status change, written in the transaction of the
 * change).
 */
import type { Sequelize, Transaction } from 'sequelize';
import { z } from 'zod';
import { ConflictError, ErrorCodes, FairsendError, NotFoundError } from './kernel/errors.js';
import { queryRows } from './kernel/db-query.js';
import type { ServiceContext } from './context.js';
import { parseId, parseInput } from './validation.js';
import { unsubscribeContact, type UnsubscribeResult } from './unsubscribes.js';
import { canonicalEmail } from './suppressions.js';

export const UNSUBSCRIBE_METHODS = ['one_click', 'page', 'api', 'complaint'] as const;
export type UnsubscribeMethod = (typeof UNSUBSCRIBE_METHODS)[number];
export type ContactStatus = 'active' | 'unsubscribed' | 'bounced';

export interface ContactStatusEvent {
  id: number;
  contactId: number;
  email: string;
  fromStatus: ContactStatus;
  toStatus: ContactStatus;
  /** `merge`: duplicates of one mailbox merged by the canonical-address migration (the reason lists them). */
  method: UnsubscribeMethod | 'bounce' | 'reactivation' | 'merge';
  /** The campaign the unsubscribe came from (its link), when known. */
  taskId: number | null;
  /** The admin who re-activated. */
  actorId: number | null;
  reason: string | null;
  at: Date;
}

/** Records one status change, in the caller's transaction. */
export async function recordStatusEvent(
  db: Sequelize,
  e: {
    contactId: number;
    userId: number;
    email: string;
    from: ContactStatus;
    to: ContactStatus;
    method: ContactStatusEvent['method'];
    taskId?: number | null;
    actorId?: number | null;
    reason?: string | null;
  },
  transaction?: Transaction,
): Promise<void> {
  await queryRows(
    db,
    `INSERT INTO contact_status_events (contact_id, user_id, email, from_status, to_status, method, task_id, actor_id, reason)
     VALUES ($contactId, $userId, $email, $from, $to, $method, $taskId, $actorId, $reason)`,
    {
      contactId: e.contactId,
      userId: e.userId,
      email: e.email,
      from: e.from,
      to: e.to,
      method: e.method,
      taskId: e.taskId ?? null,
      actorId: e.actorId ?? null,
      reason: e.reason ?? null,
    },
    transaction,
  );
}

const reactivateSchema = z.strictObject({
  adminId: z.number().int().positive(),
  reason: z.string().trim().min(1, 'must say why the contact may be mailed again').max(1000),
});
export type ReactivateInput = z.input<typeof reactivateSchema>;

export function createSubscriptionsApi(ctx: ServiceContext) {
  const db = ctx.apiDb;
  return {
    /** Unsubscribes a contact of `userId` through the API (recorded as `api`). */
    async unsubscribe(userId: number, contactId: number): Promise<UnsubscribeResult> {
      parseId(userId, 'userId');
      const [c] = await queryRows<{ id: string }>(db, 'SELECT id FROM contacts WHERE id = $id AND user_id = $userId', {
        id: parseId(contactId, 'contactId'),
        userId,
      });
      if (!c) throw new NotFoundError('contact', contactId);
      return (await unsubscribeContact(db, contactId, { method: 'api' }))!;
    },

    /**
     * Re-activates an unsubscribed or bounced contact: only an admin, only with a reason. The
     * owner's suppression entries for the address (unsubscribe, complaint, bounces; not one the
     * owner added by hand) are lifted in the same transaction; the admin-managed global list is not. Recorded with the admin and reason.
     */
    async reactivate(contactId: number, input: ReactivateInput): Promise<ContactStatusEvent> {
      const id = parseId(contactId, 'contactId');
      const v = parseInput(reactivateSchema, input);
      return db.transaction(async (transaction) => {
        const [admin] = await queryRows<{ role: string }>(db, 'SELECT role FROM users WHERE id = $id', { id: v.adminId }, transaction);
        if (admin?.role !== 'admin') throw new FairsendError(ErrorCodes.FORBIDDEN, 'only an admin may re-activate a contact');
        const [c] = await queryRows<{ user_id: number; email: string; status: ContactStatus }>(
          db,
          'SELECT user_id, email, status FROM contacts WHERE id = $id FOR UPDATE',
          { id },
          transaction,
        );
        if (!c) throw new NotFoundError('contact', contactId);
        if (c.status === 'active') throw new ConflictError(`contact ${contactId} is already active`);
        await queryRows(db, `UPDATE contacts SET status = 'active', updated_at = now() WHERE id = $id`, { id }, transaction);
        await queryRows(
          db,
          `DELETE FROM suppressions WHERE user_id = $userId AND email = $email AND reason <> 'manual'`,
          { userId: c.user_id, email: canonicalEmail(c.email) },
          transaction,
        );
        const [row] = await queryRows<{ id: string; created_at: Date }>(
          db,
          `INSERT INTO contact_status_events (contact_id, user_id, email, from_status, to_status, method, actor_id, reason)
           VALUES ($id, $userId, $email, $from, 'active', 'reactivation', $actorId, $reason) RETURNING id, created_at`,
          { id, userId: c.user_id, email: c.email, from: c.status, actorId: v.adminId, reason: v.reason },
          transaction,
        );
        return {
          id: Number(row!.id),
          contactId: id,
          email: c.email,
          fromStatus: c.status,
          toStatus: 'active',
          method: 'reactivation',
          taskId: null,
          actorId: v.adminId,
          reason: v.reason,
          at: row!.created_at,
        };
      });
    },

    /** A contact's status changes, oldest first; with `ownerId`, only of that user's contact (else NotFoundError). */
    async history(contactId: number, ownerId?: number): Promise<ContactStatusEvent[]> {
      const id = parseId(contactId, 'contactId');
      const [c] = await queryRows<{ user_id: number }>(db, 'SELECT user_id FROM contacts WHERE id = $id', { id });
      if (!c || (ownerId !== undefined && c.user_id !== ownerId)) throw new NotFoundError('contact', contactId);
      const rows = await queryRows<{
        id: string;
        contact_id: string;
        email: string;
        from_status: ContactStatus;
        to_status: ContactStatus;
        method: ContactStatusEvent['method'];
        task_id: string | null;
        actor_id: number | null;
        reason: string | null;
        created_at: Date;
      }>(db, 'SELECT * FROM contact_status_events WHERE contact_id = $id ORDER BY id', { id });
      return rows.map((r) => ({
        id: Number(r.id),
        contactId: Number(r.contact_id),
        email: r.email,
        fromStatus: r.from_status,
        toStatus: r.to_status,
        method: r.method,
        taskId: r.task_id === null ? null : Number(r.task_id),
        actorId: r.actor_id,
        reason: r.reason,
        at: r.created_at,
      }));
    },
  };
}
export type SubscriptionsApi = ReturnType<typeof createSubscriptionsApi>;
