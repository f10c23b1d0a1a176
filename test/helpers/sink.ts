import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * The SMTP sink of the benchmarks (bench/sink.ts) in a process of its own, for tests that judge
 * timing at the receiving server: the server's acceptance instants are not delayed by the test's
 * own event loop (which runs the engine). listen() opens a timed listener; times() closes it and
 * returns the instants (epoch ms, sub-millisecond) at which it accepted each message; received()
 * also returns their Message-IDs (for a listener opened with `{ ids: true }`).
 */
export interface SinkProcess {
  listen(tag: string, opts?: { ids?: boolean }): Promise<number>;
  times(tag: string): Promise<number[]>;
  received(tag: string): Promise<{ times: number[]; ids: string[] }>;
  /**
   * A timed listener that records each accepted message's first recipient, and answers RCPTs for
   * `refuse.domain` with `refuse`'s reply once it has accepted `refuse.after` messages for it.
   */
  listenRefusing(tag: string, refuse: { domain: string; after: number; code: number; message: string; times?: number }): Promise<number>;
  /** What such a listener saw: acceptances (instant, recipient) and refused RCPTs; closes it. */
  arrivals(tag: string): Promise<{ accepted: { at: number; rcpt: string }[]; refused: { at: number; rcpt: string }[] }>;
  stop(): Promise<void>;
}

export async function startSinkProcess(): Promise<SinkProcess> {
  const proc: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'bench/sink.ts'], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const lines = createInterface({ input: proc.stdout! });
  await new Promise<void>((resolve, reject) => {
    lines.on('line', (l) => l.startsWith('port ') && resolve());
    proc.once('exit', (code) => reject(new Error(`sink exited with ${code}`)));
  });
  const answer = <T>(type: string, tag: string, pick: (m: Record<string, unknown>) => T) =>
    new Promise<T>((resolve) => {
      const on = (m: Record<string, unknown>) => {
        if (m.type !== type || m.tag !== tag) return;
        proc.off('message', on);
        resolve(pick(m));
      };
      proc.on('message', on);
    });
  return {
    listen(tag, opts = {}) {
      const p = answer('listening', tag, (m) => m.port as number);
      proc.send({ type: 'listen', tag, ids: opts.ids === true });
      return p;
    },
    times(tag) {
      const p = answer('times', tag, (m) => m.times as number[]);
      proc.send({ type: 'times', tag });
      return p;
    },
    received(tag) {
      const p = answer('times', tag, (m) => ({ times: m.times as number[], ids: m.ids as string[] }));
      proc.send({ type: 'times', tag });
      return p;
    },
    listenRefusing(tag, refuse) {
      const p = answer('listening', tag, (m) => m.port as number);
      proc.send({ type: 'listen', tag, rcpts: true, refuse });
      return p;
    },
    arrivals(tag) {
      const p = answer('times', tag, (m) => {
        const times = m.times as number[];
        const rcpts = m.rcpts as string[];
        return { accepted: times.map((at, i) => ({ at, rcpt: rcpts[i]! })), refused: m.refusals as { at: number; rcpt: string }[] };
      });
      proc.send({ type: 'times', tag });
      return p;
    },
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.send({ type: 'stop' });
      await exited;
    },
  };
}
