/**
 * The event loop's longest stall, measured so that a loaded machine does not count as the process's.
 *
 * A 10 ms timer measures how late each tick comes, as monitorEventLoopDelay does. On a shared
 * 2-core machine at load 13-35, a thread that is ready to run may wait hundreds of ms for a core:
 * that shows as loop delay although the process did nothing wrong (a busy loop got a quarter of a
 * core there). Linux counts, per thread, the time on a core and the time runnable but not running
 * (/proc/thread-self/schedstat, first and second fields, in ns). For each late tick:
 *   - `cpuMaxMs`: the lateness, at most the thread's own CPU time over the same interval: the work
 *     (JavaScript, GC on this thread) that held the loop. Blind to time asleep in the thread
 *     (synchronous file I/O, waiting for starved GC helper threads);
 *   - `ownMaxMs`: the lateness less the thread's wait for a core over the same interval, which
 *     counts that sleep too (so under heavy load it still grows with the helper threads' waits).
 * Where schedstat cannot be read (not Linux), both are the raw lateness.
 */
import { readFileSync } from 'node:fs';

const SCHEDSTAT = '/proc/thread-self/schedstat';

/** [ns on a core, ns runnable and waiting for one], or undefined. */
function schedstat(): [number, number] | undefined {
  try {
    const [run, wait] = readFileSync(SCHEDSTAT, 'utf8').split(' ').map(Number);
    return Number.isFinite(run) && Number.isFinite(wait) ? [run!, wait!] : undefined;
  } catch {
    return undefined;
  }
}

export interface LoopStall {
  /** Longest lateness of a tick (ms), wall clock: what monitorEventLoopDelay reports. */
  maxMs: number;
  /** Longest lateness bounded by the thread's CPU time in the same interval (ms). */
  cpuMaxMs: number;
  /** Longest lateness less the thread's wait for a core in the same interval (ms). */
  ownMaxMs: number;
  /** Time the thread waited for a core over the whole measure (ms). */
  waitMs: number;
  /** Whether schedstat could be read; if not, cpuMaxMs and ownMaxMs are maxMs. */
  corrected: boolean;
  ticks: number;
}

/** Starts measuring on the calling thread; `stop()` ends it and returns the figures. */
export function measureLoopStall(intervalMs = 10): { stop(): LoopStall } {
  const first = schedstat();
  const corrected = first !== undefined;
  let last = first ?? [0, 0];
  let lastAt = performance.now();
  let maxMs = 0;
  let cpuMaxMs = 0;
  let ownMaxMs = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const at = performance.now();
    const now = (corrected && schedstat()) || last;
    const late = Math.max(0, at - lastAt - intervalMs);
    maxMs = Math.max(maxMs, late);
    cpuMaxMs = Math.max(cpuMaxMs, corrected ? Math.min(late, (now[0] - last[0]) / 1e6) : late);
    ownMaxMs = Math.max(ownMaxMs, corrected ? Math.max(0, late - (now[1] - last[1]) / 1e6) : late);
    ticks++;
    lastAt = at;
    last = now;
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      const end = (corrected && schedstat()) || last;
      return { maxMs, cpuMaxMs, ownMaxMs, waitMs: corrected ? (end[1] - first![1]) / 1e6 : 0, corrected, ticks };
    },
  };
}
