import { randomBytes } from 'node:crypto';
import { Sequelize } from 'sequelize';
import { createEngine, createEngineCore, type Engine, type EngineCore, type EngineOptions } from '../../src/engine.js';
import { createLogger } from '../../services/kernel/logger.js';
import { ENV_RUN_ID, ENV_TEMPLATE_DB, TEST_DB_PREFIX, databaseUrl, withAdminClient } from './cluster.js';

function newName(): string {
  return `${TEST_DB_PREFIX}${process.env[ENV_RUN_ID]}_${randomBytes(4).toString('hex')}`;
}

/** A fresh, migrated database cloned from this run's template; returns its URL. */
export async function createTestDatabase(): Promise<string> {
  const name = newName();
  await withAdminClient((c) => c.query(`CREATE DATABASE "${name}" TEMPLATE "${process.env[ENV_TEMPLATE_DB]}"`));
  return databaseUrl(name);
}

/** A fresh database with nothing in it (for migration tests). */
export async function createEmptyDatabase(): Promise<string> {
  const name = newName();
  await withAdminClient((c) => c.query(`CREATE DATABASE "${name}"`));
  return databaseUrl(name);
}

export function plainSequelize(url: string): Sequelize {
  return new Sequelize(url, { logging: false, pool: { max: 3 } });
}

export const silentLogger = createLogger('silent');

/** The secret key test engines use unless a test names another (FAIRSEND_SECRET_KEY). */
export const TEST_SECRET_KEY = Buffer.alloc(32, 7).toString('base64');

/** An engine core on a fresh database with a silent logger. */
export async function createTestEngineCore(options: EngineOptions = {}): Promise<EngineCore> {
  const databaseUrl = options.databaseUrl ?? (await createTestDatabase());
  return createEngineCore({ logger: silentLogger, env: testEnv(), secretKey: TEST_SECRET_KEY, ...options, databaseUrl });
}

/**
 * The environment test engines read: none of the machine's, except SEND_WORKERS, so the suite
 * runs with the SMTP work on worker threads or on the main thread (SEND_WORKERS=1 npm test).
 */
function testEnv(): NodeJS.ProcessEnv {
  return process.env.SEND_WORKERS !== undefined ? { SEND_WORKERS: process.env.SEND_WORKERS } : {};
}

/** The full engine (programmatic API) on a fresh database with a silent logger. */
export async function createTestEngine(options: EngineOptions = {}): Promise<Engine> {
  const databaseUrl = options.databaseUrl ?? (await createTestDatabase());
  return createEngine({ logger: silentLogger, env: testEnv(), secretKey: TEST_SECRET_KEY, ...options, databaseUrl });
}

/** Runs a query and returns its rows. */
export async function rows<T = Record<string, unknown>>(db: Sequelize, sql: string, bind?: Record<string, unknown>): Promise<T[]> {
  const [r] = await db.query(sql, bind ? { bind } : {});
  return r as T[];
}

/** A node of an EXPLAIN (ANALYZE, FORMAT JSON) plan. */
export interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Actual Rows'?: number;
  Plans?: PlanNode[];
}

/** Runs `sql` under EXPLAIN (ANALYZE, FORMAT JSON) and returns every node of its plan, root first. */
export async function explainNodes(db: Sequelize, sql: string, bind?: Record<string, unknown>): Promise<PlanNode[]> {
  const [plan] = await rows<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(db, `EXPLAIN (ANALYZE, FORMAT JSON) ${sql}`, bind);
  const flat = (n: PlanNode): PlanNode[] => [n, ...(n.Plans ?? []).flatMap(flat)];
  return flat(plan!['QUERY PLAN'][0]!.Plan);
}
