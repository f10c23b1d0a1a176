import type { Engine } from '../src/engine.js';
import { createTestEngine, rows } from './helpers/db.js';
import { userWithContacts } from './helpers/scheduler.js';

describe('campaign progress after retention cleanup', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await createTestEngine();
  });
  afterAll(() => engine.close());

  it('reports the same totals after cleanup_old_data deleted the messages', async () => {
    const u = await userWithContacts(engine, 'Old', 7);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'old',
      from: 'o@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await engine.scheduler.processScheduledTasks();
    // Finish it long ago: 5 sent, 2 failed.
    await engine.apiDb.query(
      `UPDATE subtasks SET status = CASE WHEN contact_id IN (SELECT contact_id FROM subtasks WHERE task_id = $id ORDER BY contact_id LIMIT 5) THEN 'sent' ELSE 'failed' END,
              sent_at = now() - interval '200 days' WHERE task_id = $id`,
      { bind: { id: c.id } },
    );
    await engine.apiDb.query(
      `UPDATE tasks SET status = 'completed', sent_count = 5, failed_count = 2, completed_at = now() - interval '200 days', updated_at = now() - interval '200 days' WHERE id = $id`,
      { bind: { id: c.id } },
    );
    const before = await engine.campaigns.progress(c.id);
    expect(before).toMatchObject({ status: 'completed', total: 7, sent: 5, failed: 2 });
    const run = await engine.jobs.runNow('cleanup_old_data');
    expect(run.outcome).toBe('success');
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM subtasks WHERE task_id = $id', { id: c.id })).toEqual([{ n: 0 }]);
    expect(await engine.campaigns.progress(c.id)).toEqual(before);
  });
});
