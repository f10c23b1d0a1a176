/**
 * Secrets at rest: the keyring (AES-256-GCM, key ids, field binding), services stored sealed and
 * opened only for the transport (a real SMTP server that demands the password, DKIM signing with
 * the stored key), start-up with plain, foreign and missing keys, and `fairsend secrets rotate`.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { SMTPServer } from 'smtp-server';
import { runCli } from '../src/cli/index.js';
import { embeddedSecretKey } from '../src/embedded-postgres.js';
import type { Engine } from '../src/engine.js';
import { loadConfig } from '../services/kernel/config.js';
import { ConfigError } from '../services/kernel/errors.js';
import { generateSecretKey, isSealed, Keyring, keyIdOf, parseSecretKey, SecretKeyError } from '../services/kernel/secrets.js';
import { createTestDatabase, createTestEngine, rows, TEST_SECRET_KEY } from './helpers/db.js';
import { until } from './helpers/scheduler.js';

const PASS = 'sm7p-Pässwörd-"quoted"-✓';
const DKIM_KEY = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
const keyOf = (k: string) => parseSecretKey(k)!;

describe('keyring', () => {
  const key = keyOf(generateSecretKey());
  const ring = new Keyring(key);

  it('seals with AES-256-GCM under the current key id, and opens what it sealed', () => {
    const a = ring.seal(PASS, 'transport.auth.pass');
    const b = ring.seal(PASS, 'transport.auth.pass');
    expect(isSealed(a)).toBe(true);
    expect(a).toMatch(new RegExp(`^fsenc:v1:${keyIdOf(key)}:[\\w-]{16}:[\\w-]{22}:[\\w-]+$`));
    expect(a).not.toBe(b); // a fresh IV each time
    expect(a).not.toContain(PASS);
    expect(ring.open(a, 'transport.auth.pass')).toBe(PASS);
    expect(ring.open('legacy-plain', 'transport.auth.pass')).toBe('legacy-plain');
  });

  it('refuses a value moved to another field, a tampered value, an unknown key and a missing key, each with its code', () => {
    const sealed = ring.seal(PASS, 'transport.auth.pass');
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        expect(err).toBeInstanceOf(SecretKeyError);
        return (err as SecretKeyError).code;
      }
      return 'no error';
    };
    expect(code(() => ring.open(sealed, 'dkim.privateKey'))).toBe('SECRET_UNREADABLE');
    const parts = sealed.split(':');
    parts[5] = Buffer.from('x' + PASS).toString('base64url');
    expect(code(() => ring.open(parts.join(':'), 'transport.auth.pass'))).toBe('SECRET_UNREADABLE');
    expect(code(() => new Keyring(keyOf(generateSecretKey())).open(sealed, 'transport.auth.pass'))).toBe('SECRET_KEY_UNKNOWN');
    expect(code(() => new Keyring(undefined).open(sealed, 'transport.auth.pass'))).toBe('SECRET_KEY_MISSING');
    expect(code(() => new Keyring(undefined).seal(PASS, 'transport.auth.pass'))).toBe('SECRET_KEY_MISSING');
    // A previous key still opens; new values use the current one.
    const next = new Keyring(keyOf(generateSecretKey()), [key]);
    expect(next.open(sealed, 'transport.auth.pass')).toBe(PASS);
    expect(next.seal(PASS, 'f').split(':')[2]).toBe(next.currentId);
  });

  it('takes keys as 64 hex digits or base64 of 32 bytes, and config names a bad one', () => {
    expect(parseSecretKey('ab'.repeat(32))?.length).toBe(32);
    expect(parseSecretKey(TEST_SECRET_KEY)?.length).toBe(32);
    expect(parseSecretKey(Buffer.alloc(32, 1).toString('base64url'))?.length).toBe(32);
    for (const bad of ['', 'short', 'ab'.repeat(31), Buffer.alloc(31).toString('base64'), Buffer.alloc(33).toString('base64')])
      expect(parseSecretKey(bad)).toBeUndefined();
    expect(() => loadConfig({ FAIRSEND_SECRET_KEY: 'not-a-key' })).toThrow(ConfigError);
    expect(() => loadConfig({ FAIRSEND_SECRET_KEY: 'not-a-key' })).toThrow(/FAIRSEND_SECRET_KEY must be 32 bytes/);
    expect(() => loadConfig({ FAIRSEND_SECRET_KEY: TEST_SECRET_KEY, FAIRSEND_SECRET_KEY_PREVIOUS: `${TEST_SECRET_KEY},x` })).toThrow(
      /FAIRSEND_SECRET_KEY_PREVIOUS must be/,
    );
  });

  it('the embedded demo generates its key once, in its data folder, readable by its owner only', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fairsend-key-'));
    const first = await embeddedSecretKey(dir);
    expect(parseSecretKey(first)).toBeDefined();
    expect(await embeddedSecretKey(dir)).toBe(first);
    expect((await readFile(join(dir, 'fairsend-secret.key'), 'utf8')).trim()).toBe(first);
    expect((await stat(join(dir, 'fairsend-secret.key'))).mode & 0o777).toBe(0o600);
  });
});

/** A real SMTP server that accepts only `user` / `pass`. */
async function authServer(user: string, pass: string) {
  const received: { raw: string; user: string | undefined }[] = [];
  let refused = 0;
  const server = new SMTPServer({
    authMethods: ['PLAIN', 'LOGIN'],
    allowInsecureAuth: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onAuth(auth, _session, cb) {
      if (auth.username === user && auth.password === pass) return cb(null, { user: auth.username });
      refused++;
      return cb(new Error('Invalid username or password'));
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        received.push({ raw: Buffer.concat(chunks).toString(), user: session.user as string | undefined });
        cb();
      });
    },
  });
  server.listen(0, '127.0.0.1');
  await once(server.server, 'listening');
  return {
    port: (server.server.address() as AddressInfo).port,
    received,
    refused: () => refused,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

async function sendOne(engine: Engine, name: string): Promise<number> {
  const user = await engine.users.create({ name, email: `${name}@example.test`, quota: 10 });
  const { ids } = await engine.contacts.bulkCreate(user.id, [{ email: `to-${name}@example.test` }]);
  const tpl = await engine.templates.create(user.id, { name: 't', subject: 's', text: 'x' });
  const c = await engine.campaigns.create({ userId: user.id, name, from: 'news@example.test', templates: [tpl.id], contacts: ids });
  return c.id;
}

describe('services store their secrets sealed', () => {
  it('stores password and DKIM key sealed, shows neither, and opens them for the transport: the server takes the password and the DKIM key signs', async () => {
    const smtp = await authServer('mailer', PASS);
    const engine = await createTestEngine({ schedulerTickMs: 50 });
    try {
      const s = await engine.services.create({
        name: 'auth-relay',
        transport: { host: '127.0.0.1', port: smtp.port, auth: { user: 'mailer', pass: PASS } },
        sendingRate: 0,
        dailyQuota: 100,
        dkim: { domainName: 'example.test', keySelector: 'fs', privateKey: DKIM_KEY },
      });
      expect(JSON.stringify(s)).not.toContain(PASS);
      const [stored] = await rows<{ transport: { auth: { user: string; pass: string } }; dkim: { privateKey: string } }>(
        engine.apiDb,
        'SELECT transport, dkim FROM email_services WHERE id = $id',
        { id: s.id },
      );
      expect(stored!.transport.auth.user).toBe('mailer'); // the user name is not a secret
      expect(isSealed(stored!.transport.auth.pass)).toBe(true);
      expect(isSealed(stored!.dkim.privateKey)).toBe(true);
      expect(JSON.stringify(stored)).not.toContain(PASS);
      expect(JSON.stringify(stored)).not.toContain(DKIM_KEY.split('\n')[3]!);
      expect(engine.secrets.open(stored!.transport.auth.pass, 'transport.auth.pass')).toBe(PASS);

      const id = await sendOne(engine, 'sealed');
      await engine.scheduler.start();
      await until(async () => (await engine.campaigns.progress(id)).sent === 1, 15000, 'one send');
      expect(smtp.received).toHaveLength(1);
      expect(smtp.received[0]!.user).toBe('mailer');
      expect(smtp.refused()).toBe(0);
      expect(smtp.received[0]!.raw).toMatch(/^DKIM-Signature: .*d=example\.test/im);

      // An update seals the new password too.
      await engine.services.update(s.id, {
        transport: { host: '127.0.0.1', port: smtp.port, auth: { user: 'mailer', pass: 'new-pass-9' } },
      });
      const [after] = await rows<{ pass: string }>(
        engine.apiDb,
        "SELECT transport->'auth'->>'pass' AS pass FROM email_services WHERE id = $id",
        {
          id: s.id,
        },
      );
      expect(isSealed(after!.pass)).toBe(true);
      expect(engine.secrets.open(after!.pass, 'transport.auth.pass')).toBe('new-pass-9');
    } finally {
      await engine.close();
      await smtp.close();
    }
  });

  it('without a key, refuses a service that carries a secret (typed error, nothing written) and takes one that carries none', async () => {
    const engine = await createTestEngine({ secretKey: undefined });
    try {
      expect(engine.secrets.hasKey).toBe(false);
      await expect(
        engine.services.create({
          name: 'no-key',
          transport: { host: 'h.example', port: 25, auth: { user: 'u', pass: PASS } },
          sendingRate: 1,
          dailyQuota: 1,
        }),
      ).rejects.toMatchObject({ code: 'SECRET_KEY_MISSING', message: expect.stringContaining('FAIRSEND_SECRET_KEY') });
      expect(await engine.models.EmailService.count()).toBe(0);
      await engine.services.create({ name: 'open', transport: { host: 'h.example', port: 25 }, sendingRate: 1, dailyQuota: 1 });
      expect(await engine.models.EmailService.count()).toBe(1);
    } finally {
      await engine.close();
    }
  });
});

describe('start-up and rotation', () => {
  const oldKey = generateSecretKey();
  const newKey = generateSecretKey();
  let url: string;

  beforeAll(async () => {
    url = await createTestDatabase();
  });

  const legacyRow = async (engine: Engine, name: string, port: number) =>
    engine.apiDb.query(
      `INSERT INTO email_services (name, transport, sending_rate, daily_quota, dkim, created_at, updated_at)
       VALUES ($name, $transport::jsonb, 0, 100, $dkim::jsonb, now(), now())`,
      {
        bind: {
          name,
          transport: JSON.stringify({ host: '127.0.0.1', port, auth: { user: 'mailer', pass: PASS } }),
          dkim: JSON.stringify({ domainName: 'example.test', keySelector: 'fs', privateKey: DKIM_KEY }),
        },
      },
    );
  const stored = async (engine: Engine) =>
    rows<{ pass: string; key: string }>(
      engine.apiDb,
      "SELECT transport->'auth'->>'pass' AS pass, dkim->>'privateKey' AS key FROM email_services ORDER BY id",
    );

  it('leaves plain secrets (with a warning) without a key, seals them at the first start with one, then refuses to start without it or with another', async () => {
    const smtp = await authServer('mailer', PASS);
    try {
      const lines: string[] = [];
      const { createLogger } = await import('../services/kernel/logger.js');
      const logger = createLogger(
        'info',
        new Writable({
          write(c: Buffer, _e, cb) {
            lines.push(c.toString());
            cb();
          },
        }),
      );
      let engine = await createTestEngine({ databaseUrl: url, secretKey: undefined, logger });
      await legacyRow(engine, 'legacy', smtp.port);
      await engine.close();
      engine = await createTestEngine({ databaseUrl: url, secretKey: undefined, logger });
      await engine.close();
      expect(lines.join('')).toContain('stored secrets are in plain text');
      expect(
        (
          await (async () => {
            const e = await createTestEngine({ databaseUrl: url, secretKey: oldKey });
            try {
              return await stored(e);
            } finally {
              await e.close();
            }
          })()
        )[0],
      ).toEqual({
        pass: expect.stringMatching(new RegExp(`^fsenc:v1:${keyIdOf(keyOf(oldKey))}:`)),
        key: expect.stringMatching(/^fsenc:v1:/),
      });

      await expect(createTestEngine({ databaseUrl: url, secretKey: undefined })).rejects.toMatchObject({
        name: 'SecretKeyError',
        code: 'SECRET_KEY_MISSING',
        message: expect.stringContaining('FAIRSEND_SECRET_KEY is not set'),
      });
      await expect(createTestEngine({ databaseUrl: url, secretKey: newKey })).rejects.toMatchObject({
        code: 'SECRET_KEY_UNKNOWN',
        message: expect.stringContaining(keyIdOf(keyOf(oldKey))),
      });

      // The sealed legacy service still delivers with its password.
      engine = await createTestEngine({ databaseUrl: url, secretKey: oldKey, schedulerTickMs: 50 });
      try {
        const id = await sendOne(engine, 'legacy');
        await engine.scheduler.start();
        await until(async () => (await engine.campaigns.progress(id)).sent === 1, 15000, 'one send');
        expect(smtp.refused()).toBe(0);
      } finally {
        await engine.close();
      }
    } finally {
      await smtp.close();
    }
  });

  it('`fairsend secrets rotate` re-encrypts every secret with the new key in one pass; the old key is then no longer needed', async () => {
    const out: string[] = [];
    const cli = async (args: string[], env: Record<string, string>) => {
      const sink = (arr: string[]) =>
        new Writable({
          write(c: Buffer, _e, cb) {
            arr.push(c.toString());
            cb();
          },
        });
      const err: string[] = [];
      const code = await runCli(['node', 'fairsend', ...args], {
        stdout: sink(out),
        stderr: sink(err),
        env: { DATABASE_URL: url, LOG_LEVEL: 'silent', ...env },
      });
      return { code, err: err.join('') };
    };
    // Without the old key among the previous ones, nothing opens: refused, nothing written.
    const refused = await cli(['secrets', 'rotate'], { FAIRSEND_SECRET_KEY: newKey });
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('neither FAIRSEND_SECRET_KEY');
    let e = await createTestEngine({ databaseUrl: url, secretKey: oldKey });
    expect((await stored(e)).every((r) => r.pass.startsWith(`fsenc:v1:${keyIdOf(keyOf(oldKey))}:`))).toBe(true);
    await e.close();

    const ok = await cli(['secrets', 'rotate'], { FAIRSEND_SECRET_KEY: newKey, FAIRSEND_SECRET_KEY_PREVIOUS: oldKey });
    expect(ok).toEqual({ code: 0, err: '' });
    expect(out.join('')).toBe(`2 secret(s) of 1 service(s) and 0 webhook(s) re-encrypted with key ${keyIdOf(keyOf(newKey))}\n`);
    const status = out.length;
    expect(await cli(['secrets', 'status'], { FAIRSEND_SECRET_KEY: newKey })).toEqual({ code: 0, err: '' });
    expect(out.slice(status).join('')).toBe(
      `current key: ${keyIdOf(keyOf(newKey))}\nplain: 0\nkey ${keyIdOf(keyOf(newKey))} (current): 2\n`,
    );

    e = await createTestEngine({ databaseUrl: url, secretKey: newKey });
    try {
      const [r] = await stored(e);
      expect(e.secrets.open(r!.pass, 'transport.auth.pass')).toBe(PASS);
      expect(e.secrets.open(r!.key, 'dkim.privateKey')).toBe(DKIM_KEY);
    } finally {
      await e.close();
    }
    await expect(createTestEngine({ databaseUrl: url, secretKey: oldKey })).rejects.toMatchObject({ code: 'SECRET_KEY_UNKNOWN' });
  });
});
