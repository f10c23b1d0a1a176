/**
 * Bounces from a mailbox (BOUNCE_IMAP_URL): a real IMAP server (Debian's Dovecot, started by the
 * test in a temporary folder) holds a Postfix DSN and an ARF report (test/fixtures/bounces/); the
 * engine's poller takes them through the same pipeline as the SMTP listener and marks the right
 * contact and campaign. Autoreplies and forged tokens are kept for review; every handled message is
 * flagged \Seen; a message whose handling failed stays unseen for the next poll; the mailbox
 * password is never logged.
 */
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { ImapFlow } from 'imapflow';
import type { Engine } from '../src/engine.js';
import { verpToken } from '../services/inbound/verp.js';
import { envelopeRecipients, parseImapUrl, startImapPoller } from '../services/inbound/imap-poller.js';
import { createLogger } from '../services/kernel/logger.js';
import { loadConfig } from '../services/kernel/config.js';
import { createTestEngine, rows } from './helpers/db.js';
import { startDovecot, type TestDovecot } from './helpers/dovecot.js';

const SECRET = 'test-bounce-secret-0123456789';
const fixture = (name: string) => readFileSync(new URL(`./fixtures/bounces/${name}`, import.meta.url), 'latin1');
const FIXTURE_TOKEN_345 = verpToken(SECRET, 12, 345);
const HOUR = 3_600_000;

describe('BOUNCE_IMAP_URL (unit)', () => {
  it('reads imap and imaps URLs, with encoded user and password and a mailbox', () => {
    expect(parseImapUrl('imaps://bounces%40news.example:p%40ss%2Fw@mail.example/Bounces%2FFBL')).toEqual({
      host: 'mail.example',
      port: 993,
      secure: true,
      user: 'bounces@news.example',
      pass: 'p@ss/w',
      mailbox: 'Bounces/FBL',
    });
    expect(parseImapUrl('imap://u:p@[::1]:1143')).toMatchObject({ host: '::1', port: 1143, secure: false, mailbox: 'INBOX' });
    expect(() => parseImapUrl('https://u:p@mail.example/INBOX')).toThrow(/must start with imap:\/\/ or imaps:\/\//);
    expect(() => parseImapUrl('imaps://mail.example/INBOX')).toThrow(/has no user/);
  });

  it('refuses a bad URL at start-up without repeating it (it holds a password)', () => {
    let message = '';
    try {
      loadConfig({ BOUNCE_IMAP_URL: 'pop3://u:hunter2secret@mail.example/' });
    } catch (err) {
      message = JSON.stringify(err) + String((err as Error).message);
    }
    expect(message).toMatch(/BOUNCE_IMAP_URL must start with imap:\/\/ or imaps:\/\//);
    expect(message).not.toContain('hunter2secret');
  });

  it('takes envelope recipients from Delivered-To / X-Original-To, else To', () => {
    const raw = (s: string) => Buffer.from(s.replace(/\n/g, '\r\n'));
    expect(
      envelopeRecipients(
        raw(
          'Delivered-To: bounce+a.b.c@bounce.example\nX-Original-To: <fbl@bounce.example>\nTo: x@y.example\n\nDelivered-To: not@body.example\n',
        ),
      ),
    ).toEqual(['bounce+a.b.c@bounce.example', 'fbl@bounce.example']);
    expect(envelopeRecipients(raw('To: "Bounces" <bounce+q@bounce.example>,\n other@bounce.example\n\nbody\n'))).toEqual([
      'bounce+q@bounce.example',
      'other@bounce.example',
    ]);
  });
});

describe('bounce mailbox poller (IMAP, Dovecot)', () => {
  let dovecot: TestDovecot;
  let engine: Engine;
  let imap: ImapFlow;
  let userId: number;
  let taskId: number;
  const contact: Record<string, number> = {};
  let logged = '';

  beforeAll(async () => {
    dovecot = await startDovecot();
    const logger = createLogger(
      'debug',
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          logged += chunk.toString();
          cb();
        },
      }),
    );
    engine = await createTestEngine({
      logger,
      bounceImapUrl: dovecot.url(),
      bounceImapIntervalMs: HOUR, // the test polls; the timer's only poll is the first, on an empty mailbox
      bounceDomain: 'bounce.example',
      bounceSecret: SECRET,
    });
    userId = (await engine.users.create({ name: 'News', email: 'news@news.example', quota: 100 })).id;
    const made = await engine.contacts.bulkCreate(userId, [
      { email: 'gone@example.net' },
      { email: 'angry@example.org' },
      { email: 'fine@example.org' },
    ]);
    ['gone', 'angry', 'fine'].forEach((n, i) => (contact[n] = made.ids[i]!));
    const tpl = await engine.templates.create(userId, { name: 't', subject: 'November news', text: 'Hello' });
    taskId = (
      await engine.campaigns.create({ userId, name: 'nov', from: 'news@news.example', templates: [tpl.id], recipientRule: { type: 'all' } })
    ).id;
    await engine.scheduler.processScheduledTasks();
    imap = new ImapFlow({
      host: dovecot.host,
      port: dovecot.port,
      secure: false,
      auth: { user: dovecot.user, pass: dovecot.password },
      logger: false,
    });
    await imap.connect();
  }, 60_000);
  afterAll(async () => {
    await imap?.logout().catch(() => undefined);
    await engine?.close();
    await dovecot?.stop();
  });

  const contactStatus = async (id: number) =>
    (await rows<{ status: string }>(engine.apiDb, 'SELECT status FROM contacts WHERE id = $id', { id }))[0]!.status;
  const unseen = async () => {
    const lock = await imap.getMailboxLock('INBOX');
    try {
      await imap.noop(); // lets the server tell this session what the poller's session changed
      return ((await imap.search({ seen: false }, { uid: true })) || []).length;
    } finally {
      lock.release();
    }
  };
  /** As the bounce domain's mail server delivers into the mailbox: with Delivered-To on top. */
  const append = (raw: string, deliveredTo?: string) =>
    imap.append('INBOX', Buffer.from(`${deliveredTo ? `Delivered-To: ${deliveredTo}\r\n` : ''}${raw.replace(/\r?\n/g, '\r\n')}`));

  it('a Postfix DSN and an ARF report in the mailbox mark the right contact and campaign, and are flagged seen', async () => {
    const gone = verpToken(SECRET, taskId, contact.gone!);
    const angry = verpToken(SECRET, taskId, contact.angry!);
    await append(fixture('postfix-hard-5.1.1.eml').replaceAll(FIXTURE_TOKEN_345, gone), `bounce+${gone}@bounce.example`);
    await append(fixture('arf-abuse.eml').replaceAll('TOKEN', angry), 'fbl@bounce.example');
    expect(await unseen()).toBe(2);

    expect(await engine.inbound.pollImap()).toEqual({ found: 2, recorded: 2, review: 0, failed: 0 });

    expect(await contactStatus(contact.gone!)).toBe('bounced');
    expect(await contactStatus(contact.angry!)).toBe('unsubscribed');
    expect(await contactStatus(contact.fine!)).toBe('active');
    const ev = await rows(engine.apiDb, 'SELECT type, task_id, contact_id, status_code, source FROM bounce_events ORDER BY id');
    expect(ev).toEqual([
      { type: 'hard_bounce', task_id: String(taskId), contact_id: String(contact.gone), status_code: '5.1.1', source: 'imap:dsn' },
      { type: 'complaint', task_id: String(taskId), contact_id: String(contact.angry), status_code: null, source: 'imap:arf' },
    ]);
    const [t] = await rows(engine.apiDb, 'SELECT hard_bounce_count, complaint_count FROM tasks WHERE id = $id', { id: taskId });
    expect(t).toEqual({ hard_bounce_count: 1, complaint_count: 1 });
    expect(await engine.suppressions.isSuppressed(userId, 'gone@example.net')).toBe(true);
    expect((await engine.suppressions.list({ userId, email: 'angry@example.org' })).items[0]).toMatchObject({
      reason: 'complaint',
      source: 'imap:arf',
    });
    const queued = await rows(engine.apiDb, 'SELECT contact_id, status FROM subtasks WHERE task_id = $t ORDER BY contact_id', {
      t: taskId,
    });
    expect(queued).toEqual([
      { contact_id: String(contact.gone), status: 'cancelled' },
      { contact_id: String(contact.angry), status: 'cancelled' },
      { contact_id: String(contact.fine), status: 'queued' },
    ]);

    // Flagged \Seen: the next poll finds nothing and applies nothing twice.
    expect(await unseen()).toBe(0);
    expect(await engine.inbound.pollImap()).toEqual({ found: 0, recorded: 0, review: 0, failed: 0 });
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM bounce_events')).toEqual([{ n: 2 }]);

    // An engine that stopped after applying the reports but before flagging them: they are unseen
    // again, the next poll reads them again, and applies nothing twice (keyed by their Message-ID).
    const lock = await imap.getMailboxLock('INBOX');
    try {
      await imap.messageFlagsRemove('1:*', ['\\Seen']);
    } finally {
      lock.release();
    }
    expect(await unseen()).toBe(2);
    expect(await engine.inbound.pollImap()).toMatchObject({ found: 2, failed: 0 });
    expect(await unseen()).toBe(0);
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM bounce_events')).toEqual([{ n: 2 }]);
    const [again] = await rows(engine.apiDb, 'SELECT hard_bounce_count, complaint_count FROM tasks WHERE id = $id', { id: taskId });
    expect(again).toEqual({ hard_bounce_count: 1, complaint_count: 1 });
  });

  it('keeps an autoreply and a forged token for review, exactly as the listener does, changing nothing', async () => {
    const before = await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM bounce_events');
    const forged = verpToken('not-the-secret-0123456789', taskId, contact.fine!);
    await append(fixture('postfix-hard-5.1.1.eml').replaceAll(FIXTURE_TOKEN_345, forged), `bounce+${forged}@bounce.example`);
    await append(
      'From: fine@example.org\nTo: news@news.example\nSubject: Out of office\nAuto-Submitted: auto-replied\n\nI am away until Monday.\n',
      `bounce+${verpToken(SECRET, taskId, contact.fine!)}@bounce.example`,
    );
    expect(await engine.inbound.pollImap()).toEqual({ found: 2, recorded: 0, review: 2, failed: 0 });
    expect(await contactStatus(contact.fine!)).toBe('active');
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM bounce_events')).toEqual(before);
    const review = await engine.bounces.review();
    expect(review.map((r) => [r.source, r.reason])).toEqual([
      ['imap', 'autoreply (Auto-Submitted / X-Autoreply / Precedence), not a report'],
      ['imap', 'forged or altered VERP token: refused'],
    ]);
    expect(review[1]).toMatchObject({ subject: 'Undelivered Mail Returned to Sender', envelopeTo: `bounce+${forged}@bounce.example` });
    expect(await unseen()).toBe(0);
  });

  it('leaves a message unseen when it could not be handled, and the next poll takes it', async () => {
    const logger = createLogger('silent');
    const failing = startImapPoller({
      url: dovecot.url(),
      intervalMs: HOUR,
      logger,
      handle: () => Promise.reject(new Error('database away')),
    });
    try {
      const gone = verpToken(SECRET, taskId, contact.fine!);
      await append(fixture('postfix-hard-5.1.1.eml').replaceAll(FIXTURE_TOKEN_345, gone), `bounce+${gone}@bounce.example`);
      const r = await failing.poll();
      expect(r).toMatchObject({ recorded: 0, review: 0 });
      expect(r.failed).toBeGreaterThanOrEqual(1);
      expect(await unseen()).toBe(1);
    } finally {
      await failing.close();
    }
    expect(await contactStatus(contact.fine!)).toBe('active');
    expect(await engine.inbound.pollImap()).toEqual({ found: 1, recorded: 1, review: 0, failed: 0 });
    expect(await contactStatus(contact.fine!)).toBe('bounced');
    expect(await unseen()).toBe(0);
  });

  it('a failing mailbox (wrong password) is a rejected poll; the password is never logged', async () => {
    const bad = startImapPoller({
      url: dovecot.url().replace(encodeURIComponent(dovecot.password), 'wrong-password-x'),
      intervalMs: HOUR,
      logger: engine.logger,
      handle: () => Promise.reject(new Error('not reached')),
    });
    try {
      await expect(bad.poll()).rejects.toThrow();
    } finally {
      await bad.close();
    }
    expect(logged).toContain('bounce mailbox polled');
    expect(logged).toContain('bounce mailbox poll failed');
    for (const secret of [dovecot.password, encodeURIComponent(dovecot.password), 'wrong-password-x']) expect(logged).not.toContain(secret);
  });

  it('is closed with the engine', async () => {
    const e = await createTestEngine({ bounceImapUrl: dovecot.url(), bounceImapIntervalMs: HOUR });
    expect(await e.inbound.pollImap()).toMatchObject({ failed: 0 });
    await e.close();
    const none = await createTestEngine({});
    try {
      expect(await none.inbound.pollImap()).toBeUndefined();
    } finally {
      await none.close();
    }
  });
});
