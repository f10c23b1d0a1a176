/**
 * One-click unsubscribe (RFC 8058) and bounce reports: the contact's queued mail is cancelled in
 * every live campaign at once, counters and credit follow, forged tokens and wrong secrets change
 * nothing. Real PostgreSQL, inject().
 */
import { unsubscribeToken } from '../services/delivery/unsubscribe.js';
import { rows } from './helpers/db.js';
import { errorOf, httpFixture, UNSUBSCRIBE_SECRET, WEBHOOK_SECRET, type HttpFixture } from './helpers/http.js';
import { userWithContacts } from './helpers/scheduler.js';

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

/** Everything an unsubscribe may change, to compare before and after. */
async function snapshot(f: HttpFixture) {
  return {
    contacts: await rows(f.engine.apiDb, 'SELECT id, status FROM contacts ORDER BY id'),
    subtasks: await rows(f.engine.apiDb, 'SELECT task_id, contact_id, status FROM subtasks ORDER BY 1, 2'),
    tasks: await rows(f.engine.apiDb, 'SELECT id, status, cancelled_count FROM tasks ORDER BY id'),
    users: await rows(f.engine.apiDb, 'SELECT id, remaining_quota FROM users ORDER BY id'),
  };
}

async function subtaskStatus(f: HttpFixture, contactId: number) {
  return rows<{ task_id: string; status: string }>(
    f.engine.apiDb,
    'SELECT task_id, status FROM subtasks WHERE contact_id = $c ORDER BY task_id',
    { c: contactId },
  );
}

const credit = async (f: HttpFixture, userId: number) =>
  Number((await rows<{ q: string }>(f.engine.apiDb, 'SELECT remaining_quota AS q FROM users WHERE id = $id', { id: userId }))[0]!.q);

describe('one-click unsubscribe', () => {
  let f: HttpFixture;
  let u: Awaited<ReturnType<typeof userWithContacts>>;
  let first: number;
  let second: number;

  beforeAll(async () => {
    f = await httpFixture();
    u = await userWithContacts(f.engine, 'U', 5, { quota: 100 });
    first = (
      await f.engine.campaigns.create({
        userId: u.userId,
        name: 'First',
        from: 'u@example.test',
        templates: [u.templateId],
        contacts: u.contactIds,
      })
    ).id;
    second = (
      await f.engine.campaigns.create({
        userId: u.userId,
        name: 'Second',
        from: 'u@example.test',
        templates: [u.templateId],
        contacts: u.contactIds,
      })
    ).id;
    // Queues generated, scheduler stopped: every subtask stays queued.
    await f.engine.scheduler.processScheduledTasks();
    expect(await rows(f.engine.apiDb, "SELECT count(*)::int AS n FROM subtasks WHERE status = 'queued'")).toEqual([{ n: 10 }]);
  });
  afterAll(() => f.close());

  it('shows a confirmation page on GET and changes nothing', async () => {
    const contact = u.contactIds[0]!;
    const before = await snapshot(f);
    const res = await f.call('GET', `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, contact, first)}`);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.body).toContain('u1@example.test');
    expect(res.body).toContain('<form method="post">');
    expect(res.body).toContain('name="List-Unsubscribe" value="One-Click"');
    expect(await snapshot(f)).toEqual(before);
  });

  it('unsubscribes on POST List-Unsubscribe=One-Click and cancels the queued mail of every campaign, refunding it', async () => {
    const contact = u.contactIds[0]!;
    const creditBefore = await credit(f, u.userId);
    const res = await f.call(
      'POST',
      `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, contact, first)}`,
      undefined,
      'List-Unsubscribe=One-Click',
      FORM,
    );
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('You are unsubscribed');
    expect(await rows(f.engine.apiDb, 'SELECT status FROM contacts WHERE id = $id', { id: contact })).toEqual([{ status: 'unsubscribed' }]);
    expect(await subtaskStatus(f, contact)).toEqual([
      { task_id: String(first), status: 'cancelled' },
      { task_id: String(second), status: 'cancelled' },
    ]);
    expect(await rows(f.engine.apiDb, 'SELECT id, cancelled_count FROM tasks ORDER BY id')).toEqual([
      { id: String(first), cancelled_count: 1 },
      { id: String(second), cancelled_count: 1 },
    ]);
    expect(await credit(f, u.userId)).toBe(creditBefore + 2);
    // Everyone else's mail is untouched.
    expect(await rows(f.engine.apiDb, "SELECT count(*)::int AS n FROM subtasks WHERE status = 'queued'")).toEqual([{ n: 8 }]);
    // Idempotent: a second click changes nothing more.
    const again = await f.call(
      'POST',
      `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, contact, second)}`,
      undefined,
      'List-Unsubscribe=One-Click',
      FORM,
    );
    expect(again.statusCode).toBe(200);
    expect(await credit(f, u.userId)).toBe(creditBefore + 2);
    // The page now says so without a button.
    const page = await f.call('GET', `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, contact, first)}`);
    expect(page.body).toContain('You are unsubscribed');
    expect(page.body).not.toContain('<form');
  });

  it('accepts the multipart/form-data body RFC 8058 allows', async () => {
    const contact = u.contactIds[1]!;
    const boundary = '----fairsendBoundary42';
    const body = `--${boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--${boundary}--\r\n`;
    const res = await f.call('POST', `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, contact, second)}`, undefined, body, {
      'content-type': `multipart/form-data; boundary=${boundary}`,
    });
    expect(res.statusCode).toBe(200);
    expect((await subtaskStatus(f, contact)).map((r) => r.status)).toEqual(['cancelled', 'cancelled']);
  });

  it('refuses a forged or altered token with 400 and changes nothing', async () => {
    const contact = u.contactIds[2]!;
    const good = unsubscribeToken(UNSUBSCRIBE_SECRET, contact, first);
    const before = await snapshot(f);
    const forged = [
      unsubscribeToken('another-secret-of-enough-length', contact, first),
      good.slice(0, -1) + (good.endsWith('A') ? 'B' : 'A'),
      good.replace(/^\d+/, String(u.contactIds[3])),
      `${contact}.${first}`,
      'garbage',
    ];
    for (const token of forged) {
      const post = await f.call('POST', `/u/${encodeURIComponent(token)}`, undefined, 'List-Unsubscribe=One-Click', FORM);
      expect([token, post.statusCode]).toEqual([token, 400]);
      const get = await f.call('GET', `/u/${encodeURIComponent(token)}`);
      expect([token, get.statusCode]).toEqual([token, 400]);
    }
    expect(await snapshot(f)).toEqual(before);
  });

  it('needs the RFC 8058 body: without List-Unsubscribe=One-Click it is a 400 and nothing changes', async () => {
    const contact = u.contactIds[2]!;
    const before = await snapshot(f);
    const res = await f.call('POST', `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, contact, first)}`, undefined, 'List-Unsubscribe=Yes', FORM);
    expect(res.statusCode).toBe(400);
    expect(errorOf(res).issues![0]!.path).toBe('List-Unsubscribe');
    expect(await snapshot(f)).toEqual(before);
  });

  it('completes a sending campaign whose last queued message is cancelled', async () => {
    const v = await userWithContacts(f.engine, 'V', 1, { quota: 10 });
    const solo = await f.engine.campaigns.create({
      userId: v.userId,
      name: 'Solo',
      from: 'v@example.test',
      templates: [v.templateId],
      contacts: v.contactIds,
    });
    await f.engine.scheduler.processScheduledTasks();
    expect((await f.engine.campaigns.progress(solo.id)).status).toBe('sending');
    await f.call(
      'POST',
      `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, v.contactIds[0]!, solo.id)}`,
      undefined,
      'List-Unsubscribe=One-Click',
      FORM,
    );
    expect(await f.engine.campaigns.progress(solo.id)).toMatchObject({ status: 'completed', cancelled: 1, queued: 0 });
  });

  it('masks the token in request logs', () => {
    const token = unsubscribeToken(UNSUBSCRIBE_SECRET, u.contactIds[0]!, first);
    expect(f.logs.text).toContain('/u/[redacted]');
    expect(f.logs.text).not.toContain(token);
  });

  it('answers 404 when no unsubscribe secret is configured', async () => {
    const g = await httpFixture({ http: { unsubscribeSecret: '' } });
    try {
      const res = await g.call('GET', `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, 1, 1)}`);
      expect(res.statusCode).toBe(404);
    } finally {
      await g.close();
    }
  });
});

describe('bounce reports', () => {
  let f: HttpFixture;
  let u: Awaited<ReturnType<typeof userWithContacts>>;
  let w: Awaited<ReturnType<typeof userWithContacts>>;
  let campaign: number;
  let wCampaign: number;

  beforeAll(async () => {
    f = await httpFixture();
    u = await userWithContacts(f.engine, 'U', 4, { quota: 100 });
    w = await userWithContacts(f.engine, 'W', 2, { quota: 100 });
    // The same address belongs to U and to W (contacts are per user).
    await f.engine.contacts.bulkCreate(w.userId, [{ email: 'U4@example.test', tags: ['list'] }]);
    campaign = (
      await f.engine.campaigns.create({
        userId: u.userId,
        name: 'U',
        from: 'u@example.test',
        templates: [u.templateId],
        recipientRule: { type: 'all' },
      })
    ).id;
    wCampaign = (
      await f.engine.campaigns.create({
        userId: w.userId,
        name: 'W',
        from: 'w@example.test',
        templates: [w.templateId],
        recipientRule: { type: 'all' },
      })
    ).id;
    await f.engine.scheduler.processScheduledTasks();
  });
  afterAll(() => f.close());

  const contactOf = async (userId: number, email: string) =>
    Number(
      (
        await rows<{ id: string }>(f.engine.apiDb, 'SELECT id FROM contacts WHERE user_id = $u AND lower(email) = lower($e)', {
          u: userId,
          e: email,
        })
      )[0]!.id,
    );

  it('marks a hard bounce bounced and cancels its queued mail with a refund (admin token)', async () => {
    const id = await contactOf(u.userId, 'u1@example.test');
    const before = await credit(f, u.userId);
    const res = await f.call('POST', '/api/bounces', f.adminToken, {
      events: [{ type: 'hard_bounce', email: 'U1@Example.test', campaign_id: campaign, reason: '550 5.1.1 no such user' }],
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({
      events: 1,
      duplicates: 0,
      contacts_marked: 1,
      unmatched: [],
      cancelled: 1,
      refunded: 1,
      soft_bounces: 0,
      suppressed: 1, // on the owner's suppression list
      breakers: [],
    });
    expect(await rows(f.engine.apiDb, 'SELECT status FROM contacts WHERE id = $id', { id })).toEqual([{ status: 'bounced' }]);
    expect((await subtaskStatus(f, id)).map((r) => r.status)).toEqual(['cancelled']);
    expect(await credit(f, u.userId)).toBe(before + 1);
    expect(await rows(f.engine.apiDb, 'SELECT cancelled_count FROM tasks WHERE id = $id', { id: campaign })).toEqual([
      { cancelled_count: 1 },
    ]);
  });

  it('accepts the webhook secret; a complaint unsubscribes; campaign_id limits the match to its owner', async () => {
    const res = await f.call(
      'POST',
      '/api/bounces',
      undefined,
      { events: [{ type: 'complaint', email: 'u4@example.test', campaign_id: wCampaign }] },
      { 'x-fairsend-webhook-secret': WEBHOOK_SECRET },
    );
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ contacts_marked: 1, cancelled: 1 });
    expect(
      await rows(f.engine.apiDb, "SELECT user_id, status FROM contacts WHERE lower(email) = 'u4@example.test' ORDER BY user_id"),
    ).toEqual([
      { user_id: u.userId, status: 'active' },
      { user_id: w.userId, status: 'unsubscribed' },
    ]);
    // Without campaign_id, every user's contact with the address.
    const all = await f.call('POST', '/api/bounces', f.adminToken, { events: [{ type: 'hard_bounce', email: 'u4@example.test' }] });
    expect(all.json()).toMatchObject({ contacts_marked: 2, cancelled: 1 });
    expect(await rows(f.engine.apiDb, "SELECT status FROM contacts WHERE lower(email) = 'u4@example.test' ORDER BY user_id")).toEqual([
      { status: 'bounced' },
      { status: 'bounced' },
    ]);
  });

  it('counts soft bounces in error_logs without touching the contact', async () => {
    const body = {
      events: [
        { type: 'soft_bounce', email: 'u2@example.test', reason: '452 mailbox full' },
        { type: 'soft_bounce', email: 'u2@example.test', reason: '452 mailbox full' },
        { type: 'hard_bounce', email: 'nobody@example.test' },
      ],
    };
    const res = await f.call('POST', '/api/bounces', f.adminToken, body);
    expect(res.json()).toEqual({
      events: 3,
      duplicates: 0,
      contacts_marked: 0,
      unmatched: ['nobody@example.test'],
      cancelled: 0,
      refunded: 0,
      soft_bounces: 2,
      suppressed: 0,
      breakers: [],
    });
    // The third soft bounce within 7 days puts the address on its owner's suppression list.
    expect((await f.call('POST', '/api/bounces', f.adminToken, { events: [body.events[0]] })).json()).toMatchObject({ suppressed: 1 });
    expect(await rows(f.engine.apiDb, "SELECT message, count FROM error_logs WHERE error_type = 'soft_bounce'")).toEqual([
      { message: 'u2@example.test: 452 mailbox full', count: 3 },
    ]);
    expect(await rows(f.engine.apiDb, "SELECT status FROM contacts WHERE email = 'u2@example.test'")).toEqual([{ status: 'active' }]);
  });

  it('refuses a wrong secret (401), a user token (403) and bad events (400 with paths), changing nothing', async () => {
    const user = await f.user('Plain');
    const before = await snapshot(f);
    const event = { events: [{ type: 'hard_bounce', email: 'u3@example.test' }] };
    const wrong = await f.call('POST', '/api/bounces', undefined, event, { 'x-fairsend-webhook-secret': 'not-it' });
    expect(wrong.statusCode).toBe(401);
    expect((await f.call('POST', '/api/bounces', undefined, event)).statusCode).toBe(401);
    expect((await f.call('POST', '/api/bounces', user.token, event)).statusCode).toBe(403);
    const bad = await f.call('POST', '/api/bounces', f.adminToken, { events: [{ type: 'bounce', email: 'x' }] });
    expect(bad.statusCode).toBe(400);
    expect(errorOf(bad).issues!.map((i) => i.path)).toEqual(['events[0].type', 'events[0].email']);
    expect(await snapshot(f)).toEqual(before);
  });

  it('lets a service’s own webhook secret report only for that service', async () => {
    const g = await httpFixture({ http: { bounceWebhookSecret: { '7': 'secret-of-service-7-xxxxxxxx' } } });
    try {
      const headers = { 'x-fairsend-webhook-secret': 'secret-of-service-7-xxxxxxxx' };
      const ok = await g.call('POST', '/api/bounces', undefined, { events: [{ type: 'soft_bounce', email: 'a@example.org' }] }, headers);
      expect(ok.statusCode).toBe(200);
      const other = await g.call(
        'POST',
        '/api/bounces',
        undefined,
        { events: [{ type: 'soft_bounce', email: 'a@example.org', service_id: 8 }] },
        headers,
      );
      expect(other.statusCode).toBe(400);
      expect(errorOf(other).issues![0]!.path).toBe('events[0].service_id');
    } finally {
      await g.close();
    }
  });
});
