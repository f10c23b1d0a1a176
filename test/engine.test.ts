import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngineCore } from '../src/engine.js';
import { ConfigError } from '../services/kernel/errors.js';
import { freePort } from './helpers/test-cluster.js';
import { silentLogger } from './helpers/db.js';

describe('engine start-up', () => {
  it('without DATABASE_URL, starts an embedded PostgreSQL in the data folder, migrates, and stops it on close', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fairsend-embedded-'));
    await chmod(dir, 0o755);
    const port = await freePort();
    const env = { EMBEDDED_PG_DIR: join(dir, 'pg'), EMBEDDED_PG_PORT: String(port) };
    try {
      const engine = await createEngineCore({ env, logger: silentLogger });
      expect(engine.embedded).toBe(true);
      expect(engine.databaseLabel).toContain(`127.0.0.1:${port}`);
      const [[row]] = (await engine.apiDb.query(
        `SELECT current_setting('server_version_num')::int AS v, (SELECT count(*)::int FROM "SequelizeMeta") AS migrations`,
      )) as unknown as [[{ v: number; migrations: number }]];
      expect(row.v).toBeGreaterThanOrEqual(180000);
      expect(row.migrations).toBeGreaterThan(0);
      await engine.close();
      // The cluster is gone: a new connection is refused.
      const pg = await import('pg');
      const c = new pg.default.Client({ host: '127.0.0.1', port, user: 'postgres', password: 'x', database: 'postgres' });
      await expect(c.connect()).rejects.toThrow(/ECONNREFUSED/);

      // A second start reuses the same folder and data.
      const again = await createEngineCore({ env, logger: silentLogger });
      expect(await again.models.User.count()).toBe(0);
      await again.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start on a bad configuration value, naming it', async () => {
    await expect(createEngineCore({ env: { SCHEDULER_POOL_MAX: '-3' }, logger: silentLogger })).rejects.toThrow(
      new ConfigError([{ path: 'SCHEDULER_POOL_MAX', message: 'SCHEDULER_POOL_MAX must be a positive integer, got "-3"' }]),
    );
  });
});
