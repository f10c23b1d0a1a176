/**
 * The parts of an SMTP reply kept in the attempt record: the reply code (RFC 5321), the enhanced
 * status code when the server gives one (RFC 3463, `class.subject.detail` after the code), and the
 * text, on one line and truncated. Pure, so the hot path pays a regular expression and a slice.
 */
export interface SmtpReply {
  code: number | null;
  enhanced: string | null;
  text: string | null;
}

/** Longest reply text kept (the column allows 500). */
export const REPLY_MAX = 300;

const REPLY = /^([2-5]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3})\b)?/;

/**
 * Parses a reply line such as `550 5.1.1 <x@y>: user unknown` or `250 2.0.0 Ok: queued as 4F2`.
 * `fallbackCode` is used when the text does not start with a code (nodemailer gives responseCode
 * separately, and some errors carry only a message). Multi-line replies keep their first line's
 * code and are joined with spaces.
 */
export function parseReply(text: string | null | undefined, fallbackCode?: number | null): SmtpReply {
  const oneLine = text ? text.replace(/\s*[\r\n]+\s*/g, ' ').trim() : '';
  const m = REPLY.exec(oneLine);
  const code = m ? Number(m[1]) : fallbackCode && fallbackCode >= 200 && fallbackCode < 600 ? fallbackCode : null;
  return { code, enhanced: m?.[2] ?? null, text: oneLine ? oneLine.slice(0, REPLY_MAX) : null };
}

/** The recipient's domain, lower case: the attempt's provider until a mailbox provider is known. */
export function recipientDomain(email: string): string | null {
  const at = email.lastIndexOf('@');
  return at < 0 ? null : email.slice(at + 1).toLowerCase();
}
