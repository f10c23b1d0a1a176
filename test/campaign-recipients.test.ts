import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { decodeCursor, encodeCursor, RECIPIENTS_PAGE_SQL } from '../services/campaign-recipients.js';
import { QuotaExceededError, ValidationError } from '../services/kernel/errors.js';
import { createTestEngine, explainNodes, rows } from './helpers/db.js';
import { until, userWithContacts } from './helpers/scheduler.js';

describe('recipients cursor', () => {
  it('round-trips and refuses anything it did not make', () => {
    expect(decodeCursor(encodeCursor(123456789))).toBe(123456789);
    for (const bad of ['', 'abc', Buffer.from('r1.x').toString('base64url'), Buffer.from('r2.5').toString('base64url'), '!!!']) {
      expect(() => decodeCursor(bad)).toThrow(ValidationError);
    }
  });
});

describe('engine.campaigns.recipients over 100,000 recipients', () => {
  let engine: Engine;
  let taskId: number;
  const N = 100_000;
  beforeAll(async () => {
    engine = await createTestEngine();
    const u = await userWithContacts(engine, 'Pages', 1);
    // The queue is written with SQL for speed: 1 in 10 failed, 1 in 10 unknown, the rest sent;
    // an attempt record for every failed one.
    const [[t]] = (await engine.apiDb.query(
      `INSERT INTO tasks (name, from_address, created_by, templates, status, generated_at, total_count, sent_count, failed_count, unknown_count)
       VALUES ('big', 'big@example.test', $u, $tpl::jsonb, 'completed', now(), $n, $n * 8 / 10, $n / 10, $n / 10) RETURNING id`,
      { bind: { u: u.userId, tpl: JSON.stringify([u.templateId]), n: N } },
    )) as [{ id: string }[], unknown];
    taskId = Number(t!.id);
    await engine.apiDb.query(
      `INSERT INTO subtasks (task_id, contact_id, user_id, email, template_id, status, attempts, last_error)
       SELECT $t, g, $u, 'r' || g || '@example.test', $tpl,
              CASE g % 10 WHEN 0 THEN 'failed' WHEN 1 THEN 'unknown' ELSE 'sent' END, 1,
              CASE WHEN g % 10 = 0 THEN 'smtp_550: no such user' END
         FROM generate_series(1, $n) g`,
      { bind: { t: taskId, u: u.userId, tpl: u.templateId, n: N } },
    );
    await engine.apiDb.query(
      `INSERT INTO send_attempts (task_id, contact_id, attempted_at, service_id, provider, result, smtp_code, enhanced_code, reply, duration_ms)
       SELECT $t::bigint, g, now() - interval '1 minute', 1, 'example.test', 'transient', 451, '4.3.0', '451 4.3.0 later', 12
         FROM generate_series(10, $n::int, 10) g
       UNION ALL
       SELECT $t::bigint, g, now(), 1, 'example.test', 'permanent', 550, '5.1.1', '550 5.1.1 no such user', 15
         FROM generate_series(10, $n::int, 10) g`,
      { bind: { t: taskId, n: N } },
    );
    await engine.apiDb.query('ANALYZE subtasks; ANALYZE send_attempts');
  }, 120_000);
  afterAll(() => engine.close());

  it('pages through every recipient exactly once, in contact order', async () => {
    const seen = new Map<number, number>();
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await engine.campaigns.recipients(taskId, { limit: 1000, ...(cursor ? { cursor } : {}) });
      pages++;
      expect(page.items.length).toBeLessThanOrEqual(1000);
      for (const r of page.items) seen.set(r.contactId, (seen.get(r.contactId) ?? 0) + 1);
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(pages).toBe(100);
    expect(seen.size).toBe(N);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    expect(Math.min(...seen.keys())).toBe(1);
    expect(Math.max(...seen.keys())).toBe(N);
  }, 120_000);

  it('filters by status, and shows the last reply', async () => {
    const ids: number[] = [];
    let cursor: string | undefined;
    do {
      const page = await engine.campaigns.recipients(taskId, { status: 'failed', limit: 1000, ...(cursor ? { cursor } : {}) });
      for (const r of page.items) {
        expect(r.status).toBe('failed');
        ids.push(r.contactId);
      }
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(ids).toHaveLength(N / 10);
    expect(new Set(ids).size).toBe(N / 10);
    const first = await engine.campaigns.recipients(taskId, { status: ['failed', 'unknown'], limit: 3 });
    expect(first.items.map((r) => [r.contactId, r.status])).toEqual([
      [1, 'unknown'],
      [10, 'failed'],
      [11, 'unknown'],
    ]);
    expect(first.items[0]!.lastReply).toBeNull();
    expect(first.items[1]).toMatchObject({
      email: 'r10@example.test',
      lastError: 'smtp_550: no such user',
      lastReply: { result: 'permanent', code: 550, enhancedCode: '5.1.1', text: '550 5.1.1 no such user', provider: 'example.test' },
    });
  });

  it('reads one page as a bounded range scan of the primary key, wherever the cursor is', async () => {
    const nodes = await explainNodes(engine.apiDb, RECIPIENTS_PAGE_SQL, { id: taskId, after: 50_000, statuses: null, limit: 101 });
    const onSubtasks = nodes.filter((n) => n['Relation Name'] === 'subtasks');
    expect(onSubtasks).toHaveLength(1);
    expect(onSubtasks[0]).toMatchObject({ 'Node Type': 'Index Scan', 'Index Name': 'subtasks_pkey', 'Actual Rows': 101 });
    const onAttempts = nodes.filter((n) => n['Relation Name'] === 'send_attempts');
    expect(onAttempts.every((n) => n['Node Type'] !== 'Seq Scan')).toBe(true);
  });

  it('refuses a bad status, limit or cursor with the field named, and an unknown campaign', async () => {
    await expect(engine.campaigns.recipients(taskId, { status: 'lost' as never })).rejects.toMatchObject({
      issues: [expect.objectContaining({ path: 'status' })],
    });
    await expect(engine.campaigns.recipients(taskId, { limit: 5000 })).rejects.toMatchObject({
      issues: [expect.objectContaining({ path: 'limit' })],
    });
    await expect(engine.campaigns.recipients(taskId, { cursor: 'nope' })).rejects.toMatchObject({
      issues: [expect.objectContaining({ path: 'cursor' })],
    });
    await expect(engine.campaigns.recipients(999_999)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('engine.campaigns.retry through a real SMTP server', () => {
  let engine: Engine;
  let smtp: SmtpCatcher;
  afterEach(async () => {
    await engine.close();
    await smtp.stop();
  });

  it('re-queues failed and unknown messages with their Message-ID, never a suppressed one, and only with credit', async () => {
    engine = await createTestEngine({ schedulerTickMs: 50, maxRetries: 0 });
    const firstTry = new Set<string>();
    const once = (address: string) => !firstTry.has(address) && (firstTry.add(address), true);
    const refusedIds = new Map<string, string>();
    const messageIdOf = (raw: Buffer) => /^Message-ID:\s*(\S+)/im.exec(raw.toString('utf8'))?.[1] ?? '';
    smtp = await startSmtpCatcher({
      // r2: refused at DATA (554, permanent). r3: refused at RCPT (554, permanent, not a bounce).
      // r4: the connection drops after the data (unknown). r5: refused, then suppressed. Each only the first time.
      rcptReply: (a) => (a === 'ret3@example.test' && once(a) ? { code: 554, message: '5.7.1 relay access denied' } : undefined),
      dataReply: (m) => {
        const a = m.to[0]!;
        if ((a === 'ret2@example.test' || a === 'ret5@example.test') && once(a)) {
          refusedIds.set(a, messageIdOf(m.raw));
          return { code: 554, message: '5.7.1 refused for now' };
        }
        return undefined;
      },
      dropAfterData: (m) => {
        const a = m.to[0]!;
        if (a === 'ret4@example.test' && once(a)) {
          refusedIds.set(a, messageIdOf(m.raw));
          return true;
        }
        return false;
      },
    });
    const u = await userWithContacts(engine, 'Ret', 6, { quota: 6 });
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'r',
      from: 'r@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await engine.services.create({
      name: 's',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 1000,
      maxConnections: 1,
    });
    await engine.scheduler.start();
    await until(async () => (await engine.campaigns.get(c.id)).status === 'completed', 30_000, 'the first pass to complete').catch(
      async (err: unknown) => {
        throw new Error(
          `${String(err)}: ${JSON.stringify(await engine.campaigns.progress(c.id))} ${JSON.stringify(
            await rows(engine.apiDb, 'SELECT email, status, attempts, last_error FROM subtasks WHERE task_id = $t ORDER BY 1', { t: c.id }),
          )}`,
        );
      },
    );
    await engine.scheduler.flush();
    expect(await engine.campaigns.progress(c.id)).toMatchObject({ sent: 2, failed: 3, unknown: 1 });
    await engine.suppressions.add({ userId: u.userId, emails: ['ret5@example.test'], reason: 'complaint' });

    const statusesNow = () =>
      rows<{ email: string; status: string }>(engine.apiDb, 'SELECT email, status FROM subtasks WHERE task_id = $t ORDER BY contact_id', {
        t: c.id,
      });
    const before = await statusesNow();

    // No credit left (6 reserved of 6): refused with a typed error, nothing written.
    const refused = await engine.campaigns.retry(c.id, { statuses: ['failed', 'unknown'] }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(QuotaExceededError);
    expect(refused).toMatchObject({ code: 'QUOTA_EXCEEDED', required: 3, available: 0 });
    expect(await statusesNow()).toEqual(before);
    expect(await engine.campaigns.progress(c.id)).toMatchObject({ status: 'completed', sent: 2, failed: 3, unknown: 1 });
    expect((await engine.users.get(u.userId)).remainingQuota).toBe(0);

    // A status that cannot be retried is refused by name.
    await expect(engine.campaigns.retry(c.id, { statuses: ['sent' as never] })).rejects.toMatchObject({
      issues: [expect.objectContaining({ path: 'statuses[0]' })],
    });

    await engine.users.addQuota(u.userId, 5);
    const r = await engine.campaigns.retry(c.id, { statuses: ['failed', 'unknown'] });
    expect(r).toEqual({
      campaignId: c.id,
      status: 'sending',
      requeued: 3,
      failed: 2,
      unknown: 1,
      skippedSuppressed: 1,
      skippedInactive: 0,
      remainingCredit: 2,
    });
    await until(async () => (await engine.campaigns.get(c.id)).status === 'completed', 30_000, 'the retry to complete');
    await engine.scheduler.flush();
    expect(await statusesNow()).toEqual([
      { email: 'ret1@example.test', status: 'sent' },
      { email: 'ret2@example.test', status: 'sent' },
      { email: 'ret3@example.test', status: 'sent' },
      { email: 'ret4@example.test', status: 'sent' },
      { email: 'ret5@example.test', status: 'failed' },
      { email: 'ret6@example.test', status: 'sent' },
    ]);
    expect(await engine.campaigns.progress(c.id)).toMatchObject({ status: 'completed', sent: 5, failed: 1, unknown: 0 });
    const [task] = await rows<{ sent_count: number; failed_count: number; unknown_count: number }>(
      engine.apiDb,
      'SELECT sent_count, failed_count, unknown_count FROM tasks WHERE id = $t',
      { t: c.id },
    );
    expect(task).toEqual({ sent_count: 5, failed_count: 1, unknown_count: 0 });
    // The retried ones arrived with the Message-ID of their first attempt.
    const arrived = new Map(smtp.messages.map((m) => [m.envelopeTo[0]!, m.parsed.messageId]));
    expect(refusedIds.get('ret2@example.test')).toMatch(/^<.+>$/);
    expect(arrived.get('ret2@example.test')).toBe(refusedIds.get('ret2@example.test'));
    expect(arrived.get('ret4@example.test')).toBe(refusedIds.get('ret4@example.test'));
    expect(arrived.get('ret3@example.test')).toBe(`<${c.id}.${u.contactIds[2]}@example.test>`);
    expect(arrived.has('ret5@example.test')).toBe(false);
    // Nothing left to retry: nothing written, no credit taken.
    expect(await engine.campaigns.retry(c.id)).toMatchObject({ requeued: 0, skippedSuppressed: 1, remainingCredit: 2 });
  });
});
