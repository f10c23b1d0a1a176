/**
 * One pooled nodemailer transport per sending service. Connections are reused for every message
 * (`maxMessages: Infinity`): connection setup dominates the cost of small messages. With DKIM
 * configured, nodemailer's signer signs every message, and the signed headers include both
 * List-Unsubscribe headers (RFC 8058 requires them to be covered). The pool never resends on its
 * own (`maxRequeues: 0`): every retry goes through the engine's backoff and delivery mode. The
 * pool keeps one warm spare connection beyond those in use (spare-connection.ts), so a message
 * never waits for a new connection's greeting while the pool is under maxConnections.
 *
 * The row's secrets (SMTP password, DKIM key, TLS material) are stored encrypted; this is the one
 * place they are decrypted, into the transport's options and nowhere else.
 *
 * TLS (see tls-policy.ts): `secure` is implicit TLS; `requireTLS` (default on port 587) makes
 * nodemailer send STARTTLS even when the server does not offer it and fail the connection when it
 * is refused, before AUTH or MAIL, so nothing goes in clear. A service's own CA replaces the
 * system's for that service alone (instead of NODE_EXTRA_CA_CERTS for the whole process).
 */
import nodemailer, { type Transporter } from 'nodemailer';
import type { ConnectionOptions } from 'node:tls';
import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import type { DkimConfig, TransportConfig } from '../../models/index.js';
import { Keyring } from '../kernel/secrets.js';
import { openServiceSecrets } from '../service-secrets.js';
import { checksCertificates, effectiveRequireTls } from './tls-policy.js';
import { keepSpareConnection } from './spare-connection.js';
import DKIM from 'nodemailer/lib/dkim';
import { holdMail, installHeldEnd } from './held-send.js';
import { rememberHeaderKeys } from './header-keys.js';
import type { SendResult, ServiceTransport } from './worker-transport.js';

export const DKIM_HEADER_FIELDS = [
  'From',
  'Sender',
  'Reply-To',
  'Subject',
  'Date',
  'Message-ID',
  'To',
  'Cc',
  'MIME-Version',
  'Content-Type',
  'Content-Transfer-Encoding',
  'In-Reply-To',
  'References',
  'List-Id',
  'List-Unsubscribe',
  'List-Unsubscribe-Post',
].join(':');

/** For callers whose settings carry no sealed secret (benchmarks): a sealed value then fails with SECRET_KEY_MISSING. */
const NO_KEYS = new Keyring(undefined);

export function createServiceTransport(
  stored: TransportConfig,
  maxConnections: number,
  storedDkim: DkimConfig | null,
  keyring: Keyring = NO_KEYS,
): Transporter {
  rememberHeaderKeys();
  const { transport: t, dkim } = openServiceSecrets(keyring, { transport: stored, dkim: storedDkim });
  const timeout = t.timeoutMs ?? 30_000;
  const transporter = nodemailer.createTransport({
    pool: true,
    host: t.host,
    port: t.port,
    secure: t.secure ?? false,
    requireTLS: effectiveRequireTls(t),
    ...(t.name ? { name: t.name } : {}),
    ...(t.auth ? { auth: authOptions(t.auth) } : {}),
    maxConnections,
    maxMessages: Infinity,
    // nodemailer's pool resends a message by itself when its connection closes mid-send (up to 5
    // times, 50 ms apart), without telling the caller. That bypasses the engine's retry policy: no
    // backoff, no attempt counted, no failure recorded, and under at-most-once a message the server
    // may have taken is sent again. The engine owns retries: fail the send and let it classify.
    maxRequeues: 0,
    connectionTimeout: timeout,
    greetingTimeout: timeout,
    socketTimeout: timeout,
    tls: tlsOptions(t),
    logger: false,
  });
  // DKIM signs in a `stream` step of its own (the same signer nodemailer's `dkim` option makes, one
  // per transport), so a held send's gate comes after the signature (held-send.ts).
  if (dkim) {
    const signer = new DKIM({
      domainName: dkim.domainName,
      keySelector: dkim.keySelector,
      privateKey: dkim.privateKey,
      headerFieldNames: DKIM_HEADER_FIELDS,
    });
    transporter.use('stream', (mail, next) => {
      mail.message.processFunc((input) => signer.sign(input));
      next();
    });
  }
  installHeldEnd(transporter);
  keepSpareConnection(transporter);
  return transporter;
}

/** A transport made by createServiceTransport, as the engine uses it on its own thread (SEND_WORKERS=0). */
export function localTransport(t: Transporter): ServiceTransport {
  return {
    sendMail: (mail) => t.sendMail(mail) as Promise<SendResult>,
    hold: (mail) => holdMail(t as Transporter<SendResult>, mail),
    verify: () => t.verify(),
    close: () => t.close(),
  };
}

/** nodemailer's auth: a password (PLAIN or LOGIN, or whichever the server offers first), or an OAuth2 access token. */
export function authOptions(a: NonNullable<TransportConfig['auth']>): SMTPConnection.AuthenticationType {
  if (a.method === 'XOAUTH2' || (a.method === undefined && a.accessToken !== undefined)) {
    return { type: 'OAuth2', user: a.user, accessToken: a.accessToken };
  }
  return { type: 'login', user: a.user, pass: a.pass ?? '', ...(a.method ? { method: a.method } : {}) };
}

/** Node's TLS options for the service: its CA, SNI name, lowest version, and whether certificates are checked. */
export function tlsOptions(t: TransportConfig): ConnectionOptions {
  const tls = t.tls ?? {};
  return {
    rejectUnauthorized: checksCertificates(t),
    ...(tls.ca ? { ca: tls.ca } : {}),
    ...(tls.servername ? { servername: tls.servername } : {}),
    ...(tls.minVersion ? { minVersion: tls.minVersion } : {}),
  };
}
