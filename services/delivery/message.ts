/**
 * Builds one message for nodemailer from a claimed subtask and its campaign: the compiled template
 * (services/template-render.ts) rendered with the contact, the campaign and the unsubscribe link,
 * a plain-text part (derived from the rendered html with html-to-text when the template has none), a deterministic Message-ID (`<taskId.contactId@domain>`, the same on every
 * attempt so a duplicate is always detectable), and RFC 8058 List-Unsubscribe headers when an
 * unsubscribe URL base is configured.
 */
import { randomBytes } from 'node:crypto';
import { domainToASCII } from 'node:url';
import type { SendMailOptions } from 'nodemailer';
import { htmlToText } from '../html-text.js';
import { compileTemplate, renderMessage, TemplateError, type CompiledTemplate } from '../template-render.js';
import { unsubscribeUrl } from './unsubscribe.js';
import { verpAddress } from '../inbound/verp.js';

/** A template as stored. */
export interface MessageTemplate {
  subject: string;
  html: string | null;
  text: string | null;
}

/**
 * A stored template compiled once for sending (what the scheduler caches), or the reason it does
 * not compile: then every message built from it fails with that reason instead of being sent.
 */
export type SendableTemplate = CompiledTemplate | { broken: TemplateError };

/**
 * Compiles a stored template for sending. Not strict: it was checked at creation, and a template
 * stored before those checks still sends what it can (an unknown variable renders empty). Never
 * throws: a part that does not parse at all gives a broken template (see SendableTemplate).
 */
export function compileForSending(t: MessageTemplate): SendableTemplate {
  try {
    return compileTemplate(t);
  } catch (err) {
    if (err instanceof TemplateError) return { broken: err };
    throw err;
  }
}

export interface MessageCampaign {
  id: number;
  /** For `{{ campaign.name }}`; null when the caller does not know it. */
  name?: string | null;
  fromAddress: string;
  fromName: string | null;
}

export interface MessageRecipient {
  taskId: number;
  contactId: number;
  email: string;
  name: string | null;
  attributes: Record<string, unknown>;
}

export interface MessageOptions {
  unsubscribeBase?: string;
  unsubscribeSecret?: string;
  messageIdDomain?: string;
  /** With both, the envelope sender is the message's VERP address bounce+<token>@bounceDomain (services/inbound/verp.ts). */
  bounceDomain?: string;
  bounceSecret?: string;
}

/**
 * `<taskId.contactId@domain>`, with an internationalized domain in its ASCII (punycode) form: a
 * Message-ID is a header, and headers are ASCII (RFC 5322); nodemailer encodes the From address's
 * domain the same way, so `news@bücher.example` gives `<4.2@xn--bcher-kva.example>`.
 */
export function messageIdFor(taskId: number, contactId: number, domain: string): string {
  return `<${taskId}.${contactId}@${domainToASCII(domain) || 'fairsend.invalid'}>`;
}

/** Bytes of randomness in a message's boundary base (16 hex characters, as nodemailer draws its own). */
const BOUNDARY_BYTES = 8;
/** Boundary bases drawn from one fill of the random generator. */
const BOUNDARY_FILL = 512;
let boundaries = Buffer.alloc(0);
let boundaryAt = 0;

/**
 * A message's multipart boundary base (nodemailer's `baseBoundary`): 16 hex characters from the
 * CSPRNG, as nodemailer would draw them, but from one fill for 512 messages. Left to nodemailer,
 * each part of each message drew its own (crypto.randomBytes per MimeNode): 1.4 s of the send
 * thread's 38 s busy in a profiled W4 run of 60,000 text + HTML messages, its largest frame after
 * the sockets. Every part of a message shares the base; nodemailer numbers them (`-Part_N`).
 */
export function boundaryBase(): string {
  if (boundaryAt >= boundaries.length) {
    boundaries = randomBytes(BOUNDARY_BYTES * BOUNDARY_FILL);
    boundaryAt = 0;
  }
  const base = boundaries.toString('hex', boundaryAt, boundaryAt + BOUNDARY_BYTES);
  boundaryAt += BOUNDARY_BYTES;
  return base;
}

export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1) || 'fairsend.invalid';
}

export { htmlToText };

export function buildMessage(
  template: SendableTemplate,
  campaign: MessageCampaign,
  r: MessageRecipient,
  opts: MessageOptions,
): SendMailOptions & { messageId: string; baseBoundary: string } {
  const unsubscribe =
    opts.unsubscribeBase && opts.unsubscribeSecret
      ? unsubscribeUrl(opts.unsubscribeBase, opts.unsubscribeSecret, r.contactId, r.taskId)
      : undefined;
  if ('broken' in template) throw template.broken;
  const rendered = renderMessage(template, {
    contact: { name: r.name, email: r.email, attributes: r.attributes },
    campaign: { name: campaign.name ?? null },
    unsubscribeUrl: unsubscribe ?? '',
  });
  const messageId = messageIdFor(r.taskId, r.contactId, opts.messageIdDomain ?? domainOf(campaign.fromAddress));
  const mail: SendMailOptions & { messageId: string; baseBoundary: string } = {
    from: campaign.fromName ? { name: campaign.fromName, address: campaign.fromAddress } : campaign.fromAddress,
    to: r.name ? { name: r.name, address: r.email } : r.email,
    subject: rendered.subject,
    text: rendered.text ?? (rendered.html ? htmlToText(rendered.html) : ''),
    messageId,
    headers: { 'X-Fairsend-Campaign': String(r.taskId) },
    baseBoundary: boundaryBase(),
  };
  if (rendered.html) mail.html = rendered.html;
  if (opts.bounceDomain && opts.bounceSecret) {
    mail.envelope = { from: verpAddress(opts.bounceSecret, opts.bounceDomain, r.taskId, r.contactId), to: [r.email] };
  }
  if (unsubscribe) {
    mail.headers = {
      ...(mail.headers as Record<string, string>),
      'List-Unsubscribe': `<${unsubscribe}>`,
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
    };
  }
  return mail;
}
