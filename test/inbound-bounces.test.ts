/**
 * Bounces by mail: DSNs captured from Debian's Postfix and an ARF report (test/fixtures/bounces/)
 * delivered over SMTP to the engine's inbound listener (BOUNCE_SMTP_PORT) mark the right contact
 * and campaign; forged VERP tokens, autoreplies and other mail are kept for review and not acted on.
 */
import { readFileSync } from 'node:fs';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Engine } from '../src/engine.js';
import { classifyStatus, parseReport } from '../services/inbound/reports.js';
import { verifyVerp, verpAddress, verpToken } from '../services/inbound/verp.js';
import { createTestEngine, rows } from './helpers/db.js';
import { startSmtpCatcher } from '../src/smtp-catcher.js';
import { recordSends, until } from './helpers/scheduler.js';

const SECRET = 'test-bounce-secret-0123456789';
const fixture = (name: string) => readFileSync(new URL(`./fixtures/bounces/${name}`, import.meta.url), 'latin1');
/** The fixture's tokens were signed for campaign 12, contacts 345 and 346 (see the fixtures' README). */
const FIXTURE_TOKENS = { 345: verpToken(SECRET, 12, 345), 346: verpToken(SECRET, 12, 346) };

describe('VERP tokens and report parsing (unit)', () => {
  it('signs the message into the return path and refuses forged or altered tokens', () => {
    const a = verpAddress(SECRET, 'bounce.example', 12, 345);
    expect(a).toBe(`bounce+${FIXTURE_TOKENS[345]}@bounce.example`);
    expect(verifyVerp(SECRET, a)).toEqual({ taskId: 12, contactId: 345 });
    expect(verifyVerp(SECRET, `<${a.toUpperCase()}>`)).toEqual({ taskId: 12, contactId: 345 }); // case folded on the way back
    expect(verifyVerp(SECRET, a.replace('bounce+c.9l.', 'bounce+c.9m.'))).toBeUndefined(); // another contact, same mac
    expect(verifyVerp('another-secret-0123456789', a)).toBeUndefined();
    expect(verifyVerp(SECRET, 'bounce+c.9l.00000000000000000000@bounce.example')).toBeUndefined();
    expect(verifyVerp(SECRET, 'postmaster@bounce.example')).toBeUndefined();
    expect(
      verpAddress(SECRET, 'bounce.example', Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER).split('@')[0]!.length,
    ).toBeLessThanOrEqual(64);
  });

  it('classifies by status code, not wording', async () => {
    expect(['5.1.1', '5.1.10', '5.2.1', '5.0.0', '5.2.2', '5.7.1', '4.2.2', '4.4.1', '2.0.0'].map(classifyStatus)).toEqual([
      'hard_bounce',
      'hard_bounce',
      'hard_bounce',
      'hard_bounce',
      'soft_bounce',
      'soft_bounce',
      'soft_bounce',
      'soft_bounce',
      undefined,
    ]);
    const hard = await parseReport(fixture('postfix-hard-5.1.1.eml'));
    expect(hard).toMatchObject({
      kind: 'dsn',
      recipients: [{ email: 'gone@example.net', action: 'failed', status: '5.1.1', kind: 'hard_bounce' }],
    });
    expect(hard.kind === 'dsn' && hard.recipients[0]!.diagnostic).toMatch(
      /^smtp; 550 5\.1\.1 <gone@example\.net>: Recipient address rejected/,
    );
    // A soft DSN whose text says nothing a keyword list would know is still soft by its code.
    const soft = await parseReport(fixture('postfix-soft-4.2.2.eml').replace(/Mailbox full, try again\s+later/g, 'Postfach voll'));
    expect(soft).toMatchObject({ kind: 'dsn', recipients: [{ email: 'full@example.net', status: '4.2.2', kind: 'soft_bounce' }] });
    const arf = await parseReport(fixture('arf-abuse.eml').replaceAll('TOKEN', 'x'));
    expect(arf).toMatchObject({
      kind: 'arf',
      feedbackType: 'abuse',
      recipient: 'angry@example.org',
    });
    expect(arf.kind === 'arf' && arf.returnPaths).toContain('bounce+x@bounce.example'); // Original-Mail-From
    expect(await parseReport('From: a@b.example\r\nSubject: hello\r\n\r\nplain mail\r\n')).toMatchObject({ kind: 'other' });
  });
});

describe('inbound bounce listener (SMTP)', () => {
  let engine: Engine;
  let userId: number;
  let taskId: number;
  const contact: Record<string, number> = {};
  let transport: Transporter;

  beforeAll(async () => {
    engine = await createTestEngine({ bounceSmtpPort: 0, bounceDomain: 'bounce.example', bounceSecret: SECRET });
    userId = (await engine.users.create({ name: 'News', email: 'news@news.example', quota: 100 })).id;
    const made = await engine.contacts.bulkCreate(userId, [
      { email: 'gone@example.net' },
      { email: 'full@example.net' },
      { email: 'angry@example.org' },
      { email: 'fine@example.org' },
    ]);
    ['gone', 'full', 'angry', 'fine'].forEach((n, i) => (contact[n] = made.ids[i]!));
    const tpl = await engine.templates.create(userId, { name: 't', subject: 'November news', text: 'Hello' });
    taskId = (
      await engine.campaigns.create({ userId, name: 'nov', from: 'news@news.example', templates: [tpl.id], recipientRule: { type: 'all' } })
    ).id;
    await engine.scheduler.processScheduledTasks();
    expect(engine.inbound.smtpPort).toBeGreaterThan(0);
    transport = nodemailer.createTransport({ host: '127.0.0.1', port: engine.inbound.smtpPort!, secure: false, ignoreTLS: true });
  });
  afterAll(async () => {
    transport.close();
    await engine.close();
  });

  /** Delivers `raw` over SMTP with a null sender, as a mail server returns a bounce. */
  const deliver = (raw: string, to: string) => transport.sendMail({ envelope: { from: '', to: [to] }, raw });
  const withToken = (raw: string, from: string, to: string) => raw.replaceAll(from, to);
  const contactStatus = async (id: number) =>
    (await rows<{ status: string }>(engine.apiDb, 'SELECT status FROM contacts WHERE id = $id', { id }))[0]!.status;

  it('a Postfix DSN (550 5.1.1) marks that contact bounced, in that campaign, and suppresses the address', async () => {
    const token = verpToken(SECRET, taskId, contact.gone!);
    const info = await deliver(withToken(fixture('postfix-hard-5.1.1.eml'), FIXTURE_TOKENS[345], token), `bounce+${token}@bounce.example`);
    expect(info.accepted).toEqual([`bounce+${token}@bounce.example`]);
    expect(await contactStatus(contact.gone!)).toBe('bounced');
    expect(await engine.suppressions.isSuppressed(userId, 'gone@example.net')).toBe(true);
    const ev = await rows(engine.apiDb, 'SELECT type, task_id, contact_id, status_code, source FROM bounce_events ORDER BY id');
    expect(ev).toEqual([
      { type: 'hard_bounce', task_id: String(taskId), contact_id: String(contact.gone), status_code: '5.1.1', source: 'smtp:dsn' },
    ]);
    const [t] = await rows<{ hard_bounce_count: number }>(engine.apiDb, 'SELECT hard_bounce_count FROM tasks WHERE id = $id', {
      id: taskId,
    });
    expect(t!.hard_bounce_count).toBe(1);
    const st = await rows(engine.apiDb, 'SELECT status FROM subtasks WHERE task_id = $t AND contact_id = $c', {
      t: taskId,
      c: contact.gone,
    });
    expect(st).toEqual([{ status: 'cancelled' }]);
  });

  it('a Postfix DSN (452 4.2.2) counts a soft bounce and leaves the contact active', async () => {
    const token = verpToken(SECRET, taskId, contact.full!);
    await deliver(withToken(fixture('postfix-soft-4.2.2.eml'), FIXTURE_TOKENS[346], token), `bounce+${token}@bounce.example`);
    expect(await contactStatus(contact.full!)).toBe('active');
    const ev = await rows(engine.apiDb, "SELECT type, contact_id, status_code FROM bounce_events WHERE type = 'soft_bounce'");
    expect(ev).toEqual([{ type: 'soft_bounce', contact_id: String(contact.full), status_code: '4.2.2' }]);
  });

  it('an ARF abuse report sent to the feedback address marks the complaint on the contact and campaign', async () => {
    const token = verpToken(SECRET, taskId, contact.angry!);
    await deliver(fixture('arf-abuse.eml').replaceAll('TOKEN', token), 'fbl@bounce.example');
    expect(await contactStatus(contact.angry!)).toBe('unsubscribed');
    const [t] = await rows<{ complaint_count: number }>(engine.apiDb, 'SELECT complaint_count FROM tasks WHERE id = $id', { id: taskId });
    expect(t!.complaint_count).toBe(1);
    expect((await engine.suppressions.list({ userId, email: 'angry@example.org' })).items[0]).toMatchObject({
      reason: 'complaint',
      source: 'smtp:arf',
    });
  });

  it('keeps a forged token, an autoreply and plain mail for review, changing nothing', async () => {
    const before = await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM bounce_events');
    const real = verpToken(SECRET, taskId, contact.fine!);
    const forged = verpToken('not-the-secret-0123456789', taskId, contact.fine!);
    await deliver(withToken(fixture('postfix-hard-5.1.1.eml'), FIXTURE_TOKENS[345], forged), `bounce+${forged}@bounce.example`);
    // The right contact's id with another's mac: also refused.
    const altered = `${real.split('.').slice(0, 2).join('.')}.${FIXTURE_TOKENS[345].split('.')[2]}`;
    await deliver(withToken(fixture('postfix-hard-5.1.1.eml'), FIXTURE_TOKENS[345], altered), `bounce+${altered}@bounce.example`);
    await deliver(
      'From: fine@example.org\r\nTo: bounce+x@bounce.example\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\nI am away until Monday.\r\n',
      `bounce+${real}@bounce.example`,
    );
    expect(await contactStatus(contact.fine!)).toBe('active');
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM bounce_events')).toEqual(before);
    const review = await engine.bounces.review();
    expect(review.map((r) => r.reason)).toEqual([
      'autoreply (Auto-Submitted / X-Autoreply / Precedence), not a report',
      'forged or altered VERP token: refused',
      'forged or altered VERP token: refused',
    ]);
    expect(review[2]).toMatchObject({ source: 'smtp', subject: 'Undelivered Mail Returned to Sender' });
  });

  it('takes mail for the bounce domain only', async () => {
    await expect(deliver('Subject: x\r\n\r\nx\r\n', 'someone@elsewhere.example')).rejects.toMatchObject({ responseCode: 550 });
  });
});

describe('VERP end to end', () => {
  it('sends each message with its own signed return path, and a DSN to it bounces that contact', async () => {
    const catcher = await startSmtpCatcher();
    const engine = await createTestEngine({ schedulerTickMs: 50, bounceSmtpPort: 0, bounceDomain: 'bounce.example', bounceSecret: SECRET });
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: engine.inbound.smtpPort!, secure: false, ignoreTLS: true });
    try {
      const u = (await engine.users.create({ name: 'V', email: 'v@news.example', quota: 10 })).id;
      const made = await engine.contacts.bulkCreate(u, [{ email: 'gone@example.net' }, { email: 'kept@example.net' }]);
      const tpl = await engine.templates.create(u, { name: 't', subject: 's', text: 'x' });
      const c = await engine.campaigns.create({ userId: u, name: 'v', from: 'v@news.example', templates: [tpl.id], contacts: made.ids });
      await engine.services.create({ name: 'out', transport: { host: '127.0.0.1', port: catcher.port }, sendingRate: 0, dailyQuota: 100 });
      const sent = recordSends(engine);
      await engine.scheduler.start();
      await until(() => sent.length === 2, 20000, 'two sends');
      await engine.scheduler.stop();
      const byRcpt = new Map(catcher.messages.map((m) => [m.envelopeTo[0], m.envelopeFrom]));
      const from = byRcpt.get('gone@example.net')!;
      expect(verifyVerp(SECRET, from)).toEqual({ taskId: c.id, contactId: made.ids[0] });
      expect(verifyVerp(SECRET, byRcpt.get('kept@example.net')!)).toEqual({ taskId: c.id, contactId: made.ids[1] });
      // The header From is the campaign's; only the envelope carries the VERP address.
      expect(catcher.messages[0]!.parsed.from?.text).toBe('v@news.example');
      const token = from.slice('bounce+'.length, from.indexOf('@'));
      await transport.sendMail({
        envelope: { from: '', to: [from] },
        raw: fixture('postfix-hard-5.1.1.eml').replaceAll(FIXTURE_TOKENS[345], token),
      });
      const st = await rows(engine.apiDb, 'SELECT email, status FROM contacts WHERE user_id = $u ORDER BY id', { u });
      expect(st).toEqual([
        { email: 'gone@example.net', status: 'bounced' },
        { email: 'kept@example.net', status: 'active' },
      ]);
    } finally {
      transport.close();
      await engine.close();
      await catcher.stop();
    }
  });
});
