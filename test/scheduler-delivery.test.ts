import { generateKeyPairSync } from 'node:crypto';
import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { paceViolations } from '../services/scheduler/pacer.js';
import { createTestEngine, rows } from './helpers/db.js';
import { recordSends, until, userWithContacts } from './helpers/scheduler.js';

const SECRET = 'unsubscribe-secret-for-tests-0123';

describe('delivery through real SMTP servers', () => {
  let engine: Engine;
  const catchers: SmtpCatcher[] = [];
  const smtp = async (opts: Parameters<typeof startSmtpCatcher>[0] = {}) => {
    const c = await startSmtpCatcher(opts);
    catchers.push(c);
    return c;
  };
  const service = (name: string, port: number, extra: Partial<Parameters<Engine['services']['create']>[0]> = {}) =>
    engine.services.create({
      name,
      transport: { host: '127.0.0.1', port },
      sendingRate: 0,
      dailyQuota: 100000,
      maxConnections: 2,
      ...extra,
    });

  beforeEach(async () => {
    engine = await createTestEngine({
      schedulerTickMs: 50,
      retryDelayMs: 300,
      unhealthyAfter: 2,
      probeBackoffMs: 60000,
      unsubscribeUrlBase: 'https://mail.example.test/u',
      unsubscribeSecret: SECRET,
    });
  });
  afterEach(async () => {
    await engine.close();
    await Promise.all(catchers.splice(0).map((c) => c.stop()));
  });

  it('paces a service by its sending_rate: at most k + 1 dispatches in any k intervals', async () => {
    const s = await smtp();
    const u = await userWithContacts(engine, 'Rate', 8);
    await engine.campaigns.create({
      userId: u.userId,
      name: 'r',
      from: 'r@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await service('paced', s.port, { sendingRate: 0.15, maxConnections: 3 });
    const sent = recordSends(engine);
    await engine.scheduler.start();
    await until(() => sent.length === 8, 15000, '8 sends');
    // Events arrive in completion order; with 3 connections that need not be dispatch order.
    const times = sent.map((e) => e.dispatchedAt).sort((a, b) => a - b);
    // At the dispatch, the rule holds for every window of one interval or more (services/scheduler/pacer.ts).
    expect(paceViolations(times, 150, 0)).toBeNull();
    // ... and the schedule does not dawdle either.
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(times.at(-1)! - times[0]!).toBeGreaterThanOrEqual(7 * 150 - 75);
    expect(Math.min(...gaps)).toBeLessThan(400);
  });

  it('personalizes each message and sets Message-ID, List-Unsubscribe (RFC 8058) and a DKIM signature covering them', async () => {
    const s = await smtp();
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const user = await engine.users.create({ name: 'P', email: 'p@example.test', quota: 10 });
    const { ids } = await engine.contacts.bulkCreate(user.id, [
      { email: 'ada@example.test', name: 'Ada', attributes: { city: 'London' } },
      { email: 'linus@example.test', name: 'Linus <script>', attributes: { city: 'Helsinki' } },
    ]);
    const tpl = await engine.templates.create(user.id, {
      name: 't',
      subject: 'Hello {{name}} in {{city}}',
      html: '<p>Dear {{name}}, news from {{city}}. <a href="{{unsubscribe_url}}">unsubscribe</a></p>',
    });
    const c = await engine.campaigns.create({
      userId: user.id,
      name: 'p',
      from: { address: 'news@example.test', name: 'Example News' },
      templates: [tpl.id],
      contacts: ids,
    });
    await service('dkim', s.port, {
      dkim: { domainName: 'example.test', keySelector: 'fs', privateKey: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString() },
    });
    await engine.scheduler.start();
    await s.waitFor(2);
    const byTo = new Map(s.messages.map((m) => [m.envelopeTo[0], m]));
    const ada = byTo.get('ada@example.test')!.parsed;
    expect(ada.subject).toBe('Hello Ada in London');
    expect(ada.from?.text).toBe('"Example News" <news@example.test>');
    expect(ada.messageId).toBe(`<${c.id}.${ids[0]}@example.test>`);
    expect(ada.html).toContain('Dear Ada, news from London.');
    expect(ada.text).toContain('Dear Ada, news from London.'); // plain-text part derived from the html
    const unsubscribe = `https://mail.example.test/u/${ids[0]}.${c.id}.`;
    const raw = byTo.get('ada@example.test')!.raw.toString();
    expect(raw).toMatch(new RegExp(`^List-Unsubscribe: <${unsubscribe.replace(/[.]/g, '\\.')}[A-Za-z0-9_-]{22}>\r$`, 'm'));
    expect(raw).toMatch(/^List-Unsubscribe-Post: List-Unsubscribe=One-Click\r$/m);
    const dkim = String(
      byTo
        .get('ada@example.test')!
        .raw.toString()
        .match(/DKIM-Signature:[\s\S]*?\bh=([^;]+);/i)?.[1],
    )
      .replace(/\s+/g, '')
      .toLowerCase();
    expect(dkim.split(':')).toEqual(expect.arrayContaining(['list-unsubscribe', 'list-unsubscribe-post', 'from', 'subject', 'message-id']));
    // Contact data is escaped in html and cannot break headers.
    const linus = byTo.get('linus@example.test')!.parsed;
    expect(linus.html).toContain('Dear Linus &lt;script&gt;');
    expect(linus.subject).toBe('Hello Linus <script> in Helsinki');
  });

  it('retries a 451 with backoff and then delivers; a 550 fails at once and marks the contact bounced', async () => {
    let refusals = 0;
    const s = await smtp({
      rcptReply: (a) => (a.startsWith('gone@') ? { code: 550, message: 'No such user' } : undefined),
      dataReply: (m) => (m.to[0] === 'later@example.test' && refusals++ < 2 ? { code: 451, message: 'Greylisted, try later' } : undefined),
    });
    const user = await engine.users.create({ name: 'R', email: 'r@example.test', quota: 10 });
    const { ids } = await engine.contacts.bulkCreate(user.id, [{ email: 'later@example.test' }, { email: 'gone@example.test' }]);
    const tpl = await engine.templates.create(user.id, { name: 't', subject: 's', text: 'x' });
    const c = await engine.campaigns.create({ userId: user.id, name: 'r', from: 'r@example.test', templates: [tpl.id], contacts: ids });
    await service('greylist', s.port);
    const retries: number[] = [];
    engine.scheduler.on('retry', () => retries.push(Date.now()));
    const sent = recordSends(engine);
    await engine.scheduler.start();
    await until(async () => (await engine.campaigns.progress(c.id)).status === 'completed', 15000, 'completion');
    expect(await engine.campaigns.progress(c.id)).toMatchObject({ sent: 1, failed: 1, queued: 0, sending: 0 });
    // Two 451s: retried after 300 ms, then after 600 ms (retryDelay * 2^attempt).
    expect(retries).toHaveLength(2);
    expect(retries[1]! - retries[0]!).toBeGreaterThanOrEqual(300 - 20);
    expect(sent[0]!.dispatchedAt - retries[1]!).toBeGreaterThanOrEqual(600 - 20);
    const [later, gone] = await rows<{ status: string; attempts: number; last_error: string | null }>(
      engine.apiDb,
      'SELECT status, attempts, last_error FROM subtasks WHERE task_id = $t ORDER BY contact_id',
      { t: c.id },
    );
    expect(later).toMatchObject({ status: 'sent', attempts: 3 });
    expect(later!.last_error).toMatch(/451 Greylisted/);
    expect(gone).toMatchObject({ status: 'failed', attempts: 1 });
    expect(gone!.last_error).toMatch(/550 No such user/);
    expect(await rows(engine.apiDb, 'SELECT status FROM contacts WHERE id = $id', { id: ids[1] })).toEqual([{ status: 'bounced' }]);
    expect(await rows(engine.apiDb, `SELECT error_type, count FROM error_logs ORDER BY error_type`)).toEqual([
      { error_type: 'smtp_451', count: 2 },
      { error_type: 'smtp_550', count: 1 },
    ]);
  });

  it('fails over to another service when one exhausts its quota, and when one is down', async () => {
    const a = await smtp();
    const b = await smtp();
    const u = await userWithContacts(engine, 'F', 10);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'f',
      from: 'f@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    const small = await service('small', a.port, { dailyQuota: 3 });
    await engine.scheduler.start();
    await until(() => engine.scheduler.status().services.find((s) => s.id === small.id)?.state === 'exhausted', 10000, 'exhaustion');
    await a.waitFor(3); // the last of the three may still have been in flight
    // The exhausted service's share goes to the next one.
    await service('big', b.port);
    await until(async () => (await engine.campaigns.progress(c.id)).status === 'completed', 15000, 'completion');
    expect(a.accepted).toBe(3);
    expect(b.accepted).toBe(7);
    const quota = (await engine.services.quota()).find((q) => q.id === small.id)!;
    expect(quota).toMatchObject({ usedQuota: 3, remainingQuota: 0 });
    expect(engine.scheduler.status().services.find((s) => s.id === small.id)!.state).toBe('exhausted');

    // A dead server: nothing listens on its port. Its share goes to the live one; it turns unhealthy.
    const dead = await smtp();
    const deadPort = dead.port;
    await dead.stop();
    catchers.splice(catchers.indexOf(dead), 1);
    const down = await service('down', deadPort);
    const c2 = await engine.campaigns.create({
      userId: u.userId,
      name: 'f2',
      from: 'f@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await until(async () => (await engine.campaigns.progress(c2.id)).status === 'completed', 15000, 'completion via the live service');
    expect(b.accepted).toBe(17);
    await until(() => engine.scheduler.status().services.find((s) => s.id === down.id)?.state === 'unhealthy', 5000, 'unhealthy');
    // Health is written to the database as it changes (asynchronously): wait for the row.
    const health = () =>
      rows<{ is_healthy: boolean; consecutive_failures: number }>(
        engine.apiDb,
        'SELECT is_healthy, consecutive_failures FROM email_services WHERE id = $id',
        {
          id: down.id,
        },
      );
    await until(async () => (await health())[0]?.is_healthy === false, 5000, 'the unhealthy state in the database');
    expect((await health())[0]!.consecutive_failures).toBeGreaterThanOrEqual(2);
    // Refused connections never reached a server: they cost no quota. The units the service had
    // reserved go back once its last slot has ended (the runner's tick), so wait for that.
    await until(async () => (await engine.services.quota()).find((q) => q.id === down.id)!.usedQuota === 0, 5000, 'the unused units back');
  });

  it('makes a campaign wait, saying why, when no service is left', async () => {
    const s = await smtp();
    const u = await userWithContacts(engine, 'W', 4);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'w',
      from: 'w@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await service('tiny', s.port, { dailyQuota: 1 });
    await engine.scheduler.start();
    await until(
      async () => {
        const p = await engine.campaigns.progress(c.id);
        return (p.waitReason ?? '').includes('exhausted') && p.sent === 1;
      },
      10000,
      'a wait reason',
    );
    const p = await engine.campaigns.progress(c.id);
    expect(p.waitReason).toMatch(/^no sending service available: tiny exhausted until \d{4}-/);
    expect(p.sent).toBe(1);
  });

  it('tick() resolves after a pass begun after the call: the calls made during a pass share one more pass', async () => {
    // No timer passes in between: the engine's own period is ten minutes.
    const e = await createTestEngine({ schedulerTickMs: 600_000 });
    try {
      await e.scheduler.start();
      let passes = 0;
      e.scheduler.on('tick', () => passes++);
      const first = e.scheduler.tick();
      // Made while `first` is under way: it may have read the campaigns before the caller's change.
      const during = [e.scheduler.tick(), e.scheduler.tick()];
      expect(during[0]).toBe(during[1]);
      expect(during[0]).not.toBe(first);
      await first;
      expect(passes).toBe(1);
      await Promise.all(during);
      expect(passes).toBe(2);
      await e.scheduler.tick();
      expect(passes).toBe(3);
    } finally {
      await e.close();
    }
  });

  it('pauses, resumes and cancels within a tick while sending, refunding unsent credit', async () => {
    const s = await smtp();
    const u = await userWithContacts(engine, 'X', 30, { quota: 100 });
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'x',
      from: 'x@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await service('steady', s.port, { sendingRate: 0.05, maxConnections: 1 });
    const sent = recordSends(engine);
    await engine.scheduler.start();
    await until(() => sent.length >= 3, 10000, '3 sends');
    await engine.campaigns.pause(c.id);
    await engine.scheduler.tick();
    // From the tick on, nothing of the campaign is dispatched. What was dispatched before it may
    // still be answered: with answers slower than the 50 ms interval (a loaded machine), that is
    // more than one message, since a paced service keeps its rate through slow answers.
    const paused = performance.timeOrigin + performance.now();
    await until(() => engine.scheduler.status().bufferedMessages === 0, 5000, 'buffer released');
    const atPause = sent.length;
    await new Promise((r) => setTimeout(r, 400));
    expect(sent.filter((e) => e.dispatchedAt > paused)).toEqual([]);
    await engine.scheduler.flush();
    const progress = await engine.campaigns.progress(c.id);
    expect(progress).toMatchObject({ status: 'paused', sending: 0 });
    expect(progress.queued + progress.sent).toBe(30);

    await engine.campaigns.resume(c.id);
    await until(() => sent.length >= atPause + 5, 10000, 'sending again');
    await engine.campaigns.cancel(c.id);
    await engine.scheduler.tick();
    await engine.scheduler.flush();
    await until(async () => (await engine.campaigns.progress(c.id)).sending === 0, 5000, 'in-flight settled');
    const done = await engine.campaigns.progress(c.id);
    expect(done.status).toBe('cancelled');
    expect(done.sent + done.cancelled).toBe(30);
    expect(done.sent).toBe(s.accepted);
    // Everything not sent was refunded: the queued at cancel time, plus the buffered ones the scheduler released.
    expect(done.cancelled).toBeGreaterThan(0);
    expect((await engine.users.get(u.userId)).remainingQuota).toBe(100 - done.sent);
  });

  it('applies service changes while running: a new rate, disabling, and a new service', async () => {
    const s1 = await smtp();
    const s2 = await smtp();
    const u = await userWithContacts(engine, 'Y', 40);
    await engine.campaigns.create({
      userId: u.userId,
      name: 'y',
      from: 'y@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    const slow = await service('slow', s1.port, { sendingRate: 10, maxConnections: 1 });
    const sent = recordSends(engine);
    await engine.scheduler.start();
    await until(() => sent.length >= 1, 5000, 'the first send');
    await new Promise((r) => setTimeout(r, 300));
    expect(sent.length).toBe(1); // one send per 10 s
    await engine.services.update(slow.id, { sendingRate: 0.02 });
    await until(() => sent.length >= 6, 5000, 'the faster rate'); // within a tick, not after 10 s
    await engine.services.update(slow.id, { enabled: false });
    // Within a tick the runner stops (its in-flight sends finish first).
    await until(() => !engine.scheduler.status().services.some((x) => x.id === slow.id), 2000, 'the disabled service to stop');
    const atDisable = s1.accepted;
    await engine.services.create({ name: 'fresh', transport: { host: '127.0.0.1', port: s2.port }, sendingRate: 0, dailyQuota: 1000 });
    await until(() => sent.length === 40, 10000, 'all sent by the new service');
    expect(s1.accepted).toBe(atDisable);
    expect(s2.accepted).toBe(40 - atDisable);
  });
});
