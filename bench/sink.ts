/**
 * The SMTP sink, in a process of its own so that its CPU is accounted apart from the engine's: a
 * real smtp-server on loopback (fairsend's SmtpCatcher with `keep: false`: it reads each message
 * and answers 250, without parsing or keeping it).
 *
 * Protocol: prints `port <n>` on stdout once listening; over IPC answers `{ type: 'count' }` with
 * `{ type: 'count', accepted, received }`; `{ type: 'stop' }` closes the servers and exits.
 * Timed listeners, for rates as the receiving server sees them (bench W3): `{ type: 'listen', tag }`
 * opens another server and answers `{ type: 'listening', tag, port }`; it records the instant (ms,
 * sub-millisecond precision) it accepts each message (before its 250 goes out), and with `ids: true`
 * each message's Message-ID too, with `rcpts: true` each message's first recipient (and the
 * instants and recipients of refused RCPTs); `refuse: { domain, after, code, message }` makes it
 * answer RCPTs for that domain with that reply once it has accepted `after` messages for it (a
 * throttling provider, for the deliverability tests), `times` of them when given, then accept again; `{ type: 'times', tag }` closes it and
 * answers `{ type: 'times', tag, times, ids, rcpts, refusals }`.
 */
import { startSmtpCatcher, type SmtpCatcher, type SmtpCatcherOptions } from '../src/smtp-catcher.js';

const catcher = await startSmtpCatcher({ host: '127.0.0.1', port: 0, keep: false });
process.stdout.write(`port ${catcher.port}\n`);
interface Timed {
  server: SmtpCatcher;
  times: number[];
  ids: string[];
  rcpts: string[];
  refusals: { at: number; rcpt: string }[];
}
const timed = new Map<string, Timed>();
const now = () => performance.timeOrigin + performance.now();

/** The Message-ID header of a raw message ('' when it has none). */
function messageId(raw: Buffer): string {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end < 0 ? raw.length : end).toString('latin1');
  return /^message-id:\s*(\S+)/im.exec(head)?.[1] ?? '';
}

interface Refuse {
  domain: string;
  after: number;
  code: number;
  message: string;
  /** Refuse this many RCPTs, then accept again (default: refuse from then on). */
  times?: number;
}
const domainOf = (a: string) => a.slice(a.lastIndexOf('@') + 1).toLowerCase();

process.on('message', (msg: { type: string; tag?: string; ids?: boolean; rcpts?: boolean; refuse?: Refuse }) => {
  if (msg.type === 'count') process.send?.({ type: 'count', accepted: catcher.accepted, received: catcher.received });
  if (msg.type === 'listen') {
    const times: number[] = [];
    const ids: string[] = [];
    const rcpts: string[] = [];
    const refusals: { at: number; rcpt: string }[] = [];
    const refuse = msg.refuse;
    let acceptedForRefused = 0;
    let refused = 0;
    const onAccept =
      msg.ids || msg.rcpts || refuse
        ? (m: { raw: Buffer; to: string[] }) => {
            times.push(now());
            if (msg.ids) ids.push(messageId(m.raw));
            if (msg.rcpts) rcpts.push(m.to[0] ?? '');
            if (refuse && domainOf(m.to[0] ?? '') === refuse.domain) acceptedForRefused++;
          }
        : () => times.push(now());
    const opts: SmtpCatcherOptions = { host: '127.0.0.1', port: 0, keep: false, onAccept };
    if (refuse) {
      opts.rcptReply = (address) => {
        if (domainOf(address) !== refuse.domain || acceptedForRefused < refuse.after) return undefined;
        if (refuse.times !== undefined && refused >= refuse.times) return undefined;
        refused++;
        if (msg.rcpts) refusals.push({ at: now(), rcpt: address });
        return { code: refuse.code, message: refuse.message };
      };
    }
    void startSmtpCatcher(opts).then((server) => {
      timed.set(msg.tag!, { server, times, ids, rcpts, refusals });
      process.send?.({ type: 'listening', tag: msg.tag, port: server.port });
    });
  }
  if (msg.type === 'times') {
    const t = timed.get(msg.tag!);
    timed.delete(msg.tag!);
    void (t ? t.server.stop() : Promise.resolve()).then(() =>
      process.send?.({
        type: 'times',
        tag: msg.tag,
        times: t?.times ?? [],
        ids: t?.ids ?? [],
        rcpts: t?.rcpts ?? [],
        refusals: t?.refusals ?? [],
      }),
    );
  }
  if (msg.type === 'stop') {
    void Promise.all([catcher.stop(), ...[...timed.values()].map((t) => t.server.stop())]).finally(() => process.exit(0));
  }
});
// The parent died: do not linger.
process.on('disconnect', () => process.exit(0));
