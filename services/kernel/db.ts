/**
 * Separate Sequelize instances and pools: one for the API side, one for the scheduler side (and a
 * third for the scheduler's prepared statements, below).
 * The original system shared one pool between web requests and a task queue polling every 5 s;
 * the queue held every connection and logins timed out (../shared/seeds/000). Here the
 * scheduler can exhaust only its own budget. Each pool sets its own `application_name`, so
 * `pg_stat_activity` tells them apart (and the maintenance jobs can find fairsend's sessions).
 */
import { Sequelize, type Options } from 'sequelize';
import type { Config } from './config.js';
import type { Logger } from './logger.js';

export const APP_NAME_API = 'fairsend-api';
export const APP_NAME_SCHEDULER = 'fairsend-scheduler';
/**
 * The scheduler's prepared statements (the claims, the outcome write, the quota reservation:
 * db-prepared.ts) run on a pool of their own whose sessions force generic plans. PostgreSQL keeps a
 * custom plan, made again on every call, when the generic one looks much dearer, and for these
 * statements it always does: a generic plan counts about 100 elements for each array parameter
 * where a call carries a handful. With 30,000 campaign rows that estimate makes the index probes
 * look dear, and the outcome write was planned on every call (0.36 ms of bind against 0.06;
 * docs/performance.md, W4). Their shape does not depend on the values, so one generic plan per
 * session is right for them. Not for the scheduler's other statements, unnamed and run once each
 * (generation's INSERT ... SELECT, the reads of 30,000 campaigns by unnest): a generic plan would
 * plan those blind, so they stay on the scheduler pool, where PostgreSQL chooses.
 */
export const APP_NAME_PREPARED = 'fairsend-prepared';

/** Settings a pool applies to each of its sessions, once, right after connecting. */
export interface SessionSettings {
  /** PostgreSQL's plan_cache_mode (12 and later). */
  planCacheMode?: 'auto' | 'force_generic_plan' | 'force_custom_plan';
}

export interface PoolSettings {
  max: number;
  min: number;
  acquire: number;
  idle: number;
  evict: number;
}

export function poolSettings(config: Config, side: 'api' | 'scheduler'): PoolSettings {
  return side === 'api'
    ? {
        max: config.apiPoolMax,
        min: config.apiPoolMin,
        acquire: config.apiPoolAcquireMs,
        idle: config.apiPoolIdleMs,
        evict: config.apiPoolEvictMs,
      }
    : {
        max: config.schedulerPoolMax,
        min: config.schedulerPoolMin,
        acquire: config.schedulerPoolAcquireMs,
        idle: config.schedulerPoolIdleMs,
        evict: config.schedulerPoolEvictMs,
      };
}

export function createSequelize(
  url: string,
  pool: PoolSettings,
  applicationName: string,
  logger?: Logger,
  connectTimeoutMs = 5000,
  session: SessionSettings = {},
): Sequelize {
  const mode = session.planCacheMode;
  const options: Options = {
    dialect: 'postgres',
    pool,
    logging: logger ? (sql: string) => logger.trace({ sql, pool: applicationName }) : false,
    // A host that drops packets would otherwise hold a request until the pool's acquire timeout
    // (60 s); keepAlive lets the kernel notice a peer that vanished under an idle connection.
    dialectOptions: { application_name: applicationName, connectionTimeoutMillis: connectTimeoutMs, keepAlive: true },
    define: { underscored: true },
    // BIGINT counts come back as strings from pg; fairsend's counts fit in a JS number.
    benchmark: false,
    ...(mode && {
      hooks: {
        // Awaited before the pool hands the connection out.
        afterConnect: async (connection: unknown) => {
          const client = connection as { query(sql: string): Promise<unknown>; end(): Promise<void> };
          // A failed SET (PostgreSQL before 12) fails the connect; the session is closed, not leaked.
          await client.query(`SET plan_cache_mode = ${mode}`).catch(async (err: unknown) => {
            await client.end().catch(() => undefined);
            throw err;
          });
        },
      },
    }),
  };
  return new Sequelize(url, options);
}

/** Live usage of a Sequelize pool (sequelize-pool's counters), for status and metrics. */
export function poolUsage(sequelize: Sequelize): { size: number; available: number; using: number; waiting: number; max: number } {
  const pool = (
    sequelize.connectionManager as unknown as { pool: { size: number; available: number; using: number; waiting: number; maxSize: number } }
  ).pool;
  return { size: pool.size, available: pool.available, using: pool.using, waiting: pool.waiting, max: pool.maxSize };
}

/**
 * Sequelize's errors for a connection that could not be made or was lost, by name (under jest the
 * classes may come from another realm).
 */
const CONNECTION_ERRORS = new Set([
  'SequelizeConnectionError',
  'SequelizeConnectionRefusedError',
  'SequelizeConnectionTimedOutError',
  'SequelizeConnectionAcquireTimeoutError',
  'SequelizeHostNotFoundError',
  'SequelizeHostNotReachableError',
  'SequelizeInvalidConnectionError',
]);
/** PostgreSQL going away (class 08, shutting down, crashed, starting up, full) and socket errors. */
const CONNECTION_CODES = new Set(['57P01', '57P02', '57P03', '53300', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH']);
const CONNECTION_LOST = /Connection terminated|not queryable|ECONNREFUSED|ECONNRESET|EPIPE|connection timeout/i;

/**
 * True when `err` says the database cannot be reached right now (stopped, restarting, refusing or
 * dropping connections), as opposed to a query that failed: the HTTP API answers 503 for these,
 * and the scheduler logs them once per outage instead of once per failed step.
 */
export function isConnectionError(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as {
    name?: unknown;
    message?: unknown;
    code?: unknown;
    original?: { code?: unknown; message?: unknown };
    parent?: { code?: unknown };
  };
  const name = typeof e.name === 'string' ? e.name : '';
  if (CONNECTION_ERRORS.has(name)) return true;
  const code = [e.original?.code, e.parent?.code, e.code].find((c): c is string => typeof c === 'string') ?? '';
  if (code.startsWith('08') || CONNECTION_CODES.has(code)) return true;
  const message = `${typeof e.message === 'string' ? e.message : ''} ${typeof e.original?.message === 'string' ? e.original.message : ''}`;
  return (name === 'Error' || name.startsWith('Sequelize')) && CONNECTION_LOST.test(message);
}
