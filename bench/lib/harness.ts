/**
 * The measuring harness: a workload prepares a configuration (outside the clock), the harness
 * starts the CPU probe and the clock, runs the measured part, stops both, and tears down.
 */
import type { BenchServer } from './bench-db.js';
import type { Sink } from './children.js';
import { RunProbe, type CpuFigures, type PidSource } from './procs.js';

export interface RunRecord {
  config: string;
  run: number;
  /** The headline figure of the run (messages a second, seconds, ...). */
  value: number;
  seconds?: number;
  messages?: number;
  sinkAccepted?: number;
  cpu?: CpuFigures;
  extra?: Record<string, unknown>;
}

export interface Prepared {
  go(): Promise<void>;
  teardown(): Promise<void>;
  engineChildren?: PidSource;
  /**
   * The processes of the store this configuration runs on, when it is not PostgreSQL (BullMQ's
   * Redis): their CPU goes in the table's third CPU column instead of PostgreSQL's.
   */
  store?: PidSource;
}

export interface BenchContext {
  quick: boolean;
  server: BenchServer;
  sink: Sink;
  log(line: string): void;
}

/** Runs one measured part: returns its wall time and the CPU of every party. */
export async function measure(ctx: BenchContext, p: Prepared): Promise<{ seconds: number; cpu: CpuFigures; sinkAccepted: number }> {
  const before = await ctx.sink.accepted();
  const probe = await RunProbe.start({
    ...(p.engineChildren ? { engineChildren: p.engineChildren } : {}),
    sink: async () => [ctx.sink.pid],
    postgres: p.store ?? ctx.server.postgresPids(() => [ctx.sink.pid]),
  });
  const t0 = performance.now();
  try {
    await p.go();
  } catch (err) {
    await probe.stop();
    await p.teardown().catch(() => undefined);
    throw err;
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = await probe.stop();
  const sinkAccepted = (await ctx.sink.accepted()) - before;
  await p.teardown();
  return { seconds, cpu, sinkAccepted };
}
