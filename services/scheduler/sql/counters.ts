/**
 * A campaign's counters and its completion rule, in ONE place. Every statement that moves
 * messages to a final state (the outcome write, lease recovery under at-most-once, an
 * unsubscribe's cancellation, a campaign's cancellation) adds its per-campaign deltas through
 * this fragment, so the rule cannot drift between copies:
 *
 *   sending -> completed  when sent + failed + cancelled + unknown reaches total_count, and then
 *                         completed_at is set in the same statement (never one without the other).
 *
 * A campaign in any other status (paused, cancelled) only has its counters moved.
 */

/** The columns a deltas relation must have: one row per campaign. */
export const DELTA_COLUMNS = ['task_id', 'sent', 'failed', 'cancelled', 'unknown'] as const;

/**
 * `UPDATE tasks ... FROM <deltas> d WHERE tasks.id = d.task_id`, for use as a data-modifying CTE;
 * the caller appends its RETURNING clause (it may name `d.*` and `tasks.*`). `deltas` is a CTE name
 * or a parenthesised subquery with the columns of DELTA_COLUMNS.
 */
export function applyCounters(deltas: string): string {
  const done = `sent_count + failed_count + cancelled_count + unknown_count + d.sent + d.failed + d.cancelled + d.unknown`;
  const completes = `tasks.status = 'sending' AND ${done} >= total_count`;
  return `UPDATE tasks SET sent_count = sent_count + d.sent, failed_count = failed_count + d.failed,
              cancelled_count = cancelled_count + d.cancelled, unknown_count = unknown_count + d.unknown,
              status = CASE WHEN ${completes} THEN 'completed' ELSE tasks.status END,
              completed_at = CASE WHEN ${completes} THEN now() ELSE tasks.completed_at END,
              updated_at = now()
         FROM ${deltas} d WHERE tasks.id = d.task_id`;
}
