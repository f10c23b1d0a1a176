import { generateKeyPairSync } from 'node:crypto';
import type { Engine } from '../src/engine.js';
import { createLogger } from '../services/kernel/logger.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createMetrics } from '../src/http/metrics.js';
import { createHttpServer } from '../src/http/server.js';
import { createToken } from '../services/auth.js';
import { createTestEngine, rows } from './helpers/db.js';
import { LogSink } from './helpers/http.js';
import { resolveSendWorkers, SendWorkerPool } from '../services/delivery/worker-transport.js';
import { classifySendError } from '../services/delivery/classify.js';
import { Keyring } from '../services/kernel/secrets.js';
import { ConfigError } from '../services/kernel/errors.js';
import { loadConfig } from '../services/kernel/config.js';
import { until, userWithContacts } from './helpers/scheduler.js';
import { startSinkProcess } from './helpers/sink.js';
import { preciseNow } from '../services/scheduler/pacer.js';

describe('SEND_WORKERS', () => {
  it('defaults to the number of cores less one, at least 1; 0 keeps SMTP work on the main thread', () => {
    expect(resolveSendWorkers(undefined, 8)).toBe(7);
    expect(resolveSendWorkers(undefined, 2)).toBe(1);
    expect(resolveSendWorkers(undefined, 1)).toBe(1);
    expect(resolveSendWorkers(0, 8)).toBe(0);
    expect(resolveSendWorkers(3, 2)).toBe(3);
    expect(loadConfig({ SEND_WORKERS: '2' }).sendWorkers).toBe(2);
    expect(loadConfig({}).sendWorkers).toBeUndefined();
    expect(() => loadConfig({ SEND_WORKERS: '-1' })).toThrow(ConfigError);
    expect(() => loadConfig({ SEND_WORKERS: 'two' })).toThrow('SEND_WORKERS must be a non-negative integer, got "two"');
  });
});

const CONTACTS = 40;
const DKIM_KEY = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
/** A line of the key's body: it must appear in no log line. */
const KEY_LINE = DKIM_KEY.split('\n')[3]!;

/**
 * SMTP work on two worker threads (SEND_WORKERS=2), against a real SMTP server that answers each
 * message 150 ms after its data, so sends are under way on both threads. Thread 0 dies with its
 * sends under way (process.exit in the thread, or an uncaught error). Nothing may be lost: every
 * message ends sent (at-least-once, resent with the same Message-ID, duplicates at most the sends
 * lost with the thread) or unknown (at-most-once, exactly the lost sends, none ever sent twice).
 * The thread is started again and carries sends, and the crash is logged and counted.
 */
describe.each([
  ['at-least-once', 'exit'],
  ['at-most-once', 'throw'],
] as const)('a send worker thread that dies (%s, %s)', (mode, how) => {
  let engine: Engine;
  let smtp: SmtpCatcher;
  const logs = new LogSink();

  beforeEach(async () => {
    smtp = await startSmtpCatcher({ delayMs: 150 });
    engine = await createTestEngine({
      deliveryMode: mode,
      sendWorkers: 2,
      retryDelayMs: 200,
      schedulerTickMs: 50,
      concurrencyInitial: 4,
      logger: createLogger('debug', logs),
    });
  });
  afterEach(async () => {
    await engine.close();
    await smtp.stop();
  });

  it('loses no message, restarts the thread and reports it', async () => {
    const { userId, contactIds, templateId } = await userWithContacts(engine, 'Ann', CONTACTS);
    const c = await engine.campaigns.create({ userId, name: 'c', from: 'ann@example.test', templates: [templateId], contacts: contactIds });
    await engine.services.create({
      name: 's',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 1000,
      maxConnections: 4,
      dkim: { domainName: 'example.test', keySelector: 'fs', privateKey: DKIM_KEY },
    });
    await engine.scheduler.start();
    const pool = engine.scheduler.sendPool!;
    expect(pool.status().threads).toBe(2);
    // Some messages through, then thread 0 dies with sends under way.
    await until(() => smtp.accepted >= 4, 20_000, 'the first messages');
    pool.crash(0, how);
    await until(() => pool.status().restarts === 1, 10_000, 'the thread restarted');
    const lost = pool.status().lostSends;
    expect(lost).toBeGreaterThan(0);
    const acceptedAtCrash = smtp.accepted;
    await until(async () => (await engine.campaigns.progress(c.id)).status === 'completed', 30_000, 'completion');

    // The database: every message ended, none failed.
    const byStatus = await rows<{ status: string; n: number }>(
      engine.apiDb,
      'SELECT status, count(*)::int AS n FROM subtasks WHERE task_id = $t GROUP BY status ORDER BY status',
      { t: c.id },
    );
    const counts = Object.fromEntries(byStatus.map((r) => [r.status, r.n]));
    // The sink: what each recipient received, and under which Message-ID.
    const received = new Map<string, string[]>();
    for (const m of smtp.messages) received.set(m.envelopeTo[0]!, [...(received.get(m.envelopeTo[0]!) ?? []), m.parsed.messageId!]);
    const duplicates = smtp.messages.length - received.size;
    if (mode === 'at-least-once') {
      expect(counts).toEqual({ sent: CONTACTS });
      expect(received.size).toBe(CONTACTS); // every recipient got it
      expect(duplicates).toBeLessThanOrEqual(lost); // resent: at most the sends lost with the thread
      for (const ids of received.values()) expect(new Set(ids).size).toBe(1); // a duplicate keeps its Message-ID
    } else {
      expect(counts).toEqual({ sent: CONTACTS - lost, unknown: lost }); // the lost ones for review, never resent
      expect(duplicates).toBe(0);
      const sent = await rows<{ email: string }>(
        engine.apiDb,
        "SELECT c.email FROM subtasks s JOIN contacts c ON c.id = s.contact_id WHERE s.task_id = $t AND s.status = 'sent'",
        { t: c.id },
      );
      for (const r of sent) expect(received.has(r.email)).toBe(true);
    }
    // The restarted thread 0 carried sends again (it holds half the connections).
    expect(smtp.accepted).toBeGreaterThan(acceptedAtCrash);
    expect(pool.running).toBe(2);
    // Every message was DKIM-signed in the threads.
    for (const m of smtp.messages) expect(m.raw.toString()).toMatch(/^DKIM-Signature: .*d=example\.test/m);

    // Reported: status, /metrics, the log.
    const status = engine.scheduler.status().sendWorkers;
    expect(status).toMatchObject({ threads: 2, restarts: 1, lostSends: lost, lastCrash: { thread: 0 } });
    const metrics = createMetrics(engine, { queuedCount: () => Promise.resolve(0), processMetrics: false });
    const text = await metrics.registry.metrics();
    metrics.detach();
    expect(text).toMatch(/^fairsend_send_worker_restarts_total 1$/m);
    expect(text).toMatch(new RegExp(`^fairsend_send_worker_lost_sends_total ${lost}$`, 'm'));
    expect(text).toMatch(/^fairsend_send_worker_threads 2$/m);
    const admin = await engine.users.create({ name: 'Admin', email: 'admin@example.test', quota: 1, role: 'admin' });
    const http = await createHttpServer(engine, { logger: createLogger('silent'), processMetrics: false });
    const res = await http.app.inject({
      method: 'GET',
      url: '/api/scheduler/status',
      headers: { authorization: `Bearer ${await createToken(engine, admin.id)}` },
    });
    await http.close();
    expect(res.json<{ send_workers: unknown }>().send_workers).toMatchObject({ threads: 2, restarts: 1, lost_sends: lost });
    const crashLog = logs.lines().find((l) => /send worker thread died/.test(String(l.msg)));
    expect(crashLog).toMatchObject({ level: 50, thread: 0, inFlight: lost, restarted: true });
    // The key went to the threads in memory only.
    expect(logs.text).not.toContain(KEY_LINE);
  });
});

describe('a send worker thread that dies as it starts (a broken install)', () => {
  it('starts again after a growing backoff, and its sends are refused unsent meanwhile', async () => {
    const logs = new LogSink();
    const pool = new SendWorkerPool({
      threads: 1,
      logger: createLogger('error', logs),
      entry: new URL('data:text/javascript,throw new Error("broken install")'),
    });
    const t = pool.transport({ host: '127.0.0.1', port: 9 }, 1, null, new Keyring(undefined));
    try {
      const codes = new Set<string>();
      const started = Date.now();
      while (Date.now() - started < 1500) {
        const err = (await t.sendMail({ from: 'a@example.test', to: 'b@example.test', text: 'x' }).then(
          () => new Error('sent'),
          (e: unknown) => e,
        )) as { code?: string };
        codes.add(String(err.code));
        await new Promise((r) => setTimeout(r, 20));
      }
      // 100 + 200 + 400 + 800 ms of backoff fit in 1.5 s: a handful of starts, not one per send.
      expect(pool.status().restarts).toBeGreaterThanOrEqual(2);
      expect(pool.status().restarts).toBeLessThanOrEqual(6);
      // Refused before any thread had it: a connection failure (never sent), not an ambiguous one.
      expect(codes.has('EWORKERDOWN')).toBe(true);
      expect(codes.has('sent')).toBe(false);
      expect(classifySendError({ code: 'EWORKERDOWN', message: 'down' })).toMatchObject({ kind: 'connection', type: 'worker_down' });
      expect(logs.lines()[0]).toMatchObject({ error: expect.stringContaining('broken install'), restartInMs: 100 });
    } finally {
      t.close();
      await pool.close();
    }
    expect(pool.running).toBe(0);
  });
});

describe('send worker threads at shutdown', () => {
  it('closes every thread and connection', async () => {
    const smtp = await startSmtpCatcher();
    const engine = await createTestEngine({ sendWorkers: 2, schedulerTickMs: 50 });
    try {
      const { userId, contactIds, templateId } = await userWithContacts(engine, 'Bo', 10);
      const c = await engine.campaigns.create({
        userId,
        name: 'c',
        from: 'bo@example.test',
        templates: [templateId],
        contacts: contactIds,
      });
      await engine.services.create({
        name: 's',
        transport: { host: '127.0.0.1', port: smtp.port },
        sendingRate: 0,
        dailyQuota: 1000,
        maxConnections: 4,
      });
      await engine.scheduler.start();
      await until(async () => (await engine.campaigns.progress(c.id)).status === 'completed', 20_000, 'completion');
      const pool = engine.scheduler.sendPool!;
      expect(pool.running).toBe(2);
      const open = () => (smtp as unknown as { server: { connections: Set<unknown> } }).server.connections.size;
      expect(open()).toBeGreaterThan(0);
      await engine.scheduler.stop();
      expect(pool.running).toBe(0);
      // The threads closed their connections (QUIT) before they ended: the server sees them go.
      await until(() => open() === 0, 5000, 'the SMTP connections closed');
    } finally {
      await engine.close();
      await smtp.stop();
    }
  });
});

/**
 * The instant of the server's answer is taken in the thread that sees it: the pacer keeps later
 * sends behind it (scheduler/pacer.ts), and a main thread busy with other work would see it late.
 * The SMTP server runs in its own process, so it answers while this thread is blocked.
 */
describe("a send worker thread's answer instant", () => {
  it('lies between the send and the server’s acceptance plus the way back, not when the busy main thread got to it', async () => {
    const sink = await startSinkProcess();
    const pool = new SendWorkerPool({ threads: 1, logger: createLogger('error', new LogSink()) });
    try {
      const port = await sink.listen('stamp');
      const t = pool.transport({ host: '127.0.0.1', port }, 1, null, new Keyring(undefined));
      const mail = { from: 'a@example.test', to: 'b@example.test', subject: 's', text: 'x' };
      await t.sendMail(mail); // the connection is open: the next send is one transaction
      const before = preciseNow();
      const sent = t.sendMail(mail);
      await Promise.resolve(); // the send is posted to the thread at the end of this turn
      const busyUntil = preciseNow() + 400;
      while (preciseNow() < busyUntil); // this thread is busy while the server answers
      const info = await sent;
      const [, accepted] = await sink.times('stamp');
      expect(typeof info.answeredAt).toBe('number');
      expect(info.answeredAt!).toBeGreaterThanOrEqual(accepted!);
      expect(info.answeredAt!).toBeGreaterThan(before);
      expect(info.answeredAt!).toBeLessThan(busyUntil - 100);
      t.close();
    } finally {
      await pool.close();
      await sink.stop();
    }
  });
});
