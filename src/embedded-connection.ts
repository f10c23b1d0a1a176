/**
 * The connection file of a running embedded PostgreSQL: `<EMBEDDED_PG_DIR>/fairsend-connection.json`,
 * readable by its owner only (mode 0600), written when the engine starts the cluster and removed
 * when it stops it. The CLI reads it to work on the database of a running `npm start` without
 * starting a second cluster or asking for a password.
 */
import { readFile, rm, writeFile, chmod } from 'node:fs/promises';
import { resolve } from 'node:path';

export const CONNECTION_FILE = 'fairsend-connection.json';

export interface EmbeddedConnection {
  url: string;
  port: number;
  /** The postmaster's process id when the file was written. */
  postmasterPid: number;
  startedAt: string;
}

async function postmasterPid(dataDir: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(resolve(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function writeConnectionFile(dataDir: string, c: { url: string; port: number }): Promise<void> {
  const pid = await postmasterPid(dataDir);
  if (pid === undefined) return;
  const file = resolve(dataDir, CONNECTION_FILE);
  const body: EmbeddedConnection = { url: c.url, port: c.port, postmasterPid: pid, startedAt: new Date().toISOString() };
  await writeFile(file, JSON.stringify(body, null, 2) + '\n', { mode: 0o600 });
  await chmod(file, 0o600); // an existing file keeps its mode on writeFile
}

export async function removeConnectionFile(dataDir: string): Promise<void> {
  await rm(resolve(dataDir, CONNECTION_FILE), { force: true });
}

/** The running cluster on `dataDir`, if its connection file names the postmaster that runs there now. */
export async function findRunningEmbedded(dataDir: string): Promise<EmbeddedConnection | undefined> {
  let c: EmbeddedConnection;
  try {
    c = JSON.parse(await readFile(resolve(dataDir, CONNECTION_FILE), 'utf8')) as EmbeddedConnection;
  } catch {
    return undefined;
  }
  const pid = await postmasterPid(dataDir);
  if (pid === undefined || pid !== c.postmasterPid || !alive(pid) || typeof c.url !== 'string') return undefined;
  return c;
}
