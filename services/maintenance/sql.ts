/** Runs a statement with `$name` bind parameters and returns its rows (services/kernel/db-query.ts). */
export { queryRows as select } from '../kernel/db-query.js';

/** Milliseconds since `t0` (a performance.now() reading), to a tenth of a millisecond. */
export function elapsedMs(t0: number): number {
  return Math.round((performance.now() - t0) * 10) / 10;
}
