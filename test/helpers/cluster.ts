/**
 * Shared by global setup, teardown and the test files: where the test cluster is and what this
 * run's template database is called. Global setup publishes them through environment variables,
 * which jest's workers inherit.
 */
import pg from 'pg';

export const ENV_ADMIN_URL = 'FAIRSEND_TEST_ADMIN_URL';
export const ENV_TEMPLATE_DB = 'FAIRSEND_TEST_TEMPLATE_DB';
export const ENV_RUN_ID = 'FAIRSEND_TEST_RUN_ID';
export const TEST_DB_PREFIX = 'fairsend_t_';

/** URL of `database` on the test cluster. */
export function databaseUrl(database: string): string {
  const admin = process.env[ENV_ADMIN_URL];
  if (!admin) throw new Error(`${ENV_ADMIN_URL} is not set: run the tests with \`npm test\``);
  const u = new URL(admin);
  u.pathname = `/${database}`;
  return u.toString();
}

export async function withAdminClient<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: process.env[ENV_ADMIN_URL] });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
