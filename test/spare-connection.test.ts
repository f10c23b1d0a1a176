/**
 * The warm spare connection (services/delivery/spare-connection.ts) against a real SMTP server on
 * loopback (smtp-server, which delays its greeting by 100 ms as servers do): a message never waits
 * for a new connection's set-up while the pool is under maxConnections, the pool never exceeds
 * maxConnections, and a server that refuses extra connections sees one attempt per backoff.
 */
import { describe, expect, it, afterEach } from '@jest/globals';
import { SMTPServer } from 'smtp-server';
import nodemailer, { type Transporter } from 'nodemailer';
import type { AddressInfo } from 'node:net';
import { keepSpareConnection, SPARE_BACKOFF_MS } from '../services/delivery/spare-connection.js';
import { createServiceTransport } from '../services/delivery/transport.js';
import { until } from './helpers/scheduler.js';

interface Seen {
  /** Session id and instant (performance.now()) of each connection the server took. */
  connects: { id: string; at: number }[];
  /** Session id that carried each message, by subject. */
  carriedBy: Map<string, string>;
  closed: number;
}

async function startServer(
  opts: {
    acceptConnections?: number;
    holdGreeting?: (n: number) => Promise<void>;
    /** Holds the server's reply to the message with this subject until the promise resolves. */
    holdReply?: { subject: string; until: Promise<void>; arrived: () => void };
  } = {},
): Promise<{ server: SMTPServer; port: number; seen: Seen }> {
  const seen: Seen = { connects: [], carriedBy: new Map(), closed: 0 };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onConnect(session, cb) {
      seen.connects.push({ id: session.id, at: performance.now() });
      if (opts.acceptConnections !== undefined && seen.connects.length > opts.acceptConnections) {
        return cb(Object.assign(new Error('Too many connections from your host'), { responseCode: 421 }));
      }
      if (opts.holdGreeting) void opts.holdGreeting(seen.connects.length).then(() => cb());
      else cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const subject = /^Subject: (.*)$/m.exec(Buffer.concat(chunks).toString())?.[1]?.trim() ?? '';
        seen.carriedBy.set(subject, session.id);
        if (opts.holdReply?.subject === subject) {
          opts.holdReply.arrived();
          void opts.holdReply.until.then(() => cb());
        } else cb();
      });
    },
    onClose() {
      seen.closed++;
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.server.address() as AddressInfo).port, seen };
}

const open: { server: SMTPServer; transport: Transporter }[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) {
    o.transport.close();
    await new Promise<void>((r) => o.server.close(() => r()));
  }
});

const mail = (subject: string) => ({ from: 'a@sender.example', to: 'b@receiver.example', subject, text: 'hello' });

function pool(port: number, maxConnections: number): Transporter {
  return nodemailer.createTransport({ pool: true, host: '127.0.0.1', port, maxConnections, maxMessages: Infinity, logger: false });
}

describe('warm spare connection', () => {
  it('opens one connection beyond those in use, so a second concurrent message does not wait for a greeting', async () => {
    const { server, port, seen } = await startServer();
    const transport = pool(port, 3);
    open.push({ server, transport });
    const stats = keepSpareConnection(transport)!;
    expect(stats).not.toBeNull();

    await transport.sendMail(mail('first'));
    expect(stats.opened).toBe(0); // the first message opens the pool's first connection itself
    await transport.sendMail(mail('second, alone'));
    // It found that connection idle and took it: the spare opened beside it.
    await until(() => stats.ready === 1, 5000, 'the spare to be greeted');
    expect(seen.connects).toHaveLength(2);

    const submitted = performance.now();
    await Promise.all([transport.sendMail(mail('second')), transport.sendMail(mail('third'))]);
    // Both went over connections the server had taken before they were submitted: neither waited
    // for a connection's set-up (without the spare, 'third' opens a new connection after submit).
    for (const subject of ['second', 'third']) {
      const session = seen.carriedBy.get(subject)!;
      const connect = seen.connects.find((c) => c.id === session)!;
      expect(connect.at).toBeLessThan(submitted);
    }
    expect(seen.carriedBy.get('second')).not.toBe(seen.carriedBy.get('third'));
    // Both connections were busy at once, so a third (the new spare) opened: never beyond maxConnections.
    await until(() => stats.ready === 2, 5000, 'the next spare');
    await Promise.all(['4', '5', '6', '7'].map((s) => transport.sendMail(mail(s))));
    expect(seen.connects.length).toBeLessThanOrEqual(3);
  });

  it('while the spare is being greeted, a message that finds no idle connection waits for it instead of opening another', async () => {
    let greet!: () => void;
    const greeting = new Promise<void>((r) => (greet = r));
    let reply!: () => void;
    let arrived!: () => void;
    const threeArrived = new Promise<void>((r) => (arrived = r));
    const { server, port, seen } = await startServer({
      holdGreeting: (n) => (n === 2 ? greeting : Promise.resolve()),
      holdReply: { subject: 'three', until: new Promise<void>((r) => (reply = r)), arrived },
    });
    const transport = pool(port, 4);
    open.push({ server, transport });
    const stats = keepSpareConnection(transport)!;
    await transport.sendMail(mail('one'));
    await transport.sendMail(mail('two')); // opens the spare, whose greeting the server holds
    await until(() => seen.connects.length === 2, 5000, 'the spare connection');
    // 'three' holds the one open connection; 'four' finds none idle while the spare is greeted.
    const three = transport.sendMail(mail('three'));
    const four = transport.sendMail(mail('four'));
    await threeArrived;
    greet();
    await four;
    reply();
    await three;
    // 'four' waited for the spare (the second connection) instead of a third one opened for it.
    expect(seen.carriedBy.get('four')).toBe(seen.connects[1]!.id);
    expect(seen.connects).toHaveLength(2);
    expect(stats).toMatchObject({ opened: 1, ready: 1, failed: 0 });
  });

  it('opens no spare when maxConnections is 1', async () => {
    const { server, port, seen } = await startServer();
    const transport = pool(port, 1);
    open.push({ server, transport });
    const stats = keepSpareConnection(transport)!;
    for (const s of ['a', 'b', 'c']) await transport.sendMail(mail(s));
    expect(stats.opened).toBe(0);
    expect(seen.connects).toHaveLength(1);
  });

  it('backs off after a refused spare: one attempt per backoff, and the sends go on', async () => {
    const { server, port, seen } = await startServer({ acceptConnections: 1 });
    const transport = pool(port, 3);
    open.push({ server, transport });
    let now = 1_000_000;
    const stats = keepSpareConnection(transport, { now: () => now })!;
    // m0 opens the pool's first connection; m1 finds it idle and opens a spare, which is refused.
    for (let i = 0; i <= 5; i++) await transport.sendMail(mail(`m${i}`));
    await until(() => stats.failed === 1, 5000, 'the refused spare');
    // Every message went over the one accepted connection; the server saw one refused attempt, not six.
    expect(seen.carriedBy.size).toBe(6);
    expect(new Set(seen.carriedBy.values()).size).toBe(1);
    expect(seen.connects).toHaveLength(2);
    expect(stats.opened).toBe(1);

    now += SPARE_BACKOFF_MS;
    await transport.sendMail(mail('after backoff'));
    await until(() => stats.failed === 2, 5000, 'the second refused spare');
    expect(seen.connects).toHaveLength(3);
  });

  it('is installed on every service transport, and closing the transport closes the spare', async () => {
    let greet!: () => void;
    const held = new Promise<void>((r) => (greet = r));
    // The spare's greeting is held until the transport is closed: it closes while being opened.
    const { server, port, seen } = await startServer({ holdGreeting: (n) => (n === 2 ? held : Promise.resolve()) });
    const transport = createServiceTransport({ host: '127.0.0.1', port }, 2, null);
    open.push({ server, transport });
    await transport.sendMail(mail('one'));
    await transport.sendMail(mail('two'));
    await until(() => seen.connects.length === 2, 5000, 'the spare connection');
    transport.close();
    greet();
    await until(() => seen.closed === 2, 5000, 'both connections to close');
  });
});
