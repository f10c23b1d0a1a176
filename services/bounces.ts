/**
 * Bounce and complaint reports (from a provider's webhook or an admin), applied set-based in one
 * transaction:
 *
 * - `hard_bounce`: the address does not exist. The contact becomes `bounced`.
 * - `complaint`: the recipient marked the mail as spam. The contact becomes `unsubscribed` (a
 *   bounced contact stays bounced).
 *   Both cancel the contact's queued mail in every live campaign of its owner, refunding the credit
 *   (cancelQueuedMail in unsubscribes.ts).
 * - `soft_bounce`: a temporary refusal (mailbox full...). Nothing changes on the contact; it is
 *   counted in error_logs under error_type 'soft_bounce', one row per address and reason.
 *
 * Contacts are per user: an event with `campaignId` matches the address among that campaign
 * owner's contacts only; without it, every user's contact with that address (case-insensitively).
 *
 * Cost: with campaignId the match uses the unique index (user_id, lower(email)). Without it the
 * match is on lower(email) across users, which that index (leading with user_id) does not serve
 * well: expect a scan of contacts, once per batch (all events in one statement), not per event.
 * Providers batch their webhooks; an index on lower(email) would make it a lookup if ever needed.
 */
import type { Sequelize } from 'sequelize';
import { z } from 'zod';
import { emailSchema, parseInput } from './validation.js';
import { cancelQueuedMail } from './unsubscribes.js';

const id = z.number({ error: 'must be a number' }).int('must be an integer').positive('must be a positive id');

export const bounceEventSchema = z.strictObject({
  type: z.enum(['hard_bounce', 'soft_bounce', 'complaint'], { error: 'must be hard_bounce, soft_bounce or complaint' }),
  email: emailSchema,
  campaignId: id.max(Number.MAX_SAFE_INTEGER).optional(),
  serviceId: id.max(2_147_483_647).optional(),
  reason: z.string().max(900, 'must be at most 900 characters').optional(),
});
export const bounceReportSchema = z.strictObject({
  events: z.array(bounceEventSchema).min(1, 'must hold at least one event').max(1000, 'must hold at most 1000 events per call'),
});
export type BounceEvent = z.input<typeof bounceEventSchema>;

export interface BounceResult {
  /** Events received. */
  events: number;
  /** Contacts whose status changed (bounced or unsubscribed). */
  contactsMarked: number;
  /** Hard bounces and complaints that matched no contact. */
  unmatched: string[];
  /** Queued subtasks cancelled, and the credit refunded for them. */
  cancelled: number;
  refunded: number;
  /** Soft bounces counted. */
  softBounces: number;
}

/** Applies a batch of bounce and complaint events (validated with bounceReportSchema). */
export async function recordBounces(db: Sequelize, input: { events: BounceEvent[] }): Promise<BounceResult> {
  const { events } = parseInput(bounceReportSchema, input);

  // One decision per (address, campaign): a hard bounce outranks a complaint in the same batch.
  const marks = new Map<string, { email: string; campaignId: number | null; status: 'bounced' | 'unsubscribed' }>();
  for (const e of events) {
    if (e.type === 'soft_bounce') continue;
    const key = `${e.email.toLowerCase()}|${e.campaignId ?? ''}`;
    const status = e.type === 'hard_bounce' ? 'bounced' : 'unsubscribed';
    if (marks.get(key)?.status !== 'bounced') marks.set(key, { email: e.email.toLowerCase(), campaignId: e.campaignId ?? null, status });
  }
  const soft = new Map<string, { message: string; serviceId: number | null; count: number }>();
  for (const e of events) {
    if (e.type !== 'soft_bounce') continue;
    const message = `${e.email.toLowerCase()}: ${e.reason?.trim() || 'soft bounce'}`.slice(0, 1000);
    const prev = soft.get(message);
    soft.set(message, { message, serviceId: e.serviceId ?? prev?.serviceId ?? null, count: (prev?.count ?? 0) + 1 });
  }

  return db.transaction(async (transaction) => {
    let contactIds: number[] = [];
    let contactsMarked = 0;
    const unmatched: string[] = [];
    if (marks.size) {
      const m = [...marks.values()];
      const [rows] = (await db.query(
        `WITH ev AS (
           SELECT * FROM unnest($emails::text[], $campaigns::bigint[], $statuses::text[]) AS ev(email, campaign_id, status)),
         hit AS (
           SELECT DISTINCT ON (c.id) c.id, ev.email,
                  -- bounced outranks unsubscribed, which outranks active
                  CASE WHEN c.status = 'bounced' OR ev.status = 'bounced' THEN 'bounced' ELSE 'unsubscribed' END AS status,
                  c.status AS old
             FROM ev JOIN contacts c ON lower(c.email) = ev.email
              AND (ev.campaign_id IS NULL OR c.user_id = (SELECT created_by FROM tasks WHERE id = ev.campaign_id))
            ORDER BY c.id, (ev.status = 'bounced') DESC),
         upd AS (
           UPDATE contacts SET status = hit.status, updated_at = now()
             FROM hit WHERE contacts.id = hit.id AND contacts.status <> hit.status
           RETURNING contacts.id)
         SELECT hit.id, hit.email, (hit.id IN (SELECT id FROM upd)) AS changed FROM hit`,
        {
          bind: { emails: m.map((x) => x.email), campaigns: m.map((x) => x.campaignId), statuses: m.map((x) => x.status) },
          transaction,
        },
      )) as [{ id: string; email: string; changed: boolean }[], unknown];
      contactIds = rows.map((r) => Number(r.id));
      contactsMarked = rows.filter((r) => r.changed).length;
      const matched = new Set(rows.map((r) => r.email));
      for (const x of m) if (!matched.has(x.email) && !unmatched.includes(x.email)) unmatched.push(x.email);
    }
    const cancelled = await cancelQueuedMail(db, contactIds, transaction);
    if (soft.size) {
      const s = [...soft.values()];
      await db.query(
        `INSERT INTO error_logs (error_type, message, count, service_id)
         SELECT 'soft_bounce', m, n, (SELECT id FROM email_services WHERE id = svc) FROM unnest($m::text[], $n::int[], $svc::int[]) AS e(m, n, svc)
         ON CONFLICT (error_type, message) DO UPDATE
           SET count = error_logs.count + EXCLUDED.count, last_seen_at = now(),
               service_id = COALESCE(EXCLUDED.service_id, error_logs.service_id)`,
        {
          bind: { m: s.map((x) => x.message), n: s.map((x) => x.count), svc: s.map((x) => x.serviceId) },
          transaction,
        },
      );
    }
    return {
      events: events.length,
      contactsMarked,
      unmatched,
      cancelled: cancelled.cancelled,
      refunded: cancelled.refunded,
      softBounces: events.filter((e) => e.type === 'soft_bounce').length,
    };
  });
}
