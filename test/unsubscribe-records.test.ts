/**
 * Unsubscribe semantics (issue #17), over HTTP against real PostgreSQL: each unsubscribe is
 * recorded (when, from which campaign, how), the one-click POST takes only the RFC 8058 form body,
 * a token naming a campaign that does not exist is refused, and only an admin's re-activation with
 * a reason brings a contact back, recorded too.
 */
import { createToken } from '../services/auth.js';
import { unsubscribeToken } from '../services/delivery/unsubscribe.js';
import { rows } from './helpers/db.js';
import { httpFixture, UNSUBSCRIBE_SECRET, WEBHOOK_SECRET, type HttpFixture } from './helpers/http.js';
import { userWithContacts } from './helpers/scheduler.js';

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

describe('unsubscribe records and re-activation', () => {
  let f: HttpFixture;
  let u: Awaited<ReturnType<typeof userWithContacts>>;
  let owner: { id: number; token: string };
  let campaign: number;
  const statusOf = async (id: number) =>
    (await rows<{ status: string }>(f.engine.apiDb, 'SELECT status FROM contacts WHERE id = $id', { id }))[0]!.status;
  const events = async (id: number) =>
    rows<{
      method: string;
      task_id: string | null;
      from_status: string;
      to_status: string;
      actor_id: number | null;
      reason: string | null;
    }>(
      f.engine.apiDb,
      'SELECT method, task_id, from_status, to_status, actor_id, reason FROM contact_status_events WHERE contact_id = $id ORDER BY id',
      { id },
    );

  beforeAll(async () => {
    f = await httpFixture();
    u = await userWithContacts(f.engine, 'R', 6, { quota: 100 });
    owner = { id: u.userId, token: await createToken(f.engine, u.userId) };
    campaign = (
      await f.engine.campaigns.create({
        userId: u.userId,
        name: 'News',
        from: 'r@example.test',
        templates: [u.templateId],
        contacts: u.contactIds,
      })
    ).id;
  });
  afterAll(() => f.close());

  it('records a one-click POST with its campaign, and the page button as `page`', async () => {
    const [a, b] = u.contactIds as [number, number];
    const oneClick = await f.call(
      'POST',
      `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, a, campaign)}`,
      undefined,
      'List-Unsubscribe=One-Click',
      FORM,
    );
    expect(oneClick.statusCode).toBe(200);
    const page = await f.call('GET', `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, b, campaign)}`);
    expect(page.body).toContain('name="via" value="page"');
    const button = await f.call(
      'POST',
      `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, b, campaign)}`,
      undefined,
      'List-Unsubscribe=One-Click&via=page',
      FORM,
    );
    expect(button.statusCode).toBe(200);
    expect(await events(a)).toEqual([
      { method: 'one_click', task_id: String(campaign), from_status: 'active', to_status: 'unsubscribed', actor_id: null, reason: null },
    ]);
    expect((await events(b))[0]).toMatchObject({ method: 'page', task_id: String(campaign) });
    // A replayed token is accepted and changes nothing: no second record.
    await f.call('POST', `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, a, campaign)}`, undefined, 'List-Unsubscribe=One-Click', FORM);
    expect(await events(a)).toHaveLength(1);
    // Multipart, as RFC 8058 allows.
    const c = u.contactIds[2]!;
    const boundary = 'xYzZy';
    const multipart = await f.call(
      'POST',
      `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, c, campaign)}`,
      undefined,
      `--${boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--${boundary}--\r\n`,
      { 'content-type': `multipart/form-data; boundary=${boundary}` },
    );
    expect(multipart.statusCode).toBe(200);
    expect(await statusOf(c)).toBe('unsubscribed');
  });

  it('takes only the RFC 8058 form body: JSON, text and a wrong value change nothing', async () => {
    const d = u.contactIds[3]!;
    const url = `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, d, campaign)}`;
    const json = await f.call('POST', url, undefined, { 'List-Unsubscribe': 'One-Click' });
    expect(json.statusCode).toBe(415);
    const text = await f.call('POST', url, undefined, 'List-Unsubscribe=One-Click', { 'content-type': 'text/plain' });
    expect(text.statusCode).toBe(415);
    const wrong = await f.call('POST', url, undefined, 'List-Unsubscribe=Yes', FORM);
    expect(wrong.statusCode).toBe(400);
    const empty = await f.call('POST', url, undefined, '', FORM);
    expect(empty.statusCode).toBe(400);
    expect(await statusOf(d)).toBe('active');
    expect(await events(d)).toEqual([]);
  });

  it('refuses a validly signed token whose campaign does not exist (GET and POST), changing nothing', async () => {
    const d = u.contactIds[3]!;
    const url = `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, d, campaign + 1000)}`;
    expect((await f.call('GET', url)).statusCode).toBe(400);
    expect((await f.call('POST', url, undefined, 'List-Unsubscribe=One-Click', FORM)).statusCode).toBe(400);
    // Nor another user's campaign.
    const other = await userWithContacts(f.engine, 'O', 1, { quota: 10 });
    const theirs = (
      await f.engine.campaigns.create({
        userId: other.userId,
        name: 'T',
        from: 'o@example.test',
        templates: [other.templateId],
        contacts: other.contactIds,
      })
    ).id;
    expect(
      (await f.call('POST', `/u/${unsubscribeToken(UNSUBSCRIBE_SECRET, d, theirs)}`, undefined, 'List-Unsubscribe=One-Click', FORM))
        .statusCode,
    ).toBe(400);
    expect(await statusOf(d)).toBe('active');
  });

  it('records API unsubscribes and complaints, and refuses setting an unsubscribed contact active without a re-activation', async () => {
    const [, , , d, e] = u.contactIds as number[];
    await f.engine.contacts.setStatus(u.userId, d!, 'unsubscribed');
    expect((await events(d!))[0]).toMatchObject({ method: 'api', to_status: 'unsubscribed', task_id: null });
    const complaint = await f.call(
      'POST',
      '/api/bounces',
      undefined,
      { events: [{ type: 'complaint', email: 'r5@example.test' }] },
      {
        'x-fairsend-webhook-secret': WEBHOOK_SECRET,
      },
    );
    expect(complaint.statusCode).toBeLessThan(300);
    expect(await statusOf(e!)).toBe('unsubscribed');
    expect((await events(e!))[0]).toMatchObject({ method: 'complaint', from_status: 'active', to_status: 'unsubscribed' });
    await expect(f.engine.contacts.setStatus(u.userId, d!, 'active')).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(await statusOf(d!)).toBe('unsubscribed');
  });

  it('re-activates only through an admin with a reason, over HTTP, and records who and why', async () => {
    const a = u.contactIds[0]!;
    const url = `/api/contacts/${a}/reactivate`;
    expect((await f.call('POST', url, owner.token, { reason: 'asked again' })).statusCode).toBe(403);
    expect((await f.call('POST', url, f.adminToken, {})).statusCode).toBe(400);
    expect((await f.call('POST', url, f.adminToken, { reason: '   ' })).statusCode).toBe(400);
    expect(await statusOf(a)).toBe('unsubscribed');
    expect(await f.engine.suppressions.isSuppressed(u.userId, 'r1@example.test')).toBe(true);
    const ok = await f.call('POST', url, f.adminToken, { reason: 'Subscriber asked by phone, ticket 42' });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({
      contact_id: a,
      from_status: 'unsubscribed',
      to_status: 'active',
      method: 'reactivation',
      actor_id: f.adminId,
    });
    expect(await statusOf(a)).toBe('active');
    expect(await f.engine.suppressions.isSuppressed(u.userId, 'r1@example.test')).toBe(false);
    expect((await f.call('POST', url, f.adminToken, { reason: 'again' })).statusCode).toBe(409);
    const history = await f.call('GET', `/api/contacts/${a}/status-history`, owner.token);
    expect(history.statusCode).toBe(200);
    expect(history.json<{ events: { method: string; reason: string | null }[] }>().events.map((e) => [e.method, e.reason])).toEqual([
      ['one_click', null],
      ['reactivation', 'Subscriber asked by phone, ticket 42'],
    ]);
    const stranger = await f.user('Stranger', 1);
    expect((await f.call('GET', `/api/contacts/${a}/status-history`, stranger.token)).statusCode).toBe(404);
  });
});
