/**
 * The SMTP sink, in a process of its own so that its CPU is accounted apart from the engine's: a
 * real smtp-server on loopback (fairsend's SmtpCatcher with `keep: false`: it reads each message
 * and answers 250, without parsing or keeping it).
 *
 * Protocol: prints `port <n>` on stdout once listening; over IPC answers `{ type: 'count' }` with
 * `{ type: 'count', accepted, received }`; `{ type: 'stop' }` closes the servers and exits.
 * Timed listeners, for rates as the receiving server sees them (bench W3): `{ type: 'listen', tag }`
 * opens another server and answers `{ type: 'listening', tag, port }`; it records the instant (ms,
 * sub-millisecond precision) it accepts each message; `{ type: 'times', tag }` closes it and
 * answers `{ type: 'times', tag, times }`.
 */
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';

const catcher = await startSmtpCatcher({ host: '127.0.0.1', port: 0, keep: false });
process.stdout.write(`port ${catcher.port}\n`);
const timed = new Map<string, { server: SmtpCatcher; times: number[] }>();
const now = () => performance.timeOrigin + performance.now();

process.on('message', (msg: { type: string; tag?: string }) => {
  if (msg.type === 'count') process.send?.({ type: 'count', accepted: catcher.accepted, received: catcher.received });
  if (msg.type === 'listen') {
    const times: number[] = [];
    void startSmtpCatcher({ host: '127.0.0.1', port: 0, keep: false, onAccept: () => times.push(now()) }).then((server) => {
      timed.set(msg.tag!, { server, times });
      process.send?.({ type: 'listening', tag: msg.tag, port: server.port });
    });
  }
  if (msg.type === 'times') {
    const t = timed.get(msg.tag!);
    timed.delete(msg.tag!);
    void (t ? t.server.stop() : Promise.resolve()).then(() => process.send?.({ type: 'times', tag: msg.tag, times: t?.times ?? [] }));
  }
  if (msg.type === 'stop') {
    void Promise.all([catcher.stop(), ...[...timed.values()].map((t) => t.server.stop())]).finally(() => process.exit(0));
  }
});
// The parent died: do not linger.
process.on('disconnect', () => process.exit(0));
