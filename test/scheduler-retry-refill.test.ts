/**
 * A message retried later (a 4xx) must not hold back the rest of its campaign: its backoff is its
 * own, and the campaign keeps refilling its buffer meanwhile. Against a real SMTP server on loopback.
 */
import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createTestEngine, rows } from './helpers/db.js';
import { until } from './helpers/scheduler.js';

describe('a retry does not delay its campaign', () => {
  let engine: Engine;
  let smtp: SmtpCatcher;

  beforeAll(async () => {
    // Refused once, for now: its retry waits a minute, far longer than the test.
    let refused = false;
    smtp = await startSmtpCatcher({
      dataReply: (m) =>
        m.to[0] === 'first@example.test' && !refused ? ((refused = true), { code: 451, message: 'Try again later' }) : undefined,
    });
    // Small claims: the campaign needs many refills to send its 40 messages.
    engine = await createTestEngine({ schedulerTickMs: 50, retryDelayMs: 60_000, claimBatchSize: 4 });
  });
  afterAll(async () => {
    await engine.close();
    await smtp.stop();
  });

  it('keeps refilling and sending the others while the refused message waits for its backoff', async () => {
    const user = await engine.users.create({ name: 'R', email: 'r@example.test', quota: 1000 });
    const emails = ['first@example.test', ...Array.from({ length: 39 }, (_, i) => `other${i + 1}@example.test`)];
    const { ids } = await engine.contacts.bulkCreate(
      user.id,
      emails.map((email) => ({ email })),
    );
    const tpl = await engine.templates.create(user.id, { name: 't', subject: 's', text: 'x' });
    const c = await engine.campaigns.create({ userId: user.id, name: 'r', from: 'r@example.test', templates: [tpl.id], contacts: ids });
    await engine.services.create({
      name: 's',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 1000,
      maxConnections: 1,
    });
    await engine.scheduler.start();
    // Every other message reaches the server long before the retry is due.
    await until(() => smtp.accepted >= 39, 20_000, '39 messages at the server');
    const received = new Set(smtp.messages.map((m) => m.envelopeTo[0]));
    expect(emails.slice(1).every((e) => received.has(e))).toBe(true);
    expect(received.has('first@example.test')).toBe(false);
    // And the refused one waits, queued, for its backoff: never lost.
    await until(async () => (await engine.campaigns.progress(c.id)).sent === 39, 10_000, '39 outcomes written');
    const [first] = await rows<{ status: string; attempts: number; wait: number }>(
      engine.apiDb,
      'SELECT status, attempts, extract(epoch FROM not_before - now())::float AS wait FROM subtasks WHERE task_id = $t AND email = $e',
      { t: c.id, e: 'first@example.test' },
    );
    expect(first).toMatchObject({ status: 'queued', attempts: 1 });
    expect(first!.wait).toBeGreaterThan(30);
  });
});
