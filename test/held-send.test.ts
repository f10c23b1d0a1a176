/**
 * Held sends (services/delivery/held-send.ts) against a real SMTP server on loopback: a held
 * message is at the server but for its end, and the server accepts nothing until the release; a
 * dropped one is never accepted; failures before the release read as never delivered unless a
 * reply code says more; DKIM signs a held message byte for byte as nodemailer's own option does.
 * The same through a send worker thread, including a thread that dies while a send is held.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { SMTPServer } from 'smtp-server';
import nodemailer, { type Transporter } from 'nodemailer';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { createServiceTransport, DKIM_HEADER_FIELDS, localTransport } from '../services/delivery/transport.js';
import { HeldDropError, HeldEnd } from '../services/delivery/held-send.js';
import { classifySendError } from '../services/delivery/classify.js';
import { SendWorkerPool } from '../services/delivery/worker-transport.js';
import { Keyring } from '../services/kernel/secrets.js';
import { createLogger } from '../services/kernel/logger.js';
import { until } from './helpers/scheduler.js';

interface Server {
  server: SMTPServer;
  port: number;
  /** Bytes of DATA received so far, over every session. */
  dataBytes: number;
  /** Messages whose end of data arrived (the server accepted or refused them), raw. */
  accepted: Buffer[];
  /** Sessions closed. */
  closed: number;
  /** DATA streams cut before their end. */
  cut: number;
  /** The server's sockets, to cut them. */
  sockets: Set<{ destroy(): void }>;
}

async function startServer(opts: { rejectRcpt?: string } = {}): Promise<Server> {
  const s: Server = {
    server: undefined as unknown as SMTPServer,
    port: 0,
    dataBytes: 0,
    accepted: [],
    closed: 0,
    cut: 0,
    sockets: new Set(),
  };
  s.server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onConnect(session, cb) {
      cb();
    },
    onRcptTo(address, _session, cb) {
      if (address.address === opts.rejectRcpt) return cb(Object.assign(new Error('5.1.1 No such user'), { responseCode: 550 }));
      cb();
    },
    onData(stream, _session, cb) {
      const chunks: Buffer[] = [];
      let ended = false;
      stream.on('data', (c: Buffer) => {
        chunks.push(c);
        s.dataBytes += c.length;
      });
      stream.on('end', () => {
        ended = true;
        s.accepted.push(Buffer.concat(chunks));
        cb();
      });
      stream.on('close', () => {
        if (!ended) s.cut++;
      });
    },
    onClose() {
      s.closed++;
    },
  });
  await new Promise<void>((resolve) => s.server.listen(0, '127.0.0.1', resolve));
  s.server.server.on('connection', (socket: { destroy(): void }) => s.sockets.add(socket));
  s.port = (s.server.server.address() as AddressInfo).port;
  return s;
}

const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

function mail(n: number, to = 'rcpt@example.test') {
  return {
    from: 'sender@example.test',
    to,
    subject: `held ${n}`,
    text: `body ${n}\r\n.a line with a leading dot\r\n`,
    messageId: `<held-${n}@example.test>`,
    date: new Date('2026-12-01T10:00:00Z'),
  };
}

async function serverWith(opts: { rejectRcpt?: string } = {}) {
  const s = await startServer(opts);
  stops.push(() => new Promise<void>((r) => s.server.close(() => r())));
  return s;
}

function transportTo(port: number, dkim: { domainName: string; keySelector: string; privateKey: string } | null = null) {
  const t = createServiceTransport({ host: '127.0.0.1', port, secure: false, tls: { rejectUnauthorized: false } }, 2, dkim);
  stops.push(() => t.close());
  return t;
}

describe('HeldEnd, the gate, as a stream', () => {
  function into() {
    const seen = { data: '', ended: false };
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        seen.data += chunk.toString();
        cb();
      },
      final(cb) {
        seen.ended = true;
        cb();
      },
    });
    return { sink, seen };
  }

  it('hands every chunk on and keeps back only the end, until released', async () => {
    const gate = new HeldEnd();
    const { sink, seen } = into();
    gate.pipe(sink);
    gate.write('abc');
    gate.end('def');
    await gate.held;
    await new Promise((r) => setImmediate(r));
    expect(seen).toEqual({ data: 'abcdef', ended: false });
    expect(gate.wasReleased).toBe(false);
    gate.release();
    await finished(sink);
    expect(seen).toEqual({ data: 'abcdef', ended: true });
    expect(gate.wasReleased).toBe(true);
    // Nothing after the release changes it: a drop then is no drop.
    const errors: unknown[] = [];
    gate.on('error', (e) => errors.push(e));
    gate.discard();
    gate.release();
    await new Promise((r) => setImmediate(r));
    expect(errors).toEqual([]);
    expect(gate.wasReleased).toBe(true);
  });

  it('is not held before it is piped (nodemailer pipes it after the server says 354)', async () => {
    const gate = new HeldEnd();
    let held = false;
    void gate.held.then(() => (held = true));
    gate.end('all of it');
    // Several turns of the loop: the input has ended, but nothing took it yet.
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    expect(held).toBe(false);
    const { sink, seen } = into();
    gate.pipe(sink);
    await gate.held;
    expect(seen.ended).toBe(false);
  });

  it('a release while still building lets the end go as soon as the input ends', async () => {
    const gate = new HeldEnd();
    const { sink, seen } = into();
    gate.pipe(sink);
    gate.write('early');
    gate.release();
    gate.end();
    await finished(sink);
    expect(seen).toEqual({ data: 'early', ended: true });
  });

  it('a drop destroys it with HeldDropError, and the end never goes', async () => {
    const gate = new HeldEnd();
    const { sink, seen } = into();
    gate.pipe(sink);
    gate.end('body');
    await gate.held;
    const error = new Promise<unknown>((r) => gate.once('error', r));
    gate.discard();
    expect(await error).toBeInstanceOf(HeldDropError);
    gate.release();
    await new Promise((r) => setImmediate(r));
    expect(seen.ended).toBe(false);
    expect(gate.wasReleased).toBe(false);
  });
});

describe('held sends, in this thread', () => {
  it('has everything but the end at the server while held, and is accepted once released', async () => {
    const s = await serverWith();
    const t = localTransport(transportTo(s.port));
    const h = t.hold(mail(1));
    await h.held;
    // The envelope and every byte of the body reached the server's DATA stream; no end of data.
    await until(() => s.dataBytes > 0, 5000, 'the body at the server');
    const before = s.dataBytes;
    // A round trip to the server and back through this process: still nothing accepted.
    const probe = await t.sendMail(mail(2));
    expect(probe.response).toMatch(/^250/);
    expect(s.accepted.map((m) => /^Subject: (.*)$/m.exec(m.toString())?.[1])).toEqual(['held 2']);
    expect(s.dataBytes).toBeGreaterThanOrEqual(before);
    h.release();
    const info = await h.result;
    expect(info.response).toMatch(/^250/);
    expect(s.accepted).toHaveLength(2);
    const held = s.accepted[1]!.toString();
    expect(held).toMatch(/^Subject: held 1$/m);
    // The body whole, its leading dot un-stuffed by the server: nothing lost or doubled at the end.
    expect(held).toMatch(/body 1\r\n\.a line with a leading dot\r\n$/);
  });

  it('a large message is held once its bytes have drained to the socket, and arrives whole', async () => {
    const s = await serverWith();
    const t = localTransport(transportTo(s.port));
    const line = 'z'.repeat(76) + '\r\n';
    const big = { ...mail(11), text: line.repeat(40_000) }; // about 3 MB
    const h = t.hold(big);
    await h.held;
    await until(() => s.dataBytes >= 3_000_000, 10_000, 'the body at the server');
    expect(s.accepted).toHaveLength(0);
    h.release();
    await h.result;
    expect(s.accepted).toHaveLength(1);
    // Every character of the body (however the lines were encoded), and no other 'z'.
    expect(s.accepted[0]!.toString().split('z').length - 1).toBe(40_000 * 76);
  });

  it('a dropped send is never accepted: its connection closes before the end, and the next send goes', async () => {
    const s = await serverWith();
    const t = localTransport(transportTo(s.port));
    const h = t.hold(mail(3));
    await h.held;
    h.drop();
    const err = (await h.result.catch((e: unknown) => e)) as Error & { unreleased?: boolean };
    expect(err).toBeInstanceOf(Error);
    expect(err.unreleased).toBe(true);
    expect(classifySendError(err)).toMatchObject({ kind: 'connection', type: 'unreleased' });
    await until(() => s.cut === 1, 5000, 'the server dropping the cut message');
    expect(s.accepted).toHaveLength(0);
    // A release after the drop changes nothing.
    h.release();
    expect((await t.sendMail(mail(4))).response).toMatch(/^250/);
    expect(s.accepted).toHaveLength(1);
  });

  it('a connection lost while held reads as never delivered', async () => {
    const s = await serverWith();
    const t = localTransport(transportTo(s.port));
    const h = t.hold(mail(5));
    await h.held;
    expect(s.sockets.size).toBeGreaterThan(0);
    for (const socket of s.sockets) socket.destroy();
    const err = (await h.result.catch((e: unknown) => e)) as Error & { unreleased?: boolean };
    expect(err.unreleased).toBe(true);
    expect(classifySendError(err)).toMatchObject({ kind: 'connection', type: 'unreleased', serviceFault: true });
    expect(s.accepted).toHaveLength(0);
  });

  it('a refused recipient fails the hold itself, and its reply code decides (a bounce, not a connection failure)', async () => {
    const s = await serverWith({ rejectRcpt: 'gone@example.test' });
    const t = localTransport(transportTo(s.port));
    const h = t.hold(mail(6, 'gone@example.test'));
    const held = await h.held.then(
      () => 'held',
      (e: unknown) => e,
    );
    expect(held).toMatchObject({ responseCode: 550, unreleased: true });
    expect(classifySendError(held)).toMatchObject({ kind: 'permanent', bounce: true, type: 'smtp_550' });
    await expect(h.result).rejects.toMatchObject({ responseCode: 550 });
    expect(s.dataBytes).toBe(0);
  });

  it('signs a held message with DKIM byte for byte as nodemailer`s own dkim option does', async () => {
    const s = await serverWith();
    const privateKey = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
    const dkim = { domainName: 'example.test', keySelector: 'fs', privateKey };
    const t = localTransport(transportTo(s.port, dkim));
    const h = t.hold(mail(7));
    await h.held;
    h.release();
    await h.result;
    const native: Transporter = nodemailer.createTransport({
      host: '127.0.0.1',
      port: s.port,
      ignoreTLS: true,
      dkim: { ...dkim, headerFieldNames: DKIM_HEADER_FIELDS },
    });
    stops.push(() => native.close());
    await native.sendMail(mail(7));
    expect(s.accepted).toHaveLength(2);
    expect(s.accepted[0]!.toString()).toMatch(/^DKIM-Signature: .*d=example\.test/m);
    expect(s.accepted[0]!.equals(s.accepted[1]!)).toBe(true);
  });
});

describe('held sends, on a send worker thread', () => {
  /** A worker pool of one thread and a transport on it to the server, with `connections` connections. */
  function onThread(port: number, connections: number) {
    const pool = new SendWorkerPool({ threads: 1, logger: createLogger('silent') });
    stops.push(() => pool.close());
    const transport = pool.transport(
      { host: '127.0.0.1', port, secure: false, tls: { rejectUnauthorized: false } },
      connections,
      null,
      new Keyring(undefined),
    );
    return { pool, transport };
  }

  it('holds, releases and answers; a dropped one is never accepted', async () => {
    const s = await serverWith();
    const { transport: t } = onThread(s.port, 2);
    const a = t.hold(mail(8));
    const b = t.hold(mail(9));
    await Promise.all([a.held, b.held]);
    expect(s.accepted).toHaveLength(0);
    b.drop();
    a.release();
    const info = await a.result;
    expect(info.response).toMatch(/^250/);
    expect(typeof info.answeredAt).toBe('number');
    const err = await b.result.catch((e: unknown) => e);
    expect(classifySendError(err)).toMatchObject({ kind: 'connection', type: 'unreleased' });
    expect(s.accepted.map((m) => /^Subject: (.*)$/m.exec(m.toString())?.[1])).toEqual(['held 8']);
  });

  it('a thread that dies while a send is held fails it as never delivered, not ambiguous', async () => {
    const s = await serverWith();
    const { pool: p, transport: t } = onThread(s.port, 1);
    const h = t.hold(mail(10));
    await h.held;
    p.crash(0, 'exit');
    const err = await h.result.catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EWORKER', unreleased: true });
    expect(classifySendError(err)).toMatchObject({ kind: 'connection', type: 'worker_unreleased', serviceFault: false });
    await until(() => s.cut === 1, 5000, 'the server dropping the cut message');
    expect(s.accepted).toHaveLength(0);
  });
});
