/**
 * The table jobs: ANALYZE on the hot tables, the index report, the bloat check.
 *
 * The last two read PostgreSQL's cumulative statistics (pg_stat_user_tables, pg_stat_user_indexes):
 * counters since the last statistics reset, flushed by each backend about once a second. They report
 * and recommend; nothing here creates, drops or rebuilds anything (the MySQL original added indexes
 * on its own, which on PostgreSQL means a lock or a CREATE INDEX CONCURRENTLY a person should choose).
 */
import type { JobDefinition, JobResult } from '../job-runner.js';
import { elapsedMs, select } from '../sql.js';

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

// --------------------------------------------------------------------------------------------- analyze

export interface AnalyzeResult extends JobResult {
  tables: Array<{ table: string; ms: number; error?: string }>;
}

/**
 * ANALYZE, one table at a time, so the planner's row estimates follow the campaign tables, which
 * change by millions of rows a day (a queue generated, then sent). autovacuum analyzes too, but only
 * after 10 % of a table changed: on a 50-million-row subtasks table that can take days. A table that
 * fails (missing, lock timeout) is reported and the others still run.
 */
export function analyzeTables(opts: { analyzeTables: readonly string[] }): Omit<JobDefinition<AnalyzeResult>, 'schedule'> {
  return {
    name: 'analyze_tables',
    description: `ANALYZE ${opts.analyzeTables.join(', ')}`,
    singleton: true,
    async run({ db, signal }) {
      const tables: AnalyzeResult['tables'] = [];
      for (const table of opts.analyzeTables) {
        if (signal.aborted) break;
        const t0 = performance.now();
        try {
          await db.query(`ANALYZE ${quoteIdent(table)}`);
          tables.push({ table, ms: elapsedMs(t0) });
        } catch (err) {
          tables.push({ table, ms: elapsedMs(t0), error: err instanceof Error ? err.message : String(err) });
        }
      }
      return { level: tables.some((t) => t.error) ? 'warning' : 'ok', tables };
    },
  };
}

// ---------------------------------------------------------------------------------------- index report

export interface IndexReportResult extends JobResult {
  /** Since when the counters below have been counting (the database's last statistics reset, or null). */
  statsSince: Date | null;
  /** Indexes never scanned since then, other than primary keys and unique indexes (which enforce rules). */
  unusedIndexes: Array<{ schema: string; table: string; index: string; bytes: number; definition: string }>;
  /** Large tables read mostly by sequential scans: a query may be missing an index. */
  missingIndexCandidates: Array<{
    schema: string;
    table: string;
    liveRows: number;
    seqScans: number;
    seqRowsRead: number;
    indexScans: number;
  }>;
}

/** Reported, never changed. Unused indexes are informational (young databases have many); candidates are a warning. */
export function indexReport(opts: { indexMinRows: number; indexMinSeqScans: number }): Omit<JobDefinition<IndexReportResult>, 'schedule'> {
  return {
    name: 'index_report',
    description: 'unused indexes and missing-index candidates (report only)',
    singleton: true,
    async run({ db }) {
      const [since] = await select<{ stats_reset: Date | null }>(
        db,
        'SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()',
      );
      const unused = await select<{ schema: string; table: string; index: string; bytes: string; definition: string }>(
        db,
        `SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index, pg_relation_size(s.indexrelid) AS bytes,
                pg_get_indexdef(s.indexrelid) AS definition
           FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
          WHERE s.idx_scan = 0 AND NOT i.indisprimary AND NOT i.indisunique AND NOT i.indisexclusion
          ORDER BY pg_relation_size(s.indexrelid) DESC, 1, 2, 3`,
      );
      const candidates = await select<{ schema: string; table: string; live: string; seq: string; seq_read: string; idx: string }>(
        db,
        `SELECT schemaname AS schema, relname AS table, n_live_tup AS live, seq_scan AS seq, seq_tup_read AS seq_read,
                coalesce(idx_scan, 0) AS idx
           FROM pg_stat_user_tables
          WHERE n_live_tup >= $minRows AND seq_scan >= $minSeq AND seq_scan > coalesce(idx_scan, 0)
          ORDER BY seq_tup_read DESC`,
        { minRows: opts.indexMinRows, minSeq: opts.indexMinSeqScans },
      );
      const missingIndexCandidates = candidates.map((c) => ({
        schema: c.schema,
        table: c.table,
        liveRows: Number(c.live),
        seqScans: Number(c.seq),
        seqRowsRead: Number(c.seq_read),
        indexScans: Number(c.idx),
      }));
      return {
        level: missingIndexCandidates.length ? 'warning' : 'ok',
        statsSince: since?.stats_reset ?? null,
        unusedIndexes: unused.map((u) => ({ ...u, bytes: Number(u.bytes) })),
        missingIndexCandidates,
      };
    },
  };
}

// ----------------------------------------------------------------------------------------------- bloat

export interface TableBloat {
  schema: string;
  table: string;
  liveRows: number;
  deadRows: number;
  /** n_dead_tup / (n_live_tup + n_dead_tup). */
  deadRatio: number;
  lastVacuum: Date | null;
  lastAutovacuum: Date | null;
  warning: boolean;
  /** What a person could run when `warning`. */
  suggestion?: string;
}

export interface BloatResult extends JobResult {
  warnRatio: number;
  tables: TableBloat[];
}

/**
 * Dead-tuple ratio per table (PostgreSQL's counterpart of MySQL's fragmentation): rows deleted or
 * updated whose space VACUUM has not reclaimed yet. The purge and the send loop both leave dead rows
 * in subtasks; autovacuum normally keeps up, and this says when it does not.
 */
export function checkTableBloat(opts: { bloatWarnRatio: number; bloatMinRows: number }): Omit<JobDefinition<BloatResult>, 'schedule'> {
  return {
    name: 'check_table_bloat',
    description: `dead-tuple ratio per table (warning above ${opts.bloatWarnRatio * 100} %)`,
    singleton: true,
    async run({ db }) {
      const rows = await select<{
        schema: string;
        table: string;
        live: string;
        dead: string;
        last_vacuum: Date | null;
        last_autovacuum: Date | null;
      }>(
        db,
        `SELECT schemaname AS schema, relname AS table, n_live_tup AS live, n_dead_tup AS dead, last_vacuum, last_autovacuum
           FROM pg_stat_user_tables WHERE n_live_tup + n_dead_tup > 0
          ORDER BY n_dead_tup::float8 / (n_live_tup + n_dead_tup) DESC, 1, 2`,
      );
      const tables = rows.map((r): TableBloat => {
        const liveRows = Number(r.live);
        const deadRows = Number(r.dead);
        const deadRatio = Math.round((deadRows / (liveRows + deadRows)) * 10_000) / 10_000;
        const warning = deadRatio > opts.bloatWarnRatio && liveRows + deadRows >= opts.bloatMinRows;
        return {
          schema: r.schema,
          table: r.table,
          liveRows,
          deadRows,
          deadRatio,
          lastVacuum: r.last_vacuum,
          lastAutovacuum: r.last_autovacuum,
          warning,
          ...(warning ? { suggestion: `VACUUM (ANALYZE) ${quoteIdent(r.schema)}.${quoteIdent(r.table)}` } : {}),
        };
      });
      return { level: tables.some((t) => t.warning) ? 'warning' : 'ok', warnRatio: opts.bloatWarnRatio, tables };
    },
  };
}
