/**
 * VERP return paths: each message leaves with `bounce+<token>@BOUNCE_DOMAIN` as its envelope sender,
 * so a bounce (sent to the envelope sender) says which message failed without reading its text.
 *
 * The token is `<taskId base 36>.<contactId base 36>.<mac>`: mac is HMAC-SHA256 over
 * "verp:<taskId>.<contactId>" with BOUNCE_SECRET, 80 bits in lower-case hex. Lower case throughout,
 * because some mail servers fold the case of the local part; base 36 keeps the local part under
 * the 64 characters RFC 5321 allows (the longest token is 7 + 11 + 1 + 11 + 1 + 20 = 51).
 * A forged or altered token fails verification (constant time) and its report is not acted on.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { domainToASCII } from 'node:url';

export interface VerpTarget {
  taskId: number;
  contactId: number;
}

function mac(secret: string, taskId: number, contactId: number): string {
  return createHmac('sha256', secret).update(`verp:${taskId}.${contactId}`).digest('hex').slice(0, 20);
}

export function verpToken(secret: string, taskId: number, contactId: number): string {
  return `${taskId.toString(36)}.${contactId.toString(36)}.${mac(secret, taskId, contactId)}`;
}

/** `bounce+<token>@domain`, the domain in its ASCII form. */
export function verpAddress(secret: string, domain: string, taskId: number, contactId: number): string {
  return `bounce+${verpToken(secret, taskId, contactId)}@${domainToASCII(domain) || domain}`;
}

/** The message a VERP address names, or undefined when it is not one or its token is forged. */
export function verifyVerp(secret: string, address: string): VerpTarget | undefined {
  const m = /^bounce\+([0-9a-z]{1,11})\.([0-9a-z]{1,11})\.([0-9a-f]{20})@/.exec(address.trim().toLowerCase().replace(/^<|>$/g, ''));
  if (!m) return undefined;
  const taskId = parseInt(m[1]!, 36);
  const contactId = parseInt(m[2]!, 36);
  if (!Number.isSafeInteger(taskId) || !Number.isSafeInteger(contactId) || taskId < 1 || contactId < 1) return undefined;
  const expected = Buffer.from(mac(secret, taskId, contactId));
  const given = Buffer.from(m[3]!);
  return expected.length === given.length && timingSafeEqual(expected, given) ? { taskId, contactId } : undefined;
}
