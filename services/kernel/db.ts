/**
 * Two Sequelize instances, two pools: one for the API side, one for the scheduler side.
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
): Sequelize {
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
