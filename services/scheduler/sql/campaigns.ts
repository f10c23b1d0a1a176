/** Campaigns as the scheduler reads them: active ones, their templates, their wait reasons. */
import type { Sequelize } from 'sequelize';
import { queryRows as q } from '../../kernel/db-query.js';
import { prepare, queryPrepared } from '../../kernel/db-prepared.js';

export interface CampaignRow {
  id: string;
  name: string;
  created_by: number;
  priority: number;
  status: string;
  from_address: string;
  from_name: string | null;
  send_window: import('../../../models/index.js').StoredSendWindow | null;
  wait_reason: string | null;
  /** Messages without a final state yet (queued, or sending): the campaign's backlog. */
  remaining: number;
}

/** Campaigns the scheduler must know about: sending ones, and paused/cancelled ones it may still hold. */
export function loadActiveCampaigns(db: Sequelize, knownIds: number[]): Promise<CampaignRow[]> {
  return queryPrepared(db, ACTIVE_CAMPAIGNS, { known: knownIds });
}

/** Prepared (kernel/db-prepared.ts): read on every control tick. */
const ACTIVE_CAMPAIGNS = prepare(
  'fs_active_campaigns',
  `SELECT id, name, created_by, priority, status, from_address, from_name, send_window, wait_reason,
          GREATEST(total_count - sent_count - failed_count - cancelled_count - unknown_count, 0)::int AS remaining
     FROM tasks
    WHERE status = 'sending' OR id = ANY($known::bigint[])
    ORDER BY id`,
);

export function loadTemplates(
  db: Sequelize,
  ids: number[],
): Promise<{ id: number; subject: string; html: string | null; text: string | null }[]> {
  return q(db, 'SELECT id, subject, html, text FROM templates WHERE id = ANY($ids::int[])', { ids });
}

export async function setWaitReasons(db: Sequelize, updates: { id: number; reason: string | null }[]): Promise<void> {
  if (!updates.length) return;
  await q(
    db,
    `UPDATE tasks SET wait_reason = u.reason FROM unnest($ids::bigint[], $reasons::text[]) AS u(id, reason) WHERE tasks.id = u.id`,
    { ids: updates.map((u) => u.id), reasons: updates.map((u) => u.reason) },
  );
}

/** The ids of the templates the campaigns use. */
export async function templatesOf(db: Sequelize, taskIds: number[]): Promise<number[]> {
  const rows = await q<{ id: number }>(
    db,
    `SELECT DISTINCT jsonb_array_elements_text(templates)::int AS id FROM tasks WHERE id = ANY($ids::bigint[])`,
    {
      ids: taskIds,
    },
  );
  return rows.map((r) => Number(r.id));
}
