/**
 * W2 generation: seconds for processScheduledTasks() to pre-generate a tag-rule campaign's queue.
 * Two sizes, each in a database of its own: 1,000,000 recipients over 1,100,000 contacts, every
 * run (quick: 100,000), and 10,000,000 over 11,000,000, one run only (quick: 1,000,000, one run):
 * a 10-million queue per run would take minutes and gigabytes per run. Goals (#18): 1,000,000 in
 * at most 2.5 s; 10,000,000 in at most 30 s with the engine's memory flat: its peak RSS during the
 * 10,000,000 generation at most 1.2x its peak during the 1,000,000 one by the same path, so memory
 * does not grow with the queue (by COPY the rows pass through the engine as a stream under
 * backpressure, services/queue-copy.ts, whose socket buffers add a constant 20-40 MB whatever the
 * size; the row also gives the peak against the RSS just before). Quick runs scale the time goals
 * to their sizes.
 *
 * The cost of resolving mailbox providers (issue 13): at the 1,000,000 size each run also
 * generates the same queue through a generator without provider resolution (the path before it;
 * bench/lib/generation-run.ts), the two in alternating order; a row gives with / without per run.
 *
 * COPY against INSERT ... SELECT: both sizes are at or above GENERATION_COPY_MIN's default (100,000),
 * so the engine writes their queues by COPY. Each run also generates the 1,000,000 queue by the
 * other path (INSERT ... SELECT; by COPY when GENERATION_COPY_MIN puts the engine's path on INSERT),
 * the order rotating from run to run; a row gives COPY / INSERT per run.
 */
import { benchEngine } from './lib/fixtures.js';
import { loadGenerationData, otherPathGenerator, plainGenerator, prepareGenerationRun } from './lib/generation-run.js';
import { measure, type BenchContext, type RunRecord } from './lib/harness.js';
import { rowOf, verdict, type Row } from './lib/report.js';
import { fmt, median } from './lib/stats.js';

const GOAL_S_PER_MILLION = { small: 2.5, big: 3 };
const FLAT = 1.2;

async function runSize(ctx: BenchContext, config: 'small' | 'big', n: number, runs: number): Promise<RunRecord[]> {
  const db = await ctx.server.newDatabase(`w2${config}`);
  const engine = await benchEngine(db.url);
  // The comparisons without provider resolution and by the other path, at the size measured every run.
  const engineByCopy = n >= engine.config.generationCopyMin;
  const plain = config === 'small' ? await plainGenerator(db.url) : undefined;
  const other = config === 'small' ? await otherPathGenerator(db.url, !engineByCopy) : undefined;
  const records: RunRecord[] = [];
  const byOther = async (run: number) => {
    const { generate } = await prepareGenerationRun(engine, data, n, `${run} by the other path`, other!.generator);
    const m = await measure(ctx, { go: generate, teardown: async () => undefined });
    records.push({
      config: 'smallOther',
      run,
      value: m.seconds,
      seconds: m.seconds,
      messages: n,
      cpu: m.cpu,
      extra: { byCopy: !engineByCopy },
    });
    ctx.log(
      `W2 run ${run} by ${engineByCopy ? 'INSERT ... SELECT' : 'COPY'}: ${fmt(n)} recipients in ${m.seconds.toFixed(2)} s (CPU postgres ${m.cpu.postgres.toFixed(2)} s)`,
    );
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
      if (other && run % 3 === 2) await byOther(run);
      if (plain && run % 2 === 0) await without(run);
      const { generate } = await prepareGenerationRun(engine, data, n, run);
      global.gc?.();
      const rssBeforeMb = process.memoryUsage().rss / 2 ** 20;
      const m = await measure(ctx, { go: generate, teardown: async () => undefined });
      const flat = m.cpu.engineRssMb / rssBeforeMb;
      records.push({
        config,
        run,
        value: m.seconds,
        seconds: m.seconds,
        messages: n,
        cpu: m.cpu,
        extra: { rssBeforeMb, flat, byCopy: engineByCopy, copyMin: engine.config.generationCopyMin },
      });
      ctx.log(
        `W2 run ${run}: ${fmt(n)} recipients in ${m.seconds.toFixed(2)} s (CPU postgres ${m.cpu.postgres.toFixed(2)} s); engine RSS ${rssBeforeMb.toFixed(0)} MB before, peak ${m.cpu.engineRssMb.toFixed(0)} MB during`,
      );
      if (plain && run % 2 === 1) await without(run);
      if (other && run % 3 !== 2) await byOther(run);
    }
  } finally {
    await other?.close();
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
    const { byCopy, copyMin } = rs[0]!.extra as { byCopy: boolean; copyMin: number };
    // Memory flat at the big size: its peak against the small size's (the same path), which does
    // not count the pipe's constant buffers as growth.
    const small = records.filter((r) => r.config === 'small');
    const sameSmall = small.length > 0 && (small[0]!.extra as { byCopy: boolean }).byCopy === byCopy;
    const peak = Math.max(...rs.map((r) => r.cpu!.engineRssMb));
    const growth = sameSmall ? peak / median(small.map((r) => r.cpu!.engineRssMb)) : flat;
    const growthText = sameSmall
      ? `peak RSS ${growth.toFixed(2)}x the ${fmt(small[0]!.messages!)} run's (${flat.toFixed(2)}x the RSS before)`
      : `peak RSS ${flat.toFixed(2)}x before`;
    const rssBefore = median(rs.map((r) => (r.extra as { rssBeforeMb: number }).rssBeforeMb));
    const r = rowOf(rs, {
      workload: 'W2 generation',
      config: `pre-generate ${fmt(n)} tag-matched recipients (tag rule over ${fmt(Math.round(n * 1.1))} contacts), ${byCopy ? 'COPY from a second connection' : 'one INSERT ... SELECT'} (GENERATION_COPY_MIN ${fmt(copyMin)})${rs.length === 1 ? ', 1 run' : ''}; engine RSS ${fmt(rssBefore)} MB before, peak ${flat.toFixed(2)}x that during`,
      unit: 's',
      digits: 2,
      goal:
        config === 'small'
          ? `<= ${goal} s${quick ? ' (2.5 s per million, scaled)' : ''}`
          : `<= ${goal} s${quick ? ' (30 s per 10 million, scaled)' : ''}, engine memory flat (peak RSS <= ${FLAT}x the smaller size's)`,
      met: '',
      summary: config === 'small' ? 'w2Million' : 'w2TenMillion',
    });
    r.met =
      config === 'small'
        ? verdict(r.median <= goal, `${fmt(n)} in ${r.median.toFixed(2)} s`)
        : verdict(r.median <= goal && growth <= FLAT, `${fmt(n)} in ${r.median.toFixed(2)} s; ${growthText}`);
    rows.push(r);
    if (config === 'small')
      rows.push(
        ...providerCostRows(
          rs,
          records.filter((x) => x.config === 'smallNoProviders'),
        ),
        ...copyAgainstInsertRows(
          rs,
          records.filter((x) => x.config === 'smallOther'),
          byCopy,
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

/** The same size by the other path than the engine's, and COPY / INSERT per run. */
const copyAgainstInsertRows = (main: RunRecord[], other: RunRecord[], mainByCopy: boolean): Row[] =>
  comparisonRows(main, other, {
    config: (n) =>
      mainByCopy
        ? `the same ${n} by one INSERT ... SELECT (GENERATION_COPY_MIN above ${n}), same database, order rotating`
        : `the same ${n} by COPY from a second connection (GENERATION_COPY_MIN 0), same database, order rotating`,
    ratioConfig: 'COPY against INSERT ... SELECT: generation time COPY / INSERT, per run',
    ratio: (m, o) => (mainByCopy ? m / o : o / m),
  });
