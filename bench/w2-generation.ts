/** W2 generation: seconds to pre-generate a 1,000,000-recipient queue (quick: 100,000); goal <= 5 s (scaled for quick). */
import { benchEngine } from './lib/fixtures.js';
import { loadGenerationData, prepareGenerationRun } from './lib/generation-run.js';
import { measure, type BenchContext, type RunRecord } from './lib/harness.js';
import { rowOf, verdict, type Row } from './lib/report.js';
import { fmt } from './lib/stats.js';

export async function runW2(ctx: BenchContext, runs: number): Promise<RunRecord[]> {
  const n = ctx.quick ? 100_000 : 1_000_000;
  const db = await ctx.server.newDatabase('w2');
  const engine = await benchEngine(db.url);
  const records: RunRecord[] = [];
  try {
    const data = await loadGenerationData(engine, n, runs);
    for (let run = 1; run <= runs; run++) {
      const { generate } = await prepareGenerationRun(engine, data, n, run);
      const m = await measure(ctx, { go: generate, teardown: async () => undefined });
      records.push({ config: 'generation', run, value: m.seconds, seconds: m.seconds, messages: n, cpu: m.cpu });
      ctx.log(`W2 run ${run}: ${fmt(n)} recipients in ${m.seconds.toFixed(2)} s (CPU postgres ${m.cpu.postgres.toFixed(2)} s)`);
    }
  } finally {
    await engine.close();
    await db.drop();
  }
  return records;
}

export function w2Rows(records: RunRecord[], quick: boolean): Row[] {
  const n = records[0]?.messages ?? 0;
  // The goal is for a million; the quick run's 100,000 gets the proportional 0.5 s.
  const goal = quick ? 0.5 : 5;
  const r = rowOf(records, {
    workload: 'W2 generation',
    config: `pre-generate ${fmt(n)} tag-matched recipients (tag rule over ${fmt(Math.round(n * 1.1))} contacts), one INSERT ... SELECT`,
    unit: 's',
    digits: 2,
    goal: `<= ${goal} s${quick ? ' (5 s per million, scaled)' : ''}`,
    met: '',
  });
  r.met = verdict(r.median <= goal);
  return [r];
}
