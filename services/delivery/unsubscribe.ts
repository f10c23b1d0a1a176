/**
 * One-click unsubscribe tokens (RFC 8058): `<contactId>.<taskId>.<mac>` where mac is an HMAC-SHA256
 * over "contactId.taskId" with the configured secret, base64url, truncated to 128 bits. A forged or
 * altered token fails verification in constant time.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

function mac(secret: string, contactId: number, taskId: number): string {
  return createHmac('sha256', secret).update(`${contactId}.${taskId}`).digest('base64url').slice(0, 22);
}

export function unsubscribeToken(secret: string, contactId: number, taskId: number): string {
  return `${contactId}.${taskId}.${mac(secret, contactId, taskId)}`;
}

export function verifyUnsubscribeToken(secret: string, token: string): { contactId: number; taskId: number } | undefined {
  const m = /^(\d{1,18})\.(\d{1,18})\.([A-Za-z0-9_-]{22})$/.exec(token);
  if (!m) return undefined;
  const contactId = Number(m[1]);
  const taskId = Number(m[2]);
  const expected = Buffer.from(mac(secret, contactId, taskId));
  const given = Buffer.from(m[3]!);
  return expected.length === given.length && timingSafeEqual(expected, given) ? { contactId, taskId } : undefined;
}

export function unsubscribeUrl(base: string, secret: string, contactId: number, taskId: number): string {
  return `${base.replace(/\/+$/, '')}/${unsubscribeToken(secret, contactId, taskId)}`;
}
