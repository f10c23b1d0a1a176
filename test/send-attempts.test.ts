import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { parseReply, recipientDomain } from '../services/delivery/reply.js';
import { createTestEngine, rows } from './helpers/db.js';
import { until, userWithContacts } from './helpers/scheduler.js';

describe('parseReply', () => {
  it('splits a reply into code, enhanced code and one line of text', () => {
    expect(parseReply('550 5.1.1 <a@b.test>: Recipient address rejected')).toEqual({
      code: 550,
      enhanced: '5.1.1',
      text: '550 5.1.1 <a@b.test>: Recipient address rejected',
    });
    expect(parseReply('250 OK: message queued')).toEqual({ code: 250, enhanced: null, text: '250 OK: message queued' });
    expect(parseReply('421-4.7.0 try again later\r\n421 4.7.0 closing')).toEqual({
      code: 421,
      enhanced: '4.7.0',
      text: '421-4.7.0 try again later 421 4.7.0 closing',
    });
  });

  it('falls back to the given code, keeps no code that is not one, and truncates the text', () => {
    expect(parseReply('Connection closed unexpectedly', null)).toEqual({
      code: null,
      enhanced: null,
      text: 'Connection closed unexpectedly',
    });
    expect(parseReply('Mailbox busy', 452).code).toBe(452);
    expect(parseReply('oops', 99).code).toBeNull();
    expect(parseReply(null)).toEqual({ code: null, enhanced: null, text: null });
    expect(parseReply(`550 ${'x'.repeat(1000)}`).text).toHaveLength(300);
  });

  it('takes the recipient domain in lower case', () => {
    expect(recipientDomain('Ann@Mail.Example.TEST')).toBe('mail.example.test');
    expect(recipientDomain('nodomain')).toBeNull();
  });
});

interface AttemptRow {
  contact_id: string;
  service_id: number;
  provider: string;
  mailbox_provider: string | null;
  result: string;
  smtp_code: number | null;
  enhanced_code: string | null;
  reply: string | null;
  duration_ms: number;
}

describe('the attempt record and the suppression re-check at claim, through a real SMTP server', () => {
  let engine: Engine;
  let smtp: SmtpCatcher | undefined;
  afterEach(async () => {
    await engine.close();
    await smtp?.stop();
    smtp = undefined;
  });

  const attemptsOf = (taskId: number) =>
    rows<AttemptRow>(
      engine.apiDb,
      `SELECT contact_id, service_id, provider, mailbox_provider, result, smtp_code, enhanced_code, reply, duration_ms
         FROM send_attempts WHERE task_id = $t ORDER BY contact_id, attempted_at`,
      { t: taskId },
    );

  it('keeps every attempt with its reply code, enhanced code, text and duration, written with the outcomes', async () => {
    engine = await createTestEngine({ schedulerTickMs: 50, retryDelayMs: 200, maxRetries: 3 });
    let deferred = 0;
    smtp = await startSmtpCatcher({
      rcptReply: (address) =>
        address === 'att2@example.test'
          ? { code: 550, message: '5.1.1 no such user here' }
          : address === 'att3@example.test' && deferred++ === 0
            ? { code: 451, message: '4.3.0 greylisted, try later' }
            : undefined,
    });
    const u = await userWithContacts(engine, 'Att', 3);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'a',
      from: 'a@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    const svc = await engine.services.create({
      name: 's',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 1000,
      maxConnections: 1,
    });
    await engine.scheduler.start();
    await until(async () => (await engine.campaigns.get(c.id)).status === 'completed', 30_000, 'the campaign to complete');
    await engine.scheduler.flush();
    const got = await attemptsOf(c.id);
    const [id1, id2, id3] = u.contactIds;
    expect(got.map((a) => [Number(a.contact_id), a.result, a.smtp_code, a.enhanced_code])).toEqual([
      [id1, 'accepted', 250, null],
      [id2, 'permanent', 550, '5.1.1'],
      [id3, 'transient', 451, '4.3.0'],
      [id3, 'accepted', 250, null],
    ]);
    for (const a of got) {
      expect(a.service_id).toBe(svc.id);
      expect(a.provider).toBe('example.test');
      // The subtask's mailbox provider (subtasks.provider, set at generation by the deliverability change).
      const [sub] = await rows<{ provider: string | null }>(
        engine.apiDb,
        'SELECT provider FROM subtasks WHERE task_id = $t AND contact_id = $c',
        {
          t: c.id,
          c: a.contact_id,
        },
      );
      expect(a.mailbox_provider).toBe(sub!.provider);
      expect(a.duration_ms).toBeGreaterThanOrEqual(0);
    }
    expect(got[1]!.reply).toMatch(/^550 5\.1\.1 no such user here/);
    expect(got[2]!.reply).toMatch(/greylisted/);
    expect(got[0]!.reply).toMatch(/^250 /);
  });

  it('records nothing with ATTEMPT_RECORDS off', async () => {
    engine = await createTestEngine({ schedulerTickMs: 50, attemptRecords: false });
    smtp = await startSmtpCatcher({ keep: false });
    const u = await userWithContacts(engine, 'Off', 2);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'a',
      from: 'a@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await engine.services.create({ name: 's', transport: { host: '127.0.0.1', port: smtp.port }, sendingRate: 0, dailyQuota: 1000 });
    await engine.scheduler.start();
    await until(async () => (await engine.campaigns.get(c.id)).status === 'completed', 30_000, 'the campaign to complete');
    await engine.scheduler.flush();
    expect(smtp.accepted).toBe(2);
    expect(await attemptsOf(c.id)).toEqual([]);
  });

  it('does not send to an address suppressed after generation: cancelled with the reason, credit refunded, no quota unit spent', async () => {
    engine = await createTestEngine({ schedulerTickMs: 50 });
    smtp = await startSmtpCatcher();
    const u = await userWithContacts(engine, 'Sup', 4, { quota: 10 });
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 's',
      from: 's@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await engine.scheduler.processScheduledTasks();
    // Entries written after the queue was generated, without cancelling the queued mail (as a
    // suppression committed while generation ran would be): one on the user's list, one global.
    await engine.apiDb.query(
      `INSERT INTO suppressions (user_id, email, reason, source) VALUES ($u, 'sup2@example.test', 'hard_bounce', 'test'),
              (NULL, 'sup4@example.test', 'complaint', 'test')`,
      { bind: { u: u.userId } },
    );
    const svc = await engine.services.create({
      name: 's',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 1000,
    });
    await engine.scheduler.start();
    await until(async () => (await engine.campaigns.get(c.id)).status === 'completed', 30_000, 'the campaign to complete');
    await engine.scheduler.flush();
    expect(smtp.messages.map((m) => m.envelopeTo[0]).sort()).toEqual(['sup1@example.test', 'sup3@example.test']);
    const subs = await rows<{ email: string; status: string; last_error: string | null }>(
      engine.apiDb,
      'SELECT email, status, last_error FROM subtasks WHERE task_id = $t ORDER BY contact_id',
      { t: c.id },
    );
    expect(subs).toEqual([
      { email: 'sup1@example.test', status: 'sent', last_error: null },
      { email: 'sup2@example.test', status: 'cancelled', last_error: 'suppressed: hard_bounce' },
      { email: 'sup3@example.test', status: 'sent', last_error: null },
      { email: 'sup4@example.test', status: 'cancelled', last_error: 'suppressed: complaint (global list)' },
    ]);
    const progress = await engine.campaigns.progress(c.id);
    expect(progress).toMatchObject({ status: 'completed', total: 4, sent: 2, cancelled: 2, failed: 0 });
    const [task] = await rows<{ sent_count: number; cancelled_count: number }>(
      engine.apiDb,
      'SELECT sent_count, cancelled_count FROM tasks WHERE id = $t',
      { t: c.id },
    );
    expect(task).toEqual({ sent_count: 2, cancelled_count: 2 });
    // The two not sent gave their credit back (10 - 4 reserved + 2 refunded), and took no quota unit.
    const [user] = await rows<{ remaining_quota: number }>(engine.apiDb, 'SELECT remaining_quota FROM users WHERE id = $u', {
      u: u.userId,
    });
    expect(Number(user!.remaining_quota)).toBe(8);
    await engine.scheduler.stop(); // returns reserved-but-unused units, so used_quota is what was spent
    const [service] = await rows<{ used_quota: number }>(engine.apiDb, 'SELECT used_quota FROM email_services WHERE id = $id', {
      id: svc.id,
    });
    expect(Number(service!.used_quota)).toBe(2);
    expect(await attemptsOf(c.id)).toHaveLength(2);
  });
});
