import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sequelize } from 'sequelize';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../../src/embedded-postgres.js';
import { migrateUp } from '../../src/migrator.js';
import { ENV_ADMIN_URL, ENV_RUN_ID, ENV_TEMPLATE_DB, TEST_DB_PREFIX, databaseUrl, withAdminClient } from './cluster.js';

export interface TestCluster {
  embedded?: EmbeddedPostgresHandle;
  dir?: string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function setUpTestCluster(): Promise<TestCluster> {
  const runId = `${Date.now().toString(36)}${process.pid.toString(36)}`;
  process.env[ENV_RUN_ID] = runId;
  const cluster: TestCluster = {};
  if (process.env.DATABASE_URL) {
    process.env[ENV_ADMIN_URL] = process.env.DATABASE_URL;
  } else {
    cluster.dir = await mkdtemp(join(tmpdir(), 'fairsend-test-pg-'));
    // PostgreSQL runs as the postgres user when we are root: it must be able to enter the folder.
    await chmod(cluster.dir, 0o755);
    const port = await freePort();
    cluster.embedded = await startEmbeddedPostgres({ dataDir: join(cluster.dir, 'data'), port });
    process.env[ENV_ADMIN_URL] = cluster.embedded.url('postgres');
  }
  const template = `${TEST_DB_PREFIX}${runId}_template`;
  process.env[ENV_TEMPLATE_DB] = template;
  const version = await withAdminClient(async (c) => {
    const { rows } = await c.query<{ v: string }>("SELECT current_setting('server_version') AS v");
    await c.query(`CREATE DATABASE "${template}"`);
    return rows[0]!.v;
  });
  console.log(`\n[fairsend tests] PostgreSQL ${version} (${cluster.embedded ? 'embedded' : 'DATABASE_URL'})`);
  const sequelize = new Sequelize(databaseUrl(template), { logging: false });
  try {
    await migrateUp(sequelize);
  } finally {
    await sequelize.close();
  }
  return cluster;
}

/**
 * Drops this run's databases (set FAIRSEND_KEEP_TEST_DBS=1 to keep them for inspection) and
 * stops the embedded cluster.
 */
export async function tearDownTestCluster(cluster: TestCluster | undefined): Promise<void> {
  if (!process.env.FAIRSEND_KEEP_TEST_DBS) {
    await withAdminClient(async (c) => {
      const { rows } = await c.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [
        `${TEST_DB_PREFIX}${process.env[ENV_RUN_ID]}%`,
      ]);
      for (const { datname } of rows) await c.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
    });
  }
  await cluster?.embedded?.stop();
  if (cluster?.dir && !process.env.FAIRSEND_KEEP_TEST_DBS) await rm(cluster.dir, { recursive: true, force: true });
}
