import type { EngineCore } from '../src/engine.js';
import { createServer, type Socket } from 'node:net';
import { APP_NAME_API, APP_NAME_SCHEDULER, createSequelize, isConnectionError } from '../services/kernel/db.js';
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
      expect(d.pools().prepared.max).toBe(5);
    } finally {
      await d.close();
    }
  });

  it('gives up opening a connection to a server that never answers after DB_CONNECT_TIMEOUT_MS', async () => {
    // A TCP server that accepts and then says nothing, like a host that swallows packets.
    const sockets: Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    const db = createSequelize(
      `postgres://nobody@127.0.0.1:${port}/none`,
      { max: 1, min: 0, acquire: 60_000, idle: 1000, evict: 1000 },
      'x',
      undefined,
      300,
    );
    const started = Date.now();
    try {
      const err = await db.query('SELECT 1').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      // A connection error (the API maps it to 503), within the connect timeout, not the 60 s acquire timeout.
      expect(isConnectionError(err)).toBe(true);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await db.close().catch(() => undefined);
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});
