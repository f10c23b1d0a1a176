/**
 * Figures of the chaos suite. Every test records one row (what it injected, what it sent, what
 * was lost, the duplicates and their bound, how many inputs it tried) in its own JSON file, so
 * rows survive jest's workers; the global teardown prints them as one markdown table and writes
 * it to test-artifacts/chaos-summary.md, which the README's reliability section quotes
 * (CHAOS_SUMMARY_FILE names another: CI's second run, with SEND_WORKERS=2, keeps the first's).
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// import.meta.url, not import.meta.dirname: jest's ESM modules (vm) do not set dirname.
const here = dirname(fileURLToPath(import.meta.url));
export const FIGURES_DIR = resolve(here, '../../test-artifacts/chaos');
export const SUMMARY_FILE = resolve(process.env.CHAOS_SUMMARY_FILE ?? resolve(here, '../../test-artifacts/chaos-summary.md'));

export interface ChaosFigures {
  /** Short name of the scenario, e.g. "SIGKILL at 10 seeded points (at-least-once)". */
  scenario: string;
  /** Faults injected (kills, restarts, SMTP fault replies, hostile inputs refused...). */
  faultsInjected: number;
  /** Of those, how many the engine came through as documented. */
  faultsSurvived: number;
  /** Messages the SMTP servers accepted. */
  messagesSent: number;
  /** Recipients that never reached a final state or a server when they should have: must be 0. */
  lost: number;
  /** Messages received more than once. */
  duplicates: number;
  /** The documented bound on duplicates for this scenario (0 in at-most-once mode). */
  duplicateBound: number;
  /** Generated or hand-written inputs tried (property tests, hostile bodies). */
  inputsTried: number;
  /** One short line of anything else worth reading (seed, heap before and after...). */
  notes?: string;
}

/** Records one row; call once per scenario, after its assertions passed. */
export async function recordFigures(row: ChaosFigures): Promise<void> {
  await mkdir(FIGURES_DIR, { recursive: true });
  const file = `${Date.now()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}.json`;
  await writeFile(join(FIGURES_DIR, file), JSON.stringify(row));
}

export async function readFigures(): Promise<ChaosFigures[]> {
  let files: string[];
  try {
    files = (await readdir(FIGURES_DIR)).filter((f) => f.endsWith('.json')).sort();
  } catch {
    return [];
  }
  return Promise.all(files.map(async (f) => JSON.parse(await readFile(join(FIGURES_DIR, f), 'utf8')) as ChaosFigures));
}

export function summaryTable(rows: ChaosFigures[]): string {
  const head = '| scenario | faults injected | survived | messages sent | lost | duplicates (bound) | inputs tried | notes |';
  const line = '|---|---:|---:|---:|---:|---:|---:|---|';
  const body = rows.map(
    (r) =>
      `| ${r.scenario} | ${r.faultsInjected} | ${r.faultsSurvived} | ${r.messagesSent} | ${r.lost} | ${r.duplicates} (${r.duplicateBound}) | ${r.inputsTried} | ${r.notes ?? ''} |`,
  );
  const sum = (k: keyof ChaosFigures) => rows.reduce((n, r) => n + (typeof r[k] === 'number' ? (r[k] as number) : 0), 0);
  const total = `| **total** | ${sum('faultsInjected')} | ${sum('faultsSurvived')} | ${sum('messagesSent')} | ${sum('lost')} | ${sum('duplicates')} | ${sum('inputsTried')} | |`;
  return [head, line, ...body, total].join('\n');
}

export async function printSummary(): Promise<void> {
  const rows = await readFigures();
  if (rows.length === 0) {
    console.log('\n[fairsend chaos] no figures were recorded');
    return;
  }
  const table = summaryTable(rows);
  await writeFile(SUMMARY_FILE, table + '\n');
  const workers = process.env.SEND_WORKERS === undefined ? 'default' : process.env.SEND_WORKERS;
  console.log(`\n[fairsend chaos] summary, SEND_WORKERS ${workers} (also in ${SUMMARY_FILE}):\n\n${table}\n`);
}
