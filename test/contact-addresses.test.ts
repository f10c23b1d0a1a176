/**
 * One canonical address per mailbox (issue 17), and "a plain import never re-activates": every
 * variant of one mailbox from the issue is imported, and a campaign sent through a real SMTP
 * server on loopback reaches that mailbox once.
 */
import { ValidationError } from '../services/kernel/errors.js';
import { canonicalEmail } from '../services/email-address.js';
import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createTestEngine, rows } from './helpers/db.js';

async function refusal(p: Promise<unknown>) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ValidationError);
  return (err as ValidationError).issues;
}

describe('canonicalEmail', () => {
  it('maps IDN and case in the domain, refuses invisible characters, trailing dots and fullwidth local parts', () => {
    expect(canonicalEmail('bob@bücher.de')).toEqual({ ok: true, email: 'bob@xn--bcher-kva.de' });
    expect(canonicalEmail('bob@BÜCHER.DE')).toEqual({ ok: true, email: 'bob@xn--bcher-kva.de' });
    expect(canonicalEmail('Bob@xn--bcher-kva.de')).toEqual({ ok: true, email: 'Bob@xn--bcher-kva.de' });
    expect(canonicalEmail('bob@ｅxample.com')).toEqual({ ok: true, email: 'bob@example.com' });
    expect(canonicalEmail('jose\u0301@example.org')).toEqual({ ok: true, email: 'jos\u00e9@example.org' });
    for (const bad of [
      'bob@ex\u00adample.com',
      'bob@example.com\u200b',
      'b\u200dob@example.com',
      '\u202ebob@example.com',
      'bob@exa\u2066mple.com',
    ]) {
      expect([bad, canonicalEmail(bad)]).toEqual([bad, { ok: false, message: expect.stringContaining('invisible character') }]);
    }
    expect(canonicalEmail('bob@example.com.')).toEqual({ ok: false, message: 'must not end with a dot' });
    expect(canonicalEmail('ｂob@example.com')).toEqual({ ok: false, message: expect.stringContaining('write it as bob') });
    for (const bad of ['a@b', 'a@1.2.3.4', 'x@a_b.com', 'a@-x.com', 'a@@b.com', '@example.com']) {
      expect([bad, canonicalEmail(bad).ok]).toEqual([bad, false]);
    }
  });
});

describe('one mailbox, one contact, one message', () => {
  let engine: Engine;
  let catcher: SmtpCatcher;
  let user: number;
  beforeAll(async () => {
    catcher = await startSmtpCatcher();
    engine = await createTestEngine({ schedulerTickMs: 50 });
    user = (await engine.users.create({ name: 'U', email: 'u@example.test', quota: 100 })).id;
  });
  afterAll(async () => {
    await engine.close();
    await catcher.stop();
  });

  it('merges or refuses every variant of the issue, then sends to the mailbox once', async () => {
    const first = await engine.contacts.bulkCreate(user, [{ email: 'bob@bücher.de', name: 'Bob', tags: ['t'] }]);
    const again = await engine.contacts.bulkCreate(user, [
      { email: 'bob@xn--bcher-kva.de' },
      { email: 'BOB@BÜCHER.DE' },
      { email: 'bob@ＢÜCHER.de' },
    ]);
    expect(first).toMatchObject({ created: 1, updated: 0 });
    expect(again).toMatchObject({ created: 0, updated: 1, ids: [first.ids[0], first.ids[0], first.ids[0]] });
    const refused = [];
    for (const variant of ['bob@b\u00fccher.de\u200b', 'bob@b\u00fc\u00adcher.de', 'bob@b\u00fccher.de.', '\uff42ob@b\u00fccher.de']) {
      refused.push(...(await refusal(engine.contacts.bulkCreate(user, [{ email: variant }]))));
    }
    expect(refused.map((i) => i.path)).toEqual(['contacts[0].email', 'contacts[0].email', 'contacts[0].email', 'contacts[0].email']);
    // The CSV door canonicalizes the same way.
    const csv = await engine.contacts.importCsv(user, 'email,name\nbob@BÜCHER.de,Bob\n');
    expect(csv.ids).toEqual(first.ids);
    expect(await rows(engine.apiDb, 'SELECT email FROM contacts WHERE user_id = $u', { u: user })).toEqual([
      { email: 'bob@xn--bcher-kva.de' },
    ]);

    const tpl = await engine.templates.create(user, { name: 't', subject: 'Hi', text: 'Hello' });
    const campaign = await engine.campaigns.create({
      userId: user,
      name: 'c',
      from: 'news@bücher.de',
      templates: [tpl.id],
      recipientRule: { type: 'all' },
    });
    expect(campaign.recipients).toBe(1);
    await engine.services.create({ name: 'loop', transport: { host: '127.0.0.1', port: catcher.port }, sendingRate: 0, dailyQuota: 100 });
    await engine.scheduler.start();
    await catcher.waitFor(1);
    const deadline = Date.now() + 20_000;
    while ((await engine.campaigns.progress(campaign.id)).status !== 'completed' && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    await engine.scheduler.stop();
    // smtp-server shows IDN domains in unicode; what matters is one message to the one mailbox.
    const mailbox = (a: string) => (canonicalEmail(a) as { email: string }).email;
    expect(catcher.messages.map((m) => m.envelopeTo.map(mailbox))).toEqual([['bob@xn--bcher-kva.de']]);
    expect(mailbox(catcher.messages[0]!.envelopeFrom)).toBe('news@xn--bcher-kva.de');
  });

  it('never re-activates an unsubscribed or bounced contact on import, and says so', async () => {
    await engine.contacts.bulkCreate(user, [
      { email: 'gone@example.org', status: 'unsubscribed' },
      { email: 'dead@example.org', status: 'bounced' },
      { email: 'live@example.org' },
    ]);
    const r = await engine.contacts.bulkCreate(user, [
      { email: 'GONE@example.org', status: 'active', name: 'Gone' },
      { email: 'dead@EXAMPLE.org' },
      { email: 'live@example.org', status: 'unsubscribed' },
    ]);
    expect(r).toMatchObject({ created: 0, updated: 3, inactive: 3 });
    expect(r.inactiveContacts.map((c) => [c.email, c.status])).toEqual([
      ['gone@example.org', 'unsubscribed'],
      ['dead@example.org', 'bounced'],
      ['live@example.org', 'unsubscribed'],
    ]);
    const stored = await rows(engine.apiDb, `SELECT email, name, status FROM contacts WHERE email LIKE '%@example.org' ORDER BY email`);
    expect(stored).toEqual([
      { email: 'dead@example.org', name: null, status: 'bounced' },
      { email: 'gone@example.org', name: 'Gone', status: 'unsubscribed' },
      { email: 'live@example.org', name: null, status: 'unsubscribed' },
    ]);
  });
});
