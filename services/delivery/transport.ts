/**
 * One pooled nodemailer transport per sending service. Connections are reused for every message
 * (`maxMessages: Infinity`): connection setup dominates the cost of small messages. With DKIM
 * configured, nodemailer signs every message, and the signed headers include both
 * List-Unsubscribe headers (RFC 8058 requires them to be covered).
 */
import nodemailer, { type Transporter } from 'nodemailer';
import type { DkimConfig, TransportConfig } from '../../models/index.js';

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

export function createServiceTransport(t: TransportConfig, maxConnections: number, dkim: DkimConfig | null): Transporter {
  const timeout = t.timeoutMs ?? 30_000;
  return nodemailer.createTransport({
    pool: true,
    host: t.host,
    port: t.port,
    secure: t.secure ?? false,
    ...(t.auth ? { auth: { user: t.auth.user, pass: t.auth.pass } } : {}),
    maxConnections,
    maxMessages: Infinity,
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
