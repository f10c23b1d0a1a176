/**
 * Secrets at rest (issue #17): a `pg_dump` of the database, taken with the pg_dump of the server's
 * own version, searched for every secret the engine was given.
 *
 * Seeded passwords of hostile shapes (quotes, backslashes, SQL and JSON metacharacters, non-ASCII,
 * a value that looks already encrypted) each end in a unique marker the search looks for, so
 * escaping in the dump cannot hide a plain one. They reach the database every way a secret can:
 * the programmatic API, the HTTP API, an update, and rows written in plain text before encryption
 * existed (sealed at the next start). Webhook secrets (a Mailgun signing key, Postmark basic-auth
 * passwords) reach it the same ways. One message is sent before the dump. Controls prove the
 * search can fail: the SMTP and webhook user names (not secret) are found in the same dump.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { createLogger } from '../../services/kernel/logger.js';
import { generateSecretKey, parseSecretKey } from '../../services/kernel/secrets.js';
import { createHttpServer } from '../../src/http/server.js';
import { startSmtpCatcher } from '../../src/smtp-catcher.js';
import { createToken } from '../../services/auth.js';
import { createTestEngine } from '../helpers/db.js';
import { until } from '../helpers/scheduler.js';
import { recordFigures } from './report.js';
import { dumpTarget } from './helpers/pg-dump.js';
import { SQL_META, watchUnhandledRejections } from './helpers/hostile-inputs.js';

const SEED = 20_261_117;
const rejections = watchUnhandledRejections();
afterAll(() => rejections.stop());

/** Hostile password shapes; each generated password is one of them followed by a unique marker. */
const shapes = fc.oneof(
  fc.constantFrom(...SQL_META, '"}, "pass": "x', '\\\\', 'fsenc:v1:00000000:AAAA:BBBB:CCCC', 'pässwört ✓ 密码', ' leading space'),
  fc.string({ minLength: 1, maxLength: 24, unit: 'grapheme' }).filter((s) => !s.includes('\u0000')),
);
const marker = fc.stringMatching(/^[A-Za-z0-9]{24}$/);

describe('secrets at rest', () => {
  it('finds no secret in a pg_dump of the database, whichever way the secrets were stored', async () => {
    const target = await dumpTarget();
    const key = generateSecretKey();
    const catcher = await startSmtpCatcher();
    const samples = fc.sample(fc.tuple(shapes, marker), { seed: SEED, numRuns: 8 });
    const passwords = samples.map(([shape, m]) => ({ value: `${shape}${m}`, mark: m }));
    const dkimKeys = [0, 1].map(() =>
      generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    );
    const users = passwords.map((_, i) => `smtp-user-${i}-${randomBytes(6).toString('hex')}`);
    const hookSecrets = fc
      .sample(fc.tuple(shapes, marker), { seed: SEED + 1, numRuns: 4 })
      .map(([shape, m]) => ({ value: `${shape}${m}`, mark: m }));
    const hookUsers = hookSecrets.map((_, i) => `hook-user-${i}-${randomBytes(6).toString('hex')}`);
    const wanted: { what: string; mark: string }[] = [];
    try {
      // 1. Rows from before encryption: plain in the table, sealed at the next start with a key.
      let engine = await createTestEngine({ databaseUrl: target.url, secretKey: undefined });
      for (const i of [0, 1]) {
        await engine.apiDb.query(
          `INSERT INTO email_services (name, transport, sending_rate, daily_quota, dkim, created_at, updated_at)
           VALUES ($name, $transport::jsonb, 0, 100, $dkim::jsonb, now(), now())`,
          {
            bind: {
              name: `legacy-${i}`,
              transport: JSON.stringify({ host: '127.0.0.1', port: catcher.port, auth: { user: users[i], pass: passwords[i]!.value } }),
              dkim: i === 0 ? JSON.stringify({ domainName: 'legacy.example', keySelector: 's', privateKey: dkimKeys[0] }) : null,
            },
          },
        );
      }
      // A webhook password stored in plain text before encryption existed.
      await engine.apiDb.query(
        `INSERT INTO webhook_credentials (service_id, provider, credentials)
         SELECT id, 'postmark', $credentials::jsonb FROM email_services WHERE name = 'legacy-0'`,
        { bind: { credentials: JSON.stringify({ username: hookUsers[0], password: hookSecrets[0]!.value }) } },
      );
      await engine.close();

      engine = await createTestEngine({ databaseUrl: target.url, secretKey: key, schedulerTickMs: 50, unhealthyAfter: 100 });
      const http = await createHttpServer(engine, { logger: createLogger('silent'), processMetrics: false });
      try {
        const admin = await engine.users.create({ name: 'Admin', email: 'admin@example.test', quota: 100, role: 'admin' });
        const adminToken = await createToken(engine, admin.id);
        // 2. The programmatic API, with a DKIM key.
        for (const i of [2, 3]) {
          const created = await engine.services.create({
            name: `api-${i}`,
            transport: { host: '127.0.0.1', port: catcher.port, auth: { user: users[i]!, pass: passwords[i]!.value } },
            sendingRate: 0,
            dailyQuota: 100,
            ...(i === 2 ? { dkim: { domainName: 'api.example', keySelector: 's', privateKey: dkimKeys[1]! } } : {}),
          });
          if (i === 2) await engine.webhooks.configure(created.id, 'mailgun', { signingKey: hookSecrets[1]!.value });
        }
        // 3. The HTTP API (create, then replace with another password).
        for (const i of [4, 5]) {
          const res = await http.app.inject({
            method: 'POST',
            url: '/api/services',
            headers: { authorization: `Bearer ${adminToken}` },
            payload: {
              name: `http-${i}`,
              transport: { host: '127.0.0.1', port: catcher.port, auth: { user: users[i], pass: passwords[i]!.value } },
              sending_rate: 0,
              daily_quota: 100,
            },
          });
          expect(res.statusCode).toBe(201);
          if (i === 4) {
            // Webhook credentials through the HTTP API too.
            const put = (provider: string, payload: Record<string, string>) =>
              http.app.inject({
                method: 'PUT',
                url: `/api/services/${(res.json() as { id: number }).id}/webhooks/${provider}`,
                headers: { authorization: `Bearer ${adminToken}` },
                payload,
              });
            expect((await put('postmark', { username: hookUsers[2]!, password: hookSecrets[2]!.value })).statusCode).toBe(204);
            expect((await put('sparkpost', { username: hookUsers[3]!, password: hookSecrets[3]!.value })).statusCode).toBe(204);
          }
        }
        // 4. An update to a new password.
        const [s6] = await engine.models.EmailService.findAll({ where: { name: 'api-3' } });
        await engine.services.update(s6!.id, {
          transport: { host: '127.0.0.1', port: catcher.port, auth: { user: users[6]!, pass: passwords[6]!.value } },
        });
        await engine.services.update(s6!.id, {
          transport: { host: '127.0.0.1', port: catcher.port, auth: { user: users[7]!, pass: passwords[7]!.value } },
        });
        // 5. A send, through a transport built from the sealed row (the catcher offers no AUTH, so nodemailer skips it).
        const u = await engine.users.create({ name: 'Sender', email: 'sender@example.test', quota: 10 });
        const { ids } = await engine.contacts.bulkCreate(u.id, [{ email: 'to@example.test' }]);
        const tpl = await engine.templates.create(u.id, { name: 't', subject: 's', text: 'x' });
        const c = await engine.campaigns.create({ userId: u.id, name: 'c', from: 'n@example.test', templates: [tpl.id], contacts: ids });
        await engine.scheduler.start();
        await until(async () => (await engine.campaigns.progress(c.id)).sent === 1, 20000, 'the send');
        await engine.scheduler.stop();
        expect(catcher.received).toBe(1);
      } finally {
        await http.close();
        await engine.close();
      }

      const dump = await target.dump();
      for (const [i, p] of passwords.entries())
        wanted.push({ what: `SMTP password ${i} (${JSON.stringify(p.value.slice(0, 12))}...)`, mark: p.mark });
      for (const [i, h] of hookSecrets.entries())
        wanted.push({ what: `webhook secret ${i} (${JSON.stringify(h.value.slice(0, 12))}...)`, mark: h.mark });
      for (const [i, k] of dkimKeys.entries()) {
        for (const line of k.split('\n').filter((l) => l.length >= 40 && !l.startsWith('-----')))
          wanted.push({ what: `DKIM key ${i}`, mark: line });
      }
      const raw = parseSecretKey(key)!;
      wanted.push({ what: 'FAIRSEND_SECRET_KEY (base64)', mark: key }, { what: 'FAIRSEND_SECRET_KEY (hex)', mark: raw.toString('hex') });
      const found = wanted.filter((w) => dump.includes(w.mark)).map((w) => w.what);
      // Controls: the dump holds the services, their (not secret) user names and sealed values.
      expect(dump.length).toBeGreaterThan(10_000);
      // (users 3 and 6 were replaced by the updates: their rows now name user 7)
      for (const i of [0, 1, 2, 4, 5, 7]) expect([users[i], dump.includes(users[i]!)]).toEqual([users[i], true]);
      for (const u of [hookUsers[0], hookUsers[2], hookUsers[3]]) expect([u, dump.includes(u!)]).toEqual([u, true]);
      const sealed = dump.match(/fsenc:v1:[0-9a-f]{8}:/g) ?? [];
      expect(sealed.length).toBeGreaterThanOrEqual(6 + dkimKeys.length + hookSecrets.length);
      expect(found).toEqual([]);
      await recordFigures({
        scenario: 'secrets at rest: pg_dump searched for every secret',
        faultsInjected: wanted.length,
        faultsSurvived: wanted.length - found.length,
        messagesSent: catcher.received,
        lost: 0,
        duplicates: 0,
        duplicateBound: 0,
        inputsTried: passwords.length + dkimKeys.length + hookSecrets.length,
        notes: `seed ${SEED}; ${passwords.length} passwords (plain rows, API, HTTP, updates), ${dkimKeys.length} DKIM keys, ${hookSecrets.length} webhook secrets (plain row, API, HTTP), the key itself; ${target.label}; ${dump.length} bytes, ${sealed.length} sealed values, 0 found`,
      });
    } finally {
      await catcher.stop();
      await target.stop();
    }
  });
});
