/**
 * One clock for every thread of the process. `performance.timeOrigin` is each thread's own start,
 * so `timeOrigin + performance.now()` may differ by a little between a worker thread and the main
 * thread; process.hrtime is the same monotonic clock in all of them. An instant taken in a worker
 * thread travels as monotonic milliseconds and is turned into the main thread's epoch milliseconds
 * by its age.
 */

/** Monotonic milliseconds (sub-millisecond precision), the same clock in every thread. */
export const monoNow = (): number => Number(process.hrtime.bigint()) / 1e6;

/** A monotonic instant (monoNow, any thread) as this thread's epoch milliseconds (pacer.ts preciseNow). */
export function monoToEpoch(mono: number): number {
  return performance.timeOrigin + performance.now() - (monoNow() - mono);
}
