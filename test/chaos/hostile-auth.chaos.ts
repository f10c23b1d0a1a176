/**
 * Authorization matrix, guessing limit and secrets (issue #7, "Hostile input"), through fastify's
 * inject() against a real PostgreSQL database and a real SMTP server on loopback:
 *
 * - every route of the OpenAPI document (the test fails if a route is added without a row here),
 *   plus the dashboard, is called with no token, bad tokens (wrong, malformed, rotated, revoked,
 *   Basic, lower-case scheme...), another user's token, the owner's and an admin's: only the right
 *   ones pass, a user never sees another's data, and a refused call writes nothing;
 * - failed credential attempts (tokens and webhook secrets) are rate limited: a model of the
 *   limiter predicts every answer (401, 429, 200) of generated sequences from several addresses;
 * - SMTP passwords, DKIM private keys, API tokens and webhook secrets never appear in any
 *   response (the one answer that issues a token aside) nor in any line of the captured engine and
 *   HTTP logs at trace level, including the scheduler's own logs of a failing authenticated send.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { createToken, revokeToken } from '../../services/auth.js';
import { createLogger } from '../../services/kernel/logger.js';
import { createHttpServer, type HttpServer } from '../../src/http/server.js';
import { startSmtpCatcher, type SmtpCatcher } from '../../src/smtp-catcher.js';
import { httpFixture, LogSink, WEBHOOK_SECRET, type HttpFixture } from '../helpers/http.js';
import { recordFigures } from './report.js';
import { fingerprint, SEEDS, Tally, watchUnhandledRejections } from './helpers/hostile-inputs.js';

const rejections = watchUnhandledRejections();
const logs = new LogSink();
const SMTP_PASS = `smtp-pass-${randomBytes(12).toString('hex')}`;
const SMTP_PASS_2 = `smtp-pass-two-${randomBytes(12).toString('hex')}`;
const DKIM_KEY = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
/** A line of the key's base64 body: enough to recognise any part of it in a log. */
const DKIM_MARK = DKIM_KEY.split('\n')[5]!;

let f: HttpFixture;
let catcher: SmtpCatcher;
let alice: { id: number; token: string };
let bob: { id: number; token: string };
let spare: { id: number; token: string };
let aliceTemplate: number;
let aliceService: number;
let spareService: number;
/** Every answer, to search for secrets at the end; `issued` marks the answers that hand out a token. */
const answers: { label: string; text: string; issued?: string }[] = [];
const issuedTokens: string[] = [];
let ipSerial = 0;
/** A fresh client address per matrix call, so the guessing limit does not mix into the matrix. */
const nextIp = () => `10.${(++ipSerial >> 16) & 255}.${(ipSerial >> 8) & 255}.${ipSerial & 255}`;

beforeAll(async () => {
  catcher = await startSmtpCatcher();
  f = await httpFixture({
    engine: { logger: createLogger('trace', logs), schedulerTickMs: 50, unhealthyAfter: 100 },
    http: { logger: createLogger('trace', logs) },
  });
  alice = await f.user('Alice', 1000);
  bob = await f.user('Bob', 1000);
  spare = await f.user('Spare', 10);
  await f.engine.contacts.bulkCreate(alice.id, [
    { email: 'alice-contact-1@alice.example', tags: ['news'] },
    { email: 'alice-contact-2@alice.example', tags: ['news'] },
  ]);
  await f.engine.contacts.bulkCreate(bob.id, [{ email: 'bob-contact@bob.example', tags: ['news'] }]);
  aliceTemplate = (await f.engine.templates.create(alice.id, { name: 'alice-template', subject: 'Hi', text: 'x' })).id;
  await f.engine.templates.create(bob.id, { name: 'bob-template', subject: 'Hi', text: 'x' });
  // Alice's service authenticates with a password and signs with DKIM; the catcher offers no AUTH,
  // so every send through it fails and the scheduler logs and stores the failure.
  aliceService = (
    await f.engine.services.create({
      name: 'alice-only-relay',
      transport: { host: '127.0.0.1', port: catcher.port, auth: { user: 'mailer', pass: SMTP_PASS } },
      sendingRate: 0,
      dailyQuota: 1000,
      userIds: [alice.id],
      dkim: { domainName: 'alice.example', keySelector: 'fs', privateKey: DKIM_KEY },
    })
  ).id;
  spareService = (
    await f.engine.services.create({
      name: 'spare-relay',
      transport: { host: '127.0.0.1', port: catcher.port, auth: { user: 'spare', pass: SMTP_PASS_2 } },
      sendingRate: 1,
      dailyQuota: 10,
      userIds: [spare.id],
    })
  ).id;
});
afterAll(async () => {
  rejections.stop();
  await f?.engine.scheduler.stop();
  await f?.close();
  await catcher?.stop();
});
afterEach(() => {
  expect(rejections.seen).toEqual([]);
});

/** A campaign of Alice's, in the state a route needs. */
async function aliceCampaign(state: 'scheduled' | 'paused' = 'scheduled', due = false): Promise<number> {
  const c = await f.engine.campaigns.create({
    userId: alice.id,
    name: 'alice-private-campaign',
    from: 'news@alice.example',
    templates: [aliceTemplate],
    recipientRule: { type: 'tag_based', includeTags: ['news'] },
    scheduledAt: due ? new Date() : '2030-01-01T00:00:00Z',
  });
  if (state === 'paused') await f.engine.campaigns.pause(c.id);
  return c.id;
}

/** A campaign of Alice's with its queue generated, then paused (so no running scheduler sends it). */
async function aliceGenerated(): Promise<number> {
  const id = await aliceCampaign('scheduled', true);
  await f.engine.scheduler.processScheduledTasks();
  await f.engine.campaigns.pause(id);
  return id;
}

/** A fresh unsubscribed contact of Alice's (re-activation and status history). */
async function aliceUnsubscribed(): Promise<number> {
  const { ids } = await f.engine.contacts.bulkCreate(alice.id, [{ email: `alice-contact-u${++ipSerial}@alice.example` }]);
  await f.engine.contacts.setStatus(alice.id, ids[0]!, 'unsubscribed');
  return ids[0]!;
}

type Cred = 'none' | 'bad' | 'other' | 'owner' | 'admin';
const CREDS: Cred[] = ['none', 'bad', 'other', 'owner', 'admin'];
type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
type Audience = 'public' | 'user' | 'admin' | 'bounce';

interface Row {
  audience: Audience;
  /** What Bob (a user who is not the owner) gets: 'denied' (403/404, nothing seen) or 'own' (200 with his own data only). */
  other?: 'denied' | 'own';
  /** Builds the request for one credential (fresh resources for state-changing routes). */
  request(cred: Cred): Promise<{ url: string; body?: unknown; headers?: Record<string, string> }>;
}

const campaignBody = {
  name: 'c',
  from: 'a@alice.example',
  templates: [0],
  recipient_rule: { type: 'all' },
  scheduled_at: '2030-01-01T00:00:00Z',
};
/** The owner's id in a query string: Bob naming Alice is refused, admins act for her. */
const forAlice = (url: string) => `${url}?user_id=${0}`;

const MATRIX: Record<string, Row> = {
  'GET /health': { audience: 'public', request: async () => ({ url: '/health' }) },
  'GET /u/{token}': { audience: 'public', request: async () => ({ url: '/u/not-a-valid-token' }) },
  'POST /u/{token}': {
    audience: 'public',
    request: async () => ({
      url: '/u/not-a-valid-token',
      body: 'List-Unsubscribe=One-Click',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    }),
  },
  'POST /api/scheduler/start': { audience: 'admin', request: async () => ({ url: '/api/scheduler/start' }) },
  'POST /api/scheduler/stop': { audience: 'admin', request: async () => ({ url: '/api/scheduler/stop' }) },
  'POST /api/scheduler/tasks/{task_id}/pause': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: `/api/scheduler/tasks/${await aliceCampaign()}/pause` }),
  },
  'POST /api/scheduler/tasks/{task_id}/resume': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: `/api/scheduler/tasks/${await aliceCampaign('paused')}/resume` }),
  },
  'GET /api/scheduler/status': { audience: 'user', other: 'own', request: async () => ({ url: '/api/scheduler/status' }) },
  'GET /api/scheduler/stats': { audience: 'user', other: 'own', request: async () => ({ url: '/api/scheduler/stats' }) },
  'POST /api/services': {
    audience: 'admin',
    request: async () => ({
      url: '/api/services',
      body: {
        name: `svc-${++ipSerial}`,
        transport: { host: '127.0.0.1', port: 2525, auth: { user: 'u', pass: SMTP_PASS } },
        sending_rate: 1,
        daily_quota: 1,
        dkim: { domain_name: 'x.example', key_selector: 's', private_key: DKIM_KEY },
      },
    }),
  },
  'PATCH /api/services/{id}': {
    audience: 'admin',
    request: async () => ({ url: `/api/services/${spareService}`, body: { daily_quota: 11 } }),
  },
  'PUT /api/services/{id}': {
    audience: 'admin',
    request: async () => ({
      url: `/api/services/${spareService}`,
      body: {
        name: 'spare-relay',
        transport: { host: '127.0.0.1', port: catcher.port, auth: { user: 'spare', pass: SMTP_PASS_2 } },
        sending_rate: 1,
        daily_quota: 10,
        user_ids: [spare.id],
      },
    }),
  },
  'GET /api/services': { audience: 'user', other: 'own', request: async () => ({ url: '/api/services' }) },
  'GET /api/services/{id}': { audience: 'user', other: 'denied', request: async () => ({ url: `/api/services/${aliceService}` }) },
  'POST /api/campaigns': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: forAlice('/api/campaigns'), body: { ...campaignBody, templates: [aliceTemplate] } }),
  },
  'GET /api/campaigns': { audience: 'user', other: 'own', request: async () => ({ url: '/api/campaigns' }) },
  'GET /api/campaigns/{id}': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: `/api/campaigns/${await aliceCampaign()}` }),
  },
  'POST /api/campaigns/{id}/pause': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: `/api/campaigns/${await aliceCampaign()}/pause` }),
  },
  'POST /api/campaigns/{id}/resume': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: `/api/campaigns/${await aliceCampaign('paused')}/resume` }),
  },
  'POST /api/campaigns/{id}/cancel': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: `/api/campaigns/${await aliceCampaign()}/cancel` }),
  },
  'GET /api/campaigns/{id}/recipients': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: `/api/campaigns/${await aliceGenerated()}/recipients?status=queued,failed&limit=5` }),
  },
  'POST /api/campaigns/{id}/retry': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: `/api/campaigns/${await aliceGenerated()}/retry`, body: { statuses: ['failed', 'unknown'] } }),
  },
  'POST /api/templates': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: forAlice('/api/templates'), body: { name: 'n', subject: 's', text: 't' } }),
  },
  'GET /api/templates': { audience: 'user', other: 'own', request: async () => ({ url: '/api/templates' }) },
  'GET /api/templates/{id}': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: forAlice(`/api/templates/${aliceTemplate}`) }),
  },
  'POST /api/users': {
    audience: 'admin',
    request: async () => ({ url: '/api/users', body: { name: 'New', email: `new${++ipSerial}@example.test`, quota: 1 } }),
  },
  'GET /api/users': { audience: 'admin', request: async () => ({ url: '/api/users' }) },
  'POST /api/users/{id}/token': { audience: 'admin', request: async () => ({ url: `/api/users/${spare.id}/token` }) },
  'GET /api/me': { audience: 'user', other: 'own', request: async () => ({ url: '/api/me' }) },
  'POST /api/bounces': {
    audience: 'bounce',
    request: async () => ({
      url: '/api/bounces',
      body: { events: [{ type: 'soft_bounce', email: 'nobody@nowhere.example', reason: 'full' }] },
    }),
  },
  'GET /api/jobs': { audience: 'admin', request: async () => ({ url: '/api/jobs' }) },
  'GET /api/jobs/reports': { audience: 'admin', request: async () => ({ url: '/api/jobs/reports?limit=2' }) },
  'POST /api/jobs/{name}/pause': { audience: 'admin', request: async () => ({ url: '/api/jobs/index_report/pause' }) },
  'POST /api/jobs/{name}/resume': { audience: 'admin', request: async () => ({ url: '/api/jobs/index_report/resume' }) },
  'POST /api/jobs/{name}/run': { audience: 'admin', request: async () => ({ url: '/api/jobs/db_health_check/run' }) },
  'POST /api/contacts': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: forAlice('/api/contacts'), body: { contacts: [{ email: `c${++ipSerial}@alice.example` }] } }),
  },
  'GET /api/contacts': { audience: 'user', other: 'own', request: async () => ({ url: '/api/contacts' }) },
  'POST /api/contacts/{id}/reactivate': {
    audience: 'admin',
    request: async () => ({ url: `/api/contacts/${await aliceUnsubscribed()}/reactivate`, body: { reason: 'asked again' } }),
  },
  'GET /api/contacts/{id}/status-history': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: `/api/contacts/${await aliceUnsubscribed()}/status-history` }),
  },
  'GET /metrics': { audience: 'admin', request: async () => ({ url: '/metrics' }) },
  // Not in the OpenAPI document: the dashboard and the document itself.
  'GET /api/contacts/imports/{id}': {
    audience: 'user',
    other: 'denied',
    request: async () => {
      // Ended before the call, so its own writes are not taken for the call's.
      const job = await f.engine.contacts.startImport(alice.id, { contacts: [{ email: `alice-contact-i${++ipSerial}@alice.example` }] });
      await f.engine.contacts.waitForImport(job.id);
      return { url: `/api/contacts/imports/${job.id}` };
    },
  },
  'GET /api/suppressions': { audience: 'user', other: 'denied', request: async () => ({ url: forAlice('/api/suppressions') }) },
  'GET /api/suppressions/export': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: forAlice('/api/suppressions/export') }),
  },
  'POST /api/suppressions': {
    audience: 'user',
    other: 'denied',
    request: async () => ({ url: forAlice('/api/suppressions'), body: { emails: [`s${++ipSerial}@elsewhere.example`] } }),
  },
  'POST /api/suppressions/import': {
    audience: 'user',
    other: 'denied',
    request: async () => ({
      url: forAlice('/api/suppressions/import'),
      body: `email\ns${++ipSerial}@elsewhere.example\n`,
      headers: { 'content-type': 'text/csv' },
    }),
  },
  'DELETE /api/suppressions/{email}': {
    audience: 'user',
    other: 'denied',
    request: async () => {
      const email = `s${++ipSerial}@elsewhere.example`;
      await f.engine.suppressions.add({ userId: alice.id, emails: [email], source: 'api' });
      return { url: forAlice(`/api/suppressions/${encodeURIComponent(email)}`) };
    },
  },
  'GET /api/failures': { audience: 'admin', request: async () => ({ url: '/api/failures' }) },
  'PUT /api/services/{id}/webhooks/{provider}': {
    audience: 'admin',
    request: async () => ({ url: `/api/services/${spareService}/webhooks/mailgun`, body: { signingKey: `key-${++ipSerial}` } }),
  },
  'GET /': { audience: 'public', request: async () => ({ url: '/' }) },
  'GET /dashboard.js': { audience: 'public', request: async () => ({ url: '/dashboard.js' }) },
  'GET /openapi.json': { audience: 'public', request: async () => ({ url: '/openapi.json' }) },
};
const HIDDEN = ['GET /', 'GET /dashboard.js', 'GET /openapi.json'];

/** Bad credentials, in every shape a client or an attacker sends them. */
function badAuthorizations(): Record<string, string>[] {
  const wellFormed = 'fst_' + randomBytes(32).toString('base64url');
  return [
    { authorization: `Bearer ${wellFormed}` },
    { authorization: `Bearer ${alice.token}x` },
    { authorization: `Bearer ${alice.token.slice(0, -1)}` },
    { authorization: `Bearer ${alice.token.toUpperCase()}` },
    { authorization: `Basic ${Buffer.from(`alice:${alice.token}`).toString('base64')}` },
    { authorization: 'Bearer ' },
    { authorization: `Bearer ${'A'.repeat(8000)}` },
    { authorization: "Bearer ' OR 1=1 --" },
    { authorization: `Bearer ${alice.token} ${bob.token}` },
    { 'x-fairsend-webhook-secret': `${WEBHOOK_SECRET}x`, authorization: `Bearer ${wellFormed}` },
  ];
}

async function send(
  method: Method,
  req: { url: string; body?: unknown; headers?: Record<string, string> },
  headers: Record<string, string>,
) {
  const res = await f.server.app.inject({
    method,
    url: req.url,
    remoteAddress: nextIp(),
    headers: { ...headers, ...req.headers },
    ...(req.body === undefined ? {} : typeof req.body === 'string' ? { payload: req.body } : { payload: req.body as object }),
  });
  return res;
}

function keep(label: string, res: LightMyRequestResponse): void {
  const issued = label.startsWith('POST /api/users') && res.statusCode < 300 ? res.json<{ token: string }>().token : undefined;
  if (issued) issuedTokens.push(issued);
  answers.push({ label, text: JSON.stringify(res.headers) + res.body, ...(issued ? { issued } : {}) });
}

describe('authorization matrix', () => {
  it('covers every route of the OpenAPI document', async () => {
    const doc = (await f.call('GET', '/openapi.json')).json<{ paths: Record<string, Record<string, unknown>> }>();
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
    expect(documented.sort()).toEqual(
      Object.keys(MATRIX)
        .filter((k) => !HIDDEN.includes(k))
        .sort(),
    );
  });

  it('lets only the right credentials through, on every route, and denied calls write nothing', async () => {
    // Alice's ids are known only now: put them in the query strings that name her.
    for (const row of Object.values(MATRIX)) {
      const build = row.request;
      row.request = async (cred) => {
        const r = await build(cred);
        return { ...r, url: r.url.replace('user_id=0', `user_id=${alice.id}`) };
      };
    }
    const tally = new Tally();
    const grid: string[] = [];
    // Start and stop last among admin calls: a running scheduler must not change what the matrix sees.
    const keys = Object.keys(MATRIX).sort((a, b) => Number(a.includes('/scheduler/st')) - Number(b.includes('/scheduler/st')));
    for (const key of keys) {
      const row = MATRIX[key]!;
      const method = key.split(' ')[0] as Method;
      const cells: string[] = [];
      for (const cred of CREDS) {
        const headerSets =
          cred === 'none'
            ? [{}]
            : cred === 'bad'
              ? badAuthorizations()
              : [{ authorization: `Bearer ${cred === 'other' ? bob.token : cred === 'owner' ? alice.token : f.adminToken}` }];
        // Bounce webhooks authenticate with their secret instead of a token.
        if (row.audience === 'bounce' && cred === 'owner') headerSets.push({ 'x-fairsend-webhook-secret': WEBHOOK_SECRET });
        for (const headers of headerSets) {
          const req = await row.request(cred);
          const before = await fingerprint(f.engine.apiDb);
          const res = await send(method, req, headers);
          const label = `${key} as ${cred}${cred === 'bad' ? ` (${Object.values(headers)[0]!.slice(0, 24)})` : ''} -> ${res.statusCode}`;
          keep(label, res);
          const status = res.statusCode;
          const usesSecret = 'x-fairsend-webhook-secret' in headers && !('authorization' in headers);
          let expected: string;
          if (row.audience === 'public') expected = status < 500 && status !== 401 && status !== 403 && status !== 429 ? 'pass' : 'FAIL';
          else if (cred === 'none' || cred === 'bad') expected = status === 401 ? 'refused' : 'FAIL';
          else if (cred === 'admin' || usesSecret) expected = status < 300 ? 'pass' : 'FAIL';
          else if (row.audience === 'admin' || row.audience === 'bounce') expected = status === 403 ? 'refused' : 'FAIL';
          else if (cred === 'owner') expected = status < 300 ? 'pass' : 'FAIL';
          else if (row.other === 'denied') expected = status === 403 || status === 404 ? 'refused' : 'FAIL';
          else expected = status === 200 ? 'own' : 'FAIL';
          expect([label, expected]).toEqual([label, expect.not.stringMatching(/^FAIL$/)]);
          if (expected === 'refused') expect([label, await fingerprint(f.engine.apiDb)]).toEqual([label, before]);
          if (expected === 'own' || (row.audience !== 'public' && expected === 'refused' && cred === 'other')) {
            // Bob sees nothing of Alice's: not her campaigns, contacts, templates, services or name.
            for (const secret of ['alice-private-campaign', 'alice-contact', 'alice-template', 'alice-only-relay', 'alice@example.test']) {
              expect([label, res.body.includes(secret)]).toEqual([label, false]);
            }
          }
          if (expected === 'refused' && cred !== 'other')
            expect(res.json<{ error: { code: string } }>().error.code).toMatch(/^(UNAUTHORIZED|FORBIDDEN)$/);
          tally.count(status, cred !== 'owner' && cred !== 'admin', true);
          cells.push(`${cred}:${status}`);
        }
      }
      grid.push(`${key.padEnd(46)} ${cells.join(' ')}`);
    }
    console.log(`authorization matrix (credential:status)\n${grid.join('\n')}`);
    await tally.record(
      `authorization matrix: ${Object.keys(MATRIX).length} routes x 5 credentials`,
      `${badAuthorizations().length} bad credential shapes per route; ${tally.summary()}`,
    );
  });

  it('refuses rotated and revoked tokens at once', async () => {
    const old = spare.token;
    spare.token = await createToken(f.engine, spare.id);
    const me = (token: string) =>
      f.server.app.inject({ method: 'GET', url: '/api/me', remoteAddress: nextIp(), headers: { authorization: `Bearer ${token}` } });
    expect((await me(old)).statusCode).toBe(401);
    expect((await me(spare.token)).statusCode).toBe(200);
    await revokeToken(f.engine, spare.id);
    expect((await me(spare.token)).statusCode).toBe(401);
  });
});

describe('guessing limit', () => {
  it('answers every generated sequence of attempts as a model of the per-address limiter predicts', async () => {
    const LIMIT = 4;
    const limited: HttpServer = await createHttpServer(f.engine, {
      logger: createLogger('trace', logs),
      authFailureLimit: LIMIT,
      bounceWebhookSecret: WEBHOOK_SECRET,
      processMetrics: false,
    });
    const kind = fc.oneof(
      { weight: 3, arbitrary: fc.constant('bad-token' as const) },
      { weight: 2, arbitrary: fc.constant('bad-secret' as const) },
      { weight: 1, arbitrary: fc.constantFrom('good-token' as const, 'good-secret' as const, 'none' as const) },
    );
    const tally = new Tally();
    let run = 0;
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.tuple(fc.nat(1), kind), { minLength: 1, maxLength: 24 }), async (attempts) => {
          run++;
          const failures = new Map<number, number>();
          for (const [who, kind] of attempts) {
            const ip = `172.${run >> 8}.${run & 255}.${who}`;
            const onBounces = kind.endsWith('secret');
            const headers: Record<string, string> =
              kind === 'bad-token'
                ? { authorization: `Bearer fst_${randomBytes(32).toString('base64url')}` }
                : kind === 'good-token'
                  ? { authorization: `Bearer ${bob.token}` }
                  : kind === 'bad-secret'
                    ? { 'x-fairsend-webhook-secret': randomBytes(16).toString('hex') }
                    : kind === 'good-secret'
                      ? { 'x-fairsend-webhook-secret': WEBHOOK_SECRET }
                      : {};
            const res = await limited.app.inject({
              method: onBounces ? 'POST' : 'GET',
              url: onBounces ? '/api/bounces' : '/api/me',
              remoteAddress: ip,
              headers,
              ...(onBounces ? { payload: { events: [{ type: 'soft_bounce', email: 'x@nowhere.example' }] } } : {}),
            });
            keep(`limiter ${kind} from ${ip} -> ${res.statusCode}`, res);
            const n = failures.get(who) ?? 0;
            const blocked = kind !== 'none' && n >= LIMIT;
            const want: number = blocked ? 429 : kind === 'none' || kind.startsWith('bad') ? 401 : 200;
            if (!blocked && kind.startsWith('bad')) failures.set(who, n + 1);
            expect([ip, kind, n, res.statusCode]).toEqual([ip, kind, n, want]);
            if (want === 429) {
              expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
            }
            tally.count(res.statusCode, kind !== 'good-token' && kind !== 'good-secret', true);
          }
        }),
        { seed: SEEDS.auth, numRuns: 40 },
      );
    } finally {
      await limited.close();
    }
    expect(tally.byStatus.get(429) ?? 0).toBeGreaterThan(10);
    await tally.record(
      `guessing limit: ${LIMIT} failed credentials per address, then 429 (model-based)`,
      `seed ${SEEDS.auth}; ${tally.summary()}`,
    );
  });
});

describe('secrets', () => {
  it('never shows a password, DKIM key, token or webhook secret in a response or a log line', async () => {
    // A send through Alice's authenticated, DKIM-signing service, logged by the scheduler at trace level.
    const due = await aliceCampaign('scheduled', true);
    await f.engine.scheduler.start();
    const deadline = Date.now() + 15_000;
    const settled = async () => {
      const p = await f.engine.campaigns.progress(due);
      return p.total > 0 && p.queued === 0 && p.sending === 0;
    };
    while (!(await settled()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await f.engine.scheduler.stop();
    expect(await settled()).toBe(true);
    expect(catcher.received).toBeGreaterThan(0);
    keep('GET service after a send', await f.call('GET', `/api/services/${aliceService}`, f.adminToken));
    keep('GET campaign after a send', await f.call('GET', `/api/campaigns/${due}`, alice.token));
    // Refused service bodies carrying secrets: the errors must not echo them.
    for (const body of [
      { name: 'x', transport: { host: 'h', port: 0, auth: { user: 'u', pass: SMTP_PASS } }, sending_rate: 1, daily_quota: 1 },
      {
        name: 'x',
        transport: { host: 'h', port: 25, auth: { user: 'u', pass: SMTP_PASS, extra: SMTP_PASS } },
        sending_rate: 1,
        daily_quota: 1,
      },
      {
        name: 'x',
        transport: { host: 'h', port: 25 },
        sending_rate: 1,
        daily_quota: 1,
        dkim: { domain_name: 'd', key_selector: '', private_key: DKIM_KEY },
      },
      { name: 'x', transport: { host: 'h', port: 25 }, sending_rate: 1, daily_quota: 1, dkim: { private_key: DKIM_KEY.repeat(20) } },
    ]) {
      const res = await f.call('POST', '/api/services', f.adminToken, body);
      expect(res.statusCode).toBe(400);
      keep('POST /api/services (refused, with secrets)', res);
    }
    // A secret presented where it is not expected.
    // (Not probed: a token pasted into a query string is logged with the URL, as every URL is.)
    keep('secret as a bearer token', await f.call('GET', '/api/me', WEBHOOK_SECRET));

    const secrets: Record<string, string> = {
      'SMTP password': SMTP_PASS,
      'second SMTP password': SMTP_PASS_2,
      'DKIM private key': DKIM_MARK,
      'webhook secret': WEBHOOK_SECRET,
      'admin token': f.adminToken,
      'alice token': alice.token,
      'bob token': bob.token,
      'spare token': spare.token,
    };
    issuedTokens.forEach((t, i) => (secrets[`issued token ${i}`] = t));
    const logText = logs.text;
    expect(logs.lines().length).toBeGreaterThan(500);
    expect(logText).toContain('"level":10'); // trace lines were captured too
    const leaks: string[] = [];
    for (const [name, value] of Object.entries(secrets)) {
      for (const a of answers) if (a.text.includes(value) && a.issued !== value) leaks.push(`${name} in answer to ${a.label}`);
      if (logText.includes(value))
        leaks.push(`${name} in the log: ${logText.slice(Math.max(0, logText.indexOf(value) - 200), logText.indexOf(value) + 40)}`);
    }
    expect(leaks).toEqual([]);
    // Each issued token appeared once, in the answer that issued it.
    for (const t of issuedTokens) expect(answers.filter((a) => a.text.includes(t)).map((a) => a.issued)).toEqual([t]);
    await recordFigures({
      scenario: 'secrets: responses and trace-level logs searched',
      faultsInjected: Object.keys(secrets).length,
      faultsSurvived: Object.keys(secrets).length - new Set(leaks.map((l) => l.split(' in ')[0])).size,
      messagesSent: catcher.accepted,
      lost: 0,
      duplicates: 0,
      duplicateBound: 0,
      inputsTried: answers.length,
      notes: `${Object.keys(secrets).length} secrets, ${answers.length} answers, ${logs.lines().length} log lines, 0 leaks`,
    });
  });
});

describe('what each role may see', () => {
  it('shows each role its own data (and an admin everything), and never another user’s, route by route', async () => {
    await aliceCampaign();
    const aliceContact = (await f.engine.contacts.list(alice.id, { limit: 1 }))[0]!.id;
    const { hostname } = await import('node:os');
    const scheduler = ['pools', 'instance_id', hostname(), `"pid"`, 'processing_rate', 'buffered'];
    const alices = ['alice-private-campaign', 'alice-contact', 'alice-template', 'alice-only-relay', 'alice@example.test'];
    type View = { url: string; as: 'bob' | 'alice' | 'admin'; sees: string[]; never: string[]; status?: number };
    const views: View[] = [
      // Scheduler status: a plain user sees their own campaigns and usable services, no host, pid or pools.
      { url: '/api/scheduler/status', as: 'bob', sees: [], never: [...alices, ...scheduler] },
      { url: '/api/scheduler/status', as: 'alice', sees: ['alice-only-relay'], never: [...scheduler, 'spare-relay'] },
      { url: '/api/scheduler/status', as: 'admin', sees: ['alice-only-relay', 'spare-relay', 'pools', 'instance_id'], never: [] },
      { url: '/api/scheduler/stats', as: 'bob', sees: [], never: alices },
      // Campaigns, contacts, templates, services: one's own; an admin names the user.
      { url: '/api/campaigns', as: 'bob', sees: [], never: alices },
      { url: '/api/campaigns', as: 'alice', sees: ['alice-private-campaign'], never: [] },
      { url: `/api/campaigns?user_id=${alice.id}`, as: 'admin', sees: ['alice-private-campaign'], never: [] },
      { url: `/api/campaigns?user_id=${alice.id}`, as: 'bob', sees: [], never: alices, status: 403 },
      { url: '/api/contacts', as: 'bob', sees: ['bob-contact'], never: alices },
      { url: '/api/contacts', as: 'alice', sees: ['alice-contact'], never: ['bob-contact'] },
      { url: `/api/contacts?user_id=${alice.id}`, as: 'admin', sees: ['alice-contact'], never: ['bob-contact'] },
      { url: `/api/contacts/${aliceContact}/status-history`, as: 'bob', sees: [], never: alices, status: 404 },
      { url: `/api/contacts/${aliceContact}/status-history`, as: 'alice', sees: [], never: [] },
      { url: '/api/templates', as: 'bob', sees: ['bob-template'], never: alices },
      { url: '/api/templates', as: 'alice', sees: ['alice-template'], never: ['bob-template'] },
      { url: '/api/services', as: 'bob', sees: [], never: ['alice-only-relay', 'spare-relay', SMTP_PASS] },
      { url: '/api/services', as: 'alice', sees: ['alice-only-relay'], never: ['spare-relay', SMTP_PASS] },
      { url: '/api/services', as: 'admin', sees: ['alice-only-relay', 'spare-relay'], never: [SMTP_PASS, SMTP_PASS_2] },
      { url: '/api/me', as: 'bob', sees: [], never: alices },
    ];
    const token = { bob: bob.token, alice: alice.token, admin: f.adminToken };
    const wrong: string[] = [];
    for (const v of views) {
      const res = await send('GET', { url: v.url }, { authorization: `Bearer ${token[v.as]}` });
      const label = `GET ${v.url} as ${v.as}`;
      if (res.statusCode !== (v.status ?? 200)) wrong.push(`${label}: ${res.statusCode}`);
      for (const s of v.sees) if (!res.body.includes(s)) wrong.push(`${label}: does not show ${s}`);
      for (const s of v.never) if (res.body.includes(s)) wrong.push(`${label}: shows ${s}`);
    }
    expect(wrong).toEqual([]);
    await recordFigures({
      scenario: `what each role may see: ${views.length} views (status, campaigns, contacts, history, templates, services, me)`,
      faultsInjected: views.reduce((n, v) => n + v.never.length, 0),
      faultsSurvived: views.reduce((n, v) => n + v.never.length, 0),
      messagesSent: 0,
      lost: 0,
      duplicates: 0,
      duplicateBound: 0,
      inputsTried: views.length,
      notes: 'plain user, owner and admin; each view checked for what it must show (controls) and what it must never show',
    });
  });
});
