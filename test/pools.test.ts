import type { EngineCore } from '../src/engine.js';
import { APP_NAME_API, APP_NAME_SCHEDULER } from '../src/db.js';
import { createTestEngineCore } from './helpers/db.js';

describe('two database pools', () => {
  let engine: EngineCore;
  beforeAll(async () => {
    engine = await createTestEngineCore({ schedulerPoolMax: 3, schedulerPoolMin: 0, schedulerPoolAcquireMs: 20000 });
  });
  afterAll(() => engine.close());

  it('API queries still answer while every scheduler connection is busy', async () => {
    // Hold all three scheduler connections with long queries, and queue a fourth behind them.
    const hogs = Array.from({ length: 4 }, () => engine.schedulerDb.query('SELECT pg_sleep(3)'));
    await new Promise((r) => setTimeout(r, 300));
    const usage = engine.pools().scheduler;
    expect(usage.using).toBe(3);
    expect(usage.waiting).toBe(1);

    const started = Date.now();
    const [rows] = await engine.apiDb.query(
      `SELECT application_name, count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND application_name IN (:names) GROUP BY 1 ORDER BY 1`,
      { replacements: { names: [APP_NAME_API, APP_NAME_SCHEDULER] } },
    );
    const elapsed = Date.now() - started;
    // The API answered while the scheduler side was still saturated (its sleeps last 3 s).
    expect(engine.pools().scheduler.using).toBe(3);
    expect(elapsed).toBeLessThan(2500);
    // Each pool is told apart in pg_stat_activity by its application_name.
    expect(rows).toEqual([
      { application_name: APP_NAME_API, n: expect.any(Number) },
      { application_name: APP_NAME_SCHEDULER, n: 3 },
    ]);
    await Promise.all(hogs);
  });

  it('uses the documented defaults', async () => {
    const d = await createTestEngineCore();
    try {
      expect(d.pools().api.max).toBe(20);
      expect(d.pools().scheduler.max).toBe(5);
    } finally {
      await d.close();
    }
  });
});
