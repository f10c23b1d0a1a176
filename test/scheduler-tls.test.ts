/**
 * What a campaign does when its service cannot set up TLS, through the whole engine (real
 * PostgreSQL, the scheduler, smtp-server with a private CA on loopback). A refused certificate or
 * a refused STARTTLS happens before any message data: nothing reached the server, so the quota
 * unit comes back, the service's health counts the failure, the message stays queued (never
 * `unknown`) and the campaign waits with a reason that names the TLS error. Fixing the service
 * (trusting its CA) lets the campaign finish.
 */
import type { Engine } from '../src/engine.js';
import { createTestEngine, rows } from './helpers/db.js';
import { until, userWithContacts } from './helpers/scheduler.js';
import { makeTestPki, startTlsSmtp, type TestPki, type TlsSmtp } from './helpers/tls.js';

let pki: TestPki;
let engine: Engine;
let smtp: TlsSmtp;
beforeAll(() => {
  pki = makeTestPki();
});
afterEach(async () => {
  await engine.close();
  await smtp.stop();
});

async function campaignFor(name: string, n: number) {
  const u = await userWithContacts(engine, name, n);
  const c = await engine.campaigns.create({
    userId: u.userId,
    name,
    from: `${name.toLowerCase()}@example.test`,
    templates: [u.templateId],
    recipientRule: { type: 'all' },
  });
  return c.id;
}

const statuses = (taskId: number) =>
  rows<{ status: string; attempts: number; n: number }>(
    engine.apiDb,
    'SELECT status, attempts, count(*)::int AS n FROM subtasks WHERE task_id = $t GROUP BY status, attempts ORDER BY status',
    { t: taskId },
  );

const usedQuota = async (id: number) => (await engine.services.quota()).find((q) => q.id === id)!.usedQuota;

describe('TLS failures in the scheduler', () => {
  beforeEach(async () => {
    engine = await createTestEngine({ schedulerTickMs: 50, unhealthyAfter: 2, probeBackoffMs: 100, maxRetries: 3 });
  });

  it('delivers a campaign over STARTTLS with the service’s own CA and EHLO name', async () => {
    smtp = await startTlsSmtp({ pki });
    const taskId = await campaignFor('Trusted', 5);
    const svc = await engine.services.create({
      name: 'private-ca',
      transport: {
        host: '127.0.0.1',
        port: smtp.port,
        requireTLS: true,
        tls: { ca: pki.ca, servername: 'mail.test' },
        name: 'out.sender.example',
      },
      sendingRate: 0,
      dailyQuota: 100,
      maxConnections: 1,
    });
    await engine.scheduler.start();
    await until(async () => (await engine.campaigns.progress(taskId)).status === 'completed', 20_000, 'completion');
    expect(smtp.accepted).toBe(5);
    expect(smtp.sessions.every((s) => s.secure && s.ehlo === 'out.sender.example')).toBe(true);
    // The running scheduler shows how the service connects.
    expect(engine.scheduler.status().services.find((s) => s.id === svc.id)).toMatchObject({
      tlsMode: 'starttls-required',
      certificateChecking: true,
    });
    await engine.scheduler.stop();
    expect(await usedQuota(svc.id)).toBe(5);
  });

  it('without the CA: nothing sent, units back, health counts it, the campaign waits saying why; with the CA it completes', async () => {
    smtp = await startTlsSmtp({ pki });
    const taskId = await campaignFor('Untrusted', 5);
    const svc = await engine.services.create({
      name: 'no-ca',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 100,
      maxConnections: 1,
    });
    await engine.scheduler.start();
    await until(async () => /unhealthy/.test((await engine.campaigns.progress(taskId)).waitReason ?? ''), 20_000, 'a wait reason');
    const p = await engine.campaigns.progress(taskId);
    expect(p.waitReason).toBe('no sending service available: no-ca unhealthy (TLS: unable to verify the first certificate)');
    // Queued, or claimed by the scheduler (sending) while it waits: none sent, failed or unknown.
    expect(p).toMatchObject({ status: 'sending', sent: 0, failed: 0, unknown: 0 });
    expect(p.queued + p.sending).toBe(5);
    const view = await engine.services.get(svc.id);
    expect(view.healthy).toBe(false);
    expect(view.lastError).toBe('TLS: unable to verify the first certificate');
    // Not an attempt: each message is as it was, queued, and no quota is spent.
    await engine.scheduler.stop();
    expect(await statuses(taskId)).toEqual([{ status: 'queued', attempts: 0, n: 5 }]);
    expect(await usedQuota(svc.id)).toBe(0);
    expect(smtp.mailFrom).toEqual([]);
    const [errors] = await rows<{ n: number }>(
      engine.apiDb,
      "SELECT coalesce(sum(count), 0)::int AS n FROM error_logs WHERE error_type = 'tls'",
    );
    expect(errors!.n).toBeGreaterThanOrEqual(2);

    // The operator trusts the CA: the probe passes, and the campaign completes.
    await engine.services.update(svc.id, { transport: { host: '127.0.0.1', port: smtp.port, tls: { ca: pki.ca } } });
    await engine.scheduler.start();
    await until(async () => (await engine.campaigns.progress(taskId)).status === 'completed', 20_000, 'completion once trusted');
    expect(await engine.campaigns.progress(taskId)).toMatchObject({ sent: 5, unknown: 0, waitReason: null });
    expect(smtp.accepted).toBe(5);
  });

  it('requireTLS against a server without STARTTLS: nothing in clear, nothing failed, the campaign waits', async () => {
    smtp = await startTlsSmtp({ pki, noStartTls: true, authMethods: ['PLAIN', 'LOGIN'], credentials: { user: 'u', secret: 'p' } });
    const taskId = await campaignFor('Clear', 3);
    const svc = await engine.services.create({
      name: 'must-tls',
      transport: { host: '127.0.0.1', port: smtp.port, requireTLS: true, auth: { user: 'u', pass: 'p' } },
      sendingRate: 0,
      dailyQuota: 100,
      maxConnections: 1,
    });
    await engine.scheduler.start();
    await until(async () => /unhealthy/.test((await engine.campaigns.progress(taskId)).waitReason ?? ''), 20_000, 'a wait reason');
    expect((await engine.campaigns.progress(taskId)).waitReason).toBe(
      'no sending service available: must-tls unhealthy (TLS: the server refused STARTTLS: 500 Error: command not recognized)',
    );
    await engine.scheduler.stop();
    expect(await statuses(taskId)).toEqual([{ status: 'queued', attempts: 0, n: 3 }]);
    expect(await usedQuota(svc.id)).toBe(0);
    expect(smtp.authAttempts).toEqual([]);
    expect(smtp.mailFrom).toEqual([]);
    expect(smtp.accepted).toBe(0);
  });
});
