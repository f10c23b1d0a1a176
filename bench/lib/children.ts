/**
 * The benchmark's child processes: the SMTP sink and engine children. Each is a compiled module
 * under dist/bench, started with this Node binary and an IPC channel.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

/** Path of a compiled bench module, relative to this file (dist/bench/lib/children.js). */
export function benchModule(name: string): string {
  return fileURLToPath(new URL(`../${name}`, import.meta.url));
}

/** Forks a compiled bench module; `env` is added to this process's environment (e.g. SEND_WORKERS). */
export function forkBench(name: string, execArgv: string[] = [], env: Record<string, string> = {}): ChildProcess {
  return fork(benchModule(name), [], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    execArgv,
    execPath: process.execPath,
    env: { ...process.env, ...env },
  });
}

/** Waits for the next IPC message of `type`, or the child's exit (an error). */
export function nextMessage<T extends { type: string }>(child: ChildProcess, type: string, timeoutMs = 600_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`no '${type}' from child within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (m: T) => {
      if (m?.type === type) done(undefined, m);
      else if (m?.type === 'error') done(new Error(`child: ${(m as unknown as { message: string }).message}`));
    };
    const onExit = (code: number | null) => done(new Error(`child exited (${code}) before '${type}'`));
    function done(err?: Error, m?: T) {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(m!);
    }
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

export interface Sink {
  port: number;
  pid: number;
  accepted(): Promise<number>;
  /** Opens a timed listener (its own port) in the sink process: see bench/sink.ts. */
  listen(tag: string): Promise<number>;
  /** Closes a timed listener and returns the instants (ms) at which it accepted each message. */
  times(tag: string): Promise<number[]>;
  stop(): Promise<void>;
}

export async function startSink(): Promise<Sink> {
  const child = forkBench('sink.js');
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /port (\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`sink exited (${code})`)));
  });
  return {
    port,
    pid: child.pid!,
    accepted: async () => {
      child.send({ type: 'count' });
      return (await nextMessage<{ type: string; accepted: number }>(child, 'count', 10_000)).accepted;
    },
    listen: async (tag) => {
      child.send({ type: 'listen', tag });
      return (await nextMessage<{ type: string; port: number }>(child, 'listening', 10_000)).port;
    },
    times: async (tag) => {
      child.send({ type: 'times', tag });
      return (await nextMessage<{ type: string; times: number[] }>(child, 'times', 60_000)).times;
    },
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.send({ type: 'stop' });
      await exited;
    },
  };
}
