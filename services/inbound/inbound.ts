/**
 * One inbound message (from the SMTP listener or the IMAP poller) to what it means:
 *
 *   parse (reports.ts) --other--------------------------------------------> kept for review
 *        |--dsn / arf--> find the message: a VERP address (envelope recipient first, then the
 *                        returned original's Return-Path or Original-Mail-From), verified
 *             |--arf, no VERP address at all: by Message-ID and address (below)
 *             |--none, or only forged tokens------------------------------> kept for review
 *             |--found--> DSN recipients: hard or soft bounce by status code; ARF abuse: complaint
 *                         --> engine.bounces.record (contact, campaign, suppression, breakers)
 *
 * Nothing unsigned is acted on blindly: a report without a valid token could name any address, so
 * it waits for a person. One exception, for feedback loops that return the original without its
 * return path (some rewrite or strip it): an ARF report with no VERP address at all is applied when
 * the returned original carries fairsend's Message-ID `<campaign.contact@domain>`, that campaign
 * was sent to that contact (a subtask exists), and the report's recipient is that contact's
 * mailbox in canonical form (services/email-address.ts: a variant such as `Angry@EXAMPLE.org` or
 * a Unicode domain matches its punycode form). Three facts that must agree, not one guessable one.
 * A DSN without a token is never applied (it could bounce anyone), nor is a report with a forged
 * token. ARF types other than abuse/fraud/virus (not-spam, other) are kept for review too.
 */
import type { Sequelize } from 'sequelize';
import type { BounceResult, BouncesApi, InboundBounceEvent } from '../bounces.js';
import type { Logger } from '../kernel/logger.js';
import { queryRows } from '../kernel/db-query.js';
import { parseReport } from './reports.js';
import { verifyVerp, type VerpTarget } from './verp.js';
import { fromMessageId } from '../webhooks/providers.js';
import { mailboxKey } from '../email-address.js';

export interface InboundDeps {
  db: Sequelize;
  bounces: BouncesApi;
  logger: Logger;
  /** BOUNCE_SECRET; without it no token verifies and every report is kept for review. */
  secret: string | undefined;
}

export interface InboundMessage {
  raw: Buffer;
  /** Envelope recipients (SMTP RCPT TO, or Delivered-To / To for a mailbox). */
  envelopeTo: string[];
  /** 'smtp' or 'imap'. */
  source: string;
  /** Keep for review with this reason without parsing (a message too big to read whole). */
  reviewOnly?: string;
}

export type InboundOutcome =
  | { action: 'recorded'; report: 'dsn' | 'arf'; target: VerpTarget; result: BounceResult }
  | { action: 'review'; reason: string; reviewId: number };

const COMPLAINT_TYPES = new Set(['abuse', 'fraud', 'virus']);

export async function handleInbound(deps: InboundDeps, msg: InboundMessage): Promise<InboundOutcome> {
  const report = msg.reviewOnly ? ({ kind: 'other', reason: msg.reviewOnly, subject: null } as const) : await parseReport(msg.raw);
  const review = async (reason: string): Promise<InboundOutcome> => ({
    action: 'review',
    reason,
    reviewId: await deps.bounces.keepForReview({
      source: msg.source,
      reason,
      envelopeTo: msg.envelopeTo.join(', ').slice(0, 1000) || null,
      subject: report.subject,
      raw: msg.raw.toString('utf8'),
    }),
  });
  if (report.kind === 'other') return review(report.reason);

  const candidates = [...msg.envelopeTo, ...report.returnPaths].filter((a) => /^<?bounce\+/i.test(a.trim()));
  let target = deps.secret ? candidates.map((a) => verifyVerp(deps.secret!, a)).find(Boolean) : undefined;
  if (!target && !candidates.length && report.kind === 'arf' && report.recipient) {
    target = await byMessageId(deps.db, report.messageIds, report.recipient);
    if (!target) return review('feedback report without a VERP address whose Message-ID and recipient match no message fairsend sent');
  }
  if (!target) {
    if (candidates.length)
      deps.logger.warn({ source: msg.source, addresses: candidates.slice(0, 5) }, 'bounce with a forged or altered VERP token refused');
    return review(candidates.length ? 'forged or altered VERP token: refused' : 'no VERP address: cannot tell which message it is about');
  }
  const [contact] = await queryRows<{ email: string }>(deps.db, 'SELECT email FROM contacts WHERE id = $id', { id: target.contactId });
  let events: InboundBounceEvent[];
  if (report.kind === 'dsn') {
    // One message, one recipient: the token names the contact. Several (rare with VERP): by address.
    const one = report.recipients.length === 1;
    events = report.recipients.map((r) => ({
      type: r.kind,
      email: one && contact ? contact.email : r.email,
      campaignId: target.taskId,
      ...(one ? { contactId: target.contactId } : {}),
      statusCode: r.status,
      reason: `${r.status} ${r.diagnostic ?? r.action}`.slice(0, 900),
    }));
  } else {
    if (!COMPLAINT_TYPES.has(report.feedbackType)) return review(`feedback report of type ${report.feedbackType}: not a complaint`);
    const email = contact?.email ?? report.recipient;
    if (!email) return review('complaint about a contact that no longer exists');
    events = [{ type: 'complaint', email, campaignId: target.taskId, contactId: target.contactId, reason: `ARF ${report.feedbackType}` }];
  }
  // The report's Message-ID keys its events: read again (a mailbox poll that stopped before flagging
  // it \Seen, or the same report by SMTP and in a mailbox), it is applied once (services/bounces.ts).
  const rid = report.reportId;
  if (rid) events = events.map((e) => ({ ...e, eventKey: `report:${rid}` }));
  const result = await deps.bounces.record(events, `${msg.source}:${report.kind}`);
  deps.logger.info(
    { source: msg.source, report: report.kind, campaign: target.taskId, contact: target.contactId, events: events.length },
    'inbound report applied',
  );
  return { action: 'recorded', report: report.kind, target, result };
}

/**
 * The message a report without a VERP address is about, when the returned original's Message-ID is
 * fairsend's and the campaign was sent to that contact, whose mailbox is the reported recipient.
 */
async function byMessageId(db: Sequelize, messageIds: string[], recipient: string): Promise<VerpTarget | undefined> {
  const key = mailboxKey(recipient);
  for (const id of messageIds) {
    const t = fromMessageId(id);
    if (!t || !Number.isSafeInteger(t.campaignId) || !Number.isSafeInteger(t.contactId)) continue;
    const [row] = await queryRows<{ email: string }>(
      db,
      `SELECT c.email FROM subtasks s JOIN contacts c ON c.id = s.contact_id
        WHERE s.task_id = $taskId AND s.contact_id = $contactId LIMIT 1`,
      { taskId: t.campaignId, contactId: t.contactId },
    );
    if (row && mailboxKey(row.email) === key) return { taskId: t.campaignId, contactId: t.contactId };
  }
  return undefined;
}
