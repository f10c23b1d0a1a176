/**
 * The SMTP sink, in a process of its own so that its CPU is accounted apart from the engine's: a
 * real smtp-server on loopback (fairsend's SmtpCatcher with `keep: false`: it reads each message
 * and answers 250, without parsing or keeping it).
 *
 * Protocol: prints `port <n>` on stdout once listening; over IPC answers `{ type: 'count' }` with
 * `{ type: 'count', accepted, received }`; `{ type: 'stop' }` closes the server and exits.
 */
import { startSmtpCatcher } from '../src/smtp-catcher.js';

const catcher = await startSmtpCatcher({ host: '127.0.0.1', port: 0, keep: false });
process.stdout.write(`port ${catcher.port}\n`);

process.on('message', (msg: { type: string }) => {
  if (msg.type === 'count') process.send?.({ type: 'count', accepted: catcher.accepted, received: catcher.received });
  if (msg.type === 'stop') void catcher.stop().finally(() => process.exit(0));
});
// The parent died: do not linger.
process.on('disconnect', () => process.exit(0));
