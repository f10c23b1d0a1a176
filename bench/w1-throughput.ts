/**
 * W1 throughput: 10 users x 5 campaigns x 2,000 recipients (quick: 60) through one service with
 * no rate limit, 5 connections, to the sink; end-to-end from scheduler start until the last `sent`
 * is committed. In the same run, on the same sink: the ceiling (nodemailer alone), fairsend with
 * two processes, graphile-worker (plain and batched), pg-boss (fetch/complete loop), BullMQ on
 * Redis (127.0.0.1:6379, or a redis-server the bench starts: lib/redis.ts). Configurations take
 * turns inside each run, so a slow patch of the machine hits them all.
 *
 * The attempt record's cost: fairsend in one process also runs with ATTEMPT_RECORDS=false
 * (`fairsendNoAttempts`), and the row reports the throughput lost per message, against a goal of
 * 5 %. `BENCH_W1_CONFIGS=fairsend,fairsendNoAttempts` runs only the named configurations (the
 * comparison alone, without the peers).
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Engine } from '../src/engine.js';
import { forkBench, nextMessage } from './lib/children.js';
import { benchEngine, recipientsOf, render, seedCampaigns, sentTotal } from './lib/fixtures.js';
import { measure, type BenchContext, type Prepared, type RunRecord } from './lib/harness.js';
import { median, sleep, fmt, summarize } from './lib/stats.js';
import { rowOf, verdict, type Goal18, type Row } from './lib/report.js';
import { sendAll } from './peers/ceiling.js';
import { prepareGraphile } from './peers/graphile.js';
import { preparePgBoss } from './peers/pgboss.js';
import { prepareBullMq } from './peers/bullmq.js';
import { benchRedis, type BenchRedis } from './lib/redis.js';

export const CONNECTIONS = 5;
export const IN_FLIGHT = 10;
export const BULLMQ_CONCURRENCY = 50;

export const W1_CONFIGS = {
  ceiling: `nodemailer pool alone, ${CONNECTIONS} connections, ${IN_FLIGHT} in flight, pre-rendered, no database`,
  fairsend: `fairsend, 1 process, sendingRate 0, maxConnections ${CONNECTIONS}`,
  fairsendNoAttempts: `fairsend, 1 process, ATTEMPT_RECORDS=false (no attempt record)`,
  fairsend2: `fairsend, 2 processes (same database), maxConnections ${CONNECTIONS} each`,
  graphile: 'graphile-worker 0.17, one job per message, concurrency 25',
  graphileBatched: 'graphile-worker 0.17, concurrency 50, localQueue 500, completeJobBatchDelay 0',
  pgboss: 'pg-boss 10, fetch()/complete() loops, 2 x batch 100',
  bullmq: `BullMQ 6 on Redis, concurrency ${BULLMQ_CONCURRENCY}, addBulk, removeOnComplete`,
} as const;
export type W1Config = keyof typeof W1_CONFIGS;

interface Shape {
  users: number;
  campaignsPerUser: number;
  perCampaign: number;
}

async function prepareFairsend(
  ctx: BenchContext,
  shape: Shape,
  processes: 1 | 2,
  attemptRecords = true,
): Promise<Prepared & { total: number }> {
  const db = await ctx.server.newDatabase('w1');
  const engine: Engine = await benchEngine(db.url, { attemptRecords });
  const total = await seedCampaigns(engine, {
    ...shape,
    service: { name: 'sink', port: ctx.sink.port, sendingRate: 0, dailyQuota: 100_000_000, maxConnections: CONNECTIONS },
  });
  let child: ChildProcess | undefined;
  if (processes === 2) {
    child = forkBench('engine-child.js');
    child.send({ type: 'init', url: db.url });
    await nextMessage(child, 'ready');
  }
  return {
    total,
    ...(child ? { engineChildren: async () => [child.pid!] } : {}),
    go: async () => {
      const started = child ? nextMessage(child, 'started') : undefined;
      child?.send({ type: 'start' });
      await Promise.all([engine.scheduler.start(), started]);
      while ((await sentTotal(engine)) < total) await sleep(50);
    },
    teardown: async () => {
      if (child) {
        const exited = once(child, 'exit');
        child.send({ type: 'stop' });
        await exited;
      }
      await engine.close();
      await db.drop();
    },
  };
}

export async function runW1(ctx: BenchContext, runs: number): Promise<RunRecord[]> {
  const shape: Shape = { users: 10, campaignsPerUser: 5, perCampaign: ctx.quick ? 60 : 2000 };
  const recipients = recipientsOf(shape.users, shape.campaignsPerUser, shape.perCampaign);
  const N = recipients.length;
  const records: RunRecord[] = [];
  const peerDb = async (name: string, fn: (url: string) => Promise<Prepared>): Promise<Prepared> => {
    const db = await ctx.server.newDatabase(name);
    const p = await fn(db.url);
    return { go: p.go, teardown: () => p.teardown().finally(() => db.drop()) };
  };
  const prepare: Record<W1Config, () => Promise<Prepared>> = {
    ceiling: async () => {
      const mails = recipients.map(render);
      return { go: () => sendAll(ctx.sink.port, mails, CONNECTIONS, IN_FLIGHT), teardown: async () => undefined };
    },
    fairsend: () => prepareFairsend(ctx, shape, 1),
    fairsendNoAttempts: () => prepareFairsend(ctx, shape, 1, false),
    fairsend2: () => prepareFairsend(ctx, shape, 2),
    graphile: () => peerDb('gw', (url) => prepareGraphile(url, recipients, ctx.sink.port, CONNECTIONS, { concurrency: 25 })),
    graphileBatched: () =>
      peerDb('gwb', (url) => prepareGraphile(url, recipients, ctx.sink.port, CONNECTIONS, { concurrency: 50, localQueueSize: 500 })),
    pgboss: () => peerDb('pgboss', (url) => preparePgBoss(url, recipients, ctx.sink.port, CONNECTIONS, { loops: 2, batchSize: 100 })),
    bullmq: async () => {
      const p = await prepareBullMq(redis!, recipients, ctx.sink.port, CONNECTIONS, { concurrency: BULLMQ_CONCURRENCY });
      return { ...p, store: () => redis!.pids() };
    },
  };
  const only = process.env.BENCH_W1_CONFIGS?.split(',').map((x) => x.trim());
  let configs = (Object.keys(prepare) as W1Config[]).filter((c) => !only || only.includes(c));
  let redis: BenchRedis | undefined;
  if (configs.includes('bullmq')) {
    try {
      redis = await benchRedis();
      ctx.log(`W1 BullMQ: ${redis.how}`);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      ctx.log(`W1 BullMQ skipped: ${why}`);
      records.push({ config: 'bullmq', run: 0, value: NaN, extra: { skipped: why } });
      configs = configs.filter((c) => c !== 'bullmq');
    }
  }
  try {
    await runConfigs();
  } finally {
    await redis?.stop();
  }
  if (redis) records.push({ config: 'bullmq', run: 0, value: NaN, extra: { redis: redis.how } });
  return records;

  async function runConfigs(): Promise<void> {
    for (let run = 1; run <= runs; run++) {
      for (const config of configs) {
        const p = await prepare[config]();
        const m = await measure(ctx, p);
        const rate = N / m.seconds;
        records.push({ config, run, value: rate, seconds: m.seconds, messages: N, sinkAccepted: m.sinkAccepted, cpu: m.cpu });
        ctx.log(
          `W1 run ${run} ${config}: ${rate.toFixed(0)} msg/s (${m.seconds.toFixed(2)} s; CPU engine ${m.cpu.engine.toFixed(2)} s, sink ${m.cpu.sink.toFixed(2)} s, ${config === 'bullmq' ? 'redis' : 'postgres'} ${m.cpu.postgres.toFixed(2)} s; sink took ${m.sinkAccepted})`,
        );
      }
    }
  }
}

/** Per run, a / b (both measured in that run). */
function perRunRatio(records: RunRecord[], a: W1Config, b: (run: number) => number | undefined): number[] {
  return records
    .filter((r) => r.config === a)
    .map((r) => {
      const d = b(r.run);
      return d ? r.value / d : NaN;
    });
}

export function w1Rows(allRecords: RunRecord[]): Row[] {
  // Run 0 holds notes (how Redis was found or why BullMQ was skipped), not figures.
  const notes = allRecords.filter((r) => r.run === 0);
  const records = allRecords.filter((r) => r.run > 0);
  const n = records[0]?.messages ?? 0;
  const valueOf = (config: W1Config, run: number) => records.find((r) => r.config === config && r.run === run)?.value;
  const rows: Row[] = [];
  for (const config of Object.keys(W1_CONFIGS) as W1Config[]) {
    const rs = records.filter((r) => r.config === config);
    if (!rs.length) continue;
    const vsCeiling = median(perRunRatio(records, config, (run) => valueOf('ceiling', run)));
    const cpuPerMsg = median(rs.map((r) => (r.cpu!.engine * 1000) / r.messages!));
    let goal = '-';
    let met = '-';
    let summary: Goal18 | undefined;
    if (config === 'fairsend') {
      goal = '>= 1.25x the single-thread nodemailer ceiling (#18)';
      summary = 'w1Ceiling';
      met = verdict(vsCeiling >= 1.25, `${vsCeiling.toFixed(2)}x the ceiling, median of the runs' ratios`);
    } else if (config === 'fairsendNoAttempts') {
      // Per run: the share of throughput the attempt record costs (1 - with / without), and the
      // engine CPU it adds per message.
      const cost = 1 - median(perRunRatio(records, 'fairsend', (run) => valueOf('fairsendNoAttempts', run)));
      const perRun = (k: 'engine' | 'postgres') =>
        median(
          rs.map((r) => {
            const w = records.find((x) => x.config === 'fairsend' && x.run === r.run);
            return w ? ((w.cpu![k] - r.cpu![k]) * 1000) / r.messages! : NaN;
          }),
        );
      const costs = perRunRatio(records, 'fairsend', (run) => valueOf('fairsendNoAttempts', run)).map(
        (x) => `${((1 - x) * 100).toFixed(1)} %`,
      );
      goal = 'the attempt record costs <= 5 % of throughput';
      met = Number.isNaN(cost)
        ? 'not measured (fairsend not run)'
        : verdict(
            cost <= 0.05,
            `costs ${(cost * 100).toFixed(1)} % of throughput (runs: ${costs.join(', ')}); with it, per message, engine CPU ` +
              `${perRun('engine').toFixed(3)} ms and postgres CPU ${perRun('postgres').toFixed(3)} ms more (median of the runs' differences)`,
          );
    } else if (config === 'fairsend2') {
      const scale = median(perRunRatio(records, 'fairsend2', (run) => valueOf('fairsend', run)));
      goal = '>= 1.15x one process';
      met = verdict(scale >= 1.15, `${scale.toFixed(2)}x`);
    }
    const store =
      config === 'bullmq' ? ` (third CPU column: Redis; ${String(notes.find((x) => x.config === 'bullmq')?.extra?.redis ?? '')})` : '';
    rows.push(
      rowOf(rs, {
        workload: 'W1 throughput',
        config: `${W1_CONFIGS[config]}; ${fmt(n)} msgs; engine CPU ${cpuPerMsg.toFixed(3)} ms/msg${store}`,
        unit: 'msg/s',
        digits: 0,
        ratio: `${(vsCeiling * 100).toFixed(0)} %`,
        goal,
        met,
        ...(summary ? { summary } : {}),
      }),
    );
  }
  const skipped = notes.find((x) => x.config === 'bullmq' && x.extra?.skipped)?.extra?.skipped;
  if (skipped)
    rows.push({
      workload: 'W1 throughput',
      config: 'BullMQ on Redis',
      unit: '',
      median: NaN,
      min: NaN,
      max: NaN,
      digits: 0,
      goal: '-',
      met: `not measured: ${String(skipped)}`,
    });
  // #18: ahead of pg-boss, graphile-worker batched and BullMQ in every run, not only in the median.
  if (records.some((r) => r.config === 'fairsend')) {
    const peers: W1Config[] = ['pgboss', 'graphileBatched', 'bullmq'];
    const runsOf = [...new Set(records.filter((r) => r.config === 'fairsend').map((r) => r.run))];
    const ratios = runsOf.map((run) => valueOf('fairsend', run)! / Math.max(...peers.map((p) => valueOf(p, run) ?? 0)));
    const missing = peers.filter((p) => !records.some((r) => r.config === p));
    const s = summarize(ratios);
    rows.push({
      workload: 'W1 throughput',
      config: 'fairsend 1 process against the best of pg-boss, graphile-worker batched and BullMQ in the same run',
      unit: 'x',
      median: s.median,
      min: s.min,
      max: s.max,
      digits: 2,
      goal: 'ahead of every one in every run (min > 1)',
      summary: 'w1Peers',
      met: missing.length
        ? `NOT met (not measured against ${missing.join(', ')})`
        : verdict(s.min > 1, `runs: ${ratios.map((x) => x.toFixed(2)).join(', ')}`),
    });
  }
  return rows;
}
