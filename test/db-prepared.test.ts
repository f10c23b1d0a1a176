import { Sequelize } from 'sequelize';
import { prepare, queryPrepared } from '../services/kernel/db-prepared.js';
import { APP_NAME_PREPARED, poolUsage } from '../services/kernel/db.js';
import { campaignOutlooks } from '../services/scheduler/sql/claim-many.js';
import type { EngineCore } from '../src/engine.js';
import { createTestDatabase, createTestEngineCore, plainSequelize, rows } from './helpers/db.js';
import { until } from './helpers/scheduler.js';

/**
 * The send path's named prepared statements (kernel/db-prepared.ts) on a real server: parsed once
 * per connection, prepared again on a new connection after one is lost, and after the server forgot
 * the statement (26000) or the schema changed its result (0A000), without the caller seeing either.
 */
describe('prepared statements', () => {
  let url: string;
  let db: Sequelize;
  let admin: Sequelize;
  beforeAll(async () => {
    url = await createTestDatabase();
    admin = plainSequelize(url);
    await admin.query('CREATE TABLE prep_t (id int PRIMARY KEY, v text)');
    await admin.query(`INSERT INTO prep_t VALUES (1, 'one'), (2, 'two'), (3, 'three')`);
  });
  beforeEach(() => {
    // One connection: every statement of a test runs on the same server session, until it is lost.
    db = new Sequelize(url, { logging: false, pool: { max: 1 } });
  });
  afterEach(() => db.close());
  afterAll(() => admin.close());

  /** The prepared statements of the session the pool's one connection has (read on that connection). */
  async function serverStatements(): Promise<{ pid: number; names: string[] }> {
    const cm = db.connectionManager as unknown as { getConnection(): Promise<unknown>; releaseConnection(c: unknown): void };
    const c = (await cm.getConnection()) as { query(sql: string): Promise<{ rows: { pid: number; names: string[] | null }[] }> };
    try {
      const r = await c.query(
        'SELECT pg_backend_pid() AS pid, (SELECT array_agg(name ORDER BY name) FROM pg_prepared_statements) AS names',
      );
      return { pid: r.rows[0]!.pid, names: r.rows[0]!.names ?? [] };
    } finally {
      cm.releaseConnection(c);
    }
  }

  it('turns $name binds into positional ones, a repeated name into the same one, and refuses a name reused for another text', () => {
    const s = prepare('test_positional', 'SELECT $a::int + $b::int + $a::int AS n');
    expect(s.text).toBe('SELECT $1::int + $2::int + $1::int AS n');
    expect(s.params).toEqual(['a', 'b']);
    expect(prepare('test_positional', 'SELECT $a::int + $b::int + $a::int AS n')).toEqual(s);
    expect(() => prepare('test_positional', 'SELECT $a::int AS n')).toThrow(/two different statements/);
  });

  it('is parsed once per connection, and prepared again on a new connection after the old one is lost', async () => {
    const byId = prepare('test_by_id', 'SELECT v FROM prep_t WHERE id = $id');
    expect(await queryPrepared(db, byId, { id: 2 })).toEqual([{ v: 'two' }]);
    expect(await queryPrepared(db, byId, { id: 3 })).toEqual([{ v: 'three' }]);
    const before = await serverStatements();
    expect(before.names).toEqual(['test_by_id']);

    await admin.query('SELECT pg_terminate_backend($pid)', { bind: { pid: before.pid } });
    // The pool drops the connection when its client hears of the termination.
    await until(() => poolUsage(db).size === 0, 10_000, 'the lost connection to leave the pool');

    expect(await queryPrepared(db, byId, { id: 1 })).toEqual([{ v: 'one' }]);
    const after = await serverStatements();
    expect(after.pid).not.toBe(before.pid);
    expect(after.names).toEqual(['test_by_id']);
  });

  it('prepares again when the server session forgot the statement (26000: DEALLOCATE ALL, or a pooler that switched sessions)', async () => {
    const byId = prepare('test_forgotten', 'SELECT v FROM prep_t WHERE id = $id');
    expect(await queryPrepared(db, byId, { id: 1 })).toEqual([{ v: 'one' }]);
    const { pid } = await serverStatements();
    // Behind the driver's back: pg still believes the statement is parsed on this connection.
    await db.query('DEALLOCATE ALL');
    expect((await serverStatements()).names).toEqual([]);

    expect(await queryPrepared(db, byId, { id: 3 })).toEqual([{ v: 'three' }]);
    const now = await serverStatements();
    expect(now).toEqual({ pid, names: ['test_forgotten'] });
  });

  it('prepares again when a schema change altered the result type (0A000), and returns the new columns', async () => {
    await admin.query('CREATE TABLE prep_s (id int PRIMARY KEY, v text)');
    await admin.query(`INSERT INTO prep_s VALUES (1, 'one')`);
    const all = prepare('test_schema', 'SELECT * FROM prep_s WHERE id = $id');
    expect(await queryPrepared(db, all, { id: 1 })).toEqual([{ id: 1, v: 'one' }]);
    await admin.query(`ALTER TABLE prep_s ADD COLUMN w text NOT NULL DEFAULT 'w'`);

    expect(await queryPrepared(db, all, { id: 1 })).toEqual([{ id: 1, v: 'one', w: 'w' }]);
    expect((await serverStatements()).names).toEqual(['test_schema']);
  });

  it("fails as db.query fails (Sequelize's DatabaseError with pg's code), without a retry, and gives the connection back", async () => {
    const div = prepare('test_div', 'SELECT 1 / $d::int AS q');
    const err = (await queryPrepared(db, div, { d: 0 }).catch((e: unknown) => e)) as {
      name: string;
      original?: { code?: string };
      sql?: string;
    };
    expect(err.name).toBe('SequelizeDatabaseError');
    expect(err.original?.code).toBe('22012');
    expect(err.sql).toBe(div.text);
    expect(poolUsage(db).using).toBe(0);
    expect(await queryPrepared(db, div, { d: 1 })).toEqual([{ q: 1 }]);
    await expect(queryPrepared(db, div, {})).rejects.toThrow(/no value for \$d/);
  });

  it('writes what the statement says: one row inserted per call, the same statement reused', async () => {
    await admin.query('CREATE TABLE prep_w (id int PRIMARY KEY, v text)');
    const ins = prepare('test_insert', 'INSERT INTO prep_w (id, v) VALUES ($id, $v) RETURNING id');
    for (let i = 1; i <= 8; i++) expect(await queryPrepared(db, ins, { id: i, v: `v${i}` })).toEqual([{ id: i }]);
    expect(await rows(admin, 'SELECT count(*)::int AS n, max(v) AS m FROM prep_w')).toEqual([{ n: 8, m: 'v8' }]);
    expect((await serverStatements()).names).toEqual(['test_insert']);
  });
});

/**
 * The engine runs the scheduler's prepared statements on a pool of their own whose sessions force
 * generic plans (kernel/db.ts, APP_NAME_PREPARED), and its other statements on the scheduler pool,
 * where PostgreSQL chooses. Read back from the server: the session settings, and per statement how
 * many generic and custom plans it was given (pg_prepared_statements, PostgreSQL 14 and later).
 */
describe("the engine's pool for prepared statements", () => {
  let core: EngineCore;
  beforeAll(async () => {
    // One connection a pool: each pool's statements run on one server session.
    core = await createTestEngineCore({ schedulerPoolMax: 1, schedulerPoolMin: 0 });
  });
  afterAll(() => core.close());

  const session = prepare(
    'test_session_settings',
    `SELECT current_setting('plan_cache_mode') AS mode, current_setting('application_name') AS app`,
  );
  const plans = prepare(
    'test_plan_counts',
    'SELECT name, generic_plans::int AS generic, custom_plans::int AS custom FROM pg_prepared_statements WHERE name = $name',
  );

  it('runs them on a session of its own, with generic plans forced; the scheduler pool keeps the default', async () => {
    expect(await queryPrepared(core.schedulerDb, session, {})).toEqual([{ mode: 'force_generic_plan', app: APP_NAME_PREPARED }]);
    expect(
      await rows(core.schedulerDb, `SELECT current_setting('plan_cache_mode') AS mode, current_setting('application_name') AS app`),
    ).toEqual([{ mode: 'auto', app: 'fairsend-scheduler' }]);
    expect(core.pools().prepared).toMatchObject({ max: 1, using: 0 });
  });

  it('gives a hot statement one generic plan from its first call, where the default makes five custom ones first', async () => {
    for (let i = 0; i < 6; i++) expect((await campaignOutlooks(core.schedulerDb, [1, 2, 3])).size).toBe(3);
    expect(await queryPrepared(core.schedulerDb, plans, { name: 'fs_campaign_outlooks' })).toEqual([
      { name: 'fs_campaign_outlooks', generic: 6, custom: 0 },
    ]);
    // The same statements on a plain pool (no prepared pool attached): PostgreSQL's default.
    const plain = new Sequelize(core.databaseUrl, { logging: false, pool: { max: 1 } });
    try {
      for (let i = 0; i < 6; i++) await campaignOutlooks(plain, [1, 2, 3]);
      const [counts] = await queryPrepared<{ custom: number }>(plain, plans, { name: 'fs_campaign_outlooks' });
      expect(counts!.custom).toBeGreaterThanOrEqual(5);
    } finally {
      await plain.close();
    }
  });
});
