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
