/**
 * `fairsend campaign recipients` and `fairsend campaign retry`, run in process (runCli) against a
 * real PostgreSQL database.
 */
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/index.js';
import type { Engine } from '../src/engine.js';
import { createTestDatabase, createTestEngine, TEST_SECRET_KEY } from './helpers/db.js';
import { userWithContacts } from './helpers/scheduler.js';

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

describe('fairsend campaign recipients / retry', () => {
  let url: string;
  let engine: Engine;
  const run = async (args: string[]) => {
    const stdout = new Sink();
    const stderr = new Sink();
    const code = await runCli(['node', 'fairsend', ...args], {
      stdout,
      stderr,
      env: { DATABASE_URL: url, LOG_LEVEL: 'silent', FAIRSEND_SECRET_KEY: TEST_SECRET_KEY },
    });
    return { code, out: stdout.text, err: stderr.text };
  };

  beforeAll(async () => {
    url = await createTestDatabase();
    engine = await createTestEngine({ databaseUrl: url });
  });
  afterAll(() => engine.close());

  it('lists recipients a page at a time or all, filtered by status, as a table or JSON; retries with the credit checked', async () => {
    const u = await userWithContacts(engine, 'Clr', 5, { quota: 5 });
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'cli',
      from: 'cli@example.test',
      templates: [u.templateId],
      contacts: u.contactIds,
    });
    await engine.scheduler.processScheduledTasks();
    await engine.apiDb.query(
      `UPDATE subtasks SET status = CASE WHEN contact_id = $f THEN 'failed' ELSE 'sent' END, attempts = 1,
              last_error = CASE WHEN contact_id = $f THEN 'smtp_554: refused' END WHERE task_id = $t`,
      { bind: { t: c.id, f: u.contactIds[2] } },
    );
    await engine.apiDb.query(`UPDATE tasks SET status = 'completed', sent_count = 4, failed_count = 1 WHERE id = $t`, {
      bind: { t: c.id },
    });
    await engine.apiDb.query(
      `INSERT INTO send_attempts (task_id, contact_id, attempted_at, result, smtp_code, enhanced_code, reply)
       VALUES ($t, $f, now(), 'permanent', 554, '5.7.1', '554 5.7.1 refused')`,
      { bind: { t: c.id, f: u.contactIds[2] } },
    );

    const page = await run(['campaign', 'recipients', String(c.id), '--limit', '2']);
    expect(page).toMatchObject({ code: 0, err: '' });
    const lines = page.out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^contact\s+email\s+status\s+attempts\s+last reply\s+at$/);
    expect(lines.slice(2, 4).map((l) => l.trim().split(/\s{2,}/)[1])).toEqual(['clr1@example.test', 'clr2@example.test']);
    const more = /^more: fairsend campaign recipients \d+ --cursor (\S+)$/m.exec(page.out);
    expect(more).not.toBeNull();
    const second = await run(['campaign', 'recipients', String(c.id), '--limit', '2', '--cursor', more![1]!, '--json']);
    const body = JSON.parse(second.out) as { recipients: { email: string; lastReply: unknown }[]; nextCursor: string | null };
    expect(body.recipients.map((r) => r.email)).toEqual(['clr3@example.test', 'clr4@example.test']);
    expect(body.recipients[0]!.lastReply).toMatchObject({ result: 'permanent', code: 554, enhancedCode: '5.7.1' });
    const all = JSON.parse((await run(['campaign', 'recipients', String(c.id), '--limit', '2', '--all', '--json'])).out) as {
      recipients: unknown[];
      nextCursor: null;
    };
    expect(all.recipients).toHaveLength(5);
    expect(all.nextCursor).toBeNull();
    const failed = await run(['campaign', 'recipients', String(c.id), '--status', 'failed']);
    expect(failed.out).toContain('clr3@example.test');
    expect(failed.out).toContain('permanent: 554 5.7.1 refused');
    expect(failed.out).not.toContain('clr1@example.test');
    const bad = await run(['campaign', 'recipients', String(c.id), '--status', 'lost']);
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/status/);

    // No credit left: refused, one clear line, nothing re-queued.
    const refused = await run(['campaign', 'retry', String(c.id)]);
    expect(refused.code).not.toBe(0);
    expect(refused.err).toMatch(/quota exceeded: campaign needs 1 sends, user has 0 remaining/);
    expect((await engine.campaigns.progress(c.id)).failed).toBe(1);
    await engine.users.addQuota(u.userId, 1);
    const ok = await run(['campaign', 'retry', String(c.id), '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.out)).toMatchObject({ status: 'sending', requeued: 1, failed: 1, remainingCredit: 0 });
    expect((await engine.campaigns.progress(c.id)).queued).toBe(1);
  });
});
