/**
 * Addresses that dodge dedupe and unsubscribe, statuses a plain user should not see, and bytes that
 * are not UTF-8 (issue 17), over HTTP against a real PostgreSQL and a real SMTP server on loopback.
 *
 * - Every variant of one mailbox from the issue is imported (JSON and CSV, one call each, as a
 *   careless user re-importing would): the ones that are the same mailbox become one contact, the
 *   invisible or confusable ones are refused with the field named; a campaign to all contacts then
 *   reaches each mailbox ONCE, counted at the receiving SMTP server.
 * - Unsubscribe: a JSON body is refused (RFC 8058 form only), a token naming a campaign that does
 *   not exist is refused, the form body unsubscribes (recorded with its campaign), a variant
 *   re-imported as active stays unsubscribed, and the next campaign does not reach it.
 * - A plain user's scheduler status names nothing of another user's.
 * - Invalid UTF-8 in a JSON or CSV body: 400 naming the field or line, nothing written.
 */
import { hostname } from 'node:os';
import { domainToASCII } from 'node:url';
import { unsubscribeToken } from '../../services/delivery/unsubscribe.js';
import { startSmtpCatcher, type SmtpCatcher } from '../../src/smtp-catcher.js';
import { rows } from '../helpers/db.js';
import { httpFixture, UNSUBSCRIBE_SECRET, type HttpFixture } from '../helpers/http.js';
import { until } from '../helpers/scheduler.js';
import { recordFigures } from './report.js';

const SAME_MAILBOX = [
  ['bob@bücher.de', 'bob@xn--bcher-kva.de'],
  ['bob@xn--bcher-kva.de', 'bob@xn--bcher-kva.de'],
  ['BOB@BÜCHER.DE', 'bob@xn--bcher-kva.de'],
  ['bob@example.com', 'bob@example.com'],
  ['Bob@Example.COM', 'bob@example.com'],
  ['bob@ｅxample.com', 'bob@example.com'], // fullwidth in the domain: mapped by UTS 46
] as const;
const REFUSED = [
  'bob@ex\u00adample.com', // soft hyphen
  'bob@example.com\u200b', // zero-width space
  'bo\u200db@example.com', // zero-width joiner
  'bob@example\u202e.com', // bidi override
  'bob@example.com.', // trailing dot
  'ｂob@example.com', // fullwidth in the local part: refused, not mapped
];

let f: HttpFixture;
let catcher: SmtpCatcher;
let alice: { id: number; token: string };
const json = { 'content-type': 'application/json' };
const csv = { 'content-type': 'text/csv' };
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

beforeAll(async () => {
  catcher = await startSmtpCatcher();
  f = await httpFixture({ engine: { schedulerTickMs: 50 } });
  await f.engine.services.create({ name: 'loop', transport: { host: '127.0.0.1', port: catcher.port }, sendingRate: 0, dailyQuota: 1000 });
  alice = await f.user('Alice', 1000);
});
afterAll(async () => {
  await f?.engine.scheduler.stop();
  await f?.close();
  await catcher?.stop();
});

const contactsOf = (userId: number) =>
  rows<{ id: string; email: string; status: string }>(
    f.engine.apiDb,
    'SELECT id, email, status FROM contacts WHERE user_id = $u ORDER BY id',
    {
      u: userId,
    },
  );
/** Messages received per mailbox (envelope recipient, lower-cased; smtp-server shows an IDN domain in Unicode, keyed here in punycode). */
const mailbox = (to: string) => {
  const at = to.lastIndexOf('@');
  return `${to.slice(0, at)}@${domainToASCII(to.slice(at + 1))}`.toLowerCase();
};
const perMailbox = () => {
  const n = new Map<string, number>();
  for (const m of catcher.messages) for (const to of m.envelopeTo) n.set(mailbox(to), (n.get(mailbox(to)) ?? 0) + 1);
  return Object.fromEntries([...n.entries()].sort());
};
async function campaign(name: string): Promise<number> {
  const tpl = await f.engine.templates.create(alice.id, { name, subject: name, text: 'x' });
  const c = await f.engine.campaigns.create({
    userId: alice.id,
    name,
    from: 'news@example.test',
    templates: [tpl.id],
    recipientRule: { type: 'all' },
  });
  await f.engine.scheduler.start();
  await until(async () => (await f.engine.campaigns.get(c.id)).status === 'completed', 60_000, `campaign ${name}`);
  await f.engine.scheduler.stop();
  return c.id;
}

describe('one mailbox, one contact, one message', () => {
  it('imports every variant of the issue, refuses the invisible and confusable ones, and sends each mailbox one message', async () => {
    const ids = new Set<string>();
    for (const [variant, canonical] of SAME_MAILBOX) {
      const res = await f.call('POST', '/api/contacts', alice.token, { contacts: [{ email: variant }] }, json);
      expect([variant, res.statusCode]).toEqual([variant, 200]);
      const [id] = (res.json() as { ids: number[] }).ids;
      const [row] = await rows<{ email: string }>(f.engine.apiDb, 'SELECT email FROM contacts WHERE id = $id', { id });
      expect([variant, row!.email.toLowerCase()]).toEqual([variant, canonical]);
      ids.add(String(id));
    }
    // The same variants in one CSV file: still the same two contacts.
    const file = ['email', ...SAME_MAILBOX.map(([v]) => v)].join('\n') + '\n';
    const viaCsv = await f.call('POST', '/api/contacts', alice.token, file, csv);
    expect(viaCsv.statusCode).toBe(200);
    for (const id of (viaCsv.json() as { ids: number[] }).ids) ids.add(String(id));
    expect(ids.size).toBe(2);
    for (const variant of REFUSED) {
      const res = await f.call('POST', '/api/contacts', alice.token, { contacts: [{ email: variant }] }, json);
      expect([variant, res.statusCode]).toEqual([variant, 400]);
      expect([variant, JSON.stringify(res.json())]).toEqual([variant, expect.stringContaining('contacts[0].email')]);
    }
    expect((await contactsOf(alice.id)).length).toBe(2);

    await campaign('first');
    expect(perMailbox()).toEqual({ 'bob@example.com': 1, 'bob@xn--bcher-kva.de': 1 });
    const messageIds = new Set(catcher.messages.map((m) => m.parsed.messageId));
    expect(messageIds.size).toBe(2);
    await recordFigures({
      scenario: 'address variants of one mailbox: imported (JSON, CSV) and sent, one message per mailbox',
      faultsInjected: SAME_MAILBOX.length * 2 + REFUSED.length,
      faultsSurvived: SAME_MAILBOX.length * 2 + REFUSED.length,
      messagesSent: catcher.received,
      lost: 0,
      duplicates: catcher.received - 2,
      duplicateBound: 0,
      inputsTried: SAME_MAILBOX.length * 2 + REFUSED.length,
      notes: `${SAME_MAILBOX.length} variants -> 2 contacts (IDN/punycode/case/fullwidth domain); ${REFUSED.length} refused (soft hyphen, ZW space, ZWJ, bidi, trailing dot, fullwidth local part)`,
    });
  });

  it('unsubscribe: JSON body and unknown campaign refused, the form unsubscribes, a re-imported variant stays unsubscribed and is not mailed', async () => {
    const [, bob] = await contactsOf(alice.id); // bob@example.com (the second mailbox imported)
    expect(bob!.email.toLowerCase()).toBe('bob@example.com');
    const [first] = await rows<{ id: string }>(f.engine.apiDb, `SELECT id FROM tasks WHERE name = 'first'`);
    const token = unsubscribeToken(UNSUBSCRIBE_SECRET, Number(bob!.id), Number(first!.id));
    const status = async () =>
      (await rows<{ status: string }>(f.engine.apiDb, 'SELECT status FROM contacts WHERE id = $id', { id: bob!.id }))[0]!.status;

    const asJson = await f.call('POST', `/u/${token}`, undefined, JSON.stringify({ 'List-Unsubscribe': 'One-Click' }), json);
    expect(asJson.statusCode).toBe(415);
    const ghost = await f.call(
      'POST',
      `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, Number(bob!.id), 987654)}`,
      undefined,
      'List-Unsubscribe=One-Click',
      FORM,
    );
    expect(ghost.statusCode).toBe(400);
    expect(await status()).toBe('active');

    const ok = await f.call('POST', `/u/${token}`, undefined, 'List-Unsubscribe=One-Click', FORM);
    expect(ok.statusCode).toBe(200);
    expect(await status()).toBe('unsubscribed');
    expect(
      await rows(f.engine.apiDb, 'SELECT method, task_id::int AS task FROM contact_status_events WHERE contact_id = $id', { id: bob!.id }),
    ).toEqual([{ method: 'one_click', task: Number(first!.id) }]);

    // A careless re-import of a variant, saying active: stays unsubscribed.
    const again = await f.call('POST', '/api/contacts', alice.token, { contacts: [{ email: 'BOB@ｅxample.com', status: 'active' }] }, json);
    expect(again.statusCode).toBe(200);
    expect((again.json() as { inactive: number }).inactive).toBe(1);
    expect(await status()).toBe('unsubscribed');

    await campaign('second');
    expect(perMailbox()).toEqual({ 'bob@example.com': 1, 'bob@xn--bcher-kva.de': 2 });
    await recordFigures({
      scenario: 'unsubscribe: form body only, unknown campaign refused, variants stay unsubscribed',
      faultsInjected: 3,
      faultsSurvived: 3,
      messagesSent: 1,
      lost: 0,
      duplicates: 0,
      duplicateBound: 0,
      inputsTried: 4,
      notes:
        'JSON one-click 415; token of a missing campaign 400; one_click recorded with its campaign; re-import of BOB@ｅxample.com as active stays unsubscribed; next campaign skips it',
    });
  });

  it("a plain user's scheduler status names nothing of another user's", async () => {
    const carol = await f.user('Carol', 100);
    const tpl = await f.engine.templates.create(carol.id, { name: 't', subject: 's', text: 'x' });
    await f.engine.contacts.bulkCreate(carol.id, [{ email: 'x@carol.example' }]);
    await f.engine.services.create({
      name: 'carol-private-relay',
      transport: { host: '127.0.0.1', port: 1 },
      sendingRate: 0,
      dailyQuota: 5,
      userIds: [carol.id],
    });
    await f.engine.campaigns.create({
      userId: carol.id,
      name: 'carol-secret-campaign',
      from: 'c@carol.example',
      templates: [tpl.id],
      recipientRule: { type: 'all' },
      scheduledAt: new Date(Date.now() + 86_400_000),
    } as never);
    const res = await f.call('GET', '/api/scheduler/status', alice.token);
    expect(res.statusCode).toBe(200);
    const leaks = [
      'carol-private-relay',
      'carol-secret-campaign',
      'carol.example',
      hostname(),
      `"pid"`,
      f.engine.scheduler.instanceId,
      'pools',
    ];
    const found = leaks.filter((l) => res.body.includes(l));
    expect(found).toEqual([]);
    const admin = await f.call('GET', '/api/scheduler/status', f.adminToken);
    expect(admin.body).toContain('carol-private-relay'); // the control: an admin sees it
    await recordFigures({
      scenario: "scheduler status seen by a plain user: nothing of another user's",
      faultsInjected: leaks.length,
      faultsSurvived: leaks.length - found.length,
      messagesSent: 0,
      lost: 0,
      duplicates: 0,
      duplicateBound: 0,
      inputsTried: 1,
      notes:
        "another user's private service and campaign, host, pid, instance, pools: none in a plain user's status; the admin's names them",
    });
  });

  it('invalid UTF-8 in a JSON or CSV body: 400 naming the field or line, nothing written', async () => {
    const before = (await contactsOf(alice.id)).length;
    const bad = (text: string, bytes: number[]) => {
      const [a, b] = text.split('§') as [string, string];
      return Buffer.concat([Buffer.from(a), Buffer.from(bytes), Buffer.from(b)]);
    };
    const sequences = [[0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0x80], [0xf4, 0x90, 0x80, 0x80]];
    let refused = 0;
    for (const seq of sequences) {
      const j = await f.call('POST', '/api/contacts', alice.token, bad('[{"email":"u@example.com","name":"N§"}]', seq), json);
      expect([seq, j.statusCode, JSON.stringify(j.json()).includes('[0].name')]).toEqual([seq, 400, true]);
      const c = await f.call('POST', '/api/contacts', alice.token, bad('email,name\nu@example.com,ok\nv@example.com,N§\n', seq), csv);
      expect([seq, c.statusCode, JSON.stringify(c.json()).includes('line 3')]).toEqual([seq, 400, true]);
      refused += 2;
    }
    expect((await contactsOf(alice.id)).length).toBe(before);
    await recordFigures({
      scenario: 'invalid UTF-8 in JSON and CSV bodies: 400 naming the field or line',
      faultsInjected: sequences.length * 2,
      faultsSurvived: refused,
      messagesSent: 0,
      lost: 0,
      duplicates: 0,
      duplicateBound: 0,
      inputsTried: sequences.length * 2,
      notes: 'overlong, surrogate, lone continuation, 0xff, above U+10FFFF; nothing written',
    });
  });
});
