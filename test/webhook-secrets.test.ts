/**
 * Webhook secrets at rest (issue 17): a provider webhook's signing key or basic-auth password is
 * stored sealed with the secrets keyring like an SMTP password, opened only to verify a request,
 * sealed at start-up when it was stored in plain text before, and re-sealed by a rotation.
 */
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/index.js';
import type { Engine } from '../src/engine.js';
import { generateSecretKey, keyIdOf, parseSecretKey, SecretKeyError } from '../services/kernel/secrets.js';
import { createTestDatabase, createTestEngine, rows } from './helpers/db.js';

const PASSWORD = 'pm-Pässwörd-"hook"-✓-0b5e';
const SIGNING_KEY = 'key-mailgun-signing-7f3a9c';
const body = readFileSync(new URL('./fixtures/webhooks/postmark-bounce.json', import.meta.url), 'utf8');
const basic = (user: string, pass: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}` });

async function stored(e: Engine, provider: string): Promise<Record<string, string>> {
  const [r] = await rows<{ credentials: Record<string, string> }>(
    e.apiDb,
    'SELECT credentials FROM webhook_credentials WHERE provider = $provider',
    { provider },
  );
  return r!.credentials;
}

describe('webhook secrets at rest', () => {
  const oldKey = generateSecretKey();
  const newKey = generateSecretKey();
  const kid = (k: string) => keyIdOf(parseSecretKey(k)!);
  let url: string;
  let serviceId: number;

  beforeAll(async () => {
    url = await createTestDatabase();
  });

  const verifies = async (e: Engine, pass: string) =>
    (await e.webhooks.receive('postmark', serviceId, { headers: basic('hooks', pass), rawBody: body, now: new Date() })).status;

  it('stores the password and signing key sealed (the user name in clear), and verifies with them', async () => {
    const e = await createTestEngine({ databaseUrl: url, secretKey: oldKey });
    try {
      serviceId = (await e.services.create({ name: 'p', transport: { host: '127.0.0.1', port: 2525 }, sendingRate: 0, dailyQuota: 1 })).id;
      await e.webhooks.configure(serviceId, 'postmark', { username: 'hooks', password: PASSWORD });
      await e.webhooks.configure(serviceId, 'mailgun', { signingKey: SIGNING_KEY });
      const pm = await stored(e, 'postmark');
      expect(pm.username).toBe('hooks');
      expect(pm.password).toMatch(new RegExp(`^fsenc:v1:${kid(oldKey)}:`));
      expect(JSON.stringify(pm)).not.toContain('Pässwörd');
      expect((await stored(e, 'mailgun')).signingKey).toMatch(new RegExp(`^fsenc:v1:${kid(oldKey)}:`));
      expect(e.secrets.open(pm.password!, 'webhook.password')).toBe(PASSWORD);
      expect(await verifies(e, PASSWORD)).toBe(200);
      expect(await verifies(e, 'wrong')).toBe(401);
    } finally {
      await e.close();
    }
  });

  it('refuses to store a webhook secret without a key', async () => {
    const e = await createTestEngine({ databaseUrl: await createTestDatabase(), secretKey: undefined });
    try {
      const id = (await e.services.create({ name: 'q', transport: { host: '127.0.0.1', port: 2525 }, sendingRate: 0, dailyQuota: 1 })).id;
      await expect(e.webhooks.configure(id, 'mailgun', { signingKey: SIGNING_KEY })).rejects.toBeInstanceOf(SecretKeyError);
      expect(await rows(e.apiDb, 'SELECT 1 FROM webhook_credentials')).toEqual([]);
    } finally {
      await e.close();
    }
  });

  it('seals a password stored in plain text (before encryption) at the next start, and still verifies', async () => {
    let e = await createTestEngine({ databaseUrl: url, secretKey: oldKey });
    await e.apiDb.query(`UPDATE webhook_credentials SET credentials = $c::jsonb WHERE provider = 'postmark'`, {
      bind: { c: JSON.stringify({ username: 'hooks', password: PASSWORD }) },
    });
    expect((await stored(e, 'postmark')).password).toBe(PASSWORD);
    await e.close();
    e = await createTestEngine({ databaseUrl: url, secretKey: oldKey });
    try {
      expect((await stored(e, 'postmark')).password).toMatch(new RegExp(`^fsenc:v1:${kid(oldKey)}:`));
      expect(await verifies(e, PASSWORD)).toBe(200);
    } finally {
      await e.close();
    }
  });

  it('`fairsend secrets rotate` re-seals webhook secrets with the new key; start-up refuses them without it', async () => {
    const out: string[] = [];
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c.toString());
        cb();
      },
    });
    const code = await runCli(['node', 'fairsend', 'secrets', 'rotate'], {
      stdout: sink,
      stderr: sink,
      env: { DATABASE_URL: url, LOG_LEVEL: 'silent', FAIRSEND_SECRET_KEY: newKey, FAIRSEND_SECRET_KEY_PREVIOUS: oldKey },
    });
    expect([code, out.join('')]).toEqual([0, `2 secret(s) of 0 service(s) and 2 webhook(s) re-encrypted with key ${kid(newKey)}\n`]);
    await expect(createTestEngine({ databaseUrl: url, secretKey: oldKey })).rejects.toThrow(/encrypted with key/);
    const e = await createTestEngine({ databaseUrl: url, secretKey: newKey });
    try {
      expect((await stored(e, 'postmark')).password).toMatch(new RegExp(`^fsenc:v1:${kid(newKey)}:`));
      expect((await stored(e, 'mailgun')).signingKey).toMatch(new RegExp(`^fsenc:v1:${kid(newKey)}:`));
      expect(await verifies(e, PASSWORD)).toBe(200);
    } finally {
      await e.close();
    }
  });
});
