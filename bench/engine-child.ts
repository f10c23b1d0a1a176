/**
 * A fairsend engine in a process of its own, driven over IPC by the benchmark:
 *   { type: 'init', url, services? }  -> creates the engine                 -> { type: 'ready' }
 *   { type: 'start', target?, track?, samples? } -> scheduler.start()       -> { type: 'started' }
 *   { type: 'stop' }                  -> engine.close()                     -> { type: 'stopped', snapshots, owned, firstSentMs, maxRssMb }
 * W1 runs it as the second engine of the two-process figure; W1-multi runs one or two, with the
 * environment's SEND_WORKERS. W4 and W5 run it with `track`, under --expose-gc: it records heap
 * and active resources at start, 5 %, 50 % and 100 % of `target` sent (after a forced GC), and
 * reports `{ type: 'done', snapshots, firstSentMs, maxRssMb }` once all are sent. With `samples: n`
 * (W5) it also takes one at every n-th of `target` ("at 10 %"...), and posts each snapshot as it is
 * taken (`{ type: 'sample', snapshot }`), so a run cut short still says how far its heap went.
 *
 * `services`: the only sending services this engine may own (W1-multi spreads 4 services 2 and 2
 * over two processes). fairsend has no setting that places services on engines (each takes any
 * service whose advisory lock is free), so the bench wraps ServiceLocks.tryAcquire in this
 * process to refuse the others; the engine is otherwise unchanged.
 */
import type { Engine } from '../src/engine.js';
import { benchEngine, sentTotal } from './lib/fixtures.js';
import { sleep } from './lib/stats.js';
import { ServiceLocks } from '../services/scheduler/service-locks.js';

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
/** Services this engine took (their lock), and ms from start() to the first `sent` event. */
const owned = new Set<number>();
let startedAt = 0;
let firstSentMs: number | undefined;
const maxRssMb = () => process.resourceUsage().maxRSS / 1024;

function restrictServices(services: number[] | undefined): void {
  const tryAcquire = ServiceLocks.prototype.tryAcquire;
  const allowed = services ? new Set(services) : undefined;
  ServiceLocks.prototype.tryAcquire = async function (this: ServiceLocks, id: number) {
    if (allowed && !allowed.has(id)) return false;
    const ok = await tryAcquire.call(this, id);
    if (ok) owned.add(id);
    return ok;
  };
}

/** Whether each snapshot is also posted to the parent as it is taken (W5's `samples`). */
let postSamples = false;

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
  if (postSamples) process.send?.({ type: 'sample', snapshot: snapshots.at(-1) });
}

async function track(target: number, samples = 0): Promise<void> {
  const marks = [
    { at: Math.ceil(target * 0.05), label: 'warm (5 %)' },
    { at: Math.ceil(target * 0.5), label: 'middle (50 %)' },
  ];
  postSamples = samples > 0;
  for (let i = 1; i < samples; i++) {
    const pct = (100 * i) / samples;
    if (pct !== 50) marks.push({ at: Math.ceil((target * i) / samples), label: `at ${pct} %` });
  }
  marks.sort((a, b) => a.at - b.at);
  engine!.scheduler.on('sent', () => {
    sentEvents++;
    while (marks.length && sentEvents >= marks[0]!.at) snapshot(marks.shift()!.label);
  });
  // The end: every outcome committed. Counted from the engine's own 'written' events, and
  // confirmed by one read of the campaigns' counters once they say so: polling sum(sent_count) every
  // 100 ms scanned every campaign's row (at 10,000 users x 3, 11 ms of PostgreSQL CPU a poll, 7 of
  // the 24 s PostgreSQL spent in a W4 run), so the harness slowed the side it measured.
  let written = 0;
  engine!.scheduler.on('written', (e) => (written += (e as { outcomes: number }).outcomes));
  await engine!.scheduler.start();
  snapshot('start');
  while (written < target || (await sentTotal(engine!)) < target) await sleep(written < target ? 10 : 100);
  snapshot('end (100 %)');
  process.send?.({ type: 'done', snapshots, firstSentMs, maxRssMb: maxRssMb() });
}

process.on('message', (m: { type: string; url?: string; target?: number; track?: boolean; samples?: number; services?: number[] }) => {
  void (async () => {
    try {
      if (m.type === 'init') {
        snapshot('before engine');
        restrictServices(m.services);
        engine = await benchEngine(m.url!);
        engine.scheduler.on('sent', () => (firstSentMs ??= performance.now() - startedAt));
        process.send?.({ type: 'ready' });
      } else if (m.type === 'start') {
        startedAt = performance.now();
        if (m.target && m.track) void track(m.target, m.samples).catch(fail);
        else await engine!.scheduler.start();
        process.send?.({ type: 'started' });
      } else if (m.type === 'stop') {
        await engine?.close();
        snapshot('after close');
        process.send?.({ type: 'stopped', snapshots, owned: [...owned], firstSentMs, maxRssMb: maxRssMb() });
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
