/**
 * How a sending service protects its SMTP session, decided from its transport settings alone (pure
 * code: the transport, the views and the CLI all ask here, so they cannot disagree).
 *
 *   implicit          `secure: true`: TLS from the first byte (port 465).
 *   starttls-required `requireTLS`: the session must be upgraded with STARTTLS before anything
 *                     else (AUTH, MAIL); a server that does not offer it gets nothing.
 *   opportunistic     STARTTLS when the server offers it (a failed handshake still fails the
 *                     send), clear text when it does not.
 *
 * `requireTLS` left unset means true on port 587 without `secure` (the submission port, where
 * every provider offers STARTTLS), false elsewhere. Certificate checking is on unless `tlsInsecure`
 * or `tls.rejectUnauthorized: false` turns it off.
 */
import { X509Certificate } from 'node:crypto';
import type { TransportConfig } from '../../models/index.js';

export type TlsMode = 'implicit' | 'starttls-required' | 'opportunistic';

export const SUBMISSION_PORT = 587;

/** requireTLS as the transport applies it (the default filled in). */
export function effectiveRequireTls(t: Pick<TransportConfig, 'secure' | 'port' | 'requireTLS'>): boolean {
  if (t.secure) return false;
  return t.requireTLS ?? t.port === SUBMISSION_PORT;
}

export function tlsModeOf(t: Pick<TransportConfig, 'secure' | 'port' | 'requireTLS'>): TlsMode {
  if (t.secure) return 'implicit';
  return effectiveRequireTls(t) ? 'starttls-required' : 'opportunistic';
}

/** False when the service accepts any certificate (`tlsInsecure`, or `tls.rejectUnauthorized: false`). */
export function checksCertificates(t: Pick<TransportConfig, 'tlsInsecure' | 'tls'>): boolean {
  return !t.tlsInsecure && t.tls?.rejectUnauthorized !== false;
}

export const TLS_MODE_LABEL: Record<TlsMode, string> = {
  implicit: 'implicit TLS',
  'starttls-required': 'STARTTLS required',
  opportunistic: 'opportunistic',
};

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

/**
 * Why `pem` is not a usable CA bundle, or null: it must hold one or more PEM certificates and
 * nothing else that looks like PEM (a private key pasted by mistake is refused, not stored).
 */
export function caProblem(pem: string): string | null {
  const blocks = [...pem.matchAll(PEM_BLOCK)];
  if (!blocks.length) return 'must be PEM text holding at least one -----BEGIN CERTIFICATE----- block';
  for (const [i, b] of blocks.entries()) {
    if (b[1] !== 'CERTIFICATE') return `holds a ${b[1]} block (number ${i + 1}); only certificates belong here`;
    try {
      new X509Certificate(b[0]);
    } catch {
      return `certificate number ${i + 1} cannot be read`;
    }
  }
  return null;
}
