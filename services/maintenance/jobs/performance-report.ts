/**
 * performance_report: a daily snapshot stored in performance_reports (one jsonb row), read back by
 * `readReports`. It holds the connections, the table sizes and row counts, the pools' usage and the
 * sends and failures per service over the last day.
 *
 * Sends are counted from subtasks over [now - 1 day, now): status 'sent' by `sent_at`. The
 * scheduler records no time for a failure (it sets sent_at only when a message is sent), so status
 * 'failed' is counted by `coalesce(sent_at, not_before)`: when its last attempt became due, which is
 * when it was made unless the service's queue was backed up. There is no index on either column,
 * so this is one sequential scan of subtasks a day, on the maintenance pool; row counts are the
 * statistics' estimates (n_live_tup), not count(*), for the same reason.
 */
import { poolUsage } from '../../kernel/db.js';
import { ValidationError } from '../../kernel/errors.js';
import type { Sequelize } from 'sequelize';
import type { JobDefinition, JobResult } from '../job-runner.js';
import { select } from '../sql.js';
import type { NamedPool } from './connections.js';

export interface PerformanceReportBody {
  window: { from: string; to: string };
  connections: {
    /** Client connections on the whole server, against max_connections. */
    server: { total: number; max: number };
    /** This database's sessions by application_name and state. */
    byApplication: Array<{ applicationName: string; state: string | null; count: number }>;
  };
  databaseBytes: number;
  tables: Array<{ table: string; rowsEstimate: number; totalBytes: number; tableBytes: number }>;
  pools: Array<{ name: string; max: number; size: number; using: number; available: number; waiting: number }>;
  services: Array<{ serviceId: number | null; name: string | null; sent: number; failed: number }>;
  totals: { sent: number; failed: number };
}

export interface PerformanceReport {
  id: number;
  createdAt: Date;
  report: PerformanceReportBody;
}

export interface PerformanceReportResult extends JobResult {
  reportId: number;
  totals: PerformanceReportBody['totals'];
}

export function performanceReport(pools: () => NamedPool[]): Omit<JobDefinition<PerformanceReportResult>, 'schedule'> {
  return {
    name: 'performance_report',
    description: 'stores a daily report: connections, table sizes, pool usage, sends and failures per service',
    singleton: true,
    async run({ db, now }) {
      const to = now.toUTC();
      const from = to.minus({ days: 1 });
      const [server] = await select<{ total: number; max: number }>(
        db,
        `SELECT count(*)::int AS total, current_setting('max_connections')::int AS max FROM pg_stat_activity WHERE backend_type = 'client backend'`,
      );
      const byApplication = await select<{ applicationName: string; state: string | null; count: number }>(
        db,
        `SELECT coalesce(nullif(application_name, ''), '(none)') AS "applicationName", state, count(*)::int AS count
           FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'
          GROUP BY 1, 2 ORDER BY 1, 2`,
      );
      const [size] = await select<{ bytes: string }>(db, 'SELECT pg_database_size(current_database()) AS bytes');
      const tables = await select<{ table: string; rows: string; total: string; heap: string }>(
        db,
        `SELECT relname AS table, n_live_tup AS rows, pg_total_relation_size(relid) AS total, pg_relation_size(relid) AS heap
           FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC, relname`,
      );
      const services = await select<{ service_id: number | null; name: string | null; sent: number; failed: number }>(
        db,
        `SELECT s.service_id, e.name, count(*) FILTER (WHERE s.status = 'sent')::int AS sent,
                count(*) FILTER (WHERE s.status = 'failed')::int AS failed
           FROM subtasks s LEFT JOIN email_services e ON e.id = s.service_id
          WHERE (s.status = 'sent' AND s.sent_at >= $from AND s.sent_at < $to)
             OR (s.status = 'failed' AND coalesce(s.sent_at, s.not_before) >= $from AND coalesce(s.sent_at, s.not_before) < $to)
          GROUP BY s.service_id, e.name ORDER BY s.service_id NULLS LAST`,
        { from: from.toJSDate(), to: to.toJSDate() },
      );
      const report: PerformanceReportBody = {
        window: { from: from.toISO()!, to: to.toISO()! },
        connections: { server: server!, byApplication },
        databaseBytes: Number(size!.bytes),
        tables: tables.map((t) => ({
          table: t.table,
          rowsEstimate: Number(t.rows),
          totalBytes: Number(t.total),
          tableBytes: Number(t.heap),
        })),
        pools: pools().map(({ name, db: pool }) => ({ name, ...poolUsage(pool) })),
        services: services.map((s) => ({ serviceId: s.service_id, name: s.name, sent: s.sent, failed: s.failed })),
        totals: { sent: services.reduce((a, s) => a + s.sent, 0), failed: services.reduce((a, s) => a + s.failed, 0) },
      };
      const [row] = await select<{ id: string }>(
        db,
        'INSERT INTO performance_reports (created_at, report) VALUES ($at, $report::jsonb) RETURNING id',
        { at: to.toJSDate(), report: JSON.stringify(report) },
      );
      return { level: 'ok', reportId: Number(row!.id), totals: report.totals };
    },
  };
}

/** The latest `limit` reports, newest first. */
export async function readReports(db: Sequelize, limit = 10): Promise<PerformanceReport[]> {
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    throw new ValidationError([{ path: 'limit', message: `must be an integer from 1 to 1000, got ${JSON.stringify(limit)}` }]);
  }
  const rows = await select<{ id: string; created_at: Date; report: PerformanceReportBody }>(
    db,
    'SELECT id, created_at, report FROM performance_reports ORDER BY created_at DESC, id DESC LIMIT $limit',
    { limit },
  );
  return rows.map((r) => ({ id: Number(r.id), createdAt: r.created_at, report: r.report }));
}
