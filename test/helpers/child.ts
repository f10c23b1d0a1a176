import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface EngineChild {
  proc: ChildProcess;
  sent: { taskId: number; contactId: number; serviceId: number; at: number }[];
  /** The size of each committed outcome write, in order. */
  written: number[];
  ready: Promise<void>;
  exited: Promise<number | null>;
}

/** Starts test/fixtures/engine-child.ts in its own process against `databaseUrl`. */
export function startEngineChild(databaseUrl: string, env: Record<string, string> = {}): EngineChild {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/engine-child.ts'], {
    env: { ...process.env, DATABASE_URL: databaseUrl, MAINTENANCE_ENABLED: 'false', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const sent: EngineChild['sent'] = [];
  const written: number[] = [];
  let markReady: () => void;
  const ready = new Promise<void>((r) => (markReady = r));
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    try {
      const msg = JSON.parse(line) as { sent?: EngineChild['sent'][number]; ready?: boolean; written?: number };
      if (msg.sent) sent.push(msg.sent);
      if (msg.written !== undefined) written.push(msg.written);
      if (msg.ready) markReady();
    } catch {
      /* not ours */
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return { proc, sent, written, ready, exited };
}
