/**
 * A database of the benchmark's own: a fresh one on DATABASE_URL's server when set, otherwise a
 * fresh embedded PostgreSQL in a temporary folder. Dropped (or the cluster removed) at the end.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../src/embedded-postgres.js';
import { clusterPostgresPids, serverPostgresPids, type PidSource } from './procs.js';

export interface BenchDatabase {
  url: string;
  /** The database's name (a template for newDatabase's copies, once no one is connected to it). */
  name: string;
  label: string;
  drop(): Promise<void>;
}

/**
 * A server to make several fresh databases on (one per measured run): DATABASE_URL's server, or
 * one fresh embedded cluster for the whole workload (initdb costs seconds; a database, a fraction
 * of one). `postgresPids` finds the processes whose CPU is PostgreSQL's.
 */
export interface BenchServer {
  label: string;
  /** 'server': DATABASE_URL's; 'embedded': a cluster of the benchmark's own. */
  kind: 'server' | 'embedded';
  /** A fresh database; with `template`, a copy of that database (CREATE DATABASE ... TEMPLATE: a file copy, no re-seeding). */
  newDatabase(name: string, template?: string): Promise<BenchDatabase>;
  postgresPids(exclude: () => number[]): PidSource;
  version(): Promise<string>;
  close(): Promise<void>;
}

/** A TCP port free on 127.0.0.1 now (for a server the bench starts: PostgreSQL, Redis). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Runs `fn` on a connection of its own to `url`, closed after. */
export async function admin<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function createBenchDatabase(name = 'bench'): Promise<BenchDatabase> {
  const db = `fairsend_${name}_${Date.now().toString(36)}`;
  if (process.env.DATABASE_URL) {
    const base = process.env.DATABASE_URL;
    await admin(base, (c) => c.query(`CREATE DATABASE "${db}"`));
    const u = new URL(base);
    u.pathname = `/${db}`;
    return {
      url: u.toString(),
      name: db,
      label: `PostgreSQL at ${u.host}`,
      drop: () => admin(base, (c) => c.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`)).then(() => undefined),
    };
  }
  const dir = await mkdtemp(join(tmpdir(), 'fairsend-bench-'));
  await chmod(dir, 0o755);
  const embedded = await startEmbeddedPostgres({ dataDir: join(dir, 'pg'), port: await freePort() });
  await admin(embedded.url(), (c) => c.query(`CREATE DATABASE "${db}"`));
  return {
    url: embedded.url(db),
    name: db,
    label: 'embedded PostgreSQL',
    drop: async () => {
      await embedded.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function databaseOn(base: string, db: string, label: string): BenchDatabase {
  const u = new URL(base);
  u.pathname = `/${db}`;
  return {
    url: u.toString(),
    name: db,
    label,
    drop: () => admin(base, (c) => c.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`)).then(() => undefined),
  };
}

let seq = 0;

export async function createBenchServer(workload: string): Promise<BenchServer> {
  const unique = (name: string) => `fairsend_${workload}_${name}_${Date.now().toString(36)}${(seq++).toString(36)}`.toLowerCase();
  const make = (base: string, label: string) => async (name: string, template?: string) => {
    const db = unique(name);
    await admin(base, (c) => c.query(`CREATE DATABASE "${db}"${template ? ` TEMPLATE "${template}"` : ''}`));
    return databaseOn(base, db, label);
  };
  const version = (base: string) => () => admin(base, async (c) => (await c.query<{ v: string }>('SELECT version() AS v')).rows[0]!.v);
  if (process.env.DATABASE_URL) {
    const base = process.env.DATABASE_URL;
    const label = `PostgreSQL at ${new URL(base).host}`;
    return {
      label,
      kind: 'server',
      newDatabase: make(base, label),
      postgresPids: (exclude) => serverPostgresPids(exclude),
      version: version(base),
      close: async () => undefined,
    };
  }
  const dir = await mkdtemp(join(tmpdir(), 'fairsend-bench-'));
  await chmod(dir, 0o755);
  const dataDir = join(dir, 'pg');
  const embedded = await startEmbeddedPostgres({ dataDir, port: await freePort() });
  const base = embedded.url();
  return {
    label: 'embedded PostgreSQL',
    kind: 'embedded',
    newDatabase: make(base, 'embedded PostgreSQL'),
    postgresPids: () => clusterPostgresPids(dataDir),
    version: version(base),
    close: async () => {
      await embedded.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
