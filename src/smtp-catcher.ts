/**
 * A real SMTP server on loopback (smtp-server) that parses what it receives (mailparser) and
 * keeps it: the demo's sending services point at it, and tests read back what was delivered.
 *
 * Faults can be injected per recipient or per message (`rcptReply`, `dataReply`, `dropAfterData`,
 * `dropMidData`, `delayMs`), so tests can make the server answer 451 or 550, withhold the 250,
 * hang up in the middle of the data or after it, or answer too late, over a real socket: tests
 * never replace the transport with a mock. `onAccept` sees every accepted message, also when
 * messages are not kept (a long run counts Message-IDs without parsing).
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from 'smtp-server';

export interface CaughtMessage {
  envelopeFrom: string;
  envelopeTo: string[];
  raw: Buffer;
  parsed: ParsedMail;
  receivedAt: Date;
}

export interface SmtpReply {
  code: number;
  message: string;
}

export interface SmtpCatcherOptions {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Keep parsed messages (default true). Off for benchmarks: count only. */
  keep?: boolean;
  /** Return a reply to refuse a recipient (e.g. 550 no such user, 451 try later). */
  rcptReply?: (address: string, session: SMTPServerSession) => SmtpReply | undefined;
  /** Return a reply to refuse a message after DATA (e.g. 451, 554). */
  dataReply?: (message: { from: string; to: string[]; raw: Buffer }) => SmtpReply | undefined;
  /** Close the socket after the message data arrived, before answering (outcome unknown to the sender). */
  dropAfterData?: (message: { from: string; to: string[]; raw: Buffer }) => boolean;
  /** Delay before answering DATA, in ms. */
  delayMs?: number;
  /**
   * Close the socket as soon as the message data starts arriving, before its end: the sender's
   * DATA is cut in the middle. Decided per message from the envelope (the data is not known yet).
   */
  dropMidData?: (envelope: { from: string; to: string[] }) => boolean;
  /** Called for every accepted message (after the 250 is decided), kept or not. */
  onAccept?: (message: { from: string; to: string[]; raw: Buffer }) => void;
}

class ReplyError extends Error {
  readonly responseCode: number;
  constructor(reply: SmtpReply) {
    super(reply.message);
    this.responseCode = reply.code;
  }
}

export class SmtpCatcher {
  readonly messages: CaughtMessage[] = [];
  /** Messages accepted (250 sent), whether kept or not. */
  accepted = 0;
  /** Messages whose data arrived, including refused and dropped ones. */
  received = 0;
  /** Messages whose data was cut in the middle by `dropMidData`. */
  droppedMidData = 0;
  /** SMTP connections open now (counted from the greeting to the socket's close). */
  openConnections = 0;
  private server: SMTPServer;
  private waiters: { count: number; resolve: () => void }[] = [];
  private opts: SmtpCatcherOptions;
  port = 0;
  host: string;

  constructor(opts: SmtpCatcherOptions = {}) {
    this.opts = opts;
    this.host = opts.host ?? '127.0.0.1';
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      logger: false,
      banner: 'fairsend smtp catcher',
      size: 25 * 1024 * 1024,
      closeTimeout: 1000,
      onConnect: (_session, cb) => {
        this.openConnections++;
        cb();
      },
      onClose: () => {
        this.openConnections--;
      },
      onRcptTo: (address: SMTPServerAddress, session, cb) => {
        const reply = this.opts.rcptReply?.(address.address, session);
        cb(reply ? new ReplyError(reply) : undefined);
      },
      onData: (stream, session, cb) => {
        const envelope = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
        };
        if (this.opts.dropMidData?.(envelope)) {
          // Hang up once the first chunk of data is in: the message is cut in the middle.
          stream.once('data', () => {
            this.droppedMidData++;
            this.destroySession(session);
          });
          stream.on('error', () => undefined);
          stream.resume();
          return;
        }
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          void this.handleData(Buffer.concat(chunks), session, cb);
        });
      },
    });
    this.server.on('error', () => {
      /* client-side socket errors (resets) are expected in fault tests */
    });
  }

  private async handleData(raw: Buffer, session: SMTPServerSession, cb: (err?: Error | null) => void): Promise<void> {
    this.received++;
    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const to = session.envelope.rcptTo.map((r) => r.address);
    const meta = { from, to, raw };
    if (this.opts.delayMs) await new Promise((r) => setTimeout(r, this.opts.delayMs));
    if (this.opts.dropAfterData?.(meta)) {
      // Hang up without a reply: the sender cannot know whether the message was taken.
      (session as unknown as { _socket?: { destroy(): void } })._socket?.destroy();
      this.destroySession(session);
      return;
    }
    const reply = this.opts.dataReply?.(meta);
    if (reply) return cb(new ReplyError(reply));
    if (this.opts.keep !== false) {
      const parsed = await simpleParser(raw);
      this.messages.push({ envelopeFrom: from, envelopeTo: to, raw, parsed, receivedAt: new Date() });
    }
    this.accepted++;
    this.opts.onAccept?.(meta);
    cb();
    this.waiters = this.waiters.filter((w) => {
      if (this.accepted >= w.count) w.resolve();
      return this.accepted < w.count;
    });
  }

  private destroySession(session: SMTPServerSession): void {
    const connections = (this.server as unknown as { connections: Set<{ id: string; _socket: { destroy(): void } }> }).connections;
    for (const c of connections) if (c.id === session.id) c._socket.destroy();
  }

  async start(): Promise<this> {
    this.server.listen(this.opts.port ?? 0, this.host);
    await once(this.server.server, 'listening');
    this.port = (this.server.server.address() as AddressInfo).port;
    return this;
  }

  /** Resolves when at least `count` messages have been accepted. */
  waitFor(count: number): Promise<void> {
    if (this.accepted >= count) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export async function startSmtpCatcher(opts: SmtpCatcherOptions = {}): Promise<SmtpCatcher> {
  return new SmtpCatcher(opts).start();
}
