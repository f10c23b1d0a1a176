/**
 * Reading inbound mail as reports: delivery status notifications (RFC 3464,
 * `multipart/report; report-type=delivery-status`) and feedback-loop complaints (ARF, RFC 5965,
 * `multipart/report; report-type=feedback-report`). The top-level headers and the returned original
 * message come from mailparser; the machine-readable part (message/delivery-status or
 * message/feedback-report), which mailparser does not expose, is cut out of the MIME body by its
 * boundary and read as the header blocks it is.
 *
 * What a bounce means comes from its status code, never from its wording (policy as data below):
 * listmonk's keyword matching (its issue 1334) reads "mailbox full" in any language as nothing.
 * Anything that is not a report (autoreplies, challenge-response, plain mail) is `other`, with why,
 * and is kept for a person to look at.
 */
import { simpleParser } from 'mailparser';

export type BounceKind = 'hard_bounce' | 'soft_bounce';

/**
 * RFC 3463 enhanced status codes to what they mean for the address, first match wins. The class
 * (first digit) alone would call 5.2.2 (mailbox full) and 5.7.1 (refused by policy, often the
 * sender's content or reputation) permanent, yet the address itself is fine: both count as soft,
 * and soft bounces past the limit suppress the address anyway.
 */
export const STATUS_POLICY: readonly { pattern: RegExp; kind: BounceKind; why: string }[] = [
  { pattern: /^5\.2\.2$/, kind: 'soft_bounce', why: 'mailbox full' },
  { pattern: /^5\.7\.\d{1,3}$/, kind: 'soft_bounce', why: 'refused by policy (sender or content, not the address)' },
  { pattern: /^5\.3\.\d{1,3}$/, kind: 'soft_bounce', why: 'mail system problem at the receiver' },
  { pattern: /^5\.4\.[0-6]$/, kind: 'soft_bounce', why: 'network or routing problem' },
  { pattern: /^5\.\d{1,3}\.\d{1,3}$/, kind: 'hard_bounce', why: 'permanent failure' },
  { pattern: /^4\.\d{1,3}\.\d{1,3}$/, kind: 'soft_bounce', why: 'temporary failure' },
];

export function classifyStatus(status: string): BounceKind | undefined {
  return STATUS_POLICY.find((p) => p.pattern.test(status))?.kind;
}

export interface DsnRecipient {
  email: string;
  action: string;
  status: string;
  diagnostic: string | null;
  kind: BounceKind;
}

export type ParsedReport =
  | { kind: 'dsn'; recipients: DsnRecipient[]; returnPaths: string[]; subject: string | null; reportId: string | null }
  | {
      kind: 'arf';
      /** The report's own Message-ID: the same report read twice (a mailbox re-read, SMTP and IMAP) is applied once. */
      reportId: string | null;
      feedbackType: string;
      recipient: string | null;
      returnPaths: string[];
      /** Message-IDs of the returned original (fairsend's own names the campaign and contact). */
      messageIds: string[];
      subject: string | null;
    }
  | { kind: 'other'; reason: string; subject: string | null };

/** Header blocks of a machine-readable report part: per-message fields, then one block per recipient. */
export function headerBlocks(text: string): Map<string, string>[] {
  const blocks: Map<string, string>[] = [];
  for (const chunk of text.replace(/\r\n/g, '\n').split(/\n[ \t]*\n/)) {
    const unfolded = chunk.replace(/\n[ \t]+/g, ' ');
    const fields = new Map<string, string>();
    for (const line of unfolded.split('\n')) {
      const m = /^([A-Za-z0-9-]+)\s*:\s*(.*)$/.exec(line);
      if (m) fields.set(m[1]!.toLowerCase(), m[2]!.trim());
    }
    if (fields.size) blocks.push(fields);
  }
  return blocks;
}

/** The body of the first MIME part of `contentType` under `boundary` (transfer encoding undone). */
function reportPart(raw: string, boundary: string, contentType: string): string | undefined {
  for (const part of raw.split(`--${boundary}`)) {
    const split = part.replace(/^\r?\n/, '').search(/\r?\n\r?\n/);
    if (split < 0) continue;
    const body = part.replace(/^\r?\n/, '');
    const head = body.slice(0, split).replace(/\r?\n[ \t]+/g, ' ');
    if (!new RegExp(`^content-type:\\s*${contentType.replace('/', '\\/')}\\b`, 'im').test(head)) continue;
    let content = body.slice(split).replace(/^\r?\n\r?\n/, '');
    if (/^content-transfer-encoding:\s*base64/im.test(head)) content = Buffer.from(content, 'base64').toString('utf8');
    else if (/^content-transfer-encoding:\s*quoted-printable/im.test(head)) {
      content = content.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
    }
    return content;
  }
  return undefined;
}

const addressIn = (field: string | undefined) => {
  if (!field) return null;
  const m = /^(?:rfc822\s*;)?\s*<?([^<>\s;]+@[^<>\s;]+)>?/i.exec(field.replace(/^rfc822\s*;\s*/i, ''));
  return m ? m[1]!.toLowerCase() : null;
};

/** Message-IDs found in the returned original message's header. */
function originalMessageIds(originals: string[]): string[] {
  const out: string[] = [];
  for (const o of originals) {
    const head = (o.split(/\r?\n\r?\n/)[0] ?? '').replace(/\r?\n[ \t]+/g, ' ');
    for (const m of head.matchAll(/^message-id\s*:\s*(<[^<>\s]+>)/gim)) out.push(m[1]!);
  }
  return out;
}

/** Return-Path and envelope-sender candidates found in the returned original message. */
function originalReturnPaths(originals: string[]): string[] {
  const out: string[] = [];
  for (const o of originals) {
    const head = o.split(/\r?\n\r?\n/)[0] ?? '';
    for (const m of head.matchAll(
      /^(?:return-path|x-postfix-sender|original-mail-from)\s*:\s*(?:rfc822\s*;\s*)?<?([^<>\s]+@[^<>\s]+)>?/gim,
    ))
      out.push(m[1]!);
  }
  return out;
}

export async function parseReport(raw: Buffer | string): Promise<ParsedReport> {
  const text = Buffer.isBuffer(raw) ? raw.toString('latin1') : raw;
  let mail;
  try {
    mail = await simpleParser(raw);
  } catch (err) {
    return { kind: 'other', reason: `unparseable mail: ${(err as Error).message}`, subject: null };
  }
  const subject = mail.subject ?? null;
  const ct = mail.headers.get('content-type') as { value?: string; params?: Record<string, string> } | undefined;
  const reportType = ct?.value === 'multipart/report' ? ct.params?.['report-type']?.toLowerCase() : undefined;
  const boundary = ct?.params?.boundary;
  if (!reportType || !boundary) {
    const auto = String(mail.headers.get('auto-submitted') ?? '');
    const reason =
      /auto-replied/i.test(auto) || mail.headers.has('x-autoreply') || /auto_reply/i.test(String(mail.headers.get('precedence') ?? ''))
        ? 'autoreply (Auto-Submitted / X-Autoreply / Precedence), not a report'
        : 'not a delivery status or feedback report (no multipart/report)';
    return { kind: 'other', reason, subject };
  }
  const originals = mail.attachments
    .filter((a) => /^(message\/rfc822|text\/rfc822-headers|message\/rfc822-headers)$/i.test(a.contentType))
    .map((a) => a.content.toString('utf8'));
  // An original sent inline (Content-Disposition: inline, as RFC 5965's own example does) is no
  // attachment to mailparser: cut it out of the MIME body instead.
  if (!originals.length) {
    const inline = reportPart(text, boundary, 'message/rfc822') ?? reportPart(text, boundary, 'text/rfc822-headers');
    if (inline) originals.push(inline);
  }
  if (reportType === 'delivery-status') {
    const part = reportPart(text, boundary, 'message/delivery-status') ?? reportPart(text, boundary, 'message/global-delivery-status');
    if (!part) return { kind: 'other', reason: 'delivery-status report without a message/delivery-status part', subject };
    const [perMessage, ...perRecipient] = headerBlocks(part);
    const recipients: DsnRecipient[] = [];
    for (const b of perRecipient) {
      const email = addressIn(b.get('final-recipient')) ?? addressIn(b.get('original-recipient'));
      const action = (b.get('action') ?? '').toLowerCase();
      const status = /^\d\.\d{1,3}\.\d{1,3}/.exec(b.get('status') ?? '')?.[0];
      // Only failures and delays are bounces; delivered, relayed and expanded are news, not trouble.
      if (!email || !status || (action !== 'failed' && action !== 'delayed')) continue;
      const kind = action === 'delayed' ? 'soft_bounce' : classifyStatus(status);
      if (!kind) continue;
      recipients.push({ email, action, status, diagnostic: b.get('diagnostic-code') ?? null, kind });
    }
    if (!recipients.length) return { kind: 'other', reason: 'delivery-status report with no failed or delayed recipient', subject };
    const sender = addressIn(perMessage?.get('x-postfix-sender'));
    return {
      kind: 'dsn',
      recipients,
      returnPaths: [...(sender ? [sender] : []), ...originalReturnPaths(originals)],
      subject,
      reportId: mail.messageId ?? null,
    };
  }
  if (reportType === 'feedback-report') {
    const part = reportPart(text, boundary, 'message/feedback-report');
    if (!part) return { kind: 'other', reason: 'feedback report without a message/feedback-report part', subject };
    const fields = headerBlocks(part)[0] ?? new Map<string, string>();
    const feedbackType = (fields.get('feedback-type') ?? '').toLowerCase();
    if (!feedbackType) return { kind: 'other', reason: 'feedback report without Feedback-Type', subject };
    const from = addressIn(fields.get('original-mail-from'));
    const originalTo = originals.map((o) => /^to:\s*(.*)$/im.exec(o.split(/\r?\n\r?\n/)[0] ?? '')?.[1]).find(Boolean);
    const recipient = addressIn(fields.get('original-rcpt-to')) ?? addressIn(originalTo?.match(/<([^>]+)>/)?.[1] ?? originalTo);
    return {
      kind: 'arf',
      feedbackType,
      recipient,
      returnPaths: [...(from ? [from] : []), ...originalReturnPaths(originals)],
      messageIds: originalMessageIds(originals),
      subject,
      reportId: mail.messageId ?? null,
    };
  }
  return { kind: 'other', reason: `multipart/report of type ${reportType}, not handled`, subject };
}
