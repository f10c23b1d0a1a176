/**
 * GET /api/campaigns/:id/recipients and POST /api/campaigns/:id/retry over HTTP (fastify inject,
 * real PostgreSQL): snake_case pages with a cursor, the status filter, validation errors naming the
 * field, another user's campaign as 404, the credit check as 422 with nothing changed.
 */
import { rows } from './helpers/db.js';
import { httpFixture, type HttpFixture } from './helpers/http.js';

describe('campaign recipients and retry over HTTP', () => {
  let f: HttpFixture;
  let alice: { id: number; token: string };
  let bob: { id: number; token: string };
  let campaign: number;

  beforeAll(async () => {
    f = await httpFixture();
    alice = await f.user('Alice', 5);
    bob = await f.user('Bob', 5);
    const { ids } = await f.engine.contacts.bulkCreate(
      alice.id,
      Array.from({ length: 5 }, (_, i) => ({ email: `hr${i + 1}@example.org` })),
    );
    const tpl = await f.engine.templates.create(alice.id, { name: 't', subject: 's', text: 'x' });
    const c = await f.engine.campaigns.create({
      userId: alice.id,
      name: 'c',
      from: 'c@example.org',
      templates: [tpl.id],
      contacts: ids,
    });
    campaign = c.id;
    await f.engine.scheduler.processScheduledTasks();
    // As the scheduler would leave it: two failed (one with an attempt record), the rest sent.
    await f.engine.apiDb.query(
      `UPDATE subtasks SET status = CASE WHEN contact_id IN ($a, $b) THEN 'failed' ELSE 'sent' END, attempts = 1,
              last_error = CASE WHEN contact_id IN ($a, $b) THEN 'smtp_554: refused' END WHERE task_id = $t`,
      { bind: { t: campaign, a: ids[1], b: ids[3] } },
    );
    await f.engine.apiDb.query(
      `UPDATE tasks SET status = 'completed', sent_count = 3, failed_count = 2, completed_at = now() WHERE id = $t`,
      { bind: { t: campaign } },
    );
    await f.engine.apiDb.query(
      `INSERT INTO send_attempts (task_id, contact_id, attempted_at, service_id, provider, result, smtp_code, enhanced_code, reply, duration_ms)
       VALUES ($t, $c, now(), NULL, 'example.org', 'permanent', 554, '5.7.1', '554 5.7.1 refused', 9)`,
      { bind: { t: campaign, c: ids[1] } },
    );
  });
  afterAll(() => f.close());

  it('pages through the recipients in snake_case, with the last reply and a cursor', async () => {
    const first = await f.call('GET', `/api/campaigns/${campaign}/recipients?limit=2`, alice.token);
    expect(first.statusCode).toBe(200);
    const p1 = first.json<{ recipients: Record<string, unknown>[]; next_cursor: string | null }>();
    expect(p1.recipients.map((r) => [r.email, r.status])).toEqual([
      ['hr1@example.org', 'sent'],
      ['hr2@example.org', 'failed'],
    ]);
    expect(p1.recipients[1]).toMatchObject({
      last_error: 'smtp_554: refused',
      last_reply: { result: 'permanent', code: 554, enhanced_code: '5.7.1', text: '554 5.7.1 refused', duration_ms: 9 },
    });
    expect(p1.recipients[0]!.last_reply).toBeNull();
    const all: string[] = p1.recipients.map((r) => String(r.email));
    let cursor = p1.next_cursor;
    while (cursor) {
      const res = await f.call('GET', `/api/campaigns/${campaign}/recipients?limit=2&cursor=${encodeURIComponent(cursor)}`, alice.token);
      const page = res.json<{ recipients: { email: string }[]; next_cursor: string | null }>();
      all.push(...page.recipients.map((r) => r.email));
      cursor = page.next_cursor;
    }
    expect(all).toEqual(['hr1@example.org', 'hr2@example.org', 'hr3@example.org', 'hr4@example.org', 'hr5@example.org']);
    const failed = await f.call('GET', `/api/campaigns/${campaign}/recipients?status=failed,unknown`, alice.token);
    expect(failed.json<{ recipients: { email: string }[] }>().recipients.map((r) => r.email)).toEqual([
      'hr2@example.org',
      'hr4@example.org',
    ]);
  });

  it('refuses a bad status or cursor with the field named; another user gets 404', async () => {
    const bad = await f.call('GET', `/api/campaigns/${campaign}/recipients?status=lost`, alice.token);
    expect(bad.statusCode).toBe(400);
    expect(bad.json<{ error: { issues: { path: string }[] } }>().error.issues[0]!.path).toMatch(/^status/);
    const badCursor = await f.call('GET', `/api/campaigns/${campaign}/recipients?cursor=xyz`, alice.token);
    expect(badCursor.statusCode).toBe(400);
    expect(badCursor.json<{ error: { issues: { path: string }[] } }>().error.issues[0]!.path).toBe('cursor');
    expect((await f.call('GET', `/api/campaigns/${campaign}/recipients`, bob.token)).statusCode).toBe(404);
    expect((await f.call('POST', `/api/campaigns/${campaign}/retry`, bob.token, {})).statusCode).toBe(404);
  });

  it('retries with the user’s credit: 422 QUOTA_EXCEEDED and nothing changed without it, then re-queued', async () => {
    const before = await rows(f.engine.apiDb, 'SELECT contact_id, status FROM subtasks WHERE task_id = $t ORDER BY 1', { t: campaign });
    const refused = await f.call('POST', `/api/campaigns/${campaign}/retry`, alice.token, { statuses: ['failed'] });
    expect(refused.statusCode).toBe(422);
    expect(refused.json()).toMatchObject({ error: { code: 'QUOTA_EXCEEDED', required: 2, available: 0 } });
    expect(await rows(f.engine.apiDb, 'SELECT contact_id, status FROM subtasks WHERE task_id = $t ORDER BY 1', { t: campaign })).toEqual(
      before,
    );
    const badStatus = await f.call('POST', `/api/campaigns/${campaign}/retry`, alice.token, { statuses: ['sent'] });
    expect(badStatus.statusCode).toBe(400);
    await f.engine.users.addQuota(alice.id, 2);
    const ok = await f.call('POST', `/api/campaigns/${campaign}/retry`, alice.token, { statuses: ['failed'] });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({
      campaign_id: campaign,
      status: 'sending',
      requeued: 2,
      failed: 2,
      unknown: 0,
      skipped_suppressed: 0,
      skipped_inactive: 0,
      remaining_credit: 0,
    });
    const queued = await f.call('GET', `/api/campaigns/${campaign}/recipients?status=queued`, alice.token);
    expect(queued.json<{ recipients: { email: string }[] }>().recipients.map((r) => r.email)).toEqual([
      'hr2@example.org',
      'hr4@example.org',
    ]);
  });
});
