/**
 * Redis for the BullMQ peer: the server at 127.0.0.1:6379 when one answers PING there; otherwise a
 * `redis-server` of the benchmark's own (Debian's `redis-server` package) on a free port, without
 * persistence, stopped at the end. `how` says which, for the log and the table.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createConnection } from 'node:net';
import { freePort } from './bench-db.js';
import { execFile } from 'node:child_process';

function pgrepRedis(): Promise<number[]> {
  return new Promise((resolve) => {
    execFile('pgrep', ['-x', 'redis-server'], (err, stdout) =>
      resolve(
        err
          ? []
          : stdout
              .split('\n')
              .map(Number)
              .filter((n) => n > 0),
      ),
    );
  });
}

export interface BenchRedis {
  host: string;
  port: number;
  /** How Redis was found or started (printed by the bench). */
  how: string;
  /** The redis-server processes whose CPU is the broker's (ours, or every `redis-server` on this machine). */
  pids(): Promise<number[]>;
  stop(): Promise<void>;
}

/** Sends PING over a raw socket; true when the server answers +PONG within `timeoutMs`. */
export function ping(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (d) => done(d.toString().startsWith('+PONG')));
    socket.once('error', () => done(false));
  });
}

/**
 * Redis at 127.0.0.1:`port` (6379), or one started here; throws with the reason when neither is
 * possible. BENCH_REDIS=start always starts one (the fallback, tested in test/bench-redis.test.ts).
 */
export async function benchRedis(port0 = 6379): Promise<BenchRedis> {
  if (process.env.BENCH_REDIS !== 'start' && (await ping('127.0.0.1', port0))) {
    return {
      host: '127.0.0.1',
      port: port0,
      how: `Redis already running at 127.0.0.1:${port0}`,
      pids: pgrepRedis,
      stop: async () => undefined,
    };
  }
  const port = await freePort();
  const bin = process.env.REDIS_SERVER ?? 'redis-server';
  const child: ChildProcess = spawn(bin, ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (err) =>
      reject(new Error(`nothing answers at 127.0.0.1:${port0} and ${bin} could not start (${err.message}); apt-get install redis-server`)),
    );
    child.once('exit', (code) => reject(new Error(`nothing answers at 127.0.0.1:${port0} and ${bin} exited (${code})`)));
  });
  failed.catch(() => undefined);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (await Promise.race([ping('127.0.0.1', port, 500), failed])) break;
    if (Date.now() > deadline) {
      child.kill();
      throw new Error(`${bin} on port ${port} did not answer within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host: '127.0.0.1',
    port,
    pids: async () => [child.pid!],
    how: `${process.env.BENCH_REDIS === 'start' ? 'BENCH_REDIS=start' : `nothing answered at 127.0.0.1:${port0}`}: started ${bin} on 127.0.0.1:${port} (no persistence, pid ${child.pid})`,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}
