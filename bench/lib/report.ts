/** The markdown table: one row per figure, medians with min and max, CPU per party, goal and verdict. */
import type { RunRecord } from './harness.js';
import { fmt, median, summarize } from './stats.js';

export interface Row {
  workload: string;
  config: string;
  unit: string;
  median: number;
  min: number;
  max: number;
  digits: number;
  /** Median CPU seconds of one run: engine, sink, PostgreSQL. */
  cpu?: { engine: number; sink: number; postgres: number };
  rssMb?: number;
  ratio?: string;
  goal: string;
  met: string;
  /** Set on the rows that carry a goal of #18 (a key of GOALS_18), for the summary table. */
  summary?: Goal18;
}

/** A row from run records' values, with the CPU and RSS medians when recorded. */
export function rowOf(
  records: RunRecord[],
  r: Omit<Row, 'median' | 'min' | 'max' | 'cpu' | 'rssMb'>,
  values = records.map((x) => x.value),
): Row {
  const s = summarize(values);
  const withCpu = records.filter((x) => x.cpu);
  return {
    ...r,
    median: s.median,
    min: s.min,
    max: s.max,
    ...(withCpu.length
      ? {
          cpu: {
            engine: median(withCpu.map((x) => x.cpu!.engine)),
            sink: median(withCpu.map((x) => x.cpu!.sink)),
            postgres: median(withCpu.map((x) => x.cpu!.postgres)),
          },
          rssMb: median(withCpu.map((x) => x.cpu!.engineRssMb)),
        }
      : {}),
  };
}

export const verdict = (ok: boolean, detail = '') => (ok ? 'met' : 'NOT met') + (detail ? ` (${detail})` : '');

/** The goals of #18, in its order. */
export const GOALS_18 = {
  w1Ceiling: 'W1, one process: >= 1.25x the single-thread nodemailer ceiling',
  w1Peers: 'W1: ahead of pg-boss, graphile-worker batched and BullMQ in every run',
  w1Multi: 'W1-multi, 4 services on 2 processes (SEND_WORKERS=1 each, spread 2 and 2): >= 1.15x one',
  w4: 'W4: at 10,000 users >= 0.9x the throughput at 10 users; memory <= 300 MB',
  w2Million: 'W2: 1,000,000 recipients in <= 2.5 s',
  w2TenMillion: "W2: 10,000,000 recipients in <= 30 s with the engine's memory flat",
  w5: 'W5: heap flat over 1,000,000 messages',
} as const;
export type Goal18 = keyof typeof GOALS_18;

/** The goals of #18, one line each, with the verdict of this run's figures ("not measured" when no row carries it). */
export function buildSummary(rows: Row[], quick: boolean): string {
  const cell = (x: string) => x.replace(/\|/g, '/');
  return [
    `| Goal (#18) | Verdict${quick ? ' (quick: smaller sizes, time goals scaled)' : ''} |`,
    '| --- | --- |',
    ...(Object.keys(GOALS_18) as Goal18[]).map((k) => {
      const r = rows.find((x) => x.summary === k);
      return `| ${cell(GOALS_18[k])} | ${r ? cell(r.met) : 'not measured in this run'} |`;
    }),
  ].join('\n');
}

export function buildTable(rows: Row[]): string {
  const head = [
    'Workload',
    'Configuration',
    'Median',
    'Min',
    'Max',
    'CPU s engine / sink / pg',
    'Peak RSS MB',
    'vs ceiling',
    'Goal',
    'Met',
  ];
  const lines = [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`];
  for (const r of rows) {
    const num = (v: number) => (Number.isFinite(v) ? `${fmt(v, r.digits)}${r.unit ? ` ${r.unit}` : ''}` : '-');
    const cells = [
      r.workload,
      r.config,
      num(r.median),
      num(r.min),
      num(r.max),
      r.cpu ? `${r.cpu.engine.toFixed(2)} / ${r.cpu.sink.toFixed(2)} / ${r.cpu.postgres.toFixed(2)}` : '-',
      r.rssMb !== undefined ? fmt(r.rssMb) : '-',
      r.ratio ?? '',
      r.goal,
      r.met,
    ];
    lines.push(`| ${cells.map((c) => c.replace(/\|/g, '/')).join(' | ')} |`);
  }
  return lines.join('\n');
}
