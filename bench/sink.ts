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
 * each message's Message-ID too; `{ type: 'times', tag }` closes it and answers
 * `{ type: 'times', tag, times, ids }`.
 */
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';

const catcher = await startSmtpCatcher({ host: '127.0.0.1', port: 0, keep: false });
process.stdout.write(`port ${catcher.port}\n`);
const timed = new Map<string, { server: SmtpCatcher; times: number[]; ids: string[] }>();
const now = () => performance.timeOrigin + performance.now();

/** The Message-ID header of a raw message ('' when it has none). */
function messageId(raw: Buffer): string {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end < 0 ? raw.length : end).toString('latin1');
  return /^message-id:\s*(\S+)/im.exec(head)?.[1] ?? '';
}

process.on('message', (msg: { type: string; tag?: string; ids?: boolean }) => {
  if (msg.type === 'count') process.send?.({ type: 'count', accepted: catcher.accepted, received: catcher.received });
  if (msg.type === 'listen') {
    const times: number[] = [];
    const ids: string[] = [];
    const onAccept = msg.ids
      ? (m: { raw: Buffer }) => {
          times.push(now());
          ids.push(messageId(m.raw));
        }
      : () => times.push(now());
    void startSmtpCatcher({ host: '127.0.0.1', port: 0, keep: false, onAccept }).then((server) => {
      timed.set(msg.tag!, { server, times, ids });
      process.send?.({ type: 'listening', tag: msg.tag, port: server.port });
    });
  }
  if (msg.type === 'times') {
    const t = timed.get(msg.tag!);
    timed.delete(msg.tag!);
    void (t ? t.server.stop() : Promise.resolve()).then(() =>
      process.send?.({ type: 'times', tag: msg.tag, times: t?.times ?? [], ids: t?.ids ?? [] }),
    );
  }
  if (msg.type === 'stop') {
    void Promise.all([catcher.stop(), ...[...timed.values()].map((t) => t.server.stop())]).finally(() => process.exit(0));
  }
});
// The parent died: do not linger.
process.on('disconnect', () => process.exit(0));
