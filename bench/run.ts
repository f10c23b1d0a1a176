/**
 * `npm run bench` (and `npm run bench:quick` with --quick): runs every workload, prints a markdown
 * table, and writes bench/results/<date>.json (every run's raw figures, the machine) and .md.
 * `--only=w1,w3` runs a subset; `--runs=N` changes the number of runs (at least 3 for the table).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createBenchServer } from './lib/bench-db.js';
import { startSink } from './lib/children.js';
import { engineErrors } from './lib/fixtures.js';
import type { BenchContext, RunRecord } from './lib/harness.js';
import { buildSummary, buildTable, type Row } from './lib/report.js';
import { runW1, w1Rows } from './w1-throughput.js';
import { runW1Multi, w1MultiRows } from './w1-multi.js';
import { runW2, w2Rows } from './w2-generation.js';
import { runW3, w3Rows } from './w3-fairness.js';
import { runW4, w4Rows } from './w4-scale.js';
import { runW5, w5Rows } from './w5-longrun.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const only = args
  .find((a) => a.startsWith('--only='))
  ?.slice(7)
  .split(',');
const runs = Number(args.find((a) => a.startsWith('--runs='))?.slice(7) ?? 3);

interface Workload {
  id: string;
  run: (ctx: BenchContext, runs: number) => Promise<RunRecord[]>;
  rows: (records: RunRecord[], quick: boolean) => Row[];
}

const WORKLOADS: Workload[] = [
  { id: 'w1', run: runW1, rows: w1Rows },
  { id: 'w1m', run: runW1Multi, rows: w1MultiRows },
  { id: 'w2', run: runW2, rows: w2Rows },
  { id: 'w3', run: runW3, rows: w3Rows },
  { id: 'w4', run: runW4, rows: w4Rows },
  { id: 'w5', run: runW5, rows: w5Rows },
];

async function main(): Promise<void> {
  const started = new Date();
  const log = (line: string) => console.log(`[${((Date.now() - started.getTime()) / 1000).toFixed(0).padStart(4)} s] ${line}`);
  const results: Record<string, RunRecord[]> = {};
  const errors: Record<string, string> = {};
  const schedulerErrors: Record<string, { count: number; first: string[] }> = {};
  const rows: Row[] = [];
  let postgresVersion = 'unknown';
  let database = '';
  for (const w of WORKLOADS) {
    if (only && !only.includes(w.id)) continue;
    log(`${w.id}: starting`);
    // Each workload has its own database server (or DATABASE_URL's) and its own sink process.
    const server = await createBenchServer(w.id);
    const sink = await startSink();
    try {
      postgresVersion = await server.version();
      database = server.label;
      const records = await w.run({ quick, server, sink, log }, runs);
      results[w.id] = records;
      if (engineErrors.count) log(`${w.id}: ${engineErrors.count} scheduler errors, e.g. ${engineErrors.first.join(' | ')}`);
      schedulerErrors[w.id] = { count: engineErrors.count, first: engineErrors.first.splice(0) };
      engineErrors.count = 0;
      rows.push(...w.rows(records, quick));
    } catch (err) {
      errors[w.id] = err instanceof Error ? (err.stack ?? err.message) : String(err);
      log(`${w.id} FAILED: ${errors[w.id]}`);
    } finally {
      await sink.stop();
      await server.close();
    }
  }
  const machine = {
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cpuCount: cpus().length,
    totalMemoryMb: Math.round(totalmem() / 2 ** 20),
    node: process.version,
    postgres: postgresVersion,
    database,
    platform: `${process.platform} ${process.arch}`,
  };
  const title = `fairsend benchmarks${quick ? ' (quick)' : ''}, ${started.toISOString()}`;
  const table = buildTable(rows);
  const md = [
    `# ${title}`,
    '',
    `Machine: ${machine.cpuCount} x ${machine.cpuModel}, ${machine.totalMemoryMb} MB, Node ${machine.node}, ${machine.postgres} (${machine.database}).`,
    `Medians of ${runs} runs (min and max beside). CPU columns: CPU seconds of one run (median), engine / sink / PostgreSQL.`,
    '',
    table,
    '',
    '## Goals of #18',
    '',
    buildSummary(rows, quick),
    ...(Object.values(schedulerErrors).some((e) => e.count)
      ? [
          '',
          'Scheduler errors during the runs (the engine retried): ' +
            Object.entries(schedulerErrors)
              .filter(([, e]) => e.count)
              .map(([k, e]) => `${k}: ${e.count} (${e.first[0]})`)
              .join('; '),
        ]
      : []),
    ...(Object.keys(errors).length
      ? ['', '## Failed workloads', '', ...Object.entries(errors).map(([k, v]) => `- ${k}: ${v.split('\n')[0]}`)]
      : []),
    '',
  ].join('\n');
  console.log(`\n${md}`);
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  await mkdir(dir, { recursive: true });
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  const base = `${dir}${stamp}${quick ? '-quick' : ''}`;
  await writeFile(`${base}.json`, JSON.stringify({ title, quick, runs, machine, rows, results, errors, schedulerErrors }, null, 2));
  await writeFile(`${base}.md`, md);
  log(`wrote ${base}.json and .md`);
  if (Object.keys(errors).length) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
