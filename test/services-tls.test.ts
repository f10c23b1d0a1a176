/**
 * The TLS and AUTH options of a sending service through the programmatic API and HTTP: what is
 * accepted, what is refused (naming the field), what views show (the TLS mode, whether
 * certificates are checked) and what they never show or log (the password, the access token, the
 * private CA). Pure policy (mode, defaults, error classification) is checked as plain functions.
 */
import { classifySendError } from '../services/delivery/classify.js';
import { checksCertificates, effectiveRequireTls, tlsModeOf } from '../services/delivery/tls-policy.js';
import { ValidationError } from '../services/kernel/errors.js';
import { createLogger } from '../services/kernel/logger.js';
import { toSnake, toCamel } from '../src/http/casing.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/index.js';
import { rows, TEST_SECRET_KEY } from './helpers/db.js';
import { errorOf, httpFixture, LogSink, type HttpFixture } from './helpers/http.js';
import { makeTestPki, type TestPki } from './helpers/tls.js';

const SMTP_PASSWORD = 'tls-test-smtp-password-0123';
const ACCESS_TOKEN = 'ya29.tls-test-access-token-4567';

let pki: TestPki;
let f: HttpFixture;
beforeAll(async () => {
  pki = makeTestPki();
  f = await httpFixture();
});
afterAll(() => f.close());

const base = { sendingRate: 1, dailyQuota: 10 };
let seq = 0;
const create = (transport: Record<string, unknown>) =>
  f.engine.services.create({ ...base, name: `svc-${++seq}`, transport: transport as never });

async function issuesOf(p: Promise<unknown>) {
  try {
    await p;
  } catch (err) {
    if (err instanceof ValidationError) return err.issues;
    throw err;
  }
  throw new Error('expected a ValidationError');
}

describe('TLS policy (pure)', () => {
  it('requires STARTTLS by default on 587 only, never with implicit TLS, and as told otherwise', () => {
    expect(effectiveRequireTls({ port: 587 })).toBe(true);
    expect(effectiveRequireTls({ port: 587, secure: false })).toBe(true);
    expect(effectiveRequireTls({ port: 587, requireTLS: false })).toBe(false);
    expect(effectiveRequireTls({ port: 25 })).toBe(false);
    expect(effectiveRequireTls({ port: 2525, requireTLS: true })).toBe(true);
    expect(effectiveRequireTls({ port: 465, secure: true })).toBe(false);
    expect(tlsModeOf({ port: 465, secure: true })).toBe('implicit');
    expect(tlsModeOf({ port: 587 })).toBe('starttls-required');
    expect(tlsModeOf({ port: 25 })).toBe('opportunistic');
  });

  it('says certificate checking is off for tlsInsecure and for tls.rejectUnauthorized false', () => {
    expect(checksCertificates({})).toBe(true);
    expect(checksCertificates({ tls: { rejectUnauthorized: true } })).toBe(true);
    expect(checksCertificates({ tlsInsecure: true })).toBe(false);
    expect(checksCertificates({ tls: { rejectUnauthorized: false } })).toBe(false);
  });

  it('classifies TLS and login failures as never having reached the server, before their reply codes', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ code: 'ESOCKET', originalCode: 'CERT_HAS_EXPIRED', command: 'CONN', message: 'certificate has expired' }, 'tls'],
      [
        {
          code: 'ESOCKET',
          originalCode: 'SELF_SIGNED_CERT_IN_CHAIN',
          command: 'CONN',
          message: 'self-signed certificate in certificate chain',
        },
        'tls',
      ],
      [{ code: 'ETLS', command: 'STARTTLS', responseCode: 554, response: '554 5.7.0 no TLS', message: 'x' }, 'tls'],
      [{ code: 'ETLS', command: 'CONN', message: 'Connection closed unexpectedly' }, 'tls'],
      [
        { code: 'EAUTH', command: 'AUTH PLAIN', responseCode: 535, response: '535 5.7.8 bad credentials', message: 'Invalid login' },
        'auth',
      ],
    ];
    for (const [err, type] of cases) expect(classifySendError(err)).toMatchObject({ kind: 'connection', type });
    // A TLS record error in the middle of a session (after DATA, maybe) stays ambiguous.
    expect(
      classifySendError({ code: 'ESOCKET', originalCode: 'ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC', message: 'bad mac' }),
    ).toMatchObject({
      kind: 'ambiguous',
    });
    expect(classifySendError({ code: 'ETLS', command: 'STARTTLS', response: '454 TLS not available', message: 'x' }).message).toBe(
      'TLS: the server refused STARTTLS: 454 TLS not available',
    );
  });

  it('names requireTLS require_tls on the wire, both ways', () => {
    expect(toSnake('requireTLS')).toBe('require_tls');
    expect(toCamel('require_tls')).toBe('requireTLS');
    expect(toSnake('minVersion')).toBe('min_version');
    expect(toCamel('reject_unauthorized')).toBe('rejectUnauthorized');
  });
});

describe('programmatic API', () => {
  it('stores every option and shows the mode, certificate checking and EHLO name, never the CA or secrets', async () => {
    const s = await create({
      host: 'smtp.example.test',
      port: 2525,
      requireTLS: true,
      tls: { ca: pki.ca, servername: 'mail.test', minVersion: 'TLSv1.2' },
      name: 'out.example.test',
      auth: { user: 'mailer', pass: SMTP_PASSWORD, method: 'LOGIN' },
    });
    expect(s.transport).toEqual({
      host: 'smtp.example.test',
      port: 2525,
      secure: false,
      requireTLS: true,
      tlsMode: 'starttls-required',
      certificateChecking: true,
      privateCa: true,
      servername: 'mail.test',
      minVersion: 'TLSv1.2',
      name: 'out.example.test',
      auth: { user: 'mailer', method: 'LOGIN' },
    });
    const shown = JSON.stringify([s, await f.engine.services.list(), await f.engine.services.get(s.id)]);
    expect(shown).not.toContain(SMTP_PASSWORD);
    expect(shown).not.toContain('BEGIN CERTIFICATE');
    // Stored for the scheduler, the CA and the password encrypted (FAIRSEND_SECRET_KEY).
    const [row] = await rows<{ t: Record<string, unknown> }>(f.engine.apiDb, 'SELECT transport AS t FROM email_services WHERE id = $id', {
      id: s.id,
    });
    expect(row!.t).toMatchObject({
      requireTLS: true,
      name: 'out.example.test',
      tls: { ca: expect.stringMatching(/^fsenc:v1:/), servername: 'mail.test' },
    });
    expect(JSON.stringify(row!.t)).not.toContain('BEGIN CERTIFICATE');
    expect(JSON.stringify(row!.t)).not.toContain(SMTP_PASSWORD);
  });

  it('shows implicit TLS, opportunistic, and certificate checking off', async () => {
    const implicit = await create({ host: 'h', port: 465, secure: true, tls: { ca: pki.ca } });
    expect(implicit.transport).toMatchObject({ tlsMode: 'implicit', requireTLS: false, certificateChecking: true, privateCa: true });
    const insecure = await create({ host: 'h', port: 25, tlsInsecure: true });
    expect(insecure.transport).toMatchObject({ tlsMode: 'opportunistic', certificateChecking: false, privateCa: false });
    const off = await create({ host: 'h', port: 587, tls: { rejectUnauthorized: false } });
    expect(off.transport).toMatchObject({ tlsMode: 'starttls-required', certificateChecking: false });
    const optedOut = await create({ host: 'h', port: 587, requireTLS: false });
    expect(optedOut.transport).toMatchObject({ tlsMode: 'opportunistic', requireTLS: false });
  });

  it('takes an XOAUTH2 access token as a secret: shown as the method only', async () => {
    const s = await create({ host: 'h', port: 587, auth: { user: 'me@example.test', accessToken: ACCESS_TOKEN } });
    expect(s.transport.auth).toEqual({ user: 'me@example.test', method: 'XOAUTH2' });
    expect(JSON.stringify(await f.engine.services.list())).not.toContain(ACCESS_TOKEN);
  });

  it('refuses bad TLS, EHLO and AUTH options naming each field, and writes nothing', async () => {
    const before = await rows(f.engine.apiDb, 'SELECT count(*)::int AS n FROM email_services');
    const issues = await issuesOf(
      create({
        host: 'h',
        port: 587,
        requireTLS: 'yes',
        tls: { ca: 'not a certificate', minVersion: 'SSLv3', servername: 'bad name', extra: 1 },
        name: 'ehlo\r\nMAIL FROM:<x>',
      }),
    );
    expect(Object.fromEntries(issues.map((i) => [i.path, i.message]))).toEqual({
      'transport.requireTLS': 'must be true or false',
      'transport.tls.ca': 'must be PEM text holding at least one -----BEGIN CERTIFICATE----- block',
      'transport.tls.minVersion': 'must be TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3',
      'transport.tls.servername': 'must be a host name',
      'transport.tls': expect.stringContaining('extra'),
      'transport.name': 'must be a host name or an address literal such as [192.0.2.1]',
    });
    const key = (
      await issuesOf(
        create({ host: 'h', port: 25, tls: { ca: `${pki.ca}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n` } }),
      )
    )[0];
    expect(key).toEqual({ path: 'transport.tls.ca', message: 'holds a PRIVATE KEY block (number 2); only certificates belong here' });
    expect(await issuesOf(create({ host: 'h', port: 25, tlsInsecure: true, tls: { rejectUnauthorized: true } }))).toEqual([
      { path: 'transport.tls.rejectUnauthorized', message: 'contradicts tlsInsecure: true' },
    ]);
    expect(await issuesOf(create({ host: 'h', port: 25, auth: { user: 'u', method: 'XOAUTH2', pass: 'p' } }))).toEqual([
      { path: 'transport.auth.accessToken', message: 'is required with method XOAUTH2' },
      { path: 'transport.auth.pass', message: 'is not used with XOAUTH2 (give accessToken)' },
    ]);
    expect(await issuesOf(create({ host: 'h', port: 25, auth: { user: 'u', method: 'PLAIN' } }))).toEqual([
      { path: 'transport.auth.pass', message: 'is required with method PLAIN' },
    ]);
    expect((await issuesOf(create({ host: 'h', port: 25, auth: { user: 'u', pass: 'p', method: 'CRAM-MD5' } })))[0]).toEqual({
      path: 'transport.auth.method',
      message: 'must be PLAIN, LOGIN or XOAUTH2',
    });
    expect(await rows(f.engine.apiDb, 'SELECT count(*)::int AS n FROM email_services')).toEqual(before);
  });

  it('never logs the password, the access token or the CA', () => {
    const sink = new LogSink();
    const log = createLogger('info', sink);
    const transport = { host: 'h', port: 587, auth: { user: 'u', pass: SMTP_PASSWORD, accessToken: ACCESS_TOKEN }, tls: { ca: pki.ca } };
    log.info({ transport }, 'a');
    log.info({ service: { transport } }, 'b');
    log.info({ tls: { ca: pki.ca }, auth: { accessToken: ACCESS_TOKEN } }, 'c');
    expect(sink.lines()).toHaveLength(3);
    for (const secret of [SMTP_PASSWORD, ACCESS_TOKEN, 'BEGIN CERTIFICATE']) expect(sink.text).not.toContain(secret);
  });
});

describe('HTTP API', () => {
  it('takes require_tls, tls and name in snake_case and shows tls_mode and certificate_checking, never the CA', async () => {
    const res = await f.call('POST', '/api/services', f.adminToken, {
      name: 'http-tls',
      transport: {
        host: 'smtp.example.test',
        port: 2525,
        require_tls: true,
        tls: { ca: pki.ca, min_version: 'TLSv1.3', reject_unauthorized: true },
        name: 'out.example.test',
        auth: { user: 'me', access_token: ACCESS_TOKEN, method: 'XOAUTH2' },
      },
      sending_rate: 1,
      daily_quota: 10,
    });
    expect(res.statusCode).toBe(201);
    expect(res.json<{ transport: unknown }>().transport).toEqual({
      host: 'smtp.example.test',
      port: 2525,
      secure: false,
      require_tls: true,
      tls_mode: 'starttls-required',
      certificate_checking: true,
      private_ca: true,
      min_version: 'TLSv1.3',
      name: 'out.example.test',
      auth: { user: 'me', method: 'XOAUTH2' },
    });
    const id = res.json<{ id: number }>().id;
    const list = await f.call('GET', '/api/services', f.adminToken);
    const one = await f.call('GET', `/api/services/${id}`, f.adminToken);
    expect(list.json<{ services: { id: number; transport: unknown }[] }>().services.find((s) => s.id === id)!.transport).toMatchObject({
      tls_mode: 'starttls-required',
    });
    for (const body of [res.body, list.body, one.body, f.logs.text]) {
      expect(body).not.toContain(ACCESS_TOKEN);
      expect(body).not.toContain('BEGIN CERTIFICATE');
    }
    const insecure = await f.call('PATCH', `/api/services/${id}`, f.adminToken, {
      transport: { host: 'h', port: 465, secure: true, tls_insecure: true },
    });
    expect(insecure.json()).toMatchObject({ transport: { tls_mode: 'implicit', certificate_checking: false, private_ca: false } });
    // The scheduler status shows each service's TLS mode too (the engine is not sending: read from the database).
    const status = await f.call('GET', '/api/scheduler/status', f.adminToken);
    expect(status.statusCode).toBe(200);
    const shown = status
      .json<{ services: { id: number; tls_mode: string; certificate_checking: boolean }[] }>()
      .services.find((s) => s.id === id);
    expect(shown).toMatchObject({ tls_mode: 'implicit', certificate_checking: false });
    expect(status.body).not.toContain('BEGIN CERTIFICATE');
  });

  it('names the bad field in snake_case', async () => {
    const res = await f.call('POST', '/api/services', f.adminToken, {
      name: 'bad-tls',
      transport: { host: 'h', port: 587, require_tls: 1, tls: { min_version: 'TLSv9' } },
      sending_rate: 1,
      daily_quota: 10,
    });
    expect(res.statusCode).toBe(400);
    expect(
      errorOf(res)
        .issues!.map((i) => i.path)
        .sort(),
    ).toEqual(['transport.require_tls', 'transport.tls.min_version']);
  });
});

describe('CLI', () => {
  class Sink extends Writable {
    text = '';
    override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
      this.text += chunk.toString('utf8');
      cb();
    }
  }
  const run = async (args: string[], env: Record<string, string> = {}) => {
    const stdout = new Sink();
    const stderr = new Sink();
    const code = await runCli(['node', 'fairsend', ...args], {
      stdout,
      stderr,
      env: { DATABASE_URL: f.engine.databaseUrl, LOG_LEVEL: 'silent', FAIRSEND_SECRET_KEY: TEST_SECRET_KEY, ...env },
    });
    return { code, out: stdout.text, err: stderr.text };
  };
  const stored = async (name: string) =>
    (
      await rows<{ t: Record<string, unknown> }>(f.engine.apiDb, 'SELECT transport AS t FROM email_services WHERE name = $name', { name })
    )[0]!.t;

  it('services add takes the CA from a file, the access token from the environment, and the TLS and EHLO flags', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fairsend-tls-cli-'));
    try {
      const caFile = join(dir, 'ca.pem');
      await writeFile(caFile, pki.ca);
      const common = ['services', 'add', '--rate', '1', '--quota', '10', '--host', 'smtp.example.test'];
      const a = await run(
        [
          ...common,
          '--name',
          'cli-oauth',
          '--port',
          '2525',
          '--require-tls',
          '--tls-ca-file',
          caFile,
          '--tls-servername',
          'mail.test',
        ].concat(['--tls-min-version', 'TLSv1.3', '--ehlo-name', 'out.example.test', '--smtp-user', 'me', '--smtp-auth-method', 'XOAUTH2']),
        { FAIRSEND_SMTP_PASS: ACCESS_TOKEN },
      );
      expect(a).toMatchObject({ code: 0, err: '' });
      expect(a.out).not.toContain(ACCESS_TOKEN);
      expect(await stored('cli-oauth')).toEqual({
        host: 'smtp.example.test',
        port: 2525,
        requireTLS: true,
        tls: { ca: expect.stringMatching(/^fsenc:v1:/), servername: 'mail.test', minVersion: 'TLSv1.3' },
        name: 'out.example.test',
        // The access token is a secret like the password: encrypted at rest.
        auth: { user: 'me', accessToken: expect.stringMatching(/^fsenc:v1:/), method: 'XOAUTH2' },
      });
      const b = await run([...common, '--name', 'cli-open', '--no-require-tls', '--tls-insecure']);
      expect(b.code).toBe(0);
      expect(await stored('cli-open')).toEqual({ host: 'smtp.example.test', port: 587, requireTLS: false, tlsInsecure: true });
      const list = await run(['services', 'list']);
      const row = (name: string) =>
        list.out
          .split('\n')
          .find((l) => l.includes(name))!
          .trim()
          .split(/\s{2,}/)
          .slice(-2);
      expect(row('cli-oauth')).toEqual(['STARTTLS required', 'checked']);
      expect(row('cli-open')).toEqual(['opportunistic', 'NOT CHECKED']);
      expect(list.out).not.toContain('BEGIN CERTIFICATE');

      const bad = await run([...common, '--name', 'cli-bad', '--tls-ca-file', join(dir, 'missing.pem')]);
      expect(bad.code).toBe(1);
      expect(bad.err).toMatch(/^fairsend: cannot read --tls-ca-file .*missing\.pem: ENOENT/);
      await writeFile(caFile, 'garbage');
      const garbage = await run([...common, '--name', 'cli-bad', '--tls-ca-file', caFile]);
      expect(garbage.code).toBe(1);
      expect(garbage.err).toContain('transport.tls.ca: must be PEM text');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
