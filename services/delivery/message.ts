/**
 * Builds one message for nodemailer from a claimed subtask and its campaign: the template rendered
 * with the contact's fields and attributes, a plain-text part (derived from the html when the
 * template has none), a deterministic Message-ID (`<taskId.contactId@domain>`, the same on every
 * attempt so a duplicate is always detectable), and RFC 8058 List-Unsubscribe headers when an
 * unsubscribe URL base is configured.
 */
import { domainToASCII } from 'node:url';
import type { SendMailOptions } from 'nodemailer';
import { renderMessage } from '../template-render.js';
import { unsubscribeUrl } from './unsubscribe.js';

export interface MessageTemplate {
  subject: string;
  html: string | null;
  text: string | null;
}

export interface MessageCampaign {
  id: number;
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
}

/**
 * `<taskId.contactId@domain>`, with an internationalized domain in its ASCII (punycode) form: a
 * Message-ID is a header, and headers are ASCII (RFC 5322); nodemailer encodes the From address's
 * domain the same way, so `news@bücher.example` gives `<4.2@xn--bcher-kva.example>`.
 */
export function messageIdFor(taskId: number, contactId: number, domain: string): string {
  return `<${taskId}.${contactId}@${domainToASCII(domain) || 'fairsend.invalid'}>`;
}

export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1) || 'fairsend.invalid';
}

/** A readable text part from html, for templates that have only html. */
export function htmlToText(html: string): string {
  return html
    .replace(/<(script|style)[\s\S]*?<\/\1>/gi, '')
    .replace(/<br\s*\/?>/gi, '\n')
    .replace(/<\/(p|div|h[1-6]|li|tr)>/gi, '\n')
    .replace(/<li[^>]*>/gi, '- ')
    .replace(/<[^>]+>/g, '')
    .replace(/&nbsp;/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

export function buildMessage(
  template: MessageTemplate,
  campaign: MessageCampaign,
  r: MessageRecipient,
  opts: MessageOptions,
): SendMailOptions & { messageId: string } {
  const unsubscribe =
    opts.unsubscribeBase && opts.unsubscribeSecret
      ? unsubscribeUrl(opts.unsubscribeBase, opts.unsubscribeSecret, r.contactId, r.taskId)
      : undefined;
  const vars: Record<string, unknown> = { ...r.attributes, email: r.email, name: r.name ?? '', unsubscribe_url: unsubscribe ?? '' };
  const rendered = renderMessage(template, vars);
  const messageId = messageIdFor(r.taskId, r.contactId, opts.messageIdDomain ?? domainOf(campaign.fromAddress));
  const mail: SendMailOptions & { messageId: string } = {
    from: campaign.fromName ? { name: campaign.fromName, address: campaign.fromAddress } : campaign.fromAddress,
    to: r.name ? { name: r.name, address: r.email } : r.email,
    subject: rendered.subject,
    text: rendered.text ?? (rendered.html ? htmlToText(rendered.html) : ''),
    messageId,
    headers: { 'X-Fairsend-Campaign': String(r.taskId) },
  };
  if (rendered.html) mail.html = rendered.html;
  if (unsubscribe) {
    mail.headers = {
      ...(mail.headers as Record<string, string>),
      'List-Unsubscribe': `<${unsubscribe}>`,
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
    };
  }
  return mail;
}
