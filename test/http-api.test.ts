/**
 * The REST API through fastify's inject(), against a real PostgreSQL database: authentication and
 * isolation between users, validation errors with field paths, every resource route, error
 * mapping (400, 401, 403, 404, 409, 413, 415, 422), secret redaction in answers and logs.
 */
import { createLogger } from '../services/kernel/logger.js';
import { NotFoundError } from '../services/kernel/errors.js';
import { createHttpServer, type JobsApi } from '../src/http/server.js';
import { rows } from './helpers/db.js';
import { errorOf, httpFixture, type HttpFixture } from './helpers/http.js';

const SMTP_PASSWORD = 'hunter2-very-secret-smtp-password';

describe('HTTP API', () => {
  let f: HttpFixture;
  let alice: { id: number; token: string };
  let bob: { id: number; token: string };
  let aliceTemplate: number;
  let aliceCampaign: number;
  let aliceContacts: number[];

  beforeAll(async () => {
    f = await httpFixture();
    alice = await f.user('Alice', 100);
    bob = await f.user('Bob', 100);
    const contacts = await f.call('POST', '/api/contacts', alice.token, {
      contacts: [
        { email: 'a1@example.org', name: 'A One', tags: ['news'] },
        { email: 'a2@example.org', name: 'A Two', tags: ['news'] },
        { email: 'a3@example.org', name: 'A Three', tags: ['vip'] },
      ],
    });
    expect(contacts.statusCode).toBe(200);
    aliceContacts = contacts.json<{ ids: number[] }>().ids;
    const tpl = await f.call('POST', '/api/templates', alice.token, { name: 'Hello', subject: 'Hi {{name}}', text: 'Hello {{name}}' });
    expect(tpl.statusCode).toBe(201);
    aliceTemplate = tpl.json<{ id: number }>().id;
    const c = await f.call('POST', '/api/campaigns', alice.token, {
      name: 'Alice news',
      from: 'news@alice.example',
      templates: [aliceTemplate],
      recipient_rule: { type: 'tag_based', include_tags: ['news'] },
      scheduled_at: '2030-01-01T09:00:00Z',
    });
    expect(c.statusCode).toBe(201);
    aliceCampaign = c.json<{ id: number }>().id;
  });
  afterAll(() => f.close());

  describe('authentication and isolation', () => {
    it('answers 401 without a token and with a bad one, with WWW-Authenticate', async () => {
      const none = await f.call('GET', '/api/campaigns');
      expect(none.statusCode).toBe(401);
      expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
      expect(errorOf(none).code).toBe('UNAUTHORIZED');
      const bad = await f.call('GET', '/api/campaigns', 'fst_' + 'x'.repeat(43));
      expect(bad.statusCode).toBe(401);
      const malformed = await f.call('GET', '/api/campaigns', undefined, undefined, { authorization: 'Basic YWxhZGRpbjpvcGVu' });
      expect(malformed.statusCode).toBe(401);
    });

    it('answers 401 before validating, so anonymous callers learn nothing about input', async () => {
      const res = await f.call('POST', '/api/campaigns', undefined, { nonsense: true });
      expect(res.statusCode).toBe(401);
    });

    it('lets only admins manage services and users and start or stop the scheduler (403)', async () => {
      const svc = await f.call('POST', '/api/services', alice.token, {
        name: 'mine',
        transport: { host: '127.0.0.1', port: 25 },
        sending_rate: 1,
        daily_quota: 10,
      });
      expect(svc.statusCode).toBe(403);
      expect(errorOf(svc).code).toBe('FORBIDDEN');
      expect((await f.call('GET', '/api/users', alice.token)).statusCode).toBe(403);
      expect((await f.call('POST', '/api/users', alice.token, { name: 'X', email: 'x@example.org', quota: 1 })).statusCode).toBe(403);
      expect((await f.call('POST', '/api/scheduler/start', alice.token)).statusCode).toBe(403);
      expect((await f.call('POST', '/api/scheduler/stop', alice.token)).statusCode).toBe(403);
      expect(await rows(f.engine.apiDb, 'SELECT count(*)::int AS n FROM email_services')).toEqual([{ n: 0 }]);
    });

    it('hides another user’s campaign: 404 to see, pause, resume or cancel it, and nothing changes', async () => {
      for (const [method, url] of [
        ['GET', `/api/campaigns/${aliceCampaign}`],
        ['POST', `/api/campaigns/${aliceCampaign}/pause`],
        ['POST', `/api/campaigns/${aliceCampaign}/resume`],
        ['POST', `/api/campaigns/${aliceCampaign}/cancel`],
        ['POST', `/api/scheduler/tasks/${aliceCampaign}/pause`],
        ['POST', `/api/scheduler/tasks/${aliceCampaign}/resume`],
      ] as const) {
        const res = await f.call(method, url, bob.token);
        expect([url, res.statusCode]).toEqual([url, 404]);
        expect(errorOf(res).message).toBe(`campaign ${aliceCampaign} not found`);
      }
      // Exactly what a missing campaign answers: Bob cannot tell the two apart.
      const missing = await f.call('GET', '/api/campaigns/999999', bob.token);
      expect(missing.statusCode).toBe(404);
      expect(await rows(f.engine.apiDb, 'SELECT status FROM tasks WHERE id = $id', { id: aliceCampaign })).toEqual([
        { status: 'scheduled' },
      ]);
      const list = await f.call('GET', '/api/campaigns', bob.token);
      expect(list.json<{ campaigns: unknown[] }>().campaigns).toEqual([]);
    });

    it('scopes contacts and templates to their owner; user_id naming someone else is a 403', async () => {
      expect((await f.call('GET', `/api/templates/${aliceTemplate}`, bob.token)).statusCode).toBe(404);
      expect((await f.call('GET', `/api/templates/${aliceTemplate}`, alice.token)).statusCode).toBe(200);
      expect((await f.call('GET', '/api/contacts', bob.token)).json<{ contacts: unknown[] }>().contacts).toEqual([]);
      const other = await f.call('GET', `/api/contacts?user_id=${alice.id}`, bob.token);
      expect(other.statusCode).toBe(403);
      const steal = await f.call('POST', '/api/campaigns', bob.token, {
        user_id: alice.id,
        name: 'x',
        from: 'x@bob.example',
        templates: [aliceTemplate],
        recipient_rule: { type: 'all' },
      });
      expect(steal.statusCode).toBe(403);
      // Two spellings of one field never override each other silently.
      const both = await f.call('POST', '/api/campaigns', bob.token, {
        user_id: bob.id,
        userId: alice.id,
        name: 'x',
        from: 'x@bob.example',
        templates: [aliceTemplate],
        recipient_rule: { type: 'all' },
      });
      expect(both.statusCode).toBe(400);
      expect(errorOf(both).issues).toEqual([{ path: 'user_id', message: 'is given twice (user_id and userId)' }]);
      const camel = await f.call('POST', '/api/campaigns', bob.token, {
        userId: alice.id,
        name: 'x',
        from: 'x@bob.example',
        templates: [aliceTemplate],
        recipient_rule: { type: 'all' },
      });
      expect(camel.statusCode).toBe(403);
      expect(await rows(f.engine.apiDb, "SELECT count(*)::int AS n FROM tasks WHERE name = 'x'")).toEqual([{ n: 0 }]);
      // Bob naming Alice's template for himself: the programmatic API's ownership check.
      const borrow = await f.call('POST', '/api/campaigns', bob.token, {
        name: 'x',
        from: 'x@bob.example',
        templates: [aliceTemplate],
        contacts: [aliceContacts[0]],
      });
      expect(borrow.statusCode).toBe(400);
      expect(errorOf(borrow).issues!.map((i) => i.path)).toEqual(['templates[0]', 'contacts']);
    });

    it('lets an admin create a campaign for a user with user_id in the query string', async () => {
      const res = await f.call('POST', `/api/campaigns?user_id=${alice.id}`, f.adminToken, {
        name: 'On behalf',
        from: 'ops@alice.example',
        templates: [aliceTemplate],
        contacts: [aliceContacts[0]],
        scheduled_at: '2030-01-01T09:00:00Z',
      });
      expect(res.statusCode).toBe(201);
      expect(res.json()).toMatchObject({ user_id: alice.id, recipients: 1 });
      const mismatch = await f.call('POST', `/api/campaigns?user_id=${alice.id}`, f.adminToken, {
        user_id: bob.id,
        name: 'Mismatch',
        from: 'ops@alice.example',
        templates: [aliceTemplate],
        contacts: [aliceContacts[0]],
      });
      expect(mismatch.statusCode).toBe(400);
      await f.call('POST', `/api/campaigns/${res.json<{ id: number }>().id}/cancel`, f.adminToken);
    });

    it('lets an admin see every user’s campaigns, or one user’s with user_id', async () => {
      const all = await f.call('GET', '/api/campaigns', f.adminToken);
      expect(all.json<{ campaigns: { id: number; user_id: number }[] }>().campaigns.map((c) => c.id)).toContain(aliceCampaign);
      const bobs = await f.call('GET', `/api/campaigns?user_id=${bob.id}`, f.adminToken);
      expect(bobs.json<{ campaigns: unknown[] }>().campaigns).toEqual([]);
      const hers = await f.call('GET', `/api/contacts?user_id=${alice.id}`, f.adminToken);
      expect(hers.json<{ contacts: { email: string }[] }>().contacts.map((c) => c.email)).toEqual([
        'a1@example.org',
        'a2@example.org',
        'a3@example.org',
      ]);
    });
  });

  describe('sending services', () => {
    let serviceId: number;

    it('creates a service (admin) and never returns its password', async () => {
      const res = await f.call('POST', '/api/services', f.adminToken, {
        name: 'relay-1',
        transport: { host: 'smtp.example.org', port: 587, auth: { user: 'mailer', pass: SMTP_PASSWORD } },
        sending_rate: 0.5,
        daily_quota: 1000,
        quota_timezone: 'Europe/Paris',
        max_connections: 2,
      });
      expect(res.statusCode).toBe(201);
      expect(res.body).not.toContain(SMTP_PASSWORD);
      const s = res.json<Record<string, unknown>>();
      serviceId = s.id as number;
      expect(s).toMatchObject({
        name: 'relay-1',
        sending_rate: 0.5,
        quota_timezone: 'Europe/Paris',
        daily_quota: 1000,
        used_quota: 0,
        remaining_quota: 1000,
        usage_percentage: 0,
        last_sent: null,
        is_healthy: true,
        transport: { host: 'smtp.example.org', port: 587, secure: false, auth: { user: 'mailer' } },
        user_ids: null,
        max_connections: 2,
      });
      expect(new Date(s.resets_at as string).getTime()).toBeGreaterThan(Date.now());
      // The password is stored (the scheduler needs it) encrypted, and never shown.
      const [stored] = await rows<{ pass: string }>(
        f.engine.apiDb,
        "SELECT transport->'auth'->>'pass' AS pass FROM email_services WHERE id = $id",
        {
          id: serviceId,
        },
      );
      expect(stored!.pass).toMatch(/^fsenc:v1:/);
      expect(f.engine.secrets.open(stored!.pass, 'transport.auth.pass')).toBe(SMTP_PASSWORD);
    });

    it('lists and gets services with quota figures from the database', async () => {
      await f.engine.apiDb.query('UPDATE email_services SET used_quota = 250, quota_day = $day WHERE id = $id', {
        bind: { id: serviceId, day: f.engine.clock().setZone('Europe/Paris').toISODate() },
      });
      const list = await f.call('GET', '/api/services', f.adminToken);
      expect(list.statusCode).toBe(200);
      const [s] = list.json<{ services: Record<string, unknown>[] }>().services;
      expect(s).toMatchObject({ id: serviceId, used_quota: 250, remaining_quota: 750, usage_percentage: 25 });
      const one = await f.call('GET', `/api/services/${serviceId}`, f.adminToken);
      expect(one.json()).toMatchObject({ id: serviceId, remaining_quota: 750 });
      expect(list.body + one.body).not.toContain(SMTP_PASSWORD);
    });

    it('changes a service with PATCH and replaces it with PUT', async () => {
      const patch = await f.call('PATCH', `/api/services/${serviceId}`, f.adminToken, { daily_quota: 2000, user_ids: [alice.id] });
      expect(patch.statusCode).toBe(200);
      expect(patch.json()).toMatchObject({ daily_quota: 2000, remaining_quota: 1750, user_ids: [alice.id], name: 'relay-1' });
      const put = await f.call('PUT', `/api/services/${serviceId}`, f.adminToken, {
        name: 'relay-1b',
        transport: { host: 'smtp2.example.org', port: 2525 },
        sending_rate: 2,
        daily_quota: 500,
      });
      expect(put.statusCode).toBe(200);
      // Full replacement: no user list is open to all, no credentials any more.
      expect(put.json()).toMatchObject({
        name: 'relay-1b',
        user_ids: null,
        transport: { host: 'smtp2.example.org', port: 2525 },
        max_connections: 5,
      });
      expect(put.json<{ transport: Record<string, unknown> }>().transport.auth).toBeUndefined();
      const empty = await f.call('PATCH', `/api/services/${serviceId}`, f.adminToken, {});
      expect(empty.statusCode).toBe(400);
      expect((await f.call('PATCH', '/api/services/424242', f.adminToken, { daily_quota: 1 })).statusCode).toBe(404);
      await f.call('PATCH', `/api/services/${serviceId}`, f.adminToken, { user_ids: [alice.id] });
    });

    it('shows users only the services they may use, without transport', async () => {
      const hers = await f.call('GET', '/api/services', alice.token);
      const [s] = hers.json<{ services: Record<string, unknown>[] }>().services;
      expect(s).toMatchObject({ id: serviceId, remaining_quota: expect.any(Number) });
      expect(s!.transport).toBeUndefined();
      expect(s!.user_ids).toBeUndefined();
      expect(hers.json<{ services: unknown[] }>().services).toHaveLength(1);
      expect((await f.call('GET', '/api/services', bob.token)).json<{ services: unknown[] }>().services).toEqual([]);
      expect((await f.call('GET', `/api/services/${serviceId}`, bob.token)).statusCode).toBe(404);
    });

    it('reports every bad field of a service with its snake_case path', async () => {
      const res = await f.call('POST', '/api/services', f.adminToken, {
        name: '',
        transport: { host: 'h', port: 70000 },
        sending_rate: -1,
        daily_quota: 1.5,
        quota_timezone: 'Mars/Olympus',
      });
      expect(res.statusCode).toBe(400);
      const e = errorOf(res);
      expect(e.code).toBe('VALIDATION');
      expect(e.issues!.map((i) => i.path).sort()).toEqual(['daily_quota', 'name', 'quota_timezone', 'sending_rate', 'transport.port']);
      expect(e.issues!.find((i) => i.path === 'transport.port')!.message).toBe('must be a port from 1 to 65535');
    });
  });

  describe('campaigns', () => {
    it('returns a created campaign with its progress, in snake_case', async () => {
      const res = await f.call('GET', `/api/campaigns/${aliceCampaign}`, alice.token);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({
        id: aliceCampaign,
        user_id: alice.id,
        name: 'Alice news',
        status: 'scheduled',
        recipient_rule: { type: 'tag_based', include_tags: ['news'] },
        recipients: 2,
        progress: { total: 2, queued: 2, sent: 0, cancelled: 0, percent: 0 },
      });
    });

    it('validates like the programmatic API, naming fields in snake_case', async () => {
      const res = await f.call('POST', '/api/campaigns', alice.token, {
        name: 'Bad',
        from: 'not an address',
        templates: [],
        recipient_rule: { type: 'tag_based', include_tags: [''] },
        send_window: { start: '25:00', end: '17:00' },
        priority: 1.5,
      });
      expect(res.statusCode).toBe(400);
      const paths = errorOf(res).issues!.map((i) => i.path);
      expect(paths).toEqual(expect.arrayContaining(['templates', 'recipient_rule.include_tags[0]', 'send_window.start', 'priority']));
      expect(paths.some((p) => p.startsWith('from'))).toBe(true);
    });

    it('refuses a campaign beyond the user’s credit with 422 QUOTA_EXCEEDED and writes nothing', async () => {
      const poor = await f.user('Poor', 1);
      await f.call('POST', '/api/contacts', poor.token, [{ email: 'p1@example.org' }, { email: 'p2@example.org' }]);
      const tpl = (await f.call('POST', '/api/templates', poor.token, { name: 't', subject: 's', text: 'x' })).json<{ id: number }>();
      const res = await f.call('POST', '/api/campaigns', poor.token, {
        name: 'Too big',
        from: 'p@poor.example',
        templates: [tpl.id],
        recipient_rule: { type: 'all' },
      });
      expect(res.statusCode).toBe(422);
      expect(res.json()).toEqual({
        error: {
          code: 'QUOTA_EXCEEDED',
          message: 'user quota exceeded: campaign needs 2 sends, user has 1 remaining',
          required: 2,
          available: 1,
        },
      });
      expect(await rows(f.engine.apiDb, 'SELECT count(*)::int AS n FROM tasks WHERE created_by = $u', { u: poor.id })).toEqual([{ n: 0 }]);
    });

    it('pauses, resumes and cancels; a cancelled campaign cannot resume (409)', async () => {
      const c = await f.call('POST', '/api/campaigns', alice.token, {
        name: 'Steered',
        from: 'a@alice.example',
        templates: [aliceTemplate],
        contacts: [aliceContacts[2]],
        scheduled_at: '2030-01-01T09:00:00Z',
      });
      const id = c.json<{ id: number }>().id;
      const before = (
        await rows<{ q: string }>(f.engine.apiDb, 'SELECT remaining_quota::text AS q FROM users WHERE id = $id', { id: alice.id })
      )[0]!.q;
      expect((await f.call('POST', `/api/campaigns/${id}/pause`, alice.token)).json()).toEqual({ id, status: 'paused' });
      expect((await f.call('POST', `/api/scheduler/tasks/${id}/resume`, alice.token)).json()).toEqual({ id, status: 'scheduled' });
      const cancel = await f.call('POST', `/api/campaigns/${id}/cancel`, alice.token);
      expect(cancel.json()).toEqual({ id, status: 'cancelled', refunded: 1 });
      const after = (
        await rows<{ q: string }>(f.engine.apiDb, 'SELECT remaining_quota::text AS q FROM users WHERE id = $id', { id: alice.id })
      )[0]!.q;
      expect(Number(after)).toBe(Number(before) + 1);
      const resume = await f.call('POST', `/api/campaigns/${id}/resume`, alice.token);
      expect(resume.statusCode).toBe(409);
      expect(errorOf(resume)).toEqual({ code: 'CONFLICT', message: `cannot resume campaign ${id}: it is cancelled` });
      const list = await f.call('GET', '/api/campaigns?status=cancelled', alice.token);
      const cancelled = list.json<{ campaigns: { id: number; status: string; progress: { cancelled: number; percent: number } }[] }>()
        .campaigns;
      expect(cancelled.every((c) => c.status === 'cancelled')).toBe(true);
      expect(cancelled.find((c) => c.id === id)).toMatchObject({ progress: { cancelled: 1, percent: 100 } });
    });

    it('validates ids in paths and query strings', async () => {
      const bad = await f.call('GET', '/api/campaigns/abc', alice.token);
      expect(bad.statusCode).toBe(400);
      expect(errorOf(bad).issues![0]!.path).toBe('params.id');
      expect((await f.call('GET', '/api/campaigns/99999999999999999999', alice.token)).statusCode).toBe(400);
      expect((await f.call('GET', '/api/services/3000000000', f.adminToken)).statusCode).toBe(400);
      const q = await f.call('GET', '/api/campaigns?limit=0', alice.token);
      expect(errorOf(q).issues![0]!.path).toBe('query.limit');
      expect((await f.call('GET', '/api/campaigns?bogus=1', alice.token)).statusCode).toBe(400);
    });
  });

  describe('contacts', () => {
    it('imports a JSON array and names each bad row’s field (contacts[1].email), writing nothing', async () => {
      const res = await f.call('POST', '/api/contacts', bob.token, [
        { email: 'ok@example.org' },
        { email: 'not-an-email' },
        { email: 'x@example.org', tags: ['ok', ''] },
      ]);
      expect(res.statusCode).toBe(400);
      expect(errorOf(res).issues).toEqual([
        { path: 'contacts[1].email', message: 'is not a valid email address' },
        { path: 'contacts[2].tags[1]', message: 'must not be empty' },
      ]);
      expect(await rows(f.engine.apiDb, 'SELECT count(*)::int AS n FROM contacts WHERE user_id = $u', { u: bob.id })).toEqual([{ n: 0 }]);
    });

    it('imports CSV: tags split on ;, other columns become attributes, attribute names kept as written', async () => {
      const csv =
        'email,name,tags,timezone,first_name,City\nc1@example.org,Cee One,news; vip,Europe/Paris,Cee,Lyon\n"c2@example.org","Two, Cee",,,,\n';
      const res = await f.call('POST', '/api/contacts', bob.token, csv, { 'content-type': 'text/csv' });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ created: 2, updated: 0 });
      const stored = await rows(
        f.engine.apiDb,
        'SELECT email, name, tags, timezone, attributes FROM contacts WHERE user_id = $u ORDER BY id',
        { u: bob.id },
      );
      expect(stored).toEqual([
        {
          email: 'c1@example.org',
          name: 'Cee One',
          tags: ['news', 'vip'],
          timezone: 'Europe/Paris',
          attributes: { first_name: 'Cee', City: 'Lyon' },
        },
        { email: 'c2@example.org', name: 'Two, Cee', tags: [], timezone: null, attributes: {} },
      ]);
      const listed = await f.call('GET', '/api/contacts', bob.token);
      expect(listed.json<{ contacts: { attributes: Record<string, string> }[] }>().contacts[0]!.attributes).toEqual({
        first_name: 'Cee',
        City: 'Lyon',
      });
    });

    it('names CSV errors by spreadsheet row (the header is row 1), counting quoted line breaks', async () => {
      const csv = 'email,note,timezone\ngood@example.org,"Multi\nline",UTC\nbad-address,B,UTC\nz@example.org,Z,Nowhere/Land\n';
      const res = await f.call('POST', '/api/contacts', bob.token, csv, { 'content-type': 'text/csv; charset=utf-8' });
      expect(res.statusCode).toBe(400);
      expect(errorOf(res).issues).toEqual([
        { path: 'row 4.email', message: 'is not a valid email address' },
        { path: 'row 5.timezone', message: 'is not a known IANA time zone' },
      ]);
      const ragged = await f.call('POST', '/api/contacts', bob.token, 'email,name\na@example.org,A,extra\n', {
        'content-type': 'text/csv',
      });
      expect(ragged.statusCode).toBe(400);
      expect(errorOf(ragged).issues![0]!.path).toBe('row 2');
      const noEmail = await f.call('POST', '/api/contacts', bob.token, 'name,first name\nA,B\n', { 'content-type': 'text/csv' });
      expect(errorOf(noEmail).issues).toEqual([
        { path: 'row 1', message: 'the header row needs an email column' },
        { path: 'row 1.first name', message: 'attribute columns are named with letters, digits, _ and - (64 at most)' },
      ]);
    });
  });

  describe('templates and users', () => {
    it('creates, lists and gets templates', async () => {
      const bad = await f.call('POST', '/api/templates', bob.token, { name: 'x', subject: 'line\nbreak' });
      expect(bad.statusCode).toBe(400);
      expect(
        errorOf(bad)
          .issues!.map((i) => i.path)
          .sort(),
      ).toEqual(['html', 'subject']);
      const made = await f.call('POST', '/api/templates', bob.token, { name: 'B', subject: 'Hi', html: '<p>x</p>' });
      expect(made.json()).toMatchObject({ user_id: bob.id, name: 'B', html: '<p>x</p>', text: null });
      const list = await f.call('GET', '/api/templates', bob.token);
      expect(list.json<{ templates: { name: string }[] }>().templates.map((t) => t.name)).toEqual(['B']);
    });

    it('creates a user with a token shown once, which then authenticates; rotating revokes the old one', async () => {
      const res = await f.call('POST', '/api/users', f.adminToken, {
        name: 'Carol',
        email: 'carol@example.org',
        quota: 5,
        timezone: 'Asia/Tokyo',
      });
      expect(res.statusCode).toBe(201);
      expect(res.headers['cache-control']).toBe('no-store');
      const { user, token } = res.json<{ user: { id: number; role: string; remaining_quota: number }; token: string }>();
      expect(user).toMatchObject({ role: 'user', remaining_quota: 5 });
      expect(token).toMatch(/^fst_[A-Za-z0-9_-]{43}$/);
      const [stored] = await rows<{ h: string }>(f.engine.apiDb, 'SELECT api_token_hash AS h FROM users WHERE id = $id', { id: user.id });
      expect(stored!.h).toMatch(/^[0-9a-f]{64}$/);
      expect(stored!.h).not.toContain(token);
      expect((await f.call('GET', '/api/me', token)).json()).toMatchObject({ id: user.id, email: 'carol@example.org' });
      const rotated = await f.call('POST', `/api/users/${user.id}/token`, f.adminToken);
      const fresh = rotated.json<{ token: string }>().token;
      expect((await f.call('GET', '/api/me', token)).statusCode).toBe(401);
      expect((await f.call('GET', '/api/me', fresh)).statusCode).toBe(200);
      const users = await f.call('GET', '/api/users', f.adminToken);
      expect(users.json<{ users: { email: string }[] }>().users.map((u) => u.email)).toContain('carol@example.org');
      const dup = await f.call('POST', '/api/users', f.adminToken, { name: 'Carol', email: 'CAROL@example.org', quota: 5 });
      expect(errorOf(dup).issues).toEqual([{ path: 'email', message: 'CAROL@example.org is already a user' }]);
    });
  });

  describe('bad requests never give a 500', () => {
    it('answers 400 to malformed JSON', async () => {
      const res = await f.call('POST', '/api/templates', bob.token, '{"name": "x",', { 'content-type': 'application/json' });
      expect(res.statusCode).toBe(400);
      expect(errorOf(res).code).toBe('BAD_REQUEST');
    });

    it('answers 415 to a content type the route does not take', async () => {
      const res = await f.call('POST', '/api/templates', bob.token, 'name=x', { 'content-type': 'application/x-www-form-urlencoded' });
      expect(res.statusCode).toBe(415);
      expect(errorOf(res).code).toBe('UNSUPPORTED_MEDIA_TYPE');
      const csvElsewhere = await f.call('POST', '/api/templates', bob.token, 'name\nx\n', { 'content-type': 'text/csv' });
      expect(csvElsewhere.statusCode).toBe(415);
    });

    it('answers 413 past the body limit (1 MiB; 10 MiB for contact imports)', async () => {
      const big = JSON.stringify({ name: 'x', subject: 's', text: 'y'.repeat(1024 * 1024) });
      const res = await f.call('POST', '/api/templates', bob.token, big, { 'content-type': 'application/json' });
      expect(res.statusCode).toBe(413);
      expect(errorOf(res)).toEqual({ code: 'PAYLOAD_TOO_LARGE', message: 'request body is too large' });
      // 2 MiB of contacts is within the import limit (and above the 1 MiB background threshold):
      // the answer is about the rows, not the size.
      const rowsCsv = 'email,note\n' + Array.from({ length: 20_000 }, (_, i) => `bulk${i}@example.org,${'n'.repeat(90)}`).join('\n');
      expect(rowsCsv.length).toBeGreaterThan(2 * 1024 * 1024);
      const imported = await f.call('POST', '/api/contacts', bob.token, rowsCsv, { 'content-type': 'text/csv' });
      expect(imported.statusCode).toBe(202);
      const { id } = imported.json<{ import: { id: number } }>().import;
      await f.engine.contacts.waitForImport(id);
      const job = await f.call('GET', `/api/contacts/imports/${id}`, bob.token);
      expect(job.json<{ import: { status: string; result: unknown } }>().import).toMatchObject({
        status: 'completed',
        result: { created: 20_000, updated: 0 },
      });
      const huge = await f.call('POST', '/api/contacts', bob.token, 'email\n' + 'a@example.org\n'.repeat(800_000), {
        'content-type': 'text/csv',
      });
      expect(huge.statusCode).toBe(413);
    });

    it('answers hostile or odd input with a 4xx, never a 500', async () => {
      const deep = '['.repeat(5000) + ']'.repeat(5000);
      const deeper = '{"contacts":' + '['.repeat(400_000) + ']'.repeat(400_000) + '}';
      const cases: [string, string, string | undefined, Record<string, string>][] = [
        [
          'POST',
          '/api/templates',
          '{"__proto__": {"admin": true}, "name": "x", "subject": "s", "text": "t"}',
          { 'content-type': 'application/json' },
        ],
        ['POST', '/api/contacts', deep, { 'content-type': 'application/json' }],
        ['POST', '/api/contacts', deeper, { 'content-type': 'application/json' }],
        [
          'POST',
          '/api/contacts',
          '{"contacts": [{"email": "a@example.org", "attributes": {"x": ' + deep + '}}]}',
          { 'content-type': 'application/json' },
        ],
        ['POST', '/api/contacts', '', { 'content-type': 'application/json' }],
        ['POST', '/api/contacts', 'null', { 'content-type': 'application/json' }],
        ['POST', '/api/contacts', '"just a string"', { 'content-type': 'application/json' }],
        ['POST', '/api/contacts', '\u0000\u0001', { 'content-type': 'text/csv' }],
        [
          'POST',
          '/api/campaigns',
          '{"templates": [99999999999], "name": "x", "from": "a@b.example", "contacts": [1]}',
          { 'content-type': 'application/json' },
        ],
        ['POST', '/api/services/1', '{}', { 'content-type': 'application/json' }],
        ['GET', `/u/${'9'.repeat(300)}`, undefined, {}],
        ['GET', '/api/campaigns/%E0%A4%A', undefined, {}],
        ['GET', '/api/campaigns?limit=1e309', undefined, {}],
        ['GET', '/api/campaigns?limit=1&limit=2', undefined, {}],
        ['POST', '/api/campaigns/1/pause', 'x', { 'content-type': 'application/octet-stream' }],
      ];
      for (const [method, url, body, headers] of cases) {
        const res = await f.call(method as 'GET', url, bob.token, body, headers);
        expect([method, url.slice(0, 60), res.statusCode < 500]).toEqual([method, url.slice(0, 60), true]);
        expect(res.statusCode).toBeGreaterThanOrEqual(400);
      }
    });

    it('answers 404 with the error shape for unknown routes', async () => {
      const res = await f.call('GET', '/api/nothing-here', bob.token);
      expect(res.statusCode).toBe(404);
      expect(errorOf(res).code).toBe('NOT_FOUND');
    });
  });

  describe('secrets in logs', () => {
    it('never writes the SMTP password or a bearer token to the server log', async () => {
      await f.call('POST', '/api/services', f.adminToken, {
        name: 'logged',
        transport: { host: 'smtp.example.org', port: 25, auth: { user: 'u', pass: SMTP_PASSWORD } },
        sending_rate: 1,
        daily_quota: 1,
      });
      await f.call('POST', '/api/services', f.adminToken, { name: 'logged', transport: { auth: { user: 'u', pass: SMTP_PASSWORD } } });
      await f.call('GET', '/api/campaigns', 'fst_' + 'y'.repeat(43));
      const text = f.logs.text;
      expect(f.logs.lines().length).toBeGreaterThan(10);
      expect(text).toContain('/api/services');
      expect(text).not.toContain(SMTP_PASSWORD);
      for (const token of [f.adminToken, alice.token, bob.token, 'fst_' + 'y'.repeat(43)]) expect(text).not.toContain(token);
      expect(text.toLowerCase()).not.toContain('bearer');
    });
  });
});

describe('HTTP API: health, OpenAPI, jobs, guessing limit', () => {
  let f: HttpFixture;
  const calls: string[] = [];
  const jobs: JobsApi = {
    list: () => [{ name: 'analyze_tables', schedule: 'every 1h', paused: false, nextRunAt: new Date('2030-01-01T00:00:00Z') }],
    pause: (name) => {
      if (name !== 'analyze_tables') throw new NotFoundError('job', name);
      calls.push(`pause ${name}`);
      return { name, paused: true };
    },
    resume: (name) => (calls.push(`resume ${name}`), { name, paused: false }),
    runNow: async (name) => (calls.push(`run ${name}`), { name, outcome: 'success', durationMs: 12 }),
    reports: async (limit) => [{ limit }],
  };

  beforeAll(async () => {
    f = await httpFixture({ http: { jobs, authFailureLimit: 3 } });
  });
  afterAll(() => f.close());

  it('answers /health without a token', async () => {
    const res = await f.call('GET', '/health');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ok', database: 'ok', version: expect.stringMatching(/^\d+\.\d+\.\d+/) });
  });

  it('serves an OpenAPI document generated from the zod schemas, in snake_case, and the /docs page', async () => {
    const res = await f.call('GET', '/openapi.json');
    expect(res.statusCode).toBe(200);
    const doc = res.json<{
      openapi: string;
      paths: Record<
        string,
        Record<string, { requestBody?: { content: Record<string, { schema: { properties: object; required?: string[] } }> } }>
      >;
    }>();
    expect(doc.openapi).toBe('3.0.3');
    for (const p of [
      '/api/scheduler/start',
      '/api/scheduler/tasks/{task_id}/pause',
      '/api/services/{id}',
      '/api/campaigns',
      '/api/bounces',
      '/u/{token}',
    ]) {
      expect(Object.keys(doc.paths)).toContain(p);
    }
    const serviceBody = doc.paths['/api/services']!.post!.requestBody!.content['application/json']!.schema;
    expect(Object.keys(serviceBody.properties)).toEqual(
      expect.arrayContaining(['name', 'transport', 'sending_rate', 'daily_quota', 'quota_timezone']),
    );
    expect(serviceBody.required).toEqual(expect.arrayContaining(['sending_rate', 'daily_quota']));
    const campaign = doc.paths['/api/campaigns']!.post!.requestBody!.content['application/json']!.schema;
    expect(Object.keys(campaign.properties)).toEqual(expect.arrayContaining(['user_id', 'recipient_rule', 'send_window', 'scheduled_at']));
    expect(JSON.stringify(doc)).not.toMatch(/"(sendingRate|dailyQuota|remainingQuota)"/);
    const docs = await f.call('GET', '/docs/');
    expect(docs.statusCode).toBe(200);
    expect(docs.headers['content-type']).toMatch(/text\/html/);
    expect(docs.body).toContain('swagger');
  });

  it('serves the dashboard page and its script under a strict Content-Security-Policy', async () => {
    const page = await f.call('GET', '/');
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.headers['content-security-policy']).toContain("script-src 'self'");
    expect(page.body).toContain('<script type="module" src="/dashboard.js"></script>');
    const script = await f.call('GET', '/dashboard.js');
    expect(script.headers['content-type']).toMatch(/^text\/javascript/);
    expect(script.body).toContain('localStorage.getItem(TOKEN_KEY)');
    expect(script.body).not.toMatch(/\.innerHTML\s*=/);
    expect((await f.call('GET', '/dashboard.css')).statusCode).toBe(200);
  });

  it('warns at start when one-click links cannot reach this server', async () => {
    const { LogSink } = await import('./helpers/http.js');
    const logs = new LogSink();
    const server = await createHttpServer(f.engine, {
      logger: createLogger('warn', logs),
      unsubscribeSecret: 'a-secret-of-enough-length',
      unsubscribeBaseUrl: 'https://mail.example.org/unsubscribe',
      processMetrics: false,
    });
    await server.close();
    expect(logs.text).toContain('UNSUBSCRIBE_URL_BASE should end with /u');
  });

  it('never logs a token or secret found in the URL', async () => {
    const { LogSink } = await import('./helpers/http.js');
    const logs = new LogSink();
    const server = await createHttpServer(f.engine, { logger: createLogger('info', logs), processMetrics: false });
    try {
      await server.app.inject({ method: 'GET', url: `/api/campaigns?token=${f.adminToken}&page=1` });
      await server.app.inject({ method: 'GET', url: `/api/campaigns/${f.adminToken}` });
      await server.app.inject({ method: 'GET', url: '/api/campaigns?webhook_secret=hunter2-hunter2&x=1' });
    } finally {
      await server.close();
    }
    expect(logs.text).toContain('/api/campaigns?token=[redacted]&page=1');
    expect(logs.text).toContain('webhook_secret=[redacted]&x=1');
    expect(logs.text).not.toContain(f.adminToken);
    expect(logs.text).not.toContain(f.adminToken.slice(4));
    expect(logs.text).not.toContain('hunter2');
  });

  it('answers 503 from /health when the database does not answer in time', async () => {
    const { createTestEngine } = await import('./helpers/db.js');
    const engine = await createTestEngine({ apiPoolMax: 1, apiPoolMin: 0, apiPoolAcquireMs: 10_000 });
    const server = await createHttpServer(engine, { logger: createLogger('silent'), healthTimeoutMs: 300, processMetrics: false });
    try {
      // The only API connection is busy for a second: /health cannot get an answer within 300 ms.
      const busy = engine.apiDb.query('SELECT pg_sleep(1)');
      const started = Date.now();
      const res = await server.app.inject({ method: 'GET', url: '/health' });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ status: 'unavailable', database: 'timeout' });
      expect(Date.now() - started).toBeLessThan(900);
      await busy;
      expect((await server.app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);
      await engine.apiDb.close();
      const down = await server.app.inject({ method: 'GET', url: '/health' });
      expect(down.statusCode).toBe(503);
      expect(down.json()).toMatchObject({ database: 'error' });
    } finally {
      await server.close();
      await engine.close();
    }
  });

  it('answers 503 DATABASE_UNAVAILABLE while the database is away, logged as a warning (not an error per request)', async () => {
    const { createTestEngine } = await import('./helpers/db.js');
    const { LogSink } = await import('./helpers/http.js');
    const logs = new LogSink();
    // The engine reaches PostgreSQL through a TCP relay of the test's; closing the relay and cutting
    // its connections is, for the engine, PostgreSQL going away.
    const { createTestDatabase } = await import('./helpers/db.js');
    const { createServer, connect } = await import('node:net');
    const target = new URL(await createTestDatabase());
    const sockets = new Set<import('node:net').Socket>();
    const relay = createServer((client) => {
      const upstream = connect(Number(target.port || 5432), target.hostname);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => undefined).on('close', () => sockets.delete(s));
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    const via = new URL(target);
    via.hostname = '127.0.0.1';
    via.port = String((relay.address() as { port: number }).port);
    const engine = await createTestEngine({ databaseUrl: via.toString() });
    const server = await createHttpServer(engine, { logger: createLogger('warn', logs), processMetrics: false });
    try {
      const admin = await engine.users.create({ name: 'A', email: 'a503@example.test', quota: 1, role: 'admin' });
      const { createToken } = await import('../services/auth.js');
      const token = await createToken(engine, admin.id);
      const closed = new Promise((r) => relay.close(r));
      for (const s of sockets) s.destroy();
      await closed;
      const res = await server.app.inject({ method: 'GET', url: '/api/campaigns', headers: { authorization: `Bearer ${token}` } });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ error: { code: 'DATABASE_UNAVAILABLE' } });
      const lines = logs.lines();
      expect(lines.filter((l) => l.code === 'DATABASE_UNAVAILABLE').map((l) => l.level)).toEqual([40]);
      expect(lines.filter((l) => Number(l.level) >= 50)).toEqual([]);
    } finally {
      await server.close();
      await engine.close();
    }
  });

  it('exposes the maintenance jobs to admins', async () => {
    const list = await f.call('GET', '/api/jobs', f.adminToken);
    expect(list.json()).toEqual({
      jobs: [{ name: 'analyze_tables', schedule: 'every 1h', paused: false, next_run_at: '2030-01-01T00:00:00.000Z' }],
    });
    expect((await f.call('POST', '/api/jobs/analyze_tables/pause', f.adminToken)).json()).toEqual({
      job: { name: 'analyze_tables', paused: true },
    });
    expect((await f.call('POST', '/api/jobs/analyze_tables/resume', f.adminToken)).statusCode).toBe(200);
    expect((await f.call('POST', '/api/jobs/analyze_tables/run', f.adminToken)).json()).toEqual({
      job: { name: 'analyze_tables', outcome: 'success', duration_ms: 12 },
    });
    expect((await f.call('GET', '/api/jobs/reports?limit=3', f.adminToken)).json()).toEqual({ reports: [{ limit: 3 }] });
    expect(calls).toEqual(['pause analyze_tables', 'resume analyze_tables', 'run analyze_tables']);
    const unknown = await f.call('POST', '/api/jobs/nope/pause', f.adminToken);
    expect(unknown.statusCode).toBe(404);
    expect((await f.call('POST', '/api/jobs/bad%20name/run', f.adminToken)).statusCode).toBe(400);
    const user = await f.user('Dora');
    expect((await f.call('GET', '/api/jobs', user.token)).statusCode).toBe(403);
  });

  it('serves the engine’s own maintenance jobs by default', async () => {
    const g = await httpFixture();
    try {
      const res = await g.call('GET', '/api/jobs', g.adminToken);
      expect(res.statusCode).toBe(200);
      const names = res.json<{ jobs: { name: string; schedule: string }[] }>().jobs.map((j) => j.name);
      expect(names).toEqual(expect.arrayContaining(['analyze_tables', 'db_health_check']));
    } finally {
      await g.close();
    }
  });

  it('answers 404 on /api/jobs when the server has no jobs API', async () => {
    const g = await httpFixture({ http: { jobs: null } });
    try {
      const res = await g.call('GET', '/api/jobs', g.adminToken);
      expect(res.statusCode).toBe(404);
    } finally {
      await g.close();
    }
  });

  it('blocks an address after too many failed tokens (429, Retry-After), valid token or not, and only that address', async () => {
    const from = (ip: string, token: string) =>
      f.server.app.inject({ method: 'GET', url: '/api/me', remoteAddress: ip, headers: { authorization: `Bearer ${token}` } });
    const wrong = 'fst_' + 'z'.repeat(43);
    for (let i = 0; i < 3; i++) expect((await from('10.0.0.9', wrong)).statusCode).toBe(401);
    const blocked = await from('10.0.0.9', wrong);
    expect(blocked.statusCode).toBe(429);
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);
    expect(errorOf(blocked).code).toBe('RATE_LIMITED');
    expect((await from('10.0.0.9', f.adminToken)).statusCode).toBe(429);
    expect((await from('10.0.0.10', f.adminToken)).statusCode).toBe(200);
    // Requests without any credential guess nothing and are not counted.
    for (let i = 0; i < 5; i++) {
      expect((await f.server.app.inject({ method: 'GET', url: '/api/me', remoteAddress: '10.0.0.11' })).statusCode).toBe(401);
    }
    expect((await from('10.0.0.11', f.adminToken)).statusCode).toBe(200);
  });
});

describe('FailureLimiter', () => {
  it('opens again after the window', async () => {
    const { FailureLimiter } = await import('../src/http/auth.js');
    let now = 0;
    const l = new FailureLimiter(2, 60_000, () => now);
    l.fail('a');
    l.fail('a');
    expect(l.blockedFor('a')).toBe(60);
    now = 59_000;
    expect(l.blockedFor('a')).toBe(1);
    now = 60_000;
    expect(l.blockedFor('a')).toBe(0);
    l.fail('a');
    expect(l.blockedFor('a')).toBe(0);
  });

  it('stays bounded under a flood of addresses', async () => {
    const { FailureLimiter } = await import('../src/http/auth.js');
    const l = new FailureLimiter(1, 60_000, () => 0, 100);
    for (let i = 0; i < 1000; i++) l.fail(`ip${i}`);
    expect((l as unknown as { entries: Map<string, unknown> }).entries.size).toBeLessThanOrEqual(100);
    expect(l.blockedFor('ip999')).toBe(60);
  });
});
