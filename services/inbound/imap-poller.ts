/**
 * The bounce mailbox poller (imapflow): off unless BOUNCE_IMAP_URL is set. For a mail set-up where
 * bounces and feedback-loop reports land in a mailbox rather than at fairsend's SMTP listener.
 *
 * Every BOUNCE_IMAP_INTERVAL_MS it connects, opens the mailbox, and takes the UNSEEN messages
 * (oldest first, at most MAX_PER_POLL): each goes through the same pipeline as the SMTP listener
 * (handleInbound: DSN / ARF applied, anything else kept for review in inbound_review), then is
 * flagged \Seen. The message is read with BODY.PEEK, so a message whose handling failed (the
 * database is away) stays unseen and is taken again at the next poll: nothing is lost, as the
 * listener answers 451 for it. One that was applied but not yet flagged when the engine stopped
 * is taken again too, and applied once: its events are keyed by the report's Message-ID
 * (bounce_event_keys, services/bounces.ts).
 *
 * Why \Seen, not move or delete: the mailbox stays whole (a person can look at any report later,
 * and a parser change can be checked against real mail), it works on every IMAP server and with
 * read-write rights alone (no MOVE, UIDPLUS or EXPUNGE), and a mailbox shared with people or
 * other tools is not emptied. Its cost: a person who opens the mailbox in a mail client marks
 * messages seen before fairsend reads them, so give fairsend a mailbox (or folder, filled by a
 * server-side rule) of its own; and expire old mail on the server if it must not grow.
 *
 * One connection per poll, logged out after it: idle IMAP connections are dropped by servers and
 * NATs after minutes, and a poll every minute or so needs none kept. Polls never overlap.
 * The URL's password is never logged: errors are logged with host, port and mailbox only.
 */
import { ImapFlow } from 'imapflow';
import type { Logger } from '../kernel/logger.js';
import type { InboundMessage, InboundOutcome } from './inbound.js';
import { parseImapUrl } from './imap-url.js';

export { parseImapUrl, type ImapTarget } from './imap-url.js';

/** Messages taken per poll (the rest wait for the next one). */
export const MAX_PER_POLL = 500;
/** Largest message read whole; a bigger one is kept for review without being parsed. */
export const MAX_MESSAGE_BYTES = 10 * 1024 * 1024;

/** Envelope recipients of a stored message: what the delivering server recorded, else To. */
export function envelopeRecipients(raw: Buffer): string[] {
  const end = raw.indexOf('\r\n\r\n') >= 0 ? raw.indexOf('\r\n\r\n') : raw.indexOf('\n\n');
  const head = raw
    .subarray(0, end < 0 ? Math.min(raw.length, 64 * 1024) : end)
    .toString('latin1')
    .replace(/\r?\n[ \t]+/g, ' ');
  const pick = (name: string) =>
    [...head.matchAll(new RegExp(`^${name}:\\s*(.+)$`, 'gim'))].flatMap((m) =>
      [...m[1]!.matchAll(/<?([^\s<>,;"]+@[^\s<>,;"]+)>?/g)].map((a) => a[1]!),
    );
  const delivered = [...pick('Delivered-To'), ...pick('X-Original-To'), ...pick('Envelope-To')];
  return [...new Set(delivered.length ? delivered : pick('To'))];
}

export interface PollResult {
  /** Unseen messages found. */
  found: number;
  /** Applied as a DSN or ARF report. */
  recorded: number;
  /** Kept for review (not reports, no valid token...). */
  review: number;
  /** Handling failed; left unseen for the next poll. */
  failed: number;
}

export interface ImapPollerOptions {
  url: string;
  intervalMs: number;
  logger: Logger;
  handle: (msg: InboundMessage) => Promise<InboundOutcome>;
}

export interface ImapPoller {
  /** Polls now (after any poll under way) and says what it did. Rejects when the mailbox cannot be read. */
  poll(): Promise<PollResult>;
  /** Stops the timer and waits for a poll under way. */
  close(): Promise<void>;
}

/** Starts polling every `intervalMs` (the first poll at once). The URL is checked here. */
export function startImapPoller(o: ImapPollerOptions): ImapPoller {
  const target = parseImapUrl(o.url);
  const where = { host: target.host, port: target.port, mailbox: target.mailbox };
  let chain: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const pollOnce = async (): Promise<PollResult> => {
    const result: PollResult = { found: 0, recorded: 0, review: 0, failed: 0 };
    const client = new ImapFlow({
      host: target.host,
      port: target.port,
      secure: target.secure,
      auth: { user: target.user, pass: target.pass },
      logger: false,
      disableAutoIdle: true,
      connectionTimeout: 30_000,
      greetingTimeout: 30_000,
      socketTimeout: 120_000,
    });
    client.on('error', (err: Error) => o.logger.warn({ ...where, err: { message: err.message } }, 'bounce mailbox connection error'));
    await client.connect();
    try {
      const lock = await client.getMailboxLock(target.mailbox);
      try {
        const uids = ((await client.search({ seen: false }, { uid: true })) || []).sort((a, b) => a - b).slice(0, MAX_PER_POLL);
        result.found = uids.length;
        for (const uid of uids) {
          if (closed) break;
          const meta = await client.fetchOne(String(uid), { size: true }, { uid: true });
          if (!meta) continue;
          const big = (meta.size ?? 0) > MAX_MESSAGE_BYTES;
          const msg = await client.fetchOne(String(uid), { source: big ? { start: 0, maxLength: 256 * 1024 } : true }, { uid: true });
          if (!msg || !msg.source) continue;
          const raw = msg.source;
          try {
            const outcome = big
              ? await o.handle({
                  raw: Buffer.concat([raw, Buffer.from(`\r\n[message of ${meta.size} bytes cut at 256 KiB: too big to parse]\r\n`)]),
                  envelopeTo: envelopeRecipients(raw),
                  source: 'imap',
                  reviewOnly: `message of ${meta.size} bytes: larger than ${MAX_MESSAGE_BYTES}, not parsed`,
                })
              : await o.handle({ raw, envelopeTo: envelopeRecipients(raw), source: 'imap' });
            if (outcome.action === 'recorded') result.recorded++;
            else result.review++;
          } catch (err) {
            result.failed++;
            o.logger.error(
              { ...where, uid, err },
              'inbound bounce from the mailbox could not be stored; it stays unseen for the next poll',
            );
            continue;
          }
          await client.messageFlagsAdd(String(uid), ['\\Seen'], { uid: true });
        }
      } finally {
        lock.release();
      }
    } finally {
      await client.logout().catch(() => client.close());
    }
    if (result.found) o.logger.info({ ...where, ...result }, 'bounce mailbox polled');
    return result;
  };

  const poll = (): Promise<PollResult> => {
    const run = chain.then(pollOnce, pollOnce);
    chain = run.catch(() => undefined);
    return run;
  };

  const tick = () => {
    poll()
      .catch((err: unknown) =>
        o.logger.warn(
          { ...where, err: { message: (err as Error).message, code: (err as { code?: string }).code } },
          'bounce mailbox poll failed; trying again at the next interval',
        ),
      )
      .finally(() => {
        if (closed) return;
        timer = setTimeout(tick, o.intervalMs);
        timer.unref();
      });
  };
  // The first poll at once, then each one an interval after the previous one ended.
  timer = setTimeout(tick, 0);
  timer.unref();
  o.logger.info({ ...where, intervalMs: o.intervalMs }, 'bounce mailbox polling started');

  return {
    poll,
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      await chain;
    },
  };
}
