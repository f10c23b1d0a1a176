/**
 * cleanup_old_data: removes the subtasks of campaigns finished (completed or cancelled) more than
 * `retentionDays` ago, send attempts made that long ago (send_attempts, by its BRIN index on the
 * time), error logs last seen that long ago, and old maintenance_runs claims.
 *
 * Per campaign, in this order:
 * 1. one short transaction locks the campaign row, records it in purged_campaigns, and stores the
 *    final counts of its subtasks (GROUP BY) in tasks.total_count / sent_count / failed_count /
 *    cancelled_count / unknown_count, so its totals can still be reported once the rows are gone. The counts are
 *    stored only by the transaction that inserts the purged_campaigns row: a purge resumed after a
 *    crash, or running in two processes at once, never overwrites them with the counts of a queue
 *    already partly deleted.
 * 2. DELETE statements of at most `batchSize` rows each, each its own implicit transaction, by ctid
 *    (`ctid = ANY (ARRAY(...))` gives a TID scan; the inner SELECT walks the primary key's task_id
 *    prefix), so no statement holds locks or a snapshot for long and autovacuum can follow; a
 *    1,000-row batch takes milliseconds. Stopping the runner stops between two batches; the next run
 *    carries on (the campaign still has subtasks, its counts are already stored).
 *
 * Times compare with the runner's clock (`now - retentionDays`), not the server's, so tests drive them.
 */
import type { JobDefinition, JobResult } from '../job-runner.js';
import { select } from '../sql.js';

export interface CampaignPurge {
  taskId: number;
  /** Counts stored on the campaign by this run (null when a previous run had already stored them). */
  storedCounts: { total: number; sent: number; failed: number; cancelled: number; unknown: number } | null;
  subtasksDeleted: number;
  deleteStatements: number;
}

export interface CleanupResult extends JobResult {
  cutoff: Date;
  retentionDays: number;
  batchSize: number;
  campaigns: CampaignPurge[];
  subtasksDeleted: number;
  errorLogsDeleted: number;
  /** Keys of applied bounce reports (bounce_event_keys) older than the cutoff: no provider retries that late. */
  eventKeysDeleted: number;
  /** Attempt records (send_attempts) older than the cutoff. */
  attemptsDeleted: number;
  runsDeleted: number;
  /** Every DELETE statement issued (subtasks, attempts and error logs), each of at most batchSize rows. */
  deleteStatements: number;
  /** True when the runner stopped the job between two batches; the next run carries on. */
  interrupted: boolean;
}

export function cleanupOldData(opts: { retentionDays: number; batchSize: number }): Omit<JobDefinition<CleanupResult>, 'schedule'> {
  return {
    name: 'cleanup_old_data',
    description: `deletes subtasks of campaigns finished over ${opts.retentionDays} days ago (totals kept on the campaign), older send attempts, old error logs and old bounce report keys, ${opts.batchSize} rows per statement`,
    singleton: true,
    async run({ db, now, signal, logger }) {
      const cutoff = now.minus({ days: opts.retentionDays }).toJSDate();
      const batch = opts.batchSize;
      const result: CleanupResult = {
        level: 'ok',
        cutoff,
        retentionDays: opts.retentionDays,
        batchSize: batch,
        campaigns: [],
        subtasksDeleted: 0,
        errorLogsDeleted: 0,
        eventKeysDeleted: 0,
        attemptsDeleted: 0,
        runsDeleted: 0,
        deleteStatements: 0,
        interrupted: false,
      };
      const deleteBatch = async (sql: string, bind: Record<string, unknown>): Promise<number> => {
        const [r] = await select<{ n: number }>(db, `WITH d AS (${sql} RETURNING 1) SELECT count(*)::int AS n FROM d`, bind);
        result.deleteStatements++;
        return r!.n;
      };

      const due = await select<{ id: string }>(
        db,
        `SELECT t.id FROM tasks t
          WHERE t.status IN ('completed', 'cancelled') AND coalesce(t.completed_at, t.updated_at) < $cutoff
            AND EXISTS (SELECT 1 FROM subtasks s WHERE s.task_id = t.id)
          ORDER BY t.id`,
        { cutoff },
      );
      for (const { id } of due) {
        if (signal.aborted) break;
        const taskId = Number(id);
        const storedCounts = await db.transaction(async (transaction) => {
          const [locked] = await select(
            db,
            `SELECT id FROM tasks WHERE id = $id AND status IN ('completed', 'cancelled') FOR UPDATE`,
            { id: taskId },
            transaction,
          );
          if (!locked) return undefined; // gone meanwhile
          const [stored] = await select<{ total: number; sent: number; failed: number; cancelled: number; unknown: number }>(
            db,
            `WITH mark AS (
               INSERT INTO purged_campaigns (task_id, counts_saved_at) VALUES ($id, $now)
               ON CONFLICT (task_id) DO NOTHING RETURNING task_id
             ), counts AS (
               SELECT count(*)::int AS total,
                      count(*) FILTER (WHERE status = 'sent')::int AS sent,
                      count(*) FILTER (WHERE status = 'failed')::int AS failed,
                      count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
                      count(*) FILTER (WHERE status = 'unknown')::int AS unknown
                 FROM subtasks WHERE task_id = $id
             )
             UPDATE tasks t SET total_count = c.total, sent_count = c.sent, failed_count = c.failed, cancelled_count = c.cancelled,
                    unknown_count = c.unknown
               FROM counts c, mark m WHERE t.id = m.task_id
             RETURNING t.total_count AS total, t.sent_count AS sent, t.failed_count AS failed, t.cancelled_count AS cancelled,
                       t.unknown_count AS unknown`,
            { id: taskId, now: now.toJSDate() },
            transaction,
          );
          return stored ?? null;
        });
        if (storedCounts === undefined) continue;
        const purge: CampaignPurge = { taskId, storedCounts, subtasksDeleted: 0, deleteStatements: 0 };
        result.campaigns.push(purge);
        for (;;) {
          if (signal.aborted) {
            result.interrupted = true;
            break;
          }
          const n = await deleteBatch(
            `DELETE FROM subtasks WHERE ctid = ANY (ARRAY(SELECT ctid FROM subtasks WHERE task_id = $id LIMIT $batch))`,
            {
              id: taskId,
              batch,
            },
          );
          purge.deleteStatements++;
          purge.subtasksDeleted += n;
          if (n < batch) break;
        }
        await db.query(
          `UPDATE purged_campaigns SET subtasks_deleted = subtasks_deleted + $n,
                  finished_at = CASE WHEN $done THEN $now::timestamptz END
            WHERE task_id = $id`,
          { bind: { n: purge.subtasksDeleted, done: !result.interrupted, now: now.toJSDate(), id: taskId } },
        );
        result.subtasksDeleted += purge.subtasksDeleted;
        logger.debug(purge, `purged the subtasks of campaign ${taskId}`);
      }

      while (!signal.aborted) {
        const n = await deleteBatch(
          `DELETE FROM send_attempts WHERE ctid = ANY (ARRAY(SELECT ctid FROM send_attempts WHERE attempted_at < $cutoff LIMIT $batch))`,
          { cutoff, batch },
        );
        result.attemptsDeleted += n;
        if (n < batch) break;
      }
      while (!signal.aborted) {
        const n = await deleteBatch(
          `DELETE FROM error_logs WHERE id = ANY (ARRAY(SELECT id FROM error_logs WHERE last_seen_at < $cutoff ORDER BY id LIMIT $batch))`,
          { cutoff, batch },
        );
        result.errorLogsDeleted += n;
        if (n < batch) break;
      }
      while (!signal.aborted) {
        const n = await deleteBatch(
          `DELETE FROM bounce_event_keys WHERE key = ANY (ARRAY(SELECT key FROM bounce_event_keys WHERE received_at < $cutoff LIMIT $batch))`,
          { cutoff, batch },
        );
        result.eventKeysDeleted += n;
        if (n < batch) break;
      }
      if (signal.aborted) result.interrupted = true;
      else {
        const [r] = await select<{ n: number }>(
          db,
          `WITH d AS (DELETE FROM maintenance_runs WHERE scheduled_for < $cutoff RETURNING 1) SELECT count(*)::int AS n FROM d`,
          { cutoff },
        );
        result.runsDeleted = r!.n;
      }
      return result;
    },
  };
}
