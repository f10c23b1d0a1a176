/** Campaigns as the scheduler reads them: active ones, their templates, their wait reasons. */
import type { Sequelize } from 'sequelize';
import { queryRows as q } from '../../kernel/db-query.js';

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
  /** The ids of the templates the campaign uses. */
  templates: number[] | null;
}

/** A campaign's backlog: messages without a final state yet. */
const remainingOf = (t: string) =>
  `GREATEST(${t}.total_count - ${t}.sent_count - ${t}.failed_count - ${t}.cancelled_count - ${t}.unknown_count, 0)::int`;

/**
 * Sending campaigns the scheduler does not know yet (not in `knownIds`), every column it needs.
 * The known ones are followed by loadCampaignChanges, so a tick reads each row once, not every
 * known campaign's row again (30,000 campaigns at 10,000 users x 3).
 */
export function loadNewCampaigns(db: Sequelize, knownIds: number[]): Promise<CampaignRow[]> {
  return q(
    db,
    `SELECT id, name, created_by, priority, status, from_address, from_name, send_window, wait_reason, templates,
            ${remainingOf('tasks')} AS remaining
       FROM tasks
      WHERE status = 'sending' AND NOT EXISTS (SELECT 1 FROM unnest($known::bigint[]) AS k(id) WHERE k.id = tasks.id)
      ORDER BY id`,
    { known: knownIds },
  );
}

export interface CampaignChange {
  id: string;
  /** null: the campaign is gone (deleted). */
  status: string | null;
  priority: number;
  remaining: number;
}

/**
 * The known campaigns whose status, priority or backlog differ from what the scheduler holds, or
 * that are gone, or that are not sending (those are retired, then forgotten). Only those rows come
 * back: at scale, a tick reads a few rows, not one per known campaign.
 */
export function loadCampaignChanges(
  db: Sequelize,
  known: { ids: number[]; statuses: string[]; priorities: number[]; remaining: number[] },
): Promise<CampaignChange[]> {
  return q(
    db,
    `SELECT k.id, t.status, t.priority, ${remainingOf('t')} AS remaining
       FROM unnest($ids::bigint[], $statuses::text[], $priorities::int[], $remaining::int[]) AS k(id, status, priority, remaining)
       LEFT JOIN tasks t ON t.id = k.id
      WHERE t.id IS NULL OR t.status <> 'sending' OR t.status <> k.status OR t.priority <> k.priority
         OR ${remainingOf('t')} <> k.remaining
      ORDER BY k.id`,
    known,
  );
}

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
