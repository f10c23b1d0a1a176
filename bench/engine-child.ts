/**
 * A fairsend engine in a process of its own, driven over IPC by the benchmark:
 *   { type: 'init', url, target?, track? } -> creates the engine            -> { type: 'ready' }
 *   { type: 'start' }                      -> scheduler.start()             -> { type: 'started' }
 *   { type: 'stop' }                       -> engine.close()                -> { type: 'stopped', snapshots }
 * W1 runs it as the second engine of the two-process figure. W5 runs it with `track`, under
 * --expose-gc: it records heap and active resources at start, 5 %, 50 % and 100 % of `target`
 * sent (after a forced GC), and reports `{ type: 'done', snapshots }` once all are sent.
 */
import type { Engine } from '../src/engine.js';
import { benchEngine, sentTotal } from './lib/fixtures.js';
import { sleep } from './lib/stats.js';

export interface Snapshot {
  label: string;
  at: number;
  sent: number;
  heapUsedMb: number;
  rssMb: number;
  resources: number;
  timers: number;
  byType: Record<string, number>;
}

let engine: Engine | undefined;
const snapshots: Snapshot[] = [];
let sentEvents = 0;

function snapshot(label: string): void {
  (globalThis as { gc?: () => void }).gc?.();
  const mem = process.memoryUsage();
  const types = process.getActiveResourcesInfo();
  const byType: Record<string, number> = {};
  for (const t of types) byType[t] = (byType[t] ?? 0) + 1;
  snapshots.push({
    label,
    at: Date.now(),
    sent: sentEvents,
    heapUsedMb: mem.heapUsed / 2 ** 20,
    rssMb: mem.rss / 2 ** 20,
    resources: types.length,
    timers: byType.Timeout ?? 0,
    byType,
  });
}

async function track(target: number): Promise<void> {
  const marks = [
    { at: Math.ceil(target * 0.05), label: 'warm (5 %)' },
    { at: Math.ceil(target * 0.5), label: 'middle (50 %)' },
  ];
  engine!.scheduler.on('sent', () => {
    sentEvents++;
    while (marks.length && sentEvents >= marks[0]!.at) snapshot(marks.shift()!.label);
  });
  await engine!.scheduler.start();
  snapshot('start');
  while ((await sentTotal(engine!)) < target) await sleep(100);
  snapshot('end (100 %)');
  process.send?.({ type: 'done', snapshots });
}

process.on('message', (m: { type: string; url?: string; target?: number; track?: boolean }) => {
  void (async () => {
    try {
      if (m.type === 'init') {
        snapshot('before engine');
        engine = await benchEngine(m.url!);
        process.send?.({ type: 'ready' });
      } else if (m.type === 'start') {
        if (m.target && m.track) void track(m.target).catch(fail);
        else await engine!.scheduler.start();
        process.send?.({ type: 'started' });
      } else if (m.type === 'stop') {
        await engine?.close();
        snapshot('after close');
        process.send?.({ type: 'stopped', snapshots });
        setTimeout(() => process.exit(0), 50);
      }
    } catch (err) {
      fail(err);
    }
  })();
});

function fail(err: unknown): void {
  process.send?.({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
}

process.on('disconnect', () => process.exit(0));
