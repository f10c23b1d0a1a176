/**
 * One message's send, as pure decisions: what happens to the message, to the quota unit it holds,
 * to the service's health, and to the contact, decided from what is known (the lease, the contact,
 * the send window, the template, the SMTP result). No I/O here: the service runner carries out the
 * steps (pace, mark, send) and applies the Decision; each decision is unit-tested as plain code
 * (test/send-decision.test.ts).
 *
 * A message's path through one slot:
 *
 *   picked --beforeSend--> decided (lease lapsed, contact inactive, outside its send window)
 *          \-> compose --> decided (template missing: put back; template fails: failed)
 *                      \-> composed --(at-most-once mark, pacer)--> decided (not dispatched)
 *                                                                \-> dispatched --afterSend--> decided
 *
 * The quota unit the slot holds ends exactly one way, named by the Decision: `spent` when the
 * message may have reached the server (sent, or an ambiguous failure), `returned` otherwise.
 * checkDecision() asserts the rules that tie the fields together; the runner calls it on every
 * Decision before applying it.
 */
import type { DateTime } from 'luxon';
import { buildMessage, type MessageOptions, type SendableTemplate } from '../delivery/message.js';
import { classifySendError } from '../delivery/classify.js';
import { parseReply, recipientDomain } from '../delivery/reply.js';
import { isInsideWindow, nextSendTime } from '../send-window.js';
import type { CampaignState, Claimed } from './campaign-pool.js';
import type { Attempt, Outcome } from './sql/outcomes.js';
import { InvalidTransitionError } from '../kernel/errors.js';
import type { ReplyDecision } from '../deliverability/shaper.js';

export type DeliveryMode = 'at-least-once' | 'at-most-once';

/** What is written for the message (its subtask row). */
export type OutcomeFields = Omit<Outcome, 'taskId' | 'contactId'>;

/** The record of one attempt at the server (send_attempts), when a send was dispatched. */
export type AttemptFields = Omit<Attempt, 'taskId' | 'contactId'>;

export interface Decision {
  /** The message's outcome to write; null when nothing is written (put back, or no longer ours). */
  outcome: OutcomeFields | null;
  /** The slot's quota unit: spent (the message may have reached the server) or returned. */
  unit: 'spent' | 'returned';
  /** What the send says about the service: it works, it failed (counts towards unhealthy), or nothing. */
  health: 'ok' | 'fault' | null;
  /** The failure, for the service's health and error counts (null on success or no send). */
  error: { type: string; message: string } | null;
  /** The contact's address does not exist (5xx no such user at RCPT): mark the contact bounced. */
  bounce: boolean;
  /** The message goes back to the front of its campaign's buffer (never reached a server). */
  putBack: boolean;
  /** The campaign waits until this instant (ms epoch) before it looks for work again: a send window opening. */
  wakeAt: number | null;
  /**
   * This message is due again at this instant (ms epoch): a retry's backoff. It wakes a campaign that
   * waits, but never holds back one that still has other work (see Fleet.apply).
   */
  retryAt: number | null;
  /** Event for listeners: sent, a retry scheduled, failed for good. */
  event: 'sent' | 'retry' | 'failed' | null;
  /** Released because this engine's leases may have lapsed (a stall). */
  leaseLapse: boolean;
  /** What the server said, for the attempt record; null when nothing was dispatched. */
  attempt: AttemptFields | null;
}

const none: Decision = {
  outcome: null,
  unit: 'returned',
  health: null,
  error: null,
  bounce: false,
  putBack: false,
  wakeAt: null,
  retryAt: null,
  event: null,
  leaseLapse: false,
  attempt: null,
};

const released = (serviceId: number, at: Date, over: Partial<OutcomeFields> = {}): OutcomeFields => ({
  status: 'queued',
  serviceId,
  at,
  messageId: null,
  error: null,
  notBefore: null,
  attempt: 0,
  ...over,
});

/**
 * The checks before a message may go: null when it may. A lease that may have lapsed is released
 * (another engine may have recovered it and be sending it too); a contact no longer active is
 * cancelled (credit refunded by the write); a recipient outside the campaign's send window waits
 * for the window's next opening.
 */
export function beforeSend(p: {
  item: Claimed;
  campaign: Pick<CampaignState, 'sendWindow'>;
  now: DateTime;
  leaseValid: boolean;
}): Decision | null {
  const at = p.now.toJSDate();
  if (!p.leaseValid) return { ...none, outcome: released(0, at, { serviceId: null }), leaseLapse: true };
  if (!p.item.contactActive || p.item.suppressed !== null) {
    // Unsubscribed, bounced or suppressed since the queue was generated: never sent, no quota unit
    // spent, the user's credit refunded (a cancelled outcome). The reason is kept.
    const error = p.item.suppressed !== null ? `suppressed: ${p.item.suppressed}` : null;
    return { ...none, outcome: released(0, at, { serviceId: null, status: 'cancelled', error }) };
  }
  const sw = p.campaign.sendWindow;
  if (sw && p.item.timezone) {
    const w = { start: sw.start, end: sw.end, ...(sw.days ? { days: sw.days } : {}) };
    if (!isInsideWindow(w, p.item.timezone, p.now)) {
      const next = nextSendTime(w, p.item.timezone, p.now).toJSDate();
      return { ...none, outcome: released(0, at, { serviceId: null, notBefore: next }), wakeAt: next.getTime() };
    }
  }
  return null;
}

export type Composed = { mail: ReturnType<typeof buildMessage>; decision?: undefined } | { mail?: undefined; decision: Decision };

/**
 * Builds the message. A template not loaded yet (a race with a new campaign) puts the message
 * back; a template that cannot render for this recipient fails it (it never reached a server).
 */
export function compose(p: {
  template: SendableTemplate | undefined;
  campaign: Pick<CampaignState, 'id' | 'name' | 'fromAddress' | 'fromName'>;
  item: Claimed;
  options: MessageOptions;
  serviceId: number;
  at: Date;
}): Composed {
  if (!p.template) return { decision: { ...none, putBack: true } };
  const { item, campaign: c } = p;
  try {
    const mail = buildMessage(
      p.template,
      { id: c.id, name: c.name, fromAddress: c.fromAddress, fromName: c.fromName },
      { taskId: item.taskId, contactId: item.contactId, email: item.email, name: item.name, attributes: item.attributes },
      p.options,
    );
    return { mail };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return {
      decision: {
        ...none,
        outcome: released(p.serviceId, p.at, { status: 'failed', error: `template: ${message}`.slice(0, 1000) }),
        error: { type: 'template', message },
      },
    };
  }
}

/**
 * A message picked ahead of its slot whose campaign was paused or cancelled before the slot came:
 * never sent, its unit returned, and released as the campaign's other held messages are (back to
 * queued for a pause; cancelled, the credit refunded, for a cancel).
 */
export function withdrawn(campaignStatus: string, at: Date): Decision {
  return { ...none, outcome: released(0, at, { serviceId: null, ...(campaignStatus === 'cancelled' ? { status: 'cancelled' } : {}) }) };
}

/** Not dispatched: the service stopped before the slot came (put back), or the lease was lost (not ours). */
export function notDispatched(reason: 'stopped' | 'lease lost'): Decision {
  return { ...none, putBack: reason === 'stopped' };
}

export interface SendPolicy {
  mode: DeliveryMode;
  maxRetries: number;
  retryDelayMs: number;
}

/**
 * The result of a dispatched send: `error` undefined when the server accepted it. A failure is
 * classified (delivery/classify.ts) and decided by kind:
 *   connection: never reached the server, not an attempt: put back, unit returned, a service fault;
 *   transient:  a retry with exponential backoff (or failed after MAX_RETRIES), unit returned;
 *               a fault of the service only for 421 (classify's serviceFault);
 *   permanent:  failed, unit returned, the contact bounced on "no such user";
 *   ambiguous:  the server may have it: unit spent, a service fault; retried under at-least-once,
 *               unknown under at-most-once (or when retries are used up).
 */
export function afterSend(p: {
  item: Claimed;
  serviceId: number;
  at: Date;
  messageId: string;
  policy: SendPolicy;
  error?: unknown;
  failed: boolean;
  /** The server's final reply on success (nodemailer's info.response). */
  response?: unknown;
  /** From the dispatch to the server's last reply. */
  durationMs: number;
}): Decision {
  const { item, serviceId, at } = p;
  const record = (result: AttemptFields['result'], text: unknown, code: unknown = null): AttemptFields => {
    const reply = parseReply(typeof text === 'string' ? text : null, typeof code === 'number' ? code : null);
    return {
      at,
      serviceId,
      provider: recipientDomain(item.email),
      mailboxProvider: item.provider,
      result,
      code: reply.code,
      enhanced: reply.enhanced,
      reply: reply.text,
      durationMs: Math.max(0, Math.round(p.durationMs)),
    };
  };
  if (!p.failed) {
    return {
      ...none,
      attempt: record('accepted', p.response),
      outcome: released(serviceId, at, { status: 'sent', messageId: p.messageId, attempt: 1 }),
      unit: 'spent',
      health: 'ok',
      event: 'sent',
    };
  }
  const f = classifySendError(p.error);
  const e = p.error as { response?: unknown; responseCode?: unknown; message?: unknown } | null;
  const replyText = typeof e?.response === 'string' ? e.response : typeof e?.message === 'string' ? e.message : f.message;
  const common = {
    error: { type: f.type, message: f.message },
    health: f.serviceFault ? ('fault' as const) : null,
    attempt: record(f.kind, replyText, e?.responseCode),
  };
  const base = released(serviceId, at, { error: `${f.type}: ${f.message}`.slice(0, 1000), attempt: 1 });
  const canRetry = item.attempts + 1 <= p.policy.maxRetries;
  const notBefore = new Date(at.getTime() + p.policy.retryDelayMs * 2 ** item.attempts);
  switch (f.kind) {
    case 'connection':
      return { ...none, ...common, putBack: true };
    case 'transient':
      return canRetry
        ? { ...none, ...common, outcome: { ...base, notBefore }, retryAt: notBefore.getTime(), event: 'retry' }
        : { ...none, ...common, outcome: { ...base, status: 'failed' }, event: 'retry' };
    case 'permanent':
      return { ...none, ...common, outcome: { ...base, status: 'failed' }, bounce: f.bounce, event: 'failed' };
    case 'ambiguous':
      return p.policy.mode === 'at-least-once' && canRetry
        ? { ...none, ...common, outcome: { ...base, notBefore }, retryAt: notBefore.getTime(), unit: 'spent' }
        : { ...none, ...common, outcome: { ...base, status: 'unknown', messageId: p.messageId }, unit: 'spent' };
  }
}

/**
 * Messages of a (service, provider) pair blocked for a while (pick.ts) go back to the queue until
 * the block ends: unsent, no attempt counted, never dropped.
 */
export function deferred(at: Date, until: Date): Decision {
  return { ...none, outcome: released(0, at, { serviceId: null, notBefore: until }) };
}

/**
 * A deliverability rule's verdict on a failed send's reply (deliverability/shaper.ts onReply)
 * applied to afterSend's Decision. Only replies with a code reach a rule (transient or permanent):
 *   - the pair slowed, held or suspended by a provider's rule: the receiver throttles this service's mail to the
 *     provider, not this message and not the service: no service fault (other providers keep
 *     their full rate), and the message is retried (after the suspension, when there is one)
 *     whatever its retry count: a throttled message is never dropped;
 *   - retry (this message only): its usual backoff, no service fault;
 *   - fail: failed for good, even for a 4xx (Yahoo's TS03: "retrying will NOT succeed").
 */
export function applyReplyRule(d: Decision, rule: ReplyDecision, p: { at: Date; retryDelayMs: number }): Decision {
  if (rule.effect === 'none' || !d.outcome || !d.attempt || !['transient', 'permanent'].includes(d.attempt.result)) return d;
  if (rule.effect === 'fail') {
    return {
      ...d,
      health: null,
      wakeAt: null,
      retryAt: null,
      outcome: { ...d.outcome, status: 'failed', notBefore: null },
      event: 'failed',
    };
  }
  if (rule.effect === 'retry') return { ...d, health: null };
  // A generic rule (no provider: any 421, a 451 "try later") may be the relay's own trouble: it
  // slows the pair, but the message keeps the usual policy and the failure counts for the
  // service's health as classify says.
  if (!rule.rule?.provider) return d;
  const backoff = p.at.getTime() + p.retryDelayMs;
  const until = new Date(Math.max(backoff, rule.retryAt ?? 0, d.outcome.notBefore?.getTime() ?? 0));
  return {
    ...d,
    health: null,
    bounce: false,
    // The campaign's other providers' messages never wait for this one: it wakes the campaign only
    // if that waits anyway (see Decision.retryAt).
    wakeAt: null,
    retryAt: until.getTime(),
    outcome: { ...d.outcome, status: 'queued', notBefore: until },
    event: 'retry',
  };
}

/**
 * The rules tying a Decision's fields together, asserted on every Decision the runner applies:
 * - a message put back has no outcome and returns its unit (it never reached a server);
 * - a spent unit goes with an outcome that ends an attempt (sent, unknown, or a retry);
 * - a healthy service is only proven by a sent message;
 * - a bounce is a permanent failure.
 */
export function checkDecision(d: Decision): Decision {
  const bad = (why: string) => {
    throw new InvalidTransitionError('send decision', JSON.stringify({ ...d, outcome: d.outcome?.status ?? null }), why);
  };
  if (d.putBack && (d.outcome !== null || d.unit !== 'returned')) bad('a message put back has no outcome and returns its unit');
  if (d.unit === 'spent' && (!d.outcome || d.outcome.attempt !== 1 || !['sent', 'unknown', 'queued'].includes(d.outcome.status)))
    bad('a spent unit ends an attempt');
  if (d.health === 'ok' && d.outcome?.status !== 'sent') bad('only a sent message proves the service works');
  if (d.bounce && d.outcome?.status !== 'failed') bad('a bounce is a failure');
  return d;
}
