/**
 * W4 at scale.
 *
 * End to end (#18): one service (sendingRate 0, 5 connections, to the sink) sends the same number
 * of messages (60,000; quick 3,000) for 10 users x 3 campaigns (2,000 recipients each; quick 100)
 * and for 10,000 users x 3 campaigns (2 recipients each; quick: 500 users x 3 x 2). Each scale is
 * seeded once (queues generated) into a template database; every run sends from a fresh copy
 * (CREATE DATABASE ... TEMPLATE). The engine runs in a child process (engine-child.ts, with
 * --expose-gc) so its memory is its own: peak RSS (getrusage maxRSS) and heap used after GC at 50 %
 * and 100 % sent. Start-up refill time: from scheduler.start() to the first `sent` event (a new
 * service starts once every campaign's first claim has landed, so this is the time to load and
 * claim all campaigns). Throughput: messages / seconds from start() until every outcome is
 * committed (start-up included). Goals: at 10,000 users >= 0.9x the throughput at 10 users (per
 * run, median), engine peak RSS <= 300 MB.
 *
 * The decision alone, in memory (a report row, w4-child.ts): 100, 1,000 and 10,000 users x 3
 * campaigns in a FairRing, each campaign a CampaignState buffer holding what the real pool would
 * give it; one decision is ring.next(), the campaign lookup and take(). Millions of decisions
 * (quick: 1 million) in a fresh process per scale and run; CPU by process.cpuUsage; heap after GC.
 */
import { once } from 'node:events';
import type { Snapshot } from './engine-child.js';
import { forkBench, nextMessage } from './lib/children.js';
import { benchEngine, seedManyUsers } from './lib/fixtures.js';
import { measure, type BenchContext, type RunRecord } from './lib/harness.js';
import { admin, type BenchDatabase } from './lib/bench-db.js';
import { rowOf, verdict, type Row } from './lib/report.js';
import { fmt, median, summarize } from './lib/stats.js';

const SCALES = [100, 1_000, 10_000];
const RSS_GOAL_MB = 300;

type E2eExtra = {
  users: number;
  firstSentMs: number;
  maxRssMb: number;
  heapMiddleMb: number;
  heapEndMb: number;
  seedSeconds: number;
};

export async function runW4(ctx: BenchContext, runs: number): Promise<RunRecord[]> {
  // BENCH_W4=e2e or =decisions runs one part alone.
  const part = process.env.BENCH_W4;
  return [...(part === 'decisions' ? [] : await runW4EndToEnd(ctx, runs)), ...(part === 'e2e' ? [] : await runW4Decisions(ctx, runs))];
}

async function runW4EndToEnd(ctx: BenchContext, runs: number): Promise<RunRecord[]> {
  const total = ctx.quick ? 3_000 : 60_000;
  const scales = [10, ctx.quick ? 500 : 10_000];
  const records: RunRecord[] = [];
  const templates = new Map<number, { db: BenchDatabase; seedSeconds: number }>();
  try {
    for (const users of scales) {
      const kept = await keptSeed(users, total);
      if (kept) {
        templates.set(users, { db: kept, seedSeconds: NaN });
        ctx.log(`W4 reuses the seeded database ${kept.name} (BENCH_W4_KEEP_SEED)`);
        continue;
      }
      const t0 = performance.now();
      const db = await ctx.server.newDatabase(`w4t${users}`);
      const seeder = await benchEngine(db.url);
      let phases = '';
      try {
        const seeded = await seedManyUsers(seeder, {
          users,
          campaignsPerUser: 3,
          perCampaign: total / (users * 3),
          service: { name: 'sink', port: ctx.sink.port, sendingRate: 0, dailyQuota: 100_000_000, maxConnections: 5 },
        });
        phases = ` (API ${seeded.createSeconds.toFixed(1)} s, generation ${seeded.generateSeconds.toFixed(1)} s)`;
      } finally {
        await seeder.close();
      }
      const seedSeconds = (performance.now() - t0) / 1000;
      templates.set(users, { db: await keepSeed(db, users, total), seedSeconds });
      ctx.log(
        `W4 seeded ${fmt(users)} users x 3 campaigns (${fmt(total)} msgs) in ${seedSeconds.toFixed(1)} s${phases} (outside the clock)`,
      );
    }
    for (let run = 1; run <= runs; run++) {
      for (const users of scales) {
        const tpl = templates.get(users)!;
        const db = await ctx.server.newDatabase('w4', tpl.db.name);
        if (tpl.db.label === 'kept seed') await pointAtSink(db.url, ctx.sink.port);
        const child = forkBench('engine-child.js', ['--expose-gc', ...childArgs()]);
        child.send({ type: 'init', url: db.url });
        await nextMessage(child, 'ready');
        let done: { snapshots: Snapshot[]; firstSentMs: number; maxRssMb: number } | undefined;
        const m = await measure(ctx, {
          engineChildren: async () => [child.pid!],
          go: async () => {
            const finished = nextMessage<{ type: string; snapshots: Snapshot[]; firstSentMs: number; maxRssMb: number }>(child, 'done');
            child.send({ type: 'start', target: total, track: true });
            done = await finished;
          },
          teardown: async () => {
            const exited = once(child, 'exit');
            child.send({ type: 'stop' });
            await nextMessage(child, 'stopped');
            await exited;
            await db.drop();
          },
        });
        const heap = (label: string) => done!.snapshots.find((s) => s.label.startsWith(label))?.heapUsedMb ?? NaN;
        const extra: E2eExtra = {
          users,
          firstSentMs: done!.firstSentMs,
          maxRssMb: done!.maxRssMb,
          heapMiddleMb: heap('middle'),
          heapEndMb: heap('end'),
          seedSeconds: tpl.seedSeconds,
        };
        records.push({
          config: `e2e:${users}`,
          run,
          value: total / m.seconds,
          seconds: m.seconds,
          messages: total,
          sinkAccepted: m.sinkAccepted,
          cpu: m.cpu,
          extra,
        });
        ctx.log(
          `W4 run ${run} ${fmt(users)} users x 3: ${(total / m.seconds).toFixed(0)} msg/s (${m.seconds.toFixed(2)} s); start-up refill (start -> first send) ${extra.firstSentMs.toFixed(0)} ms; engine peak RSS ${extra.maxRssMb.toFixed(0)} MB, heap after GC middle ${extra.heapMiddleMb.toFixed(1)} MB, end ${extra.heapEndMb.toFixed(1)} MB`,
        );
      }
    }
  } finally {
    for (const t of templates.values()) await t.db.drop().catch(() => undefined);
  }
  return records;
}

/** BENCH_W4_CHILD_ARGS: more Node options for the end-to-end engine child, e.g. `--cpu-prof --cpu-prof-dir=/tmp/w4prof`. */
function childArgs(): string[] {
  return (process.env.BENCH_W4_CHILD_ARGS ?? '').split(/\s+/).filter(Boolean);
}

/**
 * BENCH_W4_KEEP_SEED=1 (with DATABASE_URL): the seeded template databases are kept under a fixed
 * name and reused by the next run (seeding 10,000 users takes minutes). For iterating on the
 * engine only: a kept seed has the schema of the code that made it.
 */
const seedName = (users: number, total: number) => `fairsend_w4seed_${users}x3_${total}`;

async function keptSeed(users: number, total: number): Promise<BenchDatabase | undefined> {
  const base = process.env.DATABASE_URL;
  if (!process.env.BENCH_W4_KEEP_SEED || !base) return undefined;
  const name = seedName(users, total);
  const { rows } = await admin(base, (c) => c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]));
  return rows.length ? seedDatabase(base, name) : undefined;
}

async function keepSeed(db: BenchDatabase, users: number, total: number): Promise<BenchDatabase> {
  const base = process.env.DATABASE_URL;
  if (!process.env.BENCH_W4_KEEP_SEED || !base) return db;
  const name = seedName(users, total);
  await admin(base, (c) => c.query(`ALTER DATABASE "${db.name}" RENAME TO "${name}"`));
  return seedDatabase(base, name);
}

/** The kept seed `name` on the server of `base`: never dropped by the run. */
function seedDatabase(base: string, name: string): BenchDatabase {
  const u = new URL(base);
  u.pathname = `/${name}`;
  return { url: u.toString(), name, label: 'kept seed', drop: async () => undefined };
}

/** A kept seed's service points at the sink of the run that made it: this run's sink instead. */
async function pointAtSink(url: string, port: number): Promise<void> {
  await admin(url, (c) => c.query(`UPDATE email_services SET transport = jsonb_set(transport, '{port}', to_jsonb($1::int))`, [port]));
}

async function runW4Decisions(ctx: BenchContext, runs: number): Promise<RunRecord[]> {
  const decisions = ctx.quick ? 1_000_000 : 20_000_000;
  const records: RunRecord[] = [];
  for (let run = 1; run <= runs; run++) {
    for (const users of SCALES) {
      const child = forkBench('w4-child.js', ['--expose-gc']);
      child.send({ users, decisions });
      const r = await nextMessage<{ type: string; usPerDecision: number; heapMb: number; bytesPerUser: number; perCampaign: number }>(
        child,
        'result',
      );
      records.push({
        config: String(users),
        run,
        value: r.usPerDecision,
        messages: decisions,
        extra: { heapMb: r.heapMb, bytesPerUser: r.bytesPerUser, perCampaign: r.perCampaign },
      });
      ctx.log(`W4 run ${run} ${fmt(users)} users: ${(r.usPerDecision * 1000).toFixed(1)} ns/decision, heap ${r.heapMb.toFixed(1)} MB`);
    }
  }
  return records;
}

function e2eRows(records: RunRecord[]): Row[] {
  const e2e = records.filter((r) => r.config.startsWith('e2e:'));
  if (!e2e.length) return [];
  const scales = [...new Set(e2e.map((r) => (r.extra as unknown as E2eExtra).users))].sort((a, b) => a - b);
  const small = scales[0]!;
  const rows: Row[] = [];
  for (const users of scales) {
    const rs = e2e.filter((r) => r.config === `e2e:${users}`);
    const ex = rs.map((r) => r.extra as unknown as E2eExtra);
    const ratios = rs.map((r) => r.value / (e2e.find((x) => x.config === `e2e:${small}` && x.run === r.run)?.value ?? NaN));
    const ratio = median(ratios);
    const rss = summarize(ex.map((e) => e.maxRssMb));
    const isBig = users !== small;
    const memory = `engine peak RSS ${fmt(rss.median)} MB (max ${fmt(rss.max)}), heap after GC middle ${median(ex.map((e) => e.heapMiddleMb)).toFixed(1)} / end ${median(ex.map((e) => e.heapEndMb)).toFixed(1)} MB`;
    const refill = `start-up refill (start -> first send) ${fmt(median(ex.map((e) => e.firstSentMs)))} ms`;
    rows.push(
      rowOf(rs, {
        workload: 'W4 end to end',
        config: `${fmt(users)} users x 3 campaigns, one service, ${fmt(rs[0]!.messages!)} msgs (${fmt(rs[0]!.messages! / (users * 3))} a campaign); ${refill}; ${memory}; seeded in ${ex[0]!.seedSeconds.toFixed(0)} s outside the clock`,
        unit: 'msg/s',
        digits: 0,
        ratio: isBig ? `${ratio.toFixed(2)}x the ${small}-user throughput` : '',
        goal: isBig
          ? `>= 0.9x the throughput at ${small} users; engine peak RSS <= ${RSS_GOAL_MB} MB`
          : `engine peak RSS <= ${RSS_GOAL_MB} MB`,
        met: isBig
          ? verdict(
              ratio >= 0.9 && rss.max <= RSS_GOAL_MB,
              `${fmt(users)} users: ${ratio.toFixed(2)}x (runs ${ratios.map((x) => x.toFixed(2)).join(', ')}); peak RSS ${fmt(rss.max)} MB`,
            )
          : verdict(rss.max <= RSS_GOAL_MB, `peak RSS ${fmt(rss.max)} MB`),
        ...(isBig ? { summary: 'w4' as const } : {}),
      }),
    );
  }
  return rows;
}

export function w4Rows(records: RunRecord[]): Row[] {
  const rows: Row[] = e2eRows(records);
  const decisions = records.filter((r) => !r.config.startsWith('e2e:'));
  const at = (users: number) => median(decisions.filter((r) => r.config === String(users)).map((r) => r.value));
  for (const users of SCALES) {
    const rs = decisions.filter((r) => r.config === String(users));
    if (!rs.length) continue;
    const heap = median(rs.map((r) => (r.extra as { heapMb: number }).heapMb));
    const perCampaign = (rs[0]!.extra as { perCampaign: number }).perCampaign;
    const ratio = at(users) / at(100);
    rows.push(
      rowOf(rs, {
        workload: 'W4 decision cost (report)',
        config: `${fmt(users)} users x 3 campaigns (${perCampaign} buffered each), in memory, ${fmt(rs[0]!.messages!)} decisions: FairRing.next() + buffer take; heap ${heap.toFixed(1)} MB`,
        unit: 'µs/decision',
        digits: 3,
        ratio: `${ratio.toFixed(2)}x the 100-user cost`,
        goal: 'report',
        met: '-',
      }),
    );
  }
  return rows;
}
