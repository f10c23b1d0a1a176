/**
 * Hostile input to the HTTP API (issue #7, "Hostile input"), through fastify's inject() against a
 * real PostgreSQL database:
 *
 * - property tests (fast-check, fixed seed) over every request body (campaigns, templates,
 *   contacts as JSON and as CSV, users, services created, patched and replaced, bounces), over
 *   query strings and path parameters, and over raw bytes with any content type: every answer is
 *   a success or a documented 4xx with the error shape `{ error: { code, message } }`, never a
 *   500; a refused request leaves every table as it was (fingerprint), and text that cannot be
 *   stored, or CR/LF in a header field, is never accepted;
 * - hand-written hostile requests: oversized bodies, JSON nested up to 200,000 levels, prototype
 *   pollution, duplicate spellings of a field, odd numbers, odd content types and encodings.
 */
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { httpFixture, type HttpFixture } from '../helpers/http.js';
import {
  fingerprint,
  GOOD_ADDRESSES,
  hostileString,
  hostileValue,
  INJECTIONS,
  mutated,
  SEEDS,
  SQL_META,
  storable,
  stringsIn,
  Tally,
  UNICODE,
  watchUnhandledRejections,
} from './helpers/hostile-inputs.js';

const rejections = watchUnhandledRejections();
let f: HttpFixture;
let alice: { id: number; token: string };
let bob: { id: number; token: string };
let template: number;
let contactIds: number[];
let serviceId: number;
let campaignId: number;
let serial = 0;
const next = () => ++serial;

/** Statuses an API answer may have: success, or a documented client error. Never 5xx. */
const DOCUMENTED = new Set([200, 201, 202, 400, 401, 403, 404, 409, 413, 415, 422, 429]);

beforeAll(async () => {
  f = await httpFixture();
  alice = await f.user('Alice', 1_000_000);
  bob = await f.user('Bob', 100);
  const imported = await f.engine.contacts.bulkCreate(
    alice.id,
    ['a', 'b', 'c'].map((x) => ({ email: `${x}@alice.example`, tags: ['news'] })),
  );
  contactIds = imported.ids;
  template = (await f.engine.templates.create(alice.id, { name: 't', subject: 'Hi {{name}}', text: 'Hello' })).id;
  serviceId = (
    await f.engine.services.create({ name: 'relay', transport: { host: '127.0.0.1', port: 2525 }, sendingRate: 1, dailyQuota: 100 })
  ).id;
  campaignId = (
    await f.engine.campaigns.create({
      userId: alice.id,
      name: 'base',
      from: 'a@alice.example',
      templates: [template],
      recipientRule: { type: 'all' },
      scheduledAt: '2030-01-01T00:00:00Z',
    })
  ).id;
});
afterAll(async () => {
  rejections.stop();
  await f?.close();
});
afterEach(() => {
  expect(rejections.seen).toEqual([]);
});

/**
 * Sends one request and checks the answer: documented status, error shape on failure, nothing
 * written on failure, and a refusal whenever `mustRefuse` says so. Returns the response.
 */
async function check(
  tally: Tally,
  req: { method: 'GET' | 'POST' | 'PUT' | 'PATCH'; url: string; token: string; body?: unknown; headers?: Record<string, string> },
  mustRefuse = false,
): Promise<LightMyRequestResponse> {
  const before = await fingerprint(f.engine.apiDb);
  const res = await f.call(req.method, req.url, req.token, req.body, req.headers);
  const label = `${req.method} ${req.url.slice(0, 80)} -> ${res.statusCode} ${res.body.slice(0, 300)}`;
  const documented = DOCUMENTED.has(res.statusCode);
  tally.count(res.statusCode, true, documented);
  expect([label, res.statusCode < 500, documented]).toEqual([label, true, true]);
  if (res.statusCode >= 400) {
    if (req.url.startsWith('/u/') && res.headers['content-type'] === 'text/html; charset=utf-8') {
      // One-click unsubscribe answers people, with a page (a URL the router refuses gets the JSON error).
      expect([label, res.body]).toEqual([label, expect.stringContaining('<h1>')]);
    } else {
      const body = res.json<{ error?: { code?: unknown; message?: unknown } }>();
      expect([label, typeof body.error?.code, typeof body.error?.message]).toEqual([label, 'string', 'string']);
    }
    expect([label, await fingerprint(f.engine.apiDb)]).toEqual([label, before]);
  } else if (mustRefuse) {
    throw new Error(`accepted input that must be refused: ${label}`);
  }
  return res;
}

const unstorableIn = (v: unknown) => stringsIn(v).some((s) => !storable(s));
const newline = (v: unknown) => typeof v === 'string' && /[\r\n]/.test(v);
const innerNewline = (v: unknown) => typeof v === 'string' && newline(v.trim());
const text = fc.constantFrom(...UNICODE.filter((u) => u.trim() !== ''), ...SQL_META);
const address = () => `h${next()}-${GOOD_ADDRESSES[serial % GOOD_ADDRESSES.length]!}`;

async function figures(scenario: string, tally: Tally, extra = '') {
  await tally.record(scenario, `seed ${SEEDS.api}; ${tally.summary()}${extra}`);
}

describe('every request body, generated', () => {
  const tally = new Tally();
  const runs = { numRuns: 80, seed: SEEDS.api };
  afterAll(() => figures('hostile input: every API body (property)', tally));

  it('POST /api/campaigns', async () => {
    const valid = fc.record({
      name: text,
      from: fc.oneof(fc.constant('news@alice.example'), fc.record({ address: fc.constant('news@alice.example'), name: text })),
      templates: fc.constant([template]),
      contacts: fc.constant(contactIds),
      recipient_rule: fc.constant({ type: 'tag_based', include_tags: ['news'], exclude_tags: ["'; DROP TABLE tasks; --"] }),
      scheduled_at: fc.constant('2030-01-01T09:00'),
      timezone: fc.constantFrom('Europe/Paris', 'Asia/Kolkata'),
      priority: fc.integer({ min: -1000, max: 1000 }),
      send_window: fc.constant({ start: '09:00', end: '17:00', days: [1, 2, 3] }),
    });
    const fields = [
      'name',
      'from',
      'templates',
      'contacts',
      'recipient_rule',
      'scheduled_at',
      'timezone',
      'priority',
      'send_window',
      'user_id',
      'userId',
    ];
    const valueFor = (k: string) =>
      k === 'user_id' || k === 'userId'
        ? fc.oneof(fc.constantFrom(alice.id, bob.id, f.adminId, 0, -1, '1', 2 ** 31), hostileValue)
        : k === 'from'
          ? fc.oneof(hostileString, fc.record({ address: fc.constant('a@alice.example'), name: fc.constantFrom(...INJECTIONS) }))
          : k === 'name'
            ? fc.oneof(hostileString, fc.constantFrom(...INJECTIONS))
            : hostileValue;
    await fc.assert(
      fc.asyncProperty(mutated(valid, fields, valueFor), async (body) => {
        const fromName = typeof body.from === 'object' && body.from !== null ? (body.from as { name?: unknown }).name : undefined;
        const foreign = [body.user_id, body.userId].some((u) => u !== undefined && u !== alice.id);
        await check(
          tally,
          { method: 'POST', url: '/api/campaigns', token: alice.token, body },
          unstorableIn(body) || innerNewline(body.name) || newline(fromName) || newline(body.from) || foreign,
        );
      }),
      runs,
    );
  });

  it('POST /api/templates', async () => {
    const valid = fc.record({ name: text, subject: text, text, html: text.map((t) => `<b>${t}</b>`) });
    await fc.assert(
      fc.asyncProperty(mutated(valid, ['name', 'subject', 'text', 'html']), fc.boolean(), async (body, asAdminForAlice) => {
        const url = asAdminForAlice ? `/api/templates?user_id=${alice.id}` : '/api/templates';
        const res = await check(
          tally,
          { method: 'POST', url, token: asAdminForAlice ? f.adminToken : alice.token, body },
          unstorableIn(body) || newline(body.subject),
        );
        if (res.statusCode === 201) {
          const back = await f.call('GET', `/api/templates/${res.json<{ id: number }>().id}`, alice.token);
          expect(back.json()).toMatchObject({ subject: body.subject, user_id: alice.id });
        }
      }),
      runs,
    );
  });

  it('POST /api/contacts (JSON)', async () => {
    const contact = fc.record(
      {
        email: fc.oneof({ weight: 5, arbitrary: fc.constant('GOOD') }, { weight: 1, arbitrary: hostileString }),
        name: fc.oneof(text, hostileString, fc.constantFrom(...INJECTIONS)),
        tags: fc.array(fc.oneof(text, hostileString), { maxLength: 3 }),
        attributes: fc.dictionary(fc.oneof(fc.constantFrom('city', 'first_name', 'tier'), hostileString), hostileValue, { maxKeys: 3 }),
        timezone: fc.oneof(fc.constantFrom('Europe/Paris', null), hostileString),
      },
      { requiredKeys: ['email'] },
    );
    const body = fc.oneof(
      fc.array(contact, { minLength: 1, maxLength: 4 }).map((contacts) => ({ contacts })),
      fc.array(contact, { minLength: 1, maxLength: 3 }),
      mutated(fc.constant({ contacts: [{ email: 'GOOD' }] }), ['contacts']),
    );
    await fc.assert(
      fc.asyncProperty(body, async (generated) => {
        const withEmails = JSON.parse(JSON.stringify(generated), (k, v: unknown) =>
          k === 'email' && v === 'GOOD' ? address() : v,
        ) as unknown;
        const rows = (Array.isArray(withEmails) ? withEmails : (withEmails as { contacts?: unknown }).contacts) as unknown;
        const names = Array.isArray(rows) ? rows.map((r) => (r as { name?: unknown } | null)?.name) : [];
        const res = await check(
          tally,
          { method: 'POST', url: '/api/contacts', token: alice.token, body: withEmails },
          unstorableIn(generated) || names.some(innerNewline),
        );
        if (res.statusCode === 200) expect(res.json<{ ids: number[] }>().ids).toHaveLength((rows as unknown[]).length);
      }),
      runs,
    );
  });

  it('POST /api/contacts (CSV)', async () => {
    const column = fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom('name', 'tags', 'timezone', 'city', 'first_name', 'plan-tier') },
      { weight: 1, arbitrary: fc.constantFrom('', 'a b', '"q"', '=cmd()', 'email', 'status', 'ключ', 'x'.repeat(70)) },
    );
    const cell = fc.oneof(text, hostileString, fc.constantFrom('a;b;c', ' ; ', '=HYPERLINK("x")', 'Europe/Paris', 'a,"b"'));
    const csv = fc.record({
      columns: fc.uniqueArray(column, { maxLength: 4 }),
      rows: fc.array(fc.array(cell, { minLength: 4, maxLength: 4 }), { minLength: 1, maxLength: 4 }),
      quoting: fc.constantFrom('rfc4180', 'rfc4180', 'raw'),
      eol: fc.constantFrom('\n', '\r\n'),
      bom: fc.boolean(),
    });
    const quote = (v: string, how: string) => (how === 'raw' ? v : `"${v.replace(/"/g, '""')}"`);
    await fc.assert(
      fc.asyncProperty(csv, async ({ columns, rows, quoting, eol, bom }) => {
        const header = ['email', ...columns].map((c) => quote(c, quoting)).join(',');
        const lines = rows.map((r) => [address(), ...r.slice(0, columns.length)].map((c) => quote(c, quoting)).join(','));
        const payload = (bom ? '\uFEFF' : '') + [header, ...lines].join(eol) + eol;
        const cells = rows.flatMap((r) => r.slice(0, columns.length));
        const res = await check(
          tally,
          { method: 'POST', url: '/api/contacts', token: alice.token, body: payload, headers: { 'content-type': 'text/csv' } },
          // A lone surrogate cannot travel in UTF-8 text (the client sends U+FFFD); a NUL can.
          cells.some((c) => c.includes('\u0000')),
        );
        if (res.statusCode === 400) {
          // CSV issues name spreadsheet rows (the header is row 1), or the file itself.
          for (const issue of res.json<{ error: { issues?: { path: string }[] } }>().error.issues ?? []) {
            expect(issue.path).toMatch(/^(row \d+|csv)/);
          }
        }
      }),
      runs,
    );
  });

  it('POST /api/users (admin)', async () => {
    const valid = fc.record({
      name: text,
      email: fc.constant('GOOD'),
      quota: fc.integer({ min: 0, max: 1000 }),
      timezone: fc.constantFrom('UTC', 'America/Sao_Paulo'),
      role: fc.constantFrom('user', 'admin'),
    });
    await fc.assert(
      fc.asyncProperty(mutated(valid, ['name', 'email', 'quota', 'timezone', 'role']), async (body) => {
        if (body.email === 'GOOD') body.email = `u${next()}@users.example`;
        const res = await check(
          tally,
          { method: 'POST', url: '/api/users', token: f.adminToken, body },
          unstorableIn(body) || innerNewline(body.name),
        );
        if (res.statusCode === 201) expect(res.json<{ token: string }>().token).toMatch(/^fst_/);
      }),
      runs,
    );
  });

  const serviceBody = () =>
    fc.record({
      name: text,
      transport: fc.record({
        host: fc.constant('127.0.0.1'),
        port: fc.integer({ min: 1, max: 65535 }),
        auth: fc.constant({ user: 'u', pass: 'p' }),
      }),
      sending_rate: fc.double({ min: 0, max: 86_400, noNaN: true }),
      daily_quota: fc.integer({ min: 0, max: 100_000 }),
      quota_timezone: fc.constantFrom('UTC', 'Pacific/Chatham'),
      max_connections: fc.integer({ min: 1, max: 100 }),
      user_ids: fc.constant(null).map(() => [alice.id, bob.id]),
      enabled: fc.boolean(),
    });
  const serviceFields = [
    'name',
    'transport',
    'sending_rate',
    'daily_quota',
    'quota_timezone',
    'max_connections',
    'user_ids',
    'enabled',
    'dkim',
  ];

  it('POST, PATCH and PUT /api/services (admin)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('POST', 'PATCH', 'PUT') as fc.Arbitrary<'POST' | 'PATCH' | 'PUT'>,
        mutated(serviceBody(), serviceFields),
        async (method, body) => {
          // Service names are unique: suffix valid ones so a success is possible.
          if (typeof body.name === 'string' && UNICODE.concat(SQL_META).includes(body.name)) body.name = `${body.name} ${next()}`;
          const url = method === 'POST' ? '/api/services' : `/api/services/${serviceId}`;
          await check(tally, { method, url, token: f.adminToken, body }, unstorableIn(body));
        },
      ),
      runs,
    );
  });

  it('POST /api/bounces (admin)', async () => {
    const event = fc.record(
      {
        type: fc.oneof(fc.constantFrom('hard_bounce', 'soft_bounce', 'complaint'), hostileString),
        email: fc.oneof(fc.constant('nobody@nowhere.example'), hostileString),
        campaign_id: fc.oneof(fc.constant(campaignId), hostileValue),
        reason: fc.oneof(text, hostileString),
      },
      { requiredKeys: ['type', 'email'] },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.array(event, { maxLength: 3 }).map((events) => ({ events })),
          hostileValue,
        ),
        async (body) => {
          const res = await check(
            tally,
            {
              method: 'POST',
              url: '/api/bounces',
              token: f.adminToken,
              body: body ?? 'null',
              headers: { 'content-type': 'application/json' },
            },
            unstorableIn(body),
          );
          if (res.statusCode === 200) expect(res.json()).toMatchObject({ contacts_marked: 0 });
        },
      ),
      runs,
    );
  });
});

describe('query strings, path parameters and raw bytes, generated', () => {
  const tally = new Tally();
  afterAll(() => figures('hostile input: queries, params, raw bytes (property)', tally));
  const piece = fc.oneof(
    fc.constantFrom(
      '1',
      '0',
      '-1',
      '1.5',
      '1e3',
      '1e309',
      'NaN',
      '0x10',
      ' 1',
      '9007199254740993',
      '2147483648',
      '',
      '%00',
      '%E0%A4%A',
      '..%2F..',
      "1'--",
    ),
    // Percent-encoded UTF-8 bytes (encodeURIComponent refuses a lone surrogate).
    hostileString.map((s) => [...Buffer.from(s, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')),
  );

  it('GET and POST routes with odd ids and query strings', async () => {
    const templates = [
      (p: string) => ['GET', `/api/campaigns/${p}`],
      (p: string) => ['POST', `/api/campaigns/${p}/pause`],
      (p: string) => ['POST', `/api/scheduler/tasks/${p}/resume`],
      (p: string) => ['GET', `/api/templates/${p}`],
      (p: string) => ['GET', `/api/services/${p}`],
      (p: string) => ['POST', `/api/users/${p}/token`],
      (p: string) => ['GET', `/api/campaigns?limit=${p}`],
      (p: string) => ['GET', `/api/campaigns?status=${p}&after_id=${p}`],
      (p: string) => ['GET', `/api/contacts?user_id=${p}`],
      (p: string) => ['GET', `/api/contacts?after_id=${p}&limit=${p}&limit=2`],
      (p: string) => ['GET', `/api/templates?user_id=${p}&extra=${p}`],
      (p: string) => ['GET', `/api/jobs/reports?limit=${p}`],
      (p: string) => ['POST', `/api/jobs/${p}/pause`],
      (p: string) => ['GET', `/u/${p}`],
    ] as const;
    await fc.assert(
      fc.asyncProperty(fc.nat(templates.length - 1), piece, fc.boolean(), async (i, p, admin) => {
        const [method, url] = templates[i]!(p) as ['GET' | 'POST', string];
        await check(tally, { method, url, token: admin ? f.adminToken : bob.token });
      }),
      { numRuns: 200, seed: SEEDS.api },
    );
  });

  it('raw bytes with any content type to every body route', async () => {
    const routes = [
      '/api/campaigns',
      '/api/templates',
      '/api/contacts',
      '/api/users',
      '/api/services',
      `/api/services/${serviceId}`,
      '/api/bounces',
    ];
    const contentType = fc.constantFrom(
      'application/json',
      'application/json; charset=utf-16',
      'application/json; charset=latin1',
      'text/csv',
      'text/csv; charset=utf-8',
      'application/csv',
      'text/plain',
      'application/xml',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/octet-stream',
      '',
      ';;;',
    );
    const payload = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
      fc.string({ unit: 'binary', maxLength: 100 }),
      fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? 'null'),
      fc.constantFrom(
        '{',
        '[',
        '{"a":',
        '\uFEFF{}',
        'null',
        '""',
        '1e400',
        '{"contacts":[{"email":1e400}]}',
        'email\n',
        'email,email\na,b\n',
        '"unterminated',
      ),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        contentType,
        payload,
        fc.constantFrom('POST', 'PATCH', 'PUT') as fc.Arbitrary<'POST' | 'PATCH' | 'PUT'>,
        async (url, type, body, method) => {
          const headers: Record<string, string> = type ? { 'content-type': type } : {};
          await check(tally, {
            method: url.match(/\d+$/) ? (method === 'POST' ? 'PATCH' : method) : 'POST',
            url,
            token: f.adminToken,
            body,
            headers,
          });
        },
      ),
      { numRuns: 200, seed: SEEDS.api },
    );
  });
});

describe('hand-written hostile requests', () => {
  const tally = new Tally();
  afterAll(() => figures('hostile input: oversized, nested, polluting, duplicate-key bodies', tally));
  const json = { 'content-type': 'application/json' };
  const bodyRoutes: [string, string][] = [
    ['POST', '/api/campaigns'],
    ['POST', '/api/templates'],
    ['POST', '/api/contacts'],
    ['POST', '/api/users'],
    ['POST', '/api/services'],
    ['PATCH', `/api/services/${0}`],
    ['POST', '/api/bounces'],
  ];

  it('refuses oversized bodies with 413 on every body route, and writes nothing', async () => {
    for (const [method, path] of bodyRoutes) {
      const url = path.replace('/0', `/${serviceId}`);
      const limit = url === '/api/contacts' ? 10 * 1024 * 1024 : 1024 * 1024;
      const big = JSON.stringify({ name: 'x', pad: 'y'.repeat(limit) });
      const res = await check(tally, { method: method as 'POST', url, token: f.adminToken, body: big, headers: json });
      expect([url, res.statusCode]).toEqual([url, 413]);
    }
    // Just under the import limit, the answer is about the rows, not the size: at once when the
    // import runs inline, from the background import (read contact by contact) otherwise.
    const rows = Array.from({ length: 100_001 }, (_, i) => ({ email: `bulk${i}@big.example` }));
    const inline = await check(tally, {
      method: 'POST',
      url: '/api/contacts?background=false',
      token: alice.token,
      body: { contacts: rows },
    });
    expect([inline.statusCode, inline.json<{ error: { issues: { path: string }[] } }>().error.issues[0]!.path]).toEqual([400, 'contacts']);
    const queued = await check(tally, { method: 'POST', url: '/api/contacts', token: alice.token, body: { contacts: rows } });
    expect(queued.statusCode).toBe(202);
    const job = queued.json<{ import: { id: number } }>().import;
    await f.engine.contacts.waitForImport(job.id);
    expect(await f.engine.contacts.getImport(job.id)).toMatchObject({
      status: 'failed',
      error: { issues: [{ path: 'contacts', message: 'must hold at most 100000 contacts per call' }] },
    });
  });

  it('refuses deeply nested JSON with 400 on every body route, without overflowing the stack', async () => {
    for (const [method, path] of bodyRoutes) {
      const url = path.replace('/0', `/${serviceId}`);
      for (const depth of [33, 1000, 200_000]) {
        const nested = '{"name":' + '['.repeat(depth) + ']'.repeat(depth) + '}';
        const res = await check(tally, { method: method as 'POST', url, token: f.adminToken, body: nested, headers: json });
        expect([url, depth, res.statusCode]).toEqual([url, depth, 400]);
        const inAttributes = `{"contacts":[{"email":"deep@example.org","attributes":{"x":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}}]}`;
        // Inline: a body this large would otherwise be read contact by contact in the background.
        const deep = await check(tally, {
          method: 'POST',
          url: '/api/contacts?background=false',
          token: alice.token,
          body: inAttributes,
          headers: json,
        });
        expect(deep.statusCode).toBe(400);
      }
    }
  });

  it('ignores prototype pollution and refuses two spellings of one field', async () => {
    const polluting = [
      '{"__proto__":{"role":"admin","isAdmin":true},"name":"P","email":"proto@example.org","quota":1}',
      '{"constructor":{"prototype":{"role":"admin"}},"name":"P","email":"proto2@example.org","quota":1}',
      '{"name":"t","subject":"s","text":"t","__proto__":{"userId":1}}',
    ];
    for (const [i, body] of polluting.entries()) {
      const url = i < 2 ? '/api/users' : '/api/templates';
      const res = await check(tally, { method: 'POST', url, token: i < 2 ? f.adminToken : bob.token, body, headers: json });
      expect(res.statusCode).toBe(400);
    }
    expect(({} as { role?: unknown }).role).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('isAdmin');
    // `user_id` and `userId` in one body must not let either win.
    const twice = await check(tally, {
      method: 'POST',
      url: '/api/campaigns',
      token: bob.token,
      body: { user_id: bob.id, userId: alice.id, name: 'x', from: 'a@example.org', templates: [template], recipient_rule: { type: 'all' } },
    });
    expect(twice.statusCode).toBe(400);
    const hidden = await check(tally, {
      method: 'POST',
      url: `/api/campaigns?user_id=${bob.id}`,
      token: bob.token,
      body: { userId: alice.id, name: 'x', from: 'a@example.org', templates: [template], recipient_rule: { type: 'all' } },
    });
    expect(hidden.statusCode).toBe(403);
  });

  it('refuses odd numbers and encodings with a 4xx', async () => {
    const cases: [string, string, string, Record<string, string>][] = [
      ['POST', '/api/users', '{"name":"N","email":"n1@example.org","quota":1e400}', json],
      ['POST', '/api/users', '{"name":"N","email":"n2@example.org","quota":1.0000000000000002}', json],
      ['POST', '/api/users', '{"name":"N","email":"n3@example.org","quota":-0.0,"role":"root"}', json],
      ['POST', '/api/services', '{"name":"s","transport":{"host":"h","port":25},"sending_rate":1e-400,"daily_quota":1e308}', json],
      ['POST', '/api/templates', '{"name":"t","subject":"s","text":"t"}', { 'content-type': 'text/plain' }],
      ['POST', '/api/templates', 'name=t&subject=s', { 'content-type': 'application/x-www-form-urlencoded' }],
      ['POST', '/api/contacts', 'email\n"a@example.org\n', { 'content-type': 'text/csv' }],
      ['POST', '/api/contacts', 'email,email\na@example.org,b@example.org\n', { 'content-type': 'text/csv' }],
      ['POST', '/api/contacts', 'name\nx\n', { 'content-type': 'text/csv' }],
      ['POST', '/api/contacts', '\n\n\n', { 'content-type': 'text/csv' }],
    ];
    const utf16: [string, string, Buffer, Record<string, string>] = [
      'POST',
      '/api/templates',
      Buffer.from('{"name":"t\u00e9","subject":"s","text":"t"}', 'utf16le'),
      { 'content-type': 'application/json; charset=utf-16' },
    ];
    for (const [method, url, body, headers] of [...cases, utf16]) {
      const res = await check(tally, {
        method: method as 'POST',
        url,
        token: url === '/api/contacts' ? alice.token : f.adminToken,
        body,
        headers,
      });
      expect([url, body.slice(0, 40), res.statusCode >= 400]).toEqual([url, body.slice(0, 40), true]);
    }
    // A byte order mark before JSON is allowed to be ignored (RFC 8259 section 8.1), and is.
    const bom = await check(tally, {
      method: 'POST',
      url: '/api/templates',
      token: bob.token,
      body: '\uFEFF{"name":"bom","subject":"s","text":"t"}',
      headers: json,
    });
    expect([bom.statusCode, bom.json<{ name: string }>().name]).toEqual([201, 'bom']);
  });
});
