/**
 * One pooled nodemailer transport per sending service. Connections are reused for every message
 * (`maxMessages: Infinity`): connection setup dominates the cost of small messages. With DKIM
 * configured, nodemailer signs every message, and the signed headers include both
 * List-Unsubscribe headers (RFC 8058 requires them to be covered). The pool never resends on its
 * own (`maxRequeues: 0`): every retry goes through the engine's backoff and delivery mode.
 *
 * The row's secrets (SMTP password, DKIM key, TLS material) are stored encrypted; this is the one
 * place they are decrypted, into the transport's options and nowhere else.
 */
import nodemailer, { type Transporter } from 'nodemailer';
import type { DkimConfig, TransportConfig } from '../../models/index.js';
import { Keyring } from '../kernel/secrets.js';
import { openServiceSecrets } from '../service-secrets.js';

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
  const { transport: t, dkim } = openServiceSecrets(keyring, { transport: stored, dkim: storedDkim });
  const timeout = t.timeoutMs ?? 30_000;
  return nodemailer.createTransport({
    pool: true,
    host: t.host,
    port: t.port,
    secure: t.secure ?? false,
    ...(t.auth ? { auth: { user: t.auth.user, pass: t.auth.pass } } : {}),
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
    ...(t.tlsInsecure ? { tls: { rejectUnauthorized: false } } : {}),
    ...(dkim
      ? {
          dkim: {
            domainName: dkim.domainName,
            keySelector: dkim.keySelector,
            privateKey: dkim.privateKey,
            headerFieldNames: DKIM_HEADER_FIELDS,
          },
        }
      : {}),
    logger: false,
  });
}
