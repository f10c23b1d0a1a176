/**
 * The inbound SMTP listener for bounces (smtp-server): off unless BOUNCE_SMTP_PORT is set. Point
 * the MX of BOUNCE_DOMAIN at it (or relay that domain to it from your mail server).
 *
 * It accepts recipients at BOUNCE_DOMAIN only (it relays nothing), reads each message whole (up to
 * 10 MiB), and answers 250 only once the message is applied or kept for review: if that fails
 * (the database is away), it answers 451 and the sending server tries again later, so nothing is
 * lost.
 */
import { SMTPServer, type SMTPServerAddress } from 'smtp-server';
import type { Logger } from '../kernel/logger.js';
import type { InboundMessage, InboundOutcome } from './inbound.js';

export interface BounceListenerOptions {
  port: number;
  host: string;
  /** Recipients must be at this domain (case-insensitive); unset: any. */
  domain: string | undefined;
  logger: Logger;
  handle: (msg: InboundMessage) => Promise<InboundOutcome>;
}

export interface BounceListener {
  readonly port: number;
  close(): Promise<void>;
}

class SmtpReply extends Error {
  constructor(
    readonly responseCode: number,
    message: string,
  ) {
    super(message);
  }
}

export async function startBounceListener(o: BounceListenerOptions): Promise<BounceListener> {
  const domain = o.domain?.toLowerCase();
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    banner: 'fairsend bounce listener',
    size: 10 * 1024 * 1024,
    closeTimeout: 2000,
    onRcptTo(address: SMTPServerAddress, _session, cb) {
      const at = address.address.toLowerCase();
      if (domain && !at.endsWith(`@${domain}`)) return cb(new SmtpReply(550, '5.7.1 relaying denied: this server takes bounces only'));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        if ((stream as unknown as { sizeExceeded?: boolean }).sizeExceeded) return cb(new SmtpReply(552, '5.3.4 message too big'));
        const envelopeTo = session.envelope.rcptTo.map((r) => r.address);
        o.handle({ raw: Buffer.concat(chunks), envelopeTo, source: 'smtp' }).then(
          () => cb(),
          (err: unknown) => {
            o.logger.error({ err }, 'inbound bounce could not be stored; the sender will retry');
            cb(new SmtpReply(451, '4.3.0 temporary failure, try again later'));
          },
        );
      });
    },
  });
  server.on('error', (err) => o.logger.warn({ err }, 'bounce listener error'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.server.address() as { port: number }).port;
  o.logger.info({ port, host: o.host }, 'bounce listener started');
  let closed: Promise<void> | undefined;
  return { port, close: () => (closed ??= new Promise<void>((resolve) => server.close(() => resolve()))) };
}
