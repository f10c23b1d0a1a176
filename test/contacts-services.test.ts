import { DateTime } from 'luxon';
import { ValidationError } from '../services/kernel/errors.js';
import type { Engine } from '../src/engine.js';
import { createTestEngine, rows } from './helpers/db.js';

async function issuesOf(p: Promise<unknown>) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ValidationError);
  return (err as ValidationError).issues;
}

describe('contact import', () => {
  let engine: Engine;
  let user: number;
  beforeAll(async () => {
    engine = await createTestEngine();
    user = (await engine.users.create({ name: 'U', email: 'u@example.test', quota: 10 })).id;
  });
  afterAll(() => engine.close());

  it('lists every offending row and writes nothing of the batch', async () => {
    const issues = await issuesOf(
      engine.contacts.bulkCreate(user, [
        { email: 'good@example.test' },
        { email: 'not-an-email' },
        { email: 'also good@example.test' },
        { email: 'fine@example.test', tags: ['ok', ''] },
        { email: 'tz@example.test', timezone: 'Moon/Base' },
      ]),
    );
    expect(issues.map((i) => i.path)).toEqual(['contacts[1].email', 'contacts[2].email', 'contacts[3].tags[1]', 'contacts[4].timezone']);
    expect(issues[0]!.message).toBe('is not a valid email address');
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM contacts')).toEqual([{ n: 0 }]);
  });

  it('stores unicode names and SQL metacharacters in tags as given, IDN domains in punycode', async () => {
    const r = await engine.contacts.bulkCreate(user, [
      { email: 'jörg@bücher.example', name: "Jörg O'Brien; DROP TABLE users;--", tags: ["a'b", 'c"d', '%_\\'] },
    ]);
    const [c] = await rows<{ email: string; name: string; tags: string[] }>(
      engine.apiDb,
      'SELECT email, name, tags FROM contacts WHERE id = $id',
      {
        id: r.ids[0],
      },
    );
    expect(c).toEqual({ email: 'jörg@xn--bcher-kva.example', name: "Jörg O'Brien; DROP TABLE users;--", tags: ["a'b", 'c"d', '%_\\'] });
  });

  it('updates on re-import without reactivating an unsubscribed contact', async () => {
    const first = await engine.contacts.bulkCreate(user, [{ email: 'again@example.test', tags: ['x'], status: 'unsubscribed' }]);
    const second = await engine.contacts.bulkCreate(user, [{ email: 'AGAIN@example.test', name: 'Again', attributes: { k: 1 } }]);
    expect(first).toMatchObject({ created: 1, updated: 0 });
    expect(second).toMatchObject({ created: 0, updated: 1, ids: first.ids });
    const [c] = await rows(engine.apiDb, 'SELECT name, tags, status, attributes FROM contacts WHERE id = $id', { id: first.ids[0] });
    expect(c).toEqual({ name: 'Again', tags: ['x'], status: 'unsubscribed', attributes: { k: 1 } });
  });

  it('refuses an unknown user, an empty batch and a non-array', async () => {
    expect((await issuesOf(engine.contacts.bulkCreate(987654, [{ email: 'a@example.test' }])))[0]).toEqual({
      path: 'userId',
      message: 'user 987654 not found',
    });
    expect((await issuesOf(engine.contacts.bulkCreate(user, [])))[0]!.path).toBe('contacts');
    expect((await issuesOf(engine.contacts.bulkCreate(user, 'nope' as never)))[0]!.message).toBe('must be an array of contacts');
  });
});

describe('sending services', () => {
  let engine: Engine;
  // 2026-03-29 01:30 in Paris: the spring-forward day.
  let now = DateTime.fromISO('2026-03-29T01:30:00', { zone: 'Europe/Paris' });
  beforeAll(async () => {
    engine = await createTestEngine({ clock: () => now });
  });
  afterAll(() => engine.close());

  const base = { name: 'relay', transport: { host: '127.0.0.1', port: 2525 }, sendingRate: 1, dailyQuota: 100 };

  it('refuses negative or non-numeric rates and quotas, and unknown zones, naming the field', async () => {
    expect((await issuesOf(engine.services.create({ ...base, sendingRate: -1 })))[0]).toEqual({
      path: 'sendingRate',
      message: 'must not be negative',
    });
    expect((await issuesOf(engine.services.create({ ...base, sendingRate: 'fast' as never })))[0]).toEqual({
      path: 'sendingRate',
      message: 'must be a number of seconds',
    });
    expect((await issuesOf(engine.services.create({ ...base, dailyQuota: -5 })))[0]).toEqual({
      path: 'dailyQuota',
      message: 'must not be negative',
    });
    expect((await issuesOf(engine.services.create({ ...base, dailyQuota: 1.5 })))[0]).toEqual({
      path: 'dailyQuota',
      message: 'must be an integer',
    });
    expect((await issuesOf(engine.services.create({ ...base, quotaTimezone: 'Europe/Gondor' })))[0]).toEqual({
      path: 'quotaTimezone',
      message: 'is not a known IANA time zone',
    });
    expect((await issuesOf(engine.services.create({ ...base, transport: { host: 'h', port: 0 } })))[0]!.path).toBe('transport.port');
    expect((await issuesOf(engine.services.create({ ...base, userIds: [424242] })))[0]).toEqual({
      path: 'userIds',
      message: 'unknown user ids: 424242',
    });
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM email_services')).toEqual([{ n: 0 }]);
  });

  it('never returns the SMTP password, and reports quota with the next local midnight', async () => {
    const u = await engine.users.create({ name: 'Only', email: 'only@example.test', quota: 1 });
    const s = await engine.services.create({
      ...base,
      transport: { host: 'smtp.example.test', port: 587, auth: { user: 'mailer', pass: 's3cret-pass' } },
      quotaTimezone: 'Europe/Paris',
      userIds: [u.id],
    });
    expect(JSON.stringify(s)).not.toContain('s3cret-pass');
    expect(JSON.stringify(await engine.services.list())).not.toContain('s3cret-pass');
    // Port 587 without `secure`: STARTTLS required by default, certificates checked.
    expect(s.transport).toEqual({
      host: 'smtp.example.test',
      port: 587,
      secure: false,
      requireTLS: true,
      tlsMode: 'starttls-required',
      certificateChecking: true,
      privateCa: false,
      auth: { user: 'mailer' },
    });
    expect(s.userIds).toEqual([u.id]);
    await engine.apiDb.query('UPDATE email_services SET used_quota = 40 WHERE id = $id', { bind: { id: s.id } });
    const [q] = await engine.services.quota();
    expect(q).toMatchObject({ id: s.id, dailyQuota: 100, usedQuota: 40, remainingQuota: 60, healthy: true });
    // Midnight after the 23-hour day, in Paris summer time.
    expect(q!.resetsAt.toISOString()).toBe('2026-03-29T22:00:00.000Z');
    // After local midnight the stored day is stale: the full quota is available again.
    now = DateTime.fromISO('2026-03-30T00:00:01', { zone: 'Europe/Paris' });
    expect((await engine.services.quota())[0]).toMatchObject({ usedQuota: 0, remainingQuota: 100 });
  });

  it('updates rate, quota and users; null opens the service to all', async () => {
    const s = await engine.services.create({ ...base, name: 'upd' });
    const u = await engine.services.update(s.id, { sendingRate: 0.02, dailyQuota: 5000, userIds: null, enabled: false });
    expect(u).toMatchObject({ sendingRate: 0.02, dailyQuota: 5000, userIds: null, enabled: false });
    expect((await issuesOf(engine.services.update(s.id, {})))[0]!.message).toBe('must change at least one field');
    await expect(engine.services.update(999, { dailyQuota: 1 })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await issuesOf(engine.services.create({ ...base, name: 'upd' })))[0]).toEqual({
      path: 'name',
      message: 'a service named upd exists',
    });
  });
});
