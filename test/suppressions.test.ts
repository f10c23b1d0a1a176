/**
 * The suppression list (services/suppressions.ts) through the programmatic API, HTTP and the CLI;
 * its effect at generation; hard bounces, complaints and soft bounces past the limit putting
 * addresses on it (services/bounces.ts); and the safety breakers (services/breakers.ts) with
 * injected complaints and bounces. Real PostgreSQL throughout.
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { DateTime } from 'luxon';
import { runCli } from '../src/cli/index.js';
import type { Engine } from '../src/engine.js';
import { createTestDatabase, createTestEngine, rows } from './helpers/db.js';
import { httpFixture, errorOf, type HttpFixture } from './helpers/http.js';
import { userWithContacts as withContacts } from './helpers/scheduler.js';

describe('suppression list', () => {
  let url: string;
  let engine: Engine;
  let now = DateTime.fromISO('2026-11-30T10:00:00Z');
  beforeAll(async () => {
    url = await createTestDatabase();
    engine = await createTestEngine({ databaseUrl: url, clock: () => now, breakerMinSent: 10 });
  });
  afterAll(async () => engine.close());

  /** A user with `n` contacts (name1@..., name2@...) and a template. */
  const userWithContacts = async (e: Engine, name: string, n: number) => {
    if (n > 0) return withContacts(e, name, n);
    const user = await e.users.create({ name, email: `${name.toLowerCase()}@example.test`, quota: 1_000_000 });
    const template = await e.templates.create(user.id, { name: 't', subject: 's', text: 'x' });
    return { userId: user.id, contactIds: [] as number[], templateId: template.id };
  };

  const generate = async (userId: number, templateId: number) => {
    const c = await engine.campaigns.create({
      userId,
      name: 'c',
      from: 'me@example.test',
      templates: [templateId],
      recipientRule: { type: 'all' },
    });
    const [g] = await engine.scheduler.processScheduledTasks();
    expect(g?.taskId).toBe(c.id);
    const queued = await rows<{ email: string }>(engine.apiDb, 'SELECT email FROM subtasks WHERE task_id = $id ORDER BY contact_id', {
      id: c.id,
    });
    // Written in contact-id order, whatever the suppression filter (the primary key's order).
    const physical = await rows<{ contact_id: string }>(engine.apiDb, 'SELECT contact_id FROM subtasks WHERE task_id = $id ORDER BY ctid', {
      id: c.id,
    });
    const ids = physical.map((r) => Number(r.contact_id));
    expect(ids).toEqual([...ids].sort((x, y) => x - y));
    return { id: c.id, generated: g!.generated, emails: queued.map((r) => r.email) };
  };

  it('adds, lists, removes, imports and exports, per user and globally, comparing addresses case-insensitively', async () => {
    const a = await userWithContacts(engine, 'Ann', 0);
    const r = await engine.suppressions.add({ userId: a.userId, emails: ['Gone@Example.test', 'x@example.test'], reason: 'hard_bounce' });
    expect(r).toMatchObject({ added: 2, existing: 0 });
    expect(await engine.suppressions.add({ userId: a.userId, emails: ['GONE@example.test'] })).toMatchObject({ added: 0, existing: 1 });
    expect(await engine.suppressions.isSuppressed(a.userId, 'gone@EXAMPLE.test')).toBe(true);
    const page = await engine.suppressions.list({ userId: a.userId, limit: 1 });
    expect(page.items.map((s) => [s.email, s.reason])).toEqual([['gone@example.test', 'hard_bounce']]);
    const next = await engine.suppressions.list({ userId: a.userId, limit: 1, cursor: page.nextCursor! });
    expect(next.items.map((s) => s.email)).toEqual(['x@example.test']);
    expect(next.nextCursor).toBeNull();
    // The global list is apart from the user's, and applies to them.
    expect((await engine.suppressions.list({ userId: null })).items).toEqual([]);
    await engine.suppressions.add({ userId: null, emails: ['spamtrap@example.test'] });
    expect(await engine.suppressions.isSuppressed(a.userId, 'spamtrap@example.test')).toBe(true);
    expect(await engine.suppressions.remove({ userId: a.userId, email: 'X@example.test' })).toEqual({ removed: 1 });
    expect(await engine.suppressions.isSuppressed(a.userId, 'x@example.test')).toBe(false);

    // Import: all rows or none; a bad row is named by its line.
    await expect(
      engine.suppressions.importCsv(a.userId, 'email,reason\nok@example.test,manual\nnot-an-address,manual\n'),
    ).rejects.toMatchObject({
      code: 'VALIDATION',
      issues: [{ path: 'csv line 3.email', message: 'is not a valid email address' }],
    });
    expect(await engine.suppressions.isSuppressed(a.userId, 'ok@example.test')).toBe(false);
    const imp = await engine.suppressions.importCsv(
      a.userId,
      'Email,Reason,Detail\nok@example.test,complaint,"from FBL, Yahoo"\nGONE@example.test,,\n',
    );
    expect(imp).toMatchObject({ rows: 2, added: 1, existing: 1 });
    const csv = await engine.suppressions.exportCsv(a.userId);
    expect(csv.split('\n')[0]).toBe('email,reason,source,detail,created_at');
    expect(csv).toContain('ok@example.test,complaint,import,"from FBL, Yahoo",');
    expect(csv.trim().split('\n')).toHaveLength(3);
    await expect(engine.suppressions.add({ userId: 999_999, emails: ['a@example.test'] })).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('excludes suppressed addresses at generation (own list and global list, not another user’s), and at the count', async () => {
    const b = await userWithContacts(engine, 'Bob', 5);
    const c = await userWithContacts(engine, 'Cid', 0);
    await engine.contacts.bulkCreate(c.userId, [{ email: 'bob2@example.test' }]);
    await engine.suppressions.add({ userId: b.userId, emails: ['BOB1@example.test'] });
    await engine.suppressions.add({ userId: null, emails: ['bob3@example.test'] });
    await engine.suppressions.add({ userId: c.userId, emails: ['bob4@example.test'] }); // Cid's list: not Bob's business
    await engine.suppressions.add({ userId: b.userId, emails: ['bob2@example.test'] }); // Bob's list: not Cid's
    const before = (await engine.users.get(b.userId)).remainingQuota;
    const g = await generate(b.userId, b.templateId);
    expect(g.emails).toEqual(['bob4@example.test', 'bob5@example.test']);
    expect((await engine.users.get(b.userId)).remainingQuota).toBe(before - 2);
    const gc = await generate(c.userId, c.templateId);
    expect(gc.emails).toEqual(['bob2@example.test']);
  });

  it('cancels the queued mail of an address when it is added, refunding the credit', async () => {
    const d = await userWithContacts(engine, 'Dee', 3);
    const g = await generate(d.userId, d.templateId);
    const before = (await engine.users.get(d.userId)).remainingQuota;
    const r = await engine.suppressions.add({ userId: d.userId, emails: ['dee2@example.test'] });
    expect(r).toMatchObject({ added: 1, cancelled: 1, refunded: 1 });
    expect((await engine.users.get(d.userId)).remainingQuota).toBe(before + 1);
    const st = await rows<{ email: string; status: string }>(
      engine.apiDb,
      'SELECT email, status FROM subtasks WHERE task_id = $id ORDER BY contact_id',
      { id: g.id },
    );
    expect(st.map((s) => s.status)).toEqual(['queued', 'cancelled', 'queued']);
  });

  it('puts hard bounces and complaints on the owner’s list only, and soft bounces past 3 in 7 days', async () => {
    const e = await userWithContacts(engine, 'Eve', 4);
    const f = await userWithContacts(engine, 'Fay', 0);
    await engine.contacts.bulkCreate(f.userId, [{ email: 'eve1@example.test' }]);
    const g = await generate(e.userId, e.templateId);
    const r = await engine.bounces.record(
      [
        { type: 'hard_bounce', email: 'eve1@example.test', campaignId: g.id, reason: '550 5.1.1 no such user' },
        { type: 'complaint', email: 'EVE2@example.test', campaignId: g.id },
      ],
      'test',
    );
    expect(r).toMatchObject({ events: 2, contactsMarked: 2, suppressed: 2, cancelled: 2, unmatched: [] });
    expect(await engine.suppressions.isSuppressed(e.userId, 'eve1@example.test')).toBe(true);
    expect(await engine.suppressions.isSuppressed(f.userId, 'eve1@example.test')).toBe(false);
    const entry = (await engine.suppressions.list({ userId: e.userId, email: 'eve2@example.test' })).items[0];
    expect(entry).toMatchObject({ reason: 'complaint', source: 'test' });
    const events = await rows<{ type: string; task_id: string; user_id: number }>(
      engine.apiDb,
      'SELECT type, task_id, user_id FROM bounce_events WHERE task_id = $id ORDER BY id',
      { id: g.id },
    );
    expect(events.map((x) => [x.type, Number(x.task_id), x.user_id])).toEqual([
      ['hard_bounce', g.id, e.userId],
      ['complaint', g.id, e.userId],
    ]);

    // Soft bounces: two now, one 8 days later (the first two are out of the window), then two more.
    const soft = () =>
      engine.bounces.record([{ type: 'soft_bounce', email: 'eve3@example.test', campaignId: g.id, reason: '452 4.2.2 full' }]);
    expect((await soft()).suppressed).toBe(0);
    expect((await soft()).suppressed).toBe(0);
    now = now.plus({ days: 8 });
    expect((await soft()).suppressed).toBe(0);
    now = now.plus({ days: 1 });
    expect((await soft()).suppressed).toBe(0);
    expect(await engine.suppressions.isSuppressed(e.userId, 'eve3@example.test')).toBe(false);
    now = now.plus({ days: 1 });
    expect((await soft()).suppressed).toBe(1);
    const s = (await engine.suppressions.list({ userId: e.userId, email: 'eve3@example.test' })).items[0];
    expect(s).toMatchObject({ reason: 'soft_bounce', detail: '3 soft bounces within 7 days' });
  });

  it('trips the complaint breaker past 0.3 % of sent (with the minimum sample), shows why, and re-arms on resume', async () => {
    const h = await userWithContacts(engine, 'Hal', 1000);
    const g = await generate(h.userId, h.templateId);
    // 999 of 1000 sent (as the scheduler's counters would have them): below the default minimum sample of 1000.
    const p = engine.breakers.policy();
    expect(p).toEqual({ complaintPercent: 0.3, hardBouncePercent: 5, minSent: 10 }); // this engine's minimum is 10
    await engine.apiDb.query("UPDATE subtasks SET status = 'sent' WHERE task_id = $id", { bind: { id: g.id } });
    await engine.apiDb.query('UPDATE tasks SET sent_count = 1000 WHERE id = $id', { bind: { id: g.id } });
    const complain = (i: number) => engine.bounces.record([{ type: 'complaint', email: `hal${i}@example.test`, campaignId: g.id }]);
    // 3 complaints of 1000 is 0.3 %: not past it.
    for (const i of [1, 2, 3]) expect((await complain(i)).breakers).toEqual([]);
    expect((await engine.campaigns.progress(g.id)).status).toBe('sending');
    const tripped = await complain(4);
    expect(tripped.breakers).toEqual([{ campaignId: g.id, reason: 'complaint breaker: 4 complaints of 1000 sent (0.40 %, limit 0.3 %)' }]);
    const progress = await engine.campaigns.progress(g.id);
    expect(progress).toMatchObject({ status: 'paused', pauseReason: tripped.breakers[0]!.reason });

    // Resume re-arms: the reason is gone, and the next complaint over the limit trips it again.
    await engine.campaigns.resume(g.id);
    expect(await engine.campaigns.progress(g.id)).toMatchObject({ status: 'sending', pauseReason: null });
    expect((await complain(5)).breakers).toHaveLength(1);
    expect((await engine.campaigns.progress(g.id)).status).toBe('paused');
  });

  it('trips the hard-bounce breaker past 5 %, never below the minimum sample', async () => {
    const k = await userWithContacts(engine, 'Kim', 40); // 20 of them sent, as the counters say below
    const g = await generate(k.userId, k.templateId);
    await engine.apiDb.query('UPDATE tasks SET sent_count = 9 WHERE id = $id', { bind: { id: g.id } });
    // 9 sent: under the minimum of 10, however bad the rate.
    expect((await engine.bounces.record([{ type: 'hard_bounce', email: 'kim1@example.test', campaignId: g.id }])).breakers).toEqual([]);
    await engine.apiDb.query('UPDATE tasks SET sent_count = 20 WHERE id = $id', { bind: { id: g.id } });
    // 2 of 20 is 10 %: over 5 %.
    const r = await engine.bounces.record([{ type: 'hard_bounce', email: 'kim2@example.test', campaignId: g.id }]);
    expect(r.breakers).toEqual([{ campaignId: g.id, reason: 'hard-bounce breaker: 2 hard bounces of 20 sent (10.00 %, limit 5 %)' }]);
  });

  it('pauses a user across campaigns, holds back new ones, and resumes only what it paused', async () => {
    const u = await userWithContacts(engine, 'Uma', 3);
    const g1 = await generate(u.userId, u.templateId);
    const g2 = await generate(u.userId, u.templateId);
    await engine.campaigns.pause(g2.id); // paused by hand: stays paused after the user resumes
    const paused = await engine.breakers.pauseUser(u.userId, 'complaints across campaigns');
    expect(paused.campaigns).toEqual([g1.id]);
    expect(await engine.campaigns.progress(g1.id)).toMatchObject({
      status: 'paused',
      pauseReason: 'user paused: complaints across campaigns',
    });
    const later = await engine.campaigns.create({
      userId: u.userId,
      name: 'later',
      from: 'me@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    expect(await engine.scheduler.processScheduledTasks()).toEqual([]);
    const resumed = await engine.breakers.resumeUser(u.userId);
    expect(resumed.campaigns).toEqual([g1.id]);
    expect((await engine.campaigns.progress(g1.id)).status).toBe('sending');
    expect((await engine.campaigns.progress(g2.id)).status).toBe('paused');
    expect((await engine.scheduler.processScheduledTasks()).map((r) => r.taskId)).toEqual([later.id]);
  });
});

describe('suppression list over HTTP and the CLI', () => {
  let f: HttpFixture;
  beforeAll(async () => {
    f = await httpFixture();
  });
  afterAll(async () => f.close());

  it('lets a user manage their own list, an admin any list and the global one', async () => {
    const u = await f.user('Ola');
    const other = await f.user('Pam');
    const add = await f.call('POST', '/api/suppressions', u.token, { emails: ['A@example.test', 'b@example.test'], reason: 'manual' });
    expect(add.statusCode).toBe(200);
    expect(add.json()).toMatchObject({ added: 2, existing: 0 });
    const list = await f.call('GET', '/api/suppressions?limit=1', u.token);
    expect(list.json()).toMatchObject({ suppressions: [{ email: 'a@example.test', user_id: u.id, reason: 'manual', source: 'http' }] });
    const next = list.json<{ next_after_id: number }>().next_after_id;
    expect((await f.call('GET', `/api/suppressions?after_id=${next}`, u.token)).json()).toMatchObject({
      suppressions: [{ email: 'b@example.test' }],
      next_after_id: null,
    });
    expect((await f.call('GET', `/api/suppressions?user_id=${other.id}`, u.token)).statusCode).toBe(403);
    const global = await f.call('POST', '/api/suppressions?global=true', u.token, { emails: ['c@example.test'] });
    expect(global.statusCode).toBe(403);
    expect(errorOf(global).message).toContain('global');
    expect((await f.call('POST', '/api/suppressions?global=true', f.adminToken, { emails: ['c@example.test'] })).json()).toMatchObject({
      added: 1,
    });
    expect(
      (await f.call('GET', `/api/suppressions?user_id=${u.id}`, f.adminToken)).json<{ suppressions: unknown[] }>().suppressions,
    ).toHaveLength(2);
    const bad = await f.call('POST', '/api/suppressions', u.token, { emails: ['nope'] });
    expect(bad.statusCode).toBe(400);
    expect(errorOf(bad).issues?.[0]?.path).toBe('emails[0]');

    const del = await f.call('DELETE', '/api/suppressions/A%40example.test', u.token);
    expect(del.json()).toEqual({ removed: 1 });

    const imp = await f.call('POST', '/api/suppressions/import', u.token, 'email,reason\nd@example.test,complaint\n', {
      'content-type': 'text/csv',
    });
    expect(imp.statusCode).toBe(200);
    expect(imp.json()).toMatchObject({ rows: 1, added: 1 });
    const exp = await f.call('GET', '/api/suppressions/export', u.token);
    expect(exp.headers['content-type']).toMatch(/^text\/csv/);
    expect(
      exp.body
        .trim()
        .split('\n')
        .map((l) => l.split(',').slice(0, 3).join(',')),
    ).toEqual(['email,reason,source', 'b@example.test,manual,http', 'd@example.test,complaint,http-import']);
  });

  it('runs add, list, import, export and remove from the CLI, and user pause/resume', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fairsend-supp-'));
    const url = f.engine.databaseUrl;
    const u = await f.engine.users.create({ name: 'Cli', email: 'cli@example.test', quota: 10 });
    const run = async (...args: string[]) => {
      let text = '';
      let err = '';
      const sink = (fn: (s: string) => void) => new Writable({ write: (c: Buffer, _e, cb) => (fn(c.toString()), cb()) });
      const code = await runCli(['node', 'fairsend', ...args], {
        stdout: sink((s) => (text += s)),
        stderr: sink((s) => (err += s)),
        env: { DATABASE_URL: url, LOG_LEVEL: 'silent' },
      });
      return { code, out: text, err };
    };
    expect(
      await run('suppressions', 'add', '--user', String(u.id), 'x@example.test', 'Y@example.test', '--reason', 'complaint'),
    ).toMatchObject({
      code: 0,
      out: '2 added, 0 already listed; 0 queued messages cancelled\n',
    });
    const list = await run('suppressions', 'list', '--user', String(u.id));
    expect(list.out).toMatch(/x@example\.test\s+complaint\s+cli/);
    expect(list.out).toMatch(/y@example\.test/);
    const file = join(dir, 'in.csv');
    await writeFile(file, 'email\nz@example.test\n');
    expect((await run('suppressions', 'import', '--global', file)).out).toBe(
      '1 rows: 1 added, 0 already listed; 0 queued messages cancelled\n',
    );
    const out = join(dir, 'out.csv');
    expect((await run('suppressions', 'export', '--global', '--output', out)).code).toBe(0);
    expect(await readFile(out, 'utf8')).toMatch(/\nz@example\.test,manual,cli-import,,/);
    expect((await run('suppressions', 'remove', '--user', String(u.id), 'x@example.test')).out).toBe('x@example.test removed\n');
    const noScope = await run('suppressions', 'list');
    expect(noScope).toMatchObject({ code: 1 });
    expect(noScope.err).toContain('--user ID, or --global');
    expect((await run('users', 'pause', String(u.id), '--reason', 'review')).out).toBe(`user #${u.id} paused; campaigns paused: none\n`);
    expect(await f.engine.breakers.userPause(u.id)).toBe('review');
    expect((await run('users', 'resume', String(u.id))).code).toBe(0);
    expect(await f.engine.breakers.userPause(u.id)).toBeNull();
  });
});

describe('unsubscribes and the suppression list', () => {
  it('puts a one-click unsubscribe on the owner’s list, so a later campaign leaves the address out', async () => {
    const { unsubscribeContact } = await import('../services/unsubscribes.js');
    const engine = await createTestEngine();
    try {
      const u = await withContacts(engine, 'Uno', 2);
      await unsubscribeContact(engine.apiDb, u.contactIds[0]!);
      expect(await engine.suppressions.isSuppressed(u.userId, 'uno1@example.test')).toBe(true);
      // Even set active behind fairsend's back (the API refuses it without a re-activation), the
      // contact stays out of campaigns while the address is suppressed.
      await engine.apiDb.query("UPDATE contacts SET status = 'active' WHERE id = $id", { bind: { id: u.contactIds[0]! } });
      await engine.campaigns.create({
        userId: u.userId,
        name: 'c',
        from: 'me@example.test',
        templates: [u.templateId],
        recipientRule: { type: 'all' },
      });
      expect((await engine.scheduler.processScheduledTasks())[0]?.generated).toBe(1);
    } finally {
      await engine.close();
    }
  });
});
