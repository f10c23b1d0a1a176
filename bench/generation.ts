/**
 * W2: how long pre-generating the queue of a 1,000,000-recipient campaign takes (goal, #18: <= 2.5 s
 * on the 2-core development machine). Makes its own database and data: one user with N tagged
 * contacts (N = BENCH_RECIPIENTS, default 1,000,000; 10 % carry an excluded tag on top, so the
 * rule does real filtering), one campaign with a tag rule, then times processScheduledTasks().
 * Prints a line like `1,000,000 recipients generated in 3.9 s`. Runs RUNS times (default 3) on
 * fresh campaigns and reports the median, min and max. `npm run bench` runs the same as W2.
 * Each run also generates the same queue without resolving mailbox providers (the path before
 * issue 13), in alternating order, and prints what the resolution costs (with / without).
 */
import { createEngine } from '../src/engine.js';
import { createLogger } from '../services/kernel/logger.js';
import { createBenchDatabase } from './lib/bench-db.js';
import { loadGenerationData, plainGenerator, prepareGenerationRun } from './lib/generation-run.js';

const N = Number(process.env.BENCH_RECIPIENTS ?? 1_000_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
/** #18: 2.5 s a million, scaled to N. */
const GOAL_S = (2.5 * N) / 1e6;
const fmt = (n: number) => n.toLocaleString('en-US');

async function main() {
  const db = await createBenchDatabase('generation');
  const engine = await createEngine({ databaseUrl: db.url, logger: createLogger('warn') });
  const plain = await plainGenerator(db.url);
  try {
    const data = await loadGenerationData(engine, N, RUNS);
    const times: number[] = [];
    const ratios: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const took: Record<string, number> = {};
      for (const resolve of run % 2 === 0 ? [true, false] : [false, true]) {
        const { generate } = await prepareGenerationRun(engine, data, N, `${run} ${resolve}`, resolve ? undefined : plain.generator);
        const started = performance.now();
        await generate();
        took[String(resolve)] = (performance.now() - started) / 1000;
      }
      times.push(took.true!);
      ratios.push(took.true! / took.false!);
      console.log(
        `run ${run + 1}: ${fmt(N)} recipients generated in ${took.true!.toFixed(2)} s (without provider resolution ${took.false!.toFixed(2)} s: x${(took.true! / took.false!).toFixed(2)})`,
      );
    }
    const mid = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const sorted = [...times].sort((a, b) => a - b);
    const median = mid(times);
    console.log(
      `${fmt(N)} recipients generated in ${median.toFixed(1)} s (median of ${RUNS}; min ${sorted[0]!.toFixed(1)} s, max ${sorted.at(-1)!.toFixed(1)} s; ${db.label}; goal <= ${GOAL_S} s: ${median <= GOAL_S ? 'met' : 'NOT met'})`,
    );
    console.log(`resolving mailbox providers costs x${mid(ratios).toFixed(2)} the generation time without it (median of the runs' ratios)`);
  } finally {
    await plain.close();
    await engine.close();
    await db.drop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
