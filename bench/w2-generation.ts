/**
 * W2 generation: seconds for processScheduledTasks() to pre-generate a tag-rule campaign's queue.
 * Two sizes, each in a database of its own: 1,000,000 recipients over 1,100,000 contacts, every
 * run (quick: 100,000), and 10,000,000 over 11,000,000, one run only (quick: 1,000,000, one run):
 * a 10-million queue per run would take minutes and gigabytes per run. Goals (#18): 1,000,000 in
 * at most 2.5 s; 10,000,000 in at most 30 s with the engine's memory flat (its peak RSS during the
 * generation at most 1.2x its RSS before; at 10,000,000 the rows go by COPY through the engine,
 * as a stream under backpressure: services/queue-copy.ts). Quick runs scale the time goals to
 * their sizes.
 *
 * The cost of resolving mailbox providers (issue 13): at the 1,000,000 size each run also
 * generates the same queue through a generator without provider resolution (the path before it;
 * bench/lib/generation-run.ts), the two in alternating order; a row gives with / without per run.
 *
 * COPY against INSERT ... SELECT: 1,000,000 is below GENERATION_COPY_MIN's default (5,000,000), so
 * the engine writes that queue by INSERT ... SELECT and the 10,000,000 one by COPY. Each run also
 * generates the 1,000,000 queue by COPY (a generator with GENERATION_COPY_MIN 0), the order rotating
 * from run to run; a row gives COPY / INSERT per run.
 */
import { benchEngine } from './lib/fixtures.js';
import { copyGenerator, loadGenerationData, plainGenerator, prepareGenerationRun } from './lib/generation-run.js';
import { measure, type BenchContext, type RunRecord } from './lib/harness.js';
import { rowOf, verdict, type Row } from './lib/report.js';
import { fmt, median } from './lib/stats.js';

const GOAL_S_PER_MILLION = { small: 2.5, big: 3 };
const FLAT = 1.2;

async function runSize(ctx: BenchContext, config: 'small' | 'big', n: number, runs: number): Promise<RunRecord[]> {
  const db = await ctx.server.newDatabase(`w2${config}`);
  const engine = await benchEngine(db.url);
  // The comparisons without provider resolution and by COPY, at the size measured every run.
  const plain = config === 'small' ? await plainGenerator(db.url) : undefined;
  const copying = config === 'small' ? await copyGenerator(db.url) : undefined;
  const records: RunRecord[] = [];
  const byCopy = async (run: number) => {
    const { generate } = await prepareGenerationRun(engine, data, n, `${run} by COPY`, copying!.generator);
    const m = await measure(ctx, { go: generate, teardown: async () => undefined });
    records.push({ config: 'smallCopy', run, value: m.seconds, seconds: m.seconds, messages: n, cpu: m.cpu });
    ctx.log(`W2 run ${run} by COPY: ${fmt(n)} recipients in ${m.seconds.toFixed(2)} s (CPU postgres ${m.cpu.postgres.toFixed(2)} s)`);
  };
  const without = async (run: number) => {
    const { generate } = await prepareGenerationRun(engine, data, n, `${run} without providers`, plain!.generator);
    const m = await measure(ctx, { go: generate, teardown: async () => undefined });
    records.push({ config: 'smallNoProviders', run, value: m.seconds, seconds: m.seconds, messages: n, cpu: m.cpu });
    ctx.log(
      `W2 run ${run} without provider resolution: ${fmt(n)} recipients in ${m.seconds.toFixed(2)} s (CPU postgres ${m.cpu.postgres.toFixed(2)} s)`,
    );
  };
  let data!: Awaited<ReturnType<typeof loadGenerationData>>;
  try {
    const t0 = performance.now();
    data = await loadGenerationData(engine, n, runs);
    ctx.log(`W2 loaded ${fmt(Math.round(n * 1.1))} contacts in ${((performance.now() - t0) / 1000).toFixed(1)} s (outside the clock)`);
    for (let run = 1; run <= runs; run++) {
      if (copying && run % 3 === 2) await byCopy(run);
      if (plain && run % 2 === 0) await without(run);
      const { generate } = await prepareGenerationRun(engine, data, n, run);
      global.gc?.();
      const rssBeforeMb = process.memoryUsage().rss / 2 ** 20;
      const m = await measure(ctx, { go: generate, teardown: async () => undefined });
      const flat = m.cpu.engineRssMb / rssBeforeMb;
      records.push({ config, run, value: m.seconds, seconds: m.seconds, messages: n, cpu: m.cpu, extra: { rssBeforeMb, flat } });
      ctx.log(
        `W2 run ${run}: ${fmt(n)} recipients in ${m.seconds.toFixed(2)} s (CPU postgres ${m.cpu.postgres.toFixed(2)} s); engine RSS ${rssBeforeMb.toFixed(0)} MB before, peak ${m.cpu.engineRssMb.toFixed(0)} MB during`,
      );
      if (plain && run % 2 === 1) await without(run);
      if (copying && run % 3 !== 2) await byCopy(run);
    }
  } finally {
    await copying?.close();
    await plain?.close();
    await engine.close();
    await db.drop();
  }
  return records;
}

export async function runW2(ctx: BenchContext, runs: number): Promise<RunRecord[]> {
  const small = ctx.quick ? 100_000 : 1_000_000;
  const big = ctx.quick ? 1_000_000 : 10_000_000;
  return [...(await runSize(ctx, 'small', small, runs)), ...(await runSize(ctx, 'big', big, 1))];
}

export function w2Rows(records: RunRecord[], quick: boolean): Row[] {
  const rows: Row[] = [];
  for (const config of ['small', 'big'] as const) {
    const rs = records.filter((r) => r.config === config);
    if (!rs.length) continue;
    const n = rs[0]!.messages!;
    const goal = (GOAL_S_PER_MILLION[config] * n) / 1e6;
    const flat = Math.max(...rs.map((r) => (r.extra as { flat: number }).flat));
    const rssBefore = median(rs.map((r) => (r.extra as { rssBeforeMb: number }).rssBeforeMb));
    const r = rowOf(rs, {
      workload: 'W2 generation',
      config: `pre-generate ${fmt(n)} tag-matched recipients (tag rule over ${fmt(Math.round(n * 1.1))} contacts), ${n >= 5_000_000 ? 'COPY from a second connection' : 'one INSERT ... SELECT'} (GENERATION_COPY_MIN 5,000,000)${rs.length === 1 ? ', 1 run' : ''}; engine RSS ${fmt(rssBefore)} MB before, peak ${flat.toFixed(2)}x that during`,
      unit: 's',
      digits: 2,
      goal:
        config === 'small'
          ? `<= ${goal} s${quick ? ' (2.5 s per million, scaled)' : ''}`
          : `<= ${goal} s${quick ? ' (30 s per 10 million, scaled)' : ''}, engine memory flat (peak RSS <= ${FLAT}x before)`,
      met: '',
      summary: config === 'small' ? 'w2Million' : 'w2TenMillion',
    });
    r.met =
      config === 'small'
        ? verdict(r.median <= goal, `${fmt(n)} in ${r.median.toFixed(2)} s`)
        : verdict(r.median <= goal && flat <= FLAT, `${fmt(n)} in ${r.median.toFixed(2)} s; peak RSS ${flat.toFixed(2)}x before`);
    rows.push(r);
    if (config === 'small')
      rows.push(
        ...providerCostRows(
          rs,
          records.filter((x) => x.config === 'smallNoProviders'),
        ),
        ...copyAgainstInsertRows(
          rs,
          records.filter((x) => x.config === 'smallCopy'),
        ),
      );
  }
  return rows;
}

/**
 * A comparison measured beside the main figure in every run: its own row, and a row of the per-run
 * ratio `ratio(main, other)` (median, min, max).
 */
function comparisonRows(
  main: RunRecord[],
  other: RunRecord[],
  o: { config: (n: string) => string; ratioConfig: string; ratio: (main: number, other: number) => number },
): Row[] {
  if (!other.length) return [];
  const n = fmt(main[0]!.messages!);
  const ratios = main.flatMap((m) => {
    const x = other.find((r) => r.run === m.run);
    return x ? [o.ratio(m.value, x.value)] : [];
  });
  const row = { workload: 'W2 generation', digits: 2, goal: '-', met: '-' };
  const otherRow = rowOf(other, { ...row, config: o.config(n), unit: 's' });
  const ratio = rowOf(main, { ...row, config: o.ratioConfig, unit: 'x' }, ratios);
  delete ratio.cpu;
  delete ratio.rssMb;
  return [otherRow, ratio];
}

/** The same size without provider resolution, and the cost: with / without, per run. */
const providerCostRows = (withP: RunRecord[], without: RunRecord[]): Row[] =>
  comparisonRows(withP, without, {
    config: (n) =>
      `the same ${n} without mailbox-provider resolution (no domain scan, lookups or join: the path before issue 13), same database, alternating order`,
    ratioConfig: 'cost of resolving mailbox providers: generation time with / without, per run',
    ratio: (w, o) => w / o,
  });

/** The same size by COPY, and COPY / INSERT per run. */
const copyAgainstInsertRows = (insert: RunRecord[], copy: RunRecord[]): Row[] =>
  comparisonRows(insert, copy, {
    config: (n) => `the same ${n} by COPY from a second connection (GENERATION_COPY_MIN 0), same database, order rotating`,
    ratioConfig: 'COPY against INSERT ... SELECT: generation time COPY / INSERT, per run',
    ratio: (i, c) => c / i,
  });
