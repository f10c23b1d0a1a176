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

  it('run through sequelize-cli (db:migrate, db:seed:all, db:migrate:undo:all) against DATABASE_URL', async () => {
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
    expect(await tables(url)).toEqual(['SequelizeData', 'SequelizeMeta']);
  });
});
