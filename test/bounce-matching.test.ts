/**
 * Reports that name a recipient address rather than a VERP token match the contact by its
 * canonical address (services/email-address.ts): a provider webhook reporting `ALICE@Example.COM`
 * or `kunde@BÜCHER.de`, and an ARF report whose original lost its return path but carries
 * fairsend's Message-ID and names that contact's mailbox in another form. A token-less ARF report
 * whose Message-ID and recipient do not agree is kept for review and changes nothing.
 */
import { readFileSync } from 'node:fs';
import type { Engine } from '../src/engine.js';
import { parseReport } from '../services/inbound/reports.js';
import { createTestEngine, rows } from './helpers/db.js';

const SECRET = 'test-bounce-secret-0123456789';
const arfFixture = () => readFileSync(new URL('./fixtures/bounces/arf-abuse.eml', import.meta.url), 'latin1');
const webhookFixture = (name: string) => readFileSync(new URL(`./fixtures/webhooks/${name}`, import.meta.url), 'utf8');

/** The ARF fixture as a feedback loop that strips the return path sends it: no VERP address anywhere. */
function arfWithoutToken(messageId: string, rcpt: string): string {
  return arfFixture()
    .split(/\r?\n/)
    .filter((l) => !/^(Return-Path|Original-Mail-From):/i.test(l))
    .join('\r\n')
    .replace('Message-ID: <12.347@news.example>', `Message-ID: ${messageId}`)
    .replace('Original-Rcpt-To: <angry@example.org>', `Original-Rcpt-To: <${rcpt}>`)
    .replace('To: Angry Person <angry@example.org>', `To: Angry Person <${rcpt}>`);
}

describe('matching reports by canonical address', () => {
  let engine: Engine;
  let userId: number;
  let taskId: number;
  let otherTaskId: number;
  let serviceId: number;
  const contact: Record<string, number> = {};

  beforeAll(async () => {
    engine = await createTestEngine({ bounceDomain: 'bounce.example', bounceSecret: SECRET });
    userId = (await engine.users.create({ name: 'News', email: 'news@news.example', quota: 100 })).id;
    const made = await engine.contacts.bulkCreate(userId, [
      { email: 'angry@example.org' },
      { email: 'kunde@bücher.de' },
      { email: 'alice@example.com' },
      { email: 'calm@example.org' },
      { email: 'later@example.org' },
    ]);
    ['angry', 'kunde', 'alice', 'calm', 'later'].forEach((n, i) => (contact[n] = made.ids[i]!));
    const tpl = await engine.templates.create(userId, { name: 't', subject: 'November news', text: 'Hello' });
    const ids = [contact.angry!, contact.kunde!, contact.alice!, contact.calm!];
    taskId = (await engine.campaigns.create({ userId, name: 'nov', from: 'news@news.example', templates: [tpl.id], contacts: ids })).id;
    otherTaskId = (
      await engine.campaigns.create({ userId, name: 'dec', from: 'news@news.example', templates: [tpl.id], contacts: [contact.calm!] })
    ).id;
    await engine.scheduler.processScheduledTasks();
    serviceId = (
      await engine.services.create({ name: 'pm', transport: { host: '127.0.0.1', port: 2525 }, sendingRate: 0, dailyQuota: 100 })
    ).id;
  });
  afterAll(async () => {
    await engine.close();
  });

  const status = async (who: string) =>
    (await rows<{ status: string }>(engine.apiDb, 'SELECT status FROM contacts WHERE id = $id', { id: contact[who] }))[0]!.status;
  const eventCount = async () => (await rows<{ n: number }>(engine.apiDb, 'SELECT count(*)::int AS n FROM bounce_events'))[0]!.n;
  const arf = (raw: string) =>
    engine.inbound.handle({ raw: Buffer.from(raw, 'latin1'), envelopeTo: ['fbl@bounce.example'], source: 'smtp' });

  it('reads the original message-id of an ARF report', async () => {
    const r = await parseReport(arfWithoutToken('<7.9@news.example>', 'angry@example.org'));
    expect(r).toMatchObject({ kind: 'arf', recipient: 'angry@example.org', returnPaths: [], messageIds: ['<7.9@news.example>'] });
  });

  it('an ARF report without a token: matched by its Message-ID and the recipient in another case', async () => {
    const out = await arf(arfWithoutToken(`<${taskId}.${contact.angry}@news.example>`, 'Angry@EXAMPLE.ORG'));
    expect(out).toMatchObject({ action: 'recorded', report: 'arf', target: { taskId, contactId: contact.angry } });
    expect(await status('angry')).toBe('unsubscribed');
    expect(await engine.suppressions.isSuppressed(userId, 'angry@example.org')).toBe(true);
    const [t] = await rows(engine.apiDb, 'SELECT complaint_count FROM tasks WHERE id = $id', { id: taskId });
    expect(t).toEqual({ complaint_count: 1 });
  });

  it('an ARF report without a token: a Unicode domain matches its punycode form', async () => {
    const out = await arf(arfWithoutToken(`<${taskId}.${contact.kunde}@news.example>`, 'Kunde@BÜCHER.de'));
    expect(out).toMatchObject({ action: 'recorded', target: { taskId, contactId: contact.kunde } });
    expect(await status('kunde')).toBe('unsubscribed');
    expect(await engine.suppressions.isSuppressed(userId, 'kunde@xn--bcher-kva.de')).toBe(true);
  });

  it('keeps for review a token-less ARF report whose Message-ID, campaign and recipient do not agree', async () => {
    const before = await eventCount();
    const cases = [
      arfWithoutToken(`<${taskId}.${contact.calm}@news.example>`, 'someone-else@example.org'), // another mailbox
      arfWithoutToken(`<${otherTaskId}.${contact.later}@news.example>`, 'later@example.org'), // that campaign never sent to them
      arfWithoutToken('<CAF=abc@mail.gmail.com>', 'calm@example.org'), // not fairsend's Message-ID
    ];
    for (const raw of cases) {
      expect(await arf(raw)).toMatchObject({
        action: 'review',
        reason: 'feedback report without a VERP address whose Message-ID and recipient match no message fairsend sent',
      });
    }
    expect(await eventCount()).toBe(before);
    expect(await status('calm')).toBe('active');
    expect(await status('later')).toBe('active');
  });

  it('a webhook naming the recipient in another case, with no Message-ID of ours, still bounces the contact', async () => {
    await engine.webhooks.configure(serviceId, 'postmark', { username: 'hook', password: 'hook-password-123' });
    const body = webhookFixture('postmark-bounce.json').replace('"alice@example.com"', '"ALICE@Example.COM"');
    const out = await engine.webhooks.receive('postmark', serviceId, {
      headers: { authorization: `Basic ${Buffer.from('hook:hook-password-123').toString('base64')}` },
      rawBody: body,
      now: new Date(),
    });
    expect(out).toMatchObject({ status: 200, result: { contactsMarked: 1, unmatched: [] } });
    expect(await status('alice')).toBe('bounced');
    const ev = await rows(engine.apiDb, "SELECT email, contact_id FROM bounce_events WHERE source = 'webhook:postmark'");
    expect(ev).toEqual([{ email: 'alice@example.com', contact_id: String(contact.alice) }]);
  });

  it('a webhook naming a Unicode domain matches the punycode contact', async () => {
    await engine.suppressions.remove({ userId, email: 'kunde@xn--bcher-kva.de' }).catch(() => undefined);
    const body = webhookFixture('postmark-spam.json');
    const email = (JSON.parse(body) as { Email: string }).Email;
    const out = await engine.webhooks.receive('postmark', serviceId, {
      headers: { authorization: `Basic ${Buffer.from('hook:hook-password-123').toString('base64')}` },
      rawBody: body.replace(JSON.stringify(email), JSON.stringify('KUNDE@Bücher.DE')),
      now: new Date(),
    });
    expect(out).toMatchObject({ status: 200, result: { unmatched: [] } });
    const ev = await rows(engine.apiDb, "SELECT type, email, contact_id FROM bounce_events WHERE source = 'webhook:postmark' ORDER BY id");
    expect(ev.at(-1)).toEqual({ type: 'complaint', email: 'kunde@xn--bcher-kva.de', contact_id: String(contact.kunde) });
  });
});
