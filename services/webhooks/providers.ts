/**
 * Provider webhooks for bounces and complaints: what each sends, how it proves it sent it, and
 * what it means for fairsend. Pure code: verification and parsing take the request's headers and
 * raw body and return events; services/webhooks/index.ts applies them.
 *
 * | provider  | proof                                                                  | events used                                  |
 * | --------- | ---------------------------------------------------------------------- | -------------------------------------------- |
 * | mailgun   | HMAC-SHA256(signing key, timestamp + token) in the body's `signature`  | failed (permanent), complained               |
 * |           | (or `parent-signature`, for a subaccount checked with the main key)    |                                              |
 * | sendgrid  | ECDSA P-256 over timestamp + raw body (X-Twilio-Email-Event-Webhook-*) | bounce (type bounce / blocked), dropped      |
 * |           |                                                                        | (Bounced Address, Invalid, Spam Reporting    |
 * |           |                                                                        | Address), spamreport                         |
 * | postmark  | HTTP basic auth set in the webhook URL                                 | Bounce (HardBounce, SoftBounce...), SpamComplaint |
 * | sparkpost | HTTP basic auth (its event webhooks carry no signature)                | bounce, out_of_band (bounce_class), spam_complaint |
 * | ses       | the SNS message signature (RSA over the canonical string, certificate  | Bounce (Permanent/Transient), Complaint      |
 * |           | from an amazonaws.com URL, fetched by an injectable fetcher)           | (not Feedback-Type not-spam);                |
 * |           |                                                                        | SubscriptionConfirmation is confirmed        |
 *
 * Checked against each provider's documented payloads (test/fixtures/webhooks/README.md says what
 * and where). Not bounces, so not counted: deferrals the provider still retries (Mailgun `failed`
 * with severity temporary, SendGrid `deferred`): each retry would count as a soft bounce, and three
 * retries of one message would suppress the address. A provider's "permanent" bounce whose
 * enhanced status code the DSN policy calls soft (5.2.2 mailbox full, 5.7.x policy...: STATUS_POLICY
 * in services/inbound/reports.ts) is a soft bounce here too, as it is by mail.
 *
 * The campaign and contact come from fairsend's Message-ID `<taskId.contactId@domain>` when the
 * provider reports it; otherwise the address is matched among the service's users' contacts.
 * Signatures older than MAX_AGE_S are refused (replay).
 */
import { createHmac, createPublicKey, createVerify, timingSafeEqual, verify as cryptoVerify } from 'node:crypto';
import type { InboundBounceEvent } from '../bounces.js';
import { classifyStatus } from '../inbound/reports.js';

export const PROVIDERS = ['mailgun', 'sendgrid', 'postmark', 'sparkpost', 'ses'] as const;
export type Provider = (typeof PROVIDERS)[number];
export const MAX_AGE_S = 15 * 60;

/** What a service's webhook is checked with (stored on the service; secrets). */
export interface WebhookCredentials {
  /** mailgun: the HTTP webhook signing key. */
  signingKey?: string;
  /** sendgrid: the verification key (base64 DER public key) from the Event Webhook settings. */
  publicKey?: string;
  /** postmark, sparkpost: basic auth user and password configured in the webhook URL. */
  username?: string;
  password?: string;
  /** ses: SNS topic ARNs accepted (unset: any topic whose signature verifies). */
  topicArns?: string[];
}

export interface WebhookRequest {
  headers: Record<string, string | string[] | undefined>;
  rawBody: string;
  now: Date;
}

export interface WebhookParsed {
  events: InboundBounceEvent[];
  /** SES: a SubscriptionConfirmation's SubscribeURL, to be fetched to confirm. */
  confirmUrl?: string;
}

/** SNS certificate fetcher: given an https://sns.<region>.amazonaws.com/...pem URL, its PEM text. */
export type CertFetcher = (url: string) => Promise<string>;

const header = (h: WebhookRequest['headers'], name: string) => {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
};
const safeEqual = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};
const fresh = (seconds: number, now: Date) => Number.isFinite(seconds) && Math.abs(now.getTime() / 1000 - seconds) <= MAX_AGE_S;

/** fairsend's own Message-ID `<taskId.contactId@domain>`: the campaign and the contact. */
export function fromMessageId(id: string | undefined | null): { campaignId: number; contactId: number } | undefined {
  const m = /^<?(\d{1,16})\.(\d{1,16})@[^>]+>?$/.exec((id ?? '').trim());
  return m ? { campaignId: Number(m[1]), contactId: Number(m[2]) } : undefined;
}
const target = (id: string | undefined | null) => {
  const t = fromMessageId(id);
  return t ? { campaignId: t.campaignId, contactId: t.contactId } : {};
};
const enhanced = (s: unknown) => /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(String(s ?? ''))?.[1];
/** A provider's permanent failure with this status is soft all the same (4.x.x, 5.2.2, 5.7.x...: STATUS_POLICY). */
const soft = (s: string | undefined) => (s && /^\d\.\d{1,3}\.\d{1,3}$/.test(s) ? classifyStatus(s) === 'soft_bounce' : false);

function basicAuth(req: WebhookRequest, c: WebhookCredentials): boolean {
  if (!c.username || !c.password) return false;
  const m = /^Basic\s+(.+)$/i.exec(header(req.headers, 'authorization') ?? '');
  if (!m) return false;
  return safeEqual(Buffer.from(m[1]!, 'base64').toString('utf8'), `${c.username}:${c.password}`);
}

// ---------------------------------------------------------------------------------------------- mailgun
interface MailgunBody {
  signature?: { timestamp?: string | number; token?: string; signature?: string; 'parent-signature'?: string };
  'event-data'?: {
    id?: string;
    event?: string;
    severity?: string;
    recipient?: string;
    reason?: string;
    'delivery-status'?: { code?: number; message?: string; description?: string; 'enhanced-code'?: string };
    message?: { headers?: { 'message-id'?: string } };
  };
}
export const mailgun = {
  verify(req: WebhookRequest, c: WebhookCredentials): boolean {
    if (!c.signingKey) return false;
    const body = JSON.parse(req.rawBody) as MailgunBody;
    const s = body.signature;
    if (!s?.timestamp || !s.token || !s.signature || !fresh(Number(s.timestamp), req.now)) return false;
    const expected = createHmac('sha256', c.signingKey)
      .update(String(s.timestamp) + s.token)
      .digest('hex');
    // A subaccount's events carry its own signature and the main account's as parent-signature.
    return safeEqual(expected, s.signature) || (s['parent-signature'] !== undefined && safeEqual(expected, s['parent-signature']));
  },
  parse(rawBody: string): WebhookParsed {
    const e = (JSON.parse(rawBody) as MailgunBody)['event-data'];
    if (!e?.recipient) return { events: [] };
    const ds = e['delivery-status'] ?? {};
    const status = ds['enhanced-code'] ?? enhanced(ds.message) ?? (ds.code ? String(ds.code) : undefined);
    // Mailgun's own message id replaces ours; fairsend's is in message.headers when the original is stored.
    const t = target(e.message?.headers?.['message-id'] ? `<${e.message.headers['message-id'].replace(/^<|>$/g, '')}>` : undefined);
    const reason = `${ds.code ?? ''} ${ds.message ?? ds.description ?? e.reason ?? ''}`.trim().slice(0, 900);
    // Mailgun's event id: a retried delivery of the same event is applied once (services/bounces.ts).
    const k = e.id ? { eventKey: `mailgun:${e.id}` } : {};
    if (e.event === 'complained') return { events: [{ type: 'complaint', email: e.recipient, ...t, ...k }] };
    // Temporary failures are deferrals Mailgun retries; its final word is a permanent failure.
    if (e.event === 'failed' && e.severity === 'permanent') {
      const type = soft(status) || e.reason === 'old' ? 'soft_bounce' : 'hard_bounce'; // old: gave up after retrying
      return {
        events: [{ type, email: e.recipient, ...t, ...k, ...(status ? { statusCode: status } : {}), ...(reason ? { reason } : {}) }],
      };
    }
    return { events: [] };
  },
};

// --------------------------------------------------------------------------------------------- sendgrid
interface SendgridEvent {
  email?: string;
  event?: string;
  type?: string;
  status?: string;
  reason?: string;
  bounce_classification?: string;
  smtp_id?: string;
  'smtp-id'?: string;
  sg_event_id?: string;
}
/** SendGrid `dropped` reasons that say something about the address (others: content, unsubscribes SendGrid keeps). */
const SENDGRID_DROPPED: Record<string, 'hard_bounce' | 'complaint'> = {
  'Bounced Address': 'hard_bounce',
  Invalid: 'hard_bounce',
  'Spam Reporting Address': 'complaint',
};
export const sendgrid = {
  verify(req: WebhookRequest, c: WebhookCredentials): boolean {
    const sig = header(req.headers, 'x-twilio-email-event-webhook-signature');
    const ts = header(req.headers, 'x-twilio-email-event-webhook-timestamp');
    if (!c.publicKey || !sig || !ts || !fresh(Number(ts), req.now)) return false;
    try {
      const key = createPublicKey({ key: Buffer.from(c.publicKey, 'base64'), format: 'der', type: 'spki' });
      return cryptoVerify('sha256', Buffer.from(ts + req.rawBody), key, Buffer.from(sig, 'base64'));
    } catch {
      return false;
    }
  },
  parse(rawBody: string): WebhookParsed {
    const list = JSON.parse(rawBody) as SendgridEvent[];
    const events: InboundBounceEvent[] = [];
    for (const e of Array.isArray(list) ? list : []) {
      if (!e.email) continue;
      // sg_event_id: a batch SendGrid posts again (after a timeout or a 5xx) is applied once.
      const t = { ...target(e['smtp-id'] ?? e.smtp_id), ...(e.sg_event_id ? { eventKey: `sendgrid:${e.sg_event_id}` } : {}) };
      const status = enhanced(e.status) ?? e.status;
      const extra = { ...t, ...(status ? { statusCode: status } : {}), ...(e.reason ? { reason: e.reason.slice(0, 900) } : {}) };
      if (e.event === 'spamreport') events.push({ type: 'complaint', email: e.email, ...t });
      else if (e.event === 'bounce' && e.type !== 'blocked' && !soft(status))
        events.push({ type: 'hard_bounce', email: e.email, ...extra });
      else if (e.event === 'bounce')
        events.push({ type: 'soft_bounce', email: e.email, ...extra }); // type blocked, or a soft code
      else if (e.event === 'dropped') {
        // Not sent: SendGrid's own suppression list or an unusable address (its documented reasons).
        const drop = SENDGRID_DROPPED[e.reason ?? ''];
        if (drop) events.push({ type: drop, email: e.email, ...t, reason: `dropped by SendGrid: ${e.reason}` });
      }
    }
    return { events };
  },
};

// --------------------------------------------------------------------------------------------- postmark
interface PostmarkBody {
  ID?: number | string;
  RecordType?: string;
  Type?: string;
  Email?: string;
  Details?: string;
  Description?: string;
  Headers?: { Name: string; Value: string }[];
  Metadata?: Record<string, string>;
}
/** Postmark bounce types that mean the address is gone (https://postmarkapp.com/developer/api/bounce-api#bounce-types). */
const POSTMARK_HARD = new Set(['HardBounce', 'BadEmailAddress', 'ManuallyDeactivated', 'AddressChange']);
const POSTMARK_SOFT = new Set([
  'SoftBounce',
  'Transient',
  'DnsError',
  'Blocked',
  'SMTPApiError',
  'ChallengeVerification',
  'SpamNotification',
  'VirusNotification',
  'DMARCPolicy',
]);
export const postmark = {
  verify: basicAuth,
  parse(rawBody: string): WebhookParsed {
    const b = JSON.parse(rawBody) as PostmarkBody;
    if (!b.Email) return { events: [] };
    const mid = b.Headers?.find((h) => h.Name.toLowerCase() === 'message-id')?.Value;
    // Postmark's bounce ID (a spam complaint is a bounce record too): a retried post is applied once.
    const t = { ...target(mid), ...(b.ID !== undefined ? { eventKey: `postmark:${String(b.ID)}` } : {}) };
    const reason = (b.Details ?? b.Description ?? '').slice(0, 900);
    if (b.RecordType === 'SpamComplaint' || (!b.RecordType && b.Type === 'SpamComplaint'))
      return { events: [{ type: 'complaint', email: b.Email, ...t }] };
    // Older bounce webhooks (and Postmark's own short example) carry no RecordType: Type says it all.
    if ((b.RecordType !== undefined && b.RecordType !== 'Bounce') || !b.Type) return { events: [] };
    const status = enhanced(b.Details);
    const type = POSTMARK_HARD.has(b.Type) ? 'hard_bounce' : POSTMARK_SOFT.has(b.Type) ? 'soft_bounce' : undefined;
    if (!type) return { events: [] };
    return { events: [{ type, email: b.Email, ...t, ...(status ? { statusCode: status } : {}), ...(reason ? { reason } : {}) }] };
  },
};

// -------------------------------------------------------------------------------------------- sparkpost
interface SparkpostEvent {
  msys?: {
    message_event?: {
      event_id?: string;
      type?: string;
      rcpt_to?: string;
      bounce_class?: string;
      raw_reason?: string;
      reason?: string;
      message_id?: string;
    };
    unsubscribe_event?: unknown;
  };
}
/** SparkPost bounce classes that mean the address is gone (its Bounce Classification Codes). */
const SPARKPOST_HARD = new Set(['10', '30', '90']);
const SPARKPOST_SOFT = new Set(['20', '21', '22', '23', '24', '25', '40', '50', '51', '52', '53', '54', '60', '70', '100']);
export const sparkpost = {
  verify: basicAuth,
  parse(rawBody: string): WebhookParsed {
    const list = JSON.parse(rawBody) as SparkpostEvent[];
    const events: InboundBounceEvent[] = [];
    for (const item of Array.isArray(list) ? list : []) {
      const e = item.msys?.message_event;
      if (!e?.rcpt_to) continue;
      const reason = (e.raw_reason ?? e.reason ?? '').slice(0, 900);
      const status = enhanced(reason);
      // SparkPost's event_id: a batch posted again is applied once.
      const k = e.event_id ? { eventKey: `sparkpost:${e.event_id}` } : {};
      if (e.type === 'spam_complaint') events.push({ type: 'complaint', email: e.rcpt_to, ...k });
      else if (e.type === 'bounce' || e.type === 'out_of_band') {
        const cls = String(e.bounce_class ?? '');
        const type = SPARKPOST_HARD.has(cls) ? 'hard_bounce' : SPARKPOST_SOFT.has(cls) ? 'soft_bounce' : undefined;
        if (type) events.push({ type, email: e.rcpt_to, ...k, ...(status ? { statusCode: status } : {}), ...(reason ? { reason } : {}) });
      }
    }
    return { events };
  },
};

// -------------------------------------------------------------------------------------------------- ses
interface SnsMessage {
  Type?: string;
  MessageId?: string;
  Token?: string;
  TopicArn?: string;
  Subject?: string;
  Message?: string;
  SubscribeURL?: string;
  Timestamp?: string;
  SignatureVersion?: string;
  Signature?: string;
  SigningCertURL?: string;
}
interface SesNotification {
  notificationType?: string;
  eventType?: string;
  bounce?: { bounceType?: string; bouncedRecipients?: { emailAddress: string; status?: string; diagnosticCode?: string }[] };
  complaint?: { complainedRecipients?: { emailAddress: string }[]; complaintFeedbackType?: string; complaintSubType?: string | null };
  mail?: { headers?: { name: string; value: string }[]; commonHeaders?: { messageId?: string } };
}
/** The string SNS signs: these keys, those present, "Key\nValue\n" each, in this order (AWS SNS docs). */
export function snsStringToSign(m: SnsMessage): string {
  const keys =
    m.Type === 'Notification'
      ? ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type']
      : ['Message', 'MessageId', 'SubscribeURL', 'Timestamp', 'Token', 'TopicArn', 'Type'];
  return keys
    .filter((k) => (m as Record<string, unknown>)[k] !== undefined)
    .map((k) => `${k}\n${String((m as Record<string, unknown>)[k])}\n`)
    .join('');
}
/** Only certificates from SNS itself: https, host sns.<region>.amazonaws.com, a .pem path. */
export const SNS_CERT_URL = /^https:\/\/sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\/[^?#]+\.pem$/;

export const ses = {
  async verify(req: WebhookRequest, c: WebhookCredentials, fetchCert: CertFetcher): Promise<boolean> {
    let m: SnsMessage;
    try {
      m = JSON.parse(req.rawBody) as SnsMessage;
    } catch {
      return false;
    }
    if (!m.Signature || !m.SigningCertURL || !SNS_CERT_URL.test(m.SigningCertURL)) return false;
    if (!m.Timestamp || !fresh(Date.parse(m.Timestamp) / 1000, req.now)) return false;
    if (c.topicArns?.length && !c.topicArns.includes(m.TopicArn ?? '')) return false;
    const algorithm = m.SignatureVersion === '2' ? 'RSA-SHA256' : m.SignatureVersion === '1' ? 'RSA-SHA1' : undefined;
    if (!algorithm) return false;
    try {
      const pem = await fetchCert(m.SigningCertURL);
      return createVerify(algorithm).update(snsStringToSign(m), 'utf8').verify(pem, m.Signature, 'base64');
    } catch {
      return false;
    }
  },
  parse(rawBody: string): WebhookParsed {
    const m = JSON.parse(rawBody) as SnsMessage;
    if (m.Type === 'SubscriptionConfirmation' && m.SubscribeURL) return { events: [], confirmUrl: m.SubscribeURL };
    if (m.Type !== 'Notification' || !m.Message) return { events: [] };
    const n = JSON.parse(m.Message) as SesNotification;
    const kind = n.notificationType ?? n.eventType;
    const original = n.mail?.headers?.find((h) => h.name.toLowerCase() === 'message-id')?.value;
    const t = target(original);
    // The SNS MessageId names the notification (several recipients: the key adds each address).
    const k = m.MessageId ? { eventKey: `ses:${m.MessageId}` } : {};
    if (kind === 'Bounce') {
      const permanent = n.bounce?.bounceType === 'Permanent';
      return {
        events: (n.bounce?.bouncedRecipients ?? []).map((r) => ({
          type: permanent && !soft(r.status) ? ('hard_bounce' as const) : ('soft_bounce' as const),
          email: r.emailAddress,
          ...t,
          ...k,
          ...(r.status ? { statusCode: r.status } : {}),
          ...(r.diagnosticCode ? { reason: r.diagnosticCode.slice(0, 900) } : {}),
        })),
      };
    }
    if (kind === 'Complaint') {
      // The ISP's Feedback-Type: not-spam is a recipient taking a complaint back, not a complaint.
      if (n.complaint?.complaintFeedbackType === 'not-spam') return { events: [] };
      return {
        events: (n.complaint?.complainedRecipients ?? []).map((r) => ({
          type: 'complaint' as const,
          email: r.emailAddress,
          ...t,
          ...k,
        })),
      };
    }
    return { events: [] };
  },
};
