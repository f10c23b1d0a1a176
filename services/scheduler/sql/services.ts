/** Sending services as the scheduler reads them, and their health. */
import type { Sequelize } from 'sequelize';
import { queryRows as q } from '../../kernel/db-query.js';
import { prepare, queryPrepared } from '../../kernel/db-prepared.js';

export interface ServiceRow {
  id: number;
  name: string;
  transport: import('../../../models/index.js').TransportConfig;
  sending_rate: string;
  daily_quota: number;
  used_quota: number;
  quota_day: string;
  quota_timezone: string;
  max_connections: number;
  open_to_all: boolean;
  enabled: boolean;
  dkim: import('../../../models/index.js').DkimConfig | null;
  /** Shaping per mailbox provider, rules, warm-up (deliverability/shaping.ts); null: the defaults. */
  deliverability: unknown;
  is_healthy: boolean;
  consecutive_failures: number;
  last_sent_at: Date | null;
  user_ids: number[] | null;
  updated_at: Date;
}

export function loadServices(db: Sequelize): Promise<ServiceRow[]> {
  return queryPrepared(db, SERVICES, {});
}

/**
 * Prepared (kernel/db-prepared.ts): read on every control tick. `s.*` follows the table: after a
 * migration adds a column, the statement fails once with 0A000 and is prepared again.
 */
const SERVICES = prepare(
  'fs_services',
  `SELECT s.*, (SELECT array_agg(us.user_id ORDER BY us.user_id) FROM user_services us WHERE us.service_id = s.id) AS user_ids
     FROM email_services s ORDER BY s.id`,
);

export async function saveServiceHealth(
  db: Sequelize,
  p: { id: number; healthy: boolean; failures: number; error: string | null; nextProbeAt: Date | null; lastSentAt: Date | null },
): Promise<void> {
  await q(
    db,
    `UPDATE email_services SET is_healthy = $healthy, consecutive_failures = $failures,
            last_error = COALESCE($error, last_error), last_error_at = CASE WHEN $error::text IS NULL THEN last_error_at ELSE now() END,
            next_probe_at = $nextProbeAt, last_sent_at = GREATEST(last_sent_at, $lastSentAt::timestamptz)
      WHERE id = $id`,
    p,
  );
}
