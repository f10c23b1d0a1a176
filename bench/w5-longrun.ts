/**
 * W5 long run: 1,000,000 messages (10 users x 2 campaigns x 50,000; one run, whatever --runs says:
 * at about 1,000 msg/s a run takes 17 minutes; quick: 6,000, every run) through the real engine, in a child process run
 * with --expose-gc (engine-child.ts): heap used after a forced GC at start, 5 %, 50 % and 100 %
 * sent (full size: also every 10 %, each logged as it is taken, so a run cut short still shows its
 * heap so far); active resources (process.getActiveResourcesInfo()) once warm (5 %: pools and SMTP
 * connections open) and at the end. Goals: heap flat (end <= 1.2x middle), no growth of
 * resources or timers from warm to end. The heap is the main thread's (the engine's decisions,
 * claims and outcome writes); the send worker threads' heaps are not in it, so RSS (the whole
 * process) is logged and reported beside it.
 */
import { once } from 'node:events';
import type { Snapshot } from './engine-child.js';
import { forkBench, nextMessage } from './lib/children.js';
import { benchEngine, seedCampaigns } from './lib/fixtures.js';
import { measure, type BenchContext, type RunRecord } from './lib/harness.js';
import { rowOf, verdict, type Row } from './lib/report.js';
import { fmt, median } from './lib/stats.js';

export async function runW5(ctx: BenchContext, runs: number): Promise<RunRecord[]> {
  const shape = { users: 10, campaignsPerUser: 2, perCampaign: ctx.quick ? 300 : 50_000 };
  const records: RunRecord[] = [];
  for (let run = 1; run <= (ctx.quick ? runs : 1); run++) {
    const db = await ctx.server.newDatabase('w5');
    const seeder = await benchEngine(db.url);
    const total = await seedCampaigns(seeder, {
      ...shape,
      service: { name: 'sink', port: ctx.sink.port, sendingRate: 0, dailyQuota: 100_000_000, maxConnections: 5 },
    });
    await seeder.close();
    const child = forkBench('engine-child.js', ['--expose-gc']);
    let t0 = Date.now();
    child.on('message', (m: { type: string; snapshot?: Snapshot }) => {
      const s = m.type === 'sample' ? m.snapshot : undefined;
      if (s)
        ctx.log(
          `W5 run ${run} ${s.label}: ${fmt(s.sent)} sent, ${((s.at - t0) / 1000).toFixed(0)} s after start; heap ${s.heapUsedMb.toFixed(1)} MB, RSS ${s.rssMb.toFixed(0)} MB; resources ${s.resources} (timers ${s.timers}) ${JSON.stringify(s.byType)}`,
        );
    });
    child.send({ type: 'init', url: db.url });
    await nextMessage(child, 'ready');
    let snapshots: Snapshot[] = [];
    const m = await measure(ctx, {
      engineChildren: async () => [child.pid!],
      go: async () => {
        // No time limit of nextMessage's default (10 minutes): a full run takes 15-30. The child's
        // exit still ends the wait; a run slower than 100 msg/s is given up.
        const done = nextMessage<{ type: string; snapshots: Snapshot[] }>(child, 'done', Math.max(600_000, total * 10));
        t0 = Date.now();
        child.send({ type: 'start', target: total, track: true, samples: ctx.quick ? 0 : 10 });
        snapshots = (await done).snapshots;
      },
      teardown: async () => {
        const exited = once(child, 'exit');
        child.send({ type: 'stop' });
        snapshots = (await nextMessage<{ type: string; snapshots: Snapshot[] }>(child, 'stopped')).snapshots;
        await exited;
        await db.drop();
      },
    });
    const get = (prefix: string) => snapshots.find((s) => s.label.startsWith(prefix))!;
    const [start, warm, middle, end, before, after] = ['start', 'warm', 'middle', 'end', 'before', 'after'].map(get);
    const rate = total / m.seconds;
    records.push({
      config: 'longrun',
      run,
      value: end!.heapUsedMb / middle!.heapUsedMb,
      seconds: m.seconds,
      messages: total,
      sinkAccepted: m.sinkAccepted,
      cpu: m.cpu,
      extra: { rate, snapshots, start, warm, middle, end, before, after },
    });
    ctx.log(
      `W5 run ${run}: ${fmt(total)} msgs at ${rate.toFixed(0)}/s; heap MB start ${start!.heapUsedMb.toFixed(1)}, middle ${middle!.heapUsedMb.toFixed(1)}, end ${end!.heapUsedMb.toFixed(1)}; RSS MB start ${start!.rssMb.toFixed(0)}, middle ${middle!.rssMb.toFixed(0)}, end ${end!.rssMb.toFixed(0)}; resources warm ${warm!.resources} (timers ${warm!.timers}), end ${end!.resources} (timers ${end!.timers}), after close ${after!.resources}`,
    );
  }
  return records;
}

export function w5Rows(records: RunRecord[]): Row[] {
  const n = records[0]?.messages ?? 0;
  const ex = records.map((r) => r.extra as Record<'start' | 'warm' | 'middle' | 'end' | 'before' | 'after', Snapshot> & { rate: number });
  const heap = (k: 'start' | 'middle' | 'end') => median(ex.map((e) => e[k].heapUsedMb)).toFixed(1);
  const rss = (k: 'start' | 'middle' | 'end') => median(ex.map((e) => e[k].rssMb)).toFixed(0);
  const h = rowOf(records, {
    workload: 'W5 long run',
    config: `${fmt(n)} msgs through one engine process${records.length === 1 ? ', 1 run' : ''} (median ${fmt(median(ex.map((e) => e.rate)))} msg/s); heap used after GC, end / middle (MB start ${heap('start')}, middle ${heap('middle')}, end ${heap('end')}; RSS with the send threads ${rss('start')} / ${rss('middle')} / ${rss('end')} MB)`,
    unit: 'x',
    digits: 2,
    goal: 'end <= 1.2x middle',
    met: '',
    summary: 'w5',
  });
  h.met = verdict(h.max <= 1.2, `${fmt(n)} msgs: end / middle ${h.max.toFixed(2)}x at most`);
  const growth = ex.map((e) => e.end.resources - e.warm.resources);
  const timerGrowth = ex.map((e) => e.end.timers - e.warm.timers);
  const r = rowOf(
    records,
    {
      workload: 'W5 long run',
      config: `active resources (getActiveResourcesInfo), end minus warm (5 %): warm ${median(ex.map((e) => e.warm.resources))}, end ${median(ex.map((e) => e.end.resources))}; timers warm ${median(ex.map((e) => e.warm.timers))}, end ${median(ex.map((e) => e.end.timers))}; after close ${median(ex.map((e) => e.after.resources))} (before the engine: ${median(ex.map((e) => e.before.resources))})`,
      unit: '',
      digits: 0,
      goal: 'no growth',
      met: '',
    },
    growth,
  );
  r.met = verdict(Math.max(...growth) <= 0 && Math.max(...timerGrowth) <= 0);
  return [h, r];
}
