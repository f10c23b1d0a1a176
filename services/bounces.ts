/**
 * Bounce and complaint reports, from any source (an inbound DSN or ARF report, a provider's webhook,
 * an admin), applied set-based in one transaction:
 *
 * - `hard_bounce`: the address does not exist. The contact becomes `bounced`, and the address goes
 *   on its owner's suppression list.
 * - `complaint`: the recipient marked the mail as spam. The contact becomes `unsubscribed` (a
 *   bounced contact stays bounced), and the address goes on its owner's suppression list.
 *   Both cancel the contact's queued mail in every live campaign of its owner, refunding the credit
 *   (cancelQueuedMail in unsubscribes.ts).
 * - `soft_bounce`: a temporary refusal (mailbox full...). Nothing changes on the contact; it is
 *   counted in error_logs under error_type 'soft_bounce', one row per address and reason. When an
 *   address soft-bounces `softBounceLimit` times within `softBounceWindowDays` (default 3 in 7
 *   days) for one owner, it goes on that owner's suppression list too.
 *
 * Reports are applied once: an event with a key (a provider's event id, a report's Message-ID
 * with the recipient, an API caller's `eventId`) whose key was seen before is skipped and counted
 * in `duplicates` (bounce_event_keys; providers deliver webhooks at least once, and the IMAP
 * poller may read a report again after a crash). Events without a key are applied each time.
 *
 * Every event is kept in bounce_events (who reported it, status code, campaign, contact), and a
 * campaign's hard bounces and complaints are counted on it for the safety breakers
 * (services/breakers.ts), which run in the same transaction.
 *
 * Matching: an event naming a contact (a VERP token) applies to that contact, if it belongs to the
 * campaign's owner. Otherwise an event with `campaignId` matches the address among that campaign
 * owner's contacts only; without it, every user's contact with that address (case-insensitively).
 *
 * Cost: with campaignId the match uses the unique index (user_id, lower(email)). Without it the
 * match is on lower(email) across users, which that index (leading with user_id) does not serve
 * well: expect a scan of contacts, once per batch (all events in one statement), not per event.
 */
import type { Sequelize, Transaction } from 'sequelize';
import { createHash } from 'node:crypto';
import { DateTime } from 'luxon';
import { z } from 'zod';
import { emailSchema, parseInput } from './validation.js';
import { cancelQueuedMail } from './unsubscribes.js';
import { canonicalEmail, suppress } from './suppressions.js';
import { queryRows } from './kernel/db-query.js';
import { applyBreakers, BREAKER_DEFAULTS, type BreakerPolicy, type BreakerTrip } from './breakers.js';
import type { ServiceContext } from './context.js';

const id = z.number({ error: 'must be a number' }).int('must be an integer').positive('must be a positive id');

export const bounceEventSchema = z.strictObject({
  type: z.enum(['hard_bounce', 'soft_bounce', 'complaint'], { error: 'must be hard_bounce, soft_bounce or complaint' }),
  email: emailSchema,
  campaignId: id.max(Number.MAX_SAFE_INTEGER).optional(),
  serviceId: id.max(2_147_483_647).optional(),
  reason: z.string().max(900, 'must be at most 900 characters').optional(),
  /** The caller's id for this event: an event sent again with the same id (within its source) is applied once. */
  eventId: z.string().min(1, 'must not be empty').max(200, 'must be at most 200 characters').optional(),
});
export const bounceReportSchema = z.strictObject({
  events: z.array(bounceEventSchema).min(1, 'must hold at least one event').max(1000, 'must hold at most 1000 events per call'),
});
export type BounceEvent = z.input<typeof bounceEventSchema>;

/** An event as fairsend's own parsers and webhooks produce it: with a contact (VERP) and a status code. */
export interface InboundBounceEvent extends BounceEvent {
  /** The contact a VERP token named (trusted: the token was verified). */
  contactId?: number;
  /** RFC 3463 enhanced status code (`5.1.1`) or SMTP reply code, as reported. */
  statusCode?: string;
  /** The event's id from its sender, namespaced (`sendgrid:<sg_event_id>`, `report:<Message-ID>`): applied once per type and address. */
  eventKey?: string;
}

export interface BounceResult {
  /** Events received. */
  events: number;
  /** Events skipped because an event with the same key was applied before (a report delivered again). */
  duplicates: number;
  /** Contacts whose status changed (bounced or unsubscribed). */
  contactsMarked: number;
  /** Hard bounces and complaints that matched no contact. */
  unmatched: string[];
  /** Queued subtasks cancelled, and the credit refunded for them. */
  cancelled: number;
  refunded: number;
  /** Soft bounces counted. */
  softBounces: number;
  /** Addresses put on a suppression list by this report (hard bounces, complaints, soft bounces past the limit). */
  suppressed: number;
  /** Campaigns this report paused (safety breakers). */
  breakers: BreakerTrip[];
}

export interface RecordOptions {
  /** Who reported the events, kept with each: 'api', 'dsn', 'arf', 'webhook:ses'... */
  source?: string;
  /** The time the soft-bounce window is measured from (default now). */
  now?: DateTime;
  softBounceLimit?: number;
  softBounceWindowDays?: number;
  breakers?: BreakerPolicy;
}

interface Resolved {
  i: number;
  contact_id: string | null;
  user_id: number | null;
  email: string;
  task_id: string | null;
}

/** Applies a batch of bounce and complaint events (validated with bounceReportSchema). */
export async function recordBounces(
  db: Sequelize,
  input: { events: InboundBounceEvent[] },
  opts: RecordOptions = {},
): Promise<BounceResult> {
  const given = input.events.map((e) => ({ contactId: e.contactId, statusCode: e.statusCode, eventKey: e.eventKey }));
  const { events: received } = parseInput(bounceReportSchema, {
    events: input.events.map(({ contactId: _c, statusCode: _s, eventKey: _k, ...e }) => e),
  });
  const source = (opts.source ?? 'api').slice(0, 100);
  const now = opts.now ?? DateTime.now();
  const softLimit = opts.softBounceLimit ?? 3;
  const windowDays = opts.softBounceWindowDays ?? 7;
  // The stored key also names the event's type and address: one provider event id may cover several
  // recipients (an SNS notification), and ids copied carelessly must not hide a different event.
  const keys = received.map((e, i) => {
    const id = given[i]!.eventKey ?? (e.eventId !== undefined ? `${source}:${e.eventId}` : undefined);
    return id === undefined ? null : storedKey(`${id}|${e.type}|${canonicalEmail(e.email)}`);
  });

  return db.transaction(async (transaction) => {
    // Seen before (or twice in this report): skipped. The key's row is written in this transaction,
    // so a concurrent report with the same key waits for it and then skips, or applies if it rolled back.
    const fresh = await claimKeys(db, keys, now, transaction);
    const keep = received.map((_, i) => i).filter((i) => keys[i] === null || fresh.delete(keys[i]!));
    const events = keep.map((i) => received[i]!);
    const extra = keep.map((i) => given[i]!);
    const duplicates = received.length - events.length;
    if (!events.length) {
      return { ...EMPTY, events: received.length, duplicates, unmatched: [], breakers: [] };
    }

    const soft = new Map<string, { message: string; serviceId: number | null; count: number }>();
    for (const e of events) {
      if (e.type !== 'soft_bounce') continue;
      const message = `${e.email.toLowerCase()}: ${e.reason?.trim() || 'soft bounce'}`.slice(0, 1000);
      const prev = soft.get(message);
      soft.set(message, { message, serviceId: e.serviceId ?? prev?.serviceId ?? null, count: (prev?.count ?? 0) + 1 });
    }

    const resolved = await resolve(db, events, extra, transaction);
    // Keep every event, matched or not (unmatched ones with no owner).
    await queryRows(
      db,
      `INSERT INTO bounce_events (type, email, user_id, task_id, contact_id, service_id, source, status_code, detail, received_at)
       SELECT ev.type, r.email, r.user_id, r.task_id, r.contact_id, ev.svc, $source, ev.code, ev.detail, $now
         FROM unnest($i::int[], $emails::text[], $users::int[], $tasks::bigint[], $contacts::bigint[]) AS r(i, email, user_id, task_id, contact_id)
         JOIN unnest($types::text[], $svcs::int[], $codes::text[], $details::text[]) WITH ORDINALITY AS ev(type, svc, code, detail, i)
           ON ev.i = r.i`,
      {
        i: resolved.map((r) => r.i),
        emails: resolved.map((r) => r.email),
        users: resolved.map((r) => r.user_id),
        tasks: resolved.map((r) => r.task_id),
        contacts: resolved.map((r) => r.contact_id),
        types: events.map((e) => e.type),
        svcs: events.map((e) => e.serviceId ?? null),
        codes: extra.map((x) => x.statusCode?.slice(0, 20) ?? null),
        details: events.map((e) => e.reason?.slice(0, 1000) ?? null),
        source,
        now: now.toJSDate(),
      },
      transaction,
    );

    // Hard bounces and complaints: the contacts' status (bounced outranks unsubscribed).
    const marks = new Map<string, 'bounced' | 'unsubscribed'>();
    const toSuppress: Parameters<typeof suppress>[1] = [];
    const unmatched: string[] = [];
    for (const r of resolved) {
      const e = events[r.i - 1]!;
      if (e.type === 'soft_bounce') continue;
      const status = e.type === 'hard_bounce' ? 'bounced' : 'unsubscribed';
      if (r.contact_id !== null && marks.get(r.contact_id) !== 'bounced') marks.set(r.contact_id, status);
      if (r.contact_id === null && !unmatched.includes(r.email)) unmatched.push(r.email);
      if (r.user_id !== null) {
        toSuppress.push({ userId: r.user_id, email: r.email, reason: e.type, source, detail: e.reason ?? null });
      }
    }
    let contactsMarked = 0;
    if (marks.size) {
      const changed = await queryRows(
        db,
        // Each change is recorded in contact_status_events (services/contact-status.ts): a complaint
        // is an unsubscribe, a hard bounce a bounce.
        `WITH m AS (SELECT * FROM unnest($ids::bigint[], $statuses::text[]) AS m(id, status)),
              prev AS (SELECT c.id, c.status AS old FROM contacts c JOIN m ON m.id = c.id),
              upd AS (
                UPDATE contacts SET status = CASE WHEN contacts.status = 'bounced' OR m.status = 'bounced' THEN 'bounced' ELSE 'unsubscribed' END,
                       updated_at = now()
                  FROM m
                 WHERE contacts.id = m.id AND contacts.status <> CASE WHEN contacts.status = 'bounced' OR m.status = 'bounced' THEN 'bounced' ELSE 'unsubscribed' END
                RETURNING contacts.id, contacts.user_id, contacts.email, contacts.status),
              ev AS (
                INSERT INTO contact_status_events (contact_id, user_id, email, from_status, to_status, method)
                SELECT upd.id, upd.user_id, upd.email, prev.old, upd.status, CASE WHEN upd.status = 'bounced' THEN 'bounce' ELSE 'complaint' END
                  FROM upd JOIN prev ON prev.id = upd.id)
         SELECT id FROM upd`,
        { ids: [...marks.keys()], statuses: [...marks.values()] },
        transaction,
      );
      contactsMarked = changed.length;
    }
    const cancelled = await cancelQueuedMail(db, [...marks.keys()].map(Number), transaction);

    if (soft.size) {
      const s = [...soft.values()];
      await queryRows(
        db,
        `INSERT INTO error_logs (error_type, message, count, service_id)
         SELECT 'soft_bounce', m, n, (SELECT id FROM email_services WHERE id = svc) FROM unnest($m::text[], $n::int[], $svc::int[]) AS e(m, n, svc)
         ON CONFLICT (error_type, message) DO UPDATE
           SET count = error_logs.count + EXCLUDED.count, last_seen_at = now(),
               service_id = COALESCE(EXCLUDED.service_id, error_logs.service_id)`,
        { m: s.map((x) => x.message), n: s.map((x) => x.count), svc: s.map((x) => x.serviceId) },
        transaction,
      );
      // Soft bounces past the limit within the window (this batch included) suppress too.
      const softOwners = resolved.filter((r) => events[r.i - 1]!.type === 'soft_bounce' && r.user_id !== null);
      if (softOwners.length) {
        const over = await queryRows<{ user_id: number; email: string; n: number }>(
          db,
          `SELECT b.user_id, b.email, count(*)::int AS n FROM bounce_events b
             JOIN (SELECT DISTINCT * FROM unnest($users::int[], $emails::text[]) AS k(user_id, email)) k
               ON k.user_id = b.user_id AND k.email = b.email
            WHERE b.type = 'soft_bounce' AND b.received_at > $since AND b.received_at <= $now
            GROUP BY b.user_id, b.email HAVING count(*) >= $limit`,
          {
            users: softOwners.map((r) => r.user_id),
            emails: softOwners.map((r) => r.email),
            since: now.minus({ days: windowDays }).toJSDate(),
            now: now.toJSDate(),
            limit: softLimit,
          },
          transaction,
        );
        for (const o of over) {
          toSuppress.push({
            userId: o.user_id,
            email: o.email,
            reason: 'soft_bounce',
            source,
            detail: `${o.n} soft bounces within ${windowDays} days`,
          });
        }
      }
    }
    const suppressed = await suppress(db, toSuppress, transaction);

    // Count the campaigns' hard bounces and complaints, then let the breakers look at them.
    const perTask = new Map<string, { hard: number; complaints: number }>();
    for (const r of resolved) {
      const e = events[r.i - 1]!;
      if (r.task_id === null || e.type === 'soft_bounce') continue;
      const c = perTask.get(r.task_id) ?? { hard: 0, complaints: 0 };
      if (e.type === 'hard_bounce') c.hard++;
      else c.complaints++;
      perTask.set(r.task_id, c);
    }
    let breakers: BreakerTrip[] = [];
    if (perTask.size) {
      await queryRows(
        db,
        `UPDATE tasks SET hard_bounce_count = hard_bounce_count + p.hard, complaint_count = complaint_count + p.complaints
           FROM unnest($ids::bigint[], $hard::int[], $complaints::int[]) AS p(id, hard, complaints)
          WHERE tasks.id = p.id`,
        {
          ids: [...perTask.keys()],
          hard: [...perTask.values()].map((c) => c.hard),
          complaints: [...perTask.values()].map((c) => c.complaints),
        },
        transaction,
      );
      breakers = await applyBreakers(db, [...perTask.keys()].map(Number), opts.breakers ?? BREAKER_DEFAULTS, transaction);
    }

    return {
      events: received.length,
      duplicates,
      contactsMarked,
      unmatched,
      cancelled: cancelled.cancelled + suppressed.cancelled,
      refunded: cancelled.refunded + suppressed.refunded,
      softBounces: events.filter((e) => e.type === 'soft_bounce').length,
      suppressed: suppressed.added,
      breakers,
    };
  });
}

const EMPTY = { contactsMarked: 0, cancelled: 0, refunded: 0, softBounces: 0, suppressed: 0 } as const;

/** A key as stored: as given when short, else its SHA-256 (the column holds at most 600 characters). */
function storedKey(key: string): string {
  return key.length <= 600 ? key : `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

/** Records the keys not seen before and returns them (a key given twice in one report is new once). */
async function claimKeys(db: Sequelize, keys: (string | null)[], now: DateTime, transaction: Transaction): Promise<Set<string>> {
  const distinct = [...new Set(keys.filter((k): k is string => k !== null))];
  if (!distinct.length) return new Set();
  const rows = await queryRows<{ key: string }>(
    db,
    `INSERT INTO bounce_event_keys (key, received_at) SELECT k, $now FROM unnest($keys::text[]) AS k
     ON CONFLICT (key) DO NOTHING RETURNING key`,
    { keys: distinct, now: now.toJSDate() },
    transaction,
  );
  return new Set(rows.map((r) => r.key));
}

/**
 * Who each event is about: one row per (event, matched contact), or one row with no contact when
 * nothing matched (then the owner is the campaign's, when the event names one). `i` is 1-based.
 */
async function resolve(
  db: Sequelize,
  events: z.output<typeof bounceEventSchema>[],
  extra: { contactId?: number | undefined }[],
  transaction: Transaction,
): Promise<Resolved[]> {
  const rows = await queryRows<Resolved>(
    db,
    `WITH ev AS (
       SELECT * FROM unnest($emails::text[], $campaigns::bigint[], $contacts::bigint[]) WITH ORDINALITY AS ev(email, campaign_id, contact_id, i)),
     own AS (SELECT ev.i, t.id AS task_id, t.created_by FROM ev JOIN tasks t ON t.id = ev.campaign_id),
     -- Two joins rather than one with OR, so each is a plain index or hash join over the batch.
     hit AS (
       SELECT ev.i, c.id AS contact_id, c.user_id, lower(c.email) AS email, own.task_id
         FROM ev JOIN own ON own.i = ev.i JOIN contacts c ON c.id = ev.contact_id AND c.user_id = own.created_by
        WHERE ev.contact_id IS NOT NULL
       UNION ALL
       SELECT ev.i, c.id, c.user_id, lower(c.email), own.task_id
         FROM ev LEFT JOIN own ON own.i = ev.i
         JOIN contacts c ON lower(c.email) = ev.email AND (ev.campaign_id IS NULL OR c.user_id = own.created_by)
        WHERE ev.contact_id IS NULL)
     SELECT i::int AS i, contact_id, user_id, email, task_id FROM hit
     UNION ALL
     SELECT ev.i::int, NULL, own.created_by, ev.email, own.task_id
       FROM ev LEFT JOIN own ON own.i = ev.i WHERE ev.i NOT IN (SELECT i FROM hit)
     ORDER BY 1, 2`,
    {
      emails: events.map((e) => canonicalEmail(e.email)),
      campaigns: events.map((e) => e.campaignId ?? null),
      contacts: extra.map((x) => x.contactId ?? null),
    },
    transaction,
  );
  return rows.map((r) => ({ ...r, i: Number(r.i), contact_id: r.contact_id === null ? null : String(r.contact_id) }));
}

/** The engine's `bounces` API: reports applied with the configured limits and the engine's clock. */
export function createBouncesApi(ctx: ServiceContext) {
  const options = (source: string): RecordOptions => ({
    source,
    now: ctx.clock(),
    softBounceLimit: ctx.config.softBounceLimit,
    softBounceWindowDays: ctx.config.softBounceWindowDays,
    breakers: {
      complaintPercent: ctx.config.breakerComplaintPercent,
      hardBouncePercent: ctx.config.breakerHardBouncePercent,
      minSent: ctx.config.breakerMinSent,
    },
  });
  return {
    /** Applies hard bounces, soft bounces and complaints (up to 1000 per call); `source` is kept with each. */
    async record(events: InboundBounceEvent[], source = 'api'): Promise<BounceResult> {
      const result = await recordBounces(ctx.apiDb, { events }, options(source));
      for (const b of result.breakers)
        ctx.logger.warn({ campaign: b.campaignId, reason: b.reason }, 'safety breaker tripped: campaign paused');
      return result;
    },
    /** Inbound mail kept for a person to look at (autoreplies, unparseable reports), newest first. */
    async review(opts: { limit?: number } = {}): Promise<InboundReviewItem[]> {
      const rows = await queryRows<{
        id: string;
        source: string;
        reason: string;
        envelope_to: string | null;
        subject: string | null;
        received_at: Date;
      }>(ctx.apiDb, 'SELECT id, source, reason, envelope_to, subject, received_at FROM inbound_review ORDER BY id DESC LIMIT $limit', {
        limit: Math.min(Math.max(opts.limit ?? 100, 1), 1000),
      });
      return rows.map((r) => ({
        id: Number(r.id),
        source: r.source,
        reason: r.reason,
        envelopeTo: r.envelope_to,
        subject: r.subject,
        receivedAt: new Date(r.received_at),
      }));
    },
    /** Keeps a message that was not acted on, with why. */
    async keepForReview(item: {
      source: string;
      reason: string;
      envelopeTo?: string | null;
      subject?: string | null;
      raw: string;
    }): Promise<number> {
      const [row] = await queryRows<{ id: string }>(
        ctx.apiDb,
        `INSERT INTO inbound_review (source, reason, envelope_to, subject, raw, received_at)
         VALUES ($source, $reason, $to, $subject, $raw, $now) RETURNING id`,
        {
          source: item.source.slice(0, 100),
          reason: item.reason.slice(0, 500),
          to: item.envelopeTo ?? null,
          subject: item.subject?.slice(0, 998) ?? null,
          // eslint-disable-next-line no-control-regex -- NUL cannot be stored in text
          raw: item.raw.replace(/\u0000/g, '').slice(0, 256 * 1024),
          now: ctx.clock().toJSDate(),
        },
      );
      ctx.logger.info({ source: item.source, reason: item.reason }, 'inbound mail kept for review');
      return Number(row!.id);
    },
  };
}
export type BouncesApi = ReturnType<typeof createBouncesApi>;

export interface InboundReviewItem {
  id: number;
  source: string;
  reason: string;
  envelopeTo: string | null;
  subject: string | null;
  receivedAt: Date;
}
