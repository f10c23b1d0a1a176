/**
 * `npm start` (src/main.ts) stops cleanly and promptly on Ctrl-C in a real terminal, where the
 * terminal signals the whole process group, the embedded PostgreSQL included; and on SIGTERM or
 * SIGINT to the group or to the node process alone. The pseudo-terminal is util-linux's `script`:
 * writing ^C (0x03) to its input makes the terminal's line discipline send SIGINT to the
 * foreground process group, exactly as a keyboard does. After each stop: exit code 0, no
 * PostgreSQL left on the data folder, the HTTP and SMTP catcher ports free again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/index.js';

/** Output without the terminal's colour codes. */
const ANSI_COLOUR = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');
const plain = (text: string) => text.replace(ANSI_COLOUR, '');

/** A hang detector, not a speed goal: a stuck shutdown waits forever, a clean one takes about a second. */
const STOP_DEADLINE_MS = 30_000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface Started {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  postmasterPid: number;
  pretty: boolean;
}

describe('npm start stops on Ctrl-C, SIGINT and SIGTERM', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let httpPort: number;
  let smtpPort: number;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fairsend-ctrl-c-'));
    await chmod(dir, 0o755); // as root, PostgreSQL runs as the postgres user and must reach its folder
    [httpPort, smtpPort] = [await freePort(), await freePort()];
    const pgPort = await freePort();
    env = { ...process.env, EMBEDDED_PG_DIR: join(dir, 'pg'), EMBEDDED_PG_PORT: String(pgPort) };
    env.PORT = String(httpPort);
    env.SMTP_CATCHER_PORT = String(smtpPort);
    env.LOG_LEVEL = 'info';
    delete env.DATABASE_URL;
    delete env.LOG_FORMAT; // auto: text in the pseudo-terminal, JSON into the pipes
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  /** Starts src/main.ts, in a pseudo-terminal or in its own process group, and waits for "fairsend ready". */
  async function start(how: 'pty' | 'group', until = 'fairsend ready'): Promise<Started> {
    const main = [process.execPath, '--import', 'tsx', 'src/main.ts'];
    // `exec`: script(1) runs the command through $SHELL -c; under dash (/bin/sh on Debian) the shell
    // stays as node's parent, takes the terminal's SIGINT itself and makes script exit 130.
    const proc =
      how === 'pty'
        ? spawn('script', ['-qfec', `exec ${main.join(' ')}`, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] })
        : spawn(main[0]!, main.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let text = '';
    proc.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (text += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      proc.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const deadline = Date.now() + 150_000;
    while (!plain(text).includes(until)) {
      if (proc.exitCode !== null || Date.now() > deadline) {
        // Never ready: stop what it started (the engine and its embedded PostgreSQL) before failing,
        // or they outlive the test run.
        if (proc.exitCode === null) {
          if (how === 'group') process.kill(-proc.pid!, 'SIGKILL');
          else proc.kill('SIGKILL');
        }
        const pid = await readFile(join(dir, 'pg', 'postmaster.pid'), 'utf8').then(
          (t) => Number(t.split('\n')[0]),
          () => 0,
        );
        if (pid > 0 && alive(pid)) process.kill(pid, 'SIGQUIT');
        throw new Error(`not ready:\n${text}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const pidFile = join(dir, 'pg', 'postmaster.pid');
    const postmasterPid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
    expect(alive(postmasterPid)).toBe(true);
    return { proc, output: () => plain(text), exited, postmasterPid, pretty: how === 'pty' };
  }

  async function expectCleanStop(s: Started): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      s.exited,
      new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), STOP_DEADLINE_MS))),
    ]);
    clearTimeout(timer);
    if (outcome === 'hung') {
      s.proc.kill('SIGKILL');
      if (alive(s.postmasterPid)) process.kill(s.postmasterPid, 'SIGQUIT');
    }
    if (outcome === 'hung' || outcome.code !== 0) throw new Error(`stop: ${JSON.stringify(outcome)}\n${s.output().slice(-3000)}`);
    expect(outcome).toEqual({ code: 0, signal: null });
    // Logs are readable text in the terminal (LOG_FORMAT=auto), JSON lines into a pipe; either way
    // the last line, written just before process.exit, is there.
    expect(s.output()).toMatch(s.pretty ? /\] INFO: stopped\r?\n/ : /"msg":"stopped"/);
    // The postmaster is gone, and so is its pid file (PostgreSQL removes it on a clean shutdown).
    expect(alive(s.postmasterPid)).toBe(false);
    expect(existsSync(join(dir, 'pg', 'postmaster.pid'))).toBe(false);
    expect(await portIsFree(httpPort)).toBe(true);
    expect(await portIsFree(smtpPort)).toBe(true);
  }

  it('Ctrl-C in a terminal (SIGINT to the whole process group, PostgreSQL included)', async () => {
    // Once the demo campaigns are sending (the first progress line), as a user would press it.
    const s = await start('pty', 'progress {"campaign":');
    s.proc.stdin!.write('\x03');
    await expectCleanStop(s);
    expect(s.output()).toMatch(/\] INFO: shutting down \{"signal":"SIGINT"\}/);
    expect(s.output()).not.toMatch(/^\{"level"/m); // no raw JSON on the terminal
  }, 240_000);

  it('SIGTERM to the process group', async () => {
    const s = await start('group');
    process.kill(-s.proc.pid!, 'SIGTERM');
    await expectCleanStop(s);
    expect(s.output()).toMatch(/"signal":"SIGTERM"/);
  }, 240_000);

  it('SIGINT to the node process alone (the engine stops PostgreSQL itself)', async () => {
    const s = await start('group');
    // Meanwhile the CLI finds the running cluster by its data folder: the connection file, readable
    // by its owner only, gives the port and password (a wrong EMBEDDED_PG_PORT proves it is used).
    const connectionFile = join(dir, 'pg', 'fairsend-connection.json');
    expect((await stat(connectionFile)).mode & 0o777).toBe(0o600);
    let out = '';
    let err = '';
    const sink = (add: (s: string) => void) =>
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          add(chunk.toString());
          cb();
        },
      });
    const code = await runCli(['node', 'fairsend', 'services', 'list'], {
      stdout: sink((x) => (out += x)),
      stderr: sink((x) => (err += x)),
      env: { EMBEDDED_PG_DIR: join(dir, 'pg'), EMBEDDED_PG_PORT: '1', LOG_LEVEL: 'silent' },
    });
    expect({ code, err }).toEqual({ code: 0, err: '' });
    expect(out).toMatch(/demo-relay-fast/);
    process.kill(s.proc.pid!, 'SIGINT');
    await expectCleanStop(s);
    expect(s.output()).toMatch(/embedded PostgreSQL stopped/);
    expect(existsSync(connectionFile)).toBe(false);
  }, 240_000);
});
