import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { migrationsDir } from '../src/paths.js';
import { migrateDownAll, migrateUp, seedAll } from '../src/migrator.js';
import { createEmptyDatabase, plainSequelize } from './helpers/db.js';

const run = promisify(execFile);

async function tables(url: string): Promise<string[]> {
  const s = plainSequelize(url);
  try {
    const [rows] = await s.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`);
    return (rows as { tablename: string }[]).map((r) => r.tablename);
  } finally {
    await s.close();
  }
}

const SCHEMA = [
  'contacts',
  'delivery_counts',
  'email_services',
  'error_logs',
  'quota_holds',
  'scheduler_instances',
  'subtasks',
  'tasks',
  'templates',
  'user_services',
  'users',
];

describe('migrations', () => {
  it('go up, all the way down, and up again', async () => {
    const url = await createEmptyDatabase();
    const s = plainSequelize(url);
    try {
      expect((await migrateUp(s)).length).toBeGreaterThan(0);
      expect(await tables(url)).toEqual(expect.arrayContaining(SCHEMA));
      expect(await migrateUp(s)).toEqual([]); // idempotent
      await migrateDownAll(s);
      expect(await tables(url)).toEqual(['SequelizeMeta']);
      await migrateUp(s);
      expect(await tables(url)).toEqual(expect.arrayContaining(SCHEMA));
    } finally {
      await s.close();
    }
  });

  it('load the demo data set: three users, three services, three campaigns of different sizes', async () => {
    const url = await createEmptyDatabase();
    const s = plainSequelize(url);
    try {
      await migrateUp(s);
      await seedAll(s);
      const [[counts]] = (await s.query(
        `SELECT (SELECT count(*) FROM users)::int AS users, (SELECT count(*) FROM email_services)::int AS services,
                (SELECT count(*) FROM contacts)::int AS contacts, (SELECT count(*) FROM tasks)::int AS tasks,
                (SELECT count(DISTINCT sending_rate)::int FROM email_services) AS rates`,
      )) as unknown as [[Record<string, number>]];
      expect(counts).toEqual({ users: 3, services: 3, contacts: 332, tasks: 3, rates: 3 });
      const [sizes] = (await s.query(`SELECT reserved_quota FROM tasks ORDER BY reserved_quota DESC`)) as [
        { reserved_quota: number }[],
        unknown,
      ];
      const [big, mid, small] = sizes.map((r) => r.reserved_quota);
      expect(big!).toBeGreaterThan(10 * small!);
      expect(mid!).toBeGreaterThan(small!);
    } finally {
      await s.close();
    }
  });

  it('run through sequelize-cli (db:migrate, db:seed:all, db:migrate:undo:all, then again) against DATABASE_URL', async () => {
    const url = await createEmptyDatabase();
    const env = { ...process.env, DATABASE_URL: url };
    const cli = (...args: string[]) => run('npx', ['sequelize-cli', ...args], { env, cwd: process.cwd() });
    await cli('db:migrate');
    expect(await tables(url)).toEqual(expect.arrayContaining(SCHEMA));
    await cli('db:seed:all');
    const s = plainSequelize(url);
    try {
      const [rows] = await s.query('SELECT name FROM "SequelizeMeta"');
      // Same file names (with extension) as the engine's own runner records.
      const files = readdirSync(migrationsDir)
        .filter((f) => f.endsWith('.cjs'))
        .sort();
      expect(files[0]).toBe('20261123000100-initial-schema.cjs');
      expect(rows).toEqual(files.map((name) => ({ name })));
      const [[{ n }]] = (await s.query('SELECT count(*)::int AS n FROM users')) as unknown as [[{ n: number }]];
      expect(n).toBe(3);
      expect(await migrateUp(s)).toEqual([]); // the engine sees the CLI's migrations as done
    } finally {
      await s.close();
    }
    await cli('db:migrate:undo:all');
    // Every table is gone, and so are the seeders' records of rows that no longer exist.
    expect(await tables(url)).toEqual(['SequelizeMeta']);

    // A second round: db:seed:all seeds again (it used to find the demo data recorded and skip it).
    await cli('db:migrate');
    await cli('db:seed:all');
    const again = plainSequelize(url);
    try {
      const [[counts]] = (await again.query(
        `SELECT (SELECT count(*) FROM users)::int AS users, (SELECT count(*) FROM email_services)::int AS services,
                (SELECT count(*) FROM contacts)::int AS contacts, (SELECT count(*) FROM tasks)::int AS tasks`,
      )) as unknown as [[Record<string, number>]];
      expect(counts).toEqual({ users: 3, services: 3, contacts: 332, tasks: 3 });
      const [seeded] = await again.query('SELECT name FROM "SequelizeData"');
      expect(seeded).toEqual([{ name: '20261123000100-demo-data.cjs' }]);
      const [emails] = (await again.query('SELECT email FROM users ORDER BY id')) as [{ email: string }[], unknown];
      expect(emails.map((r) => r.email)).toContain('alice@demo.fairsend.test');
      // A third seed:all is a no-op: the record is back.
      await cli('db:seed:all');
      const [[{ n }]] = (await again.query('SELECT count(*)::int AS n FROM users')) as unknown as [[{ n: number }]];
      expect(n).toBe(3);
    } finally {
      await again.close();
    }
  });

  it("seed again after the engine's own migrateDownAll and migrateUp", async () => {
    const url = await createEmptyDatabase();
    const s = plainSequelize(url);
    try {
      await migrateUp(s);
      expect(await seedAll(s)).toEqual(['20261123000100-demo-data.cjs']);
      await migrateDownAll(s);
      expect(await tables(url)).toEqual(['SequelizeMeta']);
      await migrateUp(s);
      expect(await seedAll(s)).toEqual(['20261123000100-demo-data.cjs']);
      const [[{ n }]] = (await s.query('SELECT count(*)::int AS n FROM users')) as unknown as [[{ n: number }]];
      expect(n).toBe(3);
    } finally {
      await s.close();
    }
  });
});
